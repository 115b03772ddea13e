//! The seed's program — "read the token, compare, accept or close" — done right with wsgate:
//! the token may come from the header, the query or a subprotocol; it is checked before the
//! upgrade (401 otherwise); the socket is closed with 4001 when a JWT expires; nothing logs
//! the token.
//!
//! ```sh
//! cargo run -p wsgate --example echo
//! websocat -H 'Authorization: Bearer valid-token' ws://127.0.0.1:3000/ws
//! ```

use std::sync::Arc;

use axum::{Router, extract::ws::WebSocketUpgrade, response::Response, routing::get};
use wsgate::verify::{JwtConfig, JwtVerifier, StaticTokens, VerifierChain};
use wsgate::{Authenticator, Session, SessionOptions, WsAuth};

async fn ws(auth: WsAuth, ws: WebSocketUpgrade) -> Response {
    let policy = auth.authenticator().clone();
    auth.on_upgrade(ws, |socket, identity| async move {
        let mut session = Session::new(socket, identity, policy, &SessionOptions::default());
        if !session.welcome().await {
            return;
        }
        while let Some(msg) = session.recv().await {
            if !session.send(msg).await {
                break;
            }
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    wsgate::install_crypto();
    let secret =
        std::env::var("JWT_SECRET").unwrap_or_else(|_| "change-me-to-32-random-bytes!!!!".into());
    let verifiers = VerifierChain::new()
        .with(StaticTokens::new([("valid-token", "demo-user")]))
        .with(JwtVerifier::new(JwtConfig::default())?.with_secret(secret.as_bytes())?);
    let auth = Arc::new(Authenticator::new(verifiers));

    let app = Router::new().route("/ws", get(ws)).with_state(auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on ws://{}/ws", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
