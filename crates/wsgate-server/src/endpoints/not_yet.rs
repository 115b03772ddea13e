//! `proxy` endpoints are configured by name today but arrive in a later version.
//! Until then their paths answer `501 Not Implemented` with a JSON body that says so, rather
//! than accepting sockets that would silently do nothing.

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::any;
use serde_json::json;

use crate::config::EndpointKind;

pub fn router(path: &str, kind: EndpointKind) -> Router {
    let message = format!(
        "the `{}` endpoint kind is not available in this version of wsgate yet",
        kind.as_str()
    );
    Router::new().route(
        path,
        any(move || async move {
            (
                StatusCode::NOT_IMPLEMENTED,
                Json(json!({"error": "not_implemented", "message": message})),
            )
        }),
    )
}
