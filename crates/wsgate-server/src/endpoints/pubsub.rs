//! `pubsub`: channels over one socket (SPEC §6).
//!
//! Client frames: `subscribe {channel}`, `unsubscribe {channel}`, `publish {channel, data}`,
//! `refresh {token}` (handled by the session guard), `ping`. Server frames: `welcome`,
//! `subscribed`, `unsubscribed`, `message {channel, from, data}`, `published`, `refreshed`,
//! `pong`, `error {code, message, channel?}`. Error codes: `bad_json`, `missing_field`,
//! `unknown_type`, `invalid_channel`, `forbidden`, `too_many_subscriptions`,
//! `unsupported_frame`, `unavailable`. A request's `id` (any JSON value) is repeated in
//! its answer. Permissions come from the identity's `channels` and `publish` patterns and are
//! re-checked when the credential is refreshed: channels no longer allowed are left with an
//! `unsubscribed` frame. Nothing a client sends ends its own connection except the session
//! rules (size, rate, expiry); every bad frame gets an `error` with a stable code.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use wsgate::permissions::{allowed, valid_channel};
use wsgate::{Incoming, Session, WsAuth};

use super::Endpoint;
use crate::broker::{Broker, BrokerError, QUEUE, Subscriber};

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
/// Channels one socket may be subscribed to at once.
pub const MAX_SUBSCRIPTIONS: usize = 1000;

pub fn router(path: &str, ep: Endpoint) -> Router {
    Router::new().route(path, get(upgrade)).with_state(ep)
}

async fn upgrade(State(ep): State<Endpoint>, auth: WsAuth, ws: WebSocketUpgrade) -> Response {
    auth.on_upgrade(ws, move |socket, identity| {
        // Built here, synchronously, so the connection's task stores the session once.
        let conn = Conn::new(
            Session::new(socket, identity, ep.auth, &ep.session),
            ep.broker,
        );
        ep.tracker.track_future(run(conn))
    })
}

/// The `message` frame for a publication, encoded once for every subscriber.
pub fn message_frame(channel: &str, from: Option<&str>, data: &Value) -> Utf8Bytes {
    json!({"type": "message", "channel": channel, "from": from, "data": data})
        .to_string()
        .into()
}

struct Conn {
    session: Session,
    broker: Arc<dyn Broker>,
    me: Subscriber,
    /// A socket subscribes to a handful of channels: a small vector beats a tree node.
    subscribed: Vec<String>,
}

async fn run(mut conn: Conn) {
    if !conn.session.welcome().await {
        return;
    }
    // The handlers are boxed: inline, their state would sit in every idle subscriber's task.
    while let Some(event) = conn.session.recv_event().await {
        match event {
            Incoming::Frame(Message::Text(text)) => Box::pin(conn.handle(&text)).await,
            Incoming::Frame(_) => {
                let why = "pubsub speaks JSON text frames";
                Box::pin(conn.error(None, "unsupported_frame", why, None)).await
            }
            Incoming::Refreshed => Box::pin(conn.recheck()).await,
        }
    }
    for channel in &conn.subscribed {
        conn.broker.unsubscribe(channel, conn.me.conn);
    }
}

/// A client frame that parsed: what it asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Ping,
    Subscribe(String),
    Unsubscribe(String),
    Publish(String, Option<Value>),
}

/// Why a frame is answered with an `error` frame (the stable `code`, a fixed message, the
/// channel it named).
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: &'static str,
    pub channel: Option<String>,
}

impl Refusal {
    fn new(code: &'static str, message: &'static str) -> Self {
        Self {
            code,
            message,
            channel: None,
        }
    }
}

/// Reads one client text frame: its `id` (repeated in the answer, whatever happens) and the
/// command, or why it is refused. Pure, so the fuzzers drive it directly.
pub fn parse(text: &str) -> (Option<Value>, Result<Command, Refusal>) {
    let req: Request = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(_) => {
            let why = "frames are JSON objects with a \"type\"";
            return (None, Err(Refusal::new("bad_json", why)));
        }
    };
    let Some(kind) = req.r#type else {
        let why = "\"type\" is required";
        return (req.id, Err(Refusal::new("missing_field", why)));
    };
    let command = match kind.as_str() {
        "ping" => Ok(Command::Ping),
        "subscribe" | "unsubscribe" | "publish" => match req.channel {
            None => Err(Refusal::new("missing_field", "\"channel\" is required")),
            Some(channel) if !valid_channel(&channel) => Err(Refusal {
                code: "invalid_channel",
                message: "channel names are 1-200 printable characters without spaces",
                channel: Some(channel),
            }),
            Some(channel) => Ok(match kind.as_str() {
                "subscribe" => Command::Subscribe(channel),
                "unsubscribe" => Command::Unsubscribe(channel),
                _ => Command::Publish(channel, req.data),
            }),
        },
        _ => Err(Refusal::new("unknown_type", "unknown frame type")),
    };
    (req.id, command)
}

#[derive(Deserialize)]
struct Request {
    r#type: Option<String>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

impl Conn {
    fn new(mut session: Session, broker: Arc<dyn Broker>) -> Self {
        let (tx, rx) = wsgate::outbox::outbox(QUEUE);
        session.attach_outbound(rx);
        let me = Subscriber {
            conn: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
            tx,
        };
        Self {
            session,
            broker,
            me,
            subscribed: Vec::new(),
        }
    }

    async fn handle(&mut self, text: &str) {
        let (id, command) = parse(text);
        match command {
            Ok(Command::Ping) => self.reply(json!({"type": "pong"}), id).await,
            Ok(Command::Subscribe(channel)) => self.subscribe(channel, id).await,
            Ok(Command::Unsubscribe(channel)) => self.unsubscribe(channel, id).await,
            Ok(Command::Publish(channel, data)) => self.publish(channel, data, id).await,
            Err(r) => {
                self.error(id, r.code, r.message, r.channel.as_deref())
                    .await
            }
        }
    }

    async fn subscribe(&mut self, channel: String, id: Option<Value>) {
        let identity = self.session.identity();
        if !allowed(identity.channels(), identity.sub(), &channel) {
            return self
                .error(
                    id,
                    "forbidden",
                    "not allowed to subscribe to this channel",
                    Some(&channel),
                )
                .await;
        }
        if !self.subscribed.contains(&channel) {
            if self.subscribed.len() >= MAX_SUBSCRIPTIONS {
                let why = "unsubscribe from a channel first";
                return self
                    .error(id, "too_many_subscriptions", why, Some(&channel))
                    .await;
            }
            if self
                .broker
                .subscribe(&channel, self.me.clone())
                .await
                .is_err()
            {
                return self
                    .error(
                        id,
                        "unavailable",
                        "could not subscribe; try again",
                        Some(&channel),
                    )
                    .await;
            }
            self.subscribed.push(channel.clone());
        }
        self.reply(json!({"type": "subscribed", "channel": channel}), id)
            .await;
    }

    async fn unsubscribe(&mut self, channel: String, id: Option<Value>) {
        if let Some(i) = self.subscribed.iter().position(|c| *c == channel) {
            self.subscribed.swap_remove(i);
            self.broker.unsubscribe(&channel, self.me.conn);
        }
        self.reply(json!({"type": "unsubscribed", "channel": channel}), id)
            .await;
    }

    async fn publish(&mut self, channel: String, data: Option<Value>, id: Option<Value>) {
        let identity = self.session.identity();
        if !allowed(identity.publish(), identity.sub(), &channel) {
            return self
                .error(
                    id,
                    "forbidden",
                    "not allowed to publish to this channel",
                    Some(&channel),
                )
                .await;
        }
        let Some(data) = data else {
            return self
                .error(id, "missing_field", "\"data\" is required", Some(&channel))
                .await;
        };
        let frame = message_frame(&channel, Some(identity.sub()), &data);
        if let Err(e) = self.broker.publish(&channel, frame).await {
            let why = match e {
                BrokerError::LocalOnly(_) => {
                    "the cluster is unavailable: delivered on this node only"
                }
                BrokerError::Unavailable => "could not publish; try again",
            };
            return self.error(id, "unavailable", why, Some(&channel)).await;
        }
        if id.is_some() {
            self.reply(json!({"type": "published", "channel": channel}), id)
                .await;
        }
    }

    /// After a refresh: leave the channels the new credential no longer grants.
    async fn recheck(&mut self) {
        let identity = self.session.identity().clone();
        let lost: Vec<String> = self
            .subscribed
            .iter()
            .filter(|c| !allowed(identity.channels(), identity.sub(), c))
            .cloned()
            .collect();
        for channel in lost {
            self.subscribed.retain(|c| *c != channel);
            self.broker.unsubscribe(&channel, self.me.conn);
            self.reply(
                json!({"type": "unsubscribed", "channel": channel, "reason": "permission"}),
                None,
            )
            .await;
        }
    }

    async fn reply(&mut self, mut frame: Value, id: Option<Value>) {
        if let Some(id) = id {
            frame["id"] = id;
        }
        self.session.send(Message::text(frame.to_string())).await;
    }

    async fn error(&mut self, id: Option<Value>, code: &str, message: &str, channel: Option<&str>) {
        let mut frame = json!({"type": "error", "code": code, "message": message});
        if let Some(c) = channel {
            frame["channel"] = json!(c);
        }
        self.reply(frame, id).await;
    }
}
