//! Load tool: N sockets each join their own channel at the same moment (a reconnect storm of
//! users joining `user:{sub}`), timed from the first `subscribe` sent to the last `subscribed`.
//!
//! ```sh
//! JWT_SECRET=s taskset -c 0 target/release/wsgate serve --config node.toml &
//! taskset -c 1 target/release/examples/subscribe_storm --url ws://127.0.0.1:18401/ws \
//!     --secret s --connections 2000
//! ```
//! In cluster mode every first subscriber of a channel costs its node one Redis `SUBSCRIBE`
//! round trip before the answer; this shows whether those round trips overlap. Loopback only.

mod common;

use std::time::{Duration, Instant};

use common::{arg, connect, loopback_url, token};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    wsgate::install_crypto();
    let url = loopback_url("ws://127.0.0.1:PORT/ws");
    let secret = arg("--secret").expect("--secret");
    let n: usize = arg("--connections").map_or(2_000, |v| v.parse().expect("number"));

    let now = wsgate::verify::now_unix();
    let token = token(
        &secret,
        &json!({"sub": "storm", "iat": now, "exp": now + 3600, "channels": ["user:*"]}),
    );

    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let mut ws = connect(&url, &token).await;
        ws.next().await; // welcome
        sockets.push(ws);
    }

    // Every frame written before any answer is read: the server sees them all at once.
    let started = Instant::now();
    for (i, ws) in sockets.iter_mut().enumerate() {
        let frame = json!({"type": "subscribe", "channel": format!("user:{i}")});
        ws.send(Message::text(frame.to_string()))
            .await
            .expect("send");
    }
    let answers = sockets.iter_mut().map(|ws| async move {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains(r#""subscribed""#) => Instant::now(),
            other => panic!("not subscribed: {other:?}"),
        }
    });
    let times = futures_util::future::join_all(answers).await;
    let last = times.iter().max().copied().unwrap_or(started);
    println!(
        "{n} sockets, one new channel each: last `subscribed` after {:.1} ms",
        last.duration_since(started).as_secs_f64() * 1e3
    );
}
