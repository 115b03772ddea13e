//! The session over its whole life, from outside: admin disconnects and revocations,
//! tickets, and per-user / per-connection limits.

mod common;

use common::*;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "test-admin-key-0123456789";

fn config(limits: &str) -> String {
    format!(
        r#"
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
[tickets]
ttl_secs = 30
[limits]
{limits}
[[endpoints]]
path = "/echo"
kind = "echo"
"#
    )
}

async fn start(limits: &str) -> Server {
    Server::start_with(&config(limits), &[("WSGATE_ADMIN_KEY", ADMIN_KEY)]).await
}

async fn post(s: &Server, path: &str, auth: Option<&str>, body: Value) -> (u16, Value) {
    common::post(&s.http(path), auth, Some(&body)).await
}

fn token(sub: &str, jti: &str) -> String {
    hs256(&json!({"sub": sub, "jti": jti, "iat": now(), "exp": now() + 3600}))
}

async fn open(s: &Server, token: &str) -> (Ws, String) {
    let mut ws = bearer(&s.url("/echo"), token).await;
    let welcome = next_json(&mut ws).await;
    (ws, welcome["session"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn admin_key_is_required() {
    let s = start("").await;
    let (status, body) = post(&s, "/api/disconnect", None, json!({"sub":"a"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing_token"))
    );
    let (status, _) = post(&s, "/api/disconnect", Some("wrong-key"), json!({"sub":"a"})).await;
    assert_eq!(status, 403);
    let (status, _) = post(
        &s,
        "/api/disconnect",
        Some(ADMIN_KEY),
        json!({"nobody":"a"}),
    )
    .await;
    assert_eq!(status, 400);
    // Without the variable the admin API is off.
    let off = Server::start(&config("")).await;
    let (status, body) = post(&off, "/api/disconnect", Some(ADMIN_KEY), json!({"sub":"a"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("admin_disabled"))
    );
}

#[tokio::test]
async fn disconnect_by_sub_and_by_session_closes_with_4003() {
    let s = start("").await;
    let (mut a1, _) = open(&s, &token("alice", "a1")).await;
    let (mut a2, _) = open(&s, &token("alice", "a2")).await;
    let (mut b1, b1_session) = open(&s, &token("bob", "b1")).await;
    let (mut b2, _) = open(&s, &token("bob", "b2")).await;

    let (status, body) = post(
        &s,
        "/api/disconnect",
        Some(ADMIN_KEY),
        json!({"sub":"alice"}),
    )
    .await;
    assert_eq!((status, body["closed"].as_u64()), (200, Some(2)));
    assert_eq!(expect_close(&mut a1).await.0, 4003);
    assert_eq!(expect_close(&mut a2).await.0, 4003);

    let (_, body) = post(
        &s,
        "/api/disconnect",
        Some(ADMIN_KEY),
        json!({"session": b1_session}),
    )
    .await;
    assert_eq!(body["closed"], 1);
    assert_eq!(expect_close(&mut b1).await.0, 4003);
    // The other sessions are untouched, and a plain disconnect revokes nothing.
    send_text(&mut b2, "still").await;
    assert_eq!(next_text(&mut b2).await, "still");
    open(&s, &token("alice", "a1")).await;
}

#[tokio::test]
async fn revoked_token_is_refused_even_after_a_restart() {
    let s = start("").await;
    let revoked = token("carol", "c-1");
    let (mut ws, session) = open(&s, &revoked).await;
    let (_, body) = post(
        &s,
        "/api/disconnect",
        Some(ADMIN_KEY),
        json!({"session": session, "revoke": true}),
    )
    .await;
    assert_eq!(body["closed"], 1);
    assert_eq!(expect_close(&mut ws).await.0, 4003);
    assert_invalid(&s.url("/echo"), &revoked).await;
    // Another token of the same subject (another jti) still works.
    open(&s, &token("carol", "c-2")).await;

    // Same store, new process.
    let store = s.dir.path().join("wsgate.db");
    let cfg = format!(
        "{}\n[storage]\npath = \"{}\"\n",
        config(""),
        store.display()
    );
    let s2 = Server::start_with(&cfg, &[("WSGATE_ADMIN_KEY", ADMIN_KEY)]).await;
    assert_invalid(&s2.url("/echo"), &revoked).await;
    open(&s2, &token("carol", "c-3")).await;
    drop(s);
}

#[tokio::test]
async fn revoking_a_subject_refuses_its_older_tokens() {
    let s = start("").await;
    let old = token("dave", "d-1");
    let (mut ws, _) = open(&s, &old).await;
    let (_, body) = post(
        &s,
        "/api/disconnect",
        Some(ADMIN_KEY),
        json!({"sub": "dave", "revoke": true}),
    )
    .await;
    assert_eq!(body["closed"], 1);
    assert_eq!(expect_close(&mut ws).await.0, 4003);
    assert_invalid(&s.url("/echo"), &old).await;
    assert_invalid(
        &s.url("/echo"),
        &hs256(&json!({"sub":"dave","exp":now()+60})),
    )
    .await;
    // A token issued after the revocation is fine.
    let fresh = hs256(&json!({"sub":"dave","jti":"d-2","iat": now() + 2,"exp": now() + 3600}));
    open(&s, &fresh).await;
}

#[tokio::test]
async fn revoked_token_cannot_be_used_to_refresh() {
    let s = start("").await;
    let revoked = token("erin", "e-1");
    let (mut other, _) = open(&s, &token("erin", "e-2")).await;
    let (mut victim, victim_session) = open(&s, &revoked).await;
    post(
        &s,
        "/api/disconnect",
        Some(ADMIN_KEY),
        json!({"session": victim_session, "revoke": true}),
    )
    .await;
    assert_eq!(expect_close(&mut victim).await.0, 4003);
    send_text(
        &mut other,
        &json!({"type":"refresh","token": revoked}).to_string(),
    )
    .await;
    let e = next_json(&mut other).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("invalid_token"))
    );
}

async fn ticket(s: &Server, credential: &str) -> String {
    let (status, body) = post(s, "/api/tickets", Some(credential), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 30);
    body["ticket"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tickets_are_single_use_and_carry_the_identity() {
    let s = start("").await;
    let t = ticket(&s, &token("frank", "f-1")).await;
    assert!(t.len() >= 40);
    let mut ws = connect_ok(&s.url(&format!("/echo?ticket={t}")), &[]).await;
    assert_eq!(next_json(&mut ws).await["sub"], "frank");
    let r = refused(&s.url(&format!("/echo?ticket={t}")), &[]).await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    let logs = s.logs_once("connection refused", 1).await;
    assert!(!logs.contains(&t), "tickets are never logged");
    // No credential, no ticket; a ticket cannot buy a ticket.
    let (status, _) = post(&s, "/api/tickets", None, json!({})).await;
    assert_eq!(status, 401);
    let t2 = ticket(&s, &token("frank", "f-2")).await;
    let url = s.http(&format!("/api/tickets?ticket={t2}"));
    assert_eq!(common::post(&url, None, None).await.0, 401);
}

#[tokio::test]
async fn racing_redemptions_of_one_ticket_exactly_one_wins() {
    let s = start("").await;
    let t = ticket(&s, &token("gina", "g-1")).await;
    let url = s.url(&format!("/echo?ticket={t}"));
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { connect(&url, &[]).await.ok().map(|(ws, _)| ws) })
        })
        .collect();
    let mut winners = 0;
    for a in attempts {
        if let Some(mut ws) = a.await.unwrap() {
            assert_eq!(next_json(&mut ws).await["type"], "welcome");
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn connections_per_user_are_limited_at_the_handshake() {
    let s = start("max_connections_per_user = 2").await;
    let (a1, _) = open(&s, &token("hal", "h-1")).await;
    let (_a2, _) = open(&s, &token("hal", "h-2")).await;
    let r = refused(
        &s.url("/echo"),
        &[("authorization", &format!("Bearer {}", token("hal", "h-3")))],
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (403, Some("too_many_connections"))
    );
    open(&s, &token("ivy", "i-1")).await;
    drop(a1);
    // The slot comes back once the server has seen the socket go.
    let mut ok = false;
    for _ in 0..50 {
        if connect(
            &s.url("/echo"),
            &[("authorization", &format!("Bearer {}", token("hal", "h-4")))],
        )
        .await
        .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "the slot was not given back");
}

#[tokio::test]
async fn message_rate_is_limited_per_connection() {
    let s = start("messages_per_sec = 5").await;
    let (mut ws, _) = open(&s, &token("jay", "j-1")).await;
    for i in 0..20 {
        send_text(&mut ws, &format!("m{i}")).await;
    }
    let mut echoed = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws)).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_)))) => echoed += 1,
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f))))) => {
                break u16::from(f.code);
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, 4029);
    assert_eq!(echoed, 5);
}

#[tokio::test]
async fn silent_peers_are_closed_and_answering_ones_kept() {
    let s = start("idle_timeout_secs = 2").await;
    let (mut silent, _) = open(&s, &token("kim", "k-1")).await;
    let (mut alive, _) = open(&s, &token("kim", "k-2")).await;
    // `alive` keeps reading (tungstenite answers pings); `silent` reads nothing for 3.5 s.
    let reader = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + std::time::Duration::from_millis(3500);
        while let Ok(m) =
            tokio::time::timeout_at(until, futures_util::StreamExt::next(&mut alive)).await
        {
            assert!(
                !matches!(
                    m,
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
                ),
                "closed while answering pings: {m:?}"
            );
        }
        alive
    });
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    assert_eq!(expect_close(&mut silent).await.0, 1001);
    let mut alive = reader.await.unwrap();
    send_text(&mut alive, "here").await;
    assert_eq!(next_text(&mut alive).await, "here");
}

async fn get_text(s: &Server, path: &str) -> (u16, String) {
    let res = tokio::time::timeout(WAIT, reqwest::get(s.http(path)))
        .await
        .unwrap()
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_handshakes_closes_and_messages_without_credentials() {
    let s = start("").await;
    let t = token("liz", "l-1");
    let (mut ws, _) = open(&s, &t).await;
    for i in 0..3 {
        send_text(&mut ws, &format!("m{i}")).await;
        next_text(&mut ws).await;
    }
    let query_token = "secret-query-token-never-in-metrics";
    assert_eq!(
        refused(&s.url(&format!("/echo?token={query_token}")), &[])
            .await
            .status,
        401
    );
    post(&s, "/api/disconnect", Some(ADMIN_KEY), json!({"sub":"liz"})).await;
    assert_eq!(expect_close(&mut ws).await.0, 4003);

    let mut text = String::new();
    for _ in 0..50 {
        text = get_text(&s, "/metrics").await.1;
        if text.contains("wsgate_closes_total{code=\"4003\"} 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for needle in [
        "wsgate_handshakes_total{outcome=\"accepted\",source=\"bearer\"} 1",
        "wsgate_handshakes_total{outcome=\"refused\",reason=\"invalid_token\",source=\"query\"} 1",
        "wsgate_closes_total{code=\"4003\"} 1",
        "wsgate_connections_open 0",
        "wsgate_messages_total{direction=\"in\"} 3",
        "wsgate_verify_seconds_bucket{verifier=\"jwt\"",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    assert!(!text.contains(query_token) && !text.contains(&t));
    assert_eq!(get_text(&s, "/readyz").await, (200, "ready".into()));
}

fn cli(s: &Server, args: &[&str]) -> (i32, String, String) {
    let args = [args, &["--config", "wsgate.toml"]].concat();
    run_cli(s.dir.path(), &args, &[("WSGATE_TEST_SECRET", SECRET)])
}

#[tokio::test]
async fn api_keys_from_the_cli_authenticate_and_revoking_closes_their_sockets() {
    let s = start("").await;
    let (code, key, err) = cli(
        &s,
        &[
            "keys",
            "create",
            "--name",
            "ci-bot",
            "--sub",
            "robot",
            "--channels",
            "builds:*",
            "--expires-in",
            "30d",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(key.lines().count(), 1, "the key alone on stdout");
    let key = key.trim().to_owned();
    assert!(key.starts_with("wsk_"));
    let (code, _, _) = cli(
        &s,
        &["keys", "create", "--name", "ci-bot", "--sub", "other"],
    );
    assert_eq!(code, 1, "names are unique");

    let (mut ws, _) = open(&s, &key).await;
    let (code, list, _) = cli(&s, &["keys", "list"]);
    assert_eq!(code, 0);
    assert!(
        list.contains("ci-bot") && list.contains("robot") && list.contains("active"),
        "{list}"
    );
    assert!(!list.contains(&key[20..]), "list never shows the key");
    assert!(!s.logs_once("connection accepted", 1).await.contains(&key));

    let (code, _, err) = cli(&s, &["keys", "revoke", "ci-bot"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(expect_close(&mut ws).await.0, 4003);
    assert_invalid(&s.url("/echo"), &key).await;
    let (_, list, _) = cli(&s, &["keys", "list"]);
    assert!(list.contains("revoked"), "{list}");
    let (code, _, err) = cli(&s, &["keys", "revoke", "ci-bot"]);
    assert_eq!(code, 1, "{err}");
    // A well-formed key that was never issued.
    assert_invalid(
        &s.url("/echo"),
        "wsk_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    )
    .await;
}

#[tokio::test]
async fn revoking_a_subject_revokes_its_api_keys_for_good_and_spares_new_ones() {
    // A subject revocation used to lapse after 24 h, and with it the subject's API keys and
    // static tokens worked again: it now covers every credential issued until the order for
    // good, and the subject's API keys are revoked as keys.
    let s = start("").await;
    let (code, key, err) = cli(&s, &["keys", "create", "--name", "old", "--sub", "gone"]);
    assert_eq!(code, 0, "{err}");
    let key = key.trim().to_owned();
    let (mut ws, _) = open(&s, &key).await;
    let (status, body) = post(
        &s,
        "/api/disconnect",
        Some(ADMIN_KEY),
        json!({"sub":"gone","revoke":true}),
    )
    .await;
    assert_eq!((status, body["closed"].as_u64()), (200, Some(1)));
    assert_eq!(expect_close(&mut ws).await.0, 4003);
    assert_invalid(&s.url("/echo"), &key).await;
    let (_, list, _) = cli(&s, &["keys", "list"]);
    let old = list.lines().find(|l| l.contains("old")).unwrap_or_default();
    assert!(
        old.contains("revoked"),
        "the key is revoked as a key: {list}"
    );
    // The stored revocation outlives any token lifetime (it was 24 h).
    let db = rusqlite::Connection::open(s.dir.path().join("wsgate.db")).unwrap();
    let until: i64 = db
        .query_row(
            "SELECT until FROM revocations WHERE kind = 'sub' AND value = 'gone'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(until as u64 > now() + 10 * 365 * 24 * 3600, "until {until}");
    // A key created after the revocation is not covered by it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, new_key, err) = cli(&s, &["keys", "create", "--name", "new", "--sub", "gone"]);
    assert_eq!(code, 0, "{err}");
    let (mut ws, _) = open(&s, new_key.trim()).await;
    ws.close(None).await.unwrap();
}
