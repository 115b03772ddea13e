//! `[telemetry]` against a real OTLP/HTTP collector (`tests/telemetry/collector.py`), which
//! decodes every export with the `opentelemetry-proto` package's reference classes: the
//! handshake span joins the caller's `traceparent`, the session's refresh is its child, a
//! proxy's dial is too and the upstream is handed that dial's context; a refused handshake is
//! an error span; an unsampled caller is not recorded; a dead collector slows nothing.

mod common;

use std::time::{Duration, Instant};

use common::upstream::Upstream;
use common::*;
use serde_json::{Value, json};

/// The W3C specification's own example: the caller's trace and span.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str, span: &str, flags: &str) -> String {
    format!("00-{trace}-{span}-{flags}")
}

/// The OTLP collector (`tests/telemetry/collector.py`): one JSON line per decoded span.
struct Collector(PythonService);

impl Collector {
    async fn start() -> Self {
        Self(
            PythonService::start(
                "telemetry/collector.py",
                &[],
                "tests/telemetry/requirements.txt",
            )
            .await,
        )
    }

    fn port(&self) -> u16 {
        self.0.port
    }

    /// The next span the collector decoded.
    async fn next(&mut self) -> Value {
        let span = self.0.next_json().await;
        assert!(span.get("error").is_none(), "the export decodes: {span}");
        assert_eq!(span["path"], "/v1/traces");
        assert_eq!(span["content_type"], "application/x-protobuf");
        span
    }

    /// Spans until one named `name` arrives (returned last).
    async fn until(&mut self, name: &str) -> Vec<Value> {
        let mut spans = Vec::new();
        loop {
            let span = self.next().await;
            let done = span["name"] == name;
            spans.push(span);
            if done {
                return spans;
            }
        }
    }
}

fn config(collector: u16, endpoints: &str) -> String {
    format!(
        r#"
[auth.jwt]
algorithms = ["HS256"]
secret_env = "WSGATE_TEST_SECRET"
leeway_secs = 5

[telemetry]
otlp_endpoint = "http://127.0.0.1:{collector}"
service_name = "wsgate-test"

{endpoints}
"#
    )
}

const ECHO: &str = r#"
[[endpoints]]
path = "/echo"
kind = "echo"
"#;

/// Nothing a span carries may name the subject or hold the token.
fn assert_clean(span: &Value, token: &str) {
    let text = span.to_string();
    assert!(!text.contains(token), "no token in {text}");
    assert!(!text.contains("alice-the-subject"), "no subject in {text}");
}

#[tokio::test]
async fn the_handshake_joins_the_callers_trace_and_the_refresh_is_its_child() {
    let mut collector = Collector::start().await;
    let s = Server::start(&config(collector.port(), ECHO)).await;
    let token = hs256(&claims("alice-the-subject"));
    let parent = traceparent(CALLER_TRACE, CALLER_SPAN, "01");
    let mut ws = connect_ok(
        &s.url("/echo"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("traceparent", &parent),
        ],
    )
    .await;
    let session = next_json(&mut ws).await["session"]
        .as_str()
        .expect("welcome names the session")
        .to_owned();

    let handshake = collector
        .until("wsgate.handshake")
        .await
        .pop()
        .expect("span");
    assert_eq!(handshake["trace_id"], CALLER_TRACE, "{handshake}");
    assert_eq!(handshake["parent_span_id"], CALLER_SPAN);
    assert_ne!(handshake["span_id"], CALLER_SPAN);
    assert_eq!(handshake["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(handshake["status"]["code"], 1, "STATUS_CODE_OK");
    let a = &handshake["attributes"];
    assert_eq!(a["wsgate.outcome"], "accepted");
    assert_eq!(a["wsgate.endpoint"], "/echo");
    assert_eq!(a["wsgate.source"], "bearer");
    assert_eq!(a["wsgate.session"], session.as_str());
    assert_eq!(a["url.path"], "/echo");
    assert_eq!(a["client.address"], "127.0.0.1");
    assert_eq!(handshake["resource"]["service.name"], "wsgate-test");
    assert_eq!(handshake["scope"], "wsgate");
    let (start, end) = (
        handshake["start"].as_u64().expect("start"),
        handshake["end"].as_u64().expect("end"),
    );
    assert!(start > 0 && start <= end, "{start} .. {end}");
    assert_clean(&handshake, &token);

    let newer = hs256(&json!({"sub": "alice-the-subject", "exp": now() + 1200}));
    send_text(
        &mut ws,
        &json!({"type": "refresh", "token": newer, "id": 1}).to_string(),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["type"], "refreshed");
    let refresh = collector.until("wsgate.refresh").await.pop().expect("span");
    assert_eq!(refresh["trace_id"], CALLER_TRACE);
    assert_eq!(refresh["parent_span_id"], handshake["span_id"]);
    assert_eq!(refresh["kind"], 1, "SPAN_KIND_INTERNAL");
    assert_eq!(refresh["attributes"]["wsgate.outcome"], "refreshed");
    assert_eq!(refresh["attributes"]["wsgate.session"], session.as_str());
    assert_clean(&refresh, &newer);

    // A refused refresh is an error span with the verifier's code.
    send_text(
        &mut ws,
        &json!({"type": "refresh", "token": "not-a-jwt", "id": 2}).to_string(),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["type"], "error");
    let refused = collector.until("wsgate.refresh").await.pop().expect("span");
    assert_eq!(refused["parent_span_id"], handshake["span_id"]);
    assert_eq!(refused["attributes"]["wsgate.outcome"], "refused");
    assert_eq!(refused["status"]["code"], 2, "STATUS_CODE_ERROR");
    assert_eq!(refused["status"]["message"], "invalid_token");
}

#[tokio::test]
async fn a_refused_handshake_is_an_error_span_and_an_unsampled_caller_is_not_recorded() {
    let mut collector = Collector::start().await;
    let s = Server::start(&config(collector.port(), ECHO)).await;

    // An unsampled caller's handshake first: its trace must never reach the collector.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let token = hs256(&claims("alice-the-subject"));
    let ws = connect_ok(
        &s.url("/echo"),
        &[
            ("authorization", &format!("Bearer {token}")),
            (
                "traceparent",
                &traceparent(unsampled, "b7ad6b7169203331", "00"),
            ),
        ],
    )
    .await;
    drop(ws);

    // A refused one with a malformed traceparent: a trace of its own, as its root.
    let refusal = refused(
        &s.url("/echo"),
        &[
            ("authorization", "Bearer not-a-valid-token"),
            ("traceparent", "00-XYZ-not-a-traceparent-01"),
        ],
    )
    .await;
    assert_eq!(refusal.status, 401);
    let spans = collector.until("wsgate.handshake").await;
    assert!(
        spans.iter().all(|s| s["trace_id"] != unsampled),
        "an unsampled trace is not recorded: {spans:?}"
    );
    let span = spans.last().expect("span");
    assert_eq!(span["parent_span_id"], "", "a new trace's root: {span}");
    assert_eq!(span["trace_id"].as_str().map(str::len), Some(32));
    assert_ne!(span["trace_id"], "0".repeat(32));
    assert_eq!(span["status"]["code"], 2, "STATUS_CODE_ERROR");
    assert_eq!(span["status"]["message"], "invalid_token");
    let a = &span["attributes"];
    assert_eq!(a["wsgate.outcome"], "refused");
    assert_eq!(a["wsgate.error"], "invalid_token");
    assert_eq!(a["wsgate.source"], "bearer");
    assert_eq!(a["http.response.status_code"], 401);
    assert!(!span.to_string().contains("not-a-valid-token"));
}

#[tokio::test]
async fn a_proxy_dial_is_a_child_span_and_the_upstream_gets_its_context() {
    let mut collector = Collector::start().await;
    let mut up = Upstream::start(None).await;
    let proxy = format!(
        r#"
[[endpoints]]
path = "/app"
kind = "proxy"
upstream = "{}"
"#,
        up.url("/ws")
    );
    let s = Server::start(&config(collector.port(), &proxy)).await;
    let token = hs256(&claims("alice-the-subject"));
    let _ws = connect_ok(
        &s.url("/app"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("traceparent", &traceparent(CALLER_TRACE, CALLER_SPAN, "01")),
            ("tracestate", "vendor=opaque"),
        ],
    )
    .await;
    let (_, headers) = up.request().await;
    let passed: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(passed.len(), 1, "one traceparent upstream: {headers:?}");
    let tracestate: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("tracestate"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(tracestate, ["vendor=opaque"]);

    let spans = collector.until("wsgate.upstream.connect").await;
    let handshake = spans
        .iter()
        .find(|s| s["name"] == "wsgate.handshake")
        .expect("the handshake span (finished before the dial)");
    let dial = spans.last().expect("span");
    assert_eq!(dial["trace_id"], CALLER_TRACE);
    assert_eq!(dial["parent_span_id"], handshake["span_id"]);
    assert_eq!(dial["kind"], 3, "SPAN_KIND_CLIENT");
    assert_eq!(dial["attributes"]["wsgate.outcome"], "connected");
    assert_eq!(dial["attributes"]["server.address"], "127.0.0.1");
    assert_eq!(dial["attributes"]["wsgate.endpoint"], "/app");
    // The upstream's parent is the dial: same trace, the dial's span id, sampled.
    let dial_span = dial["span_id"].as_str().expect("hex");
    assert_eq!(
        passed[0],
        traceparent(CALLER_TRACE, dial_span, "01"),
        "the upstream continues the caller's trace under the dial"
    );
    assert_clean(dial, &token);
}

#[tokio::test]
async fn a_dead_collector_costs_handshakes_nothing_and_its_spans_are_counted_as_dropped() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let s = Server::start(&config(dead, ECHO)).await;
    let token = hs256(&claims("alice-the-subject"));
    for _ in 0..20 {
        let mut ws = bearer(&s.url("/echo"), &token).await;
        assert_eq!(next_json(&mut ws).await["type"], "welcome");
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = s.metrics().await;
        let dropped = metrics
            .lines()
            .find_map(|l| l.strip_prefix("wsgate_telemetry_spans_dropped_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if dropped >= 20.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dropped spans counted: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        s.logs().matches("spans not exported").count(),
        1,
        "one warning per outage: {}",
        s.logs()
    );
}

#[tokio::test]
async fn each_recheck_with_the_issuer_is_a_span_of_the_sessions_trace() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    // A session backend (`auth.proxy_url`) that vouches until it is told the session ended.
    let ended = Arc::new(AtomicBool::new(false));
    let answer = ended.clone();
    let router = axum::Router::new().route(
        "/auth",
        axum::routing::post(move || {
            let ended = answer.load(Ordering::SeqCst);
            async move {
                if ended {
                    (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({})))
                } else {
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"sub": "alice-the-subject"})),
                    )
                }
            }
        }),
    );
    let backend = http_backend(router).await;
    let mut collector = Collector::start().await;
    let config = format!(
        r#"
[auth]
proxy_url = "http://{backend}/auth"
proxy_revalidate_secs = 1

[telemetry]
otlp_endpoint = "http://127.0.0.1:{}/v1/traces"

{ECHO}
"#,
        collector.port()
    );
    let s = Server::start(&config).await;
    let mut ws = connect_ok(
        &s.url("/echo"),
        &[
            ("authorization", "Bearer backend-session-1"),
            ("traceparent", &traceparent(CALLER_TRACE, CALLER_SPAN, "01")),
        ],
    )
    .await;
    next_json(&mut ws).await;
    let handshake = collector
        .until("wsgate.handshake")
        .await
        .pop()
        .expect("span");
    assert_eq!(
        handshake["resource"]["service.name"], "wsgate",
        "the default name"
    );

    let valid = collector
        .until("wsgate.revalidate")
        .await
        .pop()
        .expect("span");
    assert_eq!(valid["trace_id"], CALLER_TRACE);
    assert_eq!(valid["parent_span_id"], handshake["span_id"]);
    assert_eq!(valid["attributes"]["wsgate.outcome"], "valid");
    assert_eq!(valid["status"]["code"], 1);

    ended.store(true, Ordering::SeqCst);
    // Spans leave in batches (up to a second) and checks come every second: a check made
    // before the backend changed its answer may still be on its way. Each is in the trace.
    let refused = loop {
        let span = collector
            .until("wsgate.revalidate")
            .await
            .pop()
            .expect("span");
        assert_eq!(span["parent_span_id"], handshake["span_id"]);
        if span["attributes"]["wsgate.outcome"] != "valid" {
            break span;
        }
    };
    assert_eq!(refused["attributes"]["wsgate.outcome"], "refused");
    assert_eq!(refused["status"]["code"], 2);
    assert_eq!(expect_close(&mut ws).await.0, 4003);
    assert_clean(&refused, "backend-session-1");
}
