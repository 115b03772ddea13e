//! What the load tools share: flags, the loopback guard, HS256 tokens and a client socket
//! that costs less than the server it measures.

// Each tool uses part of this.
#![allow(dead_code)]

use std::time::Instant;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The value after `--name`, if given.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// `--url`, which must point at this machine: these tools open thousands of sockets.
pub fn loopback_url(example: &str) -> String {
    let url = arg("--url").unwrap_or_else(|| panic!("--url {example}"));
    assert!(
        url.starts_with("ws://127.") || url.starts_with("ws://localhost"),
        "loopback only"
    );
    url
}

/// An HS256 token for `claims`.
pub fn token(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// A socket authenticated with `Authorization: Bearer`.
pub async fn connect(url: &str, token: &str) -> Ws {
    let mut req = url.into_client_request().expect("url");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    // tungstenite's default 128 KiB read buffer is zero-filled before every read: with it,
    // the fan-out tool spent 70% of its time in memset and measured itself, not the server.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
        .await
        .expect("connect");
    ws
}

/// Waits for the close frame; the instant it arrived (the latency tools).
pub async fn closed_at(mut ws: Ws) -> Instant {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Instant::now(),
            _ => {}
        }
    }
}

/// Prints p50/p99/max of `ms` under `name`.
pub fn report(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        ms.len(),
        q(0.5),
        q(0.99),
        ms[ms.len() - 1]
    );
}
