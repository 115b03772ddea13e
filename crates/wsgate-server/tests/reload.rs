//! Reload: the config read again while sockets stay open — on SIGHUP, `POST /api/reload` and
//! `wsgate reload`. New handshakes meet the new config at once, open sockets keep their
//! identity and refresh against the new verifiers, a refused file changes nothing, and what
//! needs a restart is named in the log.

mod common;

use common::*;
use futures_util::future::join_all;
use serde_json::json;

const OTHER_SECRET: &str = "another-secret-that-is-long-enough-for-hs256";
const ADMIN_KEY: &str = "admin-key-for-reload-tests-0123456789";

/// An HS256 config reading its secret from `var`, with `endpoints` beside `/echo`.
fn hs256_from(var: &str, endpoints: &str) -> String {
    format!(
        r#"
[auth.jwt]
algorithms = ["HS256"]
secret_env = "{var}"
[[endpoints]]
path = "/echo"
kind = "echo"
{endpoints}
"#
    )
}

/// Rewrites the running server's config file: `body` after the listen address and store the
/// harness chose (kept, so nothing that needs a restart changes unless `body` says so).
fn rewrite(s: &Server, body: &str) {
    let path = s.dir.path().join("wsgate.toml");
    let db = s.dir.path().join("wsgate.db");
    let text = format!(
        "listen = \"127.0.0.1:0\"\n{body}\n[storage]\npath = \"{}\"\n",
        db.display()
    );
    std::fs::write(path, text).expect("rewrite config");
}

fn other_token(sub: &str) -> String {
    jwt(
        jsonwebtoken::Algorithm::HS256,
        Key::Secret(OTHER_SECRET),
        None,
        &claims(sub),
    )
}

fn generation(metrics: &str) -> Option<String> {
    metrics
        .lines()
        .find(|l| l.starts_with("wsgate_config_generation "))
        .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_owned())
}

async fn echoes(ws: &mut Ws, text: &str) {
    send_text(ws, text).await;
    assert_eq!(next_text(ws).await, text);
}

#[tokio::test]
async fn sighup_rotates_the_hmac_secret_and_adds_an_endpoint_without_dropping_a_socket() {
    let s = Server::start_with(
        &hs256_from("WSGATE_TEST_SECRET", ""),
        &[("OTHER_SECRET", OTHER_SECRET)],
    )
    .await;
    assert_eq!(generation(&s.metrics().await).as_deref(), Some("1"));
    let mut open = bearer(&s.url("/echo"), &hs256(&claims("alice"))).await;
    let session = next_json(&mut open).await["session"].clone();

    rewrite(
        &s,
        &hs256_from(
            "OTHER_SECRET",
            "[[endpoints]]\npath = \"/echo2\"\nkind = \"echo\"",
        ),
    );
    s.signal("HUP");
    s.logs_once("config reloaded", 1).await;
    assert_eq!(generation(&s.metrics().await).as_deref(), Some("2"));

    // New handshakes: the old secret's tokens are refused, the new one's taken, on the new
    // endpoint too.
    assert_eq!(
        refused(
            &s.url("/echo"),
            &[(
                "authorization",
                &format!("Bearer {}", hs256(&claims("bob")))
            )]
        )
        .await
        .status,
        401
    );
    let mut fresh = bearer(&s.url("/echo2"), &other_token("bob")).await;
    assert_eq!(next_json(&mut fresh).await["type"], "welcome");
    echoes(&mut fresh, "on the new endpoint").await;

    // The socket opened before the reload is the same session, still echoing, and refreshes
    // against the new secret only.
    echoes(&mut open, "still here").await;
    let stale = json!({"type":"refresh","id":1,"token": hs256(&claims("alice"))});
    send_text(&mut open, &stale.to_string()).await;
    let answer = next_json(&mut open).await;
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["code"], "invalid_token");
    let current = json!({"type":"refresh","id":2,"token": other_token("alice")});
    send_text(&mut open, &current.to_string()).await;
    let answer = next_json(&mut open).await;
    assert_eq!(answer["type"], "refreshed", "{answer}");
    assert_eq!(answer["id"], 2);
    echoes(&mut open, "after the refresh").await;
    assert!(session.is_string());
    assert!(
        !s.logs().contains(SECRET) && !s.logs().contains(OTHER_SECRET),
        "no secret in the log"
    );
}

#[tokio::test]
async fn api_reload_swaps_a_rotated_jwks_file() {
    // The key file lives outside the server's directory, as a provider's export would.
    let keys = tempfile::tempdir().unwrap();
    let jwks = keys.path().join("jwks.json");
    std::fs::copy(fixture("jwks.json"), &jwks).unwrap();
    let config = format!(
        "[auth.jwt]\nalgorithms = [\"RS256\"]\njwks_file = \"{}\"\n[[endpoints]]\npath = \"/echo\"\nkind = \"echo\"\n",
        jwks.display()
    );
    let s = Server::start_with(&config, &[("WSGATE_ADMIN_KEY", ADMIN_KEY)]).await;
    let old = jwt(
        jsonwebtoken::Algorithm::RS256,
        Key::Rsa,
        Some("rsa-1"),
        &claims("carol"),
    );
    let new = jwt(
        jsonwebtoken::Algorithm::RS256,
        Key::RsaB,
        Some("rsa-1"),
        &claims("carol"),
    );
    let mut open = bearer(&s.url("/echo"), &old).await;
    next_json(&mut open).await;
    let bearer_header = |t: &str| format!("Bearer {t}");
    assert_eq!(
        refused(&s.url("/echo"), &[("authorization", &bearer_header(&new))])
            .await
            .status,
        401
    );

    // The provider rotates its key: the file now holds another key under the same kid. The
    // config itself is unchanged; the reload reads the file again.
    std::fs::copy(fixture("jwks_b.json"), &jwks).unwrap();
    assert_eq!(
        post(&s.http("/api/reload"), Some("wrong-admin-key-000"), None)
            .await
            .0,
        403
    );
    assert_eq!(post(&s.http("/api/reload"), None, None).await.0, 401);
    let (status, body) = post(&s.http("/api/reload"), Some(ADMIN_KEY), None).await;
    assert_eq!((status, body), (200, json!({"generation": 2})));

    assert_eq!(
        refused(&s.url("/echo"), &[("authorization", &bearer_header(&old))])
            .await
            .status,
        401
    );
    let mut rotated = bearer(&s.url("/echo"), &new).await;
    assert_eq!(next_json(&mut rotated).await["type"], "welcome");
    echoes(&mut open, "opened under the old key").await;
}

#[tokio::test]
async fn a_refused_reload_keeps_the_running_config_and_says_why_once() {
    let s = Server::start_with(
        &hs256_from("WSGATE_TEST_SECRET", ""),
        &[("WSGATE_ADMIN_KEY", ADMIN_KEY)],
    )
    .await;
    let mut open = bearer(&s.url("/echo"), &hs256(&claims("dave"))).await;
    next_json(&mut open).await;

    // A key that does not exist: check-config would refuse it, so the reload does.
    rewrite(
        &s,
        &format!(
            "{}\n[limits]\nmax_mesage_bytes = 10\n",
            hs256_from("WSGATE_TEST_SECRET", "")
        ),
    );
    s.signal("HUP");
    let logs = s.logs_once("reload refused", 1).await;
    assert!(
        logs.contains("max_mesage_bytes"),
        "the log says why:\n{logs}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(s.logs().matches("reload refused").count(), 1, "once");
    assert_eq!(generation(&s.metrics().await).as_deref(), Some("1"));
    echoes(&mut open, "untouched").await;
    let mut after = bearer(&s.url("/echo"), &hs256(&claims("erin"))).await;
    assert_eq!(next_json(&mut after).await["type"], "welcome");

    // The same through the command line: exit 1 with the reason.
    let url = s.http("");
    let env = [("WSGATE_ADMIN_KEY", ADMIN_KEY)];
    let config = s.dir.path().join("wsgate.toml");
    let cfg = config.to_str().unwrap();
    // Run from a directory without a config: the admin key's variable is the default one.
    let cli_dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run_cli(cli_dir.path(), &["reload", "--url", &url], &env);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("max_mesage_bytes"), "{stderr}");

    // A file that changes a key only a restart can change: accepted, that key named.
    rewrite(
        &s,
        &format!(
            "{}\n[tickets]\nttl_secs = 99\n",
            hs256_from("WSGATE_TEST_SECRET", "")
        ),
    );
    let (code, stdout, stderr) = run_cli(
        cli_dir.path(),
        &["--config", cfg, "reload", "--url", &url],
        &env,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("generation 2"), "{stdout}");
    let logs = s.logs_once("need a restart", 1).await;
    assert!(logs.contains("tickets"), "{logs}");
    echoes(&mut open, "still untouched").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_open_sockets_survive_two_reloads() {
    let s = Server::start(&hs256_from("WSGATE_TEST_SECRET", "")).await;
    let url = s.url("/echo");
    let mut sockets = Vec::new();
    // A thousand users, in batches so the connects do not all hit the listen backlog at once.
    for batch in 0..10 {
        let opened = join_all((0..100).map(|i| {
            let url = &url;
            async move {
                let mut ws = bearer(url, &hs256(&claims(&format!("user{batch}-{i}")))).await;
                next_json(&mut ws).await;
                ws
            }
        }))
        .await;
        sockets.extend(opened);
    }
    rewrite(
        &s,
        &hs256_from(
            "WSGATE_TEST_SECRET",
            "[[endpoints]]\npath = \"/more\"\nkind = \"echo\"",
        ),
    );
    s.signal("HUP");
    s.logs_once("config reloaded", 1).await;
    rewrite(&s, &hs256_from("WSGATE_TEST_SECRET", ""));
    s.signal("HUP");
    s.logs_once("config reloaded", 2).await;
    assert_eq!(generation(&s.metrics().await).as_deref(), Some("3"));
    let echoed = join_all(sockets.iter_mut().enumerate().map(|(i, ws)| async move {
        echoes(ws, &format!("socket {i}")).await;
    }))
    .await;
    assert_eq!(echoed.len(), 1000);
    let metrics = s.metrics().await;
    let open = metrics
        .lines()
        .find(|l| l.starts_with("wsgate_connections_open "))
        .unwrap_or_default()
        .to_owned();
    assert!(open.ends_with(" 1000"), "{open}");
}

#[tokio::test]
async fn a_reload_keeps_the_admin_apis_count_of_wrong_keys() {
    let body = format!(
        "{}\n[limits]\nauth_failures_per_min = 3\n",
        hs256_from("WSGATE_TEST_SECRET", "")
    );
    let s = Server::start_with(&body, &[("WSGATE_ADMIN_KEY", ADMIN_KEY)]).await;
    let url = s.http("/api/disconnect");
    let wrong = Some("not-the-admin-key-0123456789");
    let body_json = json!({"sub": "nobody"});
    for _ in 0..3 {
        assert_eq!(post(&url, wrong, Some(&body_json)).await.0, 403);
    }
    assert_eq!(post(&url, wrong, Some(&body_json)).await.0, 429);

    // The same file read again: a reload must not hand a guesser a fresh budget.
    rewrite(&s, &body);
    s.signal("HUP");
    s.logs_once("config reloaded", 1).await;
    assert_eq!(
        post(&url, wrong, Some(&body_json)).await.0,
        429,
        "still over the limit after the reload"
    );
    // The right key is always let through.
    assert_eq!(post(&url, Some(ADMIN_KEY), Some(&body_json)).await.0, 200);
}
