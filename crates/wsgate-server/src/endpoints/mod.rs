//! The kinds of endpoint a `[[endpoints]]` entry can be.
//!
//! Each kind is one module with one `router` function; they share [`Endpoint`], the state
//! every upgrade handler gets: the endpoint's authentication policy, its session options,
//! the tracker that lets shutdown wait for its sockets, and the channel broker.

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use tokio_util::task::TaskTracker;
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

/// The router serving one configured endpoint.
pub fn router(cfg: &EndpointConfig, ep: Endpoint) -> Router {
    match cfg.kind {
        EndpointKind::Echo => echo::router(&cfg.path, ep),
        EndpointKind::Pubsub => pubsub::router(&cfg.path, ep),
        EndpointKind::Proxy => match cfg.upstream() {
            Ok(Some(upstream)) => proxy::router(
                &cfg.path,
                proxy::Proxy {
                    ep,
                    upstream: Arc::new(upstream),
                    refresh_frames: cfg.refresh_frames,
                },
            ),
            // Not reachable: Config::check refused such an endpoint before the server started.
            _ => Router::new(),
        },
    }
}
