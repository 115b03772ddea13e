//! An app with its own state, and a different policy per route.
//!
//! `WsAuth` finds its [`Authenticator`] in the router's state through axum's `FromRef`
//! (the "for library authors" pattern): an app whose state is a struct of its own says how
//! to get the authenticator out of it with one `impl FromRef`. A route that needs another
//! policy gets its own state with `MethodRouter::with_state` — no sub-router to merge.
//!
//! ```sh
//! cargo run -p wsgate --example app_state
//! python3 -m websockets 'ws://127.0.0.1:3001/chat?token=user-token'
//! python3 -m websockets 'ws://127.0.0.1:3001/admin?token=admin-token'   # only this one here
//! ```

use std::sync::Arc;

use axum::extract::{FromRef, State, ws::WebSocketUpgrade};
use axum::{Router, response::Response, routing::get};
use wsgate::verify::{StaticTokens, VerifierChain};
use wsgate::{Authenticator, WsAuth};

/// The app's own state: whatever it needs, the authenticator among it.
#[derive(Clone)]
struct AppState {
    auth: Arc<Authenticator>,
    motd: Arc<str>,
}

/// The one line `WsAuth` needs from an app with its own state.
impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

async fn chat(State(app): State<AppState>, auth: WsAuth, ws: WebSocketUpgrade) -> Response {
    auth.on_session(ws, move |mut s| async move {
        let _ = s.send(app.motd.to_string().into()).await;
        while let Some(msg) = s.recv().await {
            if !s.send(msg).await {
                break;
            }
        }
    })
}

async fn admin(auth: WsAuth, ws: WebSocketUpgrade) -> Response {
    auth.on_session(ws, |mut s| async move {
        let who = format!("admin console for {}", s.identity().sub());
        let _ = s.send(who.into()).await;
    })
}

/// Both routes, each with its own policy.
fn app() -> Router {
    let users = Arc::new(Authenticator::new(
        VerifierChain::new().with(StaticTokens::new([("user-token", "ann")])),
    ));
    let admins = Arc::new(Authenticator::new(
        VerifierChain::new().with(StaticTokens::new([("admin-token", "root")])),
    ));
    let state = AppState {
        auth: users,
        motd: Arc::from("welcome to the chat"),
    };
    Router::new()
        .route("/chat", get(chat))
        // Another policy on one route: its own state, no second router.
        .route("/admin", get(admin).with_state(admins))
        .with_state(state)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!(
        "listening on ws://{}/chat and /admin",
        listener.local_addr()?
    );
    axum::serve(listener, app()).await?;
    Ok(())
}
