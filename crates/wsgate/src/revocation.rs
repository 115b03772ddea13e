//! Revoked credentials, refused at every handshake and refresh until they would have expired.
//!
//! Three kinds: one token (`jti`); every token of a subject issued up to a moment (tokens
//! without `iat` count as issued before it); every token carrying a claim value issued up to a
//! moment (a tenant, a role, an app version, a Shared Signals session's `sid`). Plain in-memory sets behind a read-write lock:
//! every handshake reads, only admin calls write. Persistence (and later cluster sync) is
//! the server's business: it loads entries at start and writes through on change.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::identity::{Verified, claim_holds};
use crate::verify::now_unix;

/// One revocation, as stored (and, in cluster mode, as shared through Redis).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Revoked {
    /// A token by id, until `until` (unix seconds; its `exp`).
    Jti {
        /// The token's `jti`.
        jti: String,
        /// Unix seconds after which the entry may be forgotten.
        until: u64,
    },
    /// Every token of `sub` issued at or before `at`, until `until`.
    Subject {
        /// The subject.
        sub: String,
        /// Tokens issued at or before this (unix seconds) are refused.
        at: u64,
        /// Unix seconds after which the entry may be forgotten.
        until: u64,
    },
    /// Every token whose claim `claim` is `value` (or a list holding it) issued at or before
    /// `at`, until `until`. `email` is compared without regard to ASCII case.
    Claim {
        /// The claim's name (top level).
        claim: String,
        /// The value it carries.
        value: String,
        /// Tokens issued at or before this (unix seconds) are refused.
        at: u64,
        /// Unix seconds after which the entry may be forgotten.
        until: u64,
    },
}

impl Revoked {
    /// When the revocation may be forgotten (unix seconds).
    pub fn until(&self) -> u64 {
        match self {
            Revoked::Jti { until, .. }
            | Revoked::Subject { until, .. }
            | Revoked::Claim { until, .. } => *until,
        }
    }
}

/// Revoked tokens and subjects, checked at every handshake and refresh.
#[derive(Debug, Default)]
pub struct Revocations {
    inner: RwLock<Inner>,
}

impl Inner {
    fn len(&self) -> usize {
        self.jtis.len() + self.subjects.len() + self.claims.len()
    }
}

#[derive(Debug, Default)]
struct Inner {
    jtis: HashMap<String, u64>,
    subjects: HashMap<String, (u64, u64)>,
    /// (claim, value) → (at, until); few, so checked by a scan.
    claims: HashMap<(String, String), (u64, u64)>,
}

impl Revocations {
    /// An empty one.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or extends) a revocation.
    pub fn add(&self, r: Revoked) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        match r {
            Revoked::Jti { jti, until } => {
                let e = inner.jtis.entry(jti).or_default();
                *e = (*e).max(until);
            }
            Revoked::Subject { sub, at, until } => {
                let e = inner.subjects.entry(sub).or_default();
                *e = (e.0.max(at), e.1.max(until));
            }
            Revoked::Claim {
                claim,
                value,
                at,
                until,
            } => {
                let e = inner.claims.entry((claim, value)).or_default();
                *e = (e.0.max(at), e.1.max(until));
            }
        }
    }

    /// Whether this credential is revoked now.
    pub fn is_revoked(&self, v: &Verified) -> bool {
        let now = now_unix();
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        if inner.jtis.is_empty() && inner.subjects.is_empty() && inner.claims.is_empty() {
            return false;
        }
        let issued_before = |at: u64| v.issued_at.is_none_or(|iat| iat <= at);
        let by_jti = v
            .jti
            .as_ref()
            .and_then(|j| inner.jtis.get(j))
            .is_some_and(|&until| until >= now);
        let by_sub = inner
            .subjects
            .get(&v.sub)
            .is_some_and(|&(at, until)| until >= now && issued_before(at));
        let by_claim = || {
            inner.claims.iter().any(|((name, value), &(at, until))| {
                until >= now
                    && issued_before(at)
                    && v.claims.inspect(|c| claim_holds(c, name, value))
            })
        };
        by_jti || by_sub || by_claim()
    }

    /// Drops entries whose credentials have expired anyway; returns how many.
    pub fn prune(&self) -> usize {
        let now = now_unix();
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let before = inner.len();
        inner.jtis.retain(|_, until| *until >= now);
        inner.subjects.retain(|_, (_, until)| *until >= now);
        inner.claims.retain(|_, (_, until)| *until >= now);
        before - inner.len()
    }

    /// Every entry still in force (to share them: the cluster re-uploads its copy).
    pub fn entries(&self) -> Vec<Revoked> {
        let now = now_unix();
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let jtis = inner
            .jtis
            .iter()
            .filter(|(_, until)| **until >= now)
            .map(|(jti, until)| Revoked::Jti {
                jti: jti.clone(),
                until: *until,
            });
        let subjects = inner
            .subjects
            .iter()
            .filter(|(_, (_, until))| *until >= now)
            .map(|(sub, (at, until))| Revoked::Subject {
                sub: sub.clone(),
                at: *at,
                until: *until,
            });
        let claims = inner
            .claims
            .iter()
            .filter(|(_, (_, until))| *until >= now)
            .map(|((claim, value), (at, until))| Revoked::Claim {
                claim: claim.clone(),
                value: value.clone(),
                at: *at,
                until: *until,
            });
        jtis.chain(subjects).chain(claims).collect()
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).len()
    }
    /// Whether there is nothing here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(sub: &str, jti: Option<&str>, iat: Option<u64>) -> Verified {
        Verified {
            sub: sub.into(),
            jti: jti.map(Into::into),
            issued_at: iat,
            ..Verified::default()
        }
    }

    #[test]
    fn jti_and_subject_revocation() {
        let r = Revocations::new();
        let now = now_unix();
        r.add(Revoked::Jti {
            jti: "j1".into(),
            until: now + 60,
        });
        assert!(r.is_revoked(&v("a", Some("j1"), None)));
        assert!(!r.is_revoked(&v("a", Some("j2"), None)));
        r.add(Revoked::Subject {
            sub: "b".into(),
            at: now,
            until: now + 60,
        });
        assert!(r.is_revoked(&v("b", None, None)));
        assert!(r.is_revoked(&v("b", None, Some(now - 5))));
        assert!(
            !r.is_revoked(&v("b", None, Some(now + 5))),
            "issued after the revocation"
        );
        r.add(Revoked::Jti {
            jti: "old".into(),
            until: now - 1,
        });
        assert!(!r.is_revoked(&v("a", Some("old"), None)));
        assert_eq!(r.prune(), 1);
    }

    #[test]
    fn claim_revocation_refuses_older_tokens_carrying_it() {
        let r = Revocations::new();
        let now = now_unix();
        r.add(Revoked::Claim {
            claim: "tenant".into(),
            value: "acme".into(),
            at: now,
            until: now + 60,
        });
        let with = |claims: serde_json::Value, iat: u64| Verified {
            sub: "u".into(),
            issued_at: Some(iat),
            claims: crate::identity::Claims::from_value(claims),
            ..Verified::default()
        };
        assert!(r.is_revoked(&with(serde_json::json!({"tenant": "acme"}), now - 1)));
        assert!(r.is_revoked(&with(serde_json::json!({"tenant": ["x", "acme"]}), now)));
        assert!(
            !r.is_revoked(&with(serde_json::json!({"tenant": "acme"}), now + 1)),
            "issued after"
        );
        assert!(
            !r.is_revoked(&with(serde_json::json!({"tenant": "ACME"}), now - 1)),
            "exact"
        );
        assert!(!r.is_revoked(&with(serde_json::json!({"tenant": "other"}), now - 1)));
        r.add(Revoked::Claim {
            claim: "email".into(),
            value: "a@example.com".into(),
            at: now,
            until: now + 60,
        });
        assert!(r.is_revoked(&with(
            serde_json::json!({"email": "A@Example.com"}),
            now - 1
        )));
        assert_eq!(r.entries().len(), 2);
    }
}
