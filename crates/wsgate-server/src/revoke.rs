//! The revocation service: what a disconnect or a revocation means, in one place for every
//! caller — the admin API, cluster control messages from other nodes and the resync after
//! an outage. It decides what to refuse and for how long (a token by `jti` until its expiry,
//! a subject's tokens issued until now), enforces it at once in the in-memory copy every
//! handshake checks, and persists it in the node's store. Announcing to other nodes is the
//! cluster's job (`cluster::control`), which calls back into this module, never the HTTP
//! handlers.

use std::sync::Arc;

use wsgate::{CloseReason, Revocations, Revoked, Target};

use crate::store::Store;

/// How long a subject revocation lasts when no open session tells us its tokens' lifetime.
pub const SUBJECT_REVOCATION_SECS: u64 = 24 * 3600;

/// Enforces revocations at once (the in-memory copy every handshake checks) and persists them
/// in the node's store off the event loop, so a restart forgets none. False when persisting
/// failed: they then hold in memory only.
pub async fn keep_revocations(
    revocations: &Revocations,
    store: &Arc<Store>,
    revoked: &[Revoked],
) -> bool {
    if revoked.is_empty() {
        return true;
    }
    for r in revoked {
        revocations.add(r.clone());
    }
    let store = store.clone();
    let to_store = revoked.to_vec();
    let stored = tokio::task::spawn_blocking(move || {
        to_store.iter().try_for_each(|r| store.add_revocation(r))
    })
    .await;
    matches!(stored, Ok(Ok(())))
}

/// The close a disconnect sends, saying whether the token was revoked.
pub fn disconnect_order(revoke: bool) -> CloseReason {
    if revoke {
        CloseReason::Revoked
    } else {
        CloseReason::Disconnected
    }
}

/// What a revoking disconnect refuses from now on: each closed token (see
/// [`revocations_of`]), and the subject (tokens issued until now) when asked by `sub`.
pub fn revocations_for(target: &Target, closed: &[wsgate::Identity], leeway: u64) -> Vec<Revoked> {
    let now = wsgate::verify::now_unix();
    let mut out = revocations_of(closed, leeway);
    if let Target::Sub(sub) = target {
        // As long as the longest-lived closed token, and never shorter than the default.
        let longest = out
            .iter()
            .map(Revoked::until)
            .fold(now + SUBJECT_REVOCATION_SECS, u64::max);
        out.push(Revoked::Subject {
            sub: sub.clone(),
            at: now,
            until: longest,
        });
    }
    out
}

/// Each closed token by `jti` until its expiry, or its subject (tokens issued until now)
/// when it has no `jti` to name it by.
pub fn revocations_of(closed: &[wsgate::Identity], leeway: u64) -> Vec<Revoked> {
    let now = wsgate::verify::now_unix();
    let until = |exp: Option<u64>| {
        exp.map_or(now + SUBJECT_REVOCATION_SECS, |e| {
            e.saturating_add(leeway).min(wsgate::verify::MAX_UNIX_TIME)
        })
    };
    let mut out = Vec::new();
    for id in closed {
        match id.jti() {
            Some(jti) => out.push(Revoked::Jti {
                jti: jti.to_owned(),
                until: until(id.expires_at()),
            }),
            None => out.push(Revoked::Subject {
                sub: id.sub().to_owned(),
                at: now,
                until: until(id.expires_at()),
            }),
        }
    }
    out
}
