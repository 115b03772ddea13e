//! Channels: who is subscribed where, and delivery of published frames.
//!
//! [`Broker`] is the small seam cluster mode puts Redis behind (`cluster::broker::ClusterBroker`);
//! [`MemoryBroker`] is the single-node implementation, and the local delivery of the cluster one. A
//! published frame is encoded once by the caller and the same bytes are shared by every subscriber
//! (`Utf8Bytes` clones are reference counts), and encoded as a WebSocket frame once too. Delivery
//! never waits: each subscriber's outbox either writes the frame to the socket at once (when the
//! socket takes it without waiting and nothing must come first: see `wsgate::outbox`) or queues it
//! for the socket's own task, bounded; a subscriber whose outbox is full is closed with
//! `CloseReason::SlowConsumer` (by its own session guard) instead of slowing the publisher or the
//! other subscribers.
//!
//! No lock is held while frames are written: a publish takes the channel's subscriber list as a
//! shared snapshot (an `Arc` clone under the read lock) and delivers from it, so a publish to
//! 10,000 sockets never keeps a subscribe, an unsubscribe or another channel's writer waiting.
//! The snapshot is rebuilt lazily by the first publish after the set changed, so joining and
//! leaving stay O(1) and a publish costs at most one extra pass over its subscribers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use axum::extract::ws::Utf8Bytes;
use wsgate::outbox::{Delivered, Delivery, OutboxSender, SendError};

/// Deliveries to subscribers on this node, by `path`: `direct` (written to the socket by the
/// publisher: no task woken) or `queued` (for the socket's own task: it was busy, or had
/// frames waiting). Mostly `queued` means subscribers that do not keep up.
pub const DELIVERIES: &str = "wsgate_deliveries_total";

/// Frames a subscriber may have queued before it counts as a slow consumer.
pub const QUEUE: usize = 256;

pub type BrokerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BrokerError>> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the message bus is unavailable")]
    Unavailable,
    /// Cluster mode with Redis down: the message reached this node's subscribers only.
    #[error("the cluster is unavailable: delivered to {0} subscriber(s) on this node only")]
    LocalOnly(usize),
}

/// One subscribed connection.
#[derive(Clone)]
pub struct Subscriber {
    /// Unique per connection for the life of the process.
    pub conn: u64,
    pub tx: OutboxSender,
}

pub trait Broker: Send + Sync + 'static {
    /// Resolves once the subscription is live (in cluster mode: on every node).
    fn subscribe<'a>(&'a self, channel: &'a str, sub: Subscriber) -> BrokerFuture<'a, ()>;
    fn unsubscribe(&self, channel: &str, conn: u64);
    /// Delivers `frame` to the channel's subscribers; returns how many local ones got it.
    fn publish<'a>(&'a self, channel: &'a str, frame: Utf8Bytes) -> BrokerFuture<'a, usize>;
}

#[derive(Default)]
pub struct MemoryBroker {
    channels: RwLock<HashMap<String, Channel>>,
}

/// One channel's subscribers here, and the list a publish delivers from.
#[derive(Default)]
struct Channel {
    subs: HashMap<u64, Subscriber>,
    /// `subs` as a list, shared by the publishes in flight; `None` after any change.
    snapshot: Option<Arc<[Subscriber]>>,
}

impl Channel {
    fn snapshot(&mut self) -> Arc<[Subscriber]> {
        self.snapshot
            .get_or_insert_with(|| self.subs.values().cloned().collect())
            .clone()
    }
}

impl MemoryBroker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Local delivery (also the cluster broker's last step): how many subscribers got it.
    pub fn deliver(&self, channel: &str, frame: &Utf8Bytes) -> usize {
        let Some(subs) = self.subscribers(channel) else {
            return 0;
        };
        let frame = Delivery::new(frame.clone());
        let (mut written, mut queued) = (0, 0);
        for s in subs.iter() {
            match s.tx.try_deliver(&frame) {
                Ok(Delivered::Written) => written += 1,
                Ok(Delivered::Queued) => queued += 1,
                // Reported once per socket; its own guard closes it (`CloseReason::SlowConsumer`).
                Err(SendError::Full) => {
                    metrics::counter!("wsgate_slow_consumers_total").increment(1);
                    tracing::warn!(target: "wsgate::broker", conn = s.conn, "slow consumer closed");
                }
                // Gone or closing; its task unsubscribes on the way out.
                Err(SendError::Closed) => {}
            }
        }
        // Counted per publish, not per subscriber: two look-ups for 10,000 deliveries.
        metrics::counter!(DELIVERIES, "path" => "direct").increment(written);
        metrics::counter!(DELIVERIES, "path" => "queued").increment(queued);
        (written + queued) as usize
    }

    /// The channel's subscribers as a snapshot, taken without holding a lock past this call.
    fn subscribers(&self, channel: &str) -> Option<Arc<[Subscriber]>> {
        {
            let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
            if let Some(snapshot) = &channels.get(channel)?.snapshot {
                return Some(snapshot.clone());
            }
        }
        // The set changed since the last publish: build the list once, for every publish after.
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        Some(channels.get_mut(channel)?.snapshot())
    }

    /// Adds a subscriber.
    pub fn add(&self, channel: &str, sub: Subscriber) {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        let ch = channels.entry(channel.to_owned()).or_default();
        ch.subs.insert(sub.conn, sub);
        ch.snapshot = None;
    }

    /// Removes a subscriber; true if the channel has none left here.
    pub fn remove(&self, channel: &str, conn: u64) -> bool {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        let Some(ch) = channels.get_mut(channel) else {
            return true;
        };
        if ch.subs.remove(&conn).is_some() {
            ch.snapshot = None;
        }
        if ch.subs.is_empty() {
            channels.remove(channel);
            return true;
        }
        false
    }

    /// How many subscribers the channel has here.
    pub fn count(&self, channel: &str) -> usize {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        channels.get(channel).map_or(0, |ch| ch.subs.len())
    }

    /// The channels with at least one subscriber here.
    pub fn channels(&self) -> Vec<String> {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        channels.keys().cloned().collect()
    }
}

impl Broker for MemoryBroker {
    fn subscribe<'a>(&'a self, channel: &'a str, sub: Subscriber) -> BrokerFuture<'a, ()> {
        self.add(channel, sub);
        Box::pin(std::future::ready(Ok(())))
    }

    fn unsubscribe(&self, channel: &str, conn: u64) {
        self.remove(channel, conn);
    }

    fn publish<'a>(&'a self, channel: &'a str, frame: Utf8Bytes) -> BrokerFuture<'a, usize> {
        Box::pin(std::future::ready(Ok(self.deliver(channel, &frame))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsgate::outbox::outbox;

    fn sub(conn: u64) -> (Subscriber, wsgate::outbox::Outbox) {
        let (tx, rx) = outbox(QUEUE);
        (Subscriber { conn, tx }, rx)
    }

    #[test]
    fn a_publish_reaches_exactly_the_subscribers_of_the_moment() {
        let broker = MemoryBroker::new();
        let frame = Utf8Bytes::from_static("{}");
        let (a, _ra) = sub(1);
        let (b, _rb) = sub(2);
        broker.add("room", a);
        assert_eq!(broker.deliver("room", &frame), 1);
        // A join after a publish is seen by the next one (the snapshot is rebuilt)...
        broker.add("room", b);
        assert_eq!(broker.deliver("room", &frame), 2);
        assert_eq!(broker.deliver("room", &frame), 2);
        // ...and so is a leave.
        assert!(!broker.remove("room", 1));
        assert_eq!(broker.deliver("room", &frame), 1);
        assert!(broker.remove("room", 2));
        assert_eq!(broker.deliver("room", &frame), 0);
        assert_eq!(broker.count("room"), 0);
    }

    #[test]
    fn a_publish_holds_no_lock_while_it_writes() {
        let broker = MemoryBroker::new();
        let (a, _ra) = sub(1);
        broker.add("room", a);
        let snapshot = broker.subscribers("room").expect("a subscriber");
        // With a publish's list still in hand, the table can be written: no lock is held.
        let (b, _rb) = sub(2);
        broker.add("room", b);
        assert!(broker.channels.try_write().is_ok());
        assert_eq!(snapshot.len(), 1);
        assert_eq!(broker.count("room"), 2);
    }
}
