//! `echo`: an authenticated echo. After the welcome frame every text or binary message comes
//! back unchanged; `refresh` frames are handled by the session guard, not echoed. It is the
//! seed's behaviour done right, and the path the benchmarks measure.
//!
//! Every client gets wsgate's own socket (see [`Upgrade`]), which the session answers pings
//! and the client's Close on.

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::get;
use wsgate::relay::wsgate_protocol;
use wsgate::{Session, WsAuth};

use super::{Endpoint, Upgrade};

pub fn router(path: &str, ep: Endpoint) -> Router {
    Router::new().route(path, get(upgrade)).with_state(ep)
}

async fn upgrade(State(ep): State<Endpoint>, auth: WsAuth, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let protocol = wsgate_protocol(&parts.headers, true);
    let max_message = ep.auth.socket().max_message_bytes;
    match Upgrade::of(auth, &mut parts).await {
        Ok(upgrade) => upgrade.on_upgrade(protocol, max_message, move |socket, identity| {
            let session = Session::with_client_socket(socket, identity, ep.auth, &ep.session);
            ep.tracker.track_future(run(session))
        }),
        Err(not_an_upgrade) => not_an_upgrade,
    }
}

/// Not an `async fn`, which would hold the session twice for the socket's life (argument
/// and local); the block uses the one it captured.
#[allow(clippy::manual_async_fn)] // on purpose: see why above
fn run(mut session: Session) -> impl Future<Output = ()> + Send {
    async move {
        if !session.welcome().await {
            return;
        }
        while let Some(msg) = session.recv().await {
            if !session.send(msg).await {
                break;
            }
        }
    }
}
