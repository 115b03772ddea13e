//! The client's side of a session: one of two sockets, behind one set of operations.
//!
//! - [`ClientSide::Axum`]: axum's `WebSocket` (tungstenite), what a library user who
//!   upgrades with axum hands the session. tungstenite answers pings and the client's Close
//!   inside its reads.
//! - [`ClientSide::Own`]: a [`ClientSocket`] that wsgate upgraded and speaks itself (every
//!   client of the server, on every endpoint): no read buffer while idle, and
//!   nothing answered on anyone's behalf — a relay passes pings through, and the session
//!   answers pings (when not relaying) and the client's Close.
//!
//! The session and the relay call these operations and never ask which socket it is,
//! except through [`ClientSide::answers_itself`].

use std::task::{Context, Poll};

use axum::extract::ws::{CloseFrame, Message, WebSocket};

use crate::protocol::{CloseReason, close_then};
#[cfg(feature = "relay")]
use crate::relay::{ClientSocket, Relayed};

pub(crate) enum ClientSide {
    Axum(WebSocket),
    #[cfg(feature = "relay")]
    Own(ClientSocket),
}

/// The client's connection failed (a write could not be made).
#[derive(Debug)]
pub(crate) struct Gone;

impl ClientSide {
    /// Whether the socket answers pings and the client's Close by itself (tungstenite does).
    pub(crate) fn answers_itself(&self) -> bool {
        match self {
            ClientSide::Axum(_) => true,
            #[cfg(feature = "relay")]
            ClientSide::Own(_) => false,
        }
    }

    /// The next frame; `None` once the connection has ended. `Err`: the close the client's
    /// violation deserves ([`CloseReason::TooBig`], `ProtocolError`, `InvalidUtf8`), or
    /// `None` when its connection failed. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Option<Result<Message, Option<CloseReason>>> {
        match self {
            ClientSide::Axum(socket) => socket
                .recv()
                .await
                .map(|r| r.map_err(|e| super::violation(&e))),
            #[cfg(feature = "relay")]
            ClientSide::Own(socket) => socket.recv().await.map(|r| r.map_err(|e| e.close_reason())),
        }
    }

    /// [`ClientSide::recv`] for a relay: on our own socket a message that came in one frame
    /// stays as its bytes, its text not yet checked (the relay checks it where it reads it).
    #[cfg(feature = "relay")]
    pub(crate) async fn recv_relayed(&mut self) -> Option<Result<Relayed, Option<CloseReason>>> {
        match self {
            ClientSide::Axum(socket) => socket
                .recv()
                .await
                .map(|r| r.map(Relayed::Message).map_err(|e| super::violation(&e))),
            ClientSide::Own(socket) => socket
                .recv_relayed()
                .await
                .map(|r| r.map_err(|e| e.close_reason())),
        }
    }

    /// Sends what the upstream sent (its text checked already) and flushes: on our own socket
    /// as the bytes it came in where it can be.
    #[cfg(feature = "relay")]
    pub(crate) async fn send_relayed(&mut self, relayed: Relayed) -> Result<(), Gone> {
        match self {
            ClientSide::Own(socket) => socket.send_relayed(relayed).await.map_err(|_| Gone),
            // tungstenite takes messages; the text was checked, so this does not fail.
            ClientSide::Axum(_) => self.send(relayed.into_message().map_err(|_| Gone)?).await,
        }
    }

    /// Sends `msg` (when given, taking it) and flushes the socket.
    pub(crate) fn poll_write(
        &mut self,
        msg: &mut Option<Message>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Gone>> {
        match self {
            ClientSide::Axum(socket) => poll_write_axum(socket, msg, cx),
            #[cfg(feature = "relay")]
            ClientSide::Own(socket) => socket.poll_send(cx, msg).map_err(|_| Gone),
        }
    }

    /// Sends one frame and flushes.
    pub(crate) async fn send(&mut self, msg: Message) -> Result<(), Gone> {
        let mut msg = Some(msg);
        std::future::poll_fn(|cx| self.poll_write(&mut msg, cx)).await
    }

    /// Sends a close frame and finishes the close handshake within the close wait, calling
    /// `sent` once the frame is on the wire.
    pub(crate) async fn close_then(&mut self, frame: Option<CloseFrame>, sent: impl FnOnce()) {
        match self {
            ClientSide::Axum(socket) => close_then(socket, frame, sent).await,
            #[cfg(feature = "relay")]
            ClientSide::Own(socket) => socket.close_then(frame, sent).await,
        }
    }

    /// Finishes a close handshake the client started with `frame`: tungstenite answered it
    /// already (its end is read); our own socket answers it with the same frame.
    pub(crate) async fn answer_close(&mut self, frame: Option<CloseFrame>) {
        match self {
            ClientSide::Axum(socket) => {
                let _ = frame;
                crate::protocol::drain(socket).await;
            }
            #[cfg(feature = "relay")]
            ClientSide::Own(socket) => socket.close(frame).await,
        }
    }
}

/// Sends `msg` (when given) on axum's socket and flushes it.
fn poll_write_axum(
    socket: &mut WebSocket,
    msg: &mut Option<Message>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Gone>> {
    use futures_util::Sink;
    use std::pin::Pin;
    if msg.is_some() {
        std::task::ready!(Pin::new(&mut *socket).poll_ready(cx)).map_err(|_| Gone)?;
        if let Some(m) = msg.take() {
            Pin::new(&mut *socket).start_send(m).map_err(|_| Gone)?;
        }
    }
    Pin::new(socket).poll_flush(cx).map_err(|_| Gone)
}
