//! The kinds of endpoint a `[[endpoints]]` entry can be.
//!
//! Each kind is one module with one `router` function; they share [`Endpoint`], the state
//! every upgrade handler gets: the endpoint's authentication policy, its session options,
//! the tracker that lets shutdown wait for its sockets, and the channel broker.

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use tokio_util::task::TaskTracker;
use wsgate::relay::Upstream;
use wsgate::{Authenticator, SessionOptions};

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
