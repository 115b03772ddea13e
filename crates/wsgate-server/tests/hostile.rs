//! Hostile input: what an attacker tries, through raw sockets and forged tokens.
//! Each test names the hole it closes; each failed before its fix.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const ADMIN_KEY: &str = "hostile-admin-key-0123456789";

fn config(extra_top: &str, limits: &str) -> String {
    format!(
        r#"
{extra_top}
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
leeway_secs = 0
[limits]
{limits}
[[endpoints]]
path = "/echo"
kind = "echo"
"#
    )
}

async fn start(extra_top: &str, limits: &str) -> Server {
    Server::start_with(
        &config(extra_top, limits),
        &[("WSGATE_ADMIN_KEY", ADMIN_KEY)],
    )
    .await
}

/// Reads until the server closes the connection; the time it took, or `None` if it stayed
/// open for `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + within),
            tcp.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

/// Sends one complete keep-alive request and reads its whole answer head.
async fn healthz(tcp: &mut TcpStream) {
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("ok") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn keep_alive_slowloris_is_dropped_after_the_first_answer() {
    let s = start("", "handshake_timeout_ms = 600").await;
    // Half of a second request, then nothing.
    let mut half = TcpStream::connect(s.addr).await.unwrap();
    healthz(&mut half).await;
    half.write_all(b"GET /echo HTTP/1.1\r\nHo").await.unwrap();
    // Nothing at all after the first answer.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    healthz(&mut idle).await;
    for tcp in [&mut half, &mut idle] {
        let took = closed_within(tcp, Duration::from_secs(5))
            .await
            .expect("a stalled kept-alive connection must be dropped");
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
    // A connection that keeps making requests in time is served throughout.
    let mut busy = TcpStream::connect(s.addr).await.unwrap();
    for _ in 0..4 {
        healthz(&mut busy).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    s.logs_once("handshake_timeout_ms", 1).await;
}

#[tokio::test]
async fn a_request_body_that_looks_like_a_get_head_suspends_no_deadline() {
    // The deadline waits only while hyper's own parse says a whole body-less GET is being
    // answered; bytes of a body are never read as a request head.
    let s = start("", "handshake_timeout_ms = 600").await;
    let mut post = TcpStream::connect(s.addr).await.unwrap();
    post.write_all(
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    )
    .await
    .unwrap();
    // A GET with a body, answered at once (401), then a body that looks like a GET head.
    let mut get = TcpStream::connect(s.addr).await.unwrap();
    get.write_all(
        b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    )
    .await
    .unwrap();
    for tcp in [&mut post, &mut get] {
        let took = closed_within(tcp, Duration::from_secs(5))
            .await
            .expect("a body that never ends must not hold the connection");
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
}

#[tokio::test]
async fn an_answer_given_before_the_request_was_read_reaches_the_client() {
    // Too many headers: hyper answers 431 before reading the rest. Closing with unread bytes
    // makes the kernel reset the connection, and a client that had not read the answer yet
    // loses it. The server closes in stages (half-close, then reads what still comes).
    let s = start("", "").await;
    // Past hyper's head buffer (~400 KiB): answered 431 while a good part is still unread.
    let mut head = b"GET /echo HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..4000 {
        head.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    for attempt in 0..20 {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        // As a simple client does: send the whole request, then read the answer. The server
        // stops reading midway, so the write may fail; the answer must still be readable.
        let sent = tokio::time::timeout(WAIT, tcp.write_all(&head)).await;
        assert!(
            matches!(sent, Ok(Ok(()))),
            "attempt {attempt}: the request could not be sent whole: {sent:?}"
        );
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(WAIT, tcp.read(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(e)) if got.is_empty() => panic!("attempt {attempt}: {e} before any answer"),
                Ok(Err(_)) => break,
                Err(_) => panic!("attempt {attempt}: no end"),
            }
        }
        assert!(
            got.starts_with(b"HTTP/1.1 431"),
            "attempt {attempt}: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
}

#[tokio::test]
async fn an_upgraded_socket_is_not_held_to_the_handshake_deadline() {
    let s = start("", "handshake_timeout_ms = 400").await;
    let mut ws = bearer(&s.url("/echo"), &hs256(&claims("slow-talker"))).await;
    next_json(&mut ws).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    send_text(&mut ws, "still here").await;
    assert_eq!(next_text(&mut ws).await, "still here");
}

#[tokio::test]
async fn a_fractional_exp_expires() {
    let s = start("", "").await;
    let exp = now() as f64 + 2.4;
    let mut ws = bearer(&s.url("/echo"), &hs256(&json!({"sub":"f","exp":exp}))).await;
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["expires_at"], json!(exp.floor() as u64));
    let started = Instant::now();
    assert_eq!(expect_close(&mut ws).await.0, 4001);
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_fractional_exp_through_refresh_and_tickets_is_kept() {
    let s = start("", "").await;
    let mut ws = bearer(&s.url("/echo"), &hs256(&claims("g"))).await;
    next_json(&mut ws).await;
    let exp = now() as f64 + 2.7;
    let refresh = json!({"type":"refresh","token": hs256(&json!({"sub":"g","exp":exp}))});
    send_text(&mut ws, &refresh.to_string()).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type":"refreshed","expires_at": exp.floor() as u64})
    );
    assert_eq!(expect_close(&mut ws).await.0, 4001);

    let ticket_exp = now() as f64 + 600.5;
    let token = hs256(&json!({"sub":"t","exp": ticket_exp}));
    let (_, ticket) = post(&s.http("/api/tickets"), Some(&token), None).await;
    let mut ws = connect_ok(
        &s.url(&format!(
            "/echo?ticket={}",
            ticket["ticket"].as_str().unwrap()
        )),
        &[],
    )
    .await;
    // From the token's own exp: a second boundary crossed under load must not matter.
    assert_eq!(
        next_json(&mut ws).await["expires_at"],
        json!(ticket_exp.floor() as u64)
    );
}

#[tokio::test]
async fn iat_in_the_future_and_crit_headers_are_refused() {
    let s = start("", "").await;
    let url = s.url("/echo");
    assert_invalid(
        &url,
        &hs256(&json!({"sub":"x","exp":now()+600,"iat":now()+120})),
    )
    .await;
    // A fractional iat a little ahead is within the (zero) leeway's floor: accepted.
    bearer(
        &url,
        &hs256(&json!({"sub":"x","exp":now()+600,"iat":now() as f64 + 0.5})),
    )
    .await;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.crit = Some(vec!["exp".into()]);
    let crit = jsonwebtoken::encode(
        &header,
        &claims("x"),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_invalid(&url, &crit).await;
}

#[tokio::test]
async fn ambiguous_requests_get_400() {
    let s = start("", "").await;
    let url = s.url("/echo");
    let good = hs256(&claims("amb"));
    let bearer_h = format!("Bearer {good}");
    for headers in [
        vec![
            ("authorization", bearer_h.as_str()),
            ("authorization", "Bearer other"),
        ],
        vec![
            ("authorization", bearer_h.as_str()),
            ("origin", "http://a.example"),
            ("origin", "http://b.example"),
        ],
    ] {
        let r = refused(&url, &headers).await;
        assert_eq!(r.status, 400, "{headers:?}: {}", r.body);
        assert_eq!(r.body["error"], "ambiguous_request");
    }
    let r = refused(&format!("{url}?token={good}&token={good}"), &[]).await;
    assert_eq!(r.status, 400);
    let r = refused(
        &url,
        &[(
            "sec-websocket-protocol",
            &format!("wsgate.v1, wsgate.bearer.{good}, wsgate.bearer.{good}"),
        )],
    )
    .await;
    assert_eq!(r.status, 400);
}

async fn admin_post(s: &Server, key: &str, body: Value) -> (u16, Value) {
    post(&s.http("/api/disconnect"), Some(key), Some(&body)).await
}

#[tokio::test]
async fn wrong_admin_keys_count_as_auth_failures() {
    let s = start("", "auth_failures_per_min = 5").await;
    for i in 0..5 {
        let (status, _) = admin_post(&s, &format!("guess-{i}"), json!({"sub":"a"})).await;
        assert_eq!(status, 403);
    }
    let (status, body) = admin_post(&s, "guess-5", json!({"sub":"a"})).await;
    assert_eq!(status, 429, "{body}");
    // The right key still works from that address: a guesser who shares it (a NAT) cannot
    // lock the admin out, and a key of 8+ characters is not found at 5 guesses a minute.
    let (status, _) = admin_post(&s, ADMIN_KEY, json!({"sub":"a"})).await;
    assert_eq!(status, 200);
    let logs = s.logs_once("admin call refused", 5).await;
    assert!(!logs.contains("guess-"), "a guessed key reached the log");
    // Admin failures have their own budget: handshakes from the address are not refused.
    let mut ws = bearer(&s.url("/echo"), &hs256(&claims("neighbour"))).await;
    next_json(&mut ws).await;
    // Nor do refused handshakes lock the admin out.
    let s = start("", "auth_failures_per_min = 3").await;
    for _ in 0..4 {
        let _ = refused(&s.url("/echo"), &[("authorization", "Bearer nope")]).await;
    }
    let r = refused(&s.url("/echo"), &[("authorization", "Bearer nope")]).await;
    assert_eq!(r.status, 429);
    let (status, _) = admin_post(&s, ADMIN_KEY, json!({"sub":"a"})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_short_admin_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wsgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n",
            dir.path().join("db").display()
        ),
    )
    .unwrap();
    for cmd in ["serve", "check-config"] {
        let out = tokio::time::timeout(
            WAIT,
            tokio::process::Command::new(bin())
                .arg(cmd)
                .arg("--config")
                .arg(&cfg)
                .env("WSGATE_ADMIN_KEY", "k")
                .output(),
        )
        .await
        .expect("exits")
        .unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("WSGATE_ADMIN_KEY"), "{cmd}: {err}");
    }
}

#[tokio::test]
async fn outstanding_tickets_are_capped_per_subject() {
    let s = start("", "").await;
    let token = hs256(&claims("hoarder"));
    let client = reqwest::Client::new();
    let issue = |t: String| {
        let c = client.clone();
        let url = s.http("/api/tickets");
        async move { c.post(url).bearer_auth(t).send().await.unwrap() }
    };
    for _ in 0..wsgate::tickets::MAX_PER_SUBJECT {
        assert_eq!(issue(token.clone()).await.status(), 200);
    }
    let res = issue(token.clone()).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // Another subject is not affected.
    assert_eq!(issue(hs256(&claims("other"))).await.status(), 200);
}

/// A handshake with the server, then the raw TCP stream underneath, to send frames no
/// well-behaved client library would.
async fn raw_socket(s: &Server) -> common::Ws {
    let mut ws = bearer(&s.url("/echo"), &hs256(&claims("raw"))).await;
    next_json(&mut ws).await;
    ws
}

async fn send_raw(ws: &mut common::Ws, bytes: &[u8]) {
    match ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.write_all(bytes).await.unwrap(),
        _ => unreachable!("plain ws:// in tests"),
    }
}

#[tokio::test]
async fn protocol_errors_are_answered_with_a_close_frame() {
    let s = start("", "").await;
    // (frame, expected close code): masked with an all-zero key, so the payload is as is.
    let cases: [(&[u8], u16); 5] = [
        (&[0x83, 0x80, 0, 0, 0, 0], 1002),             // reserved opcode 3
        (&[0xC1, 0x80, 0, 0, 0, 0], 1002),             // RSV1 set, no extension negotiated
        (&[0x81, 0x01, b'a'], 1002),                   // unmasked client frame
        (&[0x09, 0x80, 0, 0, 0, 0], 1002),             // fragmented (FIN clear) control frame
        (&[0x81, 0x82, 0, 0, 0, 0, 0xFF, 0xFE], 1007), // text that is not UTF-8
    ];
    for (i, (frame, code)) in cases.into_iter().enumerate() {
        let mut ws = raw_socket(&s).await;
        send_raw(&mut ws, frame).await;
        let got = loop {
            match tokio::time::timeout(WAIT, ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => break u16::from(f.code),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                other => panic!("case {i}: expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(got, code, "case {i}");
    }
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"wsgate_closes_total{code="1002"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"wsgate_closes_total{code="1007"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let limits = "auth_failures_per_min = 2";
    let behind = start("trusted_proxies = [\"127.0.0.0/8\"]", limits).await;
    let url = behind.url("/echo");
    for _ in 0..2 {
        let r = refused(&url, &[("x-forwarded-for", "198.51.100.7")]).await;
        assert_eq!(r.status, 401);
    }
    let r = refused(&url, &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!(r.status, 429, "the client behind the proxy is limited");
    // Everyone else behind the same balancer still gets in.
    bearer_with(&url, &hs256(&claims("ok")), "203.0.113.9").await;

    // Without trusted_proxies the header is ignored: the peer itself is counted.
    let direct = start("", limits).await;
    let url = direct.url("/echo");
    for xff in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(refused(&url, &[("x-forwarded-for", xff)]).await.status, 401);
    }
    let r = refused(&url, &[("x-forwarded-for", "198.51.100.3")]).await;
    assert_eq!(r.status, 429, "a forged X-Forwarded-For buys nothing");
}

async fn bearer_with(url: &str, token: &str, xff: &str) -> common::Ws {
    connect_ok(
        url,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-forwarded-for", xff),
        ],
    )
    .await
}
