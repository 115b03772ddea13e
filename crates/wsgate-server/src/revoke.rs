//! The revocation service: what a disconnect or a revocation means, in one place for every
//! caller — the admin API, cluster control messages from other nodes and the resync after
//! an outage. It decides what to refuse and for how long (a token by `jti` until its expiry,
//! a subject's tokens issued until now), enforces it at once in the in-memory copy every
//! handshake checks, and persists it in the node's store. Announcing to other nodes is the
//! cluster's job (`cluster::control`), which calls back into this module, never the HTTP
//! handlers.
//!
//! How long: a revocation lasts as long as a credential it covers could still verify. A
//! token named by its `jti` is refused until its `exp` (plus leeway). A subject's revocation
//! covers every credential of that subject issued until the order — tokens not seen by any
//! node, static tokens and API keys included, none of which has an `exp` wsgate could bound
//! it by — so it is kept for good; credentials issued after it (a new token, a new API key)
//! are not touched by it. API keys of a revoked subject are also revoked as keys in the store.

use std::sync::Arc;

use wsgate::{
    Cause, CloseOrder, CloseReason, Grace, Identity, Registry, Revocations, Revoked, Target,
};

use crate::store::Store;

/// A revocation with no expiry to wait for: kept for good (the latest time every part of the
/// system, Redis included, can hold).
pub const FOR_GOOD: u64 = wsgate::verify::MAX_UNIX_TIME;

/// Enforces revocations at once — when called, not when awaited: the in-memory copy every
/// handshake checks — and returns the write to the node's store (off the event loop), so a
/// restart forgets none. A caller may close sockets before awaiting it: they never wait for
/// the store. The future says false when persisting failed: they then hold in memory only.
pub fn keep_revocations(
    revocations: &Revocations,
    store: &Arc<Store>,
    revoked: &[Revoked],
) -> impl Future<Output = bool> + use<> {
    for r in revoked {
        revocations.add(r.clone());
    }
    let store = store.clone();
    let to_store = revoked.to_vec();
    async move {
        if to_store.is_empty() {
            return true;
        }
        let stored = tokio::task::spawn_blocking(move || {
            to_store.iter().try_for_each(|r| store.add_revocation(r))
        })
        .await;
        matches!(stored, Ok(Ok(())))
    }
}

/// The close a disconnect sends, saying whether the token was revoked.
pub fn disconnect_order(revoke: bool) -> CloseReason {
    if revoke {
        CloseReason::Revoked
    } else {
        CloseReason::Disconnected
    }
}

/// Longest grace a soft revocation may give (seconds).
pub const MAX_GRACE_SECS: u64 = 300;

/// Carries out a disconnect on this node's sessions: closes them now, or (with `grace`, unix
/// seconds of the deadline and of the order) warns them and closes them at the deadline
/// unless a newer credential arrives. The matched identities.
pub fn carry_out(
    registry: &Registry,
    target: &Target,
    revoke: bool,
    grace: Option<(u64, u64)>,
    cause: Cause,
) -> Vec<Identity> {
    match grace {
        Some((until, ordered)) => registry.warn(target, Grace { until, ordered }),
        None => registry.close(target, CloseOrder::revoked(disconnect_order(revoke), cause)),
    }
}

/// What a revoking disconnect refuses from now on: each matched token (see
/// [`revocations_of`]), and every credential of the subject (by `sub`) or carrying the claim
/// (by `claim`) issued until now, for good.
pub fn revocations_for(target: &Target, closed: &[wsgate::Identity], leeway: u64) -> Vec<Revoked> {
    let now = wsgate::verify::now_unix();
    let mut out = revocations_of(closed, leeway);
    match target {
        Target::Sub(sub) => out.push(Revoked::Subject {
            sub: sub.clone(),
            at: now,
            until: FOR_GOOD,
        }),
        Target::Claim { name, value } => out.push(Revoked::Claim {
            claim: name.clone(),
            value: value.clone(),
            at: now,
            until: FOR_GOOD,
        }),
        _ => {}
    }
    out
}

/// Each closed token by `jti` until its expiry, or its subject (credentials issued until now)
/// when it has no `jti` to name it by; without an `exp`, for good.
pub fn revocations_of(closed: &[wsgate::Identity], leeway: u64) -> Vec<Revoked> {
    let now = wsgate::verify::now_unix();
    let until = |exp: Option<u64>| {
        exp.map_or(FOR_GOOD, |e| {
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

/// Revokes, as keys in the store, the API keys a revoking disconnect names: every key of the
/// subject (by `sub`), or the key each closed session authenticated with. How many.
pub async fn revoke_api_keys(
    store: &Arc<Store>,
    target: &Target,
    closed: &[wsgate::Identity],
) -> usize {
    let sub = match target {
        Target::Sub(sub) => Some(sub.clone()),
        _ => None,
    };
    let ids: Vec<String> = closed
        .iter()
        .filter_map(|id| id.credential_id().map(str::to_owned))
        .collect();
    let store = store.clone();
    let revoked = tokio::task::spawn_blocking(move || {
        let by_sub = sub.map_or(Ok(0), |sub| store.revoke_keys_of(&sub))?;
        ids.iter().try_fold(by_sub, |n, id| {
            Ok::<_, crate::store::StoreError>(n + usize::from(store.revoke_key(id)?))
        })
    })
    .await;
    match revoked {
        Ok(Ok(n)) => n,
        _ => {
            tracing::error!(target: "wsgate::admin", "could not revoke the API keys in the store; the revocation still refuses them");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsgate::{Identity, SourceKind, Verified};

    fn identity(sub: &str, jti: Option<&str>, exp: Option<u64>) -> Identity {
        let v = Verified {
            sub: sub.into(),
            jti: jti.map(Into::into),
            expires_at: exp,
            ..Verified::default()
        };
        Identity::new(v, SourceKind::Bearer, "jwt")
    }

    #[test]
    fn a_subject_revocation_never_lapses_before_its_credentials_do() {
        // Static tokens and API keys have no exp, and a token of the subject that no node has
        // seen may live for weeks: the subject's revocation is kept for good.
        let now = wsgate::verify::now_unix();
        let closed = [identity("u", Some("j"), Some(now + 60))];
        let r = revocations_for(&Target::Sub("u".into()), &closed, 30);
        assert!(r.contains(&Revoked::Jti {
            jti: "j".into(),
            until: now + 90
        }));
        assert!(
            r.iter()
                .any(|r| matches!(r, Revoked::Subject { sub, until, .. }
            if sub == "u" && *until == wsgate::verify::MAX_UNIX_TIME))
        );
        // A session's credential without jti or exp (a static token): for good too.
        let r = revocations_of(&[identity("s", None, None)], 30);
        assert_eq!(r[0].until(), wsgate::verify::MAX_UNIX_TIME);
    }
}
