//! Frame conversions between the client side (axum) and the upstream side (tungstenite):
//! payloads are shared `Bytes`, never copied; text is re-checked as UTF-8 (it already is).

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use tokio_tungstenite::tungstenite::protocol::CloseFrame as UpCloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message as UpMessage, Utf8Bytes as UpUtf8};

fn up_text(t: Utf8Bytes) -> UpUtf8 {
    UpUtf8::try_from(Bytes::from(t)).unwrap_or_default()
}
fn client_text(t: UpUtf8) -> Utf8Bytes {
    Utf8Bytes::try_from(Bytes::from(t)).unwrap_or_default()
}

pub fn to_upstream_close(f: Option<CloseFrame>) -> Option<UpCloseFrame> {
    f.map(|f| UpCloseFrame {
        code: f.code.into(),
        reason: up_text(f.reason),
    })
}

/// One of wsgate's own close reasons, for the upstream.
pub fn to_upstream_reason(reason: crate::protocol::CloseReason) -> UpCloseFrame {
    UpCloseFrame {
        code: reason.code().into(),
        reason: reason.reason().into(),
    }
}

pub fn to_client_close(f: Option<UpCloseFrame>) -> Option<CloseFrame> {
    f.map(|f| CloseFrame {
        code: f.code.into(),
        reason: client_text(f.reason),
    })
}

/// A client frame for the upstream (`Close` is handled by the relay, not here).
pub fn to_upstream(m: Message) -> UpMessage {
    match m {
        Message::Text(t) => UpMessage::Text(up_text(t)),
        Message::Binary(b) => UpMessage::Binary(b),
        Message::Ping(b) => UpMessage::Ping(b),
        Message::Pong(b) => UpMessage::Pong(b),
        Message::Close(f) => UpMessage::Close(to_upstream_close(f)),
    }
}

/// An upstream frame for the client; `None` for raw frames (never produced by reads).
pub fn to_client(m: UpMessage) -> Option<Message> {
    Some(match m {
        UpMessage::Text(t) => Message::Text(client_text(t)),
        UpMessage::Binary(b) => Message::Binary(b),
        UpMessage::Ping(b) => Message::Ping(b),
        UpMessage::Pong(b) => Message::Pong(b),
        UpMessage::Close(f) => Message::Close(to_client_close(f)),
        UpMessage::Frame(_) => return None,
    })
}
