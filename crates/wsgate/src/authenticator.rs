//! The authentication policy of one endpoint: where to look ([`Sources`]), what to trust
//! ([`VerifierChain`]), how to refuse ([`RejectMode`]) and the socket limits to apply.
//!
//! It is plain data behind an `Arc`, built in code by an axum user or from the config file by
//! the server; the extractor and the session guard only read it. This is also where every
//! handshake is logged — once, with the outcome, the source and the remote address, never
//! the credential.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{header, request::Parts};

use tokio_util::sync::CancellationToken;

use crate::attempts::{Attempts, Refusal};
use crate::forwarded::TrustedProxies;
use crate::identity::{Identity, Kept, Verified};
use crate::limits::FailureLimiter;
use crate::observe::SessionObserver;
use crate::protocol::{ClientFrame, CloseReason, close_socket};
use crate::registry::Registry;
use crate::reject::{AuthError, RejectMode};
use crate::revalidate::{Revalidator, Watch};
use crate::revocation::Revocations;
use crate::source::{Credential, SUBPROTOCOL, SourceKind, Sources};
use crate::trace::{Traced, Tracer, Value};
use crate::verify::{LiveChain, Requirements, VerifierChain, VerifyContext};

/// Buffer and size limits for accepted sockets.
///
/// The defaults matter: tungstenite's own read buffer is 128 KiB, allocated per connection
/// and zero-filled before every read (~130 KiB RSS per idle socket). The whole buffer is
/// resident once a socket has read one frame, so its size is paid by every subscriber:
/// 2 KiB (one read for a typical JSON frame) measured 6.3 KiB per subscribed socket where
/// 4 KiB measured 8.3. Larger frames take several reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketSettings {
    /// Bytes tungstenite reads from the socket at a time (resident once a frame was read).
    pub read_buffer_size: usize,
    /// Bytes buffered before a write is flushed.
    pub write_buffer_size: usize,
    /// Bound on queued outgoing bytes: a client that stops reading errors out instead of
    /// growing the server's memory.
    pub max_write_buffer_size: usize,
    /// Larger messages close the socket (`CloseReason::TooBig`).
    pub max_message_bytes: usize,
}

impl Default for SocketSettings {
    fn default() -> Self {
        Self {
            read_buffer_size: 2 * 1024,
            write_buffer_size: 8 * 1024,
            max_write_buffer_size: 1024 * 1024,
            max_message_bytes: 64 * 1024,
        }
    }
}

impl SocketSettings {
    /// Applies the settings, and selects `wsgate.v1` when the client offers it (never the
    /// `wsgate.bearer.<token>` entry).
    pub fn apply(&self, ws: WebSocketUpgrade) -> WebSocketUpgrade {
        ws.read_buffer_size(self.read_buffer_size)
            .write_buffer_size(self.write_buffer_size)
            .max_write_buffer_size(
                self.max_write_buffer_size
                    .max(self.write_buffer_size + self.max_message_bytes + 1),
            )
            .max_message_size(self.max_message_bytes)
            .max_frame_size(self.max_message_bytes)
            .protocols([SUBPROTOCOL])
    }
}

/// What a handshake came to, when it was not refused.
#[derive(Debug)]
pub enum Handshake {
    /// The handshake carried a valid credential.
    Authenticated(Identity),
    /// No handshake source carried anything and `message` is enabled: upgrade, then wait.
    AwaitMessage(VerifyContext),
}

/// Per-endpoint session behaviour.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Send the `welcome` frame first (endpoint option `welcome = false` turns it off).
    pub welcome: bool,
    /// Cancelled on shutdown: every session closes (`CloseReason::Shutdown`). `None` (the default):
    /// the authenticator's own token, which [`Authenticator::shutdown`] and
    /// [`shutdown_signal`](crate::shutdown_signal) cancel — nothing to wire by hand.
    pub shutdown: Option<CancellationToken>,
    /// Ping every half of this; close (`CloseReason::IdleTimeout`) a peer silent for all of it,
    /// pongs included.
    pub idle_timeout: Option<Duration>,
    /// Data frames a client may send per second; past it the socket closes
    /// (`CloseReason::RateLimited`).
    pub messages_per_sec: Option<u32>,
    /// How long before the credential's `exp` the client is sent
    /// `{"type":"expiring","expires_at":exp}` (once per deadline), so it can refresh in time
    /// without a clock of its own. The server turns it off where no `welcome` is
    /// sent (and on proxies without `refresh_frames`).
    pub expiry_warning: Option<Duration>,
    /// An absolute cap: the session closes (`CloseReason::TokenExpired`) this long after it
    /// opened, whatever refreshes it had; `expiring` is sent before it as for an expiry.
    pub max_session: Option<Duration>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            welcome: true,
            shutdown: None,
            idle_timeout: None,
            messages_per_sec: None,
            expiry_warning: Some(Duration::from_secs(30)),
            max_session: None,
        }
    }
}

/// How one endpoint authenticates. Cheap to clone (`Arc` inside where it matters).
#[derive(Debug, Clone)]
pub struct Authenticator {
    sources: Sources,
    /// Shared by every clone, so a server can swap the verifiers of live sessions too.
    verifiers: LiveChain,
    reject: RejectMode,
    message_timeout: Duration,
    leeway: Duration,
    socket: SocketSettings,
    failures: Option<Arc<FailureLimiter>>,
    /// Credentials carrying this claim are not taken here (see [`Authenticator::refuse_claim`]).
    refused_claim: Option<&'static str>,
    /// What a credential must hold to be taken here (see [`Authenticator::require`]).
    require: Option<Arc<Requirements>>,
    /// Refusals of handshakes that named an attempt (see [`Authenticator::attempts`]).
    attempts: Option<Arc<Attempts>>,
    registry: Option<Arc<Registry>>,
    /// Re-checks live sessions' credentials with their issuer (see [`Authenticator::revalidator`]).
    revalidator: Option<Arc<Revalidator>>,
    revocations: Option<Arc<Revocations>>,
    trusted_proxies: Arc<TrustedProxies>,
    /// Ends every session of this authenticator (`CloseReason::Shutdown`) when cancelled.
    shutdown: CancellationToken,
    /// What [`WsAuth::on_session`](crate::WsAuth::on_session) gives each session.
    session: SessionOptions,
    /// Told of every session this endpoint opens, refreshes and closes.
    observer: Option<Observer>,
    /// Handed the spans of every handshake and of its session (see [`Authenticator::trace`]).
    tracer: Option<TracerRef>,
}

/// A [`Tracer`], shared by every clone of an authenticator.
#[derive(Clone)]
struct TracerRef(Arc<dyn Tracer>);

impl std::fmt::Debug for TracerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracer")
    }
}

/// A [`SessionObserver`], shared by every clone of an authenticator.
#[derive(Clone)]
pub(crate) struct Observer(pub(crate) Arc<dyn SessionObserver>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionObserver")
    }
}

impl Authenticator {
    /// Default sources, HTTP rejections, a 5 s `message` timeout and no failure limit. The
    /// expiry leeway is the verifiers' own (a JWT verifier's `leeway_secs`; 30 s when none
    /// says), so it is set in one place.
    pub fn new(verifiers: impl Into<LiveChain>) -> Self {
        crate::install_crypto();
        let verifiers = verifiers.into();
        let leeway = verifiers
            .current()
            .leeway()
            .unwrap_or(crate::verify::DEFAULT_LEEWAY);
        Self {
            sources: Sources::default(),
            verifiers,
            reject: RejectMode::Http,
            message_timeout: Duration::from_secs(5),
            leeway,
            socket: SocketSettings::default(),
            failures: None,
            refused_claim: None,
            require: None,
            attempts: None,
            registry: None,
            revalidator: None,
            revocations: None,
            trusted_proxies: Arc::default(),
            shutdown: CancellationToken::new(),
            session: SessionOptions::default(),
            observer: None,
            tracer: None,
        }
    }

    /// Hands `tracer` a span for every handshake (`wsgate.handshake`, a child of the request's
    /// W3C `traceparent` when it has one) and, as its children, for the session's refreshes,
    /// re-checks and a proxy's upstream dial. Called on the deciding task: it must not wait.
    pub fn trace(mut self, tracer: Arc<dyn Tracer>) -> Self {
        self.tracer = Some(TracerRef(tracer));
        self
    }

    /// Tells `observer` of every session this endpoint opens, refreshes and closes (a
    /// server's connection events). It is called on the session's task: it must not wait.
    pub fn observe(mut self, observer: Arc<dyn SessionObserver>) -> Self {
        self.observer = Some(Observer(observer));
        self
    }

    /// The observer, if one was given.
    pub(crate) fn observer(&self) -> Option<&Arc<dyn SessionObserver>> {
        self.observer.as_ref().map(|o| &o.0)
    }

    /// Ends sessions (`CloseReason::Shutdown`) when `token` is cancelled (the server's own shutdown
    /// token); by default each authenticator has its own, cancelled by [`Self::shutdown`].
    pub fn shutdown_on(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Closes every session of this authenticator (and its clones): `CloseReason::Shutdown`.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// The token whose cancellation ends this authenticator's sessions.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The session rules [`WsAuth::on_session`](crate::WsAuth::on_session) applies (welcome,
    /// idle timeout, message rate, `expiring`).
    pub fn session_options(mut self, options: SessionOptions) -> Self {
        self.session = options;
        self
    }

    /// See [`Self::session_options`].
    pub fn session_options_ref(&self) -> &SessionOptions {
        &self.session
    }
    /// Where credentials are read, in order.
    pub fn sources(mut self, sources: Sources) -> Self {
        self.sources = sources;
        self
    }
    /// How refusals are answered: HTTP status, or accept-then-close (`CloseReason::Refused`).
    pub fn reject(mut self, mode: RejectMode) -> Self {
        self.reject = mode;
        self
    }
    /// How long the `message` source waits for the auth frame.
    pub fn message_timeout(mut self, d: Duration) -> Self {
        self.message_timeout = d;
        self
    }
    /// Added to a credential's `exp` before the session guard closes the socket
    /// (`CloseReason::TokenExpired`).
    pub fn leeway(mut self, d: Duration) -> Self {
        self.leeway = d;
        self
    }
    /// Buffer and message-size limits of accepted sockets.
    pub fn socket_settings(mut self, s: SocketSettings) -> Self {
        self.socket = s;
        self
    }
    /// Refuses (401 `invalid_token`) every credential that carries claim `name` set (present,
    /// not `null` or `false`) — at the handshake, through a ticket and on refresh — so tokens
    /// minted for one purpose (the server's demo tokens) are taken only where they belong.
    pub fn refuse_claim(mut self, name: &'static str) -> Self {
        self.refused_claim = Some(name);
        self
    }

    /// Takes only credentials whose claims hold `requirements` (an endpoint's `require`):
    /// others are refused 403 `insufficient_scope` (closed as a refusal with `reject = "close"`),
    /// at the handshake and on refresh.
    pub fn require(mut self, requirements: Requirements) -> Self {
        self.require = (!requirements.is_empty()).then(|| Arc::new(requirements));
        self
    }

    /// `Err(InsufficientScope)` unless `verified` holds this endpoint's requirements.
    pub fn admits(&self, verified: &Verified) -> Result<(), AuthError> {
        match &self.require {
            Some(req) if !verified.claims.inspect(|c| req.allow(c)) => {
                Err(AuthError::InsufficientScope)
            }
            _ => Ok(()),
        }
    }

    /// Keeps the refusal of every handshake that carries `?wsgate_attempt=<nonce>`, so the
    /// page that made it can ask why (`GET /api/handshake-status` on the server).
    pub fn attempts(mut self, attempts: Arc<Attempts>) -> Self {
        self.attempts = Some(attempts);
        self
    }

    /// The table refusals are kept in, when there is one.
    pub fn attempts_ref(&self) -> Option<&Arc<Attempts>> {
        self.attempts.as_ref()
    }

    /// Records `refusal` for the attempt the request names, if it names one.
    pub fn record_attempt(&self, parts: &Parts, refusal: Refusal) {
        if let Some(attempts) = &self.attempts
            && let Some(nonce) = Attempts::nonce_in(parts.uri.query())
        {
            attempts.record(nonce, refusal);
        }
    }

    /// Shares one failure budget per remote IP (`429` past it).
    pub fn failure_limiter(mut self, l: Arc<FailureLimiter>) -> Self {
        self.failures = Some(l);
        self
    }

    /// Live sessions: per-subject connection limits (403) and closing from outside.
    pub fn registry(mut self, r: Arc<Registry>) -> Self {
        self.registry = Some(r);
        self
    }
    /// Re-checks, every period, the live sessions whose verifier asked for it
    /// ([`Verified::recheck_every`]); give it the same registry as [`Authenticator::registry`].
    /// Without one, credentials are checked at the handshake and on `refresh` only.
    pub fn revalidator(mut self, r: Arc<Revalidator>) -> Self {
        self.revalidator = Some(r);
        self
    }

    /// Keeps a credential in the session's memory when it is to be re-checked.
    pub(crate) fn keep(
        &self,
        cred: &Credential,
        origin: Option<&str>,
        verified: &Verified,
    ) -> Option<Arc<Kept>> {
        (self.revalidator.is_some() && verified.recheck_every.is_some())
            .then(|| Kept::new(cred.clone(), origin.map(str::to_owned)))
    }

    /// Watches a session's kept credential, if there is one to re-check.
    pub(crate) fn watch(&self, identity: &Identity) -> Option<Watch> {
        self.revalidator.as_ref()?.watch(identity)
    }

    /// Revoked tokens and subjects, refused at handshake and refresh.
    pub fn revocations(mut self, r: Arc<Revocations>) -> Self {
        self.revocations = Some(r);
        self
    }
    /// Load balancers whose `X-Forwarded-For` names the client (limits, logs, verifiers).
    pub fn trusted_proxies(mut self, t: TrustedProxies) -> Self {
        self.trusted_proxies = Arc::new(t);
        self
    }
    /// The live-session registry, if one was given.
    pub fn registry_ref(&self) -> Option<&Arc<Registry>> {
        self.registry.as_ref()
    }

    /// The configured sources.
    pub fn sources_ref(&self) -> &Sources {
        &self.sources
    }
    /// The verifier chain as it is now.
    pub fn verifiers(&self) -> Arc<VerifierChain> {
        self.verifiers.current()
    }
    /// The live handle on the verifier chain: [`LiveChain::replace`] changes the verifiers of
    /// this authenticator, of its clones and of the sessions they opened.
    pub fn live_verifiers(&self) -> &LiveChain {
        &self.verifiers
    }
    /// The configured reject mode.
    pub fn reject_mode(&self) -> RejectMode {
        self.reject
    }
    /// The expiry leeway the session guard adds to `exp`.
    pub fn leeway_duration(&self) -> Duration {
        self.leeway
    }
    /// The socket settings applied at the upgrade.
    pub fn socket(&self) -> &SocketSettings {
        &self.socket
    }

    /// Authenticates an upgrade request, logging the outcome and counting failures.
    pub async fn authenticate(&self, parts: &Parts) -> Result<Handshake, AuthError> {
        let ctx = self.context(parts);
        let path = parts.uri.path();
        match self.decide(parts, &ctx).await {
            Ok(Handshake::Authenticated(id)) => {
                accepted(path, &ctx, &id);
                Ok(Handshake::Authenticated(id))
            }
            Ok(Handshake::AwaitMessage(ctx)) => {
                tracing::debug!(target: "wsgate::conn", path, remote = %remote(&ctx), "upgrading to wait for an auth message");
                Ok(Handshake::AwaitMessage(ctx))
            }
            Err((e, source)) => {
                self.refused(path, &ctx, source, &e);
                self.record_attempt(parts, Refusal::from(&e));
                Err(e)
            }
        }
    }

    /// The decision, with the source the refused credential came from (if any).
    async fn decide(
        &self,
        parts: &Parts,
        ctx: &VerifyContext,
    ) -> Result<Handshake, (AuthError, Option<SourceKind>)> {
        self.check_failures(ctx).map_err(|e| (e, None))?;
        self.sources
            .check_origin(&parts.headers)
            .map_err(|e| (e, None))?;
        match self.sources.find(parts).map_err(|e| {
            let source = matches!(e, AuthError::CookieOrigin).then_some(SourceKind::Cookie);
            (e, source)
        })? {
            Some(cred) => self
                .verify(&cred, ctx)
                .await
                .map(Handshake::Authenticated)
                .map_err(|e| (e, Some(cred.source()))),
            None if self.sources.accepts_message() => Ok(Handshake::AwaitMessage(ctx.clone())),
            None => Err((AuthError::Missing, None)),
        }
    }

    /// Authenticates an ordinary HTTP request (e.g. `POST /api/tickets`) with the same sources
    /// and verifiers, without taking a connection slot. Refusals are logged and counted.
    pub async fn authenticate_request(&self, parts: &Parts) -> Result<Identity, AuthError> {
        // Not a handshake: no handshake span.
        let ctx = VerifyContext {
            trace: None,
            ..self.context(parts)
        };
        let result = async {
            self.check_failures(&ctx)?;
            self.sources.check_origin(&parts.headers)?;
            let cred = self.sources.find(parts)?.ok_or(AuthError::Missing)?;
            let (verified, by) = self.verify_credential(&cred, &ctx).await?;
            Ok(Identity::new(verified, cred.source(), by))
        }
        .await;
        if let Err(e) = &result {
            self.refused(parts.uri.path(), &ctx, None, e);
        }
        result
    }

    /// Verifies a credential (and checks revocations) without opening anything.
    pub async fn verify_credential(
        &self,
        cred: &Credential,
        ctx: &VerifyContext,
    ) -> Result<(Verified, &'static str), AuthError> {
        let started = std::time::Instant::now();
        let chain = self.verifiers.current();
        let (verified, by) = chain.verify(cred, ctx).await?;
        crate::metrics::verified(by, started.elapsed());
        if self
            .revocations
            .as_ref()
            .is_some_and(|r| r.is_revoked(&verified))
        {
            return Err(AuthError::Invalid("credential revoked"));
        }
        if self
            .refused_claim
            .is_some_and(|name| verified.claims.is_set(name))
        {
            return Err(AuthError::Invalid("not a credential for this endpoint"));
        }
        Ok((verified, by))
    }

    /// Verifies one credential into an identity with a fresh session id, taking one of the
    /// subject's connection slots.
    pub async fn verify(
        &self,
        cred: &Credential,
        ctx: &VerifyContext,
    ) -> Result<Identity, AuthError> {
        let (verified, by) = self.verify_credential(cred, ctx).await?;
        self.admits(&verified)?;
        let slot = match &self.registry {
            Some(r) => Some(r.admit(&verified.sub).await?),
            None => None,
        };
        let remote = ctx.remote_addr.map(|a| a.ip());
        let kept = self.keep(cred, ctx.origin.as_deref(), &verified);
        Ok(
            Identity::with_slot(verified, cred.source(), by, slot, remote, kept)
                .traced(ctx.trace.clone()),
        )
    }

    /// `Err(RateLimited)` (429) while the caller's address has used up its failures.
    pub fn check_failures(&self, ctx: &VerifyContext) -> Result<(), AuthError> {
        match (&self.failures, ctx.remote_addr) {
            (Some(limiter), Some(addr)) => limiter.check(addr.ip()),
            _ => Ok(()),
        }
    }

    /// Counts one failure against the caller's address (also for credentials checked
    /// elsewhere, such as the admin key).
    pub fn record_failure(&self, ctx: &VerifyContext) {
        if let (Some(limiter), Some(addr)) = (&self.failures, ctx.remote_addr) {
            limiter.record(addr.ip());
        }
    }

    /// Counts a refused `refresh` against the session's address, as a refused handshake is;
    /// `Err(RateLimited)` once the address has used up its failures (the socket then closes).
    pub(crate) fn refresh_refused(&self, ip: Option<std::net::IpAddr>) -> Result<(), AuthError> {
        match (&self.failures, ip) {
            (Some(limiter), Some(ip)) => {
                limiter.record(ip);
                limiter.check(ip)
            }
            _ => Ok(()),
        }
    }

    /// Logs a refusal and counts it against the address when the client is to blame.
    fn refused(&self, path: &str, ctx: &VerifyContext, source: Option<SourceKind>, e: &AuthError) {
        if e.is_client_failure() {
            self.record_failure(ctx);
        }
        crate::metrics::refused(source, e);
        tracing::warn!(
            target: "wsgate::conn",
            path,
            remote = %remote(ctx),
            source = source.map(SourceKind::as_str).unwrap_or("-"),
            reason = e.code().as_str(),
            detail = %e,
            "connection refused"
        );
        if let Some(trace) = &ctx.trace {
            let mut attributes = handshake_attributes(path, ctx, "refused");
            if let Some(source) = source {
                attributes.push(("wsgate.source", source.as_str().into()));
            }
            attributes.push(("wsgate.error", e.code().as_str().into()));
            attributes.push((
                "http.response.status_code",
                i64::from(e.status().as_u16()).into(),
            ));
            trace.handshake(attributes, Some(e.code().as_str()));
        }
    }

    /// After an upgrade with no handshake credential: the first frame must be
    /// `{"type":"auth","token":"..."}` within the message timeout, else close
    /// (`CloseReason::Refused`).
    pub async fn await_message(
        &self,
        socket: WebSocket,
        ctx: VerifyContext,
        path: &str,
    ) -> Option<(WebSocket, Identity)> {
        self.await_message_on(socket, ctx, path).await
    }

    /// [`Authenticator::await_message`] on either kind of socket.
    pub(crate) async fn await_message_on<S: AuthSocket>(
        &self,
        mut socket: S,
        ctx: VerifyContext,
        path: &str,
    ) -> Option<(S, Identity)> {
        let outcome =
            match tokio::time::timeout(self.message_timeout, first_auth_frame(&mut socket)).await {
                Ok(Ok(token)) => {
                    self.verify(&Credential::new(token, SourceKind::Message), &ctx)
                        .await
                }
                Ok(Err(None)) => return None, // the client went away
                Ok(Err(Some(e))) => Err(e),
                Err(_) => Err(AuthError::MessageTimeout),
            };
        match outcome {
            Ok(id) => {
                accepted(path, &ctx, &id);
                Some((socket, id))
            }
            Err(e) => {
                self.refused(path, &ctx, Some(SourceKind::Message), &e);
                socket.refuse(e.close_reason()).await;
                None
            }
        }
    }
}

impl Authenticator {
    /// What verifiers and limits know of the request: the client's address (behind trusted
    /// proxies, the one they name) and its `Origin`.
    pub fn context(&self, parts: &Parts) -> VerifyContext {
        VerifyContext {
            remote_addr: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| self.trusted_proxies.client(c.0, &parts.headers)),
            origin: origin(parts),
            recheck: None,
            trace: self
                .tracer
                .as_ref()
                .map(|t| Traced::begin(t.0.clone(), &parts.headers)),
        }
    }
}

fn origin(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A socket an `auth` frame is awaited on, and a refusal sent on: axum's `WebSocket`, or
/// wsgate's own `ClientSocket` (its impl is in `relay`, the layer above).
pub(crate) trait AuthSocket: Send {
    /// The next data frame (pings answered, pongs skipped); `None` once the client closed,
    /// broke the protocol or went away.
    fn next_data(&mut self) -> impl Future<Output = Option<Message>> + Send;

    /// Closes with `reason`, the close handshake bounded.
    fn refuse(self, reason: CloseReason) -> impl Future<Output = ()> + Send;
}

impl AuthSocket for WebSocket {
    async fn next_data(&mut self) -> Option<Message> {
        // tungstenite answers pings inside its reads.
        loop {
            match self.recv().await? {
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(data) => return Some(data),
            }
        }
    }

    async fn refuse(self, reason: CloseReason) {
        close_socket(self, reason).await;
    }
}

/// Reads frames until the first data frame; `Err(None)` when the socket ended first.
async fn first_auth_frame(socket: &mut impl AuthSocket) -> Result<String, Option<AuthError>> {
    match socket.next_data().await {
        Some(Message::Text(t)) => match ClientFrame::parse(t.as_str()).1 {
            Ok(ClientFrame::Auth { token }) if !token.is_empty() => Ok(token),
            _ => Err(Some(AuthError::Missing)),
        },
        Some(_) => Err(Some(AuthError::Missing)),
        None => Err(None),
    }
}

fn remote(ctx: &VerifyContext) -> String {
    ctx.remote_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "-".into())
}

/// The handshake's attributes every outcome has. Never a credential, never the subject.
fn handshake_attributes(
    path: &str,
    ctx: &VerifyContext,
    outcome: &'static str,
) -> Vec<(&'static str, Value)> {
    let mut attributes = Vec::with_capacity(8);
    attributes.push(("wsgate.outcome", outcome.into()));
    attributes.push(("url.path", path.into()));
    if let Some(addr) = ctx.remote_addr {
        attributes.push(("client.address", addr.ip().to_string().as_str().into()));
    }
    attributes
}

/// Logs, counts and traces an accepted handshake.
fn accepted(path: &str, ctx: &VerifyContext, id: &Identity) {
    if let Some(trace) = &ctx.trace {
        let mut attributes = handshake_attributes(path, ctx, "accepted");
        attributes.push(("wsgate.source", id.source().as_str().into()));
        attributes.push(("wsgate.provider", id.provider().into()));
        attributes.push(("wsgate.session", id.session().into()));
        trace.handshake(attributes, None);
    }
    crate::metrics::accepted(id.source(), id.provider_label());
    tracing::info!(
        target: "wsgate::conn",
        path,
        remote = %remote(ctx),
        source = id.source().as_str(),
        verifier = id.verifier(),
        provider = id.provider(),
        sub = id.sub(),
        session = id.session(),
        "connection accepted"
    );
}
