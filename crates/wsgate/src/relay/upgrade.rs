//! A client's upgrade, done by wsgate itself: the client's socket becomes a
//! [`ClientSocket`] (frames read and written here, no buffer while idle, nothing answered on
//! the relay's behalf) rather than axum's `WebSocket` over tungstenite, whose read buffer
//! stays allocated for the connection's life and which answers the client's pings itself.
//!
//! [`ClientUpgrade`] is an extractor, checked like axum's `WebSocketUpgrade` (the same
//! statuses for the same faults), and answers `101` with the accept key RFC 6455 §4.2.2
//! derives from the client's key. Only HTTP/1.1 upgrades (wsgate's server speaks
//! HTTP/1.1).

use std::future::Future;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::frames::Peer;
use super::handshake::offered;
use super::socket::ClientSocket;
use crate::source::{SESSION_SUBPROTOCOL, SUBPROTOCOL};

/// A valid WebSocket upgrade request, to be answered by [`ClientUpgrade::on_upgrade`].
pub struct ClientUpgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket upgrade: each fault with axum's status for it.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeRejection {
    /// 405: not a `GET`.
    #[error("Request method must be `GET`")]
    MethodNotGet,
    /// 400: no `Connection: upgrade`.
    #[error("Connection header did not include 'upgrade'")]
    NoConnectionUpgrade,
    /// 400: no `Upgrade: websocket`.
    #[error("`Upgrade` header did not include 'websocket'")]
    NoUpgradeWebsocket,
    /// 400: a WebSocket version other than 13.
    #[error("`Sec-WebSocket-Version` header did not include '13'")]
    BadVersion,
    /// 400: no `Sec-WebSocket-Key`.
    #[error("`Sec-WebSocket-Key` header missing")]
    NoKey,
    /// 426: the connection cannot be upgraded (HTTP/2, or no upgrade state).
    #[error("WebSocket request couldn't be upgraded since no upgrade state was present")]
    NotUpgradable,
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        let status = match self {
            UpgradeRejection::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            UpgradeRejection::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientUpgrade {
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, UpgradeRejection> {
        if parts.method != Method::GET {
            return Err(UpgradeRejection::MethodNotGet);
        }
        let headers = &parts.headers;
        if !has_token(headers, CONNECTION, "upgrade") {
            return Err(UpgradeRejection::NoConnectionUpgrade);
        }
        if !has_token(headers, UPGRADE, "websocket") {
            return Err(UpgradeRejection::NoUpgradeWebsocket);
        }
        if headers
            .get(SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            return Err(UpgradeRejection::BadVersion);
        }
        let key = headers
            .get(SEC_WEBSOCKET_KEY)
            .ok_or(UpgradeRejection::NoKey)?;
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        // Base64: always a valid header value.
        let accept = HeaderValue::from_str(&accept).map_err(|_| UpgradeRejection::NoKey)?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(UpgradeRejection::NotUpgradable)?;
        Ok(Self { accept, on_upgrade })
    }
}

/// The subprotocol a socket wsgate speaks itself answers with, of those the client offered:
/// [`SESSION_SUBPROTOCOL`] when the socket speaks session frames (`session_frames`) and it
/// was offered; else `wsgate.v1` when offered (a browser fails a handshake whose offered
/// protocols get no answer); otherwise none. What [`WsAuth::speaks_session_frames`]
/// (with `true`) has axum's upgrade select.
///
/// [`WsAuth::speaks_session_frames`]: crate::WsAuth::speaks_session_frames
pub fn wsgate_protocol(headers: &HeaderMap, session_frames: bool) -> Option<&'static str> {
    let offers = |p: &str| offered(headers).any(|o| o == p);
    if session_frames && offers(SESSION_SUBPROTOCOL) {
        Some(SESSION_SUBPROTOCOL)
    } else if offers(SUBPROTOCOL) {
        Some(SUBPROTOCOL)
    } else {
        None
    }
}

/// Whether the comma-separated header `name` lists `token` (ASCII case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl ClientUpgrade {
    /// Answers `101` (selecting `protocol`, which must be one the client offered) and runs
    /// `f` with the socket once hyper hands the connection over. Messages past
    /// `max_message` bytes close the socket (`CloseReason::TooBig`).
    pub fn on_upgrade<F, Fut>(self, protocol: Option<&str>, max_message: usize, f: F) -> Response
    where
        F: FnOnce(ClientSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            // Err: the connection ended before the 101 was written.
            if let Ok(upgraded) = on_upgrade.await {
                f(ClientSocket::new(
                    Peer::Client,
                    TokioIo::new(upgraded),
                    &[],
                    max_message,
                ))
                .await;
            }
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(SEC_WEBSOCKET_ACCEPT, self.accept);
        if let Some(value) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
            headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
        }
        response
    }
}
