//! Shutdown: SIGTERM or SIGINT cancels the `stopping` token — the listener stops accepting and
//! `/readyz` answers 503 — then the open sockets are drained: `[shutdown] drain_batch` of them
//! closed with `CloseReason::Shutdown` per `drain_interval_ms`, so a deploy does not
//! send every client back to the load balancer in the same second, and whatever is still open
//! at `timeout_secs` closes at once. `serve` then waits (bounded) for the socket tasks to
//! finish; axum's own graceful shutdown does not wait for upgraded sockets, hence the tracker.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wsgate::{CloseReason, Registry};

use crate::config::ShutdownConfig;

/// Closes the registry's sessions `drain_batch` at a time, one batch per interval, until none
/// is left or `timeout_secs` has passed (the caller then closes the rest at once).
pub async fn drain(registry: &Registry, cfg: &ShutdownConfig) {
    let batch = usize::try_from(cfg.drain_batch)
        .unwrap_or(usize::MAX)
        .max(1);
    let interval = Duration::from_millis(cfg.drain_interval_ms.max(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(cfg.timeout_secs);
    let open = registry.len();
    if open > 0 {
        tracing::info!(
            open,
            batch,
            interval_ms = cfg.drain_interval_ms,
            "draining sockets"
        );
    }
    loop {
        registry.close_some(batch, CloseReason::Shutdown);
        if registry.is_empty() || tokio::time::Instant::now() + interval > deadline {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Cancels `token` on the first SIGTERM or SIGINT.
pub async fn on_signal(token: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM: shutting down"),
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => tracing::info!("SIGINT: shutting down"),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGINT");
                std::future::pending::<()>().await;
            }
        },
    }
    token.cancel();
}
