//! Cluster mode against a real Redis: each test starts its own `redis-server` on a
//! free port and two or three `wsgate` nodes, and checks what crosses nodes — delivery,
//! disconnects and revocations, single-use tickets, per-user limits — and what happens when
//! Redis dies and comes back on the same port.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "cluster-admin-key";

/// A private `redis-server` (no persistence), killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut r = Redis { child: None, port };
        r.restart();
        r
    }

    /// Starts (again) on the same port and waits until it answers.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.child = Some(child);
        let started = Instant::now();
        while self.connection().is_err() {
            assert!(started.elapsed() < WAIT, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let mut c = redis::Client::open(self.url())?.get_connection()?;
        redis::cmd("PING").query::<String>(&mut c)?;
        Ok(c)
    }

    /// Redis channels with subscribers, matching `pattern`.
    fn channels(&self, pattern: &str) -> Vec<String> {
        let mut c = self.connection().expect("redis");
        let mut v: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(pattern)
            .query(&mut c)
            .expect("PUBSUB CHANNELS");
        v.sort();
        v
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(redis: &Redis, extra: &str) -> String {
    format!(
        r#"
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
[cluster]
redis_url = "{}"
key_prefix = "t:"
{extra}
[[endpoints]]
path = "/ws"
kind = "pubsub"
[[endpoints]]
path = "/echo"
kind = "echo"
"#,
        redis.url()
    )
}

async fn node(redis: &Redis, extra: &str) -> Server {
    Server::start_with(&config(redis, extra), &[("WSGATE_ADMIN_KEY", ADMIN_KEY)]).await
}

fn tok(sub: &str) -> String {
    hs256(&json!({
        "sub": sub, "iat": now(), "exp": now() + 3600, "jti": format!("{sub}-{}", now()),
        "channels": ["room:*"], "publish": ["room:*"],
    }))
}

async fn join(s: &Server, token: &str) -> Ws {
    let mut ws = bearer(&s.url("/ws"), token).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    ws
}

async fn subscribe(ws: &mut Ws, channel: &str) {
    send_text(
        ws,
        &json!({"type": "subscribe", "channel": channel}).to_string(),
    )
    .await;
    let answer = next_json(ws).await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
}

async fn post(s: &Server, path: &str, auth: &str, body: Value) -> (u16, Value) {
    common::post(&s.http(path), Some(auth), Some(&body)).await
}

async fn readyz(s: &Server) -> u16 {
    match reqwest::get(s.http("/readyz")).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Polls until `f` holds, bounded by [`WAIT`].
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The HTTP status a bearer handshake gets (101 when upgraded).
async fn handshake_status(url: &str, token: &str) -> u16 {
    match connect(url, &[("authorization", &format!("Bearer {token}"))]).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

/// Reads until a `message` frame; returns its data.
async fn next_message(ws: &mut Ws) -> Value {
    loop {
        let f = next_json(ws).await;
        if f["type"] == "message" {
            return f;
        }
    }
}

/// Asserts nothing more arrives for a moment (no duplicate).
async fn nothing_more(ws: &mut Ws) {
    use futures_util::StreamExt;
    if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
        assert!(!m.is_text(), "unexpected frame: {m:?}");
    }
}

#[tokio::test]
async fn messages_cross_nodes_once_each_in_order() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "").await, node(&redis, "").await);
    let mut on_a = join(&a, &tok("alice")).await;
    let mut on_b = join(&b, &tok("bob")).await;
    assert!(redis.channels("t:ch:*").is_empty(), "no interest yet");
    subscribe(&mut on_a, "room:1").await;
    // Subscribed in Redis only where there is a local subscriber, and before `subscribed`.
    assert_eq!(redis.channels("t:ch:*"), ["t:ch:room:1"]);
    subscribe(&mut on_b, "room:1").await;

    // A client on B publishes 20 messages: everyone gets each once, in order.
    for k in 0..20 {
        let frame = json!({"type": "publish", "channel": "room:1", "data": {"k": k}});
        send_text(&mut on_b, &frame.to_string()).await;
    }
    for ws in [&mut on_a, &mut on_b] {
        for k in 0..20 {
            let m = next_message(ws).await;
            assert_eq!(m["data"]["k"], k, "{m}");
            assert_eq!(m["from"], "bob");
            assert_eq!(m["channel"], "room:1");
        }
        nothing_more(ws).await;
    }

    // The backend publishes on A: B's subscriber gets it too.
    let (status, body) = post(
        &a,
        "/api/publish",
        ADMIN_KEY,
        json!({"channel": "room:1", "data": "from backend"}),
    )
    .await;
    assert_eq!(
        (status, body["delivered"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let m = next_message(&mut on_b).await;
    assert_eq!(
        (m["data"].as_str(), m["from"].is_null()),
        (Some("from backend"), true)
    );
    assert_eq!(next_message(&mut on_a).await["data"], "from backend");

    // Last local subscriber leaves → the node leaves the Redis channel.
    send_text(&mut on_a, r#"{"type":"unsubscribe","channel":"room:1"}"#).await;
    assert_eq!(next_json(&mut on_a).await["type"], "unsubscribed");
    drop(on_b);
    eventually("Redis channel released", async || {
        redis.channels("t:ch:*").is_empty()
    })
    .await;
}

#[tokio::test]
async fn redis_subscriptions_follow_local_interest_under_churn() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "").await, node(&redis, "").await);

    // Twenty sockets join twenty channels at once: each one is live in Redis when answered.
    let mut sockets = Vec::new();
    for i in 0..20 {
        sockets.push(join(&a, &tok(&format!("u{i}"))).await);
    }
    futures_util::future::join_all(
        sockets
            .iter_mut()
            .enumerate()
            .map(|(i, ws)| async move { subscribe(ws, &format!("room:u{i}")).await }),
    )
    .await;
    let mut want: Vec<String> = (0..20).map(|i| format!("t:ch:room:u{i}")).collect();
    want.sort();
    assert_eq!(redis.channels("t:ch:room:u*"), want);

    // One socket holds `room:x` while another joins and leaves it over and over: the node
    // must never leave Redis under the holder.
    let mut holder = join(&a, &tok("holder")).await;
    subscribe(&mut holder, "room:x").await;
    let mut churner = join(&a, &tok("churner")).await;
    for _ in 0..15 {
        subscribe(&mut churner, "room:x").await;
        send_text(&mut churner, r#"{"type":"unsubscribe","channel":"room:x"}"#).await;
        assert_eq!(next_json(&mut churner).await["type"], "unsubscribed");
    }
    assert_eq!(redis.channels("t:ch:room:x"), ["t:ch:room:x"]);
    let (status, _) = post(
        &b,
        "/api/publish",
        ADMIN_KEY,
        json!({"channel": "room:x", "data": "still here"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(next_message(&mut holder).await["data"], "still here");
    nothing_more(&mut churner).await;

    // The twenty leave: so do their Redis channels; `room:x` stays.
    drop(sockets);
    eventually("Redis channels released", async || {
        redis.channels("t:ch:*") == ["t:ch:room:x"]
    })
    .await;
}

#[tokio::test]
async fn key_prefix_separates_deployments_on_one_redis() {
    let redis = Redis::start();
    let a = node(&redis, "").await;
    let other = Server::start_with(
        &config(&redis, "").replace("key_prefix = \"t:\"", "key_prefix = \"other:\""),
        &[("WSGATE_ADMIN_KEY", ADMIN_KEY)],
    )
    .await;
    let mut mine = join(&a, &tok("alice")).await;
    let mut theirs = join(&other, &tok("alice")).await;
    subscribe(&mut mine, "room:x").await;
    subscribe(&mut theirs, "room:x").await;
    let (status, _) = post(
        &a,
        "/api/publish",
        ADMIN_KEY,
        json!({"channel": "room:x", "data": 1}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(next_message(&mut mine).await["data"], 1);
    nothing_more(&mut theirs).await;
}

#[tokio::test]
async fn disconnect_and_revocation_reach_every_node() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis, "").await, node(&redis, "").await);
    let alice = tok("alice");
    let mut alice_a = join(&a, &alice).await;
    let mut alice_b = join(&b, &alice).await;
    let mut carol_b = bearer(&b.url("/echo"), &tok("carol")).await;
    let welcome = next_json(&mut carol_b).await;
    let carol_session = welcome["session"].as_str().expect("session id").to_owned();

    // By session, asked on A, for a socket on B.
    let (status, body) = post(
        &a,
        "/api/disconnect",
        ADMIN_KEY,
        json!({"session": carol_session}),
    )
    .await;
    assert_eq!((status, body["closed"].as_u64()), (200, Some(0)), "{body}");
    assert_eq!(expect_close(&mut carol_b).await.0, 4003);

    // By subject with revoke, asked on A: both of alice's sockets close...
    let (status, body) = post(
        &a,
        "/api/disconnect",
        ADMIN_KEY,
        json!({"sub": "alice", "revoke": true}),
    )
    .await;
    assert_eq!((status, body["closed"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(expect_close(&mut alice_a).await, (4003, "revoked".into()));
    assert_eq!(expect_close(&mut alice_b).await, (4003, "revoked".into()));
    // ...and her token is refused on every node, including one started afterwards.
    assert_invalid(&b.url("/echo"), &alice).await;
    let c_dir = tempfile::tempdir().expect("tempdir");
    let c_storage = format!(
        "[storage]\npath = \"{}\"\n",
        c_dir.path().join("c.db").display()
    );
    let c = node(&redis, &c_storage).await;
    assert_invalid(&c.url("/echo"), &alice).await;
    // Others are untouched.
    bearer(&c.url("/echo"), &tok("dave")).await;
    // What the late node learned from Redis is in its own store too: restarted while Redis
    // is down, it still refuses her.
    drop(c);
    redis.kill();
    let c = node(&redis, &c_storage).await;
    assert_invalid(&c.url("/echo"), &alice).await;
}

/// A Shared Signals transmitter: its key set served on loopback, one signed RISC
/// account-disabled SET (`jti`) for the opaque subject `sub`. The `[ssf]` section to
/// configure and the SET.
async fn transmitter(jti: &str, sub: &str) -> (String, Vec<String>) {
    let jwks = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    let served = jwks.clone();
    let router = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let jwks = served.lock().unwrap().clone();
            async move { axum::Json(jwks) }
        }),
    );
    let iss = format!("http://{}", http_backend(router).await);
    let event = json!({"payload": {
        "iss": iss, "aud": "https://wsgate.test", "iat": now(), "jti": jti,
        "events": {"https://schemas.openid.net/secevent/risc/event-type/account-disabled": {
            "subject": {"format": "opaque", "id": sub}}}
    }});
    let (keys, sets) = sign_sets(&[event]).await;
    *jwks.lock().unwrap() = keys;
    let ssf = format!(
        "[ssf]\nissuer = \"{iss}\"\njwks_url = \"{iss}/jwks.json\"\naudience = \"https://wsgate.test\"\n"
    );
    (ssf, sets)
}

async fn push_set(s: &Server, set: &str) -> u16 {
    let res = reqwest::Client::new()
        .post(s.http("/api/ssf/events"))
        .body(set.to_owned())
        .send()
        .await
        .expect("push");
    res.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_signal_pushed_to_one_node_closes_sockets_on_another_once() {
    let redis = Redis::start();
    let (ssf, sets) = transmitter("cluster-1", "alice").await;
    let (a, b) = (node(&redis, &ssf).await, node(&redis, &ssf).await);
    let alice = hs256(&json!({
        "sub": "alice", "iat": now() - 5, "exp": now() + 3600, "channels": ["room:*"],
    }));
    let mut alice_b = join(&b, &alice).await;
    let mut bob_b = join(&b, &tok("bob")).await;
    assert_eq!(push_set(&a, &sets[0]).await, 202);
    assert_eq!(expect_close(&mut alice_b).await, (4003, "revoked".into()));
    subscribe(&mut bob_b, "room:1").await;
    // Her tokens issued before the event are refused on every node.
    assert_invalid(&b.url("/ws"), &alice).await;
    // The same SET delivered again, to the other node: taken once for the whole cluster.
    assert_eq!(push_set(&b, &sets[0]).await, 202);
    let m = b.metrics().await;
    assert!(
        m.contains("wsgate_ssf_events_total{event=\"account-disabled\",outcome=\"duplicate\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("wsgate_revocation_to_close_seconds_count{cause=\"ssf\"} 1"),
        "measured on the node that closed the socket:\n{m}"
    );
}

#[tokio::test]
async fn a_ticket_is_redeemed_once_across_nodes() {
    let redis = Redis::start();
    let nodes = [
        node(&redis, "").await,
        node(&redis, "").await,
        node(&redis, "").await,
    ];
    for round in 0..3 {
        let (status, body) = post(&nodes[round], "/api/tickets", &tok("alice"), json!({})).await;
        assert_eq!(status, 200, "{body}");
        let ticket = body["ticket"].as_str().expect("ticket").to_owned();
        // Twelve handshakes, four per node, all at once.
        let attempts = (0..12).map(|i| {
            let url = format!("{}?ticket={ticket}", nodes[i % 3].url("/echo"));
            async move { connect(&url, &[]).await.is_ok() }
        });
        let won = futures_util::future::join_all(attempts)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
        assert_eq!(
            won, 1,
            "round {round}: exactly one handshake redeems the ticket"
        );
    }
}

#[tokio::test]
async fn per_user_limit_counts_every_node() {
    let redis = Redis::start();
    let limits = "[limits]\nmax_connections_per_user = 2";
    let (a, b) = (node(&redis, limits).await, node(&redis, limits).await);
    let t = tok("alice");
    let first = bearer(&a.url("/echo"), &t).await;
    let _second = bearer(&b.url("/echo"), &t).await;
    for s in [&a, &b] {
        let r = refused(
            &s.url("/echo"),
            &[("authorization", &format!("Bearer {t}"))],
        )
        .await;
        assert_eq!(r.status, 403, "{}", r.body);
    }
    bearer(&b.url("/echo"), &tok("bob")).await;
    // A slot given back on A is free on B.
    drop(first);
    eventually("slot given back across nodes", async || {
        handshake_status(&b.url("/echo"), &t).await == 101
    })
    .await;
}

/// A burst of disconnects is given back to Redis in batches (one script call for everything
/// queued): every slot of every subject comes back, counted per subject.
#[tokio::test]
async fn a_burst_of_disconnects_gives_every_slot_back() {
    let redis = Redis::start();
    let limits = "[limits]\nmax_connections_per_user = 12";
    let (a, b) = (node(&redis, limits).await, node(&redis, limits).await);
    let (carol, dave) = (tok("carol"), tok("dave"));
    let mut held = Vec::new();
    for t in [&carol, &dave] {
        for _ in 0..12 {
            held.push(bearer(&a.url("/echo"), t).await);
        }
        assert_eq!(
            handshake_status(&b.url("/echo"), t).await,
            403,
            "full everywhere"
        );
    }
    drop(held); // 24 disconnects at once
    let mut again = Vec::new();
    for t in [&carol, &dave] {
        let auth = format!("Bearer {t}");
        let mut mine = 0;
        eventually("every slot given back", async || {
            if let Ok(ws) = connect(&b.url("/echo"), &[("authorization", &auth)]).await {
                again.push(ws);
                mine += 1;
            }
            mine == 12
        })
        .await;
        assert_eq!(
            handshake_status(&a.url("/echo"), t).await,
            403,
            "and counted again"
        );
    }
}

#[tokio::test]
async fn nodes_survive_a_redis_restart_and_recover_by_themselves() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis, "").await, node(&redis, "").await);
    assert_eq!((readyz(&a).await, readyz(&b).await), (200, 200));
    let mut on_a = join(&a, &tok("alice")).await;
    let mut on_b = join(&b, &tok("bob")).await;
    subscribe(&mut on_a, "room:1").await;
    subscribe(&mut on_b, "room:1").await;
    // A revocation made before the outage.
    let (mallory, xavier) = (tok("mallory"), tok("xavier"));
    let (status, _) = post(
        &a,
        "/api/disconnect",
        ADMIN_KEY,
        json!({"sub": "mallory", "revoke": true}),
    )
    .await;
    assert_eq!(status, 200);

    redis.kill();
    eventually("not ready while Redis is down", async || {
        readyz(&a).await == 503 && readyz(&b).await == 503
    })
    .await;
    // Still serving: new handshakes with stateless credentials, echo, local delivery...
    let mut echo = bearer(&b.url("/echo"), &tok("erin")).await;
    next_json(&mut echo).await;
    send_text(&mut echo, "still here").await;
    assert_eq!(next_text(&mut echo).await, "still here");
    let (status, body) = post(
        &b,
        "/api/publish",
        ADMIN_KEY,
        json!({"channel": "room:1", "data": "local"}),
    )
    .await;
    assert_eq!(
        (status, body["delivered"].as_u64()),
        (503, Some(1)),
        "{body}"
    );
    assert_eq!(next_message(&mut on_b).await["data"], "local");
    send_text(
        &mut on_b,
        r#"{"type":"publish","channel":"room:1","data":"mine","id":1}"#,
    )
    .await;
    // Its own subscribers hear it; the publisher is told it went no further (either order).
    let mut got = [next_json(&mut on_b).await, next_json(&mut on_b).await];
    got.sort_by_key(|f| f["type"].to_string());
    assert_eq!(
        (got[0]["type"].as_str(), got[0]["code"].as_str()),
        (Some("error"), Some("unavailable")),
        "{got:?}"
    );
    assert_eq!(got[1]["data"], "mine", "{got:?}");
    send_text(&mut on_b, r#"{"type":"subscribe","channel":"room:2"}"#).await;
    let answer = next_json(&mut on_b).await;
    assert_eq!(
        answer["code"], "unavailable",
        "not live on every node: {answer}"
    );
    // ...the revocation from before is still enforced...
    assert_invalid(&b.url("/echo"), &mallory).await;
    // ...and what needs the cluster says so instead of half-working.
    let (status, body) = post(&a, "/api/tickets", &tok("alice"), json!({})).await;
    assert_eq!(status, 503, "{body}");
    // (A revocation asked for now holds on this node at once, and everywhere once Redis is back.)
    let (status, body) = post(
        &a,
        "/api/disconnect",
        ADMIN_KEY,
        json!({"sub": "xavier", "revoke": true}),
    )
    .await;
    assert_eq!((status, body["revoked"].as_u64()), (503, Some(1)), "{body}");
    assert_invalid(&a.url("/echo"), &xavier).await;
    b.logs_once("Redis unreachable", 1).await;
    let metrics = reqwest::get(b.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("wsgate_cluster_up 0"), "{metrics}");

    // Same port again: both nodes come back without a restart and resubscribe.
    redis.restart();
    eventually("ready again", async || {
        readyz(&a).await == 200 && readyz(&b).await == 200
    })
    .await;
    assert_eq!(redis.channels("t:ch:*"), ["t:ch:room:1"]);
    for k in 0..5 {
        let (status, _) = post(
            &a,
            "/api/publish",
            ADMIN_KEY,
            json!({"channel": "room:1", "data": k}),
        )
        .await;
        assert_eq!(status, 200);
    }
    for ws in [&mut on_a, &mut on_b] {
        for k in 0..5 {
            assert_eq!(next_message(ws).await["data"], k);
        }
        nothing_more(ws).await;
    }
    // Redis lost everything (no persistence); the nodes gave their revocations back, and the
    // one made during the outage reached the other node.
    assert_invalid(&a.url("/echo"), &mallory).await;
    eventually("the outage's revocation shared", async || {
        handshake_status(&b.url("/echo"), &xavier).await == 401
    })
    .await;
    let mut c = redis.connection().unwrap();
    let mut kept: Vec<String> = redis::cmd("KEYS").arg("t:revoked:*").query(&mut c).unwrap();
    kept.sort();
    assert_eq!(kept, ["t:revoked:sub:mallory", "t:revoked:sub:xavier"]);
}

#[tokio::test]
async fn a_node_starts_without_redis_and_joins_when_it_appears() {
    let mut redis = Redis::start();
    redis.kill();
    let a = node(&redis, "").await;
    assert_eq!(readyz(&a).await, 503);
    bearer(&a.url("/echo"), &tok("alice")).await;
    redis.restart();
    eventually("ready once Redis answers", async || readyz(&a).await == 200).await;
}

#[tokio::test]
async fn an_absurd_exp_is_revoked_on_every_node_and_survives_a_redis_blip() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis, "").await, node(&redis, "").await);
    // A backend that answers in nanoseconds: exp = 10^16.
    let far = hs256(
        &json!({"sub": "far", "jti": "far-1", "iat": now(), "exp": 10_000_000_000_000_000u64}),
    );
    let mut on_a = join(&a, &far).await;
    let mut on_b = join(&b, &far).await;
    let (status, body) = post(
        &a,
        "/api/disconnect",
        ADMIN_KEY,
        json!({"sub": "far", "revoke": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(expect_close(&mut on_a).await.0, 4003);
    assert_eq!(
        expect_close(&mut on_b).await.0,
        4003,
        "the order reached node B"
    );
    assert_invalid(&b.url("/echo"), &far).await;
    // After a Redis blip both nodes resync and become ready again.
    redis.kill();
    eventually("not ready while Redis is down", async || {
        readyz(&a).await == 503 && readyz(&b).await == 503
    })
    .await;
    redis.restart();
    eventually("ready again after Redis is back", async || {
        readyz(&a).await == 200 && readyz(&b).await == 200
    })
    .await;
    assert_invalid(&a.url("/echo"), &far).await;
    let (status, _) = common::post(&b.http("/api/tickets"), Some(&tok("carol")), None).await;
    assert_eq!(status, 200, "tickets work after the resync");
}

/// A private Redis Cluster: three masters on free ports (each port + 10,000 free too, for
/// the cluster bus), slots assigned by `redis-cli --cluster create`; killed on drop.
struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    fn start() -> RedisCluster {
        Self::start_with(0)
    }

    /// `replicas` per master (0 or 1): with 1, six nodes, and a killed master fails over.
    fn start_with(replicas: usize) -> RedisCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ports = Vec::new();
        while ports.len() < 3 * (1 + replicas) {
            let l = TcpListener::bind("127.0.0.1:0").expect("free port");
            let port = l.local_addr().unwrap().port();
            if port < 55_000
                && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
                && !ports.contains(&port)
            {
                ports.push(port);
            }
        }
        let nodes = ports
            .iter()
            .map(|port| {
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                    .arg("--cluster-config-file")
                    .arg(dir.path().join(format!("nodes-{port}.conf")))
                    .arg("--dir")
                    .arg(dir.path())
                    .args(["--save", "", "--appendonly", "no"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server is installed (apt-get install redis-server)")
            })
            .collect();
        let c = RedisCluster {
            nodes,
            ports,
            _dir: dir,
        };
        let started = Instant::now();
        for port in &c.ports {
            while Self::cli(*port, &["PING"]).trim() != "PONG" {
                assert!(started.elapsed() < WAIT, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addrs: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stdout)
        );
        for port in &c.ports {
            while !Self::cli(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(started.elapsed() < WAIT * 2, "the cluster did not form");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Replicas must have synced once to be eligible for a failover.
        for port in &c.ports {
            loop {
                let info = Self::cli(*port, &["INFO", "replication"]);
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(
                    started.elapsed() < WAIT * 3,
                    "a replica did not sync:\n{info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        c
    }

    /// Kills the master that owns `slot`; returns its port.
    fn kill_master_of(&mut self, slot: u16) -> u16 {
        let slots = Self::cli(self.ports[0], &["CLUSTER", "SHARDS"]);
        // Simplest robust way: ask each node whether it is a master serving the slot.
        for (i, port) in self.ports.clone().into_iter().enumerate() {
            let role = Self::cli(port, &["ROLE"]);
            let owns = Self::cli(port, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
            let info = Self::cli(port, &["CLUSTER", "NODES"]);
            let me = info
                .lines()
                .find(|l| l.contains("myself"))
                .unwrap_or_default();
            if role.starts_with("master") && owns.trim().parse::<u64>().is_ok() && serves(me, slot)
            {
                let _ = self.nodes[i].kill();
                let _ = self.nodes[i].wait();
                return port;
            }
        }
        panic!("no master serves slot {slot}: {slots}");
    }

    fn cli(port: u16, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn config(&self, extra: &str) -> String {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("\"redis://127.0.0.1:{p}\""))
            .collect();
        format!(
            r#"
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
[cluster]
redis_cluster = [{}]
key_prefix = "rc:"
[limits]
{extra}
[[endpoints]]
path = "/ws"
kind = "pubsub"
[[endpoints]]
path = "/echo"
kind = "echo"
"#,
            seeds.join(", ")
        )
    }

    async fn node(&self, extra: &str) -> Server {
        Server::start_with(&self.config(extra), &[("WSGATE_ADMIN_KEY", ADMIN_KEY)]).await
    }
}

/// Whether a `CLUSTER NODES` line's slot ranges include `slot`.
fn serves(line: &str, slot: u16) -> bool {
    line.split_whitespace().skip(8).any(|range| {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        match (lo.parse::<u16>(), hi.parse::<u16>()) {
            (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
            _ => false,
        }
    })
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

#[tokio::test]
async fn on_a_redis_cluster_messages_revocations_tickets_and_limits_cross_nodes() {
    let rc = RedisCluster::start();
    let (ssf, sets) = transmitter("rc-1", "signalled").await;
    let limits = format!("max_connections_per_user = 1\n{ssf}");
    let (a, b) = (rc.node(&limits).await, rc.node(&limits).await);
    eventually("both nodes ready", async || {
        readyz(&a).await == 200 && readyz(&b).await == 200
    })
    .await;
    // Channels spread over the shards: subscribers on A, publisher on B.
    let mut sub = join(&a, &tok("subscriber")).await;
    let channels: Vec<String> = (0..8).map(|i| format!("room:{i}")).collect();
    for c in &channels {
        subscribe(&mut sub, c).await;
    }
    for c in &channels {
        let (status, body) = post(
            &b,
            "/api/publish",
            ADMIN_KEY,
            json!({"channel": c, "data": c}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let mut got: Vec<String> = Vec::new();
    for _ in &channels {
        let m = next_json(&mut sub).await;
        assert_eq!(m["type"], "message", "{m}");
        got.push(m["channel"].as_str().unwrap().to_owned());
    }
    got.sort();
    assert_eq!(got, channels, "each message once");
    // Sharded pub/sub really was used, on more than one shard.
    let shards_with_channels = rc
        .ports
        .iter()
        .filter(|p| {
            !RedisCluster::cli(**p, &["PUBSUB", "SHARDCHANNELS", "rc:ch:*"])
                .trim()
                .is_empty()
        })
        .count();
    assert!(
        shards_with_channels >= 2,
        "channels on {shards_with_channels} shard(s)"
    );

    // The per-user limit counts the whole cluster: the subscriber's slot is taken on A.
    let r = refused(
        &b.url("/echo"),
        &[("authorization", &format!("Bearer {}", tok("subscriber")))],
    )
    .await;
    assert_eq!(r.status, 403);

    // A ticket issued on B redeems once, on A.
    let (status, body) = post(&b, "/api/tickets", &tok("ticket-user"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let ticket = body["ticket"].as_str().unwrap().to_owned();
    let mut ws = connect_ok(&a.url(&format!("/echo?ticket={ticket}")), &[]).await;
    assert_eq!(next_json(&mut ws).await["sub"], "ticket-user");
    drop(ws);
    let r = refused(&b.url(&format!("/echo?ticket={ticket}")), &[]).await;
    assert_eq!(r.status, 401);

    // A Shared Signals event pushed to B closes the socket on A, and is taken once: the
    // same SET pushed to A is a duplicate for the whole cluster.
    let signalled = hs256(&json!({"sub": "signalled", "iat": now() - 5, "exp": now() + 600}));
    let mut on_a = bearer(&a.url("/echo"), &signalled).await;
    next_json(&mut on_a).await;
    assert_eq!(push_set(&b, &sets[0]).await, 202);
    assert_eq!(expect_close(&mut on_a).await, (4003, "revoked".into()));
    assert_eq!(push_set(&a, &sets[0]).await, 202);
    let m = a.metrics().await;
    assert!(m.contains("outcome=\"duplicate\"} 1"), "{m}");
    assert_invalid(&a.url("/echo"), &signalled).await;

    // A revocation asked on B closes the socket on A and is refused on both.
    let (status, body) = post(
        &b,
        "/api/disconnect",
        ADMIN_KEY,
        json!({"sub": "subscriber", "revoke": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(expect_close(&mut sub).await.0, 4003);
    assert_invalid(&a.url("/echo"), &tok("subscriber")).await;
}

#[tokio::test]
async fn a_crashed_node_locks_no_one_out() {
    let redis = Redis::start();
    let limits = "[limits]\nmax_connections_per_user = 1";
    let (a, b) = (node(&redis, limits).await, node(&redis, limits).await);
    let t = tok("carol");
    let _on_a = bearer(&a.url("/echo"), &t).await;
    // Her one slot is taken on A, so B refuses a second connection...
    assert_eq!(handshake_status(&b.url("/echo"), &t).await, 403);
    // ...until A dies without a goodbye: its slots must not hold her out for long.
    a.crash().await;
    let crashed = Instant::now();
    let bearer_header = format!("Bearer {t}");
    let _on_b = loop {
        if let Ok((ws, _)) = connect(&b.url("/echo"), &[("authorization", &bearer_header)]).await {
            break ws;
        }
        assert!(
            crashed.elapsed() < Duration::from_secs(6),
            "still refused {:?} after the crash",
            crashed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A live node's users still count: B holds her slot now.
    assert_eq!(handshake_status(&b.url("/echo"), &t).await, 403);
    assert_eq!(handshake_status(&b.url("/echo"), &t).await, 403);
}

#[tokio::test]
async fn a_redis_cluster_master_failover_is_survived_like_an_outage() {
    let mut rc = RedisCluster::start_with(1);
    let (a, b) = (rc.node("").await, rc.node("").await);
    eventually("both nodes ready", async || {
        readyz(&a).await == 200 && readyz(&b).await == 200
    })
    .await;
    let mut sub = join(&a, &tok("listener")).await;
    subscribe(&mut sub, "room:failover").await;
    // Kill the master holding every key of the deployment ("{rc:}" -> slot of "rc:").
    let slot = wsgate_server::cluster::slot_of(b"rc:");
    rc.kill_master_of(slot);
    // The replica takes over; the nodes notice, resync and are ready again by themselves.
    let started = Instant::now();
    loop {
        let (status, _) = post(&b, "/api/tickets", &tok("after-failover"), json!({})).await;
        if status == 200 && readyz(&a).await == 200 && readyz(&b).await == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not back {:?} after the failover: tickets {status}, readyz {} {}\n{}",
            started.elapsed(),
            readyz(&a).await,
            readyz(&b).await,
            b.logs()
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A revocation after the failover reaches the other node; delivery works again.
    let (status, body) = post(
        &b,
        "/api/disconnect",
        ADMIN_KEY,
        json!({"sub": "listener", "revoke": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(expect_close(&mut sub).await.0, 4003);
    let mut sub = join(&a, &tok("listener2")).await;
    subscribe(&mut sub, "room:failover").await;
    // (`delivered` counts the publishing node's own subscribers: none on B.)
    let mut last = (0, Value::Null);
    let started = Instant::now();
    while last.0 != 200 {
        assert!(
            started.elapsed() < WAIT,
            "publish after the failover: {last:?}"
        );
        last = post(
            &b,
            "/api/publish",
            ADMIN_KEY,
            json!({"channel": "room:failover", "data": "back"}),
        )
        .await;
    }
    assert_eq!(next_message(&mut sub).await["data"], json!("back"));
}

#[tokio::test]
async fn every_nodes_events_land_in_one_redis_stream_read_back_with_xrange() {
    let redis = Redis::start();
    let events = "[events]\nredis_stream = \"events\"\nbatch_ms = 20\n";
    let (a, b) = (node(&redis, events).await, node(&redis, events).await);
    let mut on_a = join(&a, &tok("ann")).await;
    let mut on_b = join(&b, &tok("ben")).await;
    on_a.close(None).await.expect("close");
    on_b.close(None).await.expect("close");
    a.terminate().await;
    b.terminate().await;

    let mut conn = redis.connection().expect("redis");
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("t:events")
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .expect("XRANGE");
    let events: Vec<Value> = entries
        .iter()
        .map(|(_, fields)| {
            assert_eq!(fields[0].0, "event");
            serde_json::from_str(&fields[0].1).expect("JSON")
        })
        .collect();
    let count = |kind: &str| events.iter().filter(|e| e["type"] == kind).count();
    assert_eq!(count("node_started"), 2, "{events:?}");
    assert_eq!(count("node_stopped"), 2, "{events:?}");
    assert_eq!(count("closed"), 2, "{events:?}");
    let connected: Vec<&Value> = events.iter().filter(|e| e["type"] == "connected").collect();
    assert_eq!(connected.len(), 2);
    assert_ne!(
        connected[0]["node"], connected[1]["node"],
        "one stream, both nodes"
    );
    let subs: Vec<&str> = connected
        .iter()
        .map(|e| e["sub"].as_str().unwrap())
        .collect();
    assert!(subs.contains(&"ann") && subs.contains(&"ben"));
}
