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

use serde_json::{Value, json};
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
        events.emit("node_started", &[]);
        Ok(events)
    }

    /// `node_stopped`, then waits (at most [`FLUSH`]) for every sink to send what it holds.
    pub async fn stop(&self) {
        self.emit("node_stopped", &[]);
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
        // What the order named; never a credential (a token is named by a hash we keep to
        // ourselves, an API key by its id).
        let claim;
        let named = match target {
            Target::Sub(sub) | Target::SubOf { sub, .. } => ("sub", Field::Str(sub)),
            Target::Session(s) => ("session", Field::Str(s)),
            Target::Credential(id) => ("key_id", Field::Str(id)),
            Target::Claim { name, value } => {
                claim = json!({ name.as_str(): value });
                ("claim", Field::Json(&claim))
            }
            Target::Token(_) => ("token", Field::Bool(true)),
        };
        let closed = u64::try_from(closed).unwrap_or(u64::MAX);
        self.emit(
            "revoked",
            &[
                ("by", Field::Str(by.as_str())),
                named,
                ("closed", Field::Num(closed)),
            ],
        );
    }

    /// The observer for one endpoint's sessions.
    pub fn observer(self: &Arc<Self>, endpoint: &str) -> Arc<dyn SessionObserver> {
        Arc::new(EndpointEvents {
            events: self.clone(),
            endpoint: endpoint.into(),
        })
    }

    /// Numbers, stamps and serializes an event once, and queues it in every sink.
    fn emit(&self, kind: &'static str, fields: &[(&'static str, Field<'_>)]) {
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
    fn build(&self, kind: &'static str, fields: &[(&'static str, Field<'_>)]) -> Entry {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.build_as(seq, kind, fields)
    }

    /// An event numbered `seq`, serialized: written straight into its text (an event is
    /// built on the handshake's and the close's path, so no map is built to be thrown away).
    fn build_as(
        &self,
        seq: u64,
        kind: &'static str,
        fields: &[(&'static str, Field<'_>)],
    ) -> Entry {
        let mut json = Vec::with_capacity(256);
        json.extend_from_slice(b"{\"type\":");
        Field::Str(kind).write(&mut json);
        json.extend_from_slice(b",\"id\":");
        Field::Str(&self.id(seq)).write(&mut json);
        json.extend_from_slice(b",\"node\":");
        Field::Str(&self.node).write(&mut json);
        for (key, value) in [
            ("epoch", Field::Num(self.epoch)),
            ("seq", Field::Num(seq)),
            ("at", Field::Num(now_ms())),
        ]
        .iter()
        .chain(fields)
        {
            json.push(b',');
            Field::Str(key).write(&mut json);
            json.push(b':');
            value.write(&mut json);
        }
        json.push(b'}');
        Entry {
            seq,
            text: String::from_utf8_lossy(&json).into(),
        }
    }
}

/// One value of an event's own fields.
#[derive(Clone, Copy)]
pub(crate) enum Field<'a> {
    Str(&'a str),
    Num(u64),
    Bool(bool),
    Null,
    Json(&'a Value),
}

impl Field<'_> {
    /// Appends the value as JSON (strings escaped by serde_json).
    fn write(&self, out: &mut Vec<u8>) {
        let written = match self {
            Self::Str(s) => serde_json::to_writer(&mut *out, s),
            Self::Num(n) => serde_json::to_writer(&mut *out, n),
            Self::Bool(b) => serde_json::to_writer(&mut *out, b),
            Self::Null => serde_json::to_writer(&mut *out, &()),
            Self::Json(v) => serde_json::to_writer(&mut *out, v),
        };
        // Writing into memory cannot fail; a value that could not be written is `null`.
        if written.is_err() {
            out.extend_from_slice(b"null");
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

impl SessionObserver for EndpointEvents {
    fn connected(&self, identity: &Identity) {
        if !self.events.wants(EventType::Connected) {
            return;
        }
        let remote = identity.remote_ip().map(|ip| ip.to_string());
        self.events.emit(
            "connected",
            &[
                ("session", Field::Str(identity.session())),
                ("sub", Field::Str(identity.sub())),
                ("provider", Field::Str(identity.provider())),
                ("endpoint", Field::Str(&self.endpoint)),
                ("source", Field::Str(identity.source().as_str())),
                (
                    "remote_addr",
                    remote.as_deref().map_or(Field::Null, Field::Str),
                ),
            ],
        );
    }

    fn refreshed(&self, identity: &Identity) {
        if !self.events.wants(EventType::Refreshed) {
            return;
        }
        let expires_at = identity.expires_at().map_or(Field::Null, Field::Num);
        self.events.emit(
            "refreshed",
            &[
                ("session", Field::Str(identity.session())),
                ("sub", Field::Str(identity.sub())),
                ("expires_at", expires_at),
            ],
        );
    }

    fn closed(&self, identity: &Identity, ended: Ended) {
        // The issuer's own verdict reaches no admin or receiver: it is reported here.
        if ended.cause == Some(Cause::Revalidate) && self.events.wants(EventType::Revoked) {
            self.events.emit(
                "revoked",
                &[
                    ("by", Field::Str(Cause::Revalidate.as_str())),
                    ("session", Field::Str(identity.session())),
                    ("sub", Field::Str(identity.sub())),
                ],
            );
        }
        if !self.events.wants(EventType::Closed) {
            return;
        }
        let lasted = u64::try_from(ended.lasted.as_millis()).unwrap_or(u64::MAX);
        self.events.emit(
            "closed",
            &[
                ("session", Field::Str(identity.session())),
                ("sub", Field::Str(identity.sub())),
                ("code", Field::Num(u64::from(ended.code))),
                ("reason", Field::Str(ended.reason)),
                ("duration_ms", Field::Num(lasted)),
            ],
        );
    }
}
