//! `proxy`: wsgate in front of any WebSocket backend. The client is authenticated
//! exactly as on every endpoint; only then is the upstream dialled, and only its `101` earns
//! the client a `101` (upstream down or refusing → 502, silent → 504). The upstream sees the
//! verified identity (`X-Wsgate-*`), never a credential; the library's
//! [`Session::relay`](wsgate::Session::relay) forwards the frames and ends both sides with the
//! session.
//!
//! Every client gets wsgate's own socket (see [`Upgrade`]), which answers nothing on the
//! upstream's behalf: pings and pongs pass through once.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, Request, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use wsgate::relay::{ClientSocket, Upstream, wsgate_protocol};
use wsgate::{Authenticator, Identity, RejectMode, Session, SessionOptions, WsAuth};

use super::{Endpoint, Upgrade};

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

async fn upgrade(State(p): State<Proxy>, auth: WsAuth, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let (identity, ws) = match Upgrade::of(auth, &mut parts).await {
        Ok(Upgrade::Known(identity, ws)) => (identity, ws),
        Ok(later) => return upgrade_then_authenticate(p, later, parts),
        Err(not_an_upgrade) => return not_an_upgrade,
    };
    let max_message = p.ep.auth.socket().max_message_bytes;
    match p
        .upstream
        .connect(&parts, &identity, p.ep.auth.sources_ref())
        .await
    {
        Ok(conn) => {
            let protocol = conn.client_protocol(&parts.headers, p.refresh_frames);
            ws.on_upgrade(protocol.as_deref(), max_message, move |socket| {
                run(&p, socket, identity, conn)
            })
        }
        Err(e) => {
            log_failure(&parts, &identity, &e);
            p.ep.auth.record_attempt(&parts, (&e).into());
            if p.ep.auth.reject_mode() == RejectMode::Close {
                let reason = e.close_reason();
                ws.on_upgrade(None, max_message, move |mut socket| async move {
                    socket.close(Some(reason.frame())).await;
                })
            } else {
                e.into_response()
            }
        }
    }
}

/// A `message` credential comes after the upgrade (or a refusal in close mode), and the
/// upstream is dialled once the client is known. The client is answered before the upstream
/// chose anything: wsgate's own subprotocol.
fn upgrade_then_authenticate(p: Proxy, later: Upgrade, parts: Parts) -> Response {
    let protocol = wsgate_protocol(&parts.headers, p.refresh_frames);
    let max_message = p.ep.auth.socket().max_message_bytes;
    later.on_upgrade(
        protocol,
        max_message,
        move |mut socket, identity| async move {
            match p
                .upstream
                .connect(&parts, &identity, p.ep.auth.sources_ref())
                .await
            {
                Ok(conn) => run(&p, socket, identity, conn).await,
                Err(e) => {
                    log_failure(&parts, &identity, &e);
                    socket.close(Some(e.close_reason().frame())).await;
                }
            }
        },
    )
}

/// The relay, tracked for the drain. Not `async`: the session is built here and moved into
/// the relay's future once, so the connection's task holds no second copy of it.
fn run(
    p: &Proxy,
    socket: ClientSocket,
    identity: Identity,
    conn: wsgate::relay::Connected,
) -> impl Future<Output = ()> + Send + use<> {
    let options = relay_options(p);
    let session = Session::with_client_socket(socket, identity, p.ep.auth.clone(), &options);
    p.ep.tracker
        .track_future(session.relay(conn, p.refresh_frames))
}

/// A proxy sends no frames of its own: no welcome, no idle pings (the upstream's pass
/// through); `expiring`/`refreshed` only with refresh_frames.
fn relay_options(p: &Proxy) -> SessionOptions {
    SessionOptions {
        welcome: false,
        idle_timeout: None,
        expiry_warning: p.ep.session.expiry_warning.filter(|_| p.refresh_frames),
        ..p.ep.session.clone()
    }
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
