//! `GET /api/handshake-status?attempt=<nonce>`: why a browser's handshake failed.
//!
//! A browser sees a refused handshake only as a `1006`. A handshake that carried
//! `?wsgate_attempt=<nonce>` and was refused is kept in the library's
//! [`Attempts`](wsgate::attempts::Attempts) for 60 s; this route tells the page that made it:
//! `{"status": 401, "error": "invalid_token", "retry_after": null}`, or 404 for a nonce it
//! does not know (never made, accepted, expired, or refused by another node). `/wsgate.js`
//! asks after every close that came without an open.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use wsgate::attempts::Attempts;
use wsgate::protocol::{ErrorBody, ErrorCode};

pub fn router(attempts: Arc<Attempts>) -> Router {
    Router::new()
        .route("/api/handshake-status", get(status))
        .with_state(attempts)
}

#[derive(Deserialize)]
struct Ask {
    attempt: Option<String>,
}

async fn status(
    State(attempts): State<Arc<Attempts>>,
    ask: Result<Query<Ask>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let refusal = ask
        .ok()
        .and_then(|Query(a)| a.attempt)
        .filter(|n| wsgate::attempts::valid_nonce(n))
        .and_then(|n| attempts.get(&n));
    match refusal {
        // Asked by the page of another origin too (a page on app.example, wsgate elsewhere):
        // the answer holds nothing but what the nonce's owner may know.
        Some(r) => (
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            ],
            axum::Json(r),
        )
            .into_response(),
        None => {
            let mut res = ErrorBody::new(
                ErrorCode::NotFound,
                "no refused handshake with this attempt in the last 60 s",
            )
            .with_status(StatusCode::NOT_FOUND);
            res.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                header::HeaderValue::from_static("*"),
            );
            res
        }
    }
}
