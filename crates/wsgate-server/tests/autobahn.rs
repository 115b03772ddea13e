//! The Autobahn|Testsuite protocol cases (kosoku, from PyPI) against the `echo` endpoint and
//! against a `proxy` endpoint in front of a strict echo server (Python `websockets`): a
//! transparent proxy must be as clean as wsgate's own endpoint. Compression (cases 12.* and
//! 13.*) is left out: wsgate negotiates no extension, on either side.
//! `scripts/test` installs `tests/autobahn/requirements.txt`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::json;

/// The whole run takes seconds; this only bounds a hang.
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/autobahn")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs every case but compression against `url`; returns (exit status 0, report).
async fn run_cases(url: &str) -> (bool, String) {
    let run = tokio::process::Command::new("python3")
        .arg(suite_dir().join("run.py"))
        .arg(url)
        .args(["--exclude", "12.*", "13.*", "--parallelism", "4"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(RUN_LIMIT, run)
        .await
        .expect("the Autobahn cases finish")
        .expect("python3 with kosoku (pip install -r tests/autobahn/requirements.txt)");
    let report = format!(
        "{}{}run.py: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    (out.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_is_clean_through_echo_and_through_the_proxy() {
    let port = free_port();
    let mut upstream = tokio::process::Command::new("python3")
        .arg(suite_dir().join("echo_upstream.py"))
        .arg(port.to_string())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with websockets (pip install -r tests/autobahn/requirements.txt)");
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(started.elapsed() < WAIT, "the echo upstream did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Case 9.* sends 16 MiB messages and 1,000 messages in a burst: no size or rate limit here.
    let s = Server::start(&format!(
        r#"
[auth]
sources = ["query"]
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
[limits]
max_message_bytes = 33554432
messages_per_sec = 0
[[endpoints]]
path = "/echo"
kind = "echo"
welcome = false
[[endpoints]]
path = "/app"
kind = "proxy"
upstream = "ws://127.0.0.1:{port}/"
"#
    ))
    .await;
    let token = hs256(&json!({"sub":"autobahn","exp":now()+3600}));
    let (echo_url, proxy_url) = (
        s.url(&format!("/echo?token={token}")),
        s.url(&format!("/app?token={token}")),
    );
    let (echo, proxy) = tokio::join!(run_cases(&echo_url), run_cases(&proxy_url));
    assert!(echo.0, "Autobahn against /echo:\n{}", echo.1);
    assert!(proxy.0, "Autobahn through the proxy:\n{}", proxy.1);
    // The ping cases that once got two pongs through the proxy are among those run.
    assert!(proxy.1.contains("passed 301 of 301"), "{}", proxy.1);
    let _ = upstream.kill().await;
}
