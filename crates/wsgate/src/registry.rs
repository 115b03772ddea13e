//! Live sessions, so that something other than a socket's own task can end it.
//!
//! An admin disconnect, a revoked API key, a revoked token, a Shared Signals event or a
//! failed re-check with the identity provider must reach sockets that are already open: each
//! [`Session`](crate::Session) registers here with a small mailbox, and the registry posts
//! [`Order`]s to the matching sessions — close now (with when this node learned why, for
//! `wsgate_revocation_to_close_seconds`), close after a grace period unless a newer
//! credential arrives, or take the identity the issuer just vouched for again. The registry
//! also holds the endpoint's [`Slots`] (connections per subject, `max_connections_per_user`),
//! taken at the handshake, before any upgrade.
//!
//! One mutex around plain maps: the registry is touched once per connect, once per
//! disconnect, once per refresh and by orders, never per message. Sessions are indexed by
//! subject and by re-checked credential, so closing a subject's sockets, a refresh and a
//! re-check's answer cost the same at 19,000 open sockets as at 10 (orders by session id, API
//! key or claim scan). Identities are dropped outside the lock: dropping the last one gives
//! its slot back (another lock, and maybe a shared store's release).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use tokio::time::Instant;

use crate::identity::{Identity, Verified, claim_holds};
use crate::protocol::CloseReason;
use crate::reject::AuthError;
use crate::slots::{SharedCounts, Slot, Slots};

/// Which sessions an order applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every session of a subject.
    Sub(String),
    /// The sessions of a subject whose identity provider is one of `providers` (the same
    /// subject at another issuer is another user).
    SubOf {
        /// The subject.
        sub: String,
        /// Provider names ([`Identity::provider`]).
        providers: Vec<String>,
    },
    /// One session, by id.
    Session(String),
    /// Sessions opened with this credential id (an API key's id).
    Credential(String),
    /// Sessions whose verified claim `name` is the string `value`, or a list holding it (a
    /// tenant, a role, an app version; see [`claim_holds`]).
    Claim {
        /// The claim's name (top level).
        name: String,
        /// The string it must be, or contain.
        value: String,
    },
    /// Sessions whose kept credential has this SHA-256 (re-checked credentials only).
    Token([u8; 32]),
}

impl Target {
    fn matches(&self, identity: &Identity) -> bool {
        match self {
            Target::Sub(sub) => identity.sub() == sub,
            Target::SubOf { sub, providers } => {
                identity.sub() == sub && providers.iter().any(|p| p == identity.provider())
            }
            Target::Session(s) => identity.session() == s,
            Target::Credential(c) => identity.credential_id() == Some(c.as_str()),
            Target::Claim { name, value } => claim_holds(identity.claims(), name, value),
            Target::Token(d) => identity.kept().is_some_and(|k| &k.digest == d),
        }
    }
}

/// Why this node ended sessions from outside, for `wsgate_revocation_to_close_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// `POST /api/disconnect` (here or on another node).
    Admin,
    /// A Shared Signals (CAEP/RISC) event.
    Ssf,
    /// The identity provider (or the backend) no longer stands behind the credential.
    Revalidate,
    /// An API key was revoked.
    Key,
}

impl Cause {
    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::Admin => "admin",
            Cause::Ssf => "ssf",
            Cause::Revalidate => "revalidate",
            Cause::Key => "key",
        }
    }
}

/// When this node learned of a revocation, and from where: each close it causes is measured
/// from this moment to the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// What revoked.
    pub cause: Cause,
    /// When this node learned of it.
    pub at: Instant,
}

impl Learned {
    /// Learned now, from `cause`.
    pub fn now(cause: Cause) -> Self {
        Self {
            cause,
            at: Instant::now(),
        }
    }
}

/// Close a session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseOrder {
    /// The close sent.
    pub reason: CloseReason,
    /// For a revocation: when this node learned of it.
    pub learned: Option<Learned>,
}

impl From<CloseReason> for CloseOrder {
    fn from(reason: CloseReason) -> Self {
        Self {
            reason,
            learned: None,
        }
    }
}

impl CloseOrder {
    /// A close caused by a revocation this node learned of just now.
    pub fn revoked(reason: CloseReason, cause: Cause) -> Self {
        Self {
            reason,
            learned: Some(Learned::now(cause)),
        }
    }
}

/// A soft revocation: the session is told (`expiring`) and closed at `until` unless it
/// presents, by `refresh`, a credential issued after `ordered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace {
    /// When the session is closed (unix seconds).
    pub until: u64,
    /// When the order was given (unix seconds): a refreshed credential must be issued after.
    pub ordered: u64,
}

/// What a registered session is told from outside.
#[derive(Debug, Clone, PartialEq)]
pub enum Order {
    /// Close now.
    Close(CloseOrder),
    /// Close at a deadline unless a newer credential arrives.
    Grace(Grace),
    /// The credential's issuer vouched for it again, with this (maybe new deadline, maybe
    /// fewer channels).
    Revalidated(Box<Verified>),
}

/// Live sessions: who is connected, per-subject slots, and orders from outside.
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
    /// The keys of the sessions holding each re-checked credential (by its SHA-256).
    by_token: HashMap<[u8; 32], Vec<u64>>,
    next: u64,
}

fn unindex<K, Q>(index: &mut HashMap<K, Vec<u64>>, at: &Q, key: u64)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(keys) = index.get_mut(at) {
        keys.retain(|k| *k != key);
        if keys.is_empty() {
            index.remove(at);
        }
    }
}

impl Inner {
    /// Removes a session and its index entries.
    fn remove(&mut self, key: u64) -> Option<Entry> {
        let entry = self.sessions.remove(&key)?;
        unindex(&mut self.by_sub, entry.identity.sub(), key);
        if let Some(kept) = entry.identity.kept() {
            unindex(&mut self.by_token, &kept.digest, key);
        }
        Some(entry)
    }

    fn index_token(&mut self, identity: &Identity, key: u64) {
        if let Some(kept) = identity.kept() {
            self.by_token.entry(kept.digest).or_default().push(key);
        }
    }

    /// The keys of the sessions `target` names.
    fn matching(&self, target: &Target) -> Vec<u64> {
        match target {
            Target::Sub(sub) => self.by_sub.get(sub).cloned().unwrap_or_default(),
            Target::SubOf { sub, .. } => {
                let keys = self.by_sub.get(sub).map(Vec::as_slice).unwrap_or_default();
                keys.iter()
                    .copied()
                    .filter(|k| {
                        self.sessions
                            .get(k)
                            .is_some_and(|e| target.matches(&e.identity))
                    })
                    .collect()
            }
            Target::Token(d) => self.by_token.get(d).cloned().unwrap_or_default(),
            _ => self
                .sessions
                .iter()
                .filter(|(_, e)| target.matches(&e.identity))
                .map(|(k, _)| *k)
                .collect(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    identity: Identity,
    mailbox: Arc<Mailbox>,
}

/// A session's orders, posted by the registry and taken by the session's own task.
#[derive(Debug, Default)]
struct Mailbox {
    mail: Mutex<Mail>,
    waker: AtomicWaker,
}

#[derive(Debug, Default)]
struct Mail {
    close: Option<CloseOrder>,
    grace: Option<Box<Grace>>,
    revalidated: Option<Box<Verified>>,
}

impl Mailbox {
    fn post(&self, f: impl FnOnce(&mut Mail)) {
        f(&mut self.mail.lock().unwrap_or_else(|p| p.into_inner()));
        self.waker.wake();
    }

    /// The next order (`closes_only`: a close; the others wait for the session's loop).
    fn poll_take(&self, cx: &mut std::task::Context<'_>, closes_only: bool) -> Poll<Order> {
        self.waker.register(cx.waker());
        let mut mail = self.mail.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(close) = mail.close.take() {
            return Poll::Ready(Order::Close(close));
        }
        if closes_only {
            return Poll::Pending;
        }
        if let Some(grace) = mail.grace.take() {
            return Poll::Ready(Order::Grace(*grace));
        }
        match mail.revalidated.take() {
            Some(v) => Poll::Ready(Order::Revalidated(v)),
            None => Poll::Pending,
        }
    }
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
        let mailbox = Arc::new(Mailbox::default());
        let mut inner = self.lock();
        inner.next += 1;
        let key = inner.next;
        match inner.by_sub.get_mut(identity.sub()) {
            Some(keys) => keys.push(key),
            None => {
                inner.by_sub.insert(identity.sub().to_owned(), vec![key]);
            }
        }
        inner.index_token(identity, key);
        inner.sessions.insert(
            key,
            Entry {
                identity: identity.clone(),
                mailbox: mailbox.clone(),
            },
        );
        Registration {
            registry: Arc::clone(self),
            key,
            mailbox,
        }
    }

    /// Updates the identity a registered session is known by (after a refresh, which keeps
    /// the subject, or a re-check).
    fn update(&self, key: u64, identity: &Identity) {
        let mut inner = self.lock();
        let old = inner
            .sessions
            .get_mut(&key)
            .map(|e| std::mem::replace(&mut e.identity, identity.clone()));
        let old_digest = old.as_ref().and_then(|o| o.kept()).map(|k| k.digest);
        let new_digest = identity.kept().map(|k| k.digest);
        if old.is_some() && old_digest != new_digest {
            if let Some(d) = old_digest {
                unindex(&mut inner.by_token, &d, key);
            }
            inner.index_token(identity, key);
        }
        drop(inner);
        drop(old); // outside the lock, as in `Registration::drop`
    }

    /// Closes every matching session; returns their identities (for revocation).
    pub fn close(&self, target: &Target, order: impl Into<CloseOrder>) -> Vec<Identity> {
        let order = order.into();
        let mut inner = self.lock();
        let matching = inner.matching(target);
        let closed: Vec<Entry> = matching
            .into_iter()
            .filter_map(|k| inner.remove(k))
            .collect();
        drop(inner);
        closed
            .into_iter()
            .map(|e| {
                e.mailbox.post(|m| m.close = Some(order));
                e.identity
            })
            .collect()
    }

    /// Gives every matching session a grace period (a soft revocation); their identities.
    /// They stay registered: a refresh may still save them, and a later order still finds
    /// them.
    pub fn warn(&self, target: &Target, grace: Grace) -> Vec<Identity> {
        self.post(target, |m| {
            // The earlier deadline wins: a second, longer grace does not extend the first.
            if m.grace.as_ref().is_none_or(|g| g.until > grace.until) {
                m.grace = Some(Box::new(grace));
            }
        })
    }

    /// Hands every session holding a re-checked credential what its issuer answered now.
    pub fn revalidated(&self, digest: [u8; 32], verified: &Verified) -> usize {
        self.post(&Target::Token(digest), |m| {
            m.revalidated = Some(Box::new(verified.clone()));
        })
        .len()
    }

    fn post(&self, target: &Target, f: impl Fn(&mut Mail)) -> Vec<Identity> {
        let inner = self.lock();
        let posted: Vec<(Identity, Arc<Mailbox>)> = inner
            .matching(target)
            .into_iter()
            .filter_map(|k| inner.sessions.get(&k))
            .map(|e| (e.identity.clone(), e.mailbox.clone()))
            .collect();
        drop(inner);
        posted
            .into_iter()
            .map(|(identity, mailbox)| {
                mailbox.post(&f);
                identity
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
            e.mailbox.post(|m| m.close = Some(order.into()));
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

/// A registered session: receives orders; unregisters on drop.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    key: u64,
    mailbox: Arc<Mailbox>,
}

impl Registration {
    /// Updates the identity this session is known by (after a refresh or a re-check).
    pub fn update(&self, identity: &Identity) {
        self.registry.update(self.key, identity);
    }

    /// Resolves with the next order for this session.
    pub async fn ordered(&mut self) -> Order {
        std::future::poll_fn(|cx| self.mailbox.poll_take(cx, false)).await
    }

    /// Resolves with the next close order (a write waiting on the peer yields to it; other
    /// orders wait for the session's loop).
    pub async fn closing(&mut self) -> CloseOrder {
        let order = std::future::poll_fn(|cx| self.mailbox.poll_take(cx, true)).await;
        match order {
            Order::Close(close) => close,
            // `poll_take` with `closes_only` yields nothing else.
            _ => std::future::pending().await,
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
        assert_eq!(ra1.ordered().await, Order::Close(order.into()));
        assert_eq!(ra2.ordered().await, Order::Close(order.into()));
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
    async fn a_close_overtakes_other_orders_and_claims_are_matched() {
        let r = Arc::new(Registry::new(None));
        let tenant = |t: serde_json::Value| {
            let v = Verified {
                sub: "u".into(),
                claims: crate::identity::Claims::from_value(serde_json::json!({ "tenant": t })),
                ..Verified::default()
            };
            Identity::new(v, SourceKind::Bearer, "jwt")
        };
        let (acme, both, other) = (
            tenant("acme".into()),
            tenant(serde_json::json!(["x", "acme"])),
            tenant("other".into()),
        );
        let mut r_acme = r.register(&acme);
        let _r_both = r.register(&both);
        let _r_other = r.register(&other);
        let claim = Target::Claim {
            name: "tenant".into(),
            value: "acme".into(),
        };
        let grace = Grace {
            until: 10,
            ordered: 5,
        };
        assert_eq!(r.warn(&claim, grace).len(), 2);
        // A write waiting on the peer yields to a close only; the grace waits for the loop.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), r_acme.closing());
        assert!(waiting.await.is_err());
        let order = CloseOrder::revoked(CloseReason::Revoked, Cause::Admin);
        assert_eq!(r.close(&claim, order).len(), 2);
        assert_eq!(r_acme.closing().await, order);
        assert_eq!(r.len(), 1, "the other tenant's session stays");
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
        assert_eq!(mine.ordered().await, Order::Close(order.into()));
        drop(others);
        assert!(r.is_empty());
    }
}
