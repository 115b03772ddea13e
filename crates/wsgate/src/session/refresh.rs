//! The `refresh` frame: a new credential for the same subject moves the session's deadline
//!. Taken by the guard itself, so no endpoint ever sees it; answered `refreshed`
//! or `error`, and a refused refresh leaves the old expiry standing.
//!
//! A refresh is a credential check on an open socket, so it is held to the same rules as a
//! handshake: a refused one is logged and counted against the client's address, and past
//! `auth_failures_per_min` the socket is closed (`CloseReason::Refused("rate_limited")`).
//! Every refusal of a presented token is answered `invalid_token`, whatever the verifier's
//! reason: a socket must not learn that it guessed another subject's valid credential. Only
//! a valid token of the session's own subject that lacks what the endpoint requires is
//! answered `insufficient_scope`.

use std::time::SystemTime;

use axum::extract::ws::Message;
use serde_json::Value;

use super::Session;
use crate::protocol::{ClientFrame, CloseReason, ErrorCode, ServerFrame};
use crate::reject::AuthError;
use crate::source::{Credential, SourceKind};
use crate::verify::VerifyContext;

impl Session {
    /// Takes one `refresh` frame. `Some(reason)`: the socket must close (too many refused
    /// refreshes from its address).
    pub(super) async fn refresh(&mut self, text: &str) -> Option<CloseReason> {
        // (A refused refresh never lifts a grace period: the old deadline stands.)
        let (id, frame) = ClientFrame::parse(text);
        let token = match frame {
            Ok(ClientFrame::Refresh { token }) => token,
            // The guard passes only frames whose `type` reads `refresh`; a frame that says
            // so in a way `parse` reads otherwise is answered as malformed.
            Ok(_) => {
                let why = "not a refresh frame";
                self.reply(error_frame(id.as_ref(), ErrorCode::BadJson, why))
                    .await;
                return None;
            }
            Err(e) => {
                self.reply(error_frame(id.as_ref(), e.code, e.message))
                    .await;
                return None;
            }
        };
        let cred = Credential::new(token, SourceKind::Message);
        let started = self.identity.trace().map(|_| SystemTime::now());
        let verified = self
            .auth
            .verify_credential(&cred, &VerifyContext::default())
            .await
            .and_then(|(new, by)| {
                if new.sub != self.identity.sub() {
                    return Err(AuthError::Invalid("the new token is for another subject"));
                }
                // Only a valid token of this subject learns that it lacks a scope.
                self.auth.admits(&new)?;
                Ok((new, by))
            });
        if let (Some(trace), Some(started)) = (self.identity.trace(), started) {
            let error = verified.as_ref().err().map(|e| e.code().as_str());
            let outcome = if error.is_none() {
                "refreshed"
            } else {
                "refused"
            };
            let attributes = vec![
                ("wsgate.outcome", outcome.into()),
                ("wsgate.session", self.identity.session().into()),
            ];
            trace.span("wsgate.refresh", started, attributes, error);
        }
        match verified {
            Ok((new, by)) => {
                // A soft revocation is lifted only by a credential issued after its order.
                if self
                    .grace
                    .as_ref()
                    .is_some_and(|g| new.issued_at.is_some_and(|iat| iat > g.ordered))
                {
                    self.grace = None;
                }
                // Keep the session id and slot: they name this connection, not the credential.
                // The new credential replaces the kept one (and its re-checks).
                let origin = self.identity.kept().and_then(|k| k.origin.clone());
                let kept = self.auth.keep(&cred, origin.as_deref(), &new);
                self.identity = self.identity.replaced(new, by, kept);
                if let Some(r) = &self.registration {
                    r.update(&self.identity);
                }
                self.watch = self.auth.watch(&self.identity).map(Box::new);
                self.set_expiry();
                self.arm();
                self.refreshed = true;
                tracing::info!(target: "wsgate::conn", sub = self.identity.sub(), session = self.identity.session(), "credential refreshed");
                if let Some(observer) = self.auth.observer() {
                    observer.refreshed(&self.identity);
                }
                let frame = ServerFrame::Refreshed {
                    id: id.as_ref(),
                    expires_at: self.identity.expires_at(),
                };
                self.reply(frame.to_text()).await;
                None
            }
            Err(e) => {
                let over_limit = if e.is_client_failure() {
                    self.auth.refresh_refused(self.identity.remote_ip()).err()
                } else {
                    None
                };
                crate::metrics::refresh_refused(&e);
                tracing::warn!(
                    target: "wsgate::conn",
                    sub = self.identity.sub(),
                    session = self.identity.session(),
                    remote = %self.identity.remote_ip().map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
                    reason = e.code().as_str(),
                    detail = %e,
                    "refresh refused"
                );
                if let Some(limit) = over_limit {
                    return Some(limit.close_reason());
                }
                let why = "refresh refused; the old expiry stands";
                let code = match e {
                    AuthError::InsufficientScope => ErrorCode::InsufficientScope,
                    _ => ErrorCode::InvalidToken,
                };
                self.reply(error_frame(id.as_ref(), code, why)).await;
                None
            }
        }
    }

    async fn reply(&mut self, frame: String) {
        let _ = self.socket.send(Message::text(frame)).await;
    }
}

fn error_frame(id: Option<&Value>, code: ErrorCode, message: &str) -> String {
    ServerFrame::Error {
        code,
        message,
        channel: None,
        id,
    }
    .to_text()
}
