//! The one place an authentication error becomes an HTTP status or a close code.
//!
//! Before the upgrade a refusal is an HTTP response (`401` with `WWW-Authenticate`, `403`,
//! `429` with `Retry-After`, `503`) and a JSON body `{"error","message"}`. Browsers cannot
//! read a handshake's status, so in [`RejectMode::Close`] the same refusal becomes an
//! accepted socket closed at once with `1008` and the error code as the reason.
//! Messages are fixed strings: nothing from the request (least of all the token) is echoed.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::protocol::{CloseReason, ErrorBody, ErrorCode};

/// How a refused handshake is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RejectMode {
    /// An HTTP error; the socket is never upgraded.
    #[default]
    Http,
    /// Upgrade, then close with `1008` and a short reason.
    Close,
}

/// Why a proxied connection could not reach its upstream: `502 bad_gateway`
/// or `504 gateway_timeout` before the upgrade, close `1014` after it (`reject = "close"`,
/// the `message` source).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Refused, down or broken: 502 (a fixed phrase says which).
    #[error("{0}")]
    Unreachable(&'static str),
    /// No complete upstream handshake within the timeout: 504.
    #[error("the upstream did not complete its handshake in time")]
    Timeout,
}

impl GatewayError {
    /// The body's `error` and the close reason: `bad_gateway` or `gateway_timeout`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unreachable(_) => ErrorCode::BadGateway,
            Self::Timeout => ErrorCode::GatewayTimeout,
        }
    }
    /// 502 or 504.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unreachable(_) => StatusCode::BAD_GATEWAY,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
    /// After an upgrade (`reject = "close"`, the `message` source): close 1014.
    pub fn close_reason(&self) -> CloseReason {
        CloseReason::Gateway(self.code().as_str())
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        ErrorBody::new(self.code(), self.to_string()).with_status(self.status())
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential in any configured source: 401 `Bearer`.
    #[error("no credential was presented")]
    Missing,
    /// The reason is a fixed phrase chosen by the verifier ("token expired", "bad signature").
    #[error("the credential is not valid: {0}")]
    Invalid(&'static str),
    /// `Origin` not in `allowed_origins`: 403.
    #[error("the request's Origin is not allowed")]
    ForeignOrigin,
    /// A cookie credential without an allowed `Origin`: 403.
    #[error("a cookie credential needs an allowed Origin")]
    CookieOrigin,
    /// The subject holds `max_connections_per_user` sockets already: 403.
    #[error("too many connections for this user")]
    TooManyConnections,
    /// A valid credential without what the endpoint requires (`require`): 403 with
    /// `WWW-Authenticate: Bearer error="insufficient_scope"`.
    #[error("the credential does not grant what this endpoint requires")]
    InsufficientScope,
    /// Too many refused handshakes from this address: 429 with `Retry-After`.
    #[error("too many failed attempts; retry later")]
    RateLimited {
        /// Seconds until the address may try again.
        retry_after_secs: u64,
    },
    /// A backend that decides could not be asked: 503.
    #[error("the authentication service is unavailable: {0}")]
    Unavailable(&'static str),
    /// The `message` source's auth frame did not arrive in time.
    #[error("no auth message arrived in time")]
    MessageTimeout,
    /// The request is ambiguous (two `Authorization` or `Origin` headers, two credentials of
    /// one source): which one would a proxy in front of us have checked? Refused with 400.
    #[error("ambiguous request: {0}")]
    Ambiguous(&'static str),
    /// Too many outstanding tickets for this subject.
    #[error("too many outstanding tickets; use or let expire the ones issued")]
    TooManyTickets {
        /// Seconds until outstanding tickets expire.
        retry_after_secs: u64,
    },
}

impl AuthError {
    /// Stable machine-readable code: the body's `error`, the close reason, the log's `reason`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Missing => ErrorCode::MissingToken,
            Self::Invalid(_) => ErrorCode::InvalidToken,
            Self::ForeignOrigin => ErrorCode::ForbiddenOrigin,
            Self::CookieOrigin => ErrorCode::CookieOrigin,
            Self::TooManyConnections => ErrorCode::TooManyConnections,
            Self::InsufficientScope => ErrorCode::InsufficientScope,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Unavailable(_) => ErrorCode::AuthUnavailable,
            Self::MessageTimeout => ErrorCode::AuthTimeout,
            Self::Ambiguous(_) => ErrorCode::AmbiguousRequest,
            Self::TooManyTickets { .. } => ErrorCode::TooManyTickets,
        }
    }

    /// The HTTP status of the refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Missing | Self::Invalid(_) | Self::MessageTimeout => StatusCode::UNAUTHORIZED,
            Self::ForeignOrigin
            | Self::CookieOrigin
            | Self::TooManyConnections
            | Self::InsufficientScope => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } | Self::TooManyTickets { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Ambiguous(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether this refusal counts against the remote address's failure budget. Refusals the
    /// client cannot be blamed for (our backend down, the limit itself) do not, nor does a
    /// valid credential that lacks a scope: it guesses nothing.
    pub fn is_client_failure(&self) -> bool {
        !matches!(
            self,
            Self::RateLimited { .. }
                | Self::Unavailable(_)
                | Self::TooManyTickets { .. }
                | Self::InsufficientScope
        )
    }

    /// How a socket ends in [`RejectMode::Close`] (and a failed `message` auth): 1008 with
    /// the code as reason.
    pub fn close_reason(&self) -> CloseReason {
        CloseReason::Refused(self.code().as_str())
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut res = ErrorBody::new(self.code(), self.to_string()).with_status(self.status());
        let headers = res.headers_mut();
        match &self {
            Self::Missing => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Invalid(_) | Self::MessageTimeout => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
            Self::InsufficientScope => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="insufficient_scope""#),
                );
            }
            Self::RateLimited { retry_after_secs } | Self::TooManyTickets { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_headers() {
        let r = AuthError::Missing.into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let r = AuthError::Invalid("bad signature").into_response();
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token""#
        );
        assert_eq!(AuthError::CookieOrigin.status(), 403);
        let r = AuthError::RateLimited {
            retry_after_secs: 7,
        }
        .into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        assert_eq!(AuthError::Unavailable("timeout").status(), 503);
    }

    #[test]
    fn close_frame_is_policy_with_code() {
        let f = AuthError::Invalid("x").close_reason().frame();
        assert_eq!(f.code, 1008);
        assert_eq!(f.reason.as_str(), "invalid_token");
    }
}
