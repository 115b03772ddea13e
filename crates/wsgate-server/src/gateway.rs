//! The config turned into live objects: [`Services`] (store, registry, verifiers, tickets,
//! broker, cluster) built once at start, and the routes built from them and the config —
//! again on every reload, sharing what lives across it (`Services::reloaded`).
//!
//! Running them (listening, signals, drain) is `serve.rs`; reading the config again is
//! `reload.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wsgate::protocol::{ErrorBody, ErrorCode};
use wsgate::{
    Authenticator, FailureLimiter, Registry, Revalidator, Revocations, SessionOptions,
    SocketSettings, SourceKind, Sources, TicketStore, TicketVerifier, Tickets, TrustedProxies,
};

use crate::admin::{self, Admin};
use crate::auth::{self, BuiltAuth};
use crate::broker::{Broker, MemoryBroker};
use crate::cluster::Cluster;
use crate::cluster::broker::ClusterBroker;
use crate::cluster::counts::RedisCounts;
use crate::cluster::tickets::RedisTickets;
use crate::config::{Checked, CheckedEndpoint, Config, Origin};
use crate::demo;
use crate::endpoints::{self, Endpoint};
use crate::events::Events;
use crate::keys::ApiKeyVerifier;
use crate::ssf::Ssf;
use crate::store::Store;
use crate::telemetry::Telemetry;
use wsgate::attempts::Attempts;
use wsgate::verify::{LiveChain, VerifierChain};

/// Everything the routes share, built once at start.
pub struct Services {
    pub built: BuiltAuth,
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    /// Re-checks live sessions whose provider (or backend) asks for it.
    pub revalidator: Arc<Revalidator>,
    pub revocations: Arc<Revocations>,
    pub tickets: Arc<dyn TicketStore>,
    pub admin_key: Option<Arc<[u8]>>,
    /// Refused handshakes (and wrong admin keys) per address; `None` when
    /// `limits.auth_failures_per_min = 0` turns the limit off.
    pub failures: Option<Arc<FailureLimiter>>,
    /// The admin API's own failure budget (wrong admin keys), apart from the handshakes'.
    pub admin_failures: Option<Arc<FailureLimiter>>,
    /// Load balancers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Each `[[endpoints]]` entry's upstream and `require`, as `Config::check` built them.
    pub endpoints: Vec<CheckedEndpoint>,
    /// Refused handshakes that named an attempt (`GET /api/handshake-status`).
    pub attempts: Arc<Attempts>,
    /// Cancelled by SIGTERM/SIGINT: stop accepting, `/readyz` 503, start draining.
    pub stopping: CancellationToken,
    /// Cancelled at the end of the drain: every session still open closes at once.
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// Renders `/metrics`; `None` when no recorder could be installed (tests of the router).
    pub prometheus: Option<PrometheusHandle>,
    pub api_keys: Arc<ApiKeyVerifier>,
    pub broker: Arc<dyn Broker>,
    /// Cluster mode: the shared Redis.
    pub cluster: Option<Arc<Cluster>>,
    /// Cluster mode: what `cluster::start` needs to run it (taken by `serve`).
    pub cluster_start: Option<ClusterParts>,
    /// `[ssf]`: the Shared Signals receiver, and its poll token.
    pub ssf: Option<(Arc<Ssf>, Option<String>)>,
    /// Every verifier a handshake or a `refresh` may use (API keys, the configured ones,
    /// tickets), shared by every endpoint's authenticator and so by every open session: a
    /// reload replaces what is inside, and live sessions refresh against the new verifiers.
    pub verifiers: LiveChain,
    /// The configured verifiers alone, which the revalidator re-checks live sessions with.
    pub providers: LiveChain,
    /// Reload requests from `POST /api/reload`, answered by the reload task (`reload.rs`).
    pub reload: Option<admin::ReloadRequests>,
    /// `[events]`: connection events, their delivery tasks running.
    pub events: Option<Arc<Events>>,
    /// `[telemetry]`: the span exporter, its task running.
    pub telemetry: Option<Arc<Telemetry>>,
}

pub struct ClusterParts {
    pub broker: Arc<ClusterBroker>,
    pub pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
}

impl Services {
    /// Builds everything the routes share; in cluster mode, the Redis-backed broker, tickets
    /// and connection counts (nothing is started yet: see [`serve`]).
    pub fn new(
        cfg: &Config,
        checked: Checked,
        built: BuiltAuth,
        store: Arc<Store>,
    ) -> anyhow::Result<Self> {
        let revocations = Arc::new(Revocations::new());
        for r in store.revocations()? {
            revocations.add(r);
        }
        let admin_key = admin_key(cfg)?.map(|k| Arc::from(k.into_bytes()));
        let failures = failure_limiter(None, cfg.limits.auth_failures_per_min);
        let admin_failures = failure_limiter(None, cfg.limits.auth_failures_per_min);
        let Checked {
            trusted_proxies,
            endpoints,
            ssf,
        } = checked;
        let per_user = cfg.limits.max_connections_per_user;
        let mut registry = Registry::new((per_user > 0).then_some(per_user as usize));
        let ticket_ttl = Duration::from_secs(cfg.tickets.ttl_secs);
        let mut broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
        let mut tickets: Arc<dyn TicketStore> = Arc::new(Tickets::new(ticket_ttl));
        let mut cluster_parts = None;
        if let Some((backend, c)) = cfg.cluster_mode() {
            let (cluster, pushes) = Cluster::new(backend, &c.key_prefix)
                .map_err(|e| anyhow::anyhow!("[cluster]: {e}"))?;
            let cluster_broker = ClusterBroker::new(cluster.clone());
            broker = cluster_broker.clone();
            tickets = Arc::new(RedisTickets::new(cluster.clone(), ticket_ttl));
            registry = registry.with_shared_counts(Arc::new(RedisCounts::new(cluster.clone())));
            cluster_parts = Some((
                cluster,
                ClusterParts {
                    broker: cluster_broker,
                    pushes,
                },
            ));
        }
        let registry = Arc::new(registry);
        let shutdown = CancellationToken::new();
        let providers = LiveChain::new(built.chain.clone());
        let revalidator = Revalidator::new(providers.clone(), registry.clone())
            .on_error(cfg.auth.revalidate_on_error)
            .shutdown_on(shutdown.clone());
        let ssf_tokens = match &cfg.ssf {
            Some(c) => Some(c.tokens(&Origin::Defaults)?),
            None => None,
        };
        // One name for this node in its events' ids and its spans' resource.
        let node = node_name(cluster_parts.as_ref().map(|(c, _)| c.as_ref()));
        let events = match &cfg.events {
            Some(c) => Some(Events::start(
                c,
                node.clone(),
                c.webhook_key(&Origin::Defaults)?,
                cluster_parts.as_ref().map(|(c, _)| c.clone()),
            )?),
            None => None,
        };
        let telemetry = match &cfg.telemetry {
            Some(c) => Some(Telemetry::start(c, &node)?),
            None => None,
        };
        let ssf = ssf.zip(ssf_tokens).map(|(checked, tokens)| {
            let mut ssf = Ssf::new(
                checked.verifier,
                tokens.push,
                registry.clone(),
                revocations.clone(),
                store.clone(),
                cluster_parts.as_ref().map(|(c, _)| c.clone()),
                provider_issuers(cfg),
            );
            ssf.events = events.clone();
            (Arc::new(ssf), tokens.poll)
        });
        let api_keys = Arc::new(ApiKeyVerifier::new(store.clone())?);
        let (cluster, cluster_start) = cluster_parts.unzip();
        Ok(Self {
            ssf,
            broker,
            cluster,
            cluster_start,
            verifiers: LiveChain::new(every_verifier(&built, &api_keys, &tickets)),
            providers,
            reload: None,
            events,
            telemetry,
            built,
            store: store.clone(),
            registry,
            revalidator: Arc::new(revalidator),
            revocations,
            tickets,
            admin_key,
            failures,
            admin_failures,
            trusted_proxies,
            endpoints,
            attempts: Arc::new(Attempts::new()),
            stopping: CancellationToken::new(),
            shutdown,
            tracker: TaskTracker::new(),
            prometheus: None,
            api_keys,
        })
    }

    /// The services after a reload: `cfg`'s verifiers, endpoints, trusted proxies and failure
    /// limit; everything that lives across a reload (sockets, registry, revocations, tickets,
    /// store, cluster, the Shared Signals receiver, shutdown, the live verifier handles) shared
    /// with `self`. Nothing changes for anyone until [`Services::put_verifiers_live`].
    pub fn reloaded(&self, cfg: &Config, checked: Checked, built: BuiltAuth) -> Self {
        let Checked {
            trusted_proxies,
            endpoints,
            ssf: _,
        } = checked;
        // The failures counted so far stay counted, unless the limit itself changed.
        let per_min = cfg.limits.auth_failures_per_min;
        let failures = failure_limiter(self.failures.as_ref(), per_min);
        let admin_failures = failure_limiter(self.admin_failures.as_ref(), per_min);
        Self {
            built,
            store: self.store.clone(),
            registry: self.registry.clone(),
            revalidator: self.revalidator.clone(),
            revocations: self.revocations.clone(),
            tickets: self.tickets.clone(),
            admin_key: self.admin_key.clone(),
            failures,
            admin_failures,
            trusted_proxies,
            endpoints,
            attempts: self.attempts.clone(),
            stopping: self.stopping.clone(),
            shutdown: self.shutdown.clone(),
            tracker: self.tracker.clone(),
            prometheus: self.prometheus.clone(),
            api_keys: self.api_keys.clone(),
            broker: self.broker.clone(),
            cluster: self.cluster.clone(),
            cluster_start: None,
            ssf: self.ssf.clone(),
            verifiers: self.verifiers.clone(),
            providers: self.providers.clone(),
            reload: self.reload.clone(),
            events: self.events.clone(),
            telemetry: self.telemetry.clone(),
        }
    }

    /// Puts these services' verifiers in the live handles every authenticator and open session
    /// share: from now on handshakes, `refresh` frames and re-checks use them.
    pub fn put_verifiers_live(&self) {
        self.verifiers
            .replace(every_verifier(&self.built, &self.api_keys, &self.tickets));
        self.providers.replace(self.built.chain.clone());
    }
}

/// API keys first (a backend proxy verifier would otherwise claim `wsk_` tokens), then the
/// configured verifiers, then tickets.
fn every_verifier(
    built: &BuiltAuth,
    api_keys: &Arc<ApiKeyVerifier>,
    tickets: &Arc<dyn TicketStore>,
) -> VerifierChain {
    let mut chain = built.chain.clone();
    chain.prepend(api_keys.clone());
    chain.push(Arc::new(TicketVerifier(tickets.clone())));
    chain
}

/// A failure limiter at `per_min` (none when 0): `running` itself when it already counts at
/// that rate, so a reload keeps what it has counted.
fn failure_limiter(
    running: Option<&Arc<FailureLimiter>>,
    per_min: u32,
) -> Option<Arc<FailureLimiter>> {
    match running {
        Some(f) if f.per_min() == per_min => Some(f.clone()),
        _ => (per_min > 0).then(|| Arc::new(FailureLimiter::new(per_min))),
    }
}

/// What this node is called in its events' ids: the cluster's name for it, else the host's
/// name (without `:`, which separates the id's parts).
fn node_name(cluster: Option<&Cluster>) -> String {
    let name = match cluster {
        Some(c) => c.node().to_owned(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
    };
    let name = name.replace(':', "-");
    if name.is_empty() {
        "wsgate".into()
    } else {
        name
    }
}

/// `(provider name, issuer)` of every identity provider with an issuer: a Shared Signals
/// `iss_sub` subject names its sessions.
fn provider_issuers(cfg: &Config) -> Vec<(String, String)> {
    let jwt = auth::effective_jwt(cfg)
        .and_then(|j| j.issuer)
        .map(|iss| (crate::config::JWT_PROVIDER.to_owned(), iss));
    let providers = cfg
        .auth
        .providers
        .iter()
        .filter_map(|p| Some((p.name.clone(), p.issuer.clone()?)));
    jwt.into_iter().chain(providers).collect()
}

/// Shortest admin key accepted: a guessable key would hand out every admin power. Keys
/// shorter than [`GOOD_ADMIN_KEY_LEN`] are accepted with a warning.
pub const MIN_ADMIN_KEY_LEN: usize = 8;
pub const GOOD_ADMIN_KEY_LEN: usize = 16;

/// The admin key from the variable `admin.api_key_env` names: `None` when unset or empty (the
/// admin API is then disabled), an error when too short to be a secret.
pub fn admin_key(cfg: &Config) -> anyhow::Result<Option<String>> {
    let var = &cfg.admin.api_key_env;
    match std::env::var(var) {
        Ok(k) if k.is_empty() => Ok(None),
        Ok(k) if k.len() < MIN_ADMIN_KEY_LEN => anyhow::bail!(
            "admin.api_key_env: ${var} holds a {}-character admin key; use at least {MIN_ADMIN_KEY_LEN} random characters (e.g. `openssl rand -hex 32`)",
            k.len()
        ),
        Ok(k) => Ok(Some(k)),
        Err(_) => Ok(None),
    }
}

/// What `serve` refuses at start beyond the config's own values, checked without starting
/// or creating anything. `check-config` runs this too, so it refuses whatever `serve` would.
pub fn startup_checks(cfg: &Config, origin: &Origin) -> anyhow::Result<()> {
    if let Some(k) = admin_key(cfg)?
        && k.len() < GOOD_ADMIN_KEY_LEN
    {
        tracing::warn!(
            "admin.api_key_env: ${} holds a {}-character admin key; use at least {GOOD_ADMIN_KEY_LEN} random characters",
            cfg.admin.api_key_env,
            k.len()
        );
    }
    if cfg.demo && !auth::can_mint(cfg) {
        anyhow::bail!(
            "{origin}: demo: the demo page mints its own tokens and needs an HMAC secret (HS256 with `secret`, `secret_env` or the generated one)"
        );
    }
    Store::check(&cfg.storage.path)?;
    if let Some(ssf) = &cfg.ssf {
        ssf.tokens(origin)?;
    }
    if let Some(events) = &cfg.events {
        events.webhook_key(origin)?;
    }
    Ok(())
}

/// The authentication policy shared by every endpoint, before per-endpoint overrides.
pub fn base_authenticator(cfg: &Config, s: &Services) -> Authenticator {
    let a = &cfg.auth;
    let sources = Sources::new(a.sources.iter().copied())
        .query_param(&a.query_param)
        .cookie_name(&a.cookie_name)
        .allowed_origins(a.allowed_origins.iter().cloned());
    let auth = Authenticator::new(s.verifiers.clone())
        .shutdown_on(s.shutdown.clone())
        .sources(sources)
        .trusted_proxies(s.trusted_proxies.clone())
        .reject(a.reject)
        .message_timeout(Duration::from_millis(a.message_timeout_ms))
        .socket_settings(SocketSettings {
            max_message_bytes: cfg.limits.max_message_bytes,
            ..SocketSettings::default()
        })
        .registry(s.registry.clone())
        .revalidator(s.revalidator.clone())
        .revocations(s.revocations.clone())
        .attempts(s.attempts.clone());
    match &s.failures {
        Some(f) => auth.failure_limiter(f.clone()),
        None => auth,
    }
}

/// Every route of the server, and the demo page when it is on.
pub fn app(cfg: &Config, s: &Services) -> anyhow::Result<Router> {
    let routes = router(cfg, s);
    if !cfg.demo {
        return Ok(routes);
    }
    let Some(minting) = s.built.minting.clone() else {
        anyhow::bail!("demo: no HMAC secret to mint demo tokens with");
    };
    Ok(demo::router(minting).merge(routes))
}

/// Every route of the server but the demo page.
pub fn router(cfg: &Config, s: &Services) -> Router {
    let base = base_authenticator(cfg, s);
    let limits = &cfg.limits;
    let session = SessionOptions {
        welcome: true,
        // The authenticator's token (`shutdown_on` above), which is the server's.
        shutdown: None,
        idle_timeout: (limits.idle_timeout_secs > 0)
            .then(|| Duration::from_secs(limits.idle_timeout_secs)),
        messages_per_sec: (limits.messages_per_sec > 0).then_some(limits.messages_per_sec),
        expiry_warning: (cfg.auth.expiry_warning_secs > 0)
            .then(|| Duration::from_secs(cfg.auth.expiry_warning_secs)),
        max_session: (cfg.auth.max_session_secs > 0)
            .then(|| Duration::from_secs(cfg.auth.max_session_secs)),
    };
    // A ticket cannot buy a ticket, and an HTTP request has no first message.
    let ticket_sources: Vec<SourceKind> = cfg
        .auth
        .sources
        .iter()
        .copied()
        .filter(|k| !matches!(k, SourceKind::Ticket | SourceKind::Message))
        .collect();
    let ticket_sources = if ticket_sources.is_empty() {
        vec![SourceKind::Bearer]
    } else {
        ticket_sources
    };
    let admin = Admin {
        key: s.admin_key.clone(),
        registry: s.registry.clone(),
        revocations: s.revocations.clone(),
        store: s.store.clone(),
        tickets: s.tickets.clone(),
        broker: s.broker.clone(),
        cluster: s.cluster.clone(),
        reload: s.reload.clone(),
        events: s.events.clone(),
        ticket_auth: Arc::new(
            base.clone()
                .sources(base.sources_ref().with_order(ticket_sources)),
        ),
        leeway_secs: s.built.leeway.as_secs(),
        failures: s.admin_failures.clone(),
    };
    let shutting_down = s.stopping.clone();
    let cluster = s.cluster.clone();
    let prometheus = s.prometheus.clone();
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                // Draining, or cut off from the cluster: send new clients elsewhere.
                if shutting_down.is_cancelled() {
                    (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
                } else if cluster.as_ref().is_some_and(|c| !c.is_up()) {
                    (StatusCode::SERVICE_UNAVAILABLE, "cluster unavailable")
                } else {
                    (StatusCode::OK, "ready")
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                match &prometheus {
                    Some(p) => (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        p.render(),
                    ),
                    None => (
                        StatusCode::NOT_FOUND,
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        String::new(),
                    ),
                }
            }),
        )
        .merge(admin::router(admin))
        .merge(match (&s.ssf, &cfg.ssf) {
            (Some((ssf, _)), Some(c)) => crate::ssf::router(ssf.clone(), &c.push_path),
            _ => Router::new(),
        })
        .merge(crate::browser_client::router())
        .merge(crate::handshake_status::router(s.attempts.clone()));
    for (ep, checked) in cfg.endpoints.iter().zip(&s.endpoints) {
        let auth = match &ep.sources {
            Some(order) => base
                .clone()
                .sources(base.sources_ref().with_order(order.iter().copied())),
            None => base.clone(),
        };
        let auth = auth.require(checked.requirements.clone());
        let auth = match &s.events {
            Some(events) => auth.observe(events.observer(&ep.path)),
            None => auth,
        };
        let auth = match &s.telemetry {
            Some(telemetry) => auth.trace(telemetry.tracer(&ep.path)),
            None => auth,
        };
        // Demo tokens (minted for anyone, any name) are taken by the demo page's endpoint
        // only, and by none once demo mode is off (one minted before a restart still
        // carries its claim until it expires).
        let auth = if cfg.demo && ep.path == demo::DEMO_PATH {
            auth
        } else {
            auth.refuse_claim(demo::DEMO_CLAIM)
        };
        let auth = match ep.kind {
            // A relayed upstream message may be far larger than a client's own limit.
            crate::config::EndpointKind::Proxy => {
                let settings = wsgate::relay::Upstream::client_socket_settings(*auth.socket());
                auth.socket_settings(settings)
            }
            _ => auth,
        };
        let state = Endpoint {
            auth: Arc::new(auth),
            session: SessionOptions {
                welcome: ep.welcome,
                // `expiring` goes with the welcome; proxies decide by refresh_frames.
                expiry_warning: session
                    .expiry_warning
                    .filter(|_| ep.welcome || ep.kind == crate::config::EndpointKind::Proxy),
                ..session.clone()
            },
            tracker: s.tracker.clone(),
            broker: s.broker.clone(),
        };
        app = app.merge(endpoints::router(ep, checked.upstream.clone(), state));
    }
    app.fallback(|| async {
        ErrorBody::new(ErrorCode::NotFound, "no such path").with_status(StatusCode::NOT_FOUND)
    })
}
