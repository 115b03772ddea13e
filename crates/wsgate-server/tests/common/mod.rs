//! Test harness: the real `wsgate` binary on a free port, driven by a real WebSocket client.
//! Every wait is bounded, so a broken server fails a test instead of hanging it.
#![allow(dead_code)]

pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const WAIT: Duration = Duration::from_secs(10);
pub const SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wsgate")
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A running server; killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Starts `wsgate serve` with `config` (listen and storage are filled in).
    pub async fn start(config: &str) -> Server {
        Self::start_with(config, &[]).await
    }

    pub async fn start_with(config: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = format!("listen = \"127.0.0.1:0\"\n{config}\n");
        if !config.contains("[storage]") {
            text.push_str(&format!(
                "[storage]\npath = \"{}\"\n",
                dir.path().join("wsgate.db").display()
            ));
        }
        let cfg_path = dir.path().join("wsgate.toml");
        std::fs::write(&cfg_path, text).expect("write config");
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&cfg_path)
            .current_dir(dir.path())
            .env("WSGATE_LOG", "info")
            .env("WSGATE_TEST_SECRET", SECRET)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn wsgate");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.split("wsgate listening on ").nth(1) {
                    let addr = addr.split_whitespace().next().unwrap_or_default();
                    if let (Some(tx), Ok(a)) = (tx.take(), addr.parse::<SocketAddr>()) {
                        let _ = tx.send(a);
                    }
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match tokio::time::timeout(WAIT, rx).await {
            Ok(Ok(a)) => a,
            _ => panic!(
                "server did not start; logs:\n{}",
                logs.lock().unwrap().clone()
            ),
        };
        Server {
            child,
            addr,
            logs,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The server process's id (to read its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.http("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// The logs once `needle` has appeared `times` times (bounded by [`WAIT`]). The server
    /// writes logs through a buffered non-blocking writer, so a line may reach stderr a moment
    /// after the event: wait for the line that would carry a secret before asserting it does
    /// not, or the check passes on a log not yet written.
    pub async fn logs_once(&self, needle: &str, times: usize) -> String {
        let started = std::time::Instant::now();
        loop {
            let logs = self.logs();
            if logs.matches(needle).count() >= times {
                return logs;
            }
            assert!(
                started.elapsed() < WAIT,
                "{times}× {needle:?} never logged:\n{logs}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Kills the process at once (SIGKILL): a crash, no goodbye to anyone.
    pub async fn crash(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }

    /// Sends the signal `name` (`HUP`, `TERM`, …) to the server process.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Sends SIGTERM and returns the exit status (bounded wait).
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("server did not exit after SIGTERM")
            .expect("wait")
    }
}

/// Connects with extra headers; `Err` carries the HTTP refusal, if any.
pub async fn connect(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, HeaderMap), tungstenite::Error> {
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().append(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let (ws, res) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out")?;
    Ok((ws, res.headers().clone()))
}

pub async fn connect_ok(url: &str, headers: &[(&str, &str)]) -> Ws {
    match connect(url, headers).await {
        Ok((ws, _)) => ws,
        Err(tungstenite::Error::Http(res)) => panic!(
            "expected an upgrade, got HTTP {} {}",
            res.status(),
            String::from_utf8_lossy(res.body().as_deref().unwrap_or_default())
        ),
        Err(e) => panic!("expected an upgrade, got {e}"),
    }
}

pub async fn bearer(url: &str, token: &str) -> Ws {
    connect_ok(url, &[("authorization", &format!("Bearer {token}"))]).await
}

/// A refused handshake: status, headers and JSON body.
pub struct Refusal {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

pub async fn refused(url: &str, headers: &[(&str, &str)]) -> Refusal {
    match connect(url, headers).await {
        Err(tungstenite::Error::Http(res)) => Refusal {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: res
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null),
        },
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the socket was upgraded"),
    }
}

/// Asserts a 401 with `error="invalid_token"`.
pub async fn assert_invalid(url: &str, token: &str) {
    let r = refused(url, &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(r.status, 401, "body: {}", r.body);
    assert_eq!(
        r.headers["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    assert_eq!(r.body["error"], "invalid_token");
}

/// The next text frame (skipping pings and `expiring` notices, which short-lived test
/// tokens draw at once; [`next_text_all`] keeps them), bounded.
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        let t = next_text_all(ws).await;
        if !t.starts_with(r#"{"type":"expiring""#) {
            return t;
        }
    }
}

/// The next text frame, `expiring` notices included (skipping pings), bounded.
pub async fn next_text_all(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Runs the `wsgate` binary to completion in `dir` with only the `env` given of the test
/// variables: its exit code, stdout and stderr.
pub fn run_cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env_remove("WSGATE_TEST_SECRET")
        .envs(env.iter().copied())
        .output()
        .expect("run wsgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// POSTs to the HTTP API: `body` as JSON when given, a bearer credential when given; bounded
/// by [`WAIT`]. The status and the JSON answer (`null` when it is not JSON).
pub async fn post(url: &str, bearer: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    let res = tokio::time::timeout(WAIT, req.send())
        .await
        .expect("an answer in time")
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

pub async fn next_json(ws: &mut Ws) -> Value {
    let t = next_text(ws).await;
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
}

/// Reads until the server's Close frame (skipping pings and `expiring` notices); returns
/// its code and reason.
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.starts_with(r#"{"type":"expiring""#) => continue,
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return (u16::from(f.code), f.reason.to_string());
            }
            Ok(Some(Ok(Message::Close(None)))) => {
                return (u16::from(CloseCode::Status), String::new());
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Signs `claims` with `alg` and a key file from the fixtures or an HMAC secret.
pub fn jwt(alg: jsonwebtoken::Algorithm, key: Key, kid: Option<&str>, claims: &Value) -> String {
    use jsonwebtoken::{EncodingKey, Header};
    let key = match key {
        Key::Secret(s) => EncodingKey::from_secret(s.as_bytes()),
        Key::Rsa => {
            EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap()
        }
        Key::Ec => {
            EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).unwrap()).unwrap()
        }
        Key::Ed => {
            EncodingKey::from_ed_pem(&std::fs::read(fixture("ed_private.pem")).unwrap()).unwrap()
        }
        Key::RsaB => {
            EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_b_private.pem")).unwrap())
                .unwrap()
        }
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

pub enum Key {
    Secret(&'static str),
    Rsa,
    Ec,
    Ed,
    /// A second provider's RSA key (`jwks_b.json`, same kid as `jwks.json`'s RSA key).
    RsaB,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims for `sub` expiring in an hour.
pub fn claims(sub: &str) -> Value {
    serde_json::json!({"sub": sub, "exp": now() + 3600, "iat": now()})
}

/// HS256 with [`SECRET`].
pub fn hs256(claims: &Value) -> String {
    jwt(
        jsonwebtoken::Algorithm::HS256,
        Key::Secret(SECRET),
        None,
        claims,
    )
}

/// Config for HS256 JWTs with [`SECRET`] (from the environment, as operators would).
pub const HS256_CONFIG: &str = r#"
[auth.jwt]
algorithms = ["HS256"]
secret_env = "WSGATE_TEST_SECRET"
leeway_secs = 5

[[endpoints]]
path = "/echo"
kind = "echo"
"#;

/// An HTTP server on a free loopback port running `router`, for JWKS and auth backends.
pub async fn http_backend(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

pub fn install_crypto() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// Signs Security Event Tokens with an independent JOSE implementation (npm `jose`,
/// `tests/interop/transmitter.mjs`): each entry is `{"payload", "header"?, "key"?}`. Returns
/// the transmitter's JWKS and the SETs, in order.
pub async fn sign_sets(sets: &[Value]) -> (Value, Vec<String>) {
    use tokio::io::AsyncWriteExt;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/transmitter.mjs");
    let mut child = Command::new("node")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node (scripts/test installs tests/interop's packages)");
    let input = serde_json::json!({ "sets": sets }).to_string();
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("write");
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the transmitter in time")
        .expect("the transmitter ran");
    assert!(
        out.status.success(),
        "transmitter.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON from transmitter.mjs");
    let sets = v["sets"]
        .as_array()
        .expect("sets")
        .iter()
        .map(|s| s.as_str().expect("a SET").to_owned())
        .collect();
    (v["jwks"].clone(), sets)
}

/// A Python helper from the repository's `tests/` (the webhook receiver, the OTLP collector):
/// it prints `port N` once listening, then one JSON line per thing it saw.
pub struct PythonService {
    _child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pub port: u16,
}

impl PythonService {
    /// Starts `tests/<script>` with `args`; `packages` names its requirements file, for the
    /// message when python3 or a package is missing.
    pub async fn start(script: &str, args: &[&str], packages: &str) -> Self {
        let path = format!("{}/../../tests/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("python3")
            .arg(&path)
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("python3 {script} (scripts/test installs {packages}): {e}"));
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{script} started (scripts/test installs {packages})"))
            .expect("read")
            .unwrap_or_else(|| panic!("{script} exited (scripts/test installs {packages})"));
        let port = first
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{script} said {first:?}"));
        Self {
            _child: child,
            lines,
            port,
        }
    }

    /// The next JSON line (bounded wait).
    pub async fn next_json(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("a line");
        serde_json::from_str(&line).expect("JSON")
    }
}
