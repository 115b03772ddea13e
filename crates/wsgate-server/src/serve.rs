//! The whole life of the process: open the store, build the verifiers and the routes
//! (`gateway`), listen, start the background tasks (cluster, Shared Signals polling, reload on
//! SIGHUP), serve until SIGTERM/SIGINT, then drain the sockets in batches with
//! `CloseReason::Shutdown` and wait for them (bounded).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use wsgate::Revocations;

use crate::auth::{self, SecretStore};
use crate::cluster;
use crate::config::{Checked, Config, Origin};
use crate::gateway::{Services, app, startup_checks};
use crate::keys;
use crate::listener::{HandshakeDeadline, LiveRouter, PerConnection};
use crate::notify;
use crate::reload;
use crate::shutdown;
use crate::store::Store;

/// How long shutdown waits for sockets to finish their close handshake.
const DRAIN: Duration = Duration::from_secs(10);
/// How long a cluster node waits for Redis at start before listening anyway (not ready).
const CLUSTER_FIRST_SYNC: Duration = Duration::from_secs(3);

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
pub async fn serve(
    cfg: Config,
    checked: Checked,
    origin: Origin,
    overrides: reload::Overrides,
) -> anyhow::Result<()> {
    startup_checks(&cfg, &origin)?;
    let store = Arc::new(Store::open(&cfg.storage.path)?);
    let built = auth::build(&cfg, &origin, SecretStore::Open(&store)).await?;
    let addr = listen_addr(&cfg.listen).await?;
    // The recorder first: what Services builds may take its counters' handles once.
    let prometheus = install_metrics()?;
    let mut services = Services::new(&cfg, checked, built, store)?;
    services.prometheus = Some(prometheus);
    let (reload_requests, reloads) = tokio::sync::mpsc::channel(4);
    services.reload = Some(reload_requests);
    if services.admin_key.is_none() {
        tracing::warn!(
            "{} is not set: the admin API (/api/disconnect) is disabled",
            cfg.admin.api_key_env
        );
    }
    if let (Some(cluster), Some(parts)) = (services.cluster.clone(), services.cluster_start.take())
    {
        let started = cluster::Parts {
            registry: services.registry.clone(),
            revocations: services.revocations.clone(),
            broker: parts.broker,
            store: services.store.clone(),
            leeway_secs: services.built.leeway.as_secs(),
        };
        cluster::start(cluster.clone(), parts.pushes, started, CLUSTER_FIRST_SYNC).await;
        if !cluster.is_up() {
            tracing::error!(target: "wsgate::cluster", "Redis unreachable at start: serving local clients only until it answers");
        }
    }
    if cfg.demo {
        tracing::warn!(
            "DEMO MODE: / serves a chat page and POST /api/demo/token hands out tokens to ANYONE; never enable demo in production"
        );
    }
    let app = LiveRouter::new(app(&cfg, &services)?);

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
    // SIGHUP's handler is in place before anyone is told the server listens: from then on a
    // SIGHUP reloads, never kills.
    let hangups = reload::hangups();
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
    let (registry, shutdown) = (services.registry.clone(), services.shutdown.clone());
    let events = services.events.clone();
    let telemetry = services.telemetry.clone();
    let reloader = Arc::new(reload::Reloader::new(
        origin,
        overrides,
        cfg,
        services,
        app.clone(),
    ));
    tokio::spawn(reload::run(
        reloader.clone(),
        hangups,
        reloads,
        stopping.clone(),
    ));
    notify::ready(&format!("listening on {local}"));
    axum::serve(listener, PerConnection::new(app))
        .with_graceful_shutdown(stopping.cancelled_owned())
        .await
        .context("server error")?;
    notify::stopping();

    // No new connections now; the open sockets are closed in batches, the rest at the end.
    shutdown::drain(&registry, &reloader.config().await.shutdown).await;
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!(
            open = tracker.len(),
            "sockets still open after {DRAIN:?}; exiting anyway"
        );
    }
    // The sockets' `closed` events are queued now: `node_stopped` after them, then a bounded
    // wait for the sinks to send what they hold.
    if let Some(events) = events {
        events.stop().await;
    }
    if let Some(telemetry) = telemetry {
        telemetry.stop().await;
    }
    tracing::info!("stopped");
    Ok(())
}
