//! `GET /wsgate.js`: the browser client, served by every wsgate server so a page
//! can `import { WsgateClient } from "/wsgate.js"` from the server it talks to. The module
//! lives in `clients/js/` (with its types and tests) and is embedded in the binary.

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const SCRIPT: &str = include_str!("../../../clients/js/wsgate.js");

/// A validator that changes with every change of the script (FNV-1a of its text).
fn etag() -> String {
    let hash = SCRIPT.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

pub fn router() -> Router {
    let tag = etag();
    Router::new().route(
        "/wsgate.js",
        get(move |headers: HeaderMap| async move { script(&headers, &tag) }),
    )
}

fn script(headers: &HeaderMap, tag: &str) -> Response {
    let cache = [
        (header::ETAG, tag.to_owned()),
        // Five minutes, then revalidate: a server upgrade reaches pages quickly.
        (header::CACHE_CONTROL, "public, max-age=300".to_owned()),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == tag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}
