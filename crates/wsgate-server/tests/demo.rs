//! The demo mode: the page and the demo-only token endpoint exist only with `demo = true`,
//! and a demo token goes the browser's way (ticket → pubsub) with `room:*` rights only.
//! The page itself is driven in headless Chromium by `tests/browser/chat.mjs` (see README).

mod common;

use common::*;
use serde_json::{Value, json};

async fn post_json(url: String, auth: Option<&str>, body: Value) -> (u16, Value) {
    post(&url, auth, Some(&body)).await
}

#[tokio::test]
async fn without_demo_there_is_no_page_and_no_token_endpoint() {
    let s = Server::start(HS256_CONFIG).await;
    assert_eq!(reqwest::get(s.http("/")).await.unwrap().status(), 404);
    let (status, _) = post_json(s.http("/api/demo/token"), None, json!({"name":"x"})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn demo_page_and_tokens_work_the_browser_way() {
    let s = Server::start("demo = true\n[[endpoints]]\npath = \"/ws\"\nkind = \"pubsub\"\n").await;
    s.logs_once("DEMO MODE", 1).await; // the server warns at start
    let page = reqwest::get(s.http("/")).await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains("wsgate demo chat"));
    let script = reqwest::get(s.http("/demo.js")).await.unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script
            .text()
            .await
            .unwrap()
            .contains(r#"from "/wsgate.js""#)
    );
    let client = reqwest::get(s.http("/wsgate.js")).await.unwrap();
    assert_eq!(
        client.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(
        client
            .text()
            .await
            .unwrap()
            .contains("export class WsgateClient")
    );

    for bad in [
        json!({"name":"bell\u{7}"}),
        json!({"name": "x".repeat(33)}),
        json!({"name":"  "}),
    ] {
        let (status, _) = post_json(s.http("/api/demo/token"), None, bad.clone()).await;
        assert_eq!(status, 400, "{bad}");
    }
    // Names with spaces and accents are welcome.
    let (status, body) = post_json(
        s.http("/api/demo/token"),
        None,
        json!({"name":"José Smith"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_json(s.http("/api/demo/token"), None, json!({"name":"ann"})).await;
    assert_eq!((status, body["expires_in"].as_u64()), (200, Some(120)));
    let token = body["token"].as_str().unwrap().to_owned();
    let (status, body) = post_json(s.http("/api/tickets"), Some(&token), json!({})).await;
    assert_eq!(status, 200);
    let ticket = body["ticket"].as_str().unwrap();

    let mut ws = connect_ok(&s.url(&format!("/ws?ticket={ticket}")), &[]).await;
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["sub"], "ann");
    send_text(&mut ws, r#"{"type":"subscribe","channel":"room:lobby"}"#).await;
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    send_text(&mut ws, r#"{"type":"subscribe","channel":"admin"}"#).await;
    assert_eq!(next_json(&mut ws).await["code"], "forbidden");
    send_text(
        &mut ws,
        r#"{"type":"publish","channel":"room:lobby","data":{"text":"hi"}}"#,
    )
    .await;
    assert_eq!(next_json(&mut ws).await["data"]["text"], "hi");
    let logs = s.logs_once("connection accepted", 1).await;
    assert!(!logs.contains(&token) && !logs.contains(ticket));
}

#[test]
fn demo_paths_cannot_be_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("d.toml");
    std::fs::write(
        &cfg,
        "demo = true\n[[endpoints]]\npath = \"/\"\nkind = \"echo\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("endpoints[0].path"));
}

#[tokio::test]
async fn demo_tokens_are_taken_by_the_demo_endpoint_only() {
    // Anyone can mint a demo token for any name: on every other endpoint (here a proxy-like
    // echo at /app) it must not pass for that user — directly, through a ticket or a refresh.
    let s = Server::start(
        "demo = true\n[[endpoints]]\npath = \"/ws\"\nkind = \"pubsub\"\n[[endpoints]]\npath = \"/app\"\nkind = \"echo\"\n",
    )
    .await;
    let (_, body) = post_json(s.http("/api/demo/token"), None, json!({"name":"alice"})).await;
    let demo = body["token"].as_str().unwrap().to_owned();
    let mut ws = bearer(&s.url("/ws"), &demo).await;
    assert_eq!(next_json(&mut ws).await["sub"], "alice");
    assert_invalid(&s.url("/app"), &demo).await;
    let (status, body) = post_json(s.http("/api/tickets"), Some(&demo), json!({})).await;
    assert_eq!(status, 200);
    let ticket = body["ticket"].as_str().unwrap();
    let r = refused(&s.url(&format!("/app?ticket={ticket}")), &[]).await;
    assert_eq!(r.status, 401);
    // A real token of the same name works on /app; a demo token cannot refresh it.
    let (code, real, err) = run_cli(
        s.dir.path(),
        &["token", "--sub", "alice", "--config", "wsgate.toml"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let mut app = bearer(&s.url("/app"), real.trim()).await;
    next_json(&mut app).await;
    send_text(
        &mut app,
        &json!({"type":"refresh","token":demo}).to_string(),
    )
    .await;
    assert_eq!(next_json(&mut app).await["code"], "invalid_token");
}

#[tokio::test]
async fn with_demo_mode_off_no_endpoint_takes_a_demo_token() {
    // One secret for both servers (the operator's), demo mode on, then off: a demo token
    // minted before still carries its claim until it expires, and no endpoint takes it.
    let endpoints = "[auth.jwt]\nsecret_env = \"WSGATE_TEST_SECRET\"\n[[endpoints]]\npath = \"/ws\"\nkind = \"pubsub\"\n";
    let on = Server::start(&format!("demo = true\n{endpoints}")).await;
    let (_, body) = post_json(on.http("/api/demo/token"), None, json!({"name":"eve"})).await;
    let demo = body["token"].as_str().unwrap().to_owned();
    let mut ws = bearer(&on.url("/ws"), &demo).await;
    assert_eq!(next_json(&mut ws).await["sub"], "eve");
    let off = Server::start(endpoints).await;
    assert_invalid(&off.url("/ws"), &demo).await;
    let mut real = bearer(&off.url("/ws"), &hs256(&claims("eve"))).await;
    assert_eq!(next_json(&mut real).await["sub"], "eve");
}
