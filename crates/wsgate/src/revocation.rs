//! Revoked credentials, refused at every handshake and refresh until they would have expired.
//!
//! Two kinds: one token (`jti`), or every token of a subject issued up to a moment (tokens
//! without `iat` count as issued before it). Plain in-memory sets behind a read-write lock:
//! every handshake reads, only admin calls write. Persistence (and later cluster sync) is
//! the server's business: it loads entries at start and writes through on change.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::identity::Verified;
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
}

impl Revoked {
    /// When the revocation may be forgotten (unix seconds).
    pub fn until(&self) -> u64 {
        match self {
            Revoked::Jti { until, .. } | Revoked::Subject { until, .. } => *until,
        }
    }
}

/// Revoked tokens and subjects, checked at every handshake and refresh.
#[derive(Debug, Default)]
pub struct Revocations {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    jtis: HashMap<String, u64>,
    subjects: HashMap<String, (u64, u64)>,
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
        }
    }

    /// Whether this credential is revoked now.
    pub fn is_revoked(&self, v: &Verified) -> bool {
        let now = now_unix();
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        if inner.jtis.is_empty() && inner.subjects.is_empty() {
            return false;
        }
        let by_jti = v
            .jti
            .as_ref()
            .and_then(|j| inner.jtis.get(j))
            .is_some_and(|&until| until >= now);
        let by_sub = inner
            .subjects
            .get(&v.sub)
            .is_some_and(|&(at, until)| until >= now && v.issued_at.is_none_or(|iat| iat <= at));
        by_jti || by_sub
    }

    /// Drops entries whose credentials have expired anyway; returns how many.
    pub fn prune(&self) -> usize {
        let now = now_unix();
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let before = inner.jtis.len() + inner.subjects.len();
        inner.jtis.retain(|_, until| *until >= now);
        inner.subjects.retain(|_, (_, until)| *until >= now);
        before - inner.jtis.len() - inner.subjects.len()
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
        jtis.chain(subjects).collect()
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.jtis.len() + inner.subjects.len()
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
}
