//! The `proxy` endpoint against real upstream servers: what the upstream
//! receives, subprotocols, frames both ways, upstream failures, closes passed through, the
//! session's endings on both sides, backpressure and `wss://` with a private CA.

mod common;

use std::time::Duration;

use base64::Engine;
use common::upstream::{Seen, Upstream};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const ADMIN_KEY: &str = "proxy-admin-key-0123456789";

fn config(upstream: &str, auth_extra: &str, endpoint_extra: &str) -> String {
    format!(
        r#"
[auth]
sources = ["bearer", "subprotocol", "ticket", "query", "cookie"]
allowed_origins = ["http://app.example"]
{auth_extra}
[auth.jwt]
secret_env = "WSGATE_TEST_SECRET"
leeway_secs = 0
[limits]
max_message_bytes = 1024
[[endpoints]]
path = "/app"
kind = "proxy"
upstream = "{upstream}"
{endpoint_extra}
"#
    )
}

async fn start(upstream: &str, auth_extra: &str, endpoint_extra: &str) -> Server {
    Server::start_with(
        &config(upstream, auth_extra, endpoint_extra),
        &[("WSGATE_ADMIN_KEY", ADMIN_KEY)],
    )
    .await
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test]
async fn the_upstream_gets_the_identity_and_never_the_credential() {
    let mut up = Upstream::start(None).await;
    let s = start(&up.url("/ws?v=1"), "", "").await;
    let token = hs256(&json!({"sub":"alice","exp":now()+600,"role":"admin"}));
    let mut ws = connect_ok(
        &s.url(&format!("/app?room=a%20b&token={token}&x&v=forged")),
        &[
            ("x-wsgate-sub", "mallory"),
            ("x-wsgate-claims", "forged"),
            ("x-forwarded-for", "198.51.100.7"),
            ("origin", "http://app.example"),
            ("user-agent", "proxy-test/1"),
            ("accept-language", "fr-CH"),
            (
                "cookie",
                "theme=dark; wsgate_session=cookie-secret; lang=fr",
            ),
            ("sec-websocket-protocol", "wsgate.v1, chat.v2"),
        ],
    )
    .await;
    let (uri, h) = up.request().await;
    assert_eq!(
        uri, "/ws?v=1&room=a%20b&x",
        "the operator's `v` is not the client's to repeat"
    );
    assert_eq!(header(&h, "x-wsgate-sub"), ["alice"]);
    assert_eq!(
        header(&h, "x-wsgate-provider"),
        ["jwt"],
        "[auth.jwt] is the provider `jwt`"
    );
    assert_eq!(header(&h, "x-wsgate-session").len(), 1);
    assert_eq!(header(&h, "x-wsgate-session")[0].len(), 32);
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header(&h, "x-wsgate-claims")[0])
        .unwrap();
    let claims: Value = serde_json::from_slice(&claims).unwrap();
    assert_eq!(
        (claims["sub"].as_str(), claims["role"].as_str()),
        (Some("alice"), Some("admin"))
    );
    assert_eq!(header(&h, "x-forwarded-for"), ["198.51.100.7, 127.0.0.1"]);
    assert_eq!(header(&h, "x-forwarded-proto"), ["http"]);
    assert_eq!(header(&h, "origin"), ["http://app.example"]);
    assert_eq!(header(&h, "user-agent"), ["proxy-test/1"]);
    assert_eq!(header(&h, "accept-language"), ["fr-CH"]);
    assert_eq!(header(&h, "cookie"), ["theme=dark; lang=fr"]);
    assert_eq!(header(&h, "sec-websocket-protocol"), ["chat.v2"]);
    let everything = format!("{uri} {h:?}");
    for secret in [token.as_str(), "cookie-secret", "mallory", "forged"] {
        assert!(
            !everything.contains(secret),
            "{secret} reached the upstream"
        );
    }
    assert!(header(&h, "authorization").is_empty());
    // The credential also never reaches the upstream from the other sources.
    let bearer_ws = connect_ok(
        &s.url("/app"),
        &[(
            "sec-websocket-protocol",
            &format!("wsgate.v1, wsgate.bearer.{token}"),
        )],
    )
    .await;
    let (_, h) = up.request().await;
    assert!(!format!("{h:?}").contains(&token));
    assert!(header(&h, "sec-websocket-protocol").is_empty());
    // Nor a ticket.
    let (_, res) = post(&s.http("/api/tickets"), Some(&token), None).await;
    let ticket = res["ticket"].as_str().unwrap().to_owned();
    let ticket_ws = connect_ok(&s.url(&format!("/app?ticket={ticket}&room=b")), &[]).await;
    let (uri, h) = up.request().await;
    assert_eq!(uri, "/ws?v=1&room=b");
    assert_eq!(header(&h, "x-wsgate-sub"), ["alice"]);
    drop((bearer_ws, ticket_ws, ws.close(None).await));
}

#[tokio::test]
async fn a_subject_arrives_upstream_exactly_percent_encoded_where_needed() {
    // `admin␠` must not arrive as `admin` (HTTP strips edge whitespace), nor `José` as
    // Latin-1 mojibake: such subjects are percent-encoded, plain ones sent as they are.
    let mut up = Upstream::start(None).await;
    let statics = r#"
[auth.static]
tokens = { "t-space" = "admin ", "t-accent" = "José", "t-pct" = "50%", "t-plain" = "admin" }
"#;
    let s = start(&up.url("/ws"), statics, "").await;
    for (token, header_value) in [
        ("t-space", "admin%20"),
        ("t-accent", "Jos%C3%A9"),
        ("t-pct", "50%25"),
        ("t-plain", "admin"),
    ] {
        let ws = bearer(&s.url("/app"), token).await;
        let (_, h) = up.request().await;
        assert_eq!(header(&h, "x-wsgate-sub"), [header_value], "{token}");
        drop(ws);
    }
}

#[tokio::test]
async fn large_upstream_messages_arrive_whole_and_oversized_ones_close_with_1009() {
    // The client side's write bound was 1 MiB: a 2 MiB upstream message dropped the client
    // with no close frame (and the browser client reconnected in a loop).
    let mut up = Upstream::start(None).await;
    let s = start(&up.url("/ws"), "", "").await;
    let mut ws = bearer(&s.url("/app"), &hs256(&claims("big"))).await;
    up.request().await;
    send_text(&mut ws, "big:4").await;
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(b.len(), 4 * 1024 * 1024 + 1),
        other => panic!("expected the 4 MiB message, got {other:?}"),
    }
    // Past the relay's 16 MiB: both sides are closed with 1009.
    send_text(&mut ws, "big:16").await;
    assert_eq!(expect_close(&mut ws).await.0, 1009);
    assert_eq!(up.closed().await.map(|c| c.0), Some(1009));
}

#[tokio::test]
async fn a_self_signed_upstream_certificate_listed_as_its_own_ca_is_accepted() {
    // `openssl req -x509` makes a certificate that is its own CA (CA:TRUE); nginx accepts it
    // when listed in proxy_ssl_trusted_certificate. It is pinned: name still checked.
    let mut up = Upstream::start_tls_with(
        "upstream_selfsigned_cert.pem",
        "upstream_selfsigned_key.pem",
        None,
    )
    .await;
    let pinned = format!(
        "upstream_ca_file = \"{}\"",
        fixture("upstream_selfsigned_cert.pem").display()
    );
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("wss://{host}:{}/ws", up.addr.port());
        let s = start(&url, "", &pinned).await;
        let mut ws = bearer(&s.url("/app"), &hs256(&claims("pin"))).await;
        up.request().await;
        send_text(&mut ws, "pinned").await;
        assert_eq!(next_text(&mut ws).await, "pinned", "{host}");
    }
    // A listed self-signed certificate for another name is refused, and the log says why.
    let other = Upstream::start_tls_with(
        "upstream_othername_cert.pem",
        "upstream_othername_key.pem",
        None,
    )
    .await;
    let url = format!("wss://localhost:{}/ws", other.addr.port());
    let listed = format!(
        "upstream_ca_file = \"{}\"",
        fixture("upstream_othername_cert.pem").display()
    );
    let s = start(&url, "", &listed).await;
    let bearer_header = format!("Bearer {}", hs256(&claims("pin")));
    let r = refused(&s.url("/app"), &[("authorization", &bearer_header)]).await;
    assert_eq!(r.status, 502);
    let logs = s.logs_once("TLS with the upstream failed", 1).await;
    assert!(logs.contains("NotValidForName"), "{logs}");
    // A certificate that is not listed at all: refused as before.
    let s = start(&url, "", &pinned).await;
    let r = refused(&s.url("/app"), &[("authorization", &bearer_header)]).await;
    assert_eq!(r.status, 502);
    let logs = s.logs_once("TLS with the upstream failed", 1).await;
    assert!(logs.contains("invalid peer certificate"), "{logs}");
}

#[tokio::test]
async fn a_ping_through_the_proxy_is_answered_exactly_once() {
    // Autobahn 2.x/5.x through a proxy: the client's ping was answered by wsgate and again by
    // the upstream (its pong relayed). The upstream still sees the ping; the client gets one
    // pong. The same the other way round.
    let mut up = Upstream::start(None).await;
    let s = start(&up.url("/ws"), "", "").await;
    let mut ws = bearer(&s.url("/app"), &hs256(&claims("pinger"))).await;
    up.request().await;
    for i in 0..3 {
        ws.send(Message::Ping(format!("p{i}").into_bytes().into()))
            .await
            .unwrap();
    }
    send_text(&mut ws, "marker").await;
    let mut pongs = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(800);
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, ws.next()).await {
        if let Message::Pong(p) = m {
            pongs.push(String::from_utf8_lossy(&p).into_owned());
        }
    }
    assert_eq!(pongs, ["p0", "p1", "p2"], "one pong per ping, in order");
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match up.next().await {
            Seen::Frame(kind, p) => seen.push(format!("{kind}:{p}")),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, ["ping:p0", "ping:p1", "ping:p2", "text:marker"]);
    // The upstream pings: the client sees it, the upstream gets exactly one pong.
    send_text(&mut ws, "ping:from-up").await;
    let until = tokio::time::Instant::now() + Duration::from_millis(800);
    let mut got_ping = false;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, ws.next()).await {
        got_ping |= matches!(&m, Message::Ping(p) if &p[..] == b"from-up");
    }
    assert!(got_ping, "the upstream's ping reached the client");
    let mut pongs = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(s)) = tokio::time::timeout_at(until, up.seen.recv()).await {
        if let Seen::Frame("pong", p) = s {
            assert_eq!(p, "from-up");
            pongs += 1;
        }
    }
    assert_eq!(pongs, 1, "the upstream's ping answered exactly once");
}

#[tokio::test]
async fn a_clients_ping_is_answered_by_the_upstream_not_by_wsgate() {
    // A transparent proxy (nginx) passes a ping on and the upstream's pong back: the pong
    // says the whole path is alive. The upstream holds its reading for 300 ms, then says
    // `held`; the ping sent meanwhile is answered only after that. The same whether the
    // client's credential came with its handshake or in an `auth` message after it.
    let mut up = Upstream::start(None).await;
    let s = start(&up.url("/ws"), "", r#"sources = ["bearer", "message"]"#).await;
    let token = hs256(&claims("pinger"));
    let mut ws = bearer(&s.url("/app"), &token).await;
    up.request().await;
    answered_by_the_upstream(&mut ws, &mut up).await;
    let mut ws = connect_ok(&s.url("/app"), &[]).await;
    send_text(&mut ws, &json!({"type":"auth","token":token}).to_string()).await;
    let (_, h) = up.request().await;
    assert_eq!(header(&h, "x-wsgate-sub"), ["pinger"]);
    answered_by_the_upstream(&mut ws, &mut up).await;
}

async fn answered_by_the_upstream(ws: &mut Ws, up: &mut Upstream) {
    send_text(ws, "hold:300").await;
    ws.send(Message::Ping("alive?".into())).await.unwrap();
    let mut order = Vec::new();
    while order.len() < 2 {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => order.push(format!("text:{t}")),
            Ok(Some(Ok(Message::Pong(p)))) => {
                order.push(format!("pong:{}", String::from_utf8_lossy(&p)))
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(order, ["text:held", "pong:alive?"], "the upstream's pong");
    // And a client's Close is answered with itself, the upstream told the same.
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4100),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(f))))) => assert_eq!(u16::from(f.code), 4100),
        other => panic!("{other:?}"),
    }
    assert_eq!(up.closed().await, Some((4100, "bye".to_owned())));
}

#[tokio::test]
async fn a_refused_client_never_reaches_the_upstream() {
    let mut up = Upstream::start(None).await;
    let s = start(&up.url("/ws"), "", "").await;
    let r = refused(&s.url("/app"), &[]).await;
    assert_eq!(r.status, 401);
    assert_invalid(&s.url("/app"), "not-a-token").await;
    let mut ws = bearer(&s.url("/app"), &hs256(&claims("bob"))).await;
    // The first thing the upstream ever saw is bob's handshake.
    let (_, h) = up.request().await;
    assert_eq!(header(&h, "x-wsgate-sub"), ["bob"]);
    ws.close(None).await.unwrap();
}

/// The subprotocol the client is answered (read raw: a library client would refuse a 101
/// that selects none of the protocols it offered, which is the answer to test).
async fn negotiated(s: &Server, offered: Option<&str>) -> Option<String> {
    let extra = offered.map_or(String::new(), |o| {
        format!("Sec-WebSocket-Protocol: {o}\r\n")
    });
    let raw = RawClient::connect_with(s, "/app", &hs256(&claims("p")), &extra).await;
    raw.head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("sec-websocket-protocol")
            .then(|| v.trim().to_owned())
    })
}

#[tokio::test]
async fn the_client_gets_the_upstreams_subprotocol_or_wsgate_v1() {
    let up = Upstream::start(Some("chat.v2")).await;
    let s = start(&up.url("/ws"), "", "").await;
    assert_eq!(
        negotiated(&s, Some("wsgate.v1, chat.v2")).await.as_deref(),
        Some("chat.v2")
    );
    assert_eq!(
        negotiated(&s, Some("chat.v2")).await.as_deref(),
        Some("chat.v2")
    );
    assert_eq!(
        negotiated(&s, Some("wsgate.v1, other")).await.as_deref(),
        Some("wsgate.v1")
    );
    assert_eq!(negotiated(&s, Some("other")).await, None);
    assert_eq!(negotiated(&s, None).await, None);
}

#[tokio::test]
async fn frames_pass_both_ways_unchanged() {
    let mut up = Upstream::start(None).await;
    let s = start(&up.url("/ws"), "", "").await;
    let mut ws = bearer(&s.url("/app"), &hs256(&claims("f"))).await;
    up.request().await;
    send_text(&mut ws, "hello").await;
    assert_eq!(
        next_text(&mut ws).await,
        "hello",
        "no welcome: the upstream speaks first"
    );
    ws.send(Message::Binary(vec![0u8, 1, 2, 255].into()))
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(&b[..], [0, 1, 2, 255]),
        other => panic!("expected binary, got {other:?}"),
    }
    // A ping from the upstream reaches the client; the client's pong reaches the upstream.
    send_text(&mut ws, "ping:are-you-there").await;
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Ping(p)))) => {
                assert_eq!(&p[..], b"are-you-there");
                break;
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected the upstream's ping, got {other:?}"),
        }
    }
    // wsgate answers no ping on the client's behalf: an upstream's heartbeat tests the
    // client itself. The client library answers with a pong when it next writes.
    while let Some(seen) = up.within(Duration::from_millis(300)).await {
        assert!(
            !matches!(seen, Seen::Frame("pong", _)),
            "a pong before the client sent one"
        );
    }
    ws.flush().await.unwrap();
    let mut got_pong = false;
    for _ in 0..6 {
        if let Seen::Frame("pong", p) = up.next().await {
            assert_eq!(p, "are-you-there");
            got_pong = true;
            break;
        }
    }
    assert!(got_pong);
    // A refresh frame without a token is ordinary data here: forwarded as sent.
    let no_token = json!({"type":"refresh","id":2}).to_string();
    send_text(&mut ws, &no_token).await;
    assert_eq!(next_text(&mut ws).await, no_token);
}

/// The next text frame the upstream received (pongs and pings skipped).
async fn upstream_text(up: &mut Upstream) -> String {
    loop {
        match up.next().await {
            Seen::Frame("text", t) => return t,
            Seen::Frame(..) => continue,
            other => panic!("expected a text frame upstream, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn no_client_frame_carrying_a_credential_reaches_the_upstream() {
    // refresh_frames = false: wsgate takes no refresh, so a `refresh` or `auth` frame with a
    // token (the browser client's, answering a forged `expiring`; an `auth` after a cookie
    // handshake) is dropped and counted, however its JSON is spelled.
    let mut up = Upstream::start(None).await;
    let s = start(&up.url("/ws"), "", "").await;
    let mut ws = bearer(&s.url("/app"), &hs256(&claims("f"))).await;
    up.request().await;
    for dropped in [
        json!({"type":"refresh","token":"refresh-secret","id":1}).to_string(),
        json!({"type":"auth","token":"auth-secret"}).to_string(),
        r#"{"type":"\u0072efresh","token":"escaped-secret"}"#.to_owned(),
        r#" {"token":"dup-secret","type":"chat","type":"auth"}"#.to_owned(),
    ] {
        send_text(&mut ws, &dropped).await;
    }
    send_text(&mut ws, "after").await;
    assert_eq!(
        upstream_text(&mut up).await,
        "after",
        "the first frame the upstream sees is the one after the credentials"
    );
    assert_eq!(next_text(&mut ws).await, "after");
    let metrics = s.metrics().await;
    let dropped = |kind: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("wsgate_proxy_credential_frames_dropped_total")
                    && l.contains(&format!("type=\"{kind}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    assert_eq!((dropped("refresh"), dropped("auth")), (Some(2), Some(2)));
    let logs = s
        .logs_once("carrying a credential was not forwarded", 1)
        .await;
    for secret in [
        "refresh-secret",
        "auth-secret",
        "escaped-secret",
        "dup-secret",
    ] {
        assert!(!logs.contains(secret), "{secret} was logged");
    }
}

#[tokio::test]
async fn an_auth_frame_after_a_cookie_handshake_stays_at_the_proxy() {
    // The served client with `via: "message"` sends its `auth` frame on open, even when its
    // cookie already authenticated the handshake.
    let mut up = Upstream::start(None).await;
    let s = start(&up.url("/ws"), "", r#"sources = ["cookie", "message"]"#).await;
    let token = hs256(&claims("c"));
    let mut ws = connect_ok(
        &s.url("/app"),
        &[
            ("origin", "http://app.example"),
            ("cookie", &format!("wsgate_session={token}")),
        ],
    )
    .await;
    let (_, h) = up.request().await;
    assert_eq!(header(&h, "x-wsgate-sub"), ["c"]);
    send_text(&mut ws, &json!({"type":"auth","token":token}).to_string()).await;
    send_text(&mut ws, "data").await;
    assert_eq!(upstream_text(&mut up).await, "data");
}

#[tokio::test]
async fn wsgates_session_subprotocol_is_answered_only_where_wsgate_speaks() {
    // The browser client answers `expiring` only on a socket that selected
    // wsgate.session.v1: a proxy whose frames are the upstream's never selects it, and the
    // upstream is never offered it.
    let mut up = Upstream::start(None).await;
    let plain = start(&up.url("/ws"), "", "").await;
    let offer = Some("wsgate.session.v1, wsgate.v1, chat.v2");
    assert_eq!(
        negotiated(&plain, offer).await.as_deref(),
        Some("wsgate.v1")
    );
    let (_, h) = up.request().await;
    assert_eq!(header(&h, "sec-websocket-protocol"), ["chat.v2"]);
    let taking = start(&up.url("/ws"), "", "refresh_frames = true").await;
    assert_eq!(
        negotiated(&taking, offer).await.as_deref(),
        Some("wsgate.session.v1")
    );
    // An upstream that selects what it was not offered (wsgate's own, here) is refused.
    let rogue = Upstream::start_selecting_unoffered("wsgate.session.v1").await;
    let s = start(&rogue.url("/ws"), "", "").await;
    let r = refused(
        &s.url("/app"),
        &[
            ("authorization", &format!("Bearer {}", hs256(&claims("r")))),
            ("sec-websocket-protocol", "wsgate.session.v1, wsgate.v1"),
        ],
    )
    .await;
    assert_eq!(r.status, 502);
}

#[tokio::test]
async fn an_unusable_upstream_is_502_or_504() {
    // Refusing: an HTTP server that answers 403 to the upgrade.
    let refusing = http_backend(
        axum::Router::new().fallback(|| async { (axum::http::StatusCode::FORBIDDEN, "no") }),
    )
    .await;
    let s = start(&format!("ws://{refusing}/ws"), "", "").await;
    let r = refused(
        &s.url("/app"),
        &[("authorization", &format!("Bearer {}", hs256(&claims("a"))))],
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (502, Some("bad_gateway"))
    );
    // Down: nothing listens.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s = start(&format!("ws://{down}/ws"), "", "").await;
    let r = refused(
        &s.url("/app"),
        &[("authorization", &format!("Bearer {}", hs256(&claims("a"))))],
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (502, Some("bad_gateway"))
    );
    // Silent: accepts TCP, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let s = start(
        &format!("ws://{silent_addr}/ws"),
        "",
        "upstream_timeout_ms = 500",
    )
    .await;
    let started = std::time::Instant::now();
    let r = refused(
        &s.url("/app"),
        &[("authorization", &format!("Bearer {}", hs256(&claims("a"))))],
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (504, Some("gateway_timeout"))
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // reject = "close": accepted, then 1014.
    let s = start(&format!("ws://{down}/ws"), "reject = \"close\"", "").await;
    let mut raw = RawClient::connect(&s, "/app", &hs256(&claims("a"))).await;
    assert_eq!(raw.close_code().await, 1014);
    s.logs_once("upstream unavailable", 1).await;
}

/// A hand-made WebSocket client: tungstenite, as a client, refuses close code 1014 (a
/// protocol error to it; browsers and most libraries accept it), so the tests that expect
/// 1014 read the close frame themselves.
struct RawClient {
    tcp: tokio::net::TcpStream,
    buf: Vec<u8>,
    /// The server's answer head.
    head: String,
}

impl RawClient {
    async fn connect(s: &Server, path: &str, token: &str) -> RawClient {
        Self::connect_with(s, path, token, "").await
    }

    async fn connect_with(s: &Server, path: &str, token: &str, extra_headers: &str) -> RawClient {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {token}\r\n{extra_headers}\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        assert!(
            buf.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&buf)
        );
        let rest = buf.split_off(end);
        RawClient {
            tcp,
            buf: rest,
            head: String::from_utf8_lossy(&buf).into_owned(),
        }
    }

    /// Sends one masked text frame (payload < 126 bytes).
    async fn send_text(&mut self, text: &str) {
        use tokio::io::AsyncWriteExt;
        let mut frame = vec![0x81, 0x80 | text.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(text.as_bytes());
        self.tcp.write_all(&frame).await.unwrap();
    }

    /// Skips frames until a close frame; its code.
    async fn close_code(&mut self) -> u16 {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 2 {
                let len = usize::from(self.buf[1] & 0x7f);
                assert!(len < 126, "long frames are not expected here");
                if self.buf.len() >= 2 + len {
                    let frame: Vec<u8> = self.buf.drain(..2 + len).collect();
                    if frame[0] & 0x0f == 0x8 {
                        return u16::from_be_bytes([frame[2], frame[3]]);
                    }
                    continue;
                }
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, self.tcp.read(&mut chunk))
                .await
                .expect("a close frame in time")
                .unwrap();
            assert!(n > 0, "the connection ended without a close frame");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[tokio::test]
async fn close_frames_pass_through_both_ways() {
    let mut up = Upstream::start(None).await;
    let s = start(&up.url("/ws"), "", "").await;
    // Client → upstream.
    let mut ws = bearer(&s.url("/app"), &hs256(&claims("c"))).await;
    up.request().await;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4321),
        reason: "bye now".into(),
    })))
    .await
    .unwrap();
    assert_eq!(up.closed().await, Some((4321, "bye now".into())));
    // Upstream → client.
    let mut ws = bearer(&s.url("/app"), &hs256(&claims("c"))).await;
    up.request().await;
    send_text(&mut ws, "close:4400:upstream says no").await;
    assert_eq!(
        expect_close(&mut ws).await,
        (4400, "upstream says no".into())
    );
}

#[tokio::test]
async fn a_lost_side_is_reported_to_the_other() {
    let mut up = Upstream::start(None).await;
    let s = start(&up.url("/ws"), "", "").await;
    // The upstream's TCP connection dies: the client gets 1014.
    let mut raw = RawClient::connect(&s, "/app", &hs256(&claims("l"))).await;
    up.request().await;
    raw.send_text("die").await;
    assert_eq!(raw.close_code().await, 1014);
    // The client's dies: the upstream gets 1001.
    let ws = bearer(&s.url("/app"), &hs256(&claims("l"))).await;
    up.request().await;
    drop(ws);
    loop {
        match up.next().await {
            Seen::Closed(c) => {
                assert_eq!(c.map(|c| c.0), Some(1001));
                break;
            }
            _ => continue,
        }
    }
}

#[tokio::test]
async fn the_session_ends_both_sides_with_the_same_code() {
    let mut up = Upstream::start(None).await;
    let s = start(&up.url("/ws"), "", "").await;
    // Expiry: 4001 on both sides.
    let mut ws = bearer(&s.url("/app"), &hs256(&json!({"sub":"e","exp":now()+2}))).await;
    up.request().await;
    assert_eq!(expect_close(&mut ws).await.0, 4001);
    assert_eq!(up.closed().await.map(|c| c.0), Some(4001));
    // Admin disconnect: 4003 on both sides.
    let mut ws = bearer(&s.url("/app"), &hs256(&claims("d"))).await;
    up.request().await;
    let order = json!({"sub":"d","revoke":true});
    let (status, _) = post(&s.http("/api/disconnect"), Some(ADMIN_KEY), Some(&order)).await;
    assert_eq!(status, 200);
    assert_eq!(expect_close(&mut ws).await.0, 4003);
    assert_eq!(up.closed().await.map(|c| c.0), Some(4003));
    // Oversized client message: 1009 to the client, the upstream closed too.
    let mut ws = bearer(&s.url("/app"), &hs256(&claims("big"))).await;
    up.request().await;
    send_text(&mut ws, &"x".repeat(4096)).await;
    assert_eq!(expect_close(&mut ws).await.0, 1009);
    assert_eq!(up.closed().await.map(|c| c.0), Some(1009));
    // SIGTERM: 1001 on both sides, and a clean exit.
    let mut ws = bearer(&s.url("/app"), &hs256(&claims("t"))).await;
    up.request().await;
    let exit = tokio::spawn(s.terminate());
    assert_eq!(expect_close(&mut ws).await.0, 1001);
    assert_eq!(up.closed().await.map(|c| c.0), Some(1001));
    assert!(exit.await.unwrap().success());
}

#[tokio::test]
async fn refresh_frames_are_taken_in_band_when_enabled() {
    let mut up = Upstream::start(None).await;
    let s = start(&up.url("/ws"), "", "refresh_frames = true").await;
    let mut ws = bearer(&s.url("/app"), &hs256(&json!({"sub":"r","exp":now()+2}))).await;
    up.request().await;
    let exp = now() + 600;
    let refresh = json!({"type":"refresh","id":1,"token": hs256(&json!({"sub":"r","exp":exp}))});
    send_text(&mut ws, &refresh.to_string()).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type":"refreshed","id":1,"expires_at":exp})
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    send_text(&mut ws, "after the old expiry").await;
    assert_eq!(next_text(&mut ws).await, "after the old expiry");
    // The upstream saw the data frame, never the refresh.
    assert_eq!(upstream_text(&mut up).await, "after the old expiry");
    // Only a refresh with a string token is wsgate's: one without passes through untouched.
    let no_token = json!({"type":"refresh","id":2}).to_string();
    send_text(&mut ws, &no_token).await;
    assert_eq!(next_text(&mut ws).await, no_token);
    assert_eq!(upstream_text(&mut up).await, no_token);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_client_that_does_not_read_stops_the_upstream() {
    let mut up = Upstream::start(None).await;
    let s = start(&up.url("/ws"), "", "").await;
    let mut ws = bearer(&s.url("/app"), &hs256(&claims("slow"))).await;
    up.request().await;
    let before = rss_kib(s.pid());
    // 256 MiB pushed at a client that reads nothing.
    send_text(&mut ws, "flood:256").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = rss_kib(s.pid());
    assert!(
        during < before + 16 * 1024,
        "the proxy buffered: RSS {before} KiB -> {during} KiB"
    );
    // It still serves: the client reads a little and the flood moves on.
    for _ in 0..8 {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(b.len(), 64 * 1024),
            Ok(Some(Ok(_))) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_wss_upstream_is_verified_against_the_configured_ca() {
    let mut up = Upstream::start_tls(None).await;
    let url = format!("wss://localhost:{}/ws", up.addr.port());
    let ca = fixture("upstream_ca.pem");
    let s = start(
        &url,
        "",
        &format!("upstream_ca_file = \"{}\"", ca.display()),
    )
    .await;
    let mut ws = bearer(&s.url("/app"), &hs256(&claims("tls"))).await;
    let (_, h) = up.request().await;
    assert_eq!(header(&h, "x-wsgate-sub"), ["tls"]);
    send_text(&mut ws, "over tls").await;
    assert_eq!(next_text(&mut ws).await, "over tls");
    // Without the CA (system roots only) the private certificate is refused: 502.
    let s = start(&url, "", "").await;
    let r = refused(
        &s.url("/app"),
        &[(
            "authorization",
            &format!("Bearer {}", hs256(&claims("tls"))),
        )],
    )
    .await;
    assert_eq!(r.status, 502);
}

/// The README's worked example: the seed's FastAPI app with its token check replaced by
/// `X-Wsgate-Sub` (examples/fastapi/app.py), run by uvicorn, behind wsgate.
#[tokio::test]
async fn the_seeds_fastapi_app_behind_wsgate() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fastapi");
    let mut uvicorn = tokio::process::Command::new("python3")
        .args([
            "-m",
            "uvicorn",
            "app:app",
            "--host",
            "127.0.0.1",
            "--log-level",
            "warning",
        ])
        .args(["--port", &port.to_string()])
        .current_dir(&app_dir)
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with fastapi and uvicorn (scripts/test installs them)");
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < WAIT,
            "uvicorn did not start (pip install -r examples/fastapi/requirements.txt)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = start(&format!("ws://127.0.0.1:{port}/ws"), "", "").await;
    // Without a credential the app is never reached.
    assert_eq!(refused(&s.url("/app"), &[]).await.status, 401);
    let mut ws = bearer(
        &s.url("/app"),
        &hs256(&json!({"sub":"alice","exp":now()+2})),
    )
    .await;
    assert_eq!(next_text(&mut ws).await, "Welcome, alice!");
    send_text(&mut ws, "hello").await;
    assert_eq!(next_text(&mut ws).await, "hello");
    // The token expires: wsgate cuts the socket (and the app's side with it).
    assert_eq!(expect_close(&mut ws).await.0, 4001);
    let _ = uvicorn.kill().await;
}
