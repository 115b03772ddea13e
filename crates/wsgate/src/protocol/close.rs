//! Why a socket ends, and how: the only place a close code number is written.
//!
//! Each [`CloseReason`] carries its code and a fixed reason phrase (nothing from the client
//! or its credential is ever echoed). The standard codes come from RFC 6455 §7.4.1; wsgate's
//! own live in the 4000–4999 private range (docs/protocol.md §5). The close handshake itself (send, then
//! read until the peer's answer, bounded) is here too, shared by sessions and by sockets
//! refused after the upgrade.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};

/// How long a closing socket waits for the peer's Close reply before it is dropped.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Why wsgate closes a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// `1001`: the server is shutting down.
    Shutdown,
    /// `1001`: the peer was silent (pongs included) for the idle timeout.
    IdleTimeout,
    /// `1001`, to a proxy's upstream: the client's connection is gone.
    ClientGone,
    /// `1002`: the peer broke the WebSocket protocol (reserved bits or opcode, unmasked or
    /// fragmented control frame …).
    ProtocolError,
    /// `1007`: a text message that is not UTF-8.
    InvalidUtf8,
    /// `1008` with the error code as reason: a refusal after the upgrade (`reject = "close"`,
    /// a failed `message` auth).
    Refused(&'static str),
    /// `1008`: the socket's outbox overflowed (it reads slower than it is sent to).
    SlowConsumer,
    /// `1009`: a message over `max_message_bytes`.
    TooBig,
    /// `1013`: the identity provider could not re-check the credential, and the endpoint
    /// closes rather than keeps such sessions (`revalidate_on_error = "close"`).
    TryAgainLater,
    /// `1014` with the error code as reason: the upstream could not be reached after the
    /// upgrade (`bad_gateway`, `gateway_timeout`).
    Gateway(&'static str),
    /// `1014`: the upstream's connection ended without a close frame.
    UpstreamGone,
    /// `4001`: the credential expired (`exp` + leeway) without a refresh.
    TokenExpired,
    /// `4003`: an admin disconnected the session and revoked its credential.
    Revoked,
    /// `4003`: an admin disconnected the session.
    Disconnected,
    /// `4003`: the API key the session authenticated with was revoked.
    KeyRevoked,
    /// `4029`: more data frames per second than `messages_per_sec`.
    RateLimited,
}

impl CloseReason {
    /// Every reason, with a representative error code for the two that carry one (`Refused`,
    /// `Gateway`): for the documentation check and the tests.
    pub const ALL: &'static [CloseReason] = &[
        CloseReason::Shutdown,
        CloseReason::IdleTimeout,
        CloseReason::ClientGone,
        CloseReason::ProtocolError,
        CloseReason::InvalidUtf8,
        CloseReason::Refused("invalid_token"),
        CloseReason::SlowConsumer,
        CloseReason::TooBig,
        CloseReason::TryAgainLater,
        CloseReason::Gateway("bad_gateway"),
        CloseReason::UpstreamGone,
        CloseReason::TokenExpired,
        CloseReason::Revoked,
        CloseReason::Disconnected,
        CloseReason::KeyRevoked,
        CloseReason::RateLimited,
    ];

    /// The close code sent.
    pub const fn code(self) -> u16 {
        match self {
            Self::Shutdown | Self::IdleTimeout | Self::ClientGone => 1001,
            Self::ProtocolError => 1002,
            Self::InvalidUtf8 => 1007,
            Self::Refused(_) | Self::SlowConsumer => 1008,
            Self::TooBig => 1009,
            Self::TryAgainLater => 1013,
            Self::Gateway(_) | Self::UpstreamGone => 1014,
            Self::TokenExpired => 4001,
            Self::Revoked | Self::Disconnected | Self::KeyRevoked => 4003,
            Self::RateLimited => 4029,
        }
    }

    /// The close reason sent: a fixed phrase, or the error code of a refusal.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Shutdown => "server shutting down",
            Self::IdleTimeout => "idle timeout",
            Self::ClientGone => "client gone",
            Self::ProtocolError => "protocol error",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::Refused(code) | Self::Gateway(code) => code,
            Self::SlowConsumer => "slow consumer",
            Self::TooBig => "message too big",
            Self::TryAgainLater => "try again later",
            Self::UpstreamGone => "upstream gone",
            Self::TokenExpired => "token expired",
            Self::Revoked => "revoked",
            Self::Disconnected => "disconnected by admin",
            Self::KeyRevoked => "API key revoked",
            Self::RateLimited => "rate limited",
        }
    }

    /// The frame to send.
    pub fn frame(self) -> CloseFrame {
        CloseFrame {
            code: self.code(),
            reason: Utf8Bytes::from_static(self.reason()),
        }
    }
}

/// The code for a connection that ended without a close frame (never sent on the wire).
pub(crate) const NO_CLOSE_FRAME: u16 = 1006;

/// The code a received close frame carries; `1005` ("no status") for one without a code.
pub(crate) fn code_of(frame: Option<&CloseFrame>) -> u16 {
    frame.map_or(1005, |f| f.code)
}

/// Whether a peer may put `code` in a close frame (RFC 6455 §7.4: the defined codes but
/// 1004–1006 and 1015, which are never sent, and the ranges for libraries and applications).
#[cfg(feature = "relay")]
pub(crate) fn may_send(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A bounded metrics label for a close code (`None`: the peer's connection just ended):
/// the codes wsgate sends or passes through commonly, and `other`.
pub(crate) fn close_label(code: Option<u16>) -> &'static str {
    match code {
        None => "peer",
        Some(1000) => "1000",
        Some(1001) => "1001",
        Some(1002) => "1002",
        Some(1007) => "1007",
        Some(1008) => "1008",
        Some(1009) => "1009",
        Some(1011) => "1011",
        Some(1013) => "1013",
        Some(1014) => "1014",
        Some(4001) => "4001",
        Some(4003) => "4003",
        Some(4029) => "4029",
        Some(_) => "other",
    }
}

/// Closes a socket that never became a session (refused after the upgrade).
pub async fn close_socket(mut socket: WebSocket, reason: CloseReason) {
    close_with(&mut socket, Some(reason.frame())).await;
}

/// Sends a close frame (`None`: one without a code) and finishes the close handshake, all
/// within [`CLOSE_WAIT`]: a peer that reads nothing cannot hold the close open.
async fn close_with(socket: &mut WebSocket, frame: Option<CloseFrame>) {
    close_then(socket, frame, || {}).await;
}

/// [`close_with`], calling `sent` once the close frame is on the wire (what a revocation's
/// latency is measured to).
pub(crate) async fn close_then(
    socket: &mut WebSocket,
    frame: Option<CloseFrame>,
    sent: impl FnOnce(),
) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if socket.send(Message::Close(frame)).await.is_ok() {
            sent();
            while let Some(Ok(_)) = socket.recv().await {}
        }
    })
    .await;
}

/// Keeps reading until the peer's Close (or EOF), at most [`CLOSE_WAIT`]: a clean close
/// handshake, whoever started it.
pub(crate) async fn drain(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_reasons_are_the_specs() {
        assert_eq!(CloseReason::TokenExpired.frame().code, 4001);
        assert_eq!(CloseReason::Revoked.reason(), "revoked");
        assert_eq!(CloseReason::Refused("invalid_token").code(), 1008);
        assert_eq!(
            CloseReason::Refused("invalid_token").reason(),
            "invalid_token"
        );
        assert_eq!(CloseReason::Gateway("bad_gateway").code(), 1014);
        assert_eq!(close_label(Some(CloseReason::RateLimited.code())), "4029");
        assert_eq!(close_label(Some(4999)), "other");
        #[cfg(feature = "relay")]
        assert_eq!(code_of(None), 1005);
    }

    #[test]
    fn every_reason_fits_a_close_frame() {
        // RFC 6455 §5.5: a control frame's payload is ≤ 125 bytes (2 for the code).
        for &r in CloseReason::ALL {
            assert!(r.reason().len() <= 123, "{r:?}");
            assert!(close_label(Some(r.code())) != "other", "{r:?} is labelled");
        }
    }
}
