//! The machine-readable error codes, and the one JSON body of an HTTP refusal.
//!
//! A code is what a client program branches on: the `error` of an HTTP body, the `code` of
//! an `error` frame, the reason of a `1008`/`1014` close, the `reason` of a log line. They
//! are one vocabulary across both crates, so a client learns it once (docs/protocol.md §4).

use std::borrow::Cow;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Serialize, Serializer};

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $text:literal,)*) => {
        /// A stable, machine-readable error code (serialized as its snake_case text).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $name,)*
        }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The code as sent: `"invalid_token"`, `"forbidden"` ….
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $text,)*
                }
            }
        }
    };
}

error_codes! {
    // Handshake refusals (`AuthError`).
    /// No credential in any configured source (401).
    MissingToken = "missing_token",
    /// A credential that does not verify, expired, revoked … (401).
    InvalidToken = "invalid_token",
    /// `Origin` not in `allowed_origins` (403).
    ForbiddenOrigin = "forbidden_origin",
    /// A cookie credential without an allowed `Origin` (403).
    CookieOrigin = "cookie_origin",
    /// The subject holds `max_connections_per_user` sockets already (403).
    TooManyConnections = "too_many_connections",
    /// A valid credential that lacks what the endpoint requires (403, RFC 6750 §3.1).
    InsufficientScope = "insufficient_scope",
    /// Too many refused attempts from this address (429).
    RateLimited = "rate_limited",
    /// A backend that decides could not be asked (503).
    AuthUnavailable = "auth_unavailable",
    /// The `message` source's auth frame did not arrive in time.
    AuthTimeout = "auth_timeout",
    /// Two `Authorization`/`Origin` headers or two credentials of one source (400).
    AmbiguousRequest = "ambiguous_request",
    /// Too many outstanding tickets for this subject (429).
    TooManyTickets = "too_many_tickets",
    // The proxy's upstream (`GatewayError`).
    /// The upstream refused, is down or broke the handshake (502, close 1014).
    BadGateway = "bad_gateway",
    /// The upstream did not complete its handshake in time (504, close 1014).
    GatewayTimeout = "gateway_timeout",
    // Frames (`error` frames of pubsub and refresh).
    /// Not a JSON object with a `type`.
    BadJson = "bad_json",
    /// A required field is absent.
    MissingField = "missing_field",
    /// A `type` the endpoint does not know.
    UnknownType = "unknown_type",
    /// A channel name that is not 1–200 printable characters without spaces.
    InvalidChannel = "invalid_channel",
    /// The credential does not grant this (a channel; the admin API with a wrong key).
    Forbidden = "forbidden",
    /// The socket's subscription limit is reached.
    TooManySubscriptions = "too_many_subscriptions",
    /// A binary frame where JSON text is spoken.
    UnsupportedFrame = "unsupported_frame",
    /// The message bus (or the cluster) could not be used; try again (503).
    Unavailable = "unavailable",
    // The HTTP API.
    /// A malformed request body (400).
    BadRequest = "bad_request",
    /// The admin API is off: no key is set (403).
    AdminDisabled = "admin_disabled",
    /// No such path (404).
    NotFound = "not_found",
    /// The server failed (500).
    Internal = "internal",
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every HTTP refusal, in both crates: `{"error": code, "message": text}`.
/// The message is a fixed phrase or built from fixed phrases: nothing from the request (least
/// of all a credential) is echoed.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody<'a> {
    /// The machine-readable code.
    pub error: ErrorCode,
    /// A sentence for the person reading it.
    pub message: Cow<'a, str>,
}

impl<'a> ErrorBody<'a> {
    /// A body with this code and message.
    pub fn new(error: ErrorCode, message: impl Into<Cow<'a, str>>) -> Self {
        Self {
            error,
            message: message.into(),
        }
    }

    /// The refusal as a response with `status` (headers such as `Retry-After` are the
    /// caller's to add).
    pub fn with_status(self, status: StatusCode) -> Response {
        (status, Json(self)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert_eq!(serde_json::to_value(c).unwrap(), s);
        }
    }

    #[test]
    fn body_shape() {
        let body = ErrorBody::new(ErrorCode::NotFound, "no such path");
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "not_found", "message": "no such path"})
        );
    }
}
