//! The seed's program — "read the token, compare, accept or close" — done right with wsgate:
//! the token may come from the header, the query or a subprotocol; it is checked before the
//! upgrade (401 otherwise); the socket is closed with 4001 when a JWT expires (after an
//! `expiring` notice the client may answer with a refresh) and with 1001 on Ctrl-C; nothing
//! logs the token.
//!
//! ```sh
//! cargo run -p wsgate --example echo
//! python3 -m websockets 'ws://127.0.0.1:3000/ws?token=valid-token'
//! ```

use std::sync::Arc;

use axum::{Router, extract::ws::WebSocketUpgrade, response::Response, routing::get};
use wsgate::verify::{JwtConfig, JwtVerifier, StaticTokens, VerifierChain};
use wsgate::{Authenticator, WsAuth};

async fn ws(auth: WsAuth, ws: WebSocketUpgrade) -> Response {
    auth.on_session(ws, |mut s| async move {
        while let Some(msg) = s.recv().await {
            if !s.send(msg).await {
                break;
            }
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret =
        std::env::var("JWT_SECRET").unwrap_or_else(|_| "change-me-to-32-random-bytes!!!!".into());
    let verifiers = VerifierChain::new()
        .with(StaticTokens::new([("valid-token", "demo-user")]))
        .with(JwtVerifier::new(JwtConfig::default())?.with_secret(secret.as_bytes())?);
    let auth = Arc::new(Authenticator::new(verifiers));

    let app = Router::new().route("/ws", get(ws)).with_state(auth.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on ws://{}/ws", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(wsgate::shutdown_signal(&auth))
        .await?;
    Ok(())
}
