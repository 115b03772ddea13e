//! `pubsub`: channels over one socket.
//!
//! The frames and their error codes are [`wsgate::protocol`]'s: `subscribe`, `unsubscribe`,
//! `publish`, `ping` in ([`ClientFrame`]; `refresh` is taken by the session guard), and
//! `subscribed`, `unsubscribed`, `message`, `published`, `pong`, `error` out ([`ServerFrame`]). A
//! request's `id` (any JSON value) is repeated in its answer. Permissions come from the identity's
//! `channels` and `publish` patterns and are re-checked when the credential is refreshed: channels
//! no longer allowed are left with an `unsubscribed` frame. Nothing a client sends ends its own
//! connection except the session rules (size, rate, expiry); every bad frame gets an `error` with a
//! stable code.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::{Message, Utf8Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::Value;
use wsgate::permissions::allowed;
use wsgate::protocol::{ClientFrame, ErrorCode, FrameError, ServerFrame};
use wsgate::relay::wsgate_protocol;
use wsgate::{Incoming, Session, WsAuth};

use super::{Endpoint, Upgrade};
use crate::broker::{Broker, BrokerError, QUEUE, Subscriber};
use crate::wire::Wire;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
/// Channels one socket may be subscribed to at once.
pub const MAX_SUBSCRIPTIONS: usize = 1000;

pub fn router(path: &str, ep: Endpoint) -> Router {
    Router::new().route(path, get(upgrade)).with_state(ep)
}

async fn upgrade(
    State(ep): State<Endpoint>,
    auth: WsAuth,
    wire: Option<Extension<Arc<Wire>>>,
    req: Request,
) -> Response {
    let (mut parts, _) = req.into_parts();
    let wire = wire.map(|Extension(w)| w);
    // The session's own writes and the publishers' direct ones meet in the connection's
    // `Wire`, which takes each write whole (see `wire.rs`).
    let protocol = wsgate_protocol(&parts.headers, true);
    let max_message = ep.auth.socket().max_message_bytes;
    match Upgrade::of(auth, &mut parts).await {
        Ok(upgrade) => upgrade.on_upgrade(protocol, max_message, move |socket, identity| {
            let session = Session::with_client_socket(socket, identity, ep.auth, &ep.session);
            ep.tracker
                .track_future(run(Conn::new(session, ep.broker, wire)))
        }),
        Err(not_an_upgrade) => not_an_upgrade,
    }
}

/// The `message` frame for a publication, encoded once for every subscriber.
pub fn message_frame(channel: &str, from: Option<&str>, data: &Value) -> Utf8Bytes {
    ServerFrame::Message {
        channel,
        from,
        data,
    }
    .to_text()
    .into()
}

struct Conn {
    session: Session,
    broker: Arc<dyn Broker>,
    me: Subscriber,
    /// A socket subscribes to a handful of channels: a small vector beats a tree node.
    subscribed: Vec<String>,
}

/// Not an `async fn`, which would hold the connection twice for the socket's life
/// (argument and local); the block uses the one it captured.
#[allow(clippy::manual_async_fn)] // on purpose: see why above
fn run(mut conn: Conn) -> impl Future<Output = ()> + Send {
    async move {
        if !conn.session.welcome().await {
            return;
        }
        // The handlers are boxed: inline, their state would sit in every idle subscriber's
        // task.
        while let Some(event) = conn.session.recv_event().await {
            match event {
                Incoming::Frame(Message::Text(text)) => Box::pin(conn.handle(&text)).await,
                Incoming::Frame(_) => {
                    let why = "pubsub speaks JSON text frames";
                    let e = FrameError::new(ErrorCode::UnsupportedFrame, why);
                    Box::pin(conn.error(None, e)).await
                }
                Incoming::Refreshed => Box::pin(conn.recheck()).await,
            }
        }
        for channel in &conn.subscribed {
            conn.broker.unsubscribe(channel, conn.me.conn);
        }
    }
}

impl Conn {
    /// With the connection's `wire`, deliveries are written by the publisher when they can
    /// be (`wsgate::outbox`), without waking this socket's task.
    fn new(mut session: Session, broker: Arc<dyn Broker>, wire: Option<Arc<Wire>>) -> Self {
        let (tx, rx) = match wire {
            Some(wire) => wsgate::outbox::outbox_writing_to(QUEUE, wire),
            None => wsgate::outbox::outbox(QUEUE),
        };
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
        let (id, frame) = ClientFrame::parse(text);
        let id = id.as_ref();
        match frame {
            Ok(ClientFrame::Ping) => self.reply(ServerFrame::Pong { id }).await,
            Ok(ClientFrame::Subscribe { channel }) => self.subscribe(channel, id).await,
            Ok(ClientFrame::Unsubscribe { channel }) => self.unsubscribe(channel, id).await,
            Ok(ClientFrame::Publish { channel, data }) => self.publish(channel, data, id).await,
            // `refresh` never gets here (the session takes it); `auth` is the handshake's.
            Ok(ClientFrame::Auth { .. } | ClientFrame::Refresh { .. }) => {
                let e = FrameError::new(ErrorCode::UnknownType, "unknown frame type");
                self.error(id, e).await
            }
            Err(e) => self.error(id, e).await,
        }
    }

    async fn subscribe(&mut self, channel: String, id: Option<&Value>) {
        let identity = self.session.identity();
        if !allowed(identity.channels(), identity.sub(), &channel) {
            let why = "not allowed to subscribe to this channel";
            return self.refuse(id, ErrorCode::Forbidden, why, channel).await;
        }
        if !self.subscribed.contains(&channel) {
            if self.subscribed.len() >= MAX_SUBSCRIPTIONS {
                let why = "unsubscribe from a channel first";
                let code = ErrorCode::TooManySubscriptions;
                return self.refuse(id, code, why, channel).await;
            }
            if self
                .broker
                .subscribe(&channel, self.me.clone())
                .await
                .is_err()
            {
                let why = "could not subscribe; try again";
                return self.refuse(id, ErrorCode::Unavailable, why, channel).await;
            }
            self.subscribed.push(channel.clone());
        }
        let channel = &channel;
        self.reply(ServerFrame::Subscribed { channel, id }).await;
    }

    async fn unsubscribe(&mut self, channel: String, id: Option<&Value>) {
        if let Some(i) = self.subscribed.iter().position(|c| *c == channel) {
            self.subscribed.swap_remove(i);
            self.broker.unsubscribe(&channel, self.me.conn);
        }
        let (channel, reason) = (&channel, None);
        self.reply(ServerFrame::Unsubscribed {
            channel,
            reason,
            id,
        })
        .await;
    }

    async fn publish(&mut self, channel: String, data: Option<Value>, id: Option<&Value>) {
        let identity = self.session.identity();
        if !allowed(identity.publish(), identity.sub(), &channel) {
            let why = "not allowed to publish to this channel";
            return self.refuse(id, ErrorCode::Forbidden, why, channel).await;
        }
        let Some(data) = data else {
            let why = "\"data\" is required";
            return self.refuse(id, ErrorCode::MissingField, why, channel).await;
        };
        let frame = message_frame(&channel, Some(identity.sub()), &data);
        if let Err(e) = self.broker.publish(&channel, frame).await {
            let why = match e {
                BrokerError::LocalOnly(_) => {
                    "the cluster is unavailable: delivered on this node only"
                }
                BrokerError::Unavailable => "could not publish; try again",
            };
            return self.refuse(id, ErrorCode::Unavailable, why, channel).await;
        }
        if id.is_some() {
            let channel = &channel;
            self.reply(ServerFrame::Published { channel, id }).await;
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
            let (channel, reason) = (&channel, Some("permission"));
            self.reply(ServerFrame::Unsubscribed {
                channel,
                reason,
                id: None,
            })
            .await;
        }
    }

    async fn reply(&mut self, frame: ServerFrame<'_>) {
        self.session.send(Message::text(frame.to_text())).await;
    }

    async fn refuse(
        &mut self,
        id: Option<&Value>,
        code: ErrorCode,
        message: &'static str,
        channel: String,
    ) {
        let e = FrameError {
            code,
            message,
            channel: Some(channel),
        };
        self.error(id, e).await
    }

    async fn error(&mut self, id: Option<&Value>, e: FrameError) {
        self.reply(ServerFrame::Error {
            code: e.code,
            message: e.message,
            channel: e.channel.as_deref(),
            id,
        })
        .await;
    }
}
