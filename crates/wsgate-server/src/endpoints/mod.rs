//! The kinds of endpoint a `[[endpoints]]` entry can be.
//!
//! Each kind is one module with one `router` function; they share [`Endpoint`], the state
//! every upgrade handler gets: the endpoint's authentication policy, its session options,
//! the tracker that lets shutdown wait for its sockets, and the channel broker; and
//! [`Upgrade`], the choice of who upgrades a client's socket.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tokio_util::task::TaskTracker;
use wsgate::relay::{ClientSocket, ClientUpgrade, Upstream};
use wsgate::{Authenticator, Identity, SessionOptions, WsAuth};

use crate::broker::Broker;
use crate::config::{EndpointConfig, EndpointKind};

pub mod echo;
pub mod proxy;
pub mod pubsub;

/// Shared state of one endpoint.
#[derive(Clone)]
pub struct Endpoint {
    pub auth: Arc<Authenticator>,
    pub session: SessionOptions,
    pub tracker: TaskTracker,
    pub broker: Arc<dyn Broker>,
}

impl FromRef<Endpoint> for Arc<Authenticator> {
    fn from_ref(ep: &Endpoint) -> Self {
        ep.auth.clone()
    }
}

/// The router serving one configured endpoint; `upstream` is a proxy's, as `Config::check`
/// built it (a proxy entry without one is refused there).
pub fn router(cfg: &EndpointConfig, upstream: Option<Upstream>, ep: Endpoint) -> Router {
    match (cfg.kind, upstream) {
        (EndpointKind::Echo, _) => echo::router(&cfg.path, ep),
        (EndpointKind::Pubsub, _) => pubsub::router(&cfg.path, ep),
        (EndpointKind::Proxy, Some(upstream)) => proxy::router(
            &cfg.path,
            proxy::Proxy {
                ep,
                upstream: Arc::new(upstream),
                refresh_frames: cfg.refresh_frames,
            },
        ),
        // Config::check refuses a proxy entry without an upstream: nothing to serve.
        (EndpointKind::Proxy, None) => Router::new(),
    }
}

/// A client's upgrade, always answered by wsgate itself ([`ClientUpgrade`]): the socket is a
/// [`wsgate::relay::ClientSocket`], with no read buffer while idle and nothing answered on
/// a relay's behalf. Either the handshake settled who the client is ([`Upgrade::Known`]),
/// or that comes after the upgrade ([`Upgrade::Later`]): an `auth` message awaited, or a
/// refusal sent as a close (`reject = "close"`), by [`WsAuth::finish_own`].
#[allow(clippy::large_enum_variant)] // held only while the handler runs, never by a socket's task
pub enum Upgrade {
    Known(Identity, ClientUpgrade),
    Later(WsAuth, ClientUpgrade),
}

impl Upgrade {
    /// The upgrade `parts` asks for, or the answer to a request that is no WebSocket
    /// upgrade (axum's statuses for the same faults).
    pub async fn of(auth: WsAuth, parts: &mut Parts) -> Result<Self, Response> {
        let ws = match ClientUpgrade::from_request_parts(parts, &()).await {
            Ok(ws) => ws,
            Err(rejection) => return Err(rejection.into_response()),
        };
        Ok(match auth.into_identity() {
            Ok(identity) => Upgrade::Known(identity, ws),
            Err(auth) => Upgrade::Later(auth, ws),
        })
    }

    /// Answers `101` (selecting `protocol`) and calls `f` with the socket and the client's
    /// identity: at once when the handshake settled it, else once the `auth` frame is
    /// verified (a client refused meanwhile never reaches `f`). `f` runs synchronously with
    /// the socket, so what it builds is stored once in the connection's task.
    pub fn on_upgrade<F, Fut>(self, protocol: Option<&str>, max_message: usize, f: F) -> Response
    where
        F: FnOnce(ClientSocket, Identity) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        match self {
            Upgrade::Known(identity, ws) => {
                ws.on_upgrade(protocol, max_message, move |socket| f(socket, identity))
            }
            Upgrade::Later(auth, ws) => ws.on_upgrade(protocol, max_message, move |socket| {
                async move {
                    // Boxed: the wait's state is freed once the client is known.
                    if let Some((socket, identity)) = Box::pin(auth.finish_own(socket)).await {
                        f(socket, identity).await;
                    }
                }
            }),
        }
    }
}
