//! Load tool: time from `POST /api/disconnect` to the 4003 close frame, with N sockets open.
//!
//! ```sh
//! WSGATE_ADMIN_KEY=k JWT_SECRET=s taskset -c 0 target/release/wsgate serve --config bench.toml &
//! taskset -c 1 target/release/examples/disconnect_latency --url ws://127.0.0.1:18400/echo \
//!     --secret s --admin-key k --connections 10000
//! ```
//! Opens N sockets (one subject per socket, plus one shared subject for the group test), then
//! (1) disconnects single sessions one at a time among all N, (2) disconnects one subject
//! that holds 1,000 of them at once, and prints p50/p99/max for each. Loopback only.

mod common;

use std::time::{Duration, Instant};

use common::{Ws, arg, closed_at, connect, loopback_url, report};
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn token(secret: &str, sub: &str) -> String {
    let now = wsgate::verify::now_unix();
    common::token(secret, &json!({"sub": sub, "iat": now, "exp": now + 3600}))
}

async fn open(url: &str, token: &str) -> (Ws, String) {
    let mut ws = connect(url, token).await;
    let Some(Ok(Message::Text(welcome))) = ws.next().await else {
        panic!("no welcome")
    };
    let v: serde_json::Value = serde_json::from_str(&welcome).expect("json");
    (ws, v["session"].as_str().expect("session").to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    wsgate::install_crypto();
    let url = loopback_url("ws://127.0.0.1:PORT/echo");
    let secret = arg("--secret").expect("--secret");
    let admin = arg("--admin-key").expect("--admin-key");
    let n: usize = arg("--connections").map_or(10_000, |v| v.parse().expect("number"));
    let group = 1000.min(n / 2);
    let api = url.replacen("ws://", "http://", 1);
    let api = format!("{}/api/disconnect", &api[..api.rfind('/').expect("path")]);
    let http = reqwest::Client::new();

    let started = Instant::now();
    let mut singles = Vec::new();
    let mut grouped = Vec::new();
    for i in 0..n {
        let sub = if i < group {
            "group".to_owned()
        } else {
            format!("user-{i}")
        };
        let (ws, session) = open(&url, &token(&secret, &sub)).await;
        if i < group {
            grouped.push(ws);
        } else {
            singles.push((ws, session));
        }
    }
    println!(
        "opened {n} sockets in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut single_ms = Vec::new();
    for (ws, session) in singles.drain(..200.min(singles.len())) {
        let waiter = tokio::spawn(closed_at(ws));
        let t0 = Instant::now();
        let res = http
            .post(&api)
            .bearer_auth(&admin)
            .json(&json!({"session": session}))
            .send()
            .await
            .expect("post");
        assert!(res.status().is_success(), "{}", res.status());
        let at = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("no close")
            .expect("join");
        single_ms.push(at.duration_since(t0).as_secs_f64() * 1e3);
    }
    report(&format!("disconnect one session among {n}"), single_ms);

    let waiters: Vec<_> = grouped
        .into_iter()
        .map(|ws| tokio::spawn(closed_at(ws)))
        .collect();
    let t0 = Instant::now();
    let res = http
        .post(&api)
        .bearer_auth(&admin)
        .json(&json!({"sub": "group"}))
        .send()
        .await
        .expect("post");
    assert!(res.status().is_success());
    let mut group_ms = Vec::new();
    for w in waiters {
        let at = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("no close")
            .expect("join");
        group_ms.push(at.duration_since(t0).as_secs_f64() * 1e3);
    }
    report(
        &format!("disconnect one subject holding {group} of {n} sockets"),
        group_ms,
    );
}
