//! Single-use tickets: how a browser, which cannot set `Authorization` on a WebSocket,
//! connects without putting a long-lived token in a URL.
//!
//! The page exchanges its credential for a ticket over an ordinary authenticated HTTP call
//! (`POST /api/tickets`), then opens `?ticket=...`. A ticket is 256 random bits, kept only as
//! its SHA-256, valid for a short TTL, and redeemed at most once. Where tickets live is a
//! [`TicketStore`]: [`Tickets`] keeps them in this process (removal from the map under its
//! lock is the redemption, so two racing handshakes cannot both win); the server's cluster
//! mode keeps them in Redis so any node can redeem what another issued.

use std::collections::{HashMap, VecDeque};
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

/// Outstanding tickets one subject may hold: a page needs one per connection attempt, a
/// client looping on `POST /api/tickets` gets 429 instead of growing the server.
pub const MAX_PER_SUBJECT: u32 = 100;
/// Hard cap on outstanding tickets of all subjects together.
const MAX_OUTSTANDING: usize = 200_000;
const PREFIX: &str = "wst_";

/// What a [`TicketStore`] returns.
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

/// Tickets kept in this process. Every operation is O(1): tickets expire through a queue in
/// issue order (the TTL is the same for all, so that is expiry order), never by a scan.
#[derive(Debug)]
pub struct Tickets {
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<[u8; 32], (Verified, Instant)>,
    /// Every ticket issued and not yet past its expiry, redeemed or not, oldest first.
    queue: VecDeque<([u8; 32], Instant)>,
    per_subject: HashMap<String, u32>,
}

impl Inner {
    fn remove(&mut self, key: &[u8; 32]) -> Option<(Verified, Instant)> {
        let (verified, expires) = self.live.remove(key)?;
        if let Some(n) = self.per_subject.get_mut(&verified.sub) {
            *n -= 1;
            if *n == 0 {
                self.per_subject.remove(&verified.sub);
            }
        }
        Some((verified, expires))
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(key, expires)) = self.queue.front() {
            if expires > now {
                break;
            }
            self.queue.pop_front();
            self.remove(&key);
        }
    }
}

impl Tickets {
    /// Tickets redeemable for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            inner: Mutex::default(),
        }
    }

    /// How long a ticket stays redeemable.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a ticket that redeems to `verified` (the identity of the credential that asked).
    /// `TooManyTickets` (429) past [`MAX_PER_SUBJECT`] outstanding for this subject.
    pub fn issue(&self, verified: Verified) -> Result<String, AuthError> {
        let (ticket, key) = new_ticket()?;
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.expire(now);
        let held = inner.per_subject.get(&verified.sub).copied().unwrap_or(0);
        if held >= MAX_PER_SUBJECT {
            let oldest_left = self.ttl.as_secs().max(1);
            return Err(AuthError::TooManyTickets {
                retry_after_secs: oldest_left,
            });
        }
        if inner.queue.len() >= MAX_OUTSTANDING {
            return Err(AuthError::Unavailable("too many outstanding tickets"));
        }
        let expires = now.checked_add(self.ttl).unwrap_or(now);
        *inner.per_subject.entry(verified.sub.clone()).or_default() += 1;
        inner.live.insert(key, (verified, expires));
        inner.queue.push_back((key, expires));
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

    /// Tickets issued and neither redeemed nor expired (expired ones may linger until the
    /// next issue).
    pub fn outstanding(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .len()
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

    #[test]
    fn outstanding_tickets_are_capped_per_subject() {
        let t = Tickets::new(Duration::from_secs(30));
        let who = |sub: &str| Verified {
            sub: sub.into(),
            ..Verified::default()
        };
        let mut held = Vec::new();
        for _ in 0..MAX_PER_SUBJECT {
            held.push(t.issue(who("a")).unwrap());
        }
        assert!(matches!(
            t.issue(who("a")),
            Err(AuthError::TooManyTickets { .. })
        ));
        assert!(t.issue(who("b")).is_ok(), "other subjects are not affected");
        assert!(t.redeem(&held[0]).is_some());
        assert!(
            t.issue(who("a")).is_ok(),
            "a redeemed ticket frees its place"
        );
        // Expired tickets free theirs too.
        let short = Tickets::new(Duration::ZERO);
        for _ in 0..(MAX_PER_SUBJECT + 5) {
            short.issue(who("a")).unwrap();
        }
        assert!(short.outstanding() <= 1);
    }
}
