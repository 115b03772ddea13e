//! Single-use tickets: how a browser, which cannot set `Authorization` on a WebSocket,
//! connects without putting a long-lived token in a URL.
//!
//! The page exchanges its credential for a ticket over an ordinary authenticated HTTP call
//! (`POST /api/tickets`), then opens `?ticket=...`. A ticket is 256 random bits, kept only as
//! its SHA-256, valid for a short TTL, and redeemed at most once: removal from the map under
//! its lock is the redemption, so two racing handshakes cannot both win.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::identity::Verified;
use crate::reject::AuthError;
use crate::source::{Credential, SourceKind};
use crate::verify::{Verifier, VerifyContext, VerifyError, VerifyFuture};

/// Outstanding tickets beyond which expired ones are swept before issuing more.
const SWEEP_AT: usize = 10_000;
/// Hard cap on outstanding tickets: a client looping on `POST /api/tickets` cannot grow memory.
const MAX_OUTSTANDING: usize = 1_000_000;
const PREFIX: &str = "wst_";

#[derive(Debug)]
pub struct Tickets {
    ttl: Duration,
    inner: Mutex<HashMap<[u8; 32], (Verified, Instant)>>,
}

impl Tickets {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            inner: Mutex::default(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a ticket that redeems to `verified` (the identity of the credential that asked).
    pub fn issue(&self, verified: Verified) -> Result<String, AuthError> {
        let mut raw = [0u8; 32];
        aws_lc_rs::rand::fill(&mut raw).map_err(|_| AuthError::Unavailable("no randomness"))?;
        let ticket = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            map.retain(|_, (_, exp)| *exp > now);
        }
        if map.len() >= MAX_OUTSTANDING {
            return Err(AuthError::Unavailable("too many outstanding tickets"));
        }
        map.insert(digest(&ticket), (verified, now + self.ttl));
        Ok(ticket)
    }

    /// Redeems a ticket once; `None` if unknown, used or expired.
    pub fn redeem(&self, ticket: &str) -> Option<Verified> {
        let key = digest(ticket);
        let (verified, expires) = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)?;
        (expires > Instant::now()).then_some(verified)
    }
}

fn digest(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

/// The verifier for the `ticket` source, and only for it.
#[derive(Debug, Clone)]
pub struct TicketVerifier(pub Arc<Tickets>);

impl Verifier for TicketVerifier {
    fn name(&self) -> &'static str {
        "ticket"
    }
    fn handles(&self, source: SourceKind) -> bool {
        source == SourceKind::Ticket
    }
    fn verify<'a>(&'a self, cred: &'a Credential, _: &'a VerifyContext) -> VerifyFuture<'a> {
        let result = self
            .0
            .redeem(cred.token())
            .ok_or(VerifyError::Invalid("unknown, used or expired ticket"));
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use_and_expiry() {
        let t = Tickets::new(Duration::from_secs(30));
        let v = Verified {
            sub: "a".into(),
            ..Verified::default()
        };
        let ticket = t.issue(v.clone()).unwrap();
        assert!(ticket.len() >= 4 + 43, "256 bits, base64url");
        assert_eq!(t.redeem(&ticket), Some(v.clone()));
        assert_eq!(t.redeem(&ticket), None);
        let short = Tickets::new(Duration::ZERO);
        let ticket = short.issue(v).unwrap();
        assert_eq!(short.redeem(&ticket), None);
    }
}
