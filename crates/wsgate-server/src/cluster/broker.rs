//! Channels across nodes: one Redis PUBLISH per message, whatever the number of nodes or
//! subscribers, and Redis subscriptions only for channels with subscribers on this node.
//!
//! Every message, including one whose subscribers are all on the publishing node, travels
//! through Redis and comes back as a push: one path means each subscriber gets it once, in
//! the order Redis received it (so per channel per publisher, in publish order). The push is
//! handed to the local [`MemoryBroker`], which fans it out to sockets as in single-node mode.
//!
//! Subscribing and unsubscribing in Redis are serialised by one async lock over the set of
//! channels this node holds there: a connection leaving a channel while another joins it can
//! never leave Redis unsubscribed under a local subscriber. A `subscribe` resolves only once
//! Redis confirmed the channel (SPEC: `subscribed` means live on every node).

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Mutex;

use super::{Cluster, ClusterError};
use crate::broker::{Broker, BrokerError, BrokerFuture, MemoryBroker, Subscriber};

pub struct ClusterBroker {
    cluster: Arc<Cluster>,
    local: MemoryBroker,
    /// Channels this node is subscribed to in Redis (names without the key prefix).
    live: Arc<Mutex<HashSet<String>>>,
    me: std::sync::Weak<ClusterBroker>,
}

impl ClusterBroker {
    pub fn new(cluster: Arc<Cluster>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            cluster,
            local: MemoryBroker::new(),
            live: Arc::default(),
            me: me.clone(),
        })
    }

    fn redis_channel(&self, channel: &str) -> String {
        self.cluster.key(&["ch:", channel])
    }

    /// A message that came back from Redis: to this node's subscribers.
    pub fn deliver_local(&self, channel: &str, frame: Utf8Bytes) {
        self.local.deliver(channel, &frame);
    }

    /// After a reconnection: every channel with local subscribers, subscribed again
    /// (idempotent in Redis, so racing the client library's own resubscription is harmless).
    pub async fn resubscribe(&self) -> Result<(), ClusterError> {
        let mut live = self.live.lock().await;
        live.clear();
        for channel in self.local.channels() {
            self.cluster
                .subscribe(&self.redis_channel(&channel))
                .await?;
            live.insert(channel);
        }
        Ok(())
    }

    /// Leaves the Redis channel if nobody here listens any more (checked under the lock, so
    /// a subscriber that arrived meanwhile keeps it).
    async fn leave_if_empty(&self, channel: String) {
        let mut live = self.live.lock().await;
        if self.local.count(&channel) > 0 || !live.contains(&channel) {
            return;
        }
        live.remove(&channel);
        if let Err(e) = self
            .cluster
            .unsubscribe(&self.redis_channel(&channel))
            .await
        {
            // Harmless: messages for it find no local subscriber and are dropped.
            tracing::debug!(target: "wsgate::cluster", error = %e, channel, "unsubscribe failed");
        }
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
            let mut live = self.live.lock().await;
            if live.contains(channel) {
                return Ok(());
            }
            match self.cluster.subscribe(&self.redis_channel(channel)).await {
                Ok(()) => {
                    live.insert(channel.to_owned());
                    Ok(())
                }
                Err(e) => {
                    drop(live);
                    tracing::warn!(target: "wsgate::cluster", error = %e, channel, "subscribe failed");
                    self.local.remove(channel, conn);
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
            tokio::spawn(async move { me.leave_if_empty(channel).await });
        }
    }

    fn publish<'a>(&'a self, channel: &'a str, frame: Utf8Bytes) -> BrokerFuture<'a, usize> {
        Box::pin(async move {
            if !self.cluster.is_up() {
                // Known down: this node's own subscribers still hear it.
                return Err(BrokerError::LocalOnly(self.local.deliver(channel, &frame)));
            }
            let cmd = redis::cmd("PUBLISH")
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
