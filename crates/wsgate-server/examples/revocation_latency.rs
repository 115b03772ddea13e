//! Load tool: time from a Shared Signals event's arrival (the SET's push to one node) to
//! the close frame on each socket it revokes, with sockets spread over several nodes
//! (`bench/revocation.sh` runs it on a 3-node cluster).
//!
//! Opens `--connections` sockets round-robin over `--urls` (one subject per socket, each
//! token with its own `sid`; the first `--group` sockets share the subject `group`), then
//! (1) pushes, one at a time, CAEP session-revoked SETs naming one socket's `sid` (200 of
//! them) and (2) one RISC account-disabled naming the `group` subject; prints p50/p99/max
//! from the push to each close frame. With `--hold`, it only opens its sockets and keeps
//! them (a second process, to pass the per-process file limit; with `--distinct K`, socket i
//! uses token i % K, for `bench/revalidation.sh`). Loopback only.

mod common;

use std::time::{Duration, Instant};

use common::{arg, closed_at, connect, report};
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn token(secret: &str, sub: &str, sid: &str) -> String {
    let now = wsgate::verify::now_unix();
    common::token(
        secret,
        &json!({"sub": sub, "sid": sid, "iat": now - 5, "exp": now + 3600}),
    )
}

struct Signer {
    key: jsonwebtoken::EncodingKey,
    kid: String,
    issuer: String,
    audience: String,
}

impl Signer {
    fn sign(&self, jti: &str, event: &str, subject: serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("secevent+jwt".into());
        let claims = json!({
            "iss": self.issuer, "aud": self.audience, "jti": jti,
            "iat": wsgate::verify::now_unix(),
            "events": { event: { "subject": subject } }
        });
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    wsgate::install_crypto();
    let urls: Vec<String> = arg("--urls")
        .expect("--urls ws://127.0.0.1:A/ws,ws://127.0.0.1:B/ws,…")
        .split(',')
        .map(str::to_owned)
        .collect();
    assert!(
        urls.iter().all(|u| u.starts_with("ws://127.")),
        "loopback only"
    );
    let secret = arg("--secret").expect("--secret");
    let n: usize = arg("--connections").map_or(10_000, |v| v.parse().expect("number"));
    let prefix = arg("--prefix").unwrap_or_else(|| "user".into());
    // Sockets share tokens: socket i uses token i % distinct (the revalidation bench).
    let distinct: usize = arg("--distinct").map_or(n, |v| v.parse().expect("number"));
    let hold = std::env::args().any(|a| a == "--hold");
    let group = if hold {
        0
    } else {
        arg("--group").map_or(1000, |v| v.parse().expect("number"))
    };

    let started = Instant::now();
    // One token per distinct index, signed once: sockets that share an index share the token.
    let mut tokens = std::collections::HashMap::new();
    let mut grouped = Vec::new();
    let mut singles = Vec::new();
    for i in 0..n {
        let url = &urls[i % urls.len()];
        let t = i % distinct.max(1);
        let sid = format!("{prefix}-sid-{t}");
        let sub = if i < group {
            "group".to_owned()
        } else {
            format!("{prefix}-{t}")
        };
        let token = tokens
            .entry((sub.clone(), t))
            .or_insert_with(|| token(&secret, &sub, &sid));
        let mut ws = connect(url, token).await;
        let Some(Ok(Message::Text(_welcome))) = ws.next().await else {
            panic!("no welcome from {url}")
        };
        if i < group {
            grouped.push(ws);
        } else {
            singles.push((ws, sid));
        }
    }
    println!(
        "opened {n} sockets over {} nodes in {:.1} s",
        urls.len(),
        started.elapsed().as_secs_f64()
    );
    if hold {
        println!("holding");
        std::future::pending::<()>().await;
    }

    let push = arg("--push").expect("--push http://127.0.0.1:A/api/ssf/events");
    let pem = std::fs::read(arg("--key").expect("--key rsa_private.pem")).expect("key file");
    let signer = Signer {
        key: jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("RSA key"),
        kid: arg("--kid").unwrap_or_else(|| "rsa-1".into()),
        issuer: arg("--issuer").expect("--issuer"),
        audience: arg("--audience").expect("--audience"),
    };
    let http = reqwest::Client::new();
    let post = |set: String| {
        let req = http.post(&push).body(set);
        async move {
            let res = req.send().await.expect("push");
            assert_eq!(res.status(), 202, "{:?}", res.text().await);
        }
    };
    const CAEP_SESSION: &str =
        "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
    const RISC_DISABLED: &str =
        "https://schemas.openid.net/secevent/risc/event-type/account-disabled";

    let mut single_ms = Vec::new();
    for (i, (ws, sid)) in singles.drain(..200.min(singles.len())).enumerate() {
        let set = signer.sign(
            &format!("single-{i}-{}", wsgate::verify::now_unix()),
            CAEP_SESSION,
            json!({"format": "complex", "session": {"format": "opaque", "id": sid}}),
        );
        let waiter = tokio::spawn(closed_at(ws));
        let t0 = Instant::now();
        post(set).await;
        let at = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("no close")
            .expect("join");
        single_ms.push(at.duration_since(t0).as_secs_f64() * 1e3);
    }
    report("SET for one session (sid)", single_ms);

    if group > 0 {
        let waiters: Vec<_> = grouped
            .into_iter()
            .map(|ws| tokio::spawn(closed_at(ws)))
            .collect();
        let set = signer.sign(
            &format!("group-{}", wsgate::verify::now_unix()),
            RISC_DISABLED,
            json!({"format": "opaque", "id": "group"}),
        );
        let t0 = Instant::now();
        post(set).await;
        let mut group_ms = Vec::new();
        for w in waiters {
            let at = tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("no close")
                .expect("join");
            group_ms.push(at.duration_since(t0).as_secs_f64() * 1e3);
        }
        report(
            &format!("SET for one subject holding {group} sockets over the nodes"),
            group_ms,
        );
    }
}
