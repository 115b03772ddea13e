//! Load tool: fan-out of one channel to N subscribers through `POST /api/publish`.
//!
//! ```sh
//! WSGATE_ADMIN_KEY=k JWT_SECRET=s taskset -c 0 target/release/wsgate serve --config bench.toml &
//! taskset -c 1 target/release/examples/fanout --url ws://127.0.0.1:18400/ws --secret s \
//!     --admin-key k --connections 10000 --publishes 20 --pid $(pgrep -f 'wsgate serve')
//! ```
//! Opens N subscribed sockets, reads the server's RSS growth per subscribed socket (`--pid`),
//! then publishes P messages one after another and reports, per publish, the time from the
//! POST to the last subscriber's receipt (p50/p99 over publishes) and deliveries per second.
//! `--publish-url http://127.0.0.1:PORT` publishes through another node (cluster mode:
//! subscribers on one node, the publisher on another). Loopback only.

mod common;

use std::time::{Duration, Instant};

use common::{arg, connect, loopback_url, token};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `k` from `..."data":{"k":N}...`, the frames this tool publishes.
fn publish_number(frame: &str) -> Option<u64> {
    let rest = &frame[frame.find(r#""data":{"k":"#)? + 12..];
    rest[..rest.find('}')?].parse().ok()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    wsgate::install_crypto();
    let url = loopback_url("ws://127.0.0.1:PORT/ws");
    let secret = arg("--secret").expect("--secret");
    let admin = arg("--admin-key").expect("--admin-key");
    let n: usize = arg("--connections").map_or(10_000, |v| v.parse().expect("number"));
    let publishes: usize = arg("--publishes").map_or(20, |v| v.parse().expect("number"));
    let pid = arg("--pid");
    let api = match arg("--publish-url") {
        Some(base) => format!("{}/api/publish", base.trim_end_matches('/')),
        None => {
            let api = url.replacen("ws://", "http://", 1);
            format!("{}/api/publish", &api[..api.rfind('/').expect("path")])
        }
    };

    let now = wsgate::verify::now_unix();
    let token = token(
        &secret,
        &json!({"sub": "fan", "iat": now, "exp": now + 3600, "channels": ["bench"]}),
    );

    let rss_before = pid.as_deref().and_then(rss_kib);
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let started = Instant::now();
    for _ in 0..n {
        let mut ws = connect(&url, &token).await;
        ws.next().await; // welcome
        ws.send(Message::text(r#"{"type":"subscribe","channel":"bench"}"#))
            .await
            .expect("send");
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("subscribed") => {}
            other => panic!("not subscribed: {other:?}"),
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    let at = Instant::now();
                    // The tool must cost less than the server: no JSON tree per delivery.
                    if let Some(k) = publish_number(&t) {
                        let _ = tx.send((k, at));
                    }
                }
            }
        });
    }
    println!(
        "opened and subscribed {n} sockets in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let (Some(before), Some(after)) = (rss_before, pid.as_deref().and_then(rss_kib)) {
        println!(
            "server RSS {before} -> {after} KiB: {:.2} KiB per subscribed socket",
            (after - before) as f64 / n as f64
        );
    }

    let http = reqwest::Client::new();
    let mut last_ms = Vec::new();
    let mut rates = Vec::new();
    for k in 0..publishes as u64 {
        let t0 = Instant::now();
        let res = http
            .post(&api)
            .bearer_auth(&admin)
            .json(&json!({"channel": "bench", "data": {"k": k}}))
            .send()
            .await
            .expect("post");
        let delivered: Value = res.json().await.expect("json");
        // Through another node, `delivered` counts that node's subscribers (none).
        if arg("--publish-url").is_none() {
            assert_eq!(
                delivered["delivered"].as_u64(),
                Some(n as u64),
                "{delivered}"
            );
        }
        let mut got = 0;
        let mut last = t0;
        while got < n {
            let (kk, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("deliveries stalled")
                .expect("channel");
            if kk == k {
                got += 1;
                last = last.max(at);
            }
        }
        let took = last.duration_since(t0).as_secs_f64();
        last_ms.push(took * 1e3);
        rates.push(n as f64 / took);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last_ms.sort_by(f64::total_cmp);
    rates.sort_by(f64::total_cmp);
    let q = |v: &[f64], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "publish -> last of {n} subscribers: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {publishes} publishes",
        q(&last_ms, 0.5),
        q(&last_ms, 0.99),
        last_ms[last_ms.len() - 1]
    );
    println!(
        "deliveries per second (median publish): {:.0}",
        q(&rates, 0.5)
    );
}
