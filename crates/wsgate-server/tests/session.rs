//! The session guard through the server: expiry, refresh, size limit, shutdown.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn config(leeway: u64, extra: &str) -> String {
    format!(
        r#"
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
leeway_secs = {leeway}
[limits]
max_message_bytes = 1024
{extra}
[[endpoints]]
path = "/echo"
kind = "echo"
"#
    )
}

#[tokio::test]
async fn expired_credential_closes_with_4001() {
    let s = Server::start(&config(0, "")).await;
    let mut ws = bearer(&s.url("/echo"), &hs256(&json!({"sub":"e","exp":now()+2}))).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    send_text(&mut ws, "still here").await;
    assert_eq!(next_text(&mut ws).await, "still here");
    assert_eq!(expect_close(&mut ws).await, (4001, "token expired".into()));
}

#[tokio::test]
async fn refresh_moves_the_deadline_and_is_not_echoed() {
    let s = Server::start(&config(0, "")).await;
    let mut ws = bearer(&s.url("/echo"), &hs256(&json!({"sub":"r","exp":now()+2}))).await;
    let session = next_json(&mut ws).await["session"].clone();
    let new_exp = now() + 3600;
    let refresh =
        json!({"type":"refresh","id":7,"token": hs256(&json!({"sub":"r","exp":new_exp}))});
    send_text(&mut ws, &refresh.to_string()).await;
    let answer = next_json(&mut ws).await;
    assert_eq!(
        answer,
        json!({"type":"refreshed","id":7,"expires_at":new_exp})
    );
    // Past the old expiry the socket is still open and still echoes.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    send_text(&mut ws, "after").await;
    assert_eq!(next_text(&mut ws).await, "after");
    assert!(session.is_string());
}

#[tokio::test]
async fn refresh_for_another_subject_or_bad_token_changes_nothing() {
    let s = Server::start(&config(0, "")).await;
    let mut ws = bearer(
        &s.url("/echo"),
        &hs256(&json!({"sub":"alice","exp":now()+3})),
    )
    .await;
    next_json(&mut ws).await;
    let other =
        json!({"type":"refresh","token": hs256(&json!({"sub":"mallory","exp":now()+3600}))});
    send_text(&mut ws, &other.to_string()).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["type"], "error");
    assert_eq!(
        e["code"], "invalid_token",
        "a valid token of another subject is refused like any bad one: no oracle"
    );
    send_text(&mut ws, r#"{"type":"refresh","token":"garbage"}"#).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "invalid_token");
    // The old expiry stands.
    assert_eq!(expect_close(&mut ws).await.0, 4001);
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let s = Server::start(&config(30, "")).await;
    let mut ws = bearer(&s.url("/echo"), &hs256(&claims("big"))).await;
    next_json(&mut ws).await;
    send_text(&mut ws, &"x".repeat(1000)).await;
    assert_eq!(next_text(&mut ws).await.len(), 1000);
    send_text(&mut ws, &"x".repeat(5000)).await;
    assert_eq!(expect_close(&mut ws).await.0, 1009);
}

#[tokio::test]
async fn messages_far_larger_than_the_read_buffer_arrive_whole() {
    // The socket read buffer is 2 KiB; frames up to max_message_bytes take several reads.
    let s = Server::start(&config(30, "").replace("max_message_bytes = 1024", "")).await;
    let mut ws = bearer(&s.url("/echo"), &hs256(&claims("big"))).await;
    next_json(&mut ws).await;
    let text: String = (0..60_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    send_text(&mut ws, &text).await;
    assert_eq!(next_text(&mut ws).await, text);
}

#[tokio::test]
async fn sigterm_closes_every_socket_with_1001_and_exits_0() {
    let s = Server::start(&config(30, "")).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut ws = bearer(&s.url("/echo"), &hs256(&claims(&format!("u{i}")))).await;
        next_json(&mut ws).await;
        clients.push(ws);
    }
    let closes = tokio::spawn(async move {
        let mut codes = Vec::new();
        for mut ws in clients {
            codes.push(expect_close(&mut ws).await.0);
        }
        codes
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let status = s.terminate().await;
    assert_eq!(closes.await.unwrap(), vec![1001; 5]);
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn half_a_handshake_is_dropped_and_others_are_unaffected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start(&config(30, "handshake_timeout_ms = 300")).await;
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    // Meanwhile a complete handshake goes through, and its socket outlives the deadline.
    let mut ws = bearer(&s.url("/echo"), &hs256(&claims("fast"))).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");

    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, slow.read(&mut buf))
        .await
        .expect("the half handshake was never dropped")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected the server to drop it, got {:?}", &buf[..n]);
    assert!(started.elapsed() < std::time::Duration::from_secs(3));

    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    send_text(&mut ws, "later").await;
    assert_eq!(next_text(&mut ws).await, "later");
}

#[tokio::test]
async fn absurd_expiry_is_not_a_crash() {
    let s = Server::start_with(
        &config(30, ""),
        &[("WSGATE_ADMIN_KEY", "session-admin-key")],
    )
    .await;
    let mut ws = bearer(
        &s.url("/echo"),
        &hs256(&json!({"sub":"far","jti":"far-1","exp": u64::MAX})),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["expires_at"], u64::MAX);
    send_text(&mut ws, "ok").await;
    assert_eq!(next_text(&mut ws).await, "ok");
    // Revoking it computes "until exp + leeway" without overflowing either.
    let order = json!({"sub":"far","revoke":true});
    let key = Some("session-admin-key");
    assert_eq!(
        post(&s.http("/api/disconnect"), key, Some(&order)).await.0,
        200
    );
    assert_eq!(expect_close(&mut ws).await.0, 4003);
}

#[tokio::test]
async fn expiring_is_sent_once_per_deadline_and_a_refresh_keeps_the_socket() {
    let s = Server::start(&config(0, "")).await;
    // Already within the warning (default 30 s): `expiring` right after the welcome.
    let exp = now() + 3;
    let mut ws = bearer(&s.url("/echo"), &hs256(&json!({"sub":"w","exp":exp}))).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    let warned: serde_json::Value = serde_json::from_str(&next_text_all(&mut ws).await).unwrap();
    assert_eq!(warned, json!({"type":"expiring","expires_at":exp}));
    // A refresh to a deadline that is also close draws one more, for the new deadline.
    let exp2 = now() + 10;
    let refresh = json!({"type":"refresh","token": hs256(&json!({"sub":"w","exp":exp2}))});
    send_text(&mut ws, &refresh.to_string()).await;
    assert_eq!(next_json(&mut ws).await["type"], "refreshed");
    let warned: serde_json::Value = serde_json::from_str(&next_text_all(&mut ws).await).unwrap();
    assert_eq!(warned, json!({"type":"expiring","expires_at":exp2}));
    // Nothing more until the socket is used: exactly once per deadline.
    send_text(&mut ws, "plain").await;
    assert_eq!(next_text_all(&mut ws).await, "plain");
    // 0 turns it off.
    let s = Server::start(
        "[auth]\nexpiry_warning_secs = 0\n[auth.jwt]\nsecret_env = \"WSGATE_TEST_SECRET\"\nleeway_secs = 0\n[[endpoints]]\npath = \"/echo\"\nkind = \"echo\"\n",
    )
    .await;
    let mut ws = bearer(&s.url("/echo"), &hs256(&json!({"sub":"w","exp":now()+2}))).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    send_text(&mut ws, "x").await;
    assert_eq!(
        next_text_all(&mut ws).await,
        "x",
        "no expiring when turned off"
    );
}

#[tokio::test]
async fn expiring_comes_warning_secs_before_the_deadline() {
    let cfg = config(0, "").replace("[auth.jwt]", "[auth]\nexpiry_warning_secs = 2\n[auth.jwt]");
    let s = Server::start(&cfg).await;
    let exp = now() + 4;
    let mut ws = bearer(&s.url("/echo"), &hs256(&json!({"sub":"w","exp":exp}))).await;
    next_json(&mut ws).await;
    let started = std::time::Instant::now();
    let warned: serde_json::Value = serde_json::from_str(&next_text_all(&mut ws).await).unwrap();
    assert_eq!(warned["type"], "expiring");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(700),
        "too early: {waited:?}"
    );
    assert_eq!(expect_close(&mut ws).await.0, 4001);
}

#[tokio::test]
async fn a_peer_that_sends_but_never_reads_cannot_hold_its_socket() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = Server::start(&config(0, "idle_timeout_secs = 2\nmessages_per_sec = 0")).await;
    let mut ws = bearer(
        &s.url("/echo"),
        &hs256(&json!({"sub":"f","exp":now()+3600})),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    // Echoes pile up unread until the server's writes stall, then the client's too. The
    // credential is good for an hour: only the stalled write's bound can end this.
    let flood = tokio::spawn(async move {
        let frame = "f".repeat(1000);
        while ws.send(Message::text(frame.clone())).await.is_ok() {}
    });
    let metrics = s.http("/metrics");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        if m.lines().any(|l| l == "wsgate_connections_open 0") {
            assert!(m.contains(r#"wsgate_closes_total{code="1001"} 1"#), "{m}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still open after {WAIT:?}: {m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    flood.abort();
}

#[tokio::test]
async fn refused_refreshes_count_against_the_address_and_close_the_socket() {
    // A refresh is a credential check: guessing through one socket is held to
    // `auth_failures_per_min` like handshakes are, logged, and closed past it.
    let s = Server::start(&config(30, "auth_failures_per_min = 5")).await;
    let mut ws = bearer(&s.url("/echo"), &hs256(&claims("guesser"))).await;
    next_json(&mut ws).await;
    for i in 0..4 {
        let guess = json!({"type":"refresh","id":i,"token":format!("guess-{i}")});
        send_text(&mut ws, &guess.to_string()).await;
        let e = next_json(&mut ws).await;
        assert_eq!(
            (e["code"].as_str(), e["id"].as_i64()),
            (Some("invalid_token"), Some(i))
        );
    }
    send_text(&mut ws, r#"{"type":"refresh","token":"guess-4"}"#).await;
    assert_eq!(
        expect_close(&mut ws).await,
        (1008, "rate_limited".into()),
        "the fifth refused refresh uses up the address's failures"
    );
    // The address is now refused at the handshake too.
    let r = refused(
        &s.url("/echo"),
        &[(
            "authorization",
            &format!("Bearer {}", hs256(&claims("guesser"))),
        )],
    )
    .await;
    assert_eq!(r.status, 429);
    let logs = s.logs_once("refresh refused", 5).await;
    assert_eq!(logs.matches("refresh refused").count(), 5, "{logs}");
    assert!(!logs.contains("guess-"), "a guessed token was logged");
    // A refresh with no token guesses nothing: answered, not counted.
    let s = Server::start(&config(30, "auth_failures_per_min = 1")).await;
    let mut ws = bearer(&s.url("/echo"), &hs256(&claims("nt"))).await;
    next_json(&mut ws).await;
    for _ in 0..3 {
        send_text(&mut ws, r#"{"type":"refresh","id":"x","token":5}"#).await;
        let e = next_json(&mut ws).await;
        assert_eq!(
            (e["code"].as_str(), e["id"].as_str()),
            (Some("missing_field"), Some("x"))
        );
    }
}

#[tokio::test]
async fn max_session_secs_caps_a_session_whatever_its_refreshes() {
    let s = Server::start(
        r#"
[auth]
max_session_secs = 3
expiry_warning_secs = 2
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
[[endpoints]]
path = "/echo"
kind = "echo"
"#,
    )
    .await;
    let opened = now();
    let started = std::time::Instant::now();
    let mut ws = bearer(&s.url("/echo"), &hs256(&claims("capped"))).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    // A refresh with an hour-long token does not move the cap.
    let refresh = json!({"type":"refresh","id":1,"token":hs256(&claims("capped"))});
    send_text(&mut ws, &refresh.to_string()).await;
    assert_eq!(next_json(&mut ws).await["type"], "refreshed");
    let expiring: serde_json::Value = serde_json::from_str(&next_text_all(&mut ws).await).unwrap();
    assert_eq!(expiring["type"], "expiring", "warned before the cap");
    let cap = expiring["expires_at"].as_u64().unwrap();
    assert!(
        (opened + 2..=opened + 4).contains(&cap),
        "{cap} vs opened {opened}"
    );
    assert_eq!(expect_close(&mut ws).await, (4001, "token expired".into()));
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(2500) && took < std::time::Duration::from_secs(6),
        "{took:?}"
    );
}

#[tokio::test]
async fn sigterm_drains_sockets_in_batches_and_closes_the_rest_at_the_timeout() {
    // 3 per 700 ms: 7 sockets close in three waves (3, 3, 1); /readyz turns 503 at once.
    let cfg = config(30, "").replace(
        "[[endpoints]]",
        "[shutdown]\ndrain_batch = 3\ndrain_interval_ms = 700\ntimeout_secs = 30\n[[endpoints]]",
    );
    let s = Server::start(&cfg).await;
    let mut clients = Vec::new();
    for i in 0..7 {
        let mut ws = bearer(&s.url("/echo"), &hs256(&claims(&format!("d{i}")))).await;
        next_json(&mut ws).await;
        clients.push(ws);
    }
    let ready = s.http("/readyz");
    let started = std::time::Instant::now();
    let closes = tokio::spawn(async move {
        let waits = clients.into_iter().map(|mut ws| async move {
            let (code, _) = expect_close(&mut ws).await;
            (code, started.elapsed())
        });
        futures_util::future::join_all(waits).await
    });
    let pid = s.pid();
    let exit = tokio::spawn(s.terminate());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let readyz = reqwest::get(&ready).await.map(|r| r.status().as_u16());
    assert!(
        !matches!(readyz, Ok(200)),
        "still ready while draining: {readyz:?} (pid {pid})"
    );
    let mut got = closes.await.unwrap();
    assert!(got.iter().all(|(code, _)| *code == 1001), "{got:?}");
    got.sort_by_key(|(_, at)| *at);
    let waves = got
        .windows(2)
        .filter(|w| w[1].1 - w[0].1 > std::time::Duration::from_millis(400))
        .count();
    assert_eq!(waves, 2, "three waves of closes: {got:?}");
    assert!(exit.await.unwrap().success());

    // A timeout shorter than the drain: what is left closes at once when it passes.
    let cfg = config(30, "").replace(
        "[[endpoints]]",
        "[shutdown]\ndrain_batch = 1\ndrain_interval_ms = 5000\ntimeout_secs = 1\n[[endpoints]]",
    );
    let s = Server::start(&cfg).await;
    let mut clients = Vec::new();
    for i in 0..4 {
        let mut ws = bearer(&s.url("/echo"), &hs256(&claims(&format!("t{i}")))).await;
        next_json(&mut ws).await;
        clients.push(ws);
    }
    let started = std::time::Instant::now();
    let exit = tokio::spawn(s.terminate());
    for mut ws in clients {
        assert_eq!(expect_close(&mut ws).await.0, 1001);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(exit.await.unwrap().success());
}

/// An echo client whose handshake carried its token is upgraded by wsgate itself
/// (`relay::ClientUpgrade`, a socket that holds no buffer while idle) and must not notice:
/// the subprotocols are selected as before, a ping is answered once with its payload, and
/// the client's Close is answered with its own code and ends the session.
#[tokio::test]
async fn an_echo_socket_upgraded_by_wsgate_answers_like_any_websocket_server() {
    let s = Server::start(&config(0, "")).await;
    let token = hs256(&json!({"sub":"own","exp":now()+600}));
    let auth = format!("Bearer {token}");
    for (offer, selected) in [
        (
            "chat, wsgate.session.v1, wsgate.v1",
            Some("wsgate.session.v1"),
        ),
        ("wsgate.v1, chat", Some("wsgate.v1")),
    ] {
        let (mut ws, headers) = connect(
            &s.url("/echo"),
            &[("authorization", &auth), ("sec-websocket-protocol", offer)],
        )
        .await
        .map_err(|e| format!("{offer}: {e}"))
        .unwrap_or_else(|e| panic!("{e}"));
        let got = headers
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(got.as_deref(), selected, "offered {offer}");
        assert_eq!(next_json(&mut ws).await["type"], "welcome");
    }

    let mut ws = bearer(&s.url("/echo"), &token).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    send_text(&mut ws, "after the ping").await;
    let mut pongs = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Pong(p)))) => pongs.push(p.to_vec()),
            Ok(Some(Ok(Message::Text(t)))) => {
                assert_eq!(t.as_str(), "after the ping");
                break;
            }
            other => panic!("expected a pong and the echo, got {other:?}"),
        }
    }
    assert_eq!(
        pongs,
        vec![b"are you there".to_vec()],
        "one pong, the ping's payload"
    );
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4100),
        reason: "done".into(),
    }))
    .await
    .unwrap();
    assert_eq!(expect_close(&mut ws).await, (4100, "done".into()));
    // Every session ended: the answered Close, and the two sockets dropped without one.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !s.metrics().await.contains("wsgate_connections_open 0\n") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            s.metrics().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A request that is not a valid WebSocket upgrade gets axum's answer for each fault, on
/// wsgate's own upgrade path as on axum's.
#[tokio::test]
async fn a_malformed_upgrade_with_a_valid_token_gets_the_status_for_its_fault() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start(&config(0, "")).await;
    let token = hs256(&json!({"sub":"own","exp":now()+600}));
    let full = [
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    for (left_out, replaced_by, status) in [
        (1, "Upgrade: h2c", "400"),
        (2, "Sec-WebSocket-Version: 8", "400"),
        (3, "X-Nothing: here", "400"),
        (0, "Connection: keep-alive", "400"),
    ] {
        let mut lines = full.to_vec();
        lines[left_out] = replaced_by;
        let head = format!(
            "GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{}\r\n\r\n",
            lines.join("\r\n")
        );
        let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut answer = [0u8; 12];
        tokio::time::timeout(WAIT, tcp.read_exact(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&answer),
            format!("HTTP/1.1 {status}"),
            "{replaced_by}"
        );
    }
}
