//! The `refresh` frame: a new credential for the same subject moves the session's deadline
//! (SPEC §5). Taken by the guard itself, so no endpoint ever sees it; answered `refreshed`
//! or `error`, and a refused refresh leaves the old expiry standing.

use axum::extract::ws::Message;
use serde_json::Value;

use super::Session;
use crate::protocol::{ClientFrame, ErrorCode, ServerFrame};
use crate::source::{Credential, SourceKind};
use crate::verify::VerifyContext;

impl Session {
    pub(super) async fn refresh(&mut self, text: &str) {
        let (id, frame) = ClientFrame::parse(text);
        let Ok(ClientFrame::Refresh { token }) = frame else {
            let why = "refresh needs a token";
            self.reply(error_frame(id.as_ref(), ErrorCode::BadRequest, why))
                .await;
            return;
        };
        let cred = Credential::new(token, SourceKind::Message);
        let verified = self
            .auth
            .verify_credential(&cred, &VerifyContext::default())
            .await;
        let reply = match verified {
            Ok((new, _)) if new.sub != self.identity.sub() => {
                let why = "the new token is for another subject";
                error_frame(id.as_ref(), ErrorCode::SubMismatch, why)
            }
            Ok((new, by)) => {
                // Keep the session id and slot: they name this connection, not the credential.
                self.identity = self.identity.refreshed(new, by);
                if let Some(r) = &self.registration {
                    r.update(&self.identity);
                }
                self.set_expiry();
                self.arm();
                self.refreshed = true;
                tracing::info!(target: "wsgate::conn", sub = self.identity.sub(), session = self.identity.session(), "credential refreshed");
                ServerFrame::Refreshed {
                    id: id.as_ref(),
                    expires_at: self.identity.expires_at(),
                }
                .to_text()
            }
            Err(e) => {
                let why = "refresh refused; the old expiry stands";
                error_frame(id.as_ref(), e.code(), why)
            }
        };
        self.reply(reply).await;
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
