//! Reload: the config file read again while the server runs, without dropping a socket.
//!
//! SIGHUP, `POST /api/reload` (admin key) and `wsgate reload` (which calls it) all end in
//! [`Reloader::reload`], one at a time. The file is loaded and checked exactly as
//! `check-config` and `serve` do; if anything is refused, the running config stays and the
//! log says why, once. If it is accepted:
//! - the verifiers (secrets, key files, identity providers) are replaced in the live chain
//!   every authenticator and every open session shares, so the next handshake, the next
//!   `refresh` of a socket already open and the next re-check use them;
//! - the routes are rebuilt (endpoints added or removed, `require`, sources, limits) and
//!   answer every request from then on; open sockets keep their identity and deadline;
//! - what only a restart can change (the listen address, the store, the cluster, the Shared
//!   Signals receiver, the connection events' destinations, the admin key's variable, the ticket lifetime, the per-user cap, the
//!   handshake deadline, what a failed re-check does, the demo page) keeps its running value,
//!   and the log names each such key.
//!
//! `wsgate_config_generation` says which config is live (1 at start, +1 per accepted reload).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::admin::ReloadAnswer;
use crate::auth::{self, SecretStore};
use crate::config::{Config, Origin};
use crate::gateway::{self, Services};
use crate::listener::LiveRouter;
use crate::notify;

/// What the command line set over the file (`serve --listen`, `--demo`): kept across reloads.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub demo: bool,
}

impl Overrides {
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(listen) = &self.listen {
            cfg.listen = listen.clone();
        }
        cfg.demo |= self.demo;
    }
}

/// The running config and the services built from it.
struct Live {
    cfg: Config,
    services: Services,
}

pub struct Reloader {
    origin: Origin,
    overrides: Overrides,
    live: Mutex<Live>,
    router: LiveRouter,
    generation: AtomicU64,
}

impl Reloader {
    /// The server as started: generation 1.
    pub fn new(
        origin: Origin,
        overrides: Overrides,
        cfg: Config,
        services: Services,
        router: LiveRouter,
    ) -> Self {
        metrics::gauge!("wsgate_config_generation").set(1.0);
        Self {
            origin,
            overrides,
            live: Mutex::new(Live { cfg, services }),
            router,
            generation: AtomicU64::new(1),
        }
    }

    /// The config live now.
    pub async fn config(&self) -> Config {
        self.live.lock().await.cfg.clone()
    }

    /// Reads and checks the config again and, if it is accepted, puts it live; returns the new
    /// generation, or why it was refused (the running config then stays).
    pub async fn reload(&self) -> Result<u64, String> {
        let mut live = self.live.lock().await;
        notify::reloading();
        let outcome = match self.build(&live).await {
            Ok(next) => Ok(self.put_live(&mut live, next)),
            Err(why) => {
                metrics::counter!("wsgate_config_reloads_total", "result" => "refused")
                    .increment(1);
                tracing::error!(target: "wsgate::reload", config = %self.origin, "reload refused, the running config stays: {why}");
                Err(why)
            }
        };
        let generation = self.generation.load(Ordering::SeqCst);
        notify::ready(&match &outcome {
            Ok(_) => format!("config generation {generation} live"),
            Err(_) => format!("config generation {generation} live; the last reload was refused"),
        });
        outcome
    }

    /// Swaps a checked and built config in: the verifiers every authenticator and open session
    /// share, then the routes. Nothing here can fail.
    fn put_live(&self, live: &mut Live, next: Next) -> u64 {
        let Next {
            cfg,
            services,
            routes,
            kept,
        } = next;
        if !kept.is_empty() {
            tracing::warn!(target: "wsgate::reload", keys = %kept.join(", "), "these keys changed but need a restart; their running values stay");
        }
        services.put_verifiers_live();
        self.router.replace(routes);
        *live = Live { cfg, services };
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!("wsgate_config_generation").set(generation as f64);
        metrics::counter!("wsgate_config_reloads_total", "result" => "ok").increment(1);
        tracing::info!(target: "wsgate::reload", config = %self.origin, generation, verifiers = ?live.services.built.summary, endpoints = live.cfg.endpoints.len(), "config reloaded");
        generation
    }

    /// The new config, its services and routes, built beside the running ones (nothing live
    /// is touched), and the restart-only keys that kept their old value.
    async fn build(&self, live: &Live) -> Result<Next, String> {
        let origin = &self.origin;
        let mut cfg = match origin {
            Origin::File(path) => Config::load(Some(path)).map_err(|e| e.to_string())?.0,
            Origin::Defaults => Config::default(),
        };
        self.overrides.apply(&mut cfg);
        let kept = keep_restart_only(&live.cfg, &mut cfg);
        let checked = cfg.check(origin).map_err(|e| e.to_string())?;
        gateway::startup_checks(&cfg, origin).map_err(|e| format!("{e:#}"))?;
        let built = auth::build(&cfg, origin, SecretStore::Open(&live.services.store))
            .await
            .map_err(|e| format!("{e:#}"))?;
        let services = live.services.reloaded(&cfg, checked, built);
        let routes = gateway::app(&cfg, &services).map_err(|e| format!("{origin}: {e:#}"))?;
        Ok(Next {
            cfg,
            services,
            routes,
            kept,
        })
    }
}

/// A config checked and built, ready to be put live.
struct Next {
    cfg: Config,
    services: Services,
    routes: axum::Router,
    kept: Vec<&'static str>,
}

/// Puts the running value back into every key only a restart can change, and names those
/// that differed.
fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($key:literal => $($field:ident).+),* $(,)?) => {$(
            if running.$($field).+ != new.$($field).+ {
                new.$($field).+ = running.$($field).+.clone();
                kept.push($key);
            }
        )*};
    }
    keep! {
        "listen" => listen,
        "demo" => demo,
        "storage" => storage,
        "cluster" => cluster,
        "ssf" => ssf,
        "events" => events,
        "telemetry" => telemetry,
        "admin" => admin,
        "tickets" => tickets,
        "limits.max_connections_per_user" => limits.max_connections_per_user,
        "limits.handshake_timeout_ms" => limits.handshake_timeout_ms,
        "auth.revalidate_on_error" => auth.revalidate_on_error,
    }
    kept
}

/// The SIGHUP stream, set up before the server says it listens (until then SIGHUP's default
/// action, ending the process, applies); `None`, with a warning, where it cannot be.
pub fn hangups() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(target: "wsgate::reload", error = %e, "cannot listen for SIGHUP; reload with `wsgate reload` or POST /api/reload");
            None
        }
    }
}

/// Reloads on every SIGHUP and every request, one at a time, until the server stops.
pub async fn run(
    reloader: Arc<Reloader>,
    mut hangups: Option<Signal>,
    mut requests: mpsc::Receiver<ReloadAnswer>,
    stopping: CancellationToken,
) {
    loop {
        let answer = tokio::select! {
            _ = stopping.cancelled() => return,
            Some(()) = async { hangups.as_mut()?.recv().await } => {
                tracing::info!(target: "wsgate::reload", "SIGHUP: reloading the config");
                None
            }
            request = requests.recv() => match request {
                Some(answer) => Some(answer),
                None => return,
            },
        };
        let result = reloader.reload().await;
        if let Some(answer) = answer {
            // The caller may have given up waiting; the reload stands either way.
            let _ = answer.send(result);
        }
    }
}
