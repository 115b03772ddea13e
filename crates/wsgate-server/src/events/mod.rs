//! Connection events: what happens to sessions (`connected`, `refreshed`, `closed`,
//! `revoked`) and to the node (`node_started`, `node_stopped`), sent to a webhook and/or a
//! Redis Stream, for presence, audit, billing and reconciling after a node dies.
//!
//! Every event is a JSON object with `type`, `id` (`<node>:<epoch>:<seq>`), `node`, `epoch`
//! (the node's start, unix ms), `seq` (per node, strictly increasing) and `at` (unix ms).
//! [`Events`] numbers and serializes each event once, then hands it to every [`Sink`]: a
//! bounded queue per destination, drained by its own task in batches (`sink.rs`). Emitting
//! never waits: a slow or dead destination costs a handshake one lock and a push, and past
//! `buffer_max` the oldest events are dropped, counted, and reported by a `gap` event once
//! delivery resumes. No credential is ever put in an event.

mod sink;
mod stream;
mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wsgate::{Cause, Ended, Identity, SessionObserver, Target};

use crate::cluster::Cluster;
use crate::config::{EventType, EventsConfig};
use sink::Entry;
pub use sink::Sink;

/// How long a clean shutdown waits for the last events (`node_stopped` included) to go out.
const FLUSH: Duration = Duration::from_secs(5);

/// Numbers events and hands them to every sink.
pub struct Events {
    node: String,
    epoch: u64,
    seq: AtomicU64,
    types: Vec<EventType>,
    sinks: Vec<Arc<Sink>>,
    stopping: CancellationToken,
    tasks: TaskTracker,
}

impl Events {
    /// The hub for `cfg`, its delivery tasks started: a webhook signed with `webhook_key`,
    /// and in cluster mode a Redis Stream. `node` names this process in every event id.
    pub fn start(
        cfg: &EventsConfig,
        node: String,
        webhook_key: Option<Vec<u8>>,
        cluster: Option<Arc<Cluster>>,
    ) -> anyhow::Result<Arc<Self>> {
        let mut sinks = Vec::new();
        let mut targets = Vec::new();
        if let (Some(url), Some(key)) = (&cfg.webhook_url, webhook_key) {
            let sink = Arc::new(Sink::new("webhook", cfg));
            targets.push((
                sink.clone(),
                sink::Target::Webhook(Box::new(webhook::Webhook::new(url, key)?)),
            ));
            sinks.push(sink);
        }
        if let (Some(stream), Some(cluster)) = (&cfg.redis_stream, cluster) {
            let sink = Arc::new(Sink::new("redis_stream", cfg));
            let key = cluster.key(&[stream]);
            targets.push((
                sink.clone(),
                sink::Target::Stream(stream::Stream::new(cluster, key, cfg.buffer_max)),
            ));
            sinks.push(sink);
        }
        let events = Arc::new(Self {
            node,
            epoch: now_ms(),
            seq: AtomicU64::new(0),
            types: cfg.types.clone(),
            sinks,
            stopping: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let batch = Duration::from_millis(cfg.batch_ms);
        for (sink, target) in targets {
            events
                .tasks
                .spawn(sink::deliver(sink, target, events.clone(), batch));
        }
        events.emit("node_started", Map::new());
        Ok(events)
    }

    /// `node_stopped`, then waits (at most [`FLUSH`]) for every sink to send what it holds.
    pub async fn stop(&self) {
        self.emit("node_stopped", Map::new());
        self.stopping.cancel();
        self.tasks.close();
        if tokio::time::timeout(FLUSH, self.tasks.wait())
            .await
            .is_err()
        {
            let left: usize = self.sinks.iter().map(|s| s.waiting()).sum();
            tracing::warn!(target: "wsgate::events", left, "events not delivered by shutdown");
        }
    }

    fn wants(&self, kind: EventType) -> bool {
        self.types.contains(&kind)
    }

    /// A revocation: `by` whom, and what it named (`sub`, `session`, `claim`).
    pub fn revoked(&self, by: Cause, target: &Target, closed: usize) {
        if !self.wants(EventType::Revoked) {
            return;
        }
        let mut fields = Map::new();
        fields.insert("by".into(), by.as_str().into());
        // What the order named; never a credential (a token is named by a hash we keep to
        // ourselves, an API key by its id).
        match target {
            Target::Sub(sub) | Target::SubOf { sub, .. } => {
                fields.insert("sub".into(), sub.as_str().into())
            }
            Target::Session(s) => fields.insert("session".into(), s.as_str().into()),
            Target::Credential(id) => fields.insert("key_id".into(), id.as_str().into()),
            Target::Claim { name, value } => {
                fields.insert("claim".into(), json!({ name.as_str(): value }))
            }
            Target::Token(_) => fields.insert("token".into(), true.into()),
        };
        fields.insert("closed".into(), closed.into());
        self.emit("revoked", fields);
    }

    /// The observer for one endpoint's sessions.
    pub fn observer(self: &Arc<Self>, endpoint: &str) -> Arc<dyn SessionObserver> {
        Arc::new(EndpointEvents {
            events: self.clone(),
            endpoint: endpoint.into(),
        })
    }

    /// Numbers, stamps and serializes an event once, and queues it in every sink.
    fn emit(&self, kind: &'static str, fields: Map<String, Value>) {
        let event = self.build(kind, fields);
        for sink in &self.sinks {
            sink.push(event.clone());
        }
    }

    /// The id of this node's event `seq`.
    fn id(&self, seq: u64) -> String {
        format!("{}:{}:{seq}", self.node, self.epoch)
    }

    /// An event with the next `seq`, serialized.
    fn build(&self, kind: &'static str, fields: Map<String, Value>) -> Entry {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.build_as(seq, kind, fields)
    }

    /// An event numbered `seq`, serialized.
    fn build_as(&self, seq: u64, kind: &'static str, fields: Map<String, Value>) -> Entry {
        let mut event = Map::with_capacity(fields.len() + 6);
        event.insert("type".into(), kind.into());
        event.insert("id".into(), self.id(seq).into());
        event.insert("node".into(), self.node.as_str().into());
        event.insert("epoch".into(), self.epoch.into());
        event.insert("seq".into(), seq.into());
        event.insert("at".into(), now_ms().into());
        event.extend(fields);
        Entry {
            seq,
            text: Value::Object(event).to_string().into(),
        }
    }
}

/// Unix time in milliseconds.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One endpoint's sessions, told to the hub.
struct EndpointEvents {
    events: Arc<Events>,
    endpoint: Box<str>,
}

fn who(identity: &Identity) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("session".into(), identity.session().into());
    fields.insert("sub".into(), identity.sub().into());
    fields
}

impl SessionObserver for EndpointEvents {
    fn connected(&self, identity: &Identity) {
        if !self.events.wants(EventType::Connected) {
            return;
        }
        let mut fields = who(identity);
        fields.insert("provider".into(), identity.provider().into());
        fields.insert("endpoint".into(), (*self.endpoint).into());
        fields.insert("source".into(), identity.source().as_str().into());
        fields.insert(
            "remote_addr".into(),
            identity
                .remote_ip()
                .map_or(Value::Null, |ip| ip.to_string().into()),
        );
        self.events.emit("connected", fields);
    }

    fn refreshed(&self, identity: &Identity) {
        if !self.events.wants(EventType::Refreshed) {
            return;
        }
        let mut fields = who(identity);
        fields.insert("expires_at".into(), identity.expires_at().into());
        self.events.emit("refreshed", fields);
    }

    fn closed(&self, identity: &Identity, ended: Ended) {
        // The issuer's own verdict reaches no admin or receiver: it is reported here.
        if ended.cause == Some(Cause::Revalidate) && self.events.wants(EventType::Revoked) {
            let mut fields = who(identity);
            fields.insert("by".into(), Cause::Revalidate.as_str().into());
            self.events.emit("revoked", fields);
        }
        if !self.events.wants(EventType::Closed) {
            return;
        }
        let mut fields = who(identity);
        fields.insert("code".into(), ended.code.into());
        fields.insert("reason".into(), ended.reason.into());
        fields.insert(
            "duration_ms".into(),
            u64::try_from(ended.lasted.as_millis())
                .unwrap_or(u64::MAX)
                .into(),
        );
        self.events.emit("closed", fields);
    }
}
