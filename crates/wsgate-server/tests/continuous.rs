//! Continuous authorization through the binary: live sessions re-checked with an auth backend
//! (`auth.proxy_revalidate_secs`), soft revocation (`grace_secs`) and revocation by claim,
//! and how long a revoked session keeps its socket (`wsgate_revocation_to_close_seconds`).
//! The real identity provider's half (introspection re-checks, RFC 7009 revocation) is in
//! `idp.rs`.

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// What the test backend answers for a token, changed by the test while sockets are open.
#[derive(Clone, Default)]
struct Backend {
    /// token → (status, body)
    answers: Arc<Mutex<Vec<(String, u16, Value)>>>,
    /// Every request body it received.
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Backend {
    fn answer(&self, token: &str, status: u16, body: Value) {
        let mut a = self.answers.lock().unwrap();
        a.retain(|(t, _, _)| t != token);
        a.push((token.to_owned(), status, body));
    }

    fn rechecks(&self, token: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b["token"] == token && b["revalidate"] == true)
            .cloned()
            .collect()
    }

    async fn start(&self) -> std::net::SocketAddr {
        let me = self.clone();
        let router = axum::Router::new().route(
            "/auth",
            axum::routing::post(move |Json(body): Json<Value>| {
                let me = me.clone();
                async move {
                    me.seen.lock().unwrap().push(body.clone());
                    let answers = me.answers.lock().unwrap();
                    match answers.iter().find(|(t, _, _)| body["token"] == t.as_str()) {
                        Some((_, status, answer)) => {
                            (StatusCode::from_u16(*status).unwrap(), Json(answer.clone()))
                        }
                        None => (StatusCode::UNAUTHORIZED, Json(json!({}))),
                    }
                }
            }),
        );
        http_backend(router).await
    }
}

fn backend_config(addr: std::net::SocketAddr, on_error: &str) -> String {
    format!(
        r#"
[auth]
proxy_url = "http://{addr}/auth"
proxy_timeout_ms = 500
proxy_revalidate_secs = 1
revalidate_on_error = "{on_error}"

[[endpoints]]
path = "/ws"
kind = "pubsub"
"#
    )
}

fn metric(metrics: &str, prefix: &str, label: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_session_ended_elsewhere_closes_its_sockets_within_a_period() {
    let backend = Backend::default();
    let addr = backend.start().await;
    let ok = |channels: Value| json!({"sub": "ann", "channels": channels});
    backend.answer("session-1", 200, ok(json!(["room.*"])));
    backend.answer("session-2", 200, json!({"sub": "bob"}));
    let s = Server::start(&backend_config(addr, "keep")).await;

    // Two sockets on one backend session, one on another.
    let mut a1 = bearer(&s.url("/ws"), "session-1").await;
    let mut a2 = bearer(&s.url("/ws"), "session-1").await;
    let mut b = bearer(&s.url("/ws"), "session-2").await;
    let welcome = next_json(&mut a1).await;
    next_json(&mut a2).await;
    next_json(&mut b).await;
    send_text(&mut a1, r#"{"type":"subscribe","channel":"room.2","id":1}"#).await;
    assert_eq!(next_json(&mut a1).await["type"], "subscribed");

    // Still valid, fewer channels: the session drops what it may no longer hear.
    backend.answer("session-1", 200, ok(json!(["room.1"])));
    let lost = next_json(&mut a1).await;
    assert_eq!(
        (&lost["type"], &lost["channel"], &lost["reason"]),
        (
            &json!("unsubscribed"),
            &json!("room.2"),
            &json!("permission")
        )
    );
    // The re-check is the connect's POST plus the session and `revalidate`.
    let rechecks = backend.rechecks("session-1");
    assert!(!rechecks.is_empty());
    let session = rechecks[0]["session"].as_str().unwrap();
    assert!(
        session == welcome["session"] || !session.is_empty(),
        "names a session"
    );

    // The backend ends session-1: both its sockets close 4003; bob's stays.
    backend.answer("session-1", 401, json!({}));
    let started = std::time::Instant::now();
    assert_eq!(expect_close(&mut a1).await, (4003, "revoked".into()));
    assert_eq!(expect_close(&mut a2).await, (4003, "revoked".into()));
    assert!(started.elapsed() < std::time::Duration::from_millis(2500));
    send_text(&mut b, r#"{"type":"subscribe","channel":"x","id":2}"#).await;
    assert!(
        next_json(&mut b).await.get("type").is_some(),
        "bob's socket lives"
    );

    // Sessions sharing a credential share its re-check: one call per period per token.
    let periods = started.elapsed().as_secs_f64() + 3.0;
    let per_token = backend.rechecks("session-1").len() as f64;
    assert!(
        per_token <= periods,
        "{per_token} re-checks of one token in ~{periods} periods (two sockets held it)"
    );
    let m = s.metrics().await;
    assert!(
        metric(&m, "wsgate_revalidations_total", "outcome=\"invalid\"") >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "wsgate_revocation_to_close_seconds_count",
            "cause=\"revalidate\""
        ),
        2.0,
        "{m}"
    );
    assert!(!s.logs().contains("session-1"), "a credential was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_credential_is_checked_again_every_period_not_once() {
    // One socket, one credential: nothing else ever wakes the re-checking task, so each
    // answer must schedule the next check itself.
    let backend = Backend::default();
    let addr = backend.start().await;
    backend.answer("solo", 200, json!({"sub": "sol"}));
    let s = Server::start(&backend_config(addr, "keep")).await;
    let mut ws = bearer(&s.url("/ws"), "solo").await;
    next_json(&mut ws).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    while backend.rechecks("solo").len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "re-checked {} times in 8 s at a 1 s period",
            backend.rechecks("solo").len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // And the third answer still acts: the backend ends the session, the socket closes.
    backend.answer("solo", 401, json!({}));
    assert_eq!(expect_close(&mut ws).await, (4003, "revoked".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_cannot_answer_keeps_or_closes_as_configured() {
    let backend = Backend::default();
    let addr = backend.start().await;
    backend.answer("t", 200, json!({"sub": "ann", "channels": ["x"]}));
    let keep = Server::start(&backend_config(addr, "keep")).await;
    let close = Server::start(&backend_config(addr, "close")).await;
    let mut kept = bearer(&keep.url("/ws"), "t").await;
    let mut closed = bearer(&close.url("/ws"), "t").await;
    next_json(&mut kept).await;
    next_json(&mut closed).await;
    backend.answer("t", 503, json!({}));
    assert_eq!(
        expect_close(&mut closed).await,
        (1013, "try again later".into())
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    send_text(&mut kept, r#"{"type":"subscribe","channel":"x","id":1}"#).await;
    assert_eq!(next_json(&mut kept).await["type"], "subscribed");
    let m = keep.metrics().await;
    assert!(metric(&m, "wsgate_revalidations_total", "outcome=\"unavailable\"") >= 1.0);
}

fn jwt_config() -> String {
    r#"
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"

[[endpoints]]
path = "/ws"
kind = "pubsub"
"#
    .to_owned()
}

async fn admin(s: &Server, body: Value) -> (u16, Value) {
    post(&s.http("/api/disconnect"), Some(ADMIN_KEY), Some(&body)).await
}

#[tokio::test]
async fn a_grace_period_warns_then_closes_unless_a_newer_token_arrives() {
    let s = Server::start_with(&jwt_config(), &[("WSGATE_ADMIN_KEY", ADMIN_KEY)]).await;
    let old = |sub: &str| {
        hs256(&json!({"sub": sub, "channels": ["c"], "iat": now() - 10, "exp": now() + 3600}))
    };
    let mut stays = bearer(&s.url("/ws"), &old("u")).await;
    let mut goes = bearer(&s.url("/ws"), &old("u")).await;
    let mut other = bearer(&s.url("/ws"), &old("v")).await;
    for ws in [&mut stays, &mut goes, &mut other] {
        next_json(ws).await;
    }
    let ordered = now();
    let (status, body) = admin(&s, json!({"sub": "u", "grace_secs": 2})).await;
    assert_eq!((status, &body["warned"]), (200, &json!(2)), "{body}");
    for ws in [&mut stays, &mut goes] {
        let warning: Value = serde_json::from_str(&next_text_all(ws).await).unwrap();
        assert_eq!(warning["type"], "expiring");
        let at = warning["expires_at"].as_u64().unwrap();
        assert!((ordered + 1..=ordered + 3).contains(&at), "{warning}");
    }
    // A token issued after the order lifts it; one issued before does not.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let newer = hs256(&json!({"sub": "u", "channels": ["c"], "iat": now(), "exp": now() + 3600}));
    send_text(
        &mut stays,
        &json!({"type": "refresh", "token": newer, "id": 1}).to_string(),
    )
    .await;
    assert_eq!(next_json(&mut stays).await["type"], "refreshed");
    send_text(
        &mut goes,
        &json!({"type": "refresh", "token": old("u"), "id": 1}).to_string(),
    )
    .await;
    assert_eq!(next_json(&mut goes).await["type"], "refreshed");
    assert_eq!(expect_close(&mut goes).await, (4003, "revoked".into()));
    assert!(
        now() >= ordered + 2,
        "closed at the grace's end, not before"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    for ws in [&mut stays, &mut other] {
        send_text(ws, r#"{"type":"subscribe","channel":"c","id":2}"#).await;
        assert_eq!(next_json(ws).await["type"], "subscribed");
    }
    // A close on the grace's schedule is not a revocation's latency: not in the histogram.
    let m = s.metrics().await;
    assert_eq!(
        metric(
            &m,
            "wsgate_revocation_to_close_seconds_count",
            "cause=\"admin\""
        ),
        0.0,
        "{m}"
    );
}

#[tokio::test]
async fn sessions_are_closed_and_revoked_by_claim() {
    let s = Server::start_with(&jwt_config(), &[("WSGATE_ADMIN_KEY", ADMIN_KEY)]).await;
    let token = |sub: &str, tenant: Value| {
        hs256(
            &json!({"sub": sub, "tenant": tenant, "channels": ["c"], "iat": now() - 5, "exp": now() + 3600}),
        )
    };
    let acme = token("a", json!("acme"));
    let mut in_acme = bearer(&s.url("/ws"), &acme).await;
    let mut in_both = bearer(&s.url("/ws"), &token("b", json!(["other", "acme"]))).await;
    let mut elsewhere = bearer(&s.url("/ws"), &token("c", json!("other"))).await;
    for ws in [&mut in_acme, &mut in_both, &mut elsewhere] {
        next_json(ws).await;
    }
    let (status, body) = admin(&s, json!({"claim": {"tenant": "acme"}, "revoke": true})).await;
    assert_eq!((status, &body["closed"]), (200, &json!(2)), "{body}");
    assert_eq!(expect_close(&mut in_acme).await, (4003, "revoked".into()));
    assert_eq!(expect_close(&mut in_both).await, (4003, "revoked".into()));
    send_text(
        &mut elsewhere,
        r#"{"type":"subscribe","channel":"c","id":1}"#,
    )
    .await;
    assert_eq!(next_json(&mut elsewhere).await["type"], "subscribed");
    // The claim's older tokens are refused from now on, a newer one is taken.
    assert_invalid(&s.url("/ws"), &acme).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let fresh = hs256(&json!({"sub": "a", "tenant": "acme", "iat": now(), "exp": now() + 60}));
    let mut again = bearer(&s.url("/ws"), &fresh).await;
    assert_eq!(next_json(&mut again).await["sub"], "a");

    // Every number and shape a caller may send is checked.
    for bad in [
        json!({"claim": {"tenant": "acme", "role": "x"}}),
        json!({"claim": {"tenant": 5}}),
        json!({"claim": {"tenant": ""}}),
        json!({"claim": {}}),
        json!({"claim": {"tenant": "acme"}, "sub": "a"}),
        json!({"sub": "a", "grace_secs": 0}),
        json!({"sub": "a", "grace_secs": 301}),
        json!({"sub": "a", "grace_secs": 1.5}),
        json!({"sub": "a", "grace_secs": -1}),
        json!({"sub": "a", "grace_secs": "5"}),
        json!({"sub": "a", "grace_secs": 1e300}),
    ] {
        let (status, body) = admin(&s, bad.clone()).await;
        assert_eq!(
            (status, &body["error"]),
            (400, &json!("bad_request")),
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_socket_is_closed_on_both_sides_when_its_backend_session_ends() {
    use common::upstream::Upstream;
    let backend = Backend::default();
    let addr = backend.start().await;
    backend.answer("session-p", 200, json!({"sub": "pat"}));
    let mut up = Upstream::start(None).await;
    let config = format!(
        r#"
[auth]
proxy_url = "http://{addr}/auth"
proxy_revalidate_secs = 1

[[endpoints]]
path = "/app"
kind = "proxy"
upstream = "{}"
"#,
        up.url("/ws")
    );
    let s = Server::start(&config).await;
    let mut ws = bearer(&s.url("/app"), "session-p").await;
    up.request().await;
    send_text(&mut ws, "hello").await;
    assert_eq!(next_text(&mut ws).await, "hello", "relayed both ways");
    backend.answer("session-p", 403, json!({}));
    assert_eq!(expect_close(&mut ws).await, (4003, "revoked".into()));
    assert_eq!(up.closed().await, Some((4003, "revoked".into())));
}
