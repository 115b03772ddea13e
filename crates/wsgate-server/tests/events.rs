//! Connection events to a webhook: a real receiver (`tests/events/receiver.py`) verifies every
//! delivery with the `standardwebhooks` package from PyPI, an implementation independent of
//! ours; a receiver that fails gets the same batch again, under the same id.

mod common;

use common::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// `whsec_` + base64 of 32 bytes.
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwYWJjZGVmZ2hpams=";
const ADMIN_KEY: &str = "admin-key-for-events-tests-0123456789";

/// The webhook receiver (`tests/events/receiver.py`): one JSON line per request.
struct Receiver(PythonService);

impl Receiver {
    async fn start(fail_first: u32) -> Self {
        let fail_first = fail_first.to_string();
        Self(
            PythonService::start(
                "events/receiver.py",
                &[WEBHOOK_SECRET, &fail_first],
                "tests/events/requirements.txt",
            )
            .await,
        )
    }

    fn port(&self) -> u16 {
        self.0.port
    }

    /// The next request the receiver saw.
    async fn next(&mut self) -> Value {
        self.0.next_json().await
    }

    /// Events delivered (2xx) until one of type `last` arrives; every request must verify.
    async fn events_until(&mut self, last: &str) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let req = self.next().await;
            assert_eq!(req["ok"], true, "signature verified: {req}");
            for e in req["events"].as_array().expect("events") {
                events.push(e.clone());
            }
            if events.iter().any(|e| e["type"] == last) {
                return events;
            }
        }
    }
}

fn config(port: u16) -> String {
    format!(
        r#"
[auth.jwt]
algorithms = ["HS256"]
secret_env = "WSGATE_TEST_SECRET"
leeway_secs = 5

[events]
webhook_url = "http://127.0.0.1:{port}/events"
webhook_secret_env = "WEBHOOK_SECRET"
batch_ms = 50

[[endpoints]]
path = "/echo"
kind = "echo"
"#
    )
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test]
async fn a_sessions_life_reaches_the_webhook_signed_numbered_and_without_credentials() {
    let mut receiver = Receiver::start(0).await;
    let s = Server::start_with(
        &config(receiver.port()),
        &[
            ("WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("WSGATE_ADMIN_KEY", ADMIN_KEY),
        ],
    )
    .await;
    let token = hs256(&claims("alice"));
    let mut ws = bearer(&s.url("/echo"), &token).await;
    let session = next_json(&mut ws).await["session"]
        .as_str()
        .unwrap()
        .to_owned();
    let refresh_token = hs256(&claims("alice"));
    let refresh = json!({"type":"refresh","id":1,"token": refresh_token});
    send_text(&mut ws, &refresh.to_string()).await;
    assert_eq!(next_json(&mut ws).await["type"], "refreshed");
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();

    // A second session, revoked by the admin.
    let mut bob = bearer(&s.url("/echo"), &hs256(&claims("bob"))).await;
    next_json(&mut bob).await;
    let (status, _) = post(
        &s.http("/api/disconnect"),
        Some(ADMIN_KEY),
        Some(&json!({"sub": "bob", "revoke": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(expect_close(&mut bob).await.0, 4003);
    s.terminate().await;

    let events = receiver.events_until("node_stopped").await;
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains(&token) && !text.contains(&refresh_token) && !text.contains(SECRET),
        "no credential in any event"
    );
    // Numbered per node, strictly increasing, ids naming node, epoch and seq.
    assert_eq!(events[0]["type"], "node_started");
    let (node, epoch) = (events[0]["node"].clone(), events[0]["epoch"].clone());
    let mut last = 0;
    for e in &events {
        let seq = e["seq"].as_u64().expect("seq");
        assert!(seq > last, "seq strictly increasing: {text}");
        last = seq;
        assert_eq!(
            e["id"],
            format!("{}:{}:{seq}", node.as_str().unwrap(), epoch)
        );
        assert!(e["at"].as_u64().is_some());
    }
    let connected = of_type(&events, "connected");
    assert_eq!(connected.len(), 2);
    assert_eq!(connected[0]["session"], session.as_str());
    assert_eq!(connected[0]["sub"], "alice");
    assert_eq!(connected[0]["endpoint"], "/echo");
    assert_eq!(connected[0]["source"], "bearer");
    assert_eq!(connected[0]["provider"], "jwt");
    assert_eq!(connected[0]["remote_addr"], "127.0.0.1");
    let refreshed = of_type(&events, "refreshed");
    assert_eq!(refreshed.len(), 1);
    assert_eq!(refreshed[0]["session"], session.as_str());
    assert!(refreshed[0]["expires_at"].as_u64().is_some());
    let closed = of_type(&events, "closed");
    assert_eq!(closed.len(), 2, "{text}");
    let alice = closed
        .iter()
        .find(|e| e["sub"] == "alice")
        .expect("alice closed");
    assert_eq!(alice["code"], 1000);
    assert_eq!(alice["reason"], "client closed");
    assert!(alice["duration_ms"].as_u64().is_some());
    let bob = closed
        .iter()
        .find(|e| e["sub"] == "bob")
        .expect("bob closed");
    assert_eq!(bob["code"], 4003);
    let revoked = of_type(&events, "revoked");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["by"], "admin");
    assert_eq!(revoked[0]["sub"], "bob");
    assert_eq!(revoked[0]["closed"], 1);
    assert_eq!(events.last().unwrap()["type"], "node_stopped");
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_batch_again_under_the_same_id() {
    let mut receiver = Receiver::start(2).await;
    let s = Server::start_with(
        &config(receiver.port()),
        &[("WEBHOOK_SECRET", WEBHOOK_SECRET)],
    )
    .await;
    let mut ws = bearer(&s.url("/echo"), &hs256(&claims("carol"))).await;
    next_json(&mut ws).await;

    // node_started (alone or with the connect) is refused twice, then taken: 1 s, then 2 s.
    let first = receiver.next().await;
    assert_eq!(
        (first["ok"].clone(), first["status"].clone()),
        (json!(true), json!(503))
    );
    let second = receiver.next().await;
    let third = receiver.next().await;
    assert_eq!(second["status"], 503);
    assert_eq!(third["status"], 204);
    assert_eq!(second["id"], first["id"]);
    assert_eq!(third["id"], first["id"]);
    assert_eq!(
        third["events"], first["events"],
        "the same batch, unchanged"
    );
    assert_eq!(first["events"][0]["type"], "node_started");
    // Nothing was lost meanwhile: the connect arrives, in this batch or the next.
    let mut seen: Vec<Value> = third["events"].as_array().unwrap().clone();
    if !seen.iter().any(|e| e["type"] == "connected") {
        seen.extend(receiver.events_until("connected").await);
    }
    assert_eq!(of_type(&seen, "connected")[0]["sub"], "carol");
}

#[tokio::test]
async fn past_buffer_max_the_oldest_are_dropped_and_a_gap_event_says_which() {
    let mut receiver = Receiver::start(1).await;
    let cfg = config(receiver.port()).replace(
        "batch_ms = 50",
        "batch_ms = 50\nbatch_max = 1\nbuffer_max = 1",
    );
    let s = Server::start_with(&cfg, &[("WEBHOOK_SECRET", WEBHOOK_SECRET)]).await;
    // node_started is refused once and retried in 1 s; meanwhile three connects queue up in
    // a buffer of one.
    assert_eq!(receiver.next().await["status"], 503);
    let mut sockets = Vec::new();
    for sub in ["d1", "d2", "d3"] {
        let mut ws = bearer(&s.url("/echo"), &hs256(&claims(sub))).await;
        next_json(&mut ws).await;
        sockets.push(ws);
    }
    let events = receiver.events_until("connected").await;
    let gap = of_type(&events, "gap");
    assert_eq!(gap.len(), 1, "{events:?}");
    let (from, to) = (
        gap[0]["from_seq"].as_u64().unwrap(),
        gap[0]["to_seq"].as_u64().unwrap(),
    );
    assert_eq!((from, to), (2, 3), "the two oldest connects were dropped");
    assert_eq!(gap[0]["seq"], 3);
    let connected = of_type(&events, "connected");
    assert_eq!(connected.len(), 1);
    assert_eq!(connected[0]["sub"], "d3");
    assert_eq!(connected[0]["seq"], 4);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("wsgate_events_dropped_total{sink=\"webhook\"} 2"),
        "{metrics}"
    );
}
