//! Why a browser's handshake failed.
//!
//! Browsers hide a refused WebSocket handshake's status on purpose (a page sees only a
//! `1006`), so an app behind an auth layer cannot tell an expired token from a server that is
//! down, and retries for ever or hangs. A handshake may carry `?wsgate_attempt=<nonce>` (22–64
//! characters of `[A-Za-z0-9_-]`, chosen by the client; not a credential): when it is refused,
//! [`Attempts`] keeps the refusal's status, error code and `Retry-After` for
//! [`Attempts::TTL`], and `GET /api/handshake-status?attempt=<nonce>` tells the page. Knowing
//! a nonce is the only way to read its entry; the table is bounded ([`Attempts::MAX`], the
//! oldest go first), so a client can grow it no further.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::protocol::ErrorCode;
use crate::reject::{AuthError, GatewayError};

/// The query parameter a handshake names its attempt by.
pub const ATTEMPT_PARAM: &str = "wsgate_attempt";

/// What a refused handshake was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The HTTP status (401, 403, 429, 502 …).
    pub status: u16,
    /// The error code of the body.
    pub error: ErrorCode,
    /// Seconds to wait, for a 429.
    pub retry_after: Option<u64>,
}

impl From<&AuthError> for Refusal {
    fn from(e: &AuthError) -> Self {
        let retry_after = match e {
            AuthError::RateLimited { retry_after_secs }
            | AuthError::TooManyTickets { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        Self {
            status: e.status().as_u16(),
            error: e.code(),
            retry_after,
        }
    }
}

impl From<&GatewayError> for Refusal {
    fn from(e: &GatewayError) -> Self {
        Self {
            status: e.status().as_u16(),
            error: e.code(),
            retry_after: None,
        }
    }
}

/// Recent refusals by attempt nonce.
#[derive(Debug, Default)]
pub struct Attempts {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    refusals: HashMap<String, (Refusal, Instant)>,
    /// Nonces in the order recorded: the front is the oldest.
    order: VecDeque<(String, Instant)>,
}

impl Attempts {
    /// How long a refusal can be asked about.
    pub const TTL: Duration = Duration::from_secs(60);
    /// Refusals kept at most.
    pub const MAX: usize = 10_000;

    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The attempt nonce a request's query names, if it names a well-formed one.
    pub fn nonce_in(query: Option<&str>) -> Option<String> {
        form_urlencoded::parse(query?.as_bytes())
            .find(|(k, _)| k == ATTEMPT_PARAM)
            .map(|(_, v)| v.into_owned())
            .filter(|v| valid_nonce(v))
    }

    /// Keeps `refusal` for `nonce` (a later refusal of the same nonce replaces it).
    pub fn record(&self, nonce: String, refusal: Refusal) {
        let now = Instant::now();
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what has expired, and the oldest past the bound.
        while let Some((n, at)) = t.order.front() {
            if now.duration_since(*at) < Self::TTL && t.order.len() < Self::MAX {
                break;
            }
            let (n, at) = (n.clone(), *at);
            t.order.pop_front();
            if t.refusals.get(&n).is_some_and(|(_, when)| *when == at) {
                t.refusals.remove(&n);
            }
        }
        t.order.push_back((nonce.clone(), now));
        t.refusals.insert(nonce, (refusal, now));
    }

    /// The refusal recorded for `nonce` in the last [`Attempts::TTL`].
    pub fn get(&self, nonce: &str) -> Option<Refusal> {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.refusals
            .get(nonce)
            .filter(|(_, at)| at.elapsed() < Self::TTL)
            .map(|(r, _)| *r)
    }

    /// Refusals held now.
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refusals
            .len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 22–64 characters of `[A-Za-z0-9_-]` (128 random bits in base64url, or more).
pub fn valid_nonce(n: &str) -> bool {
    (22..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_read_from_the_query_and_checked() {
        let n = "AbCdEfGhIjKlMnOpQrStUv";
        assert_eq!(
            Attempts::nonce_in(Some(&format!("x=1&wsgate_attempt={n}"))).as_deref(),
            Some(n)
        );
        for bad in [
            "short",
            "has space in it ........",
            &"a".repeat(65),
            "ÀbCdEfGhIjKlMnOpQrStUv",
        ] {
            let q = format!(
                "wsgate_attempt={}",
                form_urlencoded::byte_serialize(bad.as_bytes()).collect::<String>()
            );
            assert_eq!(Attempts::nonce_in(Some(&q)), None, "{bad:?}");
        }
        assert_eq!(Attempts::nonce_in(None), None);
    }

    #[test]
    fn the_table_is_bounded_and_answers_for_the_latest_refusal() {
        let a = Attempts::new();
        let r = Refusal::from(&AuthError::Invalid("x"));
        for i in 0..Attempts::MAX + 50 {
            a.record(format!("nonce-{i:0>20}"), r);
        }
        assert_eq!(a.len(), Attempts::MAX);
        assert_eq!(
            a.get(&format!("nonce-{:0>20}", 0)),
            None,
            "the oldest went first"
        );
        let last = format!("nonce-{:0>20}", Attempts::MAX + 49);
        assert_eq!(a.get(&last).map(|r| r.status), Some(401));
        let limited = Refusal::from(&AuthError::RateLimited {
            retry_after_secs: 7,
        });
        a.record(last.clone(), limited);
        assert_eq!(a.get(&last), Some(limited));
        assert_eq!(limited.retry_after, Some(7));
    }
}
