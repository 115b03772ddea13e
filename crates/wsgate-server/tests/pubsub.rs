//! The pubsub protocol: every frame type and error code, the permission matrix,
//! fan-out, slow consumers, and backend publish.

mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const ADMIN_KEY: &str = "pubsub-admin-key";
const CONFIG: &str = r#"
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
[limits]
messages_per_sec = 100000
[[endpoints]]
path = "/ws"
kind = "pubsub"
"#;

async fn start() -> Server {
    Server::start_with(CONFIG, &[("WSGATE_ADMIN_KEY", ADMIN_KEY)]).await
}

fn tok(sub: &str, channels: &[&str], publish: &[&str]) -> String {
    hs256(&json!({"sub": sub, "exp": now() + 3600, "channels": channels, "publish": publish}))
}

async fn join(s: &Server, token: &str) -> Ws {
    let mut ws = bearer(&s.url("/ws"), token).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    ws
}

async fn ask(ws: &mut Ws, frame: Value) -> Value {
    send_text(ws, &frame.to_string()).await;
    next_json(ws).await
}

async fn admin_publish(s: &Server, body: Value) -> (u16, Value) {
    post(&s.http("/api/publish"), Some(ADMIN_KEY), Some(&body)).await
}

#[tokio::test]
async fn every_frame_type_and_id_echo() {
    let s = start().await;
    let mut a = join(&s, &tok("alice", &["chat:*"], &["chat:*"])).await;
    assert_eq!(
        ask(&mut a, json!({"type":"ping","id":"p1"})).await,
        json!({"type":"pong","id":"p1"})
    );
    assert_eq!(
        ask(
            &mut a,
            json!({"type":"subscribe","channel":"chat:lobby","id":{"n":1}})
        )
        .await,
        json!({"type":"subscribed","channel":"chat:lobby","id":{"n":1}})
    );
    // A publisher subscribed to the channel receives its own message, and the ack (the two
    // travel different paths, so in either order).
    send_text(
        &mut a,
        &json!({"type":"publish","channel":"chat:lobby","data":{"text":"hi"},"id":7}).to_string(),
    )
    .await;
    let mut got = vec![next_json(&mut a).await, next_json(&mut a).await];
    got.sort_by_key(|v| v["type"].as_str().map(str::to_owned));
    assert_eq!(
        got,
        vec![
            json!({"type":"message","channel":"chat:lobby","from":"alice","data":{"text":"hi"}}),
            json!({"type":"published","channel":"chat:lobby","id":7}),
        ]
    );
    assert_eq!(
        ask(&mut a, json!({"type":"unsubscribe","channel":"chat:lobby"})).await,
        json!({"type":"unsubscribed","channel":"chat:lobby"})
    );
    // Unsubscribed: publishing (without id) delivers nothing back, the next answer is the pong.
    send_text(
        &mut a,
        &json!({"type":"publish","channel":"chat:lobby","data":1}).to_string(),
    )
    .await;
    assert_eq!(
        ask(&mut a, json!({"type":"ping"})).await,
        json!({"type":"pong"})
    );
}

#[tokio::test]
async fn every_error_code_keeps_the_connection_open() {
    let s = start().await;
    let mut a = join(&s, &tok("alice", &["chat:*"], &[])).await;
    for (frame, code) in [
        ("not json".to_string(), "bad_json"),
        ("[1,2]".to_string(), "bad_json"),
        (json!({"id":1}).to_string(), "missing_field"),
        (json!({"type":"subscribe"}).to_string(), "missing_field"),
        (json!({"type":"nope"}).to_string(), "unknown_type"),
        (
            json!({"type":"subscribe","channel":"has space"}).to_string(),
            "invalid_channel",
        ),
        (
            json!({"type":"subscribe","channel":""}).to_string(),
            "invalid_channel",
        ),
        (
            json!({"type":"subscribe","channel":"secret"}).to_string(),
            "forbidden",
        ),
        (
            json!({"type":"publish","channel":"chat:x","data":1}).to_string(),
            "forbidden",
        ),
    ] {
        send_text(&mut a, &frame).await;
        let e = next_json(&mut a).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{frame}"
        );
        assert!(e["message"].is_string());
    }
    let e = ask(
        &mut a,
        json!({"type":"subscribe","channel":"secret","id":9}),
    )
    .await;
    assert_eq!(
        (e["channel"].as_str(), e["id"].as_u64()),
        (Some("secret"), Some(9))
    );
    a.send(Message::binary(vec![1u8, 2])).await.unwrap();
    assert_eq!(next_json(&mut a).await["code"], "unsupported_frame");
    let mut p = join(&s, &tok("pub", &[], &["chat:*"])).await;
    assert_eq!(
        ask(&mut p, json!({"type":"publish","channel":"chat:x"})).await["code"],
        "missing_field"
    );
    assert_eq!(ask(&mut a, json!({"type":"ping"})).await["type"], "pong");
}

#[tokio::test]
async fn permission_matrix_with_wildcards_and_sub() {
    let s = start().await;
    let mut alice = join(&s, &tok("alice", &["user:{sub}", "news", "rooms:*"], &[])).await;
    for (channel, ok) in [
        ("user:alice", true),
        ("user:bob", false),
        ("news", true),
        ("news:extra", false),
        ("rooms:1", true),
        ("rooms:", true),
        ("room", false),
    ] {
        let answer = ask(&mut alice, json!({"type":"subscribe","channel":channel})).await;
        let expected = if ok { "subscribed" } else { "error" };
        assert_eq!(answer["type"], expected, "{channel}: {answer}");
    }
}

#[tokio::test]
async fn fan_out_reaches_every_subscriber_once_and_backend_publish_counts_them() {
    let s = start().await;
    let mut subs = Vec::new();
    for i in 0..50 {
        let mut ws = join(&s, &tok(&format!("u{i}"), &["feed"], &[])).await;
        assert_eq!(
            ask(&mut ws, json!({"type":"subscribe","channel":"feed"})).await["type"],
            "subscribed"
        );
        subs.push(ws);
    }
    let (status, body) = admin_publish(&s, json!({"channel":"feed","data":{"n":1}})).await;
    assert_eq!((status, body["delivered"].as_u64()), (200, Some(50)));
    for ws in &mut subs {
        assert_eq!(
            next_json(ws).await,
            json!({"type":"message","channel":"feed","from":null,"data":{"n":1}})
        );
    }
    // Exactly once: the next frame each gets is the answer to its own ping.
    for ws in &mut subs {
        assert_eq!(ask(ws, json!({"type":"ping"})).await["type"], "pong");
    }
    assert_eq!(
        admin_publish(&s, json!({"channel":"empty","data":0}))
            .await
            .1["delivered"],
        0
    );
    let body = json!({"channel":"feed","data":1});
    let (status, _) = post(&s.http("/api/publish"), None, Some(&body)).await;
    assert_eq!(status, 401, "admin key required");
}

/// A subscriber waiting for frames gets each publication written to its socket by the
/// publisher itself, no task woken: the path fan-out at the machine's floor stands on,
/// checked through the count of each path.
#[tokio::test]
async fn deliveries_to_a_waiting_subscriber_are_written_by_the_publisher() {
    let s = start().await;
    let mut ws = subscriber(&s, "reader", "news").await;
    for n in 0..20 {
        let (status, body) = admin_publish(&s, json!({"channel":"news","data":n})).await;
        assert_eq!((status, body["delivered"].as_u64()), (200, Some(1)));
        assert_eq!(next_json(&mut ws).await["data"], n);
    }
    let url = s.http("/metrics");
    metrics_show(&url, "wsgate_deliveries_total{path=\"direct\"} 20").await;
    metrics_show(&url, "wsgate_deliveries_total{path=\"queued\"} 0").await;
}

/// Subscribes a fresh connection of `sub` to `channel`.
async fn subscriber(s: &Server, sub: &str, channel: &str) -> Ws {
    let mut ws = join(s, &tok(sub, &[channel], &[])).await;
    assert_eq!(
        ask(&mut ws, json!({"type":"subscribe","channel":channel})).await["type"],
        "subscribed"
    );
    ws
}

/// Waits (bounded) until the server's metrics (at `s.http("/metrics")`) contain `line`.
async fn metrics_show(url: &str, line: &str) {
    metrics_show_within(url, line, WAIT).await
}

/// [`metrics_show`], waiting at most `within`.
async fn metrics_show_within(url: &str, line: &str, within: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = reqwest::get(url).await.unwrap().text().await.unwrap();
        if m.lines().any(|l| l == line) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no `{line}` in {m}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Publishes 1,000 messages of 16 KB on `firehose` (more than the loopback socket buffers
/// and an outbox can hide), each `{"i": n, "pad": …}`.
async fn firehose(s: &Server) {
    let payload = "x".repeat(16_000);
    for i in 0..1000 {
        admin_publish(
            s,
            json!({"channel":"firehose","data":{"i":i,"pad":payload}}),
        )
        .await;
    }
}

/// A subscriber authenticated by its handshake and one authenticated by an `auth` message
/// after the upgrade get deliveries written by the publisher, whole and in order, and
/// answer pings and a Close the same.
#[tokio::test]
async fn either_way_of_authenticating_takes_direct_deliveries_and_answers_the_same() {
    let s = Server::start_with(
        &format!("{CONFIG}\n[auth]\nsources = [\"bearer\", \"message\"]\n"),
        &[("WSGATE_ADMIN_KEY", ADMIN_KEY)],
    )
    .await;
    let own = subscriber(&s, "own", "news").await;
    let mut axums = connect_ok(&s.url("/ws"), &[]).await;
    let auth = json!({"type":"auth","token":tok("axum", &["news"], &[])});
    send_text(&mut axums, &auth.to_string()).await;
    assert_eq!(next_json(&mut axums).await["type"], "welcome");
    let answer = ask(
        &mut axums,
        json!({"type":"subscribe","channel":"news","id":1}),
    )
    .await;
    assert_eq!(answer["type"], "subscribed");
    let mut subs = [own, axums];
    for n in 0..10 {
        let (status, body) = admin_publish(&s, json!({"channel":"news","data":n})).await;
        assert_eq!((status, body["delivered"].as_u64()), (200, Some(2)));
        for ws in &mut subs {
            assert_eq!(next_json(ws).await["data"], n);
        }
    }
    metrics_show(
        &s.http("/metrics"),
        "wsgate_deliveries_total{path=\"direct\"} 20",
    )
    .await;
    for ws in &mut subs {
        ws.send(Message::Ping(vec![7, 7].into())).await.unwrap();
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(ws)).await {
            Ok(Some(Ok(Message::Pong(p)))) => assert_eq!(&p[..], [7, 7]),
            other => panic!("a pong: {other:?}"),
        }
        ws.send(Message::Close(None)).await.unwrap();
        assert_eq!(expect_close(ws).await.0, 1005, "the Close echoed, empty");
    }
    metrics_show(&s.http("/metrics"), "wsgate_connections_open 0").await;
}

#[tokio::test]
async fn a_slow_consumer_is_closed_and_others_keep_receiving() {
    let s = start().await;
    let mut slow = subscriber(&s, "slow", "firehose").await;
    let mut fast = subscriber(&s, "fast", "firehose").await;
    // `fast` keeps reading while the firehose runs: every frame whole and in order, whether
    // the publisher wrote it straight to the socket, in part, or through the socket's task.
    let reader = tokio::spawn(async move {
        for i in 0..1000 {
            let m = next_json(&mut fast).await;
            assert_eq!(m["type"], "message");
            assert_eq!(m["data"]["i"], i, "in publish order");
        }
    });
    // `slow` reads nothing until it has been found slow; then, within the close's wait,
    // what it finally reads ends with the 1008 close.
    let metrics = s.http("/metrics");
    let slow_reader = tokio::spawn(async move {
        // Counted while the firehose runs, and 1,000 publishes of 16 KB over HTTP can take
        // longer than WAIT on a loaded machine: the wait covers the firehose too.
        metrics_show_within(&metrics, "wsgate_slow_consumers_total 1", 3 * WAIT).await;
        loop {
            match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut slow)).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => break u16::from(f.code),
                Ok(Some(Ok(_))) => continue,
                other => panic!("{other:?}"),
            }
        }
    });
    firehose(&s).await;
    reader.await.unwrap();
    assert_eq!(slow_reader.await.unwrap(), 1008);
}

#[tokio::test]
async fn a_subscriber_that_never_reads_cannot_hold_its_socket() {
    let s = start().await;
    let _stuck = subscriber(&s, "stuck", "firehose").await;
    let metrics = s.http("/metrics");
    metrics_show(&metrics, "wsgate_connections_open 1").await;
    // Enough to fill the socket buffers and then the outbox; `_stuck` never reads a byte.
    firehose(&s).await;
    // Closed as slow without its help: the close frame cannot be delivered, and its wait is
    // bounded too.
    metrics_show(&metrics, "wsgate_slow_consumers_total 1").await;
    metrics_show(&metrics, "wsgate_connections_open 0").await;
}

#[tokio::test]
async fn refresh_that_loses_a_permission_unsubscribes() {
    let s = start().await;
    let mut a = join(&s, &tok("alice", &["a", "b"], &[])).await;
    for ch in ["a", "b"] {
        assert_eq!(
            ask(&mut a, json!({"type":"subscribe","channel":ch})).await["type"],
            "subscribed"
        );
    }
    send_text(
        &mut a,
        &json!({"type":"refresh","id":1,"token": tok("alice", &["a"], &[])}).to_string(),
    )
    .await;
    assert_eq!(next_json(&mut a).await["type"], "refreshed");
    assert_eq!(
        next_json(&mut a).await,
        json!({"type":"unsubscribed","channel":"b","reason":"permission"})
    );
    assert_eq!(
        admin_publish(&s, json!({"channel":"b","data":1})).await.1["delivered"],
        0
    );
    assert_eq!(
        admin_publish(&s, json!({"channel":"a","data":1})).await.1["delivered"],
        1
    );
}

#[tokio::test]
async fn a_frames_answer_comes_before_the_deliveries_it_causes() {
    // On one node a publisher's own copy is written by the publisher's socket itself: it
    // must not overtake the `published` answer to the frame that caused it (nor, the same
    // way, any delivery overtake a `subscribed`).
    let s = start().await;
    let mut a = join(&s, &tok("alice", &["chat:*"], &["chat:*"])).await;
    assert_eq!(
        ask(&mut a, json!({"type":"subscribe","channel":"chat:1"})).await["type"],
        "subscribed"
    );
    for id in 0..20 {
        let publish = json!({"type":"publish","channel":"chat:1","data":id,"id":id});
        assert_eq!(
            ask(&mut a, publish).await,
            json!({"type":"published","channel":"chat:1","id":id})
        );
        let own = next_json(&mut a).await;
        assert_eq!(
            (&own["type"], &own["data"]),
            (&json!("message"), &json!(id))
        );
    }
}

/// A client that closes while deliveries pour in gets wsgate's answer to its Close as the
/// last frame on the wire: the publishers' direct writes stop before that answer is written,
/// with no frame-sniffing to catch a Close on its way out.
#[tokio::test]
async fn nothing_follows_the_answer_to_a_clients_close() {
    use tokio::io::AsyncWriteExt;
    const ROUNDS: usize = 40;

    let s = start().await;
    let flood = tok("flood", &["busy"], &["busy"]);
    let done = std::sync::atomic::AtomicBool::new(false);
    // Two publishers, each about 25,000 a second (under the rate limit) until every round is
    // over: the rounds' Close frames land among deliveries a few microseconds apart.
    let publisher = || async {
        let mut ws = join(&s, &flood).await;
        let frame = json!({"type":"publish","channel":"busy","data":"x"}).to_string();
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            for _ in 0..25 {
                ws.feed(Message::text(frame.clone())).await.unwrap();
            }
            ws.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        ws
    };
    let closing = async {
        let mut closed_by_client = 0;
        for round in 0..ROUNDS {
            let (mut tcp, mut seen) =
                raw_subscriber(&s, &tok("reader", &["busy"], &[]), "busy").await;
            // Deliveries are flowing: close (masked, code 1000) in their midst. On a machine
            // too busy to keep up, the server may close first (a slow consumer): then its own
            // Close must be last all the same.
            let before = frames(&seen).0;
            let mut open = true;
            while open && frames(&seen).0 < before + 3 {
                open = read_some(&mut tcp, &mut seen).await;
            }
            if open {
                // (It fails only if the server has just closed first.)
                let close = [0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2];
                if tcp.write_all(&close).await.is_ok() {
                    closed_by_client += 1;
                }
                // Everything until the server ends the connection.
                while read_some(&mut tcp, &mut seen).await {}
            }
            let (count, close_at, left) = frames(&seen);
            assert_eq!(
                (close_at, left),
                (Some(count - 1), 0),
                "round {round}: the server's Close is its last frame ({count} frames), whole"
            );
        }
        assert!(closed_by_client > 0, "no round got to close");
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (a, b, ()) = tokio::join!(publisher(), publisher(), closing);
    drop((a, b));
}

/// A pub/sub connection of `token`'s subject, subscribed to `channel`, as raw TCP, and the
/// frames read so far (its `welcome` and `subscribed`, and maybe more).
async fn raw_subscriber(
    s: &Server,
    token: &str,
    channel: &str,
) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::AsyncWriteExt;

    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n",
        s.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        tokio::time::timeout(
            WAIT,
            tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut byte),
        )
        .await
        .expect("the 101 in time")
        .unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    let subscribe = json!({"type":"subscribe","channel":channel}).to_string();
    let mut frame = vec![
        0x81,
        0x80 | u8::try_from(subscribe.len()).unwrap(),
        0,
        0,
        0,
        0,
    ];
    frame.extend_from_slice(subscribe.as_bytes());
    tcp.write_all(&frame).await.unwrap();
    // The welcome, then the answer to the subscribe.
    let mut seen = Vec::new();
    while frames(&seen).0 < 2 {
        assert!(
            read_some(&mut tcp, &mut seen).await,
            "ended before subscribing"
        );
    }
    assert!(String::from_utf8_lossy(&seen).contains("\"subscribed\""));
    (tcp, seen)
}

/// Reads what comes next onto `into`; `false` once the connection has ended (closed, or
/// reset by a server that closed before reading the client's last bytes).
async fn read_some(tcp: &mut tokio::net::TcpStream, into: &mut Vec<u8>) -> bool {
    let mut buf = [0; 4096];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(tcp, &mut buf))
        .await
        .expect("frames, or the end, in time")
        .unwrap_or(0);
    into.extend_from_slice(&buf[..n]);
    n > 0
}

/// How many whole server frames (unmasked, short) `bytes` holds, where the first Close is
/// among them, and how many bytes are left after them.
fn frames(mut bytes: &[u8]) -> (usize, Option<usize>, usize) {
    let (mut count, mut close_at) = (0, None);
    while let [first, second, rest @ ..] = bytes {
        let (extra, len) = match second & 0x7F {
            126 if rest.len() >= 2 => (2, usize::from(u16::from_be_bytes([rest[0], rest[1]]))),
            126 | 127 => break,
            n => (0, usize::from(n)),
        };
        let Some(next) = rest.get(extra + len..) else {
            break;
        };
        if first & 0x0F == 0x8 && close_at.is_none() {
            close_at = Some(count);
        }
        count += 1;
        bytes = next;
    }
    (count, close_at, bytes.len())
}
