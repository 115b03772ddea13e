//! # wsgate — authenticated WebSockets for axum
//!
//! The pattern every real-time app needs — "the client sends a token when it connects; the
//! server checks it before accepting; it refuses with a clear code; an authorized connection
//! stays open" — done properly:
//!
//! - [`WsAuth`] is an axum extractor (the equivalent of FastAPI's `Depends` on a websocket
//!   route) that authenticates the upgrade request **before** the socket is accepted, from
//!   any [`SourceKind`] (header, query, cookie with an Origin check, subprotocol, ticket, or
//!   the first message), with any [`verify::Verifier`] (static tokens, JWT with secret, PEM
//!   or JWKS, a backend over HTTP).
//! - [`Session`] guards the accepted socket for its whole life: welcome frame, expiry
//!   refresh, shutdown, size and rate limits, each ending with its [`CloseReason`].
//!
//! The library has no config files, no CLI and no global state: everything is built in code
//! and passed as axum state. See `examples/echo.rs`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod attempts;
pub mod authenticator;
pub mod extract;
pub mod forwarded;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod outbox;
pub mod permissions;
pub mod protocol;
pub mod registry;
pub mod reject;
#[cfg(feature = "relay")]
pub mod relay;
pub mod revalidate;
pub mod revocation;
pub mod session;
pub mod slots;
pub mod source;
pub mod tickets;
pub mod trace;
pub mod verify;

pub use authenticator::{Authenticator, Handshake, SessionOptions, SocketSettings};
pub use extract::WsAuth;
pub use forwarded::{IpNet, TrustedProxies};
pub use identity::{Claims, Identity, Verified};
pub use limits::FailureLimiter;
pub use observe::{Ended, SessionObserver};
pub use protocol::{ClientFrame, CloseReason, ErrorBody, ErrorCode, ServerFrame};
pub use registry::{Cause, CloseOrder, Grace, Learned, Order, Registry, Target};
pub use reject::{AuthError, GatewayError, RejectMode};
pub use revalidate::{OnError, Revalidator};
pub use revocation::{Revocations, Revoked};
pub use session::{Incoming, Session};
pub use slots::{SharedCounts, Slot, Slots};
pub use source::{Credential, SourceKind, Sources};
pub use tickets::{TicketStore, TicketVerifier, Tickets};
pub use trace::{Span, SpanKind, TraceContext, Tracer};

/// Re-exported so users name algorithms without depending on jsonwebtoken themselves.
pub use jsonwebtoken::Algorithm;

/// Resolves on SIGTERM or SIGINT after closing every session of `auth` (and its clones) with
/// [`CloseReason::Shutdown`]: hand it to axum's `with_graceful_shutdown`, which waits for HTTP
/// requests but not for upgraded sockets.
///
/// ```no_run
/// # async fn run(app: axum::Router, auth: std::sync::Arc<wsgate::Authenticator>) {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
/// axum::serve(listener, app)
///     .with_graceful_shutdown(wsgate::shutdown_signal(&auth))
///     .await
///     .unwrap();
/// # }
/// ```
pub fn shutdown_signal(auth: &Authenticator) -> impl std::future::Future<Output = ()> + use<> {
    let token = auth.shutdown_token().clone();
    async move {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = interrupt => {}
            _ = terminate => {}
            _ = token.cancelled() => {}
        }
        token.cancel();
    }
}

/// Installs the JWT crypto backend (aws-lc-rs). Idempotent, and done by
/// [`verify::JwtVerifier::new`] and [`Authenticator::new`]: call it yourself only when you
/// use `jsonwebtoken` directly before building either. jsonwebtoken panics at the first
/// signature check when no backend or two are active; naming the module here makes a
/// missing feature a compile error instead.
pub fn install_crypto() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}
