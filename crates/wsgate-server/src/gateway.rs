//! The running server: the config turned into routes, a listener and a shutdown path.
//!
//! `serve` is the whole life of the process: open the store, build the verifiers, mount one
//! router per endpoint next to `/healthz` and `/readyz`, serve until a signal, then close
//! every socket with 1001 and wait for them (bounded).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use axum::serve::ListenerExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wsgate::{Authenticator, FailureLimiter, SessionOptions, SocketSettings, Sources};

use crate::auth::{self, BuiltAuth, SecretStore};
use crate::config::{Config, Origin};
use crate::endpoints::{self, Endpoint};
use crate::shutdown;
use crate::store::Store;

/// How long shutdown waits for sockets to finish their close handshake.
const DRAIN: Duration = Duration::from_secs(10);

/// The authentication policy shared by every endpoint, before per-endpoint overrides.
pub fn base_authenticator(cfg: &Config, built: &BuiltAuth) -> Authenticator {
    let a = &cfg.auth;
    let sources = Sources::new(a.sources.iter().copied())
        .query_param(&a.query_param)
        .cookie_name(&a.cookie_name)
        .allowed_origins(a.allowed_origins.iter().cloned());
    Authenticator::new(built.chain.clone())
        .sources(sources)
        .reject(a.reject)
        .message_timeout(Duration::from_millis(a.message_timeout_ms))
        .leeway(built.leeway)
        .socket_settings(SocketSettings {
            max_message_bytes: cfg.limits.max_message_bytes,
            ..SocketSettings::default()
        })
        .failure_limiter(Arc::new(FailureLimiter::new(
            cfg.limits.auth_failures_per_min,
        )))
}

/// Every route of the server.
pub fn router(
    cfg: &Config,
    built: &BuiltAuth,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Router {
    let base = base_authenticator(cfg, built);
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }));
    for ep in &cfg.endpoints {
        let auth = match &ep.sources {
            Some(order) => base
                .clone()
                .sources(base.sources_ref().with_order(order.iter().copied())),
            None => base.clone(),
        };
        let state = Endpoint {
            auth: Arc::new(auth),
            session: SessionOptions {
                welcome: ep.welcome,
                shutdown: shutdown.clone(),
            },
            tracker: tracker.clone(),
        };
        app = app.merge(endpoints::router(ep, state));
    }
    app.fallback(|| async {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "message": "no such path"})),
        )
    })
}

/// Runs the server until SIGTERM/SIGINT; returns after every socket is closed.
pub async fn serve(cfg: Config, origin: Origin) -> anyhow::Result<()> {
    let store = Store::open(&cfg.storage.path)?;
    let built = auth::build(&cfg, &origin, SecretStore::Open(&store)).await?;
    let addr: SocketAddr = cfg.listen.parse().context("listen address")?;
    if cfg.demo {
        tracing::warn!("demo = true: the demo page is not available in this version of wsgate yet");
    }

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let app = router(&cfg, &built, &shutdown, &tracker);

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    // Small frames (welcome, pings, chat messages) must not wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    tracing::info!(config = %origin, verifiers = ?built.summary, "wsgate listening on {local}");
    for ep in &cfg.endpoints {
        tracing::info!(path = %ep.path, kind = ep.kind.as_str(), "endpoint");
    }

    tokio::spawn(shutdown::on_signal(shutdown.clone()));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .await
    .context("server error")?;

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
