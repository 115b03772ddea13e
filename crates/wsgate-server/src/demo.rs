//! The demo (`demo = true` or `wsgate serve --demo`): a small chat page at `/`, and a token
//! endpoint that **hands out tokens to anyone** so the page works without an identity
//! provider. Both exist only in demo mode, and the server warns about it at start.
//!
//! The page shows the whole browser flow: demo token → `POST /api/tickets` → `?ticket=` on
//! the `pubsub` endpoint → join a room → chat → refresh the token before it expires.
//! Assets are embedded in the binary.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use wsgate::protocol::{ErrorBody, ErrorCode};

use crate::auth::Minting;

/// Demo tokens are short-lived on purpose: the page shows the countdown and the refresh.
pub const DEMO_TOKEN_TTL: Duration = Duration::from_secs(120);

/// The claim every demo token carries: anyone can mint one for any name, so every endpoint
/// but the demo page's own ([`DEMO_PATH`], in demo mode) refuses them
/// (`Authenticator::refuse_claim`) — at the handshake, through a ticket, and on refresh.
pub const DEMO_CLAIM: &str = "wsgate_demo";

/// The endpoint the demo page connects to (a `pubsub` endpoint).
pub const DEMO_PATH: &str = "/ws";

const INDEX: &str = include_str!("../assets/demo/index.html");
const SCRIPT: &str = include_str!("../assets/demo/demo.js");
const STYLE: &str = include_str!("../assets/demo/demo.css");

pub fn router(minting: Minting) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/demo.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/demo.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/demo/token", post(token))
        .with_state(minting)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct TokenRequest {
    name: String,
    /// A shorter lifetime (5–120 s), to watch `expiring` and the refresh happen quickly.
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// `POST /api/demo/token {"name", "ttl_secs"?}` → a token for `name` that may read and write
/// `room:*`. Names are 1 to 32 characters, spaces and accents welcome, no control characters.
async fn token(
    State(minting): State<Minting>,
    req: Result<Json<TokenRequest>, JsonRejection>,
) -> Response {
    let Ok(Json(req)) = req else {
        let why = r#"the body is JSON: {"name": "...", "ttl_secs": 60}"#;
        return ErrorBody::new(ErrorCode::BadRequest, why).with_status(StatusCode::BAD_REQUEST);
    };
    let name = req.name.trim();
    let valid = (1..=32).contains(&name.chars().count()) && !name.chars().any(char::is_control);
    if !valid {
        return ErrorBody::new(ErrorCode::BadRequest, "a name is 1 to 32 characters")
            .with_status(StatusCode::BAD_REQUEST);
    }
    let ttl = req.ttl_secs.map_or(DEMO_TOKEN_TTL, |s| {
        Duration::from_secs(s.clamp(5, DEMO_TOKEN_TTL.as_secs()))
    });
    let rooms = ["room:*".to_owned()];
    let mut claims = minting.claims(name, ttl, &rooms, &rooms);
    claims[DEMO_CLAIM] = json!(true);
    match minting.sign(claims) {
        Ok(token) => Json(json!({"token": token, "expires_in": ttl.as_secs()})).into_response(),
        Err(e) => {
            tracing::error!(target: "wsgate::demo", error = %e, "cannot sign a demo token");
            ErrorBody::new(ErrorCode::Internal, "cannot sign a demo token")
                .with_status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}
