//! Every place a token may travel, and every way a handshake is refused.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const ALL_SOURCES: &str = r#"
[auth]
sources = ["bearer", "subprotocol", "ticket", "query", "cookie"]
allowed_origins = ["http://app.example"]

[auth.static]
tokens = { "valid-token" = "demo-user" }

[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"

[[endpoints]]
path = "/echo"
kind = "echo"
"#;

/// The welcome frame, then an echo of text and binary frames.
async fn assert_session(ws: &mut Ws, sub: &str) {
    let welcome = next_json(ws).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["sub"], sub);
    assert_eq!(welcome["session"].as_str().map(str::len), Some(32));
    assert!(welcome.get("expires_at").is_some());
    send_text(ws, "hello").await;
    assert_eq!(next_text(ws).await, "hello");
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, futures_util::StreamExt::next(ws)).await {
        Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(&b[..], &[0u8, 1, 2, 255]),
        other => panic!("expected the binary echo, got {other:?}"),
    }
}

#[tokio::test]
async fn bearer_in_both_forms() {
    let s = Server::start(ALL_SOURCES).await;
    let t = hs256(&claims("alice"));
    let mut ws = bearer(&s.url("/echo"), &t).await;
    assert_session(&mut ws, "alice").await;
    // The seed's bare form, and a static token.
    let mut ws = connect_ok(&s.url("/echo"), &[("authorization", "valid-token")]).await;
    assert_session(&mut ws, "demo-user").await;
    let mut ws = connect_ok(&s.url("/echo"), &[("authorization", "bearer valid-token")]).await;
    assert_session(&mut ws, "demo-user").await;
}

#[tokio::test]
async fn query_token_is_accepted_and_never_logged() {
    let s = Server::start(ALL_SOURCES).await;
    let t = hs256(&claims("qa"));
    let mut ws = connect_ok(&s.url(&format!("/echo?token={t}")), &[]).await;
    assert_session(&mut ws, "qa").await;
    let bad = "not-a-valid-but-secret-looking-query-token";
    assert_eq!(
        refused(&s.url(&format!("/echo?token={bad}")), &[])
            .await
            .status,
        401
    );
    // Lines are written in order: once the refusal is there, so is the acceptance.
    let logs = s.logs_once("connection refused", 1).await;
    assert!(logs.contains("source=\"query\""), "{logs}");
    assert!(
        !logs.contains(&t),
        "the query token leaked into the logs:\n{logs}"
    );
    assert!(
        !logs.contains(bad),
        "a refused query token leaked into the logs:\n{logs}"
    );
    let sig = t.rsplit('.').next().unwrap();
    assert!(!logs.contains(sig));
}

#[tokio::test]
async fn cookie_needs_an_allowed_origin() {
    let s = Server::start(ALL_SOURCES).await;
    let cookie = format!("other=1; wsgate_session={}", hs256(&claims("cookie-user")));
    let mut ws = connect_ok(
        &s.url("/echo"),
        &[("cookie", &cookie), ("origin", "http://app.example")],
    )
    .await;
    assert_session(&mut ws, "cookie-user").await;

    let foreign = refused(
        &s.url("/echo"),
        &[("cookie", &cookie), ("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(foreign.status, 403);
    let no_origin = refused(&s.url("/echo"), &[("cookie", &cookie)]).await;
    assert_eq!(no_origin.status, 403);
    assert_eq!(no_origin.body["error"], "cookie_origin");
}

#[tokio::test]
async fn cookie_is_not_read_unless_enabled() {
    let s = Server::start(HS256_CONFIG).await;
    let cookie = format!("wsgate_session={}", hs256(&claims("c")));
    let r = refused(
        &s.url("/echo"),
        &[("cookie", &cookie), ("origin", "http://app.example")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"], "missing_token");
}

#[tokio::test]
async fn subprotocol_answers_wsgate_v1_never_the_token() {
    let s = Server::start(ALL_SOURCES).await;
    let t = hs256(&claims("sp"));
    let offer = format!("wsgate.v1, wsgate.bearer.{t}");
    let (mut ws, headers) = connect(&s.url("/echo"), &[("sec-websocket-protocol", &offer)])
        .await
        .expect("upgrade");
    assert_eq!(headers["sec-websocket-protocol"], "wsgate.v1");
    assert_session(&mut ws, "sp").await;
    assert!(!s.logs_once("connection accepted", 1).await.contains(&t));
}

#[tokio::test]
async fn foreign_origin_is_refused_whatever_the_source() {
    let s = Server::start(ALL_SOURCES).await;
    let t = hs256(&claims("o"));
    let r = refused(
        &s.url("/echo"),
        &[
            ("authorization", &format!("Bearer {t}")),
            ("origin", "http://evil.example"),
        ],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["error"], "forbidden_origin");
    // A listed origin, and no origin at all (non-browser clients), are fine.
    let mut ws = connect_ok(
        &s.url("/echo"),
        &[
            ("authorization", &format!("Bearer {t}")),
            ("origin", "http://app.example"),
        ],
    )
    .await;
    assert_session(&mut ws, "o").await;
}

#[tokio::test]
async fn missing_and_invalid_credentials_get_401_with_the_right_challenge() {
    let s = Server::start(ALL_SOURCES).await;
    let r = refused(&s.url("/echo"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    assert_eq!(r.body["error"], "missing_token");
    assert!(r.body["message"].is_string());
    assert_eq!(r.headers["content-type"], "application/json");

    assert_invalid(&s.url("/echo"), "wrong-token").await;
}

#[tokio::test]
async fn the_first_source_carrying_a_credential_decides() {
    let s = Server::start(ALL_SOURCES).await;
    let good = hs256(&claims("q"));
    // bearer comes first and carries a bad token: no fall-through to the good query token.
    let r = refused(
        &s.url(&format!("/echo?token={good}")),
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"], "invalid_token");
}

#[tokio::test]
async fn tickets_are_refused_until_one_is_issued() {
    // No ticket store answers yet: any ticket is simply invalid (never a bearer token).
    let s = Server::start(ALL_SOURCES).await;
    let r = refused(&s.url("/echo?ticket=valid-token"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"], "invalid_token");
}

#[tokio::test]
async fn reject_close_mode_accepts_then_closes_1008_without_welcome() {
    let s = Server::start(
        r#"
[auth]
reject = "close"
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
[[endpoints]]
path = "/echo"
kind = "echo"
"#,
    )
    .await;
    for headers in [vec![], vec![("authorization", "Bearer bad")]] {
        let mut ws = connect_ok(&s.url("/echo"), &headers).await;
        let (code, reason) = expect_close(&mut ws).await;
        assert_eq!(code, 1008);
        assert!(
            ["missing_token", "invalid_token"].contains(&reason.as_str()),
            "{reason}"
        );
    }
    let mut ws = bearer(&s.url("/echo"), &hs256(&claims("ok"))).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
}

#[tokio::test]
async fn message_source_waits_for_the_auth_frame() {
    let s = Server::start(
        r#"
[auth]
sources = ["bearer", "message"]
message_timeout_ms = 400
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
[[endpoints]]
path = "/echo"
kind = "echo"
"#,
    )
    .await;
    let url = s.url("/echo");
    let mut ws = connect_ok(&url, &[]).await;
    // A ping while the `auth` frame is awaited is answered.
    ws.send(Message::Ping(vec![1, 2].into())).await.unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Message::Pong(p)))) => assert_eq!(&p[..], [1, 2]),
        other => panic!("a pong: {other:?}"),
    }
    let frame = serde_json::json!({"type": "auth", "token": hs256(&claims("m"))});
    send_text(&mut ws, &frame.to_string()).await;
    assert_session(&mut ws, "m").await;

    // Anything else first, a bad token, or silence: 1008.
    let mut ws = connect_ok(&url, &[]).await;
    send_text(&mut ws, "hello").await;
    assert_eq!(expect_close(&mut ws).await.0, 1008);
    let mut ws = connect_ok(&url, &[]).await;
    send_text(&mut ws, r#"{"type":"auth","token":"bad.to.ken"}"#).await;
    assert_eq!(expect_close(&mut ws).await, (1008, "invalid_token".into()));
    let mut ws = connect_ok(&url, &[]).await;
    assert_eq!(expect_close(&mut ws).await, (1008, "auth_timeout".into()));

    // A handshake credential still works and still decides.
    assert_invalid(&url, "bad").await;
}

#[tokio::test]
async fn endpoint_options_override_sources_and_welcome() {
    let s = Server::start(
        r#"
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
[[endpoints]]
path = "/bare"
kind = "echo"
welcome = false
sources = ["query"]
"#,
    )
    .await;
    let t = hs256(&claims("b"));
    // bearer is not a source of this endpoint.
    assert_eq!(
        refused(
            &s.url("/bare"),
            &[("authorization", &format!("Bearer {t}"))]
        )
        .await
        .status,
        401
    );
    let mut ws = connect_ok(&s.url(&format!("/bare?token={t}")), &[]).await;
    send_text(&mut ws, "first").await;
    assert_eq!(
        next_text(&mut ws).await,
        "first",
        "no welcome before the echo"
    );
}

#[tokio::test]
async fn repeated_failures_from_one_address_get_429() {
    let s = Server::start(
        r#"
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
[limits]
auth_failures_per_min = 3
[[endpoints]]
path = "/echo"
kind = "echo"
"#,
    )
    .await;
    for _ in 0..3 {
        assert_eq!(refused(&s.url("/echo"), &[]).await.status, 401);
    }
    let r = refused(
        &s.url("/echo"),
        &[("authorization", &format!("Bearer {}", hs256(&claims("x"))))],
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["error"], "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

#[tokio::test]
async fn healthz_answers() {
    let s = Server::start(HS256_CONFIG).await;
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, conn.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("ok"), "{out}");
    let _: Value = Value::Null;
}

#[tokio::test]
async fn every_server_serves_the_browser_client() {
    let s = Server::start(HS256_CONFIG).await;
    let res = reqwest::get(s.http("/wsgate.js")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(res.headers()["cache-control"], "public, max-age=300");
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let body = res.text().await.unwrap();
    assert!(body.contains("export class WsgateClient"));
    assert!(!body.contains("import "), "no dependencies");
    let again = reqwest::Client::new()
        .get(s.http("/wsgate.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
}
