//! Channels across nodes: one Redis PUBLISH per message, whatever the number of nodes or
//! subscribers, and Redis subscriptions only for channels with subscribers on this node.
//!
//! Every message, including one whose subscribers are all on the publishing node, travels
//! through Redis and comes back as a push: one path means each subscriber gets it once, in
//! the order Redis received it (so per channel per publisher, in publish order). The push is
//! handed to the local [`MemoryBroker`], which fans it out to sockets as in single-node mode.
//!
//! Subscribing and unsubscribing a channel in Redis are serialised by a per-channel async
//! lock (a "gate") holding whether Redis has the channel: a connection leaving a channel
//! while another joins it can never leave Redis unsubscribed under a local subscriber, and
//! different channels never wait for each other (a reconnect storm of users joining their own
//! `user:{sub}` channels pipelines its SUBSCRIBEs on the shared connection). A `subscribe`
//! resolves only once Redis confirmed the channel (`subscribed` means live on every
//! node). Gates exist only while a channel has local subscribers or a change in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use futures_util::{StreamExt, TryStreamExt};

use super::{Cluster, ClusterError};
use crate::broker::{Broker, BrokerError, BrokerFuture, MemoryBroker, Subscriber};

/// A channel's gate: `true` while this node is subscribed to it in Redis.
type Gate = Arc<tokio::sync::Mutex<bool>>;

/// How many channels a resync subscribes at once.
const RESUBSCRIBE_IN_FLIGHT: usize = 64;

pub struct ClusterBroker {
    cluster: Arc<Cluster>,
    local: MemoryBroker,
    /// Gates by channel name (without the key prefix).
    gates: Mutex<HashMap<String, Gate>>,
    me: std::sync::Weak<ClusterBroker>,
}

impl ClusterBroker {
    pub fn new(cluster: Arc<Cluster>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            cluster,
            local: MemoryBroker::new(),
            gates: Mutex::default(),
            me: me.clone(),
        })
    }

    fn redis_channel(&self, channel: &str) -> String {
        self.cluster.channel(&["ch:", channel])
    }

    /// A message that came back from Redis: to this node's subscribers.
    pub fn deliver_local(&self, channel: &str, frame: Utf8Bytes) {
        self.local.deliver(channel, &frame);
    }

    fn gates(&self) -> std::sync::MutexGuard<'_, HashMap<String, Gate>> {
        self.gates.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gate(&self, channel: &str) -> Gate {
        self.gates().entry(channel.to_owned()).or_default().clone()
    }

    /// Drops a channel's gate once nobody holds it and Redis does not have the channel.
    /// Callers drop their own clone first: the count then tells whether anyone else waits.
    fn forget(&self, channel: &str) {
        let mut gates = self.gates();
        if let Some(g) = gates.get(channel)
            && Arc::strong_count(g) == 1
            && g.try_lock().is_ok_and(|subscribed| !*subscribed)
        {
            gates.remove(channel);
        }
    }

    /// Brings one channel's Redis subscription in line with its local subscribers. `again`:
    /// the connection was re-established, so Redis may have lost what the gate says it has.
    async fn settle(&self, channel: &str, again: bool) -> Result<(), ClusterError> {
        let gate = self.gate(channel);
        let result = {
            let mut subscribed = gate.lock().await;
            let wanted = self.local.count(channel) > 0;
            if wanted && (again || !*subscribed) {
                self.cluster
                    .subscribe(&self.redis_channel(channel))
                    .await
                    .map(|()| *subscribed = true)
            } else if !wanted && *subscribed {
                // Marked gone even if UNSUBSCRIBE fails: messages for it then find no local
                // subscriber and are dropped, and the next subscriber subscribes again
                // (idempotent in Redis).
                *subscribed = false;
                let unsubscribed = self.cluster.unsubscribe(&self.redis_channel(channel)).await;
                if let Err(e) = unsubscribed {
                    tracing::debug!(target: "wsgate::cluster", error = %e, channel, "unsubscribe failed");
                }
                Ok(())
            } else {
                Ok(())
            }
        };
        drop(gate);
        self.forget(channel);
        result
    }

    /// After a reconnection: every channel with local subscribers subscribed again, every
    /// other one left (both idempotent in Redis, so racing the client library's own
    /// resubscription is harmless).
    pub async fn resubscribe(&self) -> Result<(), ClusterError> {
        let mut channels = self.local.channels();
        channels.extend(self.gates().keys().cloned());
        channels.sort_unstable();
        channels.dedup();
        futures_util::stream::iter(channels)
            .map(|channel| async move { self.settle(&channel, true).await })
            .buffer_unordered(RESUBSCRIBE_IN_FLIGHT)
            .try_collect()
            .await
    }
}

impl Broker for ClusterBroker {
    fn subscribe<'a>(&'a self, channel: &'a str, sub: Subscriber) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            if !self.cluster.is_up() {
                // Not confirmable on every node; the client may retry once Redis is back.
                return Err(BrokerError::Unavailable);
            }
            let conn = sub.conn;
            self.local.add(channel, sub);
            match self.settle(channel, false).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::warn!(target: "wsgate::cluster", error = %e, channel, "subscribe failed");
                    self.unsubscribe(channel, conn);
                    Err(BrokerError::Unavailable)
                }
            }
        })
    }

    fn unsubscribe(&self, channel: &str, conn: u64) {
        if self.local.remove(channel, conn)
            && let Some(me) = self.me.upgrade()
        {
            let channel = channel.to_owned();
            tokio::spawn(async move {
                // Errors are logged inside; a stale subscription only costs dropped messages.
                let _ = me.settle(&channel, false).await;
            });
        }
    }

    fn publish<'a>(&'a self, channel: &'a str, frame: Utf8Bytes) -> BrokerFuture<'a, usize> {
        Box::pin(async move {
            if !self.cluster.is_up() {
                // Known down: this node's own subscribers still hear it.
                return Err(BrokerError::LocalOnly(self.local.deliver(channel, &frame)));
            }
            let cmd = redis::cmd(self.cluster.publish_command())
                .arg(self.redis_channel(channel))
                .arg(frame.as_str())
                .to_owned();
            match self.cluster.query::<i64>(&cmd).await {
                // Local subscribers get it through Redis, like everyone else.
                Ok(_) => Ok(self.local.count(channel)),
                Err(e) => {
                    // Maybe published, maybe not: delivering locally could duplicate it.
                    tracing::warn!(target: "wsgate::cluster", error = %e, channel, "publish failed");
                    Err(BrokerError::Unavailable)
                }
            }
        })
    }
}
