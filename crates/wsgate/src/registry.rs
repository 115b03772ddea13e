//! Live sessions, so that something other than a socket's own task can end it.
//!
//! An admin disconnect, a revoked API key or a revoked token must close sockets that are
//! already open: each [`Session`](crate::Session) registers here with a one-shot close
//! channel, and [`Registry::close`] fires the channels of the matching sessions with a
//! [`CloseReason`]. The registry also holds the endpoint's [`Slots`] (connections per
//! subject, `max_connections_per_user`), taken at the handshake, before any upgrade.
//!
//! One mutex around two maps: the registry is touched once per connect, once per
//! disconnect, once per refresh and by admin calls, never per message. Sessions are indexed
//! by subject, so closing a subject's sockets and a refresh cost the same at 19,000 open
//! sockets as at 10 (only orders by session id or API key scan). Identities are dropped
//! outside the lock: dropping the last one gives its slot back (another lock, and maybe a
//! shared store's release).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::identity::Identity;
use crate::protocol::CloseReason;
use crate::reject::AuthError;
use crate::slots::{SharedCounts, Slot, Slots};

/// Which sessions an order applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every session of a subject.
    Sub(String),
    /// One session, by id.
    Session(String),
    /// Sessions opened with this credential id (an API key's id).
    Credential(String),
}

/// Live sessions: who is connected, per-subject slots, and close orders from outside.
#[derive(Debug, Default)]
pub struct Registry {
    slots: Arc<Slots>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Keyed by a counter, not the session id: no string copies on the connect path.
    sessions: HashMap<u64, Entry>,
    /// The keys of each subject's open sessions.
    by_sub: HashMap<String, Vec<u64>>,
    next: u64,
}

impl Inner {
    /// Removes a session and its index entry.
    fn remove(&mut self, key: u64) -> Option<Entry> {
        let entry = self.sessions.remove(&key)?;
        if let Some(keys) = self.by_sub.get_mut(entry.identity.sub()) {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.by_sub.remove(entry.identity.sub());
            }
        }
        Some(entry)
    }
}

#[derive(Debug)]
struct Entry {
    identity: Identity,
    close: oneshot::Sender<CloseReason>,
}

impl Registry {
    /// `max_per_user`: connections one subject may hold at once (`None`: no limit).
    pub fn new(max_per_user: Option<usize>) -> Self {
        Self {
            slots: Arc::new(Slots::new(max_per_user, None)),
            inner: Mutex::default(),
        }
    }

    /// Counts connections per subject in `shared` too (cluster mode).
    pub fn with_shared_counts(mut self, shared: Arc<dyn SharedCounts>) -> Self {
        // Builder stage: no slot has been handed out yet, so none points at the old counts.
        self.slots = Arc::new(Slots::new(self.slots.max_per_user(), Some(shared)));
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain maps behind: still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a connection slot for `sub`, or refuses with 403.
    pub async fn admit(&self, sub: &str) -> Result<Slot, AuthError> {
        self.slots.admit(sub).await
    }

    /// The subjects with open slots here and how many each holds (to resync shared counts).
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.slots.counts()
    }

    /// Connections `sub` holds (slots taken, including handshakes not yet upgraded).
    pub fn count(&self, sub: &str) -> usize {
        self.slots.count(sub)
    }

    /// Registers a live session; dropping the returned handle unregisters it.
    pub fn register(self: &Arc<Self>, identity: &Identity) -> Registration {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        inner.next += 1;
        let key = inner.next;
        match inner.by_sub.get_mut(identity.sub()) {
            Some(keys) => keys.push(key),
            None => {
                inner.by_sub.insert(identity.sub().to_owned(), vec![key]);
            }
        }
        inner.sessions.insert(
            key,
            Entry {
                identity: identity.clone(),
                close: tx,
            },
        );
        Registration {
            registry: Arc::clone(self),
            key,
            orders: rx,
        }
    }

    /// Updates the identity a registered session is known by (after a refresh, which keeps
    /// the subject).
    fn update(&self, key: u64, identity: &Identity) {
        let mut inner = self.lock();
        let old = inner
            .sessions
            .get_mut(&key)
            .map(|e| std::mem::replace(&mut e.identity, identity.clone()));
        drop(inner);
        drop(old); // outside the lock, as in `Registration::drop`
    }

    /// Closes every matching session; returns their identities (for revocation).
    pub fn close(&self, target: &Target, order: CloseReason) -> Vec<Identity> {
        let mut inner = self.lock();
        let matching: Vec<u64> = match target {
            Target::Sub(sub) => inner.by_sub.get(sub).cloned().unwrap_or_default(),
            Target::Session(s) => inner
                .sessions
                .iter()
                .filter(|(_, e)| e.identity.session() == s)
                .map(|(k, _)| *k)
                .collect(),
            Target::Credential(c) => inner
                .sessions
                .iter()
                .filter(|(_, e)| e.identity.credential_id() == Some(c.as_str()))
                .map(|(k, _)| *k)
                .collect(),
        };
        let closed: Vec<Entry> = matching
            .into_iter()
            .filter_map(|k| inner.remove(k))
            .collect();
        drop(inner);
        closed
            .into_iter()
            .map(|e| {
                let _ = e.close.send(order);
                e.identity
            })
            .collect()
    }

    /// Closes up to `n` sessions, whichever (a shutdown's drain, batch by batch); how many.
    pub fn close_some(&self, n: usize, order: CloseReason) -> usize {
        let mut inner = self.lock();
        let keys: Vec<u64> = inner.sessions.keys().take(n).copied().collect();
        let closed: Vec<Entry> = keys.into_iter().filter_map(|k| inner.remove(k)).collect();
        drop(inner);
        let count = closed.len();
        for e in closed {
            let _ = e.close.send(order);
        }
        count
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }
    /// Whether there is nothing here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A registered session: receives close orders; unregisters on drop.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    key: u64,
    orders: oneshot::Receiver<CloseReason>,
}

impl Registration {
    /// Updates the identity this session is known by (after a refresh).
    pub fn update(&self, identity: &Identity) {
        self.registry.update(self.key, identity);
    }

    /// Resolves when the session is ordered closed.
    pub async fn ordered(&mut self) -> CloseReason {
        match (&mut self.orders).await {
            Ok(order) => order,
            // The sender is gone only when the entry was removed without an order, which
            // `close` never does; wait forever rather than invent one.
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Drop the entry after the lock is released: it may hold the last clone of the
        // identity, whose slot takes the same lock to give itself back.
        let removed = self.registry.lock().remove(self.key);
        drop(removed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Verified;
    use crate::source::SourceKind;

    fn id(sub: &str) -> Identity {
        Identity::new(
            Verified {
                sub: sub.into(),
                ..Verified::default()
            },
            SourceKind::Bearer,
            "static",
        )
    }

    #[tokio::test]
    async fn slots_limit_per_subject_and_come_back() {
        let r = Arc::new(Registry::new(Some(2)));
        let a = r.admit("alice").await.unwrap();
        let _b = r.admit("alice").await.unwrap();
        assert_eq!(
            r.admit("alice").await.unwrap_err(),
            AuthError::TooManyConnections
        );
        assert!(r.admit("bob").await.is_ok());
        drop(a);
        assert!(r.admit("alice").await.is_ok());
    }

    #[tokio::test]
    async fn close_by_sub_and_session() {
        let r = Arc::new(Registry::new(None));
        let (a1, a2, b) = (id("alice"), id("alice"), id("bob"));
        let mut ra1 = r.register(&a1);
        let mut ra2 = r.register(&a2);
        let rb = r.register(&b);
        let order = CloseReason::Disconnected;
        assert_eq!(r.close(&Target::Sub("alice".into()), order).len(), 2);
        assert_eq!(ra1.ordered().await, order);
        assert_eq!(ra2.ordered().await, order);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r.close(&Target::Session(b.session().into()), order).len(),
            1
        );
        drop(rb);
        assert!(r.is_empty());
        assert!(r.lock().by_sub.is_empty(), "the index is emptied too");
    }

    #[tokio::test]
    async fn a_subject_closes_through_its_index_at_size() {
        let r = Arc::new(Registry::new(None));
        let others: Vec<Registration> = (0..20_000)
            .map(|i| r.register(&id(&format!("u{i}"))))
            .collect();
        let mut mine = r.register(&id("target"));
        let order = CloseReason::Disconnected;
        assert_eq!(r.close(&Target::Sub("target".into()), order).len(), 1);
        assert_eq!(
            r.lock().by_sub.len(),
            20_000,
            "only the target's entry left the index"
        );
        assert_eq!(mine.ordered().await, order);
        drop(others);
        assert!(r.is_empty());
    }
}
