//! What happens to sessions, told to whoever asked: a server's connection events (webhooks,
//! streams), an audit log, presence. The library only calls; where the news goes is the
//! caller's business.
//!
//! An [`Authenticator`](crate::Authenticator) given an observer (`Authenticator::observe`)
//! tells it of every session its endpoint opens, refreshes and closes. Calls are made on the
//! session's own task, so an observer must return at once (queue, never wait on I/O): a slow
//! observer would slow the socket.

use std::time::Duration;

use crate::identity::Identity;
use crate::registry::Cause;

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The close code on the wire: the server's, or the client's when it closed first; 1006
    /// when the connection was lost without a close frame.
    pub code: u16,
    /// The server's reason phrase, `"client closed"` or `"connection lost"`.
    pub reason: &'static str,
    /// From the upgrade to the end.
    pub lasted: Duration,
    /// When the session was revoked: who revoked it (an admin, a Shared Signals event, the
    /// issuer on a re-check, an API key's revocation).
    pub cause: Option<Cause>,
}

/// Told of each session's life. Every method has an empty default.
pub trait SessionObserver: Send + Sync + 'static {
    /// A session opened (the socket is upgraded and registered).
    fn connected(&self, _identity: &Identity) {}
    /// A `refresh` frame replaced the session's credential.
    fn refreshed(&self, _identity: &Identity) {}
    /// The session ended; called once, as its task lets go of it.
    fn closed(&self, _identity: &Identity, _ended: Ended) {}
}
