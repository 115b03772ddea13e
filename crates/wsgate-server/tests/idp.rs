//! wsgate against a real OpenID provider (npm `oidc-provider`, `tests/idp/op.mjs`, installed
//! by scripts/test): discovery of its key set, its opaque client-credentials access tokens
//! checked by RFC 7662 introspection (one IdP call per token per cache period, never one per
//! handshake), its RFC 7009 revocation, and an IdP that stops answering; and continuous
//! authorization: a token revoked at the IdP while its sockets are open closes them within
//! about one `revalidate_secs`.

mod common;

use std::process::Stdio;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const INTROSPECTION_SECRET: &str = "wsgate-introspection-secret";

/// The IdP, on a free port; it ends with the child (its stdin closes).
struct Idp {
    child: Child,
    issuer: String,
}

impl Idp {
    async fn start() -> Idp {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/idp");
        let mut child = Command::new("node")
            .arg(dir.join("op.mjs"))
            .arg(fixture("rsa_private.pem"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node (scripts/test installs tests/idp's packages)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let issuer = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(i) = line.strip_prefix("issuer ") {
                    return i.to_owned();
                }
            }
            panic!("the IdP did not start (cd tests/idp && npm ci)");
        })
        .await
        .expect("the IdP did not start in time");
        Idp { child, issuer }
    }

    /// A client-credentials access token of the `chat-app` client (opaque).
    async fn access_token(&self) -> String {
        let res: Value = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth("chat-app", Some("chat-app-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&scope=chat")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        res["access_token"].as_str().expect("a token").to_owned()
    }

    async fn revoke(&self, token: &str) {
        let status = reqwest::Client::new()
            .post(format!("{}/token/revocation", self.issuer))
            .basic_auth("chat-app", Some("chat-app-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
}

fn config(issuer: &str) -> String {
    config_with(issuer, "")
}

/// `extra`: more keys for the introspecting provider.
fn config_with(issuer: &str, extra: &str) -> String {
    format!(
        r#"
[auth]
proxy_timeout_ms = 1500
[[auth.providers]]
name = "idp"
issuer = "{issuer}"
discovery = true
algorithms = ["RS256"]

[[auth.providers]]
name = "idp-opaque"
introspection_url = "{issuer}/token/introspection"
client_id = "wsgate"
client_secret_env = "WSGATE_TEST_INTROSPECTION"
introspection_cache_secs = 60
claims = {{ subject = "client_id", channels = "scope" }}
{extra}

[[endpoints]]
path = "/ws"
kind = "pubsub"
"#
    )
}

async fn start(idp: &Idp) -> Server {
    Server::start_with(
        &config(&idp.issuer),
        &[("WSGATE_TEST_INTROSPECTION", INTROSPECTION_SECRET)],
    )
    .await
}

fn introspections(metrics: &str, outcome: &str) -> u64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("wsgate_introspection_requests_total")
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_keys_are_discovered_and_its_opaque_tokens_introspected() {
    let idp = Idp::start().await;
    let s = start(&idp).await;
    // A JWT the IdP's key set vouches for (found through discovery).
    let jwt = jwt(
        Algorithm::RS256,
        Key::Rsa,
        Some("rsa-1"),
        &json!({"sub":"alice","iss":idp.issuer,"exp":now()+600}),
    );
    let mut ws = bearer(&s.url("/ws"), &jwt).await;
    assert_eq!(next_json(&mut ws).await["sub"], "alice");
    // An opaque access token: introspected, its client is the subject, its scope the channels.
    let token = idp.access_token().await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        let mut ws = bearer(&s.url("/ws"), &token).await;
        assert_eq!(next_json(&mut ws).await["sub"], "chat-app");
        sockets.push(ws);
    }
    send_text(
        &mut sockets[0],
        r#"{"type":"subscribe","channel":"chat","id":1}"#,
    )
    .await;
    assert_eq!(next_json(&mut sockets[0]).await["type"], "subscribed");
    let m = s.metrics().await;
    assert_eq!(
        introspections(&m, "active"),
        1,
        "one IdP call for five handshakes:\n{m}"
    );
    assert!(
        m.contains("wsgate_provider_connections_total{provider=\"idp-opaque\"} 5"),
        "{m}"
    );
    assert!(
        m.contains("wsgate_provider_connections_total{provider=\"idp\"} 1"),
        "{m}"
    );
    // A token the IdP revoked (RFC 7009) before its first use is refused.
    let revoked = idp.access_token().await;
    idp.revoke(&revoked).await;
    assert_invalid(&s.url("/ws"), &revoked).await;
    assert_eq!(introspections(&s.metrics().await, "inactive"), 1);
    // No token reaches a log line.
    let logs = s.logs();
    for t in [&token, &revoked] {
        assert!(!logs.contains(t.as_str()), "a token was logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_that_does_not_answer_is_503_never_401() {
    let mut idp = Idp::start().await;
    let s = start(&idp).await;
    let token = idp.access_token().await;
    idp.child.kill().await.unwrap();
    let r = refused(
        &s.url("/ws"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"], "auth_unavailable");
    assert_eq!(introspections(&s.metrics().await, "unavailable"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_at_the_idp_closes_its_open_sockets_within_a_period() {
    let idp = Idp::start().await;
    let s = Server::start_with(
        &config_with(&idp.issuer, "revalidate_secs = 1"),
        &[("WSGATE_TEST_INTROSPECTION", INTROSPECTION_SECRET)],
    )
    .await;
    let (doomed, kept) = (idp.access_token().await, idp.access_token().await);
    let mut closing = Vec::new();
    for _ in 0..3 {
        let mut ws = bearer(&s.url("/ws"), &doomed).await;
        assert_eq!(next_json(&mut ws).await["sub"], "chat-app");
        closing.push(ws);
    }
    let mut stays = bearer(&s.url("/ws"), &kept).await;
    next_json(&mut stays).await;
    // Live re-checks happen while the token is good (and change nothing).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    idp.revoke(&doomed).await;
    let revoked_at = std::time::Instant::now();
    for ws in &mut closing {
        assert_eq!(expect_close(ws).await, (4003, "revoked".into()));
    }
    let took = revoked_at.elapsed();
    assert!(
        took < std::time::Duration::from_millis(2500),
        "closed {took:?} after the IdP revoked the token (period 1 s ±10%)"
    );
    send_text(
        &mut stays,
        r#"{"type":"subscribe","channel":"chat","id":1}"#,
    )
    .await;
    assert_eq!(next_json(&mut stays).await["type"], "subscribed");
    let m = s.metrics().await;
    let invalid = m
        .lines()
        .find(|l| l.starts_with("wsgate_revalidations_total") && l.contains("invalid"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert_eq!(
        invalid,
        Some(1),
        "one IdP call for the three sockets sharing the token:\n{m}"
    );
    assert!(
        m.contains("wsgate_revocation_to_close_seconds_count{cause=\"revalidate\"} 3"),
        "{m}"
    );
    assert!(!s.logs().contains(doomed.as_str()), "a token was logged");
}
