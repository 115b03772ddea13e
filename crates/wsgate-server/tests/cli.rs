//! The command line: check-config, token, serve on embedded defaults.

mod common;

use common::*;

#[test]
fn check_config_summarises_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wsgate.toml"),
        "[auth.static]\ntokens = { \"valid-token\" = \"demo-user\" }\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/\"\n[[endpoints]]\npath = \"/echo\"\nkind = \"echo\"\n",
    )
    .unwrap();
    let (code, out, err) = run_cli(dir.path(), &["check-config"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("telemetry: http://127.0.0.1:4318/v1/traces as \"wsgate\""),
        "{out}"
    );
    assert!(out.contains("wsgate.toml: ok"), "{out}");
    assert!(out.contains("static tokens: 1"), "{out}");
    assert!(out.contains("/echo (echo)"), "{out}");
    assert!(
        !out.contains("valid-token"),
        "check-config must not print credentials"
    );
    assert!(
        !dir.path().join("wsgate.db").exists(),
        "check-config creates nothing"
    );
}

#[test]
fn check_config_shows_the_cluster_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wsgate.toml"),
        "[cluster]\nredis_url = \"redis://:hunter2@10.1.2.3:6380/0\"\nkey_prefix = \"app1:\"\n",
    )
    .unwrap();
    let (code, out, err) = run_cli(dir.path(), &["check-config"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cluster: redis at 10.1.2.3:6380"), "{out}");
    assert!(out.contains("app1:"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
}

#[test]
fn check_config_names_file_key_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[auth]\nsorces = [\"bearer\"]\n", "sorces"),
        ("[auth]\nsources = [\"cookie\"]\n", "auth.sources"),
        (
            "[auth.jwt]\nsecret_env = \"WSGATE_NOT_SET_ANYWHERE\"\n",
            "WSGATE_NOT_SET_ANYWHERE",
        ),
        (
            "[auth.jwt]\nalgorithms = [\"RS256\"]\npublic_key_file = \"/nonexistent.pem\"\n",
            "auth.jwt.public_key_file",
        ),
        (
            "[limits]\nmax_message_bytes = \"big\"\n",
            "max_message_bytes",
        ),
        ("listen = ", "bad.toml"),
        (
            "[cluster]\nredis_url = \"http://127.0.0.1:6379\"\n",
            "cluster.redis_url",
        ),
        ("[cluster]\nkey_prefix = \"a*\"\n", "cluster.key_prefix"),
        (
            "[auth]\nproxy_revalidate_secs = 60\n",
            "auth.proxy_revalidate_secs",
        ),
        (
            "[auth]\nproxy_url = \"http://127.0.0.1:9/a\"\nproxy_revalidate_secs = 1.5\n",
            "proxy_revalidate_secs",
        ),
        (
            "[auth]\nproxy_url = \"http://127.0.0.1:9/a\"\nproxy_revalidate_secs = 86401\n",
            "auth.proxy_revalidate_secs",
        ),
        (
            "[auth]\nrevalidate_on_error = \"maybe\"\n",
            "revalidate_on_error",
        ),
        (
            "[[auth.providers]]\nname = \"p\"\nissuer = \"https://i\"\nsecret = \"0123456789abcdef0123456789abcdef\"\nrevalidate_secs = 60\n",
            "revalidate_secs",
        ),
        (
            "[telemetry]\notlp_endpoint = \"127.0.0.1:4317\"\n",
            "telemetry.otlp_endpoint",
        ),
        (
            "[telemetry]\notlp_endpoint = \"grpc://collector:4317\"\n",
            "telemetry.otlp_endpoint",
        ),
        (
            "[telemetry]\notlp_endpoint = \"https://user:pw@collector\"\n",
            "telemetry.otlp_endpoint",
        ),
        (
            "[telemetry]\notlp_endpoint = \"http://collector:4318\"\nservice_name = \"\"\n",
            "telemetry.service_name",
        ),
        ("[telemetry]\nservice_name = \"x\"\n", "otlp_endpoint"),
    ];
    for (text, needle) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = run_cli(
            dir.path(),
            &["check-config", "--config", path.to_str().unwrap()],
            &[],
        );
        assert_eq!(code, 1, "{text:?}: {err}");
        assert!(err.contains("bad.toml"), "{text:?}: {err}");
        assert!(err.contains(needle), "{text:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let (code, _, err) = run_cli(
        dir.path(),
        &["check-config", "--config", "missing.toml"],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("missing.toml"), "{err}");
}

#[test]
fn bad_flags_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(dir.path(), &["token"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--sub"), "{err}");
    let (code, _, err) = run_cli(dir.path(), &["token", "--sub", "a", "--ttl", "1w"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown unit"), "{err}");
    let (code, _, err) = run_cli(dir.path(), &["serve", "--listen", "nonsense"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("listen"), "{err}");
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run_cli(dir.path(), &["--version"], &[]);
    assert_eq!(code, 0);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert_eq!(
        out.trim(),
        format!("wsgate {} (commit {head})", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn token_minted_by_the_cli_is_accepted_by_the_same_config() {
    install_crypto();
    let cfg = r#"
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
issuer = "https://issuer.example"
audience = "wsgate"
[[endpoints]]
path = "/echo"
kind = "echo"
"#;
    let s = Server::start(cfg).await;
    let cfg_path = s.dir.path().join("wsgate.toml");
    let (code, out, err) = run_cli(
        s.dir.path(),
        &[
            "token",
            "--config",
            cfg_path.to_str().unwrap(),
            "--sub",
            "alice",
            "--ttl",
            "10m",
            "--channels",
            "chat:*,user:{sub}",
        ],
        &[("WSGATE_TEST_SECRET", SECRET)],
    );
    assert_eq!(code, 0, "{err}");
    let token = out.trim();
    assert_eq!(out.lines().count(), 1, "the token alone on stdout");
    let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token)
        .unwrap()
        .claims;
    assert_eq!(claims["iss"], "https://issuer.example");
    assert_eq!(claims["aud"], "wsgate");
    assert_eq!(
        claims["channels"],
        serde_json::json!(["chat:*", "user:{sub}"])
    );
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(ttl, 600);
    let mut ws = bearer(&s.url("/echo"), token).await;
    assert_eq!(next_json(&mut ws).await["sub"], "alice");
}

#[test]
fn token_needs_an_hmac_secret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wsgate.toml"),
        format!(
            "[auth.jwt]\nalgorithms = [\"RS256\"]\npublic_key_file = \"{}\"\n",
            fixture("rsa_public.pem").display()
        ),
    )
    .unwrap();
    let (code, out, err) = run_cli(dir.path(), &["token", "--sub", "a"], &[]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("HMAC"), "{err}");
}

#[tokio::test]
async fn embedded_defaults_keep_a_generated_secret() {
    install_crypto();
    // No config file anywhere: `token` and `serve` share the secret generated in ./wsgate.db.
    let dir = tempfile::tempdir().unwrap();
    let (code, token, err) = run_cli(dir.path(), &["token", "--sub", "dev"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(dir.path().join("wsgate.db").exists());
    let mut child = tokio::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(a) = l.split("wsgate listening on ").nth(1) {
                return a.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("no listening line");
    })
    .await
    .unwrap();
    let mut ws = bearer(&format!("ws://{addr}/echo"), token.trim()).await;
    assert_eq!(next_json(&mut ws).await["sub"], "dev");
    // `/ws` is the pubsub endpoint of the defaults.
    let mut ws = bearer(&format!("ws://{addr}/ws"), token.trim()).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    send_text(&mut ws, r#"{"type":"ping","id":1}"#).await;
    assert_eq!(
        next_json(&mut ws).await,
        serde_json::json!({"type":"pong","id":1})
    );
}

/// Whatever `serve` refuses at start, `check-config` refuses too, and both say it once,
/// naming the key and what to do.
#[test]
fn check_config_refuses_what_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("not-a-db"), "hello, I am a text file").unwrap();
    // A SQLite database whose `api_keys` table is someone else's.
    let other = rusqlite::Connection::open(dir.path().join("other.db")).unwrap();
    other
        .execute_batch("CREATE TABLE api_keys (id TEXT PRIMARY KEY, owner TEXT);")
        .unwrap();
    drop(other);
    for (config, needle) in [
        (
            "[storage]\npath = \"\"\n".to_owned(),
            "storage.path: must not be empty",
        ),
        (
            format!(
                "[storage]\npath = \"{}\"\n",
                dir.path().join("other.db").display()
            ),
            "another schema: table `api_keys` has no column `name`",
        ),
        (
            "demo = true\n[auth.static]\ntokens = { \"t\" = \"u\" }\n".to_owned(),
            "needs an HMAC secret",
        ),
        (
            "[storage]\npath = \"no/such/folder/wsgate.db\"\n".to_owned(),
            "does not exist",
        ),
        (
            format!(
                "[storage]\npath = \"{}\"\n",
                dir.path().join("not-a-db").display()
            ),
            "not a wsgate store",
        ),
    ] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, format!("listen = \"127.0.0.1:0\"\n{config}")).unwrap();
        let cfg = cfg.to_str().unwrap();
        let (code, _, err) = run_cli(dir.path(), &["check-config", "--config", cfg], &[]);
        assert_eq!(code, 1, "check-config accepted {config:?}");
        assert!(err.contains(needle), "{config:?}: {err}");
        let (code, _, serve_err) = run_cli(dir.path(), &["serve", "--config", cfg], &[]);
        assert_eq!(code, 1, "serve accepted {config:?}");
        assert!(serve_err.contains(needle), "{config:?}: {serve_err}");
        assert_eq!(err.matches(needle).count(), 1, "said twice: {err}");
        assert!(
            err.matches("not a database").count() <= 1,
            "said twice: {err}"
        );
    }
}

#[tokio::test]
async fn listen_takes_host_names_and_blames_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(dir.path(), &["serve", "--listen", "no such host:1"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("--listen"), "{err}");
    assert!(!err.contains("embedded defaults"), "{err}");
    let mut child = tokio::process::Command::new(bin())
        .args(["serve", "--listen", "localhost:0"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = String::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(WAIT, lines.next_line()).await {
        said.push_str(&line);
        said.push('\n');
        if line.contains("next: TOKEN=") {
            break;
        }
    }
    assert!(said.contains("wsgate listening on 127.0.0.1:"), "{said}");
    assert!(said.contains("endpoint ws://127.0.0.1:"), "{said}");
    assert!(said.contains("wsgate token --sub alice"), "{said}");
}

#[tokio::test]
async fn metrics_list_their_families_from_the_start() {
    let s = Server::start(HS256_CONFIG).await;
    let body = reqwest::get(s.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "wsgate_connections_open",
        "wsgate_handshakes_total",
        "wsgate_messages_total",
    ] {
        assert!(body.contains(family), "{family} missing from:\n{body}");
    }
}

#[test]
fn keys_list_shows_dates_a_person_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(
        dir.path(),
        &[
            "keys",
            "create",
            "--name",
            "ci",
            "--sub",
            "svc",
            "--expires-in",
            "30d",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run_cli(dir.path(), &["keys", "list"], &[]);
    assert_eq!(code, 0);
    let row = out
        .lines()
        .find(|l| l.contains(" ci "))
        .expect("the key is listed");
    assert_eq!(row.matches(" UTC").count(), 2, "created and expires: {row}");
    let (code, _, err) = run_cli(
        dir.path(),
        &["keys", "create", "--name", "ci", "--sub", "svc"],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(err.matches("already exists").count(), 1, "{err}");
    // Control characters neither go in nor come out raw (a name written by another program).
    let (code, _, err) = run_cli(
        dir.path(),
        &["keys", "create", "--name", "red\u{1b}[31m", "--sub", "svc"],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    let db = rusqlite::Connection::open(dir.path().join("wsgate.db")).unwrap();
    db.execute(
        "UPDATE api_keys SET name = 'bell\u{7}\u{1b}[2J' WHERE name = 'ci'",
        [],
    )
    .unwrap();
    let (code, out, _) = run_cli(dir.path(), &["keys", "list"], &[]);
    assert_eq!(code, 0);
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    assert!(out.contains("bell\\u{7}\\u{1b}[2J"), "{out}");
}

#[test]
fn absurd_lifetimes_are_refused_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_cli(
        dir.path(),
        &["token", "--sub", "a", "--ttl", "18446744073709551615"],
        &[],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty());
    let (code, _, _) = run_cli(
        dir.path(),
        &[
            "keys",
            "create",
            "--name",
            "n",
            "--sub",
            "a",
            "--expires-in",
            "18446744073709551615d",
        ],
        &[],
    );
    assert_eq!(code, 2);
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_text_lines_fields() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wsgate.toml");
    std::fs::write(&cfg, format!("listen = \"127.0.0.1:0\"\n{HS256_CONFIG}")).unwrap();
    let mut child = tokio::process::Command::new(bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .current_dir(dir.path())
        .env("WSGATE_LOG_FORMAT", "json")
        .env("WSGATE_TEST_SECRET", SECRET)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut next = async || -> serde_json::Value {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("a log line in time")
            .unwrap()
            .expect("the server is still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let addr = loop {
        let line = next().await;
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
        let message = line["message"].as_str().unwrap_or_default();
        if let Some(addr) = message.strip_prefix("wsgate listening on ") {
            break addr.split_whitespace().next().unwrap().to_owned();
        }
    };
    let token = hs256(&claims("jason"));
    let _ws = bearer(&format!("ws://{addr}/echo?token={token}"), &token).await;
    let accepted = loop {
        let line = next().await;
        if line["message"] == "connection accepted" {
            break line;
        }
    };
    assert_eq!(accepted["target"], "wsgate::conn");
    assert_eq!(accepted["sub"], "jason");
    assert_eq!(accepted["provider"], "jwt");
    assert_eq!(accepted["path"], "/echo");
    assert_eq!(accepted["session"].as_str().map(str::len), Some(32));
    assert!(!accepted.to_string().contains(&token), "a token in the log");
    let (code, _, err) = run_cli(
        dir.path(),
        &["check-config"],
        &[("WSGATE_LOG_FORMAT", "xml")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("WSGATE_LOG_FORMAT"), "{err}");
}
