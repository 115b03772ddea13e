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
    /// `node` as a JSON string, escaped once.
    node_json: String,
    /// The opening of every event id as JSON, up to its `seq`: `"<node>:<epoch>:`.
    id_json_prefix: String,
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
        let mut node_json = String::new();
        push_escaped(&mut node_json, &node);
        let epoch = now_ms();
        let open = node_json.strip_suffix('"').unwrap_or(&node_json);
        let id_json_prefix = format!("{open}:{epoch}:");
        let events = Arc::new(Self {
            node_json,
            id_json_prefix,
            node,
            epoch,
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
        use std::fmt::Write;
        let mut json = String::with_capacity(320);
        // Keys and kinds are ours (plain ASCII): written as they are; values are escaped.
        let _ = write!(
            json,
            "{{\"type\":\"{kind}\",\"id\":{}{seq}\",\"node\":{},\"epoch\":{},\"seq\":{seq},\"at\":{}",
            self.id_json_prefix,
            self.node_json,
            self.epoch,
            now_ms()
        );
        for (key, value) in fields {
            let _ = write!(json, ",\"{key}\":");
            value.write(&mut json);
        }
        json.push('}');
        Entry {
            seq,
            text: json.into(),
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
    /// Appends the value as JSON.
    fn write(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = match self {
            Self::Str(s) => {
                push_escaped(out, s);
                Ok(())
            }
            Self::Num(n) => write!(out, "{n}"),
            Self::Bool(b) => write!(out, "{b}"),
            Self::Null => write!(out, "null"),
            Self::Json(v) => write!(out, "{v}"),
        };
    }
}

/// `s` as a JSON string (RFC 8259: quote, backslash and control characters escaped).
fn push_escaped(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if c < ' ' => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push_str(escape);
        }
        plain = i + c.len_utf8();
    }
    out.push_str(&s[plain..]);
    out.push('"');
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_json_whatever_the_strings_hold() {
        let cfg: EventsConfig =
            toml::from_str("webhook_url = \"http://127.0.0.1:9/e\"\nwebhook_secret_env = \"X\"\n")
                .expect("config");
        let node = "host \"q\" \\ \u{1}";
        let events = Events::start(&cfg, node.into(), Some(vec![1; 32]), None).expect("start");
        let tricky = "a\"b\\c\nd\re\tf\u{0}\u{1f}g\u{7f}é🦀/</script>";
        let claim = json!({"k": tricky});
        let entry = events.build(
            "revoked",
            &[
                ("sub", Field::Str(tricky)),
                ("closed", Field::Num(u64::MAX)),
                ("token", Field::Bool(true)),
                ("remote_addr", Field::Null),
                ("claim", Field::Json(&claim)),
            ],
        );
        let v: Value = serde_json::from_str(&entry.text).expect("valid JSON");
        assert_eq!(v["type"], "revoked");
        assert_eq!(v["node"], node);
        assert_eq!(v["id"], events.id(entry.seq));
        assert_eq!(v["seq"], entry.seq);
        assert_eq!(v["sub"], tricky);
        assert_eq!(v["closed"], u64::MAX);
        assert_eq!(v["token"], true);
        assert_eq!(v["remote_addr"], Value::Null);
        assert_eq!(v["claim"], claim);
    }
}
