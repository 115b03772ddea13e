//! Continuous authorization: live sessions are checked again with whoever vouched for their
//! credential, so a socket stays open only while the identity provider still stands behind
//! it — not merely until `exp`.
//!
//! Only credentials an issuer can take back are re-checked: an introspected opaque token
//! (`revalidate_secs` on its provider) and a backend's session (`proxy_revalidate_secs`). The
//! verifier marks them ([`Verified::recheck_every`]); the authenticator then keeps the
//! credential in the session's memory ([`Kept`]: never logged or stored, zeroed when the last
//! session holding it ends) and the session watches it here.
//!
//! Not a thundering herd: the table is keyed by the credential's SHA-256, so sessions sharing
//! a token share one call; each token has its own due time, its period ±10% from when it was
//! first seen (connections spread, so do the checks); at most [`Revalidator::CONCURRENCY`]
//! calls are in flight; one task serves the whole process. An answer:
//! - still valid → sessions holding it take the new identity as on `refresh` (a new
//!   deadline, fewer channels), only when something changed;
//! - refused (inactive, 401/403) → closed `Revoked` on both sides of a proxy, measured as a
//!   `revalidate` revocation;
//! - no answer → kept and tried next period (`OnError::Keep`), or closed `TryAgainLater`.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::identity::{Identity, Kept, Verified};
use crate::protocol::CloseReason;
use crate::registry::{Cause, CloseOrder, Registry, Target};
use crate::reject::AuthError;
use crate::trace::Traced;
use crate::verify::{LiveChain, VerifyContext};

/// What to do with sessions whose issuer could not be asked (no answer, a 5xx).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Keep them, and ask again next period (logged and counted).
    #[default]
    Keep,
    /// Close them with `TryAgainLater`.
    Close,
}

/// Re-checks the credentials of live sessions, one call per distinct credential per period.
pub struct Revalidator {
    chain: LiveChain,
    registry: Arc<Registry>,
    on_error: OnError,
    shutdown: CancellationToken,
    table: Mutex<Table>,
    /// Rings when a credential is first watched (it may be due before the task's next wake).
    wake: Notify,
    /// The checking task is started by the first watch (a runtime is certain to exist then).
    started: AtomicBool,
}

#[derive(Default)]
struct Table {
    tokens: HashMap<[u8; 32], Tracked>,
    /// When each tracked credential is next checked; absent while a check is in flight or
    /// after a refusal (its sessions are closing).
    due: BTreeSet<(Instant, [u8; 32])>,
}

struct Tracked {
    kept: Arc<Kept>,
    /// A session holding it (named to a backend's re-check) and its client's address.
    session: String,
    remote: Option<IpAddr>,
    /// That session's trace: each check is a span in it (`wsgate.revalidate`).
    trace: Option<Arc<Traced>>,
    every: Duration,
    /// Sessions holding it now.
    watchers: usize,
    /// What the last answer said, to hand sessions an update only when it changed.
    last: Verified,
}

/// A session's watch over its credential; dropping it (the session ended, or a refresh
/// replaced the credential) stops the checks once no session holds the credential.
pub struct Watch {
    revalidator: Arc<Revalidator>,
    digest: [u8; 32],
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.revalidator.unwatch(&self.digest);
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

impl std::fmt::Debug for Revalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revalidator")
            .field("tracked", &self.tracked())
            .field("on_error", &self.on_error)
            .finish()
    }
}

impl Revalidator {
    /// Calls to identity providers (or the backend) in flight at once, at most.
    pub const CONCURRENCY: usize = 32;

    /// Re-checks with `chain` (the verifiers that accepted the credentials) and closes
    /// through `registry` (the one the sessions register with).
    pub fn new(chain: impl Into<LiveChain>, registry: Arc<Registry>) -> Self {
        Self {
            chain: chain.into(),
            registry,
            on_error: OnError::default(),
            shutdown: CancellationToken::new(),
            table: Mutex::default(),
            wake: Notify::new(),
            started: AtomicBool::new(false),
        }
    }

    /// What to do when the issuer cannot be asked.
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Stops checking when `token` is cancelled (the server's shutdown).
    pub fn shutdown_on(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Distinct credentials being re-checked now.
    pub fn tracked(&self) -> usize {
        self.lock().tokens.len()
    }

    /// Watches the credential `identity` kept, if it is one to re-check.
    pub fn watch(self: &Arc<Self>, identity: &Identity) -> Option<Watch> {
        let kept = identity.kept()?;
        let every = identity.verified().recheck_every?;
        let digest = kept.digest;
        let mut table = self.lock();
        match table.tokens.get_mut(&digest) {
            Some(t) => t.watchers += 1,
            None => {
                table.tokens.insert(
                    digest,
                    Tracked {
                        kept: kept.clone(),
                        session: identity.session().to_owned(),
                        remote: identity.remote_ip(),
                        trace: identity.trace().cloned(),
                        every,
                        watchers: 1,
                        last: identity.verified().clone(),
                    },
                );
                table.due.insert((Instant::now() + jittered(every), digest));
                self.wake.notify_one();
            }
        }
        drop(table);
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(Arc::clone(self).run());
        }
        Some(Watch {
            revalidator: Arc::clone(self),
            digest,
        })
    }

    fn unwatch(&self, digest: &[u8; 32]) {
        let mut table = self.lock();
        let Some(t) = table.tokens.get_mut(digest) else {
            return;
        };
        t.watchers -= 1;
        if t.watchers == 0 {
            // The kept credential is zeroed when its last holder (a session, this entry) goes.
            let gone = table.tokens.remove(digest);
            table.due.retain(|(_, d)| d != digest);
            drop(table);
            drop(gone);
        }
    }

    /// The one task: sleeps until the next credential is due, then checks every due one,
    /// at most [`Self::CONCURRENCY`] at a time.
    async fn run(self: Arc<Self>) {
        let permits = Arc::new(Semaphore::new(Self::CONCURRENCY));
        loop {
            let next = self.lock().due.first().map(|(at, _)| *at);
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.wake.notified() => continue,
                _ = sleep => {}
            }
            for digest in self.take_due(Instant::now()) {
                let permit = tokio::select! {
                    p = Arc::clone(&permits).acquire_owned() => p,
                    _ = self.shutdown.cancelled() => return,
                };
                let Ok(permit) = permit else { return };
                let me = Arc::clone(&self);
                tokio::spawn(async move {
                    me.check(digest).await;
                    drop(permit);
                });
            }
        }
    }

    fn take_due(&self, now: Instant) -> Vec<[u8; 32]> {
        let mut table = self.lock();
        let mut due = Vec::new();
        while let Some(&(at, digest)) = table.due.first() {
            if at > now {
                break;
            }
            table.due.pop_first();
            due.push(digest);
        }
        due
    }

    /// Asks again for one credential and acts on the answer.
    async fn check(&self, digest: [u8; 32]) {
        let (kept, ctx, trace) = {
            let table = self.lock();
            let Some(t) = table.tokens.get(&digest) else {
                return;
            };
            let ctx = VerifyContext {
                remote_addr: t.remote.map(|ip| SocketAddr::new(ip, 0)),
                origin: t.kept.origin.clone(),
                recheck: Some(t.session.clone()),
                trace: None,
            };
            (t.kept.clone(), ctx, t.trace.clone())
        };
        let started = trace.as_ref().map(|_| SystemTime::now());
        let chain = self.chain.current();
        let answer = chain.verify(&kept.credential, &ctx).await;
        drop(kept);
        if let (Some(trace), Some(started)) = (trace, started) {
            let (outcome, error) = match &answer {
                Ok(_) => ("valid", None),
                Err(AuthError::Unavailable(_)) => ("unavailable", Some("unavailable")),
                Err(e) => ("refused", Some(e.code().as_str())),
            };
            let mut attributes = vec![("wsgate.outcome", outcome.into())];
            if let Some(session) = &ctx.recheck {
                attributes.push(("wsgate.session", session.as_str().into()));
            }
            trace.span("wsgate.revalidate", started, attributes, error);
        }
        match answer {
            Ok((verified, _)) => {
                crate::metrics::revalidated("valid");
                if self.changed(&digest, &verified) {
                    self.registry.revalidated(digest, &verified);
                }
                self.reschedule(digest);
            }
            Err(AuthError::Unavailable(why)) => {
                crate::metrics::revalidated("unavailable");
                let closing = self.on_error == OnError::Close;
                tracing::warn!(target: "wsgate::revalidate", detail = why, closing, "the issuer could not re-check a live session's credential");
                if closing {
                    let closed = self
                        .registry
                        .close(&Target::Token(digest), CloseReason::TryAgainLater);
                    log_closed(&closed, "not re-checked");
                } else {
                    self.reschedule(digest);
                }
            }
            Err(e) => {
                crate::metrics::revalidated("invalid");
                let order = CloseOrder::revoked(CloseReason::Revoked, Cause::Revalidate);
                let closed = self.registry.close(&Target::Token(digest), order);
                tracing::info!(target: "wsgate::revalidate", reason = e.code().as_str(), detail = %e, "a re-check refused a live session's credential");
                log_closed(&closed, "refused by its issuer");
            }
        }
    }

    /// Records the answer; whether sessions must hear of it (deadline or permissions moved).
    fn changed(&self, digest: &[u8; 32], now: &Verified) -> bool {
        let mut table = self.lock();
        let Some(t) = table.tokens.get_mut(digest) else {
            return false;
        };
        let last = &t.last;
        let changed = last.expires_at != now.expires_at
            || last.channels != now.channels
            || last.publish != now.publish
            || last.scopes != now.scopes
            || last.sub != now.sub;
        if changed {
            t.last = now.clone();
        }
        changed
    }

    fn reschedule(&self, digest: [u8; 32]) {
        let mut table = self.lock();
        if let Some(t) = table.tokens.get(&digest) {
            let at = Instant::now() + jittered(t.every);
            table.due.insert((at, digest));
            drop(table);
            // The task may be asleep with nothing due (this check was in flight): it must
            // learn of the new due time, or a lone credential would be checked only once.
            self.wake.notify_one();
        }
    }
}

fn log_closed(closed: &[Identity], why: &'static str) {
    for id in closed {
        tracing::info!(target: "wsgate::revalidate", sub = id.sub(), session = id.session(), "closing a session: its credential was {why}");
    }
}

/// `every` ±10%, so sessions that connected together do not stay in step for ever.
fn jittered(every: Duration) -> Duration {
    let mut r = [0u8; 2];
    let spread = match aws_lc_rs::rand::fill(&mut r) {
        Ok(()) => f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    };
    every.mul_f64(0.9 + 0.2 * spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_jittered_within_ten_percent() {
        let every = Duration::from_secs(60);
        let seen: Vec<Duration> = (0..200).map(|_| jittered(every)).collect();
        assert!(
            seen.iter()
                .all(|d| *d >= Duration::from_secs(54) && *d <= Duration::from_secs(66))
        );
        assert!(seen.iter().any(|d| *d != seen[0]), "not all in step");
    }
}
