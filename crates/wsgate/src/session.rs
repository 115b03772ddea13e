//! The guard around an accepted socket: what only a WebSocket-aware layer can do.
//!
//! HTTP middleware checks a credential once; a socket then lives for hours. [`Session`]
//! sends the `welcome` frame, closes with `4001` when the credential expires (plus leeway),
//! handles `{"type":"refresh","token":...}` frames that move the deadline, closes with
//! `1001` on shutdown and `1009` on an oversized message, and finishes the close handshake
//! properly. Endpoints see only their application frames through [`Session::recv`].
//!
//! The expiry timer is one entry in tokio's shared timer wheel, polled by the connection's
//! own task: no extra task per connection.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::authenticator::Authenticator;
use crate::identity::Identity;
use crate::reject::codes;
use crate::source::{Credential, SourceKind};
use crate::verify::{VerifyContext, now_unix};

/// How long a closing socket waits for the peer's Close reply before it is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Per-endpoint session behaviour.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Send the `welcome` frame first (endpoint option `welcome = false` turns it off).
    pub welcome: bool,
    /// Cancelled on shutdown: every session closes with 1001.
    pub shutdown: CancellationToken,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            welcome: true,
            shutdown: CancellationToken::new(),
        }
    }
}

/// An authenticated socket under the session's rules.
pub struct Session {
    socket: WebSocket,
    identity: Identity,
    auth: Arc<Authenticator>,
    deadline: Option<Pin<Box<Sleep>>>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    welcome: bool,
}

impl Session {
    /// Wraps an authenticated socket. Synchronous on purpose: build it in the upgrade
    /// callback and move it into the connection's future, so the socket is stored once.
    pub fn new(
        socket: WebSocket,
        identity: Identity,
        auth: Arc<Authenticator>,
        options: &SessionOptions,
    ) -> Self {
        let mut session = Self {
            socket,
            deadline: None,
            auth,
            shutdown: Box::pin(options.shutdown.clone().cancelled_owned()),
            identity,
            welcome: options.welcome,
        };
        session.set_deadline();
        session
    }

    /// Sends the `welcome` frame (unless the endpoint turned it off); `false` when the socket
    /// is already gone. Call once, before the first `recv`.
    pub async fn welcome(&mut self) -> bool {
        if !self.welcome {
            return true;
        }
        let frame = self.identity.welcome_frame();
        self.socket.send(Message::text(frame)).await.is_ok()
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The next application frame (text or binary). `None` once the socket is closed, for
    /// whatever reason; the close frame has then already been exchanged.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.shutdown.as_mut() => {
                    self.close_in_place(close_code::AWAY, "server shutting down").await;
                    return None;
                }
                _ = until(&mut self.deadline) => {
                    self.close_in_place(codes::TOKEN_EXPIRED, "token expired").await;
                    return None;
                }
                msg = self.socket.recv() => msg,
            };
            match msg {
                Some(Ok(Message::Text(t))) if is_refresh(&t) => self.refresh(&t).await,
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return Some(m),
                // Pings are answered by tungstenite; a Close is answered when we poll again.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => {}
                Some(Err(e)) => {
                    if is_too_big(&e) {
                        self.close_in_place(close_code::SIZE, "message too big")
                            .await;
                    }
                    return None;
                }
                None => return None,
            }
        }
    }

    /// Sends one frame; `false` when the socket is gone.
    pub async fn send(&mut self, msg: Message) -> bool {
        self.socket.send(msg).await.is_ok()
    }

    /// Closes with `code` and waits (bounded) for the peer's reply.
    pub async fn close(mut self, code: u16, reason: &'static str) {
        self.close_in_place(code, reason).await;
    }

    async fn close_in_place(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        // Boxed: a cold path whose state would otherwise sit in every idle connection's task.
        Box::pin(close_inner(&mut self.socket, frame)).await;
    }

    fn set_deadline(&mut self) {
        self.deadline = self.identity.expires_at().map(|exp| {
            let left = (exp + self.auth.leeway_duration().as_secs()).saturating_sub(now_unix());
            Box::pin(tokio::time::sleep_until(
                Instant::now() + Duration::from_secs(left),
            ))
        });
    }

    async fn refresh(&mut self, text: &str) {
        // Boxed for the same reason as closing: refreshes are rare, idle sockets are many.
        Box::pin(self.refresh_inner(text)).await
    }

    async fn refresh_inner(&mut self, text: &str) {
        #[derive(Deserialize)]
        struct Refresh {
            #[serde(default)]
            token: String,
            #[serde(default)]
            id: Option<Value>,
        }
        let Ok(req) = serde_json::from_str::<Refresh>(text) else {
            self.reply(&Reply::error(None, "bad_request", "refresh needs a token"))
                .await;
            return;
        };
        let cred = Credential::new(req.token, SourceKind::Message);
        let reply = match self.auth.verify(&cred, &VerifyContext::default()).await {
            Ok(new) if new.sub() != self.identity.sub() => Reply::error(
                req.id,
                "sub_mismatch",
                "the new token is for another subject",
            ),
            Ok(new) => {
                // Keep the session id: it names this connection, not the credential.
                let verified = crate::identity::Verified {
                    sub: new.sub().to_owned(),
                    expires_at: new.expires_at(),
                    issued_at: new.issued_at(),
                    jti: new.jti().map(str::to_owned),
                    channels: new.channels().to_vec(),
                    publish: new.publish().to_vec(),
                    scopes: new.scopes().to_vec(),
                    claims: new.claims().clone(),
                };
                self.identity = self.identity.refreshed(verified, new.verifier());
                self.set_deadline();
                tracing::info!(target: "wsgate::conn", sub = self.identity.sub(), session = self.identity.session(), "credential refreshed");
                Reply {
                    r#type: "refreshed",
                    id: req.id,
                    expires_at: Some(self.identity.expires_at()),
                    code: None,
                    message: None,
                }
            }
            Err(e) => Reply::error(req.id, e.code(), "refresh refused; the old expiry stands"),
        };
        self.reply(&reply).await;
    }

    async fn reply(&mut self, reply: &Reply) {
        if let Ok(text) = serde_json::to_string(reply) {
            let _ = self.socket.send(Message::text(text)).await;
        }
    }
}

#[derive(Serialize)]
struct Reply {
    r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
}

impl Reply {
    fn error(id: Option<Value>, code: &'static str, message: &'static str) -> Self {
        Self {
            r#type: "error",
            id,
            expires_at: None,
            code: Some(code),
            message: Some(message),
        }
    }
}

/// Cheap pre-filter so ordinary traffic is never JSON-parsed here.
fn is_refresh(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Kind<'a> {
        #[serde(borrow)]
        r#type: std::borrow::Cow<'a, str>,
    }
    text.trim_start().starts_with('{')
        && text.contains("\"refresh\"")
        && serde_json::from_str::<Kind>(text).is_ok_and(|k| k.r#type == "refresh")
}

async fn until(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

fn is_too_big(e: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(tungstenite::Error::Capacity(_)) = s.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

async fn close_inner(socket: &mut WebSocket, frame: CloseFrame) {
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    // Keep reading until the peer's Close (or EOF): a clean close handshake.
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

/// Closes a socket that never became a session (refused after the upgrade).
pub async fn close_socket(mut socket: WebSocket, frame: CloseFrame) {
    close_inner(&mut socket, frame).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_detection() {
        assert!(is_refresh(r#"{"type":"refresh","token":"x"}"#));
        assert!(is_refresh(r#" {"token":"x","type":"refresh"}"#));
        assert!(!is_refresh(r#"{"type":"publish","data":"refresh"}"#));
        assert!(!is_refresh(r#"refresh"#));
        assert!(!is_refresh(r#"{"type":"refresh""#));
    }
}
