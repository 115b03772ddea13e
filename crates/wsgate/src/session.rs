//! The guard around an accepted socket: what only a WebSocket-aware layer can do.
//!
//! HTTP middleware checks a credential once; a socket then lives for hours. [`Session`]
//! sends the `welcome` frame and then enforces, for the socket's whole life:
//! - expiry: close `4001` at the credential's `exp` plus leeway, unless a
//!   `{"type":"refresh","token":...}` frame for the same subject moved it (`refreshed`);
//! - revocation and admin disconnects: close `4003` on an order from the [`Registry`](crate::Registry);
//! - limits: `1009` for an oversized message, `4029` past the message rate, `1001` for a
//!   peer silent (pongs included) for the idle timeout, after pings every half of it;
//! - shutdown: `1001`; and it finishes every close handshake properly.
//!
//! Endpoints see only their application frames through [`Session::recv`]. Expiry and idle
//! checks share **one** entry in tokio's timer wheel per connection, re-armed only when it
//! fires (every half idle period), never per message; no extra task per connection.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::authenticator::Authenticator;
use crate::identity::Identity;
use crate::outbox::Outbox;
use crate::registry::{CloseOrder, Registration};
use crate::reject::codes;
use crate::source::{Credential, SourceKind};
use crate::verify::{VerifyContext, now_unix};

/// How long a closing socket waits for the peer's Close reply before it is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
const SECOND: Duration = Duration::from_secs(1);
/// Deadlines further away than this (ten years) are treated as this far.
const MAX_DEADLINE_SECS: u64 = 10 * 365 * 24 * 3600;

/// Per-endpoint session behaviour.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Send the `welcome` frame first (endpoint option `welcome = false` turns it off).
    pub welcome: bool,
    /// Cancelled on shutdown: every session closes with 1001. `None` (the default): the
    /// authenticator's own token, which [`Authenticator::shutdown`] and
    /// [`shutdown_signal`](crate::shutdown_signal) cancel — nothing to wire by hand.
    pub shutdown: Option<CancellationToken>,
    /// Ping every half of this; close (1001) a peer silent for all of it, pongs included.
    pub idle_timeout: Option<Duration>,
    /// Data frames a client may send per second; past it the socket closes with 4029.
    pub messages_per_sec: Option<u32>,
    /// How long before the credential's `exp` the client is sent
    /// `{"type":"expiring","expires_at":exp}` (once per deadline), so it can refresh in time
    /// without a clock of its own (SPEC §13). The server turns it off where no `welcome` is
    /// sent (and on proxies without `refresh_frames`).
    pub expiry_warning: Option<Duration>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            welcome: true,
            shutdown: None,
            idle_timeout: None,
            messages_per_sec: None,
            expiry_warning: Some(Duration::from_secs(30)),
        }
    }
}

/// An authenticated socket under the session's rules.
pub struct Session {
    socket: WebSocket,
    identity: Identity,
    auth: Arc<Authenticator>,
    /// One timer entry per connection, set to the earliest of expiry and the next idle check.
    timer: Option<Pin<Box<Sleep>>>,
    expires: Option<Instant>,
    /// When to send `expiring` for the current deadline; `None` once sent (or when off).
    warn_at: Option<Instant>,
    expiry_warning: Option<Duration>,
    idle: Option<Duration>,
    last_seen: Instant,
    last_ping: Option<Instant>,
    rate: Option<Rate>,
    registration: Option<Registration>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    welcome: bool,
    /// Counted here, added to the metrics in batches (per tick and at the end).
    msgs_in: u64,
    msgs_out: u64,
    closed_with: Option<u16>,
    /// Frames others send to this socket (pub/sub deliveries), forwarded inside `recv`.
    outbound: Option<Outbox>,
    refreshed: bool,
}

/// What [`Session::recv_event`] hands the endpoint.
#[derive(Debug)]
pub enum Incoming {
    /// An application frame from the client (text or binary).
    Frame(Message),
    /// The credential was refreshed: permissions may have changed.
    Refreshed,
}

impl Drop for Session {
    fn drop(&mut self) {
        crate::metrics::ended(self.closed_with, self.msgs_in, self.msgs_out);
    }
}

/// A fixed one-second window: cheap enough to run on every frame.
struct Rate {
    limit: u32,
    window: Instant,
    count: u32,
}

/// What ended the wait in `recv`.
enum Event {
    Shutdown,
    Tick,
    Ordered(CloseOrder),
    Outbound(Option<Utf8Bytes>),
    Frame(Option<Result<Message, axum::Error>>),
}

impl Session {
    /// Wraps an authenticated socket. Synchronous on purpose: build it in the upgrade
    /// callback and move it into the connection's future, so the socket is stored once.
    pub fn new(
        socket: WebSocket,
        identity: Identity,
        auth: Arc<Authenticator>,
        options: &SessionOptions,
    ) -> Self {
        let now = Instant::now();
        let shutdown = options
            .shutdown
            .clone()
            .unwrap_or_else(|| auth.shutdown_token().clone());
        let mut session = Self {
            socket,
            timer: None,
            expires: None,
            warn_at: None,
            expiry_warning: options.expiry_warning.filter(|d| !d.is_zero()),
            idle: options.idle_timeout.filter(|d| !d.is_zero()),
            last_seen: now,
            last_ping: None,
            rate: options.messages_per_sec.map(|limit| Rate {
                limit,
                window: now,
                count: 0,
            }),
            registration: auth.registry_ref().map(|r| r.register(&identity)),
            auth,
            shutdown: Box::pin(shutdown.cancelled_owned()),
            identity,
            welcome: options.welcome,
            msgs_in: 0,
            msgs_out: 0,
            closed_with: None,
            outbound: None,
            refreshed: false,
        };
        crate::metrics::opened();
        session.set_expiry();
        session.arm();
        session
    }

    /// Sends the `welcome` frame (unless the endpoint turned it off); `false` when the socket
    /// is already gone. Call once, before the first `recv`.
    pub async fn welcome(&mut self) -> bool {
        if !self.welcome {
            return true;
        }
        let frame = self.identity.welcome_frame();
        self.socket.send(Message::text(frame)).await.is_ok()
    }

    /// Who is connected (the refreshed identity after a refresh).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Frames sent to the outbox's sender are written to this socket from inside
    /// [`Session::recv`], so a publisher never waits on a subscriber's socket; a full outbox
    /// is the publisher's sign of a slow consumer.
    pub fn attach_outbound(&mut self, rx: Outbox) {
        self.outbound = Some(rx);
    }

    /// The next application frame (text or binary). `None` once the socket is closed, for
    /// whatever reason; the close frame has then already been exchanged.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            match self.recv_event().await? {
                Incoming::Frame(m) => return Some(m),
                Incoming::Refreshed => continue,
            }
        }
    }

    /// Like [`Session::recv`], and also tells the endpoint when the credential was refreshed.
    pub async fn recv_event(&mut self) -> Option<Incoming> {
        loop {
            let event = tokio::select! {
                biased;
                _ = self.shutdown.as_mut() => Event::Shutdown,
                order = ordered(&mut self.registration) => Event::Ordered(order),
                _ = until(&mut self.timer) => Event::Tick,
                out = next_outbound(&mut self.outbound) => Event::Outbound(out),
                msg = self.socket.recv() => Event::Frame(msg),
            };
            let msg = match event {
                Event::Shutdown => return self.end(close_code::AWAY, "server shutting down").await,
                Event::Ordered(o) => return self.end(o.code, o.reason).await,
                Event::Outbound(Some(text)) => {
                    if !self.send(Message::Text(text)).await {
                        return None;
                    }
                    continue;
                }
                Event::Outbound(None) => {
                    return self.end(close_code::POLICY, "slow consumer").await;
                }
                Event::Tick => {
                    if let Some((code, reason)) = self.tick().await {
                        return self.end(code, reason).await;
                    }
                    continue;
                }
                Event::Frame(msg) => msg,
            };
            if self.idle.is_some() || self.rate.is_some() {
                let now = Instant::now();
                self.last_seen = now;
                if matches!(msg, Some(Ok(Message::Text(_) | Message::Binary(_))))
                    && self.over_rate(now)
                {
                    return self.end(codes::RATE_LIMITED, "rate limited").await;
                }
            }
            match msg {
                // Cold paths are boxed: their state would otherwise sit in every idle task.
                Some(Ok(Message::Text(t))) if is_refresh(&t) => {
                    Box::pin(self.refresh(&t)).await;
                    if std::mem::take(&mut self.refreshed) {
                        return Some(Incoming::Refreshed);
                    }
                }
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    self.msgs_in += 1;
                    return Some(Incoming::Frame(m));
                }
                // Pings are answered by tungstenite; a Close is answered when we poll again.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => {}
                // A peer that broke the protocol is told why before the connection ends.
                Some(Err(e)) => match violation(&e) {
                    Some((code, reason)) => return self.end(code, reason).await,
                    None => return None,
                },
                None => return None,
            }
        }
    }

    /// Sends one frame; `false` when the socket is gone.
    pub async fn send(&mut self, msg: Message) -> bool {
        self.msgs_out += 1;
        self.socket.send(msg).await.is_ok()
    }

    /// Closes with `code` and waits (bounded) for the peer's reply.
    pub async fn close(mut self, code: u16, reason: &'static str) {
        self.close_in_place(code, reason).await;
    }

    async fn end<T>(&mut self, code: u16, reason: &'static str) -> Option<T> {
        self.close_in_place(code, reason).await;
        None
    }

    async fn close_in_place(&mut self, code: u16, reason: &'static str) {
        self.closed_with = Some(code);
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        // Boxed: a cold path whose state would otherwise sit in every idle connection's task.
        Box::pin(close_inner(&mut self.socket, Some(frame))).await;
    }

    fn over_rate(&mut self, now: Instant) -> bool {
        let Some(rate) = &mut self.rate else {
            return false;
        };
        if now.duration_since(rate.window) >= SECOND {
            rate.window = now;
            rate.count = 0;
        }
        rate.count += 1;
        rate.count > rate.limit
    }

    fn set_expiry(&mut self) {
        let now = Instant::now();
        // Saturating and capped: an absurd `exp` from an issuer or a backend must not
        // overflow `Instant` (a panic) — it just means "not within a decade".
        let at = |unix: u64| {
            now + Duration::from_secs(unix.saturating_sub(now_unix()).min(MAX_DEADLINE_SECS))
        };
        let exp = self.identity.expires_at();
        self.expires = exp.map(|exp| at(exp.saturating_add(self.auth.leeway_duration().as_secs())));
        self.warn_at = match (exp, self.expiry_warning) {
            (Some(exp), Some(warning)) => Some(at(exp.saturating_sub(warning.as_secs()))),
            _ => None,
        };
    }

    /// Sets the timer to the earliest of expiry and the next idle check: a ping after half
    /// the idle period of silence, then the close after all of it, so a peer always has half
    /// the period to answer.
    fn arm(&mut self) {
        let pinged = self.last_ping.is_some_and(|p| p > self.last_seen);
        let idle_check = self
            .idle
            .map(|idle| self.last_seen + if pinged { idle } else { idle / 2 });
        let at = [self.expires, idle_check, self.warn_at]
            .into_iter()
            .flatten()
            .min();
        match (at, &mut self.timer) {
            (None, _) => self.timer = None,
            (Some(at), Some(t)) => t.as_mut().reset(at),
            (Some(at), None) => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// The timer fired: expire, give up on a silent peer, or ping it. `Some` = close.
    async fn tick(&mut self) -> Option<(u16, &'static str)> {
        let now = Instant::now();
        if self.expires.is_some_and(|e| e <= now) {
            return Some((codes::TOKEN_EXPIRED, "token expired"));
        }
        if self.warn_at.is_some_and(|w| w <= now) {
            self.warn_at = None;
            if let Some(exp) = self.identity.expires_at() {
                let frame = format!(r#"{{"type":"expiring","expires_at":{exp}}}"#);
                if self.socket.send(Message::text(frame)).await.is_err() {
                    return Some((close_code::AWAY, "gone"));
                }
            }
        }
        if let Some(idle) = self.idle {
            let quiet = now.duration_since(self.last_seen);
            if quiet >= idle {
                return Some((close_code::AWAY, "idle timeout"));
            }
            let pinged = self.last_ping.is_some_and(|p| p > self.last_seen);
            if quiet >= idle / 2 && !pinged {
                if self
                    .socket
                    .send(Message::Ping(Default::default()))
                    .await
                    .is_err()
                {
                    return Some((close_code::AWAY, "idle timeout"));
                }
                self.last_ping = Some(now);
            }
        }
        crate::metrics::messages(self.msgs_in, self.msgs_out);
        (self.msgs_in, self.msgs_out) = (0, 0);
        self.arm();
        None
    }

    async fn refresh(&mut self, text: &str) {
        #[derive(Deserialize)]
        struct Refresh {
            #[serde(default)]
            token: String,
            #[serde(default)]
            id: Option<Value>,
        }
        let Ok(req) = serde_json::from_str::<Refresh>(text) else {
            self.reply(&Reply::error(None, "bad_request", "refresh needs a token"))
                .await;
            return;
        };
        let cred = Credential::new(req.token, SourceKind::Message);
        let reply = match self
            .auth
            .verify_credential(&cred, &VerifyContext::default())
            .await
        {
            Ok((new, _)) if new.sub != self.identity.sub() => Reply::error(
                req.id,
                "sub_mismatch",
                "the new token is for another subject",
            ),
            Ok((new, by)) => {
                // Keep the session id and slot: they name this connection, not the credential.
                self.identity = self.identity.refreshed(new, by);
                if let Some(r) = &self.registration {
                    r.update(&self.identity);
                }
                self.set_expiry();
                self.arm();
                self.refreshed = true;
                tracing::info!(target: "wsgate::conn", sub = self.identity.sub(), session = self.identity.session(), "credential refreshed");
                Reply {
                    r#type: "refreshed",
                    id: req.id,
                    expires_at: Some(self.identity.expires_at()),
                    code: None,
                    message: None,
                }
            }
            Err(e) => Reply::error(req.id, e.code(), "refresh refused; the old expiry stands"),
        };
        self.reply(&reply).await;
    }

    async fn reply(&mut self, reply: &Reply) {
        if let Ok(text) = serde_json::to_string(reply) {
            let _ = self.socket.send(Message::text(text)).await;
        }
    }
}

#[derive(Serialize)]
struct Reply {
    r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
}

impl Reply {
    fn error(id: Option<Value>, code: &'static str, message: &'static str) -> Self {
        Self {
            r#type: "error",
            id,
            expires_at: None,
            code: Some(code),
            message: Some(message),
        }
    }
}

/// What woke the relay up.
#[cfg(feature = "relay")]
enum RelayEvent {
    /// The session ended it (shutdown, a close order): both sides get this code.
    Stop(u16, &'static str),
    /// The session's timer: expiry, idle check, `expiring`.
    Tick,
    /// A frame (or the end) from the upstream.
    Upstream(
        Option<
            Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
        >,
    ),
    /// A frame (or the end) from the client.
    Client(Option<Result<Message, axum::Error>>),
}

/// What ended a relay, and so how each side is closed.
#[cfg(feature = "relay")]
enum RelayEnd {
    /// The session (or a limit) ended it: both sides get this code.
    Both(u16, &'static str),
    /// The client sent a close frame: the upstream gets it as is.
    ClientClosed(Option<CloseFrame>),
    /// The upstream sent a close frame: the client gets it as is.
    UpstreamClosed(Option<CloseFrame>),
    /// The client's connection is gone: the upstream gets 1001.
    ClientLost,
    /// The upstream's connection is gone without a close frame: the client gets 1014.
    UpstreamLost,
}

#[cfg(feature = "relay")]
impl Session {
    /// Forwards frames between this socket and an upstream until either side or the session
    /// ends (SPEC §12): text, binary, ping and pong both ways, unchanged and in order; close
    /// frames passed through with their code and reason; the session's own endings (expiry
    /// 4001, revocation 4003, shutdown 1001, limits) close both sides with the same code.
    /// With `refresh_frames`, a client `refresh` frame is taken here and never forwarded.
    ///
    /// Backpressure: one frame is in flight at a time, so a side that does not read stops
    /// the reading of the other (memory stays bounded by the socket buffers), and a blocked
    /// write still yields to the session's endings.
    pub async fn relay(mut self, upstream: crate::relay::Connected, refresh_frames: bool) {
        use crate::relay::convert;
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message as UpMessage;

        let mut up = upstream.socket;
        let (mut to_upstream, mut to_client) = (0u64, 0u64);
        let end = loop {
            let event = tokio::select! {
                biased;
                _ = self.shutdown.as_mut() => RelayEvent::Stop(close_code::AWAY, "server shutting down"),
                o = ordered(&mut self.registration) => RelayEvent::Stop(o.code, o.reason),
                _ = until(&mut self.timer) => RelayEvent::Tick,
                m = up.next() => RelayEvent::Upstream(m),
                m = self.socket.recv() => RelayEvent::Client(m),
            };
            let msg = match event {
                RelayEvent::Stop(code, reason) => break RelayEnd::Both(code, reason),
                RelayEvent::Tick => match self.tick().await {
                    Some((code, reason)) => break RelayEnd::Both(code, reason),
                    None => continue,
                },
                RelayEvent::Upstream(from_upstream) => match from_upstream {
                    Some(Ok(UpMessage::Close(f))) => {
                        break RelayEnd::UpstreamClosed(convert::to_client_close(f));
                    }
                    Some(Ok(m)) => {
                        let Some(m) = convert::to_client(m) else {
                            continue;
                        };
                        to_client += 1;
                        let send = self.socket.send(m);
                        match bounded(
                            send,
                            &mut self.shutdown,
                            &mut self.registration,
                            self.expires,
                        )
                        .await
                        {
                            Ok(true) => continue,
                            Ok(false) => break RelayEnd::ClientLost,
                            Err((code, reason)) => break RelayEnd::Both(code, reason),
                        }
                    }
                    Some(Err(_)) | None => break RelayEnd::UpstreamLost,
                },
                RelayEvent::Client(from_client) => from_client,
            };
            match msg {
                Some(Ok(Message::Close(f))) => break RelayEnd::ClientClosed(f),
                Some(Ok(m)) => {
                    let data = matches!(m, Message::Text(_) | Message::Binary(_));
                    if data && self.over_rate(Instant::now()) {
                        break RelayEnd::Both(codes::RATE_LIMITED, "rate limited");
                    }
                    if let Message::Text(t) = &m
                        && refresh_frames
                        && is_refresh(t)
                    {
                        let t = t.clone();
                        Box::pin(self.refresh(&t)).await;
                        self.refreshed = false;
                        continue;
                    }
                    to_upstream += 1;
                    let send = up.send(convert::to_upstream(m));
                    match bounded(
                        send,
                        &mut self.shutdown,
                        &mut self.registration,
                        self.expires,
                    )
                    .await
                    {
                        Ok(true) => {}
                        Ok(false) => break RelayEnd::UpstreamLost,
                        Err((code, reason)) => break RelayEnd::Both(code, reason),
                    }
                }
                Some(Err(e)) => match violation(&e) {
                    Some((code, reason)) => break RelayEnd::Both(code, reason),
                    None => break RelayEnd::ClientLost,
                },
                None => break RelayEnd::ClientLost,
            }
        };
        let code = match &end {
            RelayEnd::Both(code, _) => Some(*code),
            RelayEnd::ClientClosed(f) | RelayEnd::UpstreamClosed(f) => {
                Some(f.as_ref().map_or(close_code::STATUS, |f| f.code))
            }
            RelayEnd::ClientLost => None,
            RelayEnd::UpstreamLost => Some(codes::BAD_GATEWAY),
        };
        tracing::info!(
            target: "wsgate::conn",
            sub = self.identity.sub(),
            session = self.identity.session(),
            to_upstream,
            to_client,
            close = code.map_or_else(|| "client gone".to_owned(), |c| c.to_string()),
            "proxied connection ended"
        );
        crate::metrics::proxied_frames(to_upstream, to_client);
        (self.msgs_in, self.msgs_out) = (to_upstream, to_client);
        match end {
            RelayEnd::Both(code, reason) => {
                let frame = UpCloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                };
                tokio::join!(
                    self.close_in_place(code, reason),
                    close_upstream(&mut up, Some(frame))
                );
            }
            RelayEnd::ClientClosed(f) => {
                self.closed_with = code;
                // tungstenite answered the client's close; read until the end of it.
                tokio::join!(
                    drain(&mut self.socket),
                    close_upstream(&mut up, convert::to_upstream_close(f))
                );
            }
            RelayEnd::UpstreamClosed(f) => {
                self.closed_with = code;
                // tungstenite answered the upstream's close; read until the end of it.
                tokio::join!(close_inner(&mut self.socket, f), drain_upstream(&mut up));
            }
            RelayEnd::ClientLost => {
                let frame = UpCloseFrame {
                    code: close_code::AWAY.into(),
                    reason: "client gone".into(),
                };
                close_upstream(&mut up, Some(frame)).await;
            }
            RelayEnd::UpstreamLost => {
                self.close_in_place(codes::BAD_GATEWAY, "upstream gone")
                    .await;
            }
        }
    }
}

#[cfg(feature = "relay")]
use tokio_tungstenite::tungstenite::protocol::CloseFrame as UpCloseFrame;

/// Sends the upstream a close frame and waits (bounded) for its answer.
#[cfg(feature = "relay")]
async fn close_upstream(up: &mut crate::relay::UpstreamSocket, frame: Option<UpCloseFrame>) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message as UpMessage;
    if up.send(UpMessage::Close(frame)).await.is_err() {
        return;
    }
    drain_upstream(up).await;
}

/// [`drain`] for the upstream side.
#[cfg(feature = "relay")]
async fn drain_upstream(up: &mut crate::relay::UpstreamSocket) {
    use futures_util::StreamExt;
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = up.next().await {}
    })
    .await;
}

/// A write to one side of a relay that still yields to the session's endings: `Ok(sent)`,
/// or `Err` with the close code when the session ended while the peer was not reading.
#[cfg(feature = "relay")]
async fn bounded<E>(
    send: impl std::future::Future<Output = Result<(), E>>,
    shutdown: &mut Pin<Box<WaitForCancellationFutureOwned>>,
    registration: &mut Option<Registration>,
    expires: Option<Instant>,
) -> Result<bool, (u16, &'static str)> {
    let expiry = async {
        match expires {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = shutdown.as_mut() => Err((close_code::AWAY, "server shutting down")),
        o = ordered(registration) => Err((o.code, o.reason)),
        _ = expiry => Err((codes::TOKEN_EXPIRED, "token expired")),
        sent = send => Ok(sent.is_ok()),
    }
}

/// Cheap pre-filter so ordinary traffic is never JSON-parsed here.
fn is_refresh(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Kind<'a> {
        #[serde(borrow)]
        r#type: std::borrow::Cow<'a, str>,
    }
    text.trim_start().starts_with('{')
        && text.contains("\"refresh\"")
        && serde_json::from_str::<Kind>(text).is_ok_and(|k| k.r#type == "refresh")
}

async fn next_outbound(outbound: &mut Option<Outbox>) -> Option<Utf8Bytes> {
    match outbound {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn ordered(registration: &mut Option<Registration>) -> CloseOrder {
    match registration {
        Some(r) => r.ordered().await,
        None => std::future::pending().await,
    }
}

async fn until(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The close a read error deserves: `1009` for a message over the limit, `1002` for a
/// protocol violation (reserved opcode or bits, unmasked or fragmented control frame …),
/// `1007` for a text message that is not UTF-8. `None` when the connection itself failed.
pub fn violation(e: &axum::Error) -> Option<(u16, &'static str)> {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        match s.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Capacity(_)) => {
                return Some((close_code::SIZE, "message too big"));
            }
            // A peer that vanished without a close frame is gone, not in violation.
            Some(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => return None,
            Some(tungstenite::Error::Protocol(_)) => {
                return Some((close_code::PROTOCOL, "protocol error"));
            }
            Some(tungstenite::Error::Utf8(_)) => {
                return Some((close_code::INVALID, "invalid UTF-8"));
            }
            Some(_) => return None,
            None => source = s.source(),
        }
    }
    None
}

/// Sends a close frame (`None`: one without a code) and finishes the close handshake.
async fn close_inner(socket: &mut WebSocket, frame: Option<CloseFrame>) {
    if socket.send(Message::Close(frame)).await.is_err() {
        return;
    }
    drain(socket).await;
}

/// Keeps reading until the peer's Close (or EOF), at most [`CLOSE_WAIT`]: a clean close
/// handshake, whoever started it.
async fn drain(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

/// Closes a socket that never became a session (refused after the upgrade).
pub async fn close_socket(mut socket: WebSocket, frame: CloseFrame) {
    close_inner(&mut socket, Some(frame)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_detection() {
        assert!(is_refresh(r#"{"type":"refresh","token":"x"}"#));
        assert!(is_refresh(r#" {"token":"x","type":"refresh"}"#));
        assert!(!is_refresh(r#"{"type":"publish","data":"refresh"}"#));
        assert!(!is_refresh(r#"refresh"#));
        assert!(!is_refresh(r#"{"type":"refresh""#));
    }
}
