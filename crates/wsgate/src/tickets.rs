//! Single-use tickets: how a browser, which cannot set `Authorization` on a WebSocket,
//! connects without putting a long-lived token in a URL.
//!
//! The page exchanges its credential for a ticket over an ordinary authenticated HTTP call
//! (`POST /api/tickets`), then opens `?ticket=...`. A ticket is 256 random bits, kept only as
//! its SHA-256, valid for a short TTL, and redeemed at most once. Where tickets live is a
//! [`TicketStore`]: [`Tickets`] keeps them in this process (removal from the map under its
//! lock is the redemption, so two racing handshakes cannot both win); the server's cluster
//! mode keeps them in Redis so any node can redeem what another issued.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
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

pub type TicketFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, AuthError>> + Send + 'a>>;

/// Where tickets are kept between issue and redemption.
pub trait TicketStore: Send + Sync + std::fmt::Debug + 'static {
    /// How long a ticket stays redeemable.
    fn ttl(&self) -> Duration;
    /// Issues a ticket that redeems to `verified` (the identity of the credential that asked).
    /// `Err(AuthError::Unavailable)` when the store cannot be reached: never a ticket that
    /// might be redeemable twice.
    fn issue(&self, verified: Verified) -> TicketFuture<'_, String>;
    /// Redeems a ticket at most once: `Ok(None)` if unknown, used or expired.
    fn redeem<'a>(&'a self, ticket: &'a str) -> TicketFuture<'a, Option<Verified>>;
}

/// A fresh ticket (`wst_` + 256 random bits, base64url) and the digest it is stored under.
pub fn new_ticket() -> Result<(String, [u8; 32]), AuthError> {
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::fill(&mut raw).map_err(|_| AuthError::Unavailable("no randomness"))?;
    let ticket = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
    let key = digest(&ticket);
    Ok((ticket, key))
}

/// What a ticket is stored under: its SHA-256, so a leaked store holds no usable ticket.
pub fn digest(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

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
        let (ticket, key) = new_ticket()?;
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            map.retain(|_, (_, exp)| *exp > now);
        }
        if map.len() >= MAX_OUTSTANDING {
            return Err(AuthError::Unavailable("too many outstanding tickets"));
        }
        map.insert(key, (verified, now + self.ttl));
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

impl TicketStore for Tickets {
    fn ttl(&self) -> Duration {
        self.ttl
    }
    fn issue(&self, verified: Verified) -> TicketFuture<'_, String> {
        Box::pin(std::future::ready(Tickets::issue(self, verified)))
    }
    fn redeem<'a>(&'a self, ticket: &'a str) -> TicketFuture<'a, Option<Verified>> {
        Box::pin(std::future::ready(Ok(Tickets::redeem(self, ticket))))
    }
}

/// The verifier for the `ticket` source, and only for it.
#[derive(Debug, Clone)]
pub struct TicketVerifier(pub Arc<dyn TicketStore>);

impl Verifier for TicketVerifier {
    fn name(&self) -> &'static str {
        "ticket"
    }
    fn handles(&self, source: SourceKind) -> bool {
        source == SourceKind::Ticket
    }
    fn verify<'a>(&'a self, cred: &'a Credential, _: &'a VerifyContext) -> VerifyFuture<'a> {
        Box::pin(async move {
            match self.0.redeem(cred.token()).await {
                Ok(Some(verified)) => Ok(verified),
                Ok(None) => Err(VerifyError::Invalid("unknown, used or expired ticket")),
                Err(_) => Err(VerifyError::Unavailable("the ticket store is unreachable")),
            }
        })
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
