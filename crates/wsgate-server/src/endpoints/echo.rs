//! `echo`: an authenticated echo. After the welcome frame every text or binary message comes
//! back unchanged; `refresh` frames are handled by the session guard, not echoed. It is the
//! seed's behaviour done right, and the path the benchmarks measure.

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use axum::routing::get;
use wsgate::{Session, WsAuth};

use super::Endpoint;

pub fn router(path: &str, ep: Endpoint) -> Router {
    Router::new().route(path, get(upgrade)).with_state(ep)
}

async fn upgrade(State(ep): State<Endpoint>, auth: WsAuth, ws: WebSocketUpgrade) -> Response {
    auth.speaks_session_frames()
        .on_upgrade(ws, move |socket, identity| {
            let session = Session::new(socket, identity, ep.auth, &ep.session);
            ep.tracker.track_future(run(session))
        })
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
