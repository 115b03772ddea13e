//! The OpenID Shared Signals receiver through the binary: SETs signed by an independent JOSE
//! implementation (npm `jose`, `tests/interop/transmitter.mjs`), pushed (RFC 8935) and polled
//! (RFC 8936), every subject format, every refusal, replays. A SET pushed to one node
//! closing a socket on another is in `cluster.rs`.

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use common::*;
use serde_json::{Value, json};

const AUDIENCE: &str = "https://wsgate.test";
const IDP: &str = "https://idp.test";
const PUSH_TOKEN: &str = "push-token-0123456789abcdef";
const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";

/// One poll as the transmitter saw it: its `Authorization` header and its body.
type Poll = (Option<String>, Value);

/// The transmitter's side in HTTP: its key set, its configuration document and a poll
/// endpoint serving what the test gives it, recording every poll.
#[derive(Clone, Default)]
struct Transmitter {
    jwks: Arc<Mutex<Value>>,
    queue: Arc<Mutex<Value>>,
    polls: Arc<Mutex<Vec<Poll>>>,
}

impl Transmitter {
    async fn start(&self) -> String {
        let (me, me2) = (self.clone(), self.clone());
        let base = Arc::new(Mutex::new(String::new()));
        let base2 = base.clone();
        let router =
            axum::Router::new()
                .route(
                    "/jwks.json",
                    axum::routing::get(move || {
                        let me = me.clone();
                        async move { Json(me.jwks.lock().unwrap().clone()) }
                    }),
                )
                .route(
                    "/.well-known/ssf-configuration",
                    axum::routing::get(move || {
                        let base = base2.lock().unwrap().clone();
                        async move {
                            Json(json!({"issuer": base, "jwks_uri": format!("{base}/jwks.json")}))
                        }
                    }),
                )
                .route(
                    "/poll",
                    axum::routing::post(
                        move |headers: axum::http::HeaderMap, Json(body): Json<Value>| {
                            let me = me2.clone();
                            async move {
                                let auth = headers
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                me.polls.lock().unwrap().push((auth, body));
                                let sets =
                                    std::mem::replace(&mut *me.queue.lock().unwrap(), json!({}));
                                Json(json!({"sets": sets, "moreAvailable": false}))
                            }
                        },
                    ),
                );
        let addr = http_backend(router).await;
        let url = format!("http://{addr}");
        *base.lock().unwrap() = url.clone();
        url
    }
}

/// A SET payload from `iss` about one event.
fn set(iss: &str, jti: &str, event: &str, body: Value) -> Value {
    json!({"payload": {
        "iss": iss, "aud": AUDIENCE, "iat": now(), "jti": jti,
        "events": { event: body }
    }})
}

fn token(sub: &str, extra: Value) -> String {
    let mut claims =
        json!({"sub": sub, "iss": IDP, "iat": now() - 5, "exp": now() + 3600, "channels": ["c"]});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    hs256(&claims)
}

async fn open(s: &Server, token: &str) -> Ws {
    let mut ws = bearer(&s.url("/ws"), token).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    ws
}

async fn alive(ws: &mut Ws) {
    send_text(ws, r#"{"type":"subscribe","channel":"c","id":7}"#).await;
    let answer = next_json(ws).await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
}

async fn push(s: &Server, set: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(s.http("/api/ssf/events"))
        .header("content-type", "application/secevent+jwt")
        .body(set.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("push");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn count(metrics: &str, event: &str, outcome: &str) -> u64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("wsgate_ssf_events_total")
                && l.contains(&format!("event=\"{event}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_events_close_matching_sessions_and_refuse_their_older_tokens() {
    let transmitter = Transmitter::default();
    let iss = transmitter.start().await;
    let session = |sid: &str| {
        json!({"subject": {"format": "complex",
        "user": {"format": "opaque", "id": "alice"},
        "session": {"format": "opaque", "id": sid}}})
    };
    let event_time = now() - 2;
    let entries = vec![
        // 0: one of alice's sessions (by sid).
        set(
            &iss,
            "j-session",
            &format!("{CAEP}session-revoked"),
            session("s-1"),
        ),
        // 1: bob at the IdP the tokens come from, as of a moment ago.
        set(
            &iss,
            "j-bob",
            &format!("{RISC}account-disabled"),
            json!({
            "subject": {"format": "iss_sub", "iss": IDP, "sub": "bob"},
            "event_timestamp": event_time}),
        ),
        // 2: carol by email, another case.
        set(
            &iss,
            "j-carol",
            &format!("{CAEP}credential-change"),
            json!({
            "subject": {"format": "email", "email": "CAROL@example.com"}}),
        ),
        // 3: dave by an opaque id, the subject at the top level (sub_id).
        json!({"payload": {"iss": iss, "aud": AUDIENCE, "iat": now(), "jti": "j-dave",
            "sub_id": {"format": "opaque", "id": "dave"},
            "events": {format!("{RISC}sessions-revoked"): {}}}}),
        // 4: an event wsgate does not act on.
        set(
            &iss,
            "j-other",
            "https://example.com/event-type/whatever",
            json!({
            "subject": {"format": "opaque", "id": "erin"}}),
        ),
        // 5..: refusals.
        json!({"payload": {"iss": iss, "aud": AUDIENCE, "iat": now(), "jti": "j-typ",
            "events": {format!("{RISC}account-purged"): {}}}, "header": {"typ": "JWT"}}),
        json!({"payload": {"iss": iss, "aud": AUDIENCE, "iat": now(), "jti": "j-key",
            "events": {format!("{RISC}account-purged"): {}}}, "key": "unpublished"}),
        json!({"payload": {"iss": iss, "aud": AUDIENCE, "iat": now(), "jti": "j-kid",
            "events": {format!("{RISC}account-purged"): {}}}, "header": {"kid": "nope"}}),
        set(
            "https://someone-else.test",
            "j-iss",
            &format!("{RISC}account-purged"),
            json!({}),
        ),
        json!({"payload": {"iss": iss, "aud": "https://elsewhere.test", "iat": now(), "jti": "j-aud",
            "events": {format!("{RISC}account-purged"): {}}}}),
        json!({"payload": {"iss": iss, "aud": AUDIENCE, "iat": now(),
            "events": {format!("{RISC}account-purged"): {}}}}),
        json!({"payload": {"iss": iss, "aud": AUDIENCE, "iat": now(), "jti": "j-crit",
            "events": {format!("{RISC}account-purged"): {}}}, "header": {"crit": ["x"], "x": 1}}),
    ];
    let (jwks, sets) = sign_sets(&entries).await;
    *transmitter.jwks.lock().unwrap() = jwks;
    let config = format!(
        r#"
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
issuer = "{IDP}"

[ssf]
issuer = "{iss}"
jwks_url = "{iss}/jwks.json"
audience = "{AUDIENCE}"
push_token_env = "WSGATE_TEST_SSF_TOKEN"

[[endpoints]]
path = "/ws"
kind = "pubsub"
"#
    );
    let s = Server::start_with(&config, &[("WSGATE_TEST_SSF_TOKEN", PUSH_TOKEN)]).await;
    let alice_s1 = token("alice", json!({"sid": "s-1"}));
    let alice_s2 = token("alice", json!({"sid": "s-2"}));
    let bob = token("bob", json!({}));
    let carol = token("carol", json!({"email": "carol@example.com"}));
    let mut a1 = open(&s, &alice_s1).await;
    let mut a2 = open(&s, &alice_s2).await;
    let mut b = open(&s, &bob).await;
    let mut c = open(&s, &carol).await;
    let mut d = open(&s, &token("dave", json!({}))).await;
    let mut e = open(&s, &token("erin", json!({}))).await;

    // The push token is required, compared as a whole.
    let (status, body) = push(&s, &sets[0], None).await;
    assert_eq!(
        (status, &body["err"]),
        (401, &json!("authentication_failed"))
    );
    let (status, _) = push(&s, &sets[0], Some("push-token-0123456789abcdeX")).await;
    assert_eq!(status, 401);

    for set in &sets[..5] {
        let (status, body) = push(&s, set, Some(PUSH_TOKEN)).await;
        assert_eq!(
            (status, body),
            (202, Value::Null),
            "accepted with an empty body"
        );
    }
    for ws in [&mut a1, &mut b, &mut c, &mut d] {
        assert_eq!(expect_close(ws).await, (4003, "revoked".into()));
    }
    // Only the revoked session of alice; erin's event is not one wsgate acts on.
    alive(&mut a2).await;
    alive(&mut e).await;
    // Tokens issued before the events are refused from now on; the other session's and a
    // token issued after the event are taken.
    assert_invalid(&s.url("/ws"), &alice_s1).await;
    assert_invalid(&s.url("/ws"), &bob).await;
    assert_invalid(&s.url("/ws"), &carol).await;
    open(&s, &alice_s2).await;
    let bob_after = hs256(
        &json!({"sub": "bob", "iss": IDP, "iat": now(), "exp": now() + 60, "channels": ["c"]}),
    );
    open(&s, &bob_after).await;

    // A replayed jti is accepted and not acted on again.
    let mut b2 = open(&s, &bob_after).await;
    let (status, _) = push(&s, &sets[1], Some(PUSH_TOKEN)).await;
    assert_eq!(status, 202);
    alive(&mut b2).await;

    // Every refusal with its RFC 8935 code.
    let codes = [
        "invalid_request",
        "invalid_key",
        "invalid_key",
        "invalid_issuer",
        "invalid_audience",
        "invalid_request",
        "invalid_request",
    ];
    for (set, code) in sets[5..].iter().zip(codes) {
        let (status, body) = push(&s, set, Some(PUSH_TOKEN)).await;
        assert_eq!((status, &body["err"]), (400, &json!(code)), "{body}");
        assert!(body["description"].is_string(), "{body}");
    }
    let none = format!(
        "{}.{}.",
        base64_url(&json!({"alg": "none", "typ": "secevent+jwt", "kid": "t-1"})),
        base64_url(
            &json!({"iss": iss, "aud": AUDIENCE, "iat": now(), "jti": "j-none", "events": {format!("{RISC}account-purged"): {}}})
        )
    );
    for bad in [none, "not a jws".to_owned(), "a".repeat(100_000)] {
        let (status, body) = push(&s, &bad, Some(PUSH_TOKEN)).await;
        assert_eq!(
            (status, &body["err"]),
            (400, &json!("invalid_request")),
            "{body}"
        );
    }

    let m = s.metrics().await;
    for event in [
        "session-revoked",
        "account-disabled",
        "credential-change",
        "sessions-revoked",
    ] {
        assert_eq!(count(&m, event, "acted"), 1, "{event}\n{m}");
    }
    assert_eq!(count(&m, "account-disabled", "duplicate"), 1, "{m}");
    assert_eq!(count(&m, "other", "ignored"), 1, "{m}");
    assert_eq!(count(&m, "set", "invalid_key"), 2, "{m}");
    assert!(
        m.contains("wsgate_revocation_to_close_seconds_count{cause=\"ssf\"} 4"),
        "{m}"
    );
    let logs = s.logs();
    assert!(
        !logs.contains(PUSH_TOKEN) && !logs.contains(&sets[0]),
        "a secret was logged"
    );
}

fn base64_url(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_events_are_acted_on_acknowledged_and_refusals_reported() {
    let transmitter = Transmitter::default();
    let iss = transmitter.start().await;
    let entries = vec![
        set(
            &iss,
            "p-1",
            &format!("{CAEP}session-revoked"),
            json!({
            "subject": {"format": "iss_sub", "iss": IDP, "sub": "zoe"}}),
        ),
        json!({"payload": {"iss": iss, "aud": "https://elsewhere.test", "iat": now(), "jti": "p-2",
            "events": {format!("{RISC}account-purged"): {}}}}),
    ];
    let (jwks, sets) = sign_sets(&entries).await;
    *transmitter.jwks.lock().unwrap() = jwks;
    // No jwks_url: the keys are found through {issuer}/.well-known/ssf-configuration.
    let config = format!(
        r#"
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
issuer = "{IDP}"

[ssf]
issuer = "{iss}"
audience = "{AUDIENCE}"
poll_url = "{iss}/poll"
poll_token_env = "WSGATE_TEST_POLL_TOKEN"
poll_interval_secs = 1

[[endpoints]]
path = "/ws"
kind = "pubsub"
"#
    );
    let s = Server::start_with(&config, &[("WSGATE_TEST_POLL_TOKEN", PUSH_TOKEN)]).await;
    let mut zoe = open(&s, &token("zoe", json!({}))).await;
    *transmitter.queue.lock().unwrap() = json!({"p-1": sets[0], "p-2": sets[1]});
    assert_eq!(expect_close(&mut zoe).await, (4003, "revoked".into()));
    // The next poll acknowledges p-1 and reports p-2's refusal.
    let deadline = std::time::Instant::now() + WAIT;
    let next = loop {
        let polls = transmitter.polls.lock().unwrap().clone();
        if let Some(p) = polls.iter().find(|(_, b)| b["ack"] != json!([])) {
            break p.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no acknowledging poll: {polls:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        next.0.as_deref(),
        Some(format!("Bearer {PUSH_TOKEN}").as_str())
    );
    assert_eq!(next.1["ack"], json!(["p-1"]));
    assert_eq!(next.1["setErrs"]["p-2"]["err"], "invalid_audience");
    assert_eq!(next.1["maxEvents"], 100);
    assert_eq!(next.1["returnImmediately"], true);
}

#[test]
fn check_config_refuses_a_receiver_serve_would_trip_on() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[ssf]\nissuer = \"https://idp.example\"\naudience = \"https://wsgate.example\"\n";
    for (extra, needle) in [
        ("jwks_url = \"http://idp.example/jwks\"\n", "ssf.jwks_url"),
        ("push_path = \"/api/disconnect\"\n", "ssf.push_path"),
        ("push_path = \"/events\"\n", "ssf.push_path"),
        (
            "push_token_env = \"WSGATE_NOT_SET_ANYWHERE\"\n",
            "ssf.push_token_env",
        ),
        ("poll_url = \"http://idp.example/poll\"\n", "ssf.poll_url"),
        ("poll_interval_secs = 0\n", "ssf.poll_interval_secs"),
        ("poll_token_env = \"X\"\n", "ssf.poll_token_env"),
    ] {
        let path = dir.path().join("ssf.toml");
        std::fs::write(&path, format!("{base}{extra}")).unwrap();
        let (code, _, err) = run_cli(
            dir.path(),
            &["check-config", "--config", path.to_str().unwrap()],
            &[],
        );
        assert_eq!(code, 1, "{extra}: {err}");
        assert!(err.contains(needle), "{extra}: {err}");
    }
    std::fs::write(dir.path().join("ok.toml"), base).unwrap();
    let (code, _, err) = run_cli(dir.path(), &["check-config", "--config", "ok.toml"], &[]);
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transmitter_whose_keys_cannot_be_had_gets_503_not_a_refusal() {
    // Discovery at a port where nothing listens: the push is answered 503 (the transmitter
    // retries later), never 400 (which would tell it to drop the event), and fast.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let iss = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let entries = [set(
        &iss,
        "d-1",
        &format!("{RISC}account-disabled"),
        json!({
        "subject": {"format": "opaque", "id": "x"}}),
    )];
    let (_, sets) = sign_sets(&entries).await;
    let config = format!(
        "[ssf]\nissuer = \"{iss}\"\naudience = \"{AUDIENCE}\"\n[[endpoints]]\npath = \"/ws\"\nkind = \"pubsub\"\n"
    );
    let s = Server::start(&config).await;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let (status, body) = push(&s, &sets[0], None).await;
        assert_eq!(
            (status, &body["err"]),
            (503, &json!("temporarily_unavailable")),
            "{body}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(6));
    }
}
