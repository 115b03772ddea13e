//! The guard around an accepted socket: what only a WebSocket-aware layer can do.
//!
//! HTTP middleware checks a credential once; a socket then lives for hours. [`Session`]
//! sends the `welcome` frame and then enforces, for the socket's whole life, each rule
//! ending with its [`CloseReason`]:
//! - expiry (`TokenExpired`) at the credential's `exp` plus leeway, unless a `refresh`
//!   frame for the same subject moved it (`refreshed`);
//! - revocation and admin disconnects (`Revoked`, `Disconnected`) on an order from the
//!   [`Registry`](crate::Registry), at once or after a grace period (a soft revocation: an
//!   `expiring` frame, then the close unless a credential issued after the order arrives by
//!   `refresh`);
//! - continuous authorization: a credential whose issuer must keep vouching for it is
//!   watched by the [`Revalidator`](crate::Revalidator), whose answers arrive as orders
//!   (a new deadline and permissions, or the close);
//! - limits: `TooBig` for an oversized message, `RateLimited` past the message rate,
//!   `IdleTimeout` for a peer silent (pongs included) for the idle timeout, after pings
//!   every half of it;
//! - shutdown (`Shutdown`); and it finishes every close handshake properly.
//!
//! Endpoints see only their application frames through [`Session::recv`]. Expiry and idle
//! checks share **one** entry in tokio's timer wheel per connection, re-armed only when it
//! fires (every half idle period), never per message; no extra task per connection.

mod client;
mod refresh;
#[cfg(feature = "relay")]
mod relay;
mod waits;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use tokio::time::Instant;

use crate::authenticator::{Authenticator, SessionOptions};
use crate::identity::Identity;
use crate::observe::Ended;
use crate::outbox::{Outbox, Outgoing};
use crate::protocol::{CloseReason, NO_CLOSE_FRAME, ServerFrame, code_of, is_refresh};
use crate::registry::{Cause, CloseOrder, Grace, Order, Registration};
use crate::revalidate::Watch;
use crate::verify::now_unix;
use client::ClientSide;
use waits::{Shutdown, Timer};

const SECOND: Duration = Duration::from_secs(1);
/// A ping is sent up to `idle / 16` before half the idle period (see `tick`).
const PING_SLACK_DIVISOR: u32 = 16;
/// How long a write may wait on a peer that reads nothing when idle timeouts are off (like
/// nginx's `send_timeout`); with them on, the idle period is the bound.
const WRITE_STALL: Duration = Duration::from_secs(60);
/// Deadlines further away than this (ten years) are treated as this far.
const MAX_DEADLINE_SECS: u64 = 10 * 365 * 24 * 3600;

/// An authenticated socket under the session's rules.
pub struct Session {
    socket: ClientSide,
    identity: Identity,
    auth: Arc<Authenticator>,
    /// One timer entry per connection, set to the earliest of expiry and the next idle check.
    timer: Timer,
    expires: Option<Instant>,
    /// When to send `expiring` for the current deadline; `None` once sent (or when off).
    warn_at: Option<Instant>,
    expiry_warning: Option<Duration>,
    idle: Option<Duration>,
    last_seen: Instant,
    last_ping: Option<Instant>,
    rate: Option<Rate>,
    registration: Option<Registration>,
    shutdown: Shutdown,
    welcome: bool,
    /// Counted here, added to the metrics in batches (per tick and at the end).
    msgs_in: u64,
    msgs_out: u64,
    closed_with: Option<u16>,
    /// The server's reason phrase for `closed_with`, for the observer.
    close_phrase: &'static str,
    /// The code of the client's close frame, when it closed first.
    peer_close: Option<u16>,
    /// Who revoked the session, when a revocation closed it.
    close_cause: Option<Cause>,
    /// When the socket was upgraded: how long it lasted, for the observer.
    opened: Instant,
    /// Frames others send to this socket (pub/sub deliveries), forwarded inside `recv`.
    outbound: Option<Outbox>,
    refreshed: bool,
    /// When the session must end whatever its credential says (`max_session`), unix seconds.
    session_cap: Option<u64>,
    /// A soft revocation under way: closed at its deadline unless a newer credential comes.
    grace: Option<Box<Grace>>,
    /// The issuer re-checks this session's credential while this is held (boxed: most
    /// sessions have none, and this state sits in every idle task).
    watch: Option<Box<Watch>>,
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
        let out = self.msgs_out + self.written_directly();
        crate::metrics::ended(self.closed_with, self.msgs_in, out);
        if let Some(observer) = self.auth.observer() {
            let (code, reason) = match (self.closed_with, self.peer_close) {
                (Some(code), _) => (code, self.close_phrase),
                (None, Some(code)) => (code, "client closed"),
                (None, None) => (NO_CLOSE_FRAME, "connection lost"),
            };
            let lasted = self.opened.elapsed();
            observer.closed(
                &self.identity,
                Ended {
                    code,
                    reason,
                    lasted,
                    cause: self.close_cause,
                },
            );
        }
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
    Ordered(Order),
    Outbound(Outgoing),
    Frame(Option<Result<Message, Option<CloseReason>>>),
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
        Self::over(ClientSide::Axum(socket), identity, auth, options)
    }

    /// [`Session::new`] for a socket wsgate upgraded itself
    /// ([`ClientUpgrade`](crate::relay::ClientUpgrade)), as echo and proxy endpoints do: it
    /// holds no read buffer while idle and answers nothing by itself. The session answers
    /// its pings and Close; [`Session::relay`] passes the pings to the upstream instead, and
    /// the upstream's pongs back.
    #[cfg(feature = "relay")]
    pub fn with_client_socket(
        socket: crate::relay::ClientSocket,
        identity: Identity,
        auth: Arc<Authenticator>,
        options: &SessionOptions,
    ) -> Self {
        Self::over(ClientSide::Own(socket), identity, auth, options)
    }

    fn over(
        socket: ClientSide,
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
            timer: Timer::default(),
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
            shutdown: Shutdown::new(shutdown),
            identity,
            welcome: options.welcome,
            msgs_in: 0,
            msgs_out: 0,
            closed_with: None,
            close_phrase: "",
            peer_close: None,
            close_cause: None,
            opened: now,
            outbound: None,
            refreshed: false,
            session_cap: options
                .max_session
                .map(|max| now_unix().saturating_add(max.as_secs())),
            grace: None,
            watch: None,
        };
        session.watch = session.auth.watch(&session.identity).map(Box::new);
        crate::metrics::opened();
        if let Some(observer) = session.auth.observer() {
            observer.connected(&session.identity);
        }
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
        self.write(Write::Frame(Message::text(frame))).await
    }

    /// Who is connected (the refreshed identity after a refresh).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Frames sent to the outbox's sender are written to this socket from inside
    /// [`Session::recv`] (or by the publisher itself, for an outbox with a direct writer), so
    /// a publisher never waits on a subscriber's socket; a full outbox is the publisher's sign
    /// of a slow consumer. While the endpoint handles a frame from [`Session::recv`], its
    /// answers come before any delivery.
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
            if self.closed_with.is_some() {
                // A write closed the socket (see `write`).
                return None;
            }
            if let Some(outbound) = &self.outbound {
                outbound.release();
            }
            let event = tokio::select! {
                biased;
                _ = &mut self.shutdown => Event::Shutdown,
                order = ordered(&mut self.registration) => Event::Ordered(order),
                _ = &mut self.timer => Event::Tick,
                out = next_outbound(&mut self.outbound) => Event::Outbound(out),
                msg = self.socket.recv() => Event::Frame(msg),
            };
            let msg = match event {
                Event::Shutdown => return self.end(CloseReason::Shutdown).await,
                Event::Ordered(order) => match Box::pin(self.take_order(order)).await {
                    Ok(false) => continue,
                    Ok(true) => {
                        self.hold_outbound();
                        return Some(Incoming::Refreshed);
                    }
                    Err(close) => return self.end(close).await,
                },
                Event::Outbound(Outgoing::Frame(text)) => {
                    self.send(Message::Text(text)).await;
                    continue;
                }
                Event::Outbound(Outgoing::Flush) => {
                    self.write(Write::Flush).await;
                    continue;
                }
                Event::Outbound(Outgoing::Overflowed) => {
                    return self.end(CloseReason::SlowConsumer).await;
                }
                Event::Tick => {
                    if let Some(reason) = self.tick().await {
                        return self.end(reason).await;
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
                    return self.end(CloseReason::RateLimited).await;
                }
            }
            match msg {
                // Cold paths are boxed: their state would otherwise sit in every idle task.
                Some(Ok(Message::Text(t))) if is_refresh(&t) => {
                    if let Some(reason) = Box::pin(self.refresh(&t)).await {
                        return self.end(reason).await;
                    }
                    if std::mem::take(&mut self.refreshed) {
                        self.hold_outbound();
                        return Some(Incoming::Refreshed);
                    }
                }
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    self.msgs_in += 1;
                    self.hold_outbound();
                    return Some(Incoming::Frame(m));
                }
                // tungstenite answers pings itself, and a Close when we poll again.
                Some(Ok(Message::Ping(p))) if !self.socket.answers_itself() => {
                    self.write(Write::Frame(Message::Pong(p))).await;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    self.peer_close = Some(code_of(frame.as_ref()));
                    if let Some(outbound) = &self.outbound {
                        // The answer must be the socket's last frame: deliveries end here.
                        outbound.close();
                    }
                    if !self.socket.answers_itself() {
                        self.socket.answer_close(frame).await;
                        return None;
                    }
                }
                // A peer that broke the protocol is told why before the connection ends.
                Some(Err(Some(reason))) => return self.end(reason).await,
                Some(Err(None)) => return None,
                None => return None,
            }
        }
    }

    /// Sends one frame; `false` when the socket is gone, or closed: a write that waits on a
    /// peer that does not read yields to the session's endings (shutdown, a close order,
    /// expiry, the outbox overflowing, the idle period or 60 s) and closes with their reason.
    pub async fn send(&mut self, msg: Message) -> bool {
        self.msgs_out += 1;
        self.write(Write::Frame(msg)).await
    }

    /// Frames a publisher wrote straight to the socket since the last count.
    fn written_directly(&self) -> u64 {
        self.outbound.as_ref().map_or(0, Outbox::take_written)
    }

    /// Deliveries wait while the endpoint answers the frame it is given.
    fn hold_outbound(&self) {
        if let Some(outbound) = &self.outbound {
            outbound.hold();
        }
    }

    /// A write that yields to the session's endings ([`Stops`]): `false` when the socket is
    /// gone, or when an ending came first (the socket is then closed with its reason).
    async fn write(&mut self, write: Write) -> bool {
        let mut msg = match write {
            Write::Frame(msg) => Some(msg),
            Write::Flush => None,
        };
        // A poll function, not `SinkExt::send`: this state sits in every connection's task.
        let socket = &mut self.socket;
        let first = std::future::poll_fn(|cx| Poll::Ready(socket.poll_write(&mut msg, cx))).await;
        if let Poll::Ready(sent) = first {
            return sent.is_ok();
        }
        // The peer is not reading: boxed, a cold path whose timers would otherwise be part of
        // every task.
        Box::pin(self.write_waiting(msg)).await
    }

    async fn write_waiting(&mut self, mut msg: Option<Message>) -> bool {
        let (socket, stops) = self.split();
        let io = std::future::poll_fn(move |cx| socket.poll_write(&mut msg, cx));
        match stops.bound(io).await {
            Ok(sent) => sent,
            Err(reason) => {
                self.close_in_place(reason).await;
                false
            }
        }
    }

    /// The socket, and what a write to it must yield to: borrowed apart.
    fn split(&mut self) -> (&mut ClientSide, Stops<'_>) {
        let stops = Stops {
            shutdown: &mut self.shutdown,
            registration: &mut self.registration,
            expires: self.expires,
            outbound: self.outbound.as_ref(),
            stall: self.idle.unwrap_or(WRITE_STALL),
        };
        (&mut self.socket, stops)
    }

    /// Closes for `reason` and waits (bounded) for the peer's reply.
    pub async fn close(mut self, reason: CloseReason) {
        self.close_in_place(reason).await;
    }

    async fn end<T>(&mut self, order: impl Into<CloseOrder>) -> Option<T> {
        if self.closed_with.is_none() {
            self.close_in_place(order).await;
        }
        None
    }

    /// Sends the close frame and finishes the handshake; a revocation's close is measured
    /// from when this node learned of it to its close frame on the wire.
    async fn close_in_place(&mut self, order: impl Into<CloseOrder>) {
        let CloseOrder { reason, learned } = order.into();
        self.closed_with = Some(reason.code());
        self.close_phrase = reason.reason();
        self.close_cause = learned.map(|l| l.cause);
        if let Some(outbound) = &self.outbound {
            // Nothing may follow the close frame, deliveries included.
            outbound.close();
        }
        let sent = move || {
            if let Some(learned) = learned {
                crate::metrics::revocation_closed(learned.cause.as_str(), learned.at.elapsed());
            }
        };
        // Boxed: a cold path whose state would otherwise sit in every idle connection's task.
        Box::pin(self.socket.close_then(Some(reason.frame()), sent)).await;
    }

    /// Acts on an order from outside: `Ok(true)` when the identity changed (the endpoint
    /// re-checks permissions), `Err` when the session must close.
    async fn take_order(&mut self, order: Order) -> Result<bool, CloseOrder> {
        match order {
            Order::Close(close) => Err(close),
            Order::Grace(grace) => {
                self.give_grace(grace).await;
                Ok(false)
            }
            Order::Revalidated(verified) => self.revalidated(*verified).map(|()| true),
        }
    }

    /// A soft revocation: `expiring` now (where the client is told of deadlines at all), the
    /// close at the grace's end unless a `refresh` brings a credential issued after the order.
    async fn give_grace(&mut self, grace: Grace) {
        if self.grace.as_ref().is_some_and(|g| g.until <= grace.until) {
            return; // an earlier deadline stands
        }
        self.grace = Some(Box::new(grace));
        self.set_expiry();
        if self.expiry_warning.is_some() && self.deadline_unix() == Some(grace.until) {
            self.warn_at = None; // told now, not again for the same deadline
            let frame = ServerFrame::Expiring {
                expires_at: grace.until,
            }
            .to_text();
            self.write(Write::Frame(Message::text(frame))).await;
        }
        self.arm();
    }

    /// The issuer vouched for the credential again: take what it says now, as on `refresh`.
    fn revalidated(&mut self, verified: crate::identity::Verified) -> Result<(), CloseOrder> {
        if verified.sub != self.identity.sub() || self.auth.admits(&verified).is_err() {
            return Err(CloseOrder::revoked(CloseReason::Revoked, Cause::Revalidate));
        }
        self.identity = self.identity.revalidated(verified);
        if let Some(r) = &self.registration {
            r.update(&self.identity);
        }
        self.set_expiry();
        self.arm();
        tracing::debug!(target: "wsgate::conn", sub = self.identity.sub(), session = self.identity.session(), "credential re-checked; deadline or permissions changed");
        Ok(())
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
        let leeway = self.auth.leeway_duration().as_secs();
        let by_credential = self.identity.expires_at().map(|e| e.saturating_add(leeway));
        // The absolute cap and a grace's end have no leeway.
        let hard = self.hard_deadline();
        self.expires = match (by_credential, hard) {
            (Some(e), Some(cap)) => Some(at(e.min(cap))),
            (e, cap) => e.or(cap).map(at),
        };
        let exp = self.deadline_unix();
        self.warn_at = match (exp, self.expiry_warning) {
            (Some(exp), Some(warning)) => Some(at(exp.saturating_sub(warning.as_secs()))),
            _ => None,
        };
    }

    /// What `expiring` announces: the credential's `exp`, or the session's cap or a grace's
    /// end if sooner.
    fn deadline_unix(&self) -> Option<u64> {
        match (self.identity.expires_at(), self.hard_deadline()) {
            (Some(e), Some(cap)) => Some(e.min(cap)),
            (e, cap) => e.or(cap),
        }
    }

    /// The earlier of the session's cap and a grace's end (unix seconds).
    fn hard_deadline(&self) -> Option<u64> {
        let grace = self.grace.as_ref().map(|g| g.until);
        match (self.session_cap, grace) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
        self.timer.set(at);
    }

    /// The timer fired: expire, end a grace, give up on a silent peer, or ping it. `Some` =
    /// close.
    async fn tick(&mut self) -> Option<CloseOrder> {
        let now = Instant::now();
        if self.grace.as_ref().is_some_and(|g| g.until <= now_unix()) {
            // A close on schedule, not a revocation's latency: not measured.
            return Some(CloseReason::Revoked.into());
        }
        if self.expires.is_some_and(|e| e <= now) {
            return Some(CloseReason::TokenExpired.into());
        }
        if self.warn_at.is_some_and(|w| w <= now) {
            self.warn_at = None;
            if let Some(expires_at) = self.deadline_unix() {
                let frame = ServerFrame::Expiring { expires_at }.to_text();
                if !self.write(Write::Frame(Message::text(frame))).await {
                    return Some(CloseReason::ClientGone.into());
                }
            }
        }
        if let Some(idle) = self.idle {
            let quiet = now.duration_since(self.last_seen);
            if quiet >= idle {
                return Some(CloseReason::IdleTimeout.into());
            }
            let pinged = self.last_ping.is_some_and(|p| p > self.last_seen);
            // The timer set at the last ping fires at that ping + `idle` (the deadline for an
            // answer); the pong came a moment after the ping, so the next ping is due a moment
            // later. Sending it now, a little early, saves a second wake-up per ping round:
            // one timer event per idle connection per half period, not two.
            if quiet + idle / PING_SLACK_DIVISOR >= idle / 2 && !pinged {
                if !self
                    .write(Write::Frame(Message::Ping(Default::default())))
                    .await
                {
                    return Some(CloseReason::IdleTimeout.into());
                }
                self.last_ping = Some(now);
            }
        }
        crate::metrics::messages(self.msgs_in, self.msgs_out + self.written_directly());
        (self.msgs_in, self.msgs_out) = (0, 0);
        self.arm();
        None
    }
}

async fn next_outbound(outbound: &mut Option<Outbox>) -> Outgoing {
    match outbound {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What [`Session::write`] does.
enum Write {
    Frame(Message),
    /// Sends what the socket holds (the end of a frame a publisher wrote directly).
    Flush,
}

/// What a write to a peer that does not read must yield to, so that no write waits for ever:
/// shutdown, a close order, the credential's expiry, the outbox overflowing (the peer reads
/// slower than it is sent to), and the idle period (60 s when idle timeouts are off) passing
/// without the write completing.
pub(crate) struct Stops<'a> {
    shutdown: &'a mut Shutdown,
    registration: &'a mut Option<Registration>,
    expires: Option<Instant>,
    outbound: Option<&'a Outbox>,
    stall: Duration,
}

impl Stops<'_> {
    /// `Ok(sent)` when the write finished (`false`: the connection failed), `Err(order)`
    /// when the session must end first.
    pub(crate) async fn bound<E>(
        self,
        write: impl Future<Output = Result<(), E>>,
    ) -> Result<bool, CloseOrder> {
        // Nearly always the write completes at once: then nothing else is built or polled,
        // and no timer is registered.
        let mut write = std::pin::pin!(write);
        let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
        if let Poll::Ready(sent) = first {
            return Ok(sent.is_ok());
        }
        // Boxed: a cold path whose timers would otherwise sit in every relay's task.
        Box::pin(self.wait(write)).await
    }

    async fn wait<E>(
        self,
        write: Pin<&mut impl Future<Output = Result<(), E>>>,
    ) -> Result<bool, CloseOrder> {
        let expiry = async {
            match self.expires {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let stall = tokio::time::sleep(self.stall);
        let overflowed = async {
            match self.outbound {
                Some(o) => o.overflowed().await,
                None => std::future::pending().await,
            }
        };
        let reason = tokio::select! {
            biased;
            sent = write => return Ok(sent.is_ok()),
            _ = self.shutdown => CloseReason::Shutdown,
            order = closing(self.registration) => return Err(order),
            _ = expiry => CloseReason::TokenExpired,
            _ = overflowed => CloseReason::SlowConsumer,
            _ = stall => CloseReason::IdleTimeout,
        };
        Err(reason.into())
    }
}

async fn ordered(registration: &mut Option<Registration>) -> Order {
    match registration {
        Some(r) => r.ordered().await,
        None => std::future::pending().await,
    }
}

async fn closing(registration: &mut Option<Registration>) -> CloseOrder {
    match registration {
        Some(r) => r.closing().await,
        None => std::future::pending().await,
    }
}

/// The close a read error deserves: [`CloseReason::TooBig`] for a message over the limit,
/// [`CloseReason::ProtocolError`] for a protocol violation, [`CloseReason::InvalidUtf8`] for
/// a text message that is not UTF-8. `None` when the connection itself failed.
pub fn violation(e: &axum::Error) -> Option<CloseReason> {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        match s.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Capacity(_)) => {
                return Some(CloseReason::TooBig);
            }
            // A peer that vanished without a close frame is gone, not in violation.
            Some(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => return None,
            Some(tungstenite::Error::Protocol(_)) => {
                return Some(CloseReason::ProtocolError);
            }
            Some(tungstenite::Error::Utf8(_)) => {
                return Some(CloseReason::InvalidUtf8);
            }
            Some(_) => return None,
            None => source = s.source(),
        }
    }
    None
}
