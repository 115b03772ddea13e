//! Admin orders across nodes: `/api/disconnect` on any node closes matching sockets on every
//! node, and revocations reach every node's local copy.
//!
//! One Redis channel, `<prefix>control`, carries small JSON messages. The node that took the
//! call acts locally first, stores the revocations it made in Redis (with the tokens'
//! remaining life as expiry) and publishes the order; every other node closes its own
//! matching sockets, revokes those sockets' tokens in turn (only it knows their `jti`s),
//! and keeps everything in its local copy and its own store, so a Redis outage or a restart
//! forgets nothing.

use serde::{Deserialize, Serialize};
use wsgate::{Cause, Revoked, Target};

use super::{Cluster, ClusterError, Parts};
use crate::revoke::{carry_out, keep_revocations, revocations_of};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Message {
    /// Close matching sockets (and, with `revoke`, refuse their tokens from now on).
    Disconnect {
        node: String,
        #[serde(default)]
        sub: Option<String>,
        /// With `sub`: only its sessions from these identity providers.
        #[serde(default)]
        providers: Option<Vec<String>>,
        /// What ordered it (`admin`, `ssf`), for the latency metric's label.
        #[serde(default)]
        cause: Option<String>,
        #[serde(default)]
        session: Option<String>,
        /// `[name, value]`: sessions carrying that claim.
        #[serde(default)]
        claim: Option<(String, String)>,
        /// `[until, ordered]` (unix seconds): a soft revocation.
        #[serde(default)]
        grace: Option<(u64, u64)>,
        revoke: bool,
        #[serde(default)]
        revoked: Vec<Revoked>,
    },
    /// Revocations made by another node.
    Revoked { node: String, revoked: Vec<Revoked> },
}

/// Tells every other node about a disconnect this node has already carried out.
pub async fn announce_disconnect(
    cluster: &Cluster,
    target: &Target,
    order: Announced,
    revoked: &[Revoked],
) -> Result<(), ClusterError> {
    if !cluster.is_up() {
        return Err(ClusterError::Unavailable);
    }
    let (mut sub, mut session, mut claim, mut providers) = (None, None, None, None);
    match target {
        Target::Sub(s) => sub = Some(s.clone()),
        Target::SubOf {
            sub: s,
            providers: p,
        } => {
            sub = Some(s.clone());
            providers = Some(p.clone());
        }
        Target::Session(s) => session = Some(s.clone()),
        Target::Claim { name, value } => claim = Some((name.clone(), value.clone())),
        // API keys: each node sweeps its own store; kept credentials are each node's own.
        Target::Credential(_) | Target::Token(_) => return Ok(()),
    }
    // The order goes out even if storing failed: the sockets on other nodes must close now,
    // and every node keeps what it is told in its own copy and store.
    let stored = cluster.store_revocations(revoked).await;
    publish(
        cluster,
        &Message::Disconnect {
            node: cluster.node().to_owned(),
            sub,
            providers,
            cause: Some(order.cause.as_str().to_owned()),
            session,
            claim,
            grace: order.grace,
            revoke: order.revoke,
            revoked: revoked.to_vec(),
        },
    )
    .await?;
    stored
}

/// How a disconnect was ordered, as every node carries it out.
#[derive(Debug, Clone, Copy)]
pub struct Announced {
    pub revoke: bool,
    /// `(until, ordered)`, unix seconds: a soft revocation.
    pub grace: Option<(u64, u64)>,
    pub cause: Cause,
}

/// Stores revocations in Redis and tells every node about them.
pub async fn share_revocations(
    cluster: &Cluster,
    revoked: Vec<Revoked>,
) -> Result<(), ClusterError> {
    if revoked.is_empty() {
        return Ok(());
    }
    let stored = cluster.store_revocations(&revoked).await;
    let node = cluster.node().to_owned();
    publish(cluster, &Message::Revoked { node, revoked }).await?;
    stored
}

async fn publish(cluster: &Cluster, message: &Message) -> Result<(), ClusterError> {
    let payload = serde_json::to_string(message).map_err(|_| ClusterError::Unavailable)?;
    cluster
        .query::<i64>(
            redis::cmd(cluster.publish_command())
                .arg(cluster.channel(&["control"]))
                .arg(payload),
        )
        .await
        .map(drop)
}

/// A control message from Redis (this node's own are ignored: it acted already).
pub async fn handle(cluster: &Cluster, parts: &Parts, payload: &str) {
    let Ok(message) = serde_json::from_str::<Message>(payload) else {
        tracing::warn!(target: "wsgate::cluster", "unreadable control message ignored");
        return;
    };
    match message {
        Message::Disconnect { node, .. } | Message::Revoked { node, .. }
            if node == cluster.node() => {}
        Message::Disconnect {
            sub,
            providers,
            cause,
            session,
            claim,
            grace,
            revoke,
            revoked,
            ..
        } => {
            let target = match (sub, session, claim) {
                (Some(sub), None, None) => match providers {
                    Some(providers) => Target::SubOf { sub, providers },
                    None => Target::Sub(sub),
                },
                (None, Some(s), None) => Target::Session(s),
                (None, None, Some((name, value))) => Target::Claim { name, value },
                _ => return,
            };
            let cause = match cause.as_deref() {
                Some("ssf") => Cause::Ssf,
                _ => Cause::Admin,
            };
            // Refused from this moment, closed now, persisted after: the sockets do not wait
            // for the store's write.
            let persisted = keep(parts, &revoked);
            let closed = carry_out(&parts.registry, &target, revoke, grace, cause);
            persisted.await;
            tracing::info!(target: "wsgate::cluster", target = ?target, closed = closed.len(), "disconnect from another node");
            // An admin's revocation names the closed tokens (only this node knows their
            // `jti`s); a Shared Signals event's own revocation (the subject, the email, the
            // `sid`) already covers them, and naming them would revoke a subject's other
            // sessions for one session's event.
            if revoke && cause == Cause::Admin && !closed.is_empty() {
                let mine = revocations_of(&closed, parts.leeway_secs);
                keep(parts, &mine).await;
                if let Err(e) = share_revocations(cluster, mine).await {
                    // Kept here and re-uploaded at the next resync.
                    tracing::warn!(target: "wsgate::cluster", error = %e, "could not share revocations");
                }
            }
        }
        Message::Revoked { revoked, .. } => keep(parts, &revoked).await,
    }
}

/// Adds revocations to the local copy at once; the returned future writes them to the
/// node's own store.
fn keep(parts: &Parts, revoked: &[Revoked]) -> impl Future<Output = ()> + use<> {
    let persisted = keep_revocations(&parts.revocations, &parts.store, revoked);
    async move {
        if !persisted.await {
            tracing::error!(target: "wsgate::cluster", "could not persist a revocation; it holds in memory and in Redis");
        }
    }
}
