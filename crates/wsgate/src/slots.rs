//! Connections per subject: `max_connections_per_user`, refused with 403 at the handshake,
//! before any upgrade.
//!
//! A [`Slot`] is taken when the credential is verified and given back when the last holder
//! of the identity (the session) goes away. With [`SharedCounts`] (the server's cluster
//! mode) the limit counts every process: the local count is checked first (cheap, and still
//! enforced when the shared store is down), then the shared one.
//!
//! Separate from the [`Registry`](crate::Registry)'s session table (its own small lock), so
//! an [`Identity`](crate::Identity), which holds its slot, depends on this module only.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::reject::AuthError;

/// Connection counts shared with other processes, so `max_connections_per_user` holds
/// across a cluster.
pub trait SharedCounts: Send + Sync + std::fmt::Debug + 'static {
    /// Takes one of `sub`'s slots if fewer than `max` are taken everywhere: `Ok(true)` taken,
    /// `Ok(false)` at the limit, `Err(())` the shared store is unreachable (the local limit
    /// alone then applies, and the store is expected to resync from [`Slots::counts`]).
    fn acquire<'a>(
        &'a self,
        sub: &'a str,
        max: usize,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ()>> + Send + 'a>>;
    /// Gives a slot taken by `acquire` back; must not block (called from `Drop`).
    fn release(&self, sub: &str);
}

/// The per-subject counts of one endpoint (or of several sharing a registry).
#[derive(Debug, Default)]
pub struct Slots {
    max_per_user: Option<usize>,
    shared: Option<Arc<dyn SharedCounts>>,
    per_sub: Mutex<HashMap<String, usize>>,
}

impl Slots {
    /// `max_per_user`: connections one subject may hold at once (`None`: no limit);
    /// `shared`: counted across processes too.
    pub fn new(max_per_user: Option<usize>, shared: Option<Arc<dyn SharedCounts>>) -> Self {
        Self {
            max_per_user,
            shared,
            per_sub: Mutex::default(),
        }
    }

    /// The limit.
    pub fn max_per_user(&self) -> Option<usize> {
        self.max_per_user
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // A panic while holding this lock leaves a plain map behind: still usable.
        self.per_sub.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a connection slot for `sub`, or refuses with 403.
    pub async fn admit(self: &Arc<Self>, sub: &str) -> Result<Slot, AuthError> {
        let mut slot = self.admit_local(sub)?;
        if let (Some(shared), Some(max)) = (&self.shared, self.max_per_user) {
            match shared.acquire(sub, max).await {
                Ok(false) => return Err(AuthError::TooManyConnections),
                // Counted there; or, unreachable, counted at the store's next resync (which
                // copies `counts()`): either way the slot is given back there too.
                Ok(true) | Err(()) => slot.shared = true,
            }
        }
        Ok(slot)
    }

    fn admit_local(self: &Arc<Self>, sub: &str) -> Result<Slot, AuthError> {
        let mut per_sub = self.lock();
        let count = per_sub.get(sub).copied().unwrap_or_default();
        if self.max_per_user.is_some_and(|max| count >= max) {
            return Err(AuthError::TooManyConnections);
        }
        match per_sub.get_mut(sub) {
            Some(n) => *n += 1,
            None => {
                per_sub.insert(sub.to_owned(), 1);
            }
        }
        Ok(Slot {
            slots: Arc::clone(self),
            sub: sub.to_owned(),
            shared: false,
        })
    }

    /// The subjects with open slots here and how many each holds (to resync shared counts).
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.lock().iter().map(|(s, n)| (s.clone(), *n)).collect()
    }

    /// Connections `sub` holds (slots taken, including handshakes not yet upgraded).
    pub fn count(&self, sub: &str) -> usize {
        self.lock().get(sub).copied().unwrap_or_default()
    }
}

/// One of a subject's connection slots; given back on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    sub: String,
    /// Also counted in the [`SharedCounts`].
    shared: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let (true, Some(shared)) = (self.shared, &self.slots.shared) {
            shared.release(&self.sub);
        }
        let mut per_sub = self.slots.lock();
        if let Some(n) = per_sub.get_mut(&self.sub) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_sub.remove(&self.sub);
            }
        }
    }
}
