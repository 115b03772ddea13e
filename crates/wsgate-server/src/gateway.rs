//! The running server: the config turned into routes, a listener and a shutdown path.
//!
//! `serve` is the whole life of the process: open the store, build the verifiers, mount one
//! router per endpoint next to `/healthz` and `/readyz`, serve until a signal, then close
//! every socket with `CloseReason::Shutdown` and wait for them (bounded).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::http::header;
use axum::routing::get;
use axum::serve::ListenerExt;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wsgate::protocol::{ErrorBody, ErrorCode};
use wsgate::{
    Authenticator, FailureLimiter, Registry, Revalidator, Revocations, SessionOptions,
    SocketSettings, SourceKind, Sources, TicketStore, TicketVerifier, Tickets, TrustedProxies,
};

use crate::admin::{self, Admin};
use crate::auth::{self, BuiltAuth, SecretStore};
use crate::broker::{Broker, MemoryBroker};
use crate::cluster::broker::ClusterBroker;
use crate::cluster::counts::RedisCounts;
use crate::cluster::tickets::RedisTickets;
use crate::cluster::{self, Cluster};
use crate::config::{Checked, CheckedEndpoint, Config, Origin};
use crate::demo;
use crate::endpoints::{self, Endpoint};
use crate::keys::{self, ApiKeyVerifier};
use crate::listener::{HandshakeDeadline, PerConnection};
use crate::shutdown;
use crate::ssf::Ssf;
use crate::store::Store;
use wsgate::attempts::Attempts;

/// How long shutdown waits for sockets to finish their close handshake.
const DRAIN: Duration = Duration::from_secs(10);
/// How long a cluster node waits for Redis at start before listening anyway (not ready).
const CLUSTER_FIRST_SYNC: Duration = Duration::from_secs(3);

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
    /// Cluster mode: the shared Redis, and what `cluster::start` needs to run it.
    pub cluster: Option<ClusterParts>,
    /// `[ssf]`: the Shared Signals receiver, and its poll token.
    pub ssf: Option<(Arc<Ssf>, Option<String>)>,
}

pub struct ClusterParts {
    pub cluster: Arc<Cluster>,
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
        let failures = (cfg.limits.auth_failures_per_min > 0)
            .then(|| Arc::new(FailureLimiter::new(cfg.limits.auth_failures_per_min)));
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
            cluster_parts = Some(ClusterParts {
                cluster,
                broker: cluster_broker,
                pushes,
            });
        }
        let registry = Arc::new(registry);
        let shutdown = CancellationToken::new();
        let revalidator = Revalidator::new(built.chain.clone(), registry.clone())
            .on_error(cfg.auth.revalidate_on_error)
            .shutdown_on(shutdown.clone());
        let ssf_tokens = match &cfg.ssf {
            Some(c) => Some(c.tokens(&Origin::Defaults)?),
            None => None,
        };
        let ssf = ssf.zip(ssf_tokens).map(|(checked, tokens)| {
            let ssf = Ssf::new(
                checked.verifier,
                tokens.push,
                registry.clone(),
                revocations.clone(),
                store.clone(),
                cluster_parts.as_ref().map(|c| c.cluster.clone()),
                provider_issuers(cfg),
            );
            (Arc::new(ssf), tokens.poll)
        });
        Ok(Self {
            ssf,
            broker,
            cluster: cluster_parts,
            built,
            store: store.clone(),
            registry,
            revalidator: Arc::new(revalidator),
            revocations,
            tickets,
            admin_key,
            failures,
            trusted_proxies,
            endpoints,
            attempts: Arc::new(Attempts::new()),
            stopping: CancellationToken::new(),
            shutdown,
            tracker: TaskTracker::new(),
            prometheus: None,
            api_keys: Arc::new(ApiKeyVerifier::new(store.clone())?),
        })
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
    Ok(())
}

/// The address to listen on; host names (`localhost:9000`) are resolved.
async fn listen_addr(listen: &str) -> anyhow::Result<SocketAddr> {
    match listen.parse() {
        Ok(addr) => Ok(addr),
        Err(_) => tokio::net::lookup_host(listen)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| anyhow::anyhow!("listen: cannot resolve `{listen}`")),
    }
}

/// The authentication policy shared by every endpoint, before per-endpoint overrides.
pub fn base_authenticator(cfg: &Config, s: &Services) -> Authenticator {
    let a = &cfg.auth;
    let sources = Sources::new(a.sources.iter().copied())
        .query_param(&a.query_param)
        .cookie_name(&a.cookie_name)
        .allowed_origins(a.allowed_origins.iter().cloned());
    let mut chain = s.built.chain.clone();
    // API keys before the rest: a backend proxy verifier would otherwise claim `wsk_` tokens.
    chain.prepend(s.api_keys.clone());
    chain.push(Arc::new(TicketVerifier(s.tickets.clone())));
    let auth = Authenticator::new(chain)
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

/// Every route of the server.
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
        cluster: s.cluster.as_ref().map(|c| c.cluster.clone()),
        ticket_auth: Arc::new(
            base.clone()
                .sources(base.sources_ref().with_order(ticket_sources)),
        ),
        leeway_secs: s.built.leeway.as_secs(),
        failures: (cfg.limits.auth_failures_per_min > 0)
            .then(|| Arc::new(FailureLimiter::new(cfg.limits.auth_failures_per_min))),
    };
    let shutting_down = s.stopping.clone();
    let cluster = s.cluster.as_ref().map(|c| c.cluster.clone());
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

/// Installs the process-wide Prometheus recorder, and a task that keeps its histograms
/// compact.
fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(wsgate::metrics::VERIFY_SECONDS.into()),
            &[
                1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.025, 0.1, 0.5, 2.0,
            ],
        )
        .context("metrics buckets")?
        .set_buckets_for_metric(
            Matcher::Full(wsgate::metrics::REVOCATION_TO_CLOSE.into()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )
        .context("metrics buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    wsgate::metrics::register();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Drops revocations whose tokens have expired anyway, once a minute, so the table holds
/// only what can still be presented.
async fn prune_revocations(revocations: Arc<Revocations>) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        let dropped = revocations.prune();
        if dropped > 0 {
            tracing::debug!(dropped, "expired revocations dropped");
        }
    }
}

/// Runs the server until SIGTERM/SIGINT; returns after every socket is closed.
/// `checked` is what `cfg.check` built: the server uses those values, not new ones.
pub async fn serve(cfg: Config, checked: Checked, origin: Origin) -> anyhow::Result<()> {
    startup_checks(&cfg, &origin)?;
    let store = Arc::new(Store::open(&cfg.storage.path)?);
    let built = auth::build(&cfg, &origin, SecretStore::Open(&store)).await?;
    let addr = listen_addr(&cfg.listen).await?;
    let mut services = Services::new(&cfg, checked, built, store)?;
    services.prometheus = Some(install_metrics()?);
    if services.admin_key.is_none() {
        tracing::warn!(
            "{} is not set: the admin API (/api/disconnect) is disabled",
            cfg.admin.api_key_env
        );
    }
    let mut app = router(&cfg, &services);
    if let Some(parts) = services.cluster.take() {
        let started = cluster::Parts {
            registry: services.registry.clone(),
            revocations: services.revocations.clone(),
            broker: parts.broker,
            store: services.store.clone(),
            leeway_secs: services.built.leeway.as_secs(),
        };
        cluster::start(
            parts.cluster.clone(),
            parts.pushes,
            started,
            CLUSTER_FIRST_SYNC,
        )
        .await;
        if !parts.cluster.is_up() {
            tracing::error!(target: "wsgate::cluster", "Redis unreachable at start: serving local clients only until it answers");
        }
    }
    if cfg.demo {
        let Some(minting) = services.built.minting.clone() else {
            anyhow::bail!("{origin}: demo: no HMAC secret to mint demo tokens with");
        };
        tracing::warn!(
            "DEMO MODE: / serves a chat page and POST /api/demo/token hands out tokens to ANYONE; never enable demo in production"
        );
        app = demo::router(minting).merge(app);
    }

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let handshake_timeout = Duration::from_millis(cfg.limits.handshake_timeout_ms);
    // Small frames (welcome, pings, chat messages) must not wait for Nagle's algorithm.
    let listener = HandshakeDeadline::new(listener, handshake_timeout)
        .with_context(|| format!("cannot listen on {addr}"))?
        .tap_io(|io| {
            if let Err(e) = io.stream().set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
    tracing::info!(config = %origin, verifiers = ?services.built.summary, revocations = services.revocations.len(), "wsgate listening on {local}");
    for ep in &cfg.endpoints {
        tracing::info!(path = %ep.path, kind = ep.kind.as_str(), "endpoint ws://{local}{}", ep.path);
    }
    if cfg.demo {
        tracing::info!("demo page: http://{local}/");
    }
    if services.built.minting.is_some() {
        tracing::info!(
            "next: TOKEN=$(wsgate token --sub alice{}) and connect with `Authorization: Bearer $TOKEN` (or ?token=$TOKEN)",
            match &origin {
                Origin::File(p) => format!(" --config {}", p.display()),
                Origin::Defaults => String::new(),
            }
        );
    }

    let (stopping, tracker) = (services.stopping.clone(), services.tracker.clone());
    tokio::spawn(keys::sweep_revoked(
        services.store.clone(),
        services.registry.clone(),
    ));
    tokio::spawn(shutdown::on_signal(stopping.clone()));
    tokio::spawn(prune_revocations(services.revocations.clone()));
    if let (Some((ssf, token)), Some(c)) = (&services.ssf, &cfg.ssf) {
        tracing::info!(target: "wsgate::ssf", issuer = %c.issuer, push = %c.push_path, poll = c.poll_url.is_some(), "Shared Signals receiver on");
        if let Some(url) = &c.poll_url {
            tokio::spawn(crate::ssf::poll(
                ssf.clone(),
                url.clone(),
                token.clone(),
                Duration::from_secs(c.poll_interval_secs),
                services.shutdown.clone(),
            ));
        }
    }
    axum::serve(listener, PerConnection::new(app))
        .with_graceful_shutdown(stopping.cancelled_owned())
        .await
        .context("server error")?;

    // No new connections now; the open sockets are closed in batches, the rest at the end.
    shutdown::drain(&services.registry, &cfg.shutdown).await;
    services.shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!(
            open = tracker.len(),
            "sockets still open after {DRAIN:?}; exiting anyway"
        );
    }
    tracing::info!("stopped");
    Ok(())
}
