//! Tickets any node can redeem: stored in Redis under their SHA-256 with the ticket TTL as
//! expiry, redeemed with `GETDEL`, which Redis runs atomically — two nodes racing for one
//! ticket, exactly one gets the identity. No local fallback while Redis is down: a ticket
//! kept locally could be redeemed once here and once elsewhere, so both issue and redeem
//! answer 503 instead.

use std::sync::Arc;
use std::time::Duration;

use wsgate::tickets::{MAX_PER_SUBJECT, TicketFuture, digest, new_ticket};
use wsgate::{AuthError, TicketStore, Verified};

use super::{Cluster, Lua};

/// Counts a subject's tickets issued within the TTL (the per-subject cap, cluster-wide).
const COUNT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
";

#[derive(Debug)]
pub struct RedisTickets {
    cluster: Arc<Cluster>,
    ttl: Duration,
    count: Lua,
}

impl RedisTickets {
    pub fn new(cluster: Arc<Cluster>, ttl: Duration) -> Self {
        Self {
            cluster,
            ttl,
            count: Lua::new(COUNT),
        }
    }

    fn key(&self, digest: &[u8; 32]) -> String {
        self.cluster
            .key(&["ticket:", &wsgate::identity::hex(digest)])
    }
}

const UNAVAILABLE: AuthError = AuthError::Unavailable("the cluster's ticket store is unreachable");

impl TicketStore for RedisTickets {
    fn ttl(&self) -> Duration {
        self.ttl
    }

    fn issue(&self, verified: Verified) -> TicketFuture<'_, String> {
        Box::pin(async move {
            // At most MAX_PER_SUBJECT tickets per subject per TTL, counted across nodes
            // (issued, not outstanding: a redeemed ticket is not given back, so the window is
            // the TTL itself).
            let counter = self
                .cluster
                .key(&["tickets:", &wsgate::identity::hex(&digest(&verified.sub))]);
            if !self.cluster.is_up() {
                return Err(UNAVAILABLE);
            }
            let ttl = self.ttl.as_secs().max(1);
            let issued: u32 = self
                .cluster
                .eval(&self.count, &[&counter], &[ttl.to_string()])
                .await
                .map_err(|e| {
                    tracing::warn!(target: "wsgate::cluster", error = %e, "ticket count failed");
                    UNAVAILABLE
                })?;
            if issued > MAX_PER_SUBJECT {
                return Err(AuthError::TooManyTickets {
                    retry_after_secs: self.ttl.as_secs().max(1),
                });
            }
            let (ticket, key) = new_ticket()?;
            let value = serde_json::to_string(&verified).map_err(|_| UNAVAILABLE)?;
            let set: Option<String> = self
                .cluster
                .query_up(
                    redis::cmd("SET")
                        .arg(self.key(&key))
                        .arg(value)
                        .arg("NX")
                        .arg("EX")
                        .arg(self.ttl.as_secs().max(1)),
                )
                .await
                .map_err(|_| UNAVAILABLE)?;
            // NX refused only if 256 random bits collided: never hand out a shared ticket.
            set.map(|_| ticket).ok_or(UNAVAILABLE)
        })
    }

    fn redeem<'a>(&'a self, ticket: &'a str) -> TicketFuture<'a, Option<Verified>> {
        Box::pin(async move {
            let value: Option<String> = self
                .cluster
                .query_up(redis::cmd("GETDEL").arg(self.key(&digest(ticket))))
                .await
                .map_err(|_| UNAVAILABLE)?;
            Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
        })
    }
}
