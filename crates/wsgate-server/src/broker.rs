//! Channels: who is subscribed where, and delivery of published frames.
//!
//! [`Broker`] is the small seam the cluster mode will put Redis behind; [`MemoryBroker`] is
//! the single-node implementation. A published frame is encoded once by the caller and the
//! same bytes are shared by every subscriber (`Utf8Bytes` clones are reference counts).
//! Delivery never waits: each subscriber has a bounded queue drained by its own socket task,
//! and a subscriber whose queue is full is closed with 1008 "slow consumer" instead of
//! slowing the publisher or the other subscribers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use wsgate::{CloseOrder, Registry, Target};

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
    /// Its session id, to close it if it falls behind.
    pub session: Arc<str>,
    pub tx: mpsc::Sender<Utf8Bytes>,
}

pub trait Broker: Send + Sync + 'static {
    /// Resolves once the subscription is live (in cluster mode: on every node).
    fn subscribe<'a>(&'a self, channel: &'a str, sub: Subscriber) -> BrokerFuture<'a, ()>;
    fn unsubscribe(&self, channel: &str, conn: u64);
    /// Delivers `frame` to the channel's subscribers; returns how many local ones got it.
    fn publish<'a>(&'a self, channel: &'a str, frame: Utf8Bytes) -> BrokerFuture<'a, usize>;
}

pub struct MemoryBroker {
    channels: RwLock<HashMap<String, HashMap<u64, Subscriber>>>,
    registry: Arc<Registry>,
}

impl MemoryBroker {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            channels: RwLock::default(),
            registry,
        }
    }

    /// Local delivery, shared with the cluster broker later: returns (delivered, laggards).
    fn deliver(&self, channel: &str, frame: &Utf8Bytes) -> (usize, Vec<Arc<str>>) {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        let Some(subs) = channels.get(channel) else {
            return (0, Vec::new());
        };
        let mut delivered = 0;
        let mut slow = Vec::new();
        for s in subs.values() {
            match s.tx.try_send(frame.clone()) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => slow.push(s.session.clone()),
                // The socket is going away; its task unsubscribes on the way out.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        (delivered, slow)
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
        let (delivered, slow) = self.deliver(channel, &frame);
        // Outside the channel lock: closing goes through the registry's own lock.
        for session in slow {
            let closed = self.registry.close(
                &Target::Session(session.to_string()),
                CloseOrder {
                    code: axum::extract::ws::close_code::POLICY,
                    reason: "slow consumer",
                },
            );
            // Its queue stays full until the socket is gone: count it once, when ordered closed.
            if !closed.is_empty() {
                metrics::counter!("wsgate_slow_consumers_total").increment(1);
                tracing::warn!(target: "wsgate::broker", session = %session, "slow consumer closed");
            }
        }
        Box::pin(std::future::ready(Ok(delivered)))
    }
}
