//! Channels: who is subscribed where, and delivery of published frames.
//!
//! [`Broker`] is the small seam the cluster mode will put Redis behind; [`MemoryBroker`] is
//! the single-node implementation. A published frame is encoded once by the caller and the
//! same bytes are shared by every subscriber (`Utf8Bytes` clones are reference counts).
//! Delivery never waits: each subscriber has a bounded outbox drained by its own socket task,
//! and a subscriber whose outbox is full is closed with 1008 "slow consumer" (by its own
//! session guard) instead of slowing the publisher or the other subscribers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;

use axum::extract::ws::Utf8Bytes;
use wsgate::outbox::{OutboxSender, SendError};

/// Frames a subscriber may have queued before it counts as a slow consumer.
pub const QUEUE: usize = 256;

pub type BrokerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BrokerError>> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the message bus is unavailable")]
    Unavailable,
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
    channels: RwLock<HashMap<String, HashMap<u64, Subscriber>>>,
}

impl MemoryBroker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Local delivery, shared with the cluster broker later: how many subscribers got it.
    fn deliver(&self, channel: &str, frame: &Utf8Bytes) -> usize {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        let Some(subs) = channels.get(channel) else {
            return 0;
        };
        let mut delivered = 0;
        for s in subs.values() {
            match s.tx.try_send(frame.clone()) {
                Ok(()) => delivered += 1,
                // Reported once per socket; its own guard closes it with 1008.
                Err(SendError::Full) => {
                    metrics::counter!("wsgate_slow_consumers_total").increment(1);
                    tracing::warn!(target: "wsgate::broker", conn = s.conn, "slow consumer closed");
                }
                // Gone or closing; its task unsubscribes on the way out.
                Err(SendError::Closed) => {}
            }
        }
        delivered
    }
}

impl Broker for MemoryBroker {
    fn subscribe<'a>(&'a self, channel: &'a str, sub: Subscriber) -> BrokerFuture<'a, ()> {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(channel.to_owned())
            .or_default()
            .insert(sub.conn, sub);
        Box::pin(std::future::ready(Ok(())))
    }

    fn unsubscribe(&self, channel: &str, conn: u64) {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        if let Some(subs) = channels.get_mut(channel) {
            subs.remove(&conn);
            if subs.is_empty() {
                channels.remove(channel);
            }
        }
    }

    fn publish<'a>(&'a self, channel: &'a str, frame: Utf8Bytes) -> BrokerFuture<'a, usize> {
        Box::pin(std::future::ready(Ok(self.deliver(channel, &frame))))
    }
}
