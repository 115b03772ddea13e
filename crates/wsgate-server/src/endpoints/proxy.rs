//! `proxy`: wsgate in front of any WebSocket backend. The client is authenticated
//! exactly as on every endpoint; only then is the upstream dialled, and only its `101` earns
//! the client a `101` (upstream down or refusing → 502, silent → 504). The upstream sees the
//! verified identity (`X-Wsgate-*`), never a credential; the library's
//! [`Session::relay`](wsgate::Session::relay) forwards the frames and ends both sides with the
//! session.

use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRef, Request, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use wsgate::protocol::close_socket;
use wsgate::relay::Upstream;
use wsgate::{Authenticator, Identity, RejectMode, Session, SessionOptions, WsAuth};

use super::Endpoint;

/// A proxy endpoint's state: the shared endpoint state and where to forward.
#[derive(Clone)]
pub struct Proxy {
    pub ep: Endpoint,
    pub upstream: Arc<Upstream>,
    /// Take `refresh` frames in-band (and send `expiring`); otherwise never touch a frame.
    pub refresh_frames: bool,
}

impl FromRef<Proxy> for Arc<Authenticator> {
    fn from_ref(p: &Proxy) -> Self {
        p.ep.auth.clone()
    }
}

pub fn router(path: &str, proxy: Proxy) -> Router {
    Router::new().route(path, get(upgrade)).with_state(proxy)
}

async fn upgrade(
    State(p): State<Proxy>,
    auth: WsAuth,
    ws: WebSocketUpgrade,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let Some(identity) = auth.identity().cloned() else {
        // A `message` credential comes after the upgrade (or a refusal in close mode):
        // dial the upstream once the client is known. The client is answered before the
        // upstream chose anything: wsgate's own subprotocol.
        let auth = if p.refresh_frames {
            auth.speaks_session_frames()
        } else {
            auth
        };
        return auth.on_upgrade(ws, move |socket, identity| async move {
            match p
                .upstream
                .connect(&parts, &identity, p.ep.auth.sources_ref())
                .await
            {
                Ok(conn) => run(&p, socket, identity, conn).await,
                Err(e) => {
                    log_failure(&parts, &identity, &e);
                    close_socket(socket, e.close_reason()).await;
                }
            }
        });
    };
    match p
        .upstream
        .connect(&parts, &identity, p.ep.auth.sources_ref())
        .await
    {
        Ok(conn) => {
            let protocol = conn.client_protocol(&parts.headers, p.refresh_frames);
            drop(identity); // the extractor's own clone carries the session on
            auth.subprotocol(protocol)
                .on_upgrade(ws, move |socket, identity| run(&p, socket, identity, conn))
        }
        Err(e) => {
            log_failure(&parts, &identity, &e);
            p.ep.auth.record_attempt(&parts, (&e).into());
            drop(identity);
            if p.ep.auth.reject_mode() == RejectMode::Close {
                auth.on_upgrade(ws, move |socket, _| close_socket(socket, e.close_reason()))
            } else {
                e.into_response()
            }
        }
    }
}

/// The relay, tracked for the drain. Not `async`: the session is built here and moved into
/// the relay's future once, so the connection's task holds no second copy of it.
fn run(
    p: &Proxy,
    socket: axum::extract::ws::WebSocket,
    identity: Identity,
    conn: wsgate::relay::Connected,
) -> impl Future<Output = ()> + Send + use<> {
    // A proxy sends no frames of its own: no welcome, no idle pings (the upstream's pass
    // through); `expiring`/`refreshed` only with refresh_frames.
    let options = SessionOptions {
        welcome: false,
        idle_timeout: None,
        expiry_warning: p.ep.session.expiry_warning.filter(|_| p.refresh_frames),
        ..p.ep.session.clone()
    };
    let session = Session::new(socket, identity, p.ep.auth.clone(), &options);
    p.ep.tracker
        .track_future(session.relay(conn, p.refresh_frames))
}

fn log_failure(parts: &Parts, identity: &Identity, e: &wsgate::GatewayError) {
    tracing::warn!(
        target: "wsgate::conn",
        path = parts.uri.path(),
        sub = identity.sub(),
        reason = e.code().as_str(),
        detail = %e,
        "upstream unavailable"
    );
}
