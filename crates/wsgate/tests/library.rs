//! The library through its public API, in process: an axum app on a free port, a real
//! WebSocket client. The one-call session, the app's own state via `FromRef`, a policy per
//! route, shutdown without wiring, one leeway setting and expiry; the session rules on
//! tokio's paused clock (hour-long deadlines, `expiring`, refresh) in milliseconds; and a
//! relay over axum's socket (the server upgrades its own, so only here is this path run).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State, ws::WebSocketUpgrade};
use axum::{Router, response::Response, routing::get};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use wsgate::verify::{StaticTokens, VerifierChain};
use wsgate::{Authenticator, SessionOptions, WsAuth};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
const WAIT: Duration = Duration::from_secs(10);

async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

async fn connect(addr: std::net::SocketAddr, path: &str, token: &str) -> Result<Ws, u16> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake in time")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a frame in time")
        .expect("open")
        .expect("frame")
}

fn tokens(pairs: &[(&'static str, &'static str)]) -> Arc<Authenticator> {
    Arc::new(Authenticator::new(
        VerifierChain::new().with(StaticTokens::new(pairs.iter().copied())),
    ))
}

async fn echo(auth: WsAuth, ws: WebSocketUpgrade) -> Response {
    auth.on_session(ws, |mut s| async move {
        while let Some(m) = s.recv().await {
            if !s.send(m).await {
                break;
            }
        }
    })
}

#[tokio::test]
async fn one_call_session_welcomes_then_echoes() {
    let app = Router::new()
        .route("/ws", get(echo))
        .with_state(tokens(&[("t", "ann")]));
    let addr = serve(app).await;
    assert_eq!(connect(addr, "/ws", "wrong").await.err(), Some(401));
    let mut ws = connect(addr, "/ws", "t").await.unwrap();
    let welcome: serde_json::Value =
        serde_json::from_str(next(&mut ws).await.to_text().unwrap()).unwrap();
    assert_eq!(
        (welcome["type"].as_str(), welcome["sub"].as_str()),
        (Some("welcome"), Some("ann"))
    );
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("hi"));
}

#[derive(Clone)]
struct AppState {
    auth: Arc<Authenticator>,
    greeting: &'static str,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(s: &AppState) -> Self {
        s.auth.clone()
    }
}

async fn greet(State(app): State<AppState>, auth: WsAuth, ws: WebSocketUpgrade) -> Response {
    auth.on_session(ws, move |mut s| async move {
        let _ = s.send(axum::extract::ws::Message::text(app.greeting)).await;
    })
}

#[tokio::test]
async fn app_state_via_fromref_and_a_policy_per_route() {
    let state = AppState {
        auth: tokens(&[("user", "ann")]),
        greeting: "hello from the app",
    };
    let app = Router::new()
        .route("/chat", get(greet))
        .route(
            "/admin",
            get(echo).with_state(tokens(&[("root-token", "root")])),
        )
        .with_state(state);
    let addr = serve(app).await;
    let mut ws = connect(addr, "/chat", "user").await.unwrap();
    next(&mut ws).await; // welcome
    assert_eq!(next(&mut ws).await, Message::text("hello from the app"));
    // Each route has its own policy.
    assert_eq!(connect(addr, "/admin", "user").await.err(), Some(401));
    assert_eq!(connect(addr, "/chat", "root-token").await.err(), Some(401));
    assert!(connect(addr, "/admin", "root-token").await.is_ok());
}

#[tokio::test]
async fn shutdown_closes_sessions_with_1001_without_wiring() {
    let auth = tokens(&[("t", "ann")]);
    let app = Router::new()
        .route("/ws", get(echo))
        .with_state(auth.clone());
    let addr = serve(app).await;
    let mut ws = connect(addr, "/ws", "t").await.unwrap();
    next(&mut ws).await;
    auth.shutdown(); // what wsgate::shutdown_signal does on SIGTERM/SIGINT
    match next(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn the_leeway_is_the_verifiers_and_expiry_closes_with_4001() {
    use wsgate::verify::{JwtConfig, JwtVerifier};
    const SECRET: &[u8] = b"library-test-secret-long-enough-32b";
    let jwt = JwtVerifier::new(JwtConfig {
        leeway_secs: 1,
        ..JwtConfig::default()
    })
    .unwrap()
    .with_secret(SECRET)
    .unwrap();
    let auth = Authenticator::new(VerifierChain::new().with(jwt)).session_options(SessionOptions {
        expiry_warning: None,
        ..SessionOptions::default()
    });
    assert_eq!(
        auth.leeway_duration(),
        Duration::from_secs(1),
        "one leeway setting"
    );
    let app = Router::new()
        .route("/ws", get(echo))
        .with_state(Arc::new(auth));
    let addr = serve(app).await;
    let now = wsgate::verify::now_unix();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "e", "exp": now + 1}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let mut ws = connect(addr, "/ws", &token).await.unwrap();
    next(&mut ws).await;
    let started = std::time::Instant::now();
    match next(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 4001),
        other => panic!("expected 4001, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// A JWT verifier on `SECRET` with the default leeway, and a token for `sub` expiring at `exp`.
mod jwt {
    pub const SECRET: &[u8] = b"library-test-secret-long-enough-32b";

    pub fn auth(options: wsgate::SessionOptions) -> std::sync::Arc<wsgate::Authenticator> {
        use wsgate::verify::{JwtConfig, JwtVerifier, VerifierChain};
        let jwt = JwtVerifier::new(JwtConfig::default())
            .unwrap()
            .with_secret(SECRET)
            .unwrap();
        std::sync::Arc::new(
            wsgate::Authenticator::new(VerifierChain::new().with(jwt)).session_options(options),
        )
    }

    pub fn token(sub: &str, exp: u64) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": sub, "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }
}

/// The next frame as JSON, with no timeout of its own: under a paused clock a timeout would
/// fire before the hour-long deadlines these tests wait for.
async fn next_json(ws: &mut Ws) -> serde_json::Value {
    match ws.next().await.expect("open").expect("frame") {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("JSON"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn next_close(ws: &mut Ws) -> u16 {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(Message::Text(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// An hour-long credential, in virtual time: `expiring` 30 s before `exp` (the default
/// warning), then the close at `exp` + the 30 s leeway — the session's one timer, driven by
/// tokio's clock, not the wall clock.
#[tokio::test(start_paused = true)]
async fn expiring_then_expiry_on_the_tokio_clock() {
    let app = Router::new()
        .route("/ws", get(echo))
        .with_state(jwt::auth(SessionOptions::default()));
    let addr = serve(app).await;
    let exp = wsgate::verify::now_unix() + 3600;
    let mut ws = connect(addr, "/ws", &jwt::token("al", exp)).await.unwrap();
    let wall = std::time::Instant::now();
    let start = tokio::time::Instant::now();
    let welcome = next_json(&mut ws).await;
    assert_eq!(
        (welcome["type"].as_str(), welcome["expires_at"].as_u64()),
        (Some("welcome"), Some(exp))
    );

    let expiring = next_json(&mut ws).await;
    assert_eq!(expiring["type"], "expiring");
    assert_eq!(expiring["expires_at"].as_u64(), Some(exp));
    let warned = start.elapsed();
    assert!(
        (Duration::from_secs(3565)..=Duration::from_secs(3571)).contains(&warned),
        "warned {warned:?} into the hour"
    );

    assert_eq!(
        next_close(&mut ws).await,
        wsgate::CloseReason::TokenExpired.code()
    );
    let closed = start.elapsed();
    assert!(
        (Duration::from_secs(3625)..=Duration::from_secs(3631)).contains(&closed),
        "closed {closed:?} into the hour (exp + 30 s leeway)"
    );
    assert!(
        wall.elapsed() < Duration::from_secs(5),
        "virtual time, not the wall clock"
    );
}

/// A refresh moves the deadline: the old `exp` passes without a close, the warning comes for
/// the new one. A refresh for another subject is refused and the old expiry stands.
#[tokio::test(start_paused = true)]
async fn a_refresh_moves_the_deadline_and_another_subject_cannot() {
    let app = Router::new()
        .route("/ws", get(echo))
        .with_state(jwt::auth(SessionOptions::default()));
    let addr = serve(app).await;
    let now = wsgate::verify::now_unix();
    let (old_exp, new_exp) = (now + 120, now + 7200);
    let mut ws = connect(addr, "/ws", &jwt::token("al", old_exp))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");

    let foreign =
        serde_json::json!({"type": "refresh", "id": 1, "token": jwt::token("bo", new_exp)});
    ws.send(Message::text(foreign.to_string())).await.unwrap();
    let refused = next_json(&mut ws).await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("invalid_token"))
    );
    assert_eq!(refused["id"], 1);

    let mine =
        serde_json::json!({"type": "refresh", "id": "r", "token": jwt::token("al", new_exp)});
    ws.send(Message::text(mine.to_string())).await.unwrap();
    let refreshed = next_json(&mut ws).await;
    assert_eq!(refreshed["type"], "refreshed");
    assert_eq!(
        (refreshed["id"].as_str(), refreshed["expires_at"].as_u64()),
        (Some("r"), Some(new_exp))
    );

    let start = tokio::time::Instant::now();
    let expiring = next_json(&mut ws).await;
    assert_eq!(expiring["type"], "expiring");
    assert_eq!(
        expiring["expires_at"].as_u64(),
        Some(new_exp),
        "warned for the new exp only"
    );
    assert!(
        start.elapsed() > Duration::from_secs(7000),
        "the old exp passed silently"
    );
    assert_eq!(
        next_close(&mut ws).await,
        wsgate::CloseReason::TokenExpired.code()
    );
}

/// Idle checks on the paused clock: a peer that answers pings is pinged every half idle
/// period (a little early, so one timer event serves both the answer's deadline and the
/// next ping) and is never closed; ten virtual minutes take milliseconds.
#[tokio::test(start_paused = true)]
async fn an_answering_peer_is_pinged_every_half_period_and_kept() {
    let auth = Authenticator::new(VerifierChain::new().with(StaticTokens::new([("t", "al")])))
        .session_options(SessionOptions {
            idle_timeout: Some(Duration::from_secs(60)),
            expiry_warning: None,
            ..SessionOptions::default()
        });
    let app = Router::new()
        .route("/ws", get(echo))
        .with_state(Arc::new(auth));
    let addr = serve(app).await;
    let mut ws = connect(addr, "/ws", "t").await.unwrap();
    assert!(
        matches!(ws.next().await, Some(Ok(Message::Text(_)))),
        "welcome"
    );
    let start = tokio::time::Instant::now();
    let mut pings = Vec::new();
    while start.elapsed() < Duration::from_secs(600) {
        // Reading answers each ping with a pong (tungstenite does it on the next poll).
        match ws.next().await {
            Some(Ok(Message::Ping(_))) => pings.push(start.elapsed()),
            other => panic!("only pings expected, got {other:?}"),
        }
    }
    assert!(
        (19..=21).contains(&pings.len()),
        "{} pings: {pings:?}",
        pings.len()
    );
    for gap in pings.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            (Duration::from_secs(26)..=Duration::from_secs(31)).contains(&gap),
            "pings {gap:?} apart: {pings:?}"
        );
    }
}

/// The relay needs the `relay` feature (a default one).
#[cfg(feature = "relay")]
mod relay_over_axum {
    use super::*;

    /// A plain axum echo server: tungstenite answers its pings.
    async fn plain_echo(ws: WebSocketUpgrade) -> Response {
        ws.on_upgrade(|mut socket| async move {
            while let Some(Ok(m)) = socket.recv().await {
                if matches!(m, axum::extract::ws::Message::Text(_)) && socket.send(m).await.is_err()
                {
                    break;
                }
            }
        })
    }

    /// The relay over axum's socket, as the `relay` module's example writes it.
    async fn proxied(
        State((auth, upstream)): State<(Arc<Authenticator>, Arc<wsgate::relay::Upstream>)>,
        ws: WebSocketUpgrade,
        req: axum::extract::Request,
    ) -> Response {
        use axum::response::IntoResponse;
        let (parts, _) = req.into_parts();
        let identity = match auth.authenticate_request(&parts).await {
            Ok(identity) => identity,
            Err(e) => return e.into_response(),
        };
        let conn = match upstream
            .connect(&parts, &identity, auth.sources_ref())
            .await
        {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        };
        ws.on_upgrade(move |socket| async move {
            let options = SessionOptions {
                welcome: false,
                ..Default::default()
            };
            wsgate::Session::new(socket, identity, auth, &options)
                .relay(conn, false)
                .await
        })
    }

    #[tokio::test]
    async fn a_relay_over_axums_socket_answers_a_ping_once() {
        // tungstenite answers the client's ping itself; the upstream's answer to the copy the
        // relay passes on must not reach the client as a second pong.
        let upstream = serve(Router::new().route("/ws", get(plain_echo))).await;
        let upstream = wsgate::relay::Upstream::new(&format!("ws://{upstream}/ws"), WAIT).unwrap();
        let app = Router::new()
            .route("/app", get(proxied))
            .with_state((tokens(&[("t", "ann")]), Arc::new(upstream)));
        let addr = serve(app).await;
        let mut ws = connect(addr, "/app", "t").await.unwrap();
        ws.send(Message::Ping(b"one".to_vec().into()))
            .await
            .unwrap();
        assert_eq!(next(&mut ws).await, Message::Pong(b"one".to_vec().into()));
        // The upstream's pong, had it passed, would come before this echo.
        ws.send(Message::Text("after".into())).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::Text("after".into()));
        ws.send(Message::Text("again".into())).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::Text("again".into()));
    }
}
