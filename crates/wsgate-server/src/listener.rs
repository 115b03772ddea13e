//! The handshake deadline (`limits.handshake_timeout_ms`), for the whole life of a connection
//! that is not (yet) a WebSocket.
//!
//! `axum::serve` gives hyper no timer, so without this a client could hold a socket (and a
//! task, and a file descriptor) for ever: by sending half a request line, by never reading
//! the answer, or — after one complete request — by keeping the connection alive and sending
//! nothing, or half of a second request. [`HandshakeDeadline`] wraps the TCP listener; every
//! accepted stream lives under one rule: **the server must be making progress within the
//! deadline**. Concretely, a deadline is armed
//! - at accept, and again each time the server writes part of an answer that is not a `101`
//!   (so the next request on a kept-alive connection, and the reading of a slow answer, are
//!   bounded too);
//! - and suspended while a complete `GET` request without a body is being answered (an
//!   upgrade waits for its verifier or its upstream, each bounded by their own timeouts) —
//!   the request service says so once hyper has parsed it ([`Wire::answering`]), never a
//!   guess from the bytes, so a request body that looks like a `GET` head suspends nothing —
//!   or ended for good once the server wrote `101 Switching Protocols` (the request service
//!   saw the router's answer be one: [`Wire::switching`]; again typed, not read off the
//!   bytes): from then on the session's own rules apply, and the timer is freed so an idle
//!   WebSocket carries no extra state beyond an empty `Option`.
//!
//! When it fires, the next read or write fails and hyper drops the connection.
//!
//! The stream's write side is a [`Wire`], shared with the publishers that write deliveries
//! to the socket directly; [`PerConnection`] puts it (and the peer's address) in each of the
//! connection's requests, for the endpoints to pick up. Each request is answered by the
//! router live at the time ([`LiveRouter`]: a reload swaps it), so a kept-alive connection
//! meets a reloaded config with its next request.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::serve::{IncomingStream, Listener};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::wire::Wire;

/// The listening socket; it accepts standard streams, which go into the reactor once, as
/// their [`Wire`] (accepting tokio streams would register each twice).
pub struct HandshakeDeadline {
    inner: AsyncFd<std::net::TcpListener>,
    timeout: Duration,
}

impl HandshakeDeadline {
    pub fn new(inner: TcpListener, timeout: Duration) -> io::Result<Self> {
        // `into_std` leaves the socket non-blocking.
        let inner = crate::wire::register(inner.into_std()?)?;
        Ok(Self { inner, timeout })
    }

    /// The next connection, as a [`Wire`]; errors are the accept's or the registration's.
    async fn next(&self) -> io::Result<(Wire, SocketAddr)> {
        loop {
            let mut ready = self.inner.readable().await?;
            match ready.try_io(|l| l.get_ref().accept()) {
                Ok(Ok((stream, addr))) => {
                    stream.set_nonblocking(true)?;
                    return Ok((Wire::new(stream)?, addr));
                }
                Ok(Err(e)) => return Err(e),
                // `WouldBlock`: readiness was cleared; wait for the next connection.
                Err(_) => continue,
            }
        }
    }
}

impl Listener for HandshakeDeadline {
    type Io = DeadlineIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (wire, addr) = loop {
            match self.next().await {
                Ok(next) => break next,
                // A client that gave up before we accepted: nothing to do.
                Err(e) if is_connection_error(&e) => {}
                // Out of files or memory: log it, and give the machine a moment (as axum does).
                Err(e) => {
                    tracing::error!(target: "wsgate::conn", error = %e, "cannot accept connections");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let io = DeadlineIo {
            wire: Arc::new(wire),
            timer: Some(Box::new(Timer {
                timeout: self.timeout,
                sleep: Box::pin(tokio::time::sleep(self.timeout)),
                lingering: false,
            })),
        };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.get_ref().local_addr()
    }
}

/// Errors of one connection, not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A TCP stream held to the deadline until it becomes a WebSocket.
pub struct DeadlineIo {
    wire: Arc<Wire>,
    /// `None` once upgraded: nothing left to time.
    timer: Option<Box<Timer>>,
}

struct Timer {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// The write side is shut: reading what the client still sends, until [`LINGER`].
    lingering: bool,
}

/// How long a closing connection keeps reading (and discarding) what the client still sends,
/// as nginx's lingering close does: an answer given before the whole request was read (a 431,
/// a refusal while a body is still coming) would otherwise be lost to the reset the kernel
/// sends when a socket closes with unread bytes, and the client's send would fail first.
const LINGER: Duration = Duration::from_secs(2);
/// Reads per poll while lingering, so one fast sender does not hold the worker.
const LINGER_READS: usize = 16;

impl Timer {
    fn rearm(&mut self) {
        self.sleep.as_mut().reset(Instant::now() + self.timeout);
    }

    /// `Err` when the deadline has passed (and registers the waker otherwise).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            metrics::counter!("wsgate_handshake_timeouts_total").increment(1);
            tracing::info!(target: "wsgate::conn", "connection dropped: no complete request or answer within limits.handshake_timeout_ms");
            return Err(io::Error::new(io::ErrorKind::TimedOut, "handshake timeout"));
        }
        Ok(())
    }
}

impl DeadlineIo {
    pub fn stream(&self) -> &std::net::TcpStream {
        self.wire.stream()
    }

    /// The connection's write side.
    pub fn wire(&self) -> &Arc<Wire> {
        &self.wire
    }

    /// The server wrote bytes (the start of an answer, or more of one).
    fn wrote(&mut self) {
        let Some(timer) = &mut self.timer else { return };
        if self.wire.answered() {
            // The `101` (the request service saw the router's answer): a WebSocket now.
            self.timer = None;
            self.wire.upgraded();
        } else {
            timer.rearm();
        }
    }
}

impl AsyncRead for DeadlineIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(timer) = &mut this.timer else {
            return this.wire.poll_read(cx, buf);
        };
        // While a complete GET is answered, its answer may wait for a verifier or an
        // upstream, each bounded on its own; the deadline resumes with the answer.
        if !this.wire.is_answering() {
            timer.check(cx)?;
        }
        this.wire.poll_read(cx, buf)
    }
}

impl AsyncWrite for DeadlineIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = this.wire.poll_write(cx, buf);
        match &r {
            Poll::Ready(Ok(n)) if *n > 0 => this.wrote(),
            Poll::Pending => {
                // A client that does not read our answer is held to the deadline too.
                if let Some(timer) = &mut this.timer {
                    timer.check(cx)?;
                }
            }
            _ => {}
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = this.wire.poll_write_vectored(cx, bufs);
        match &r {
            Poll::Ready(Ok(n)) if *n > 0 => this.wrote(),
            Poll::Pending => {
                if let Some(timer) = &mut this.timer {
                    timer.check(cx)?;
                }
            }
            _ => {}
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = this.wire.poll_flush(cx);
        if r.is_pending()
            && let Some(timer) = &mut this.timer
        {
            // The end of an answer the client does not read is held to the deadline too.
            timer.check(cx)?;
        }
        r
    }
    /// Closes in stages while the connection is plain HTTP: the answer and a FIN go out,
    /// then what the client still sends is read and dropped until it closes or [`LINGER`]
    /// passes (an upgraded socket has had its close handshake instead).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(timer) = &mut this.timer else {
            return this.wire.poll_shutdown(cx);
        };
        if !timer.lingering {
            ready!(this.wire.poll_shutdown(cx))?;
            timer.lingering = true;
            timer.sleep.as_mut().reset(Instant::now() + LINGER);
        }
        for _ in 0..LINGER_READS {
            if timer.sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [0u8; 2048];
            let mut buf = ReadBuf::new(&mut scratch);
            match this.wire.poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {}
                // Reset or gone: nothing left to protect.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Makes, for each accepted connection, the service for its requests: the router, with the
/// peer's address (`ConnectInfo<SocketAddr>`, as axum's own connect info) and the
/// connection's [`Wire`] in every request's extensions.
#[derive(Clone)]
pub struct PerConnection {
    router: LiveRouter,
}

impl PerConnection {
    pub fn new(router: LiveRouter) -> Self {
        Self { router }
    }
}

/// The routes requests are answered by, replaced whole by a reload. Cloning shares it.
#[derive(Clone)]
pub struct LiveRouter(Arc<RwLock<Router>>);

impl LiveRouter {
    pub fn new(router: Router) -> Self {
        Self(Arc::new(RwLock::new(router)))
    }

    /// The router now (a clone: a reference count).
    pub fn current(&self) -> Router {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Answers every request from now on with `router`.
    pub fn replace(&self, router: Router) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = router;
    }
}

impl<L> Service<IncomingStream<'_, L>> for PerConnection
where
    L: Listener<Io = DeadlineIo, Addr = SocketAddr>,
{
    type Response = ConnectionService;
    type Error = Infallible;
    type Future = std::future::Ready<Result<ConnectionService, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'_, L>) -> Self::Future {
        std::future::ready(Ok(ConnectionService {
            router: self.router.current(),
            live: self.router.clone(),
            peer: *stream.remote_addr(),
            wire: stream.io().wire().clone(),
        }))
    }
}

/// The service for one connection's requests (see [`PerConnection`]).
#[derive(Clone)]
pub struct ConnectionService {
    router: Router,
    live: LiveRouter,
    peer: SocketAddr,
    wire: Arc<Wire>,
}

impl Service<Request> for ConnectionService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <Router as Service<Request>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        use axum::body::HttpBody;
        // hyper parsed a whole request: one without a body is now the handler's to answer.
        // A request with a body stays under the deadline while the body arrives.
        if req.method() == axum::http::Method::GET && req.body().is_end_stream() {
            self.wire.answering();
        }
        req.extensions_mut().insert(ConnectInfo(self.peer));
        req.extensions_mut().insert(self.wire.clone());
        self.router = self.live.current();
        Answer {
            inner: self.router.call(req),
            wire: self.wire.clone(),
        }
    }
}

/// The router's answer to one request. A `101 Switching Protocols` is noted on the
/// connection's [`Wire`] before hyper writes it: the listener learns that the socket becomes
/// a WebSocket from the response itself, never by reading the bytes it writes.
pub struct Answer {
    inner: <Router as Service<Request>>::Future,
    wire: Arc<Wire>,
}

impl Future for Answer {
    type Output = Result<axum::response::Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = ready!(Pin::new(&mut self.inner).poll(cx));
        if let Ok(response) = &answer
            && response.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS
        {
            self.wire.switching();
        }
        Poll::Ready(answer)
    }
}
