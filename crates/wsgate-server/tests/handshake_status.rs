//! `GET /api/handshake-status?attempt=<nonce>`: a page learns why its handshake was
//! refused — status, error code, `retry_after` — for 60 s; anything else is 404.

mod common;

use common::*;
use serde_json::{Value, json};

const NONCE: &str = "Zm9vYmFyYmF6cXV4cXV1eA";

async fn status(s: &Server, nonce: &str) -> (u16, Value) {
    let res = reqwest::get(s.http(&format!("/api/handshake-status?attempt={nonce}")))
        .await
        .unwrap();
    let code = res.status().as_u16();
    (code, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_refused_attempt_can_be_asked_about_and_nothing_else_can() {
    let s = Server::start(&format!(
        "{HS256_CONFIG}\n[limits]\nauth_failures_per_min = 2\n"
    ))
    .await;
    // Never made: 404.
    assert_eq!(status(&s, NONCE).await.0, 404);
    // A bad token: 401 invalid_token.
    let r = refused(
        &s.url(&format!("/echo?wsgate_attempt={NONCE}")),
        &[("authorization", "Bearer not-a-token")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        status(&s, NONCE).await,
        (
            200,
            json!({"status": 401, "error": "invalid_token", "retry_after": null})
        )
    );
    // The address used up its failures: 429, with the wait.
    let limited = "bGltaXRlZGxpbWl0ZWRsaW1pdGVk";
    let _ = refused(&s.url("/echo"), &[("authorization", "Bearer nope")]).await;
    let r = refused(
        &s.url(&format!("/echo?wsgate_attempt={limited}")),
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(r.status, 429);
    let (code, body) = status(&s, limited).await;
    assert_eq!(
        (code, body["status"].as_u64(), body["error"].as_str()),
        (200, Some(429), Some("rate_limited"))
    );
    assert!(
        body["retry_after"]
            .as_u64()
            .is_some_and(|s| (1..=60).contains(&s)),
        "{body}"
    );
    // A malformed nonce is neither kept nor answered.
    let _ = refused(&s.url("/echo?wsgate_attempt=short"), &[]).await;
    assert_eq!(status(&s, "short").await.0, 404);
}

#[tokio::test]
async fn an_upstream_that_cannot_be_reached_is_told_as_502() {
    let s = Server::start(
        "[auth.jwt]\nsecret_env = \"WSGATE_TEST_SECRET\"\n[[endpoints]]\npath = \"/app\"\nkind = \"proxy\"\nupstream = \"ws://127.0.0.1:9/down\"\n",
    )
    .await;
    let token = hs256(&claims("p"));
    let r = refused(
        &s.url(&format!("/app?wsgate_attempt={NONCE}")),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(
        status(&s, NONCE).await.1,
        json!({"status": 502, "error": "bad_gateway", "retry_after": null})
    );
    // An accepted attempt leaves nothing behind.
    let accepted = "YWNjZXB0ZWRhY2NlcHRlZGFj";
    let s = Server::start(HS256_CONFIG).await;
    let ws = bearer(&s.url(&format!("/echo?wsgate_attempt={accepted}")), &token).await;
    assert_eq!(status(&s, accepted).await.0, 404);
    drop(ws);
}
