//! The axum extractors: our `Depends` for WebSocket routes.
//!
//! Put [`WsAuth`] before `WebSocketUpgrade` in a handler's arguments and the request is
//! authenticated before any upgrade happens; a refusal is an [`AuthError`] response.
//! [`Identity`] itself is also an extractor, for handlers that only take handshake
//! credentials and always refuse with HTTP.
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{Router, routing::get, extract::ws::WebSocketUpgrade, response::Response};
//! use wsgate::{Authenticator, WsAuth, verify::{StaticTokens, VerifierChain}};
//!
//! async fn ws(auth: WsAuth, ws: WebSocketUpgrade) -> Response {
//!     auth.on_upgrade(ws, |mut socket, identity| async move {
//!         let _ = socket.send(identity.welcome_frame().into()).await;
//!     })
//! }
//! let auth = Arc::new(Authenticator::new(
//!     VerifierChain::new().with(StaticTokens::new([("valid-token", "demo-user")])),
//! ));
//! let app: Router = Router::new().route("/ws", get(ws)).with_state(auth);
//! ```

use std::future::Future;
use std::sync::Arc;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::response::Response;
use futures_util::future::Either;

use crate::authenticator::{AuthSocket, Authenticator, Handshake};
use crate::identity::Identity;
use crate::reject::{AuthError, RejectMode};
use crate::session::Session;
use crate::source::{SESSION_SUBPROTOCOL, SUBPROTOCOL};
use crate::verify::VerifyContext;

/// An authenticated (or, in the deferred cases, authenticatable) upgrade request.
pub struct WsAuth {
    auth: Arc<Authenticator>,
    path: String,
    state: State,
    /// The subprotocol the `101` selects.
    protocol: Answer,
}

/// Which subprotocol the `101` selects.
enum Answer {
    /// `wsgate.v1` when the client offered it.
    Default,
    /// `wsgate.session.v1` when offered (wsgate speaks session frames on this socket), else
    /// as [`Answer::Default`].
    SessionFrames,
    /// Exactly this one (a proxy answers its upstream's choice).
    Exactly(Option<String>),
}

enum State {
    Ready(Identity),
    AwaitMessage(VerifyContext),
    /// Refused in `reject = "close"` mode: upgrade, then close (`CloseReason::Refused`).
    Refused(AuthError),
}

impl<S> FromRequestParts<S> for WsAuth
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AuthError> {
        let auth = Arc::<Authenticator>::from_ref(state);
        let state = match auth.authenticate(parts).await {
            Ok(Handshake::Authenticated(id)) => State::Ready(id),
            Ok(Handshake::AwaitMessage(ctx)) => State::AwaitMessage(ctx),
            Err(e) if auth.reject_mode() == RejectMode::Close => State::Refused(e),
            Err(e) => return Err(e),
        };
        Ok(Self {
            auth,
            path: parts.uri.path().to_owned(),
            state,
            protocol: Answer::Default,
        })
    }
}

impl WsAuth {
    /// The identity, when the handshake itself carried a valid credential.
    pub fn identity(&self) -> Option<&Identity> {
        match &self.state {
            State::Ready(id) => Some(id),
            _ => None,
        }
    }

    /// The identity, when the handshake itself carried a valid credential, taken out of the
    /// extractor: for a caller that upgrades the socket itself
    /// ([`ClientUpgrade`](crate::relay::ClientUpgrade)). Otherwise the extractor back.
    #[allow(clippy::result_large_err)] // not a failure: the extractor handed back, once
    pub fn into_identity(self) -> Result<Identity, Self> {
        match self.state {
            State::Ready(id) => Ok(id),
            state => Err(Self { state, ..self }),
        }
    }

    /// The policy that authenticated this request.
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// Answers the client with `protocol` (it must be one the client offered) instead of
    /// the default `wsgate.v1`; `None` answers none. The proxy answers the upstream's choice.
    pub fn subprotocol(mut self, protocol: Option<String>) -> Self {
        self.protocol = Answer::Exactly(protocol);
        self
    }

    /// Announces that this socket speaks wsgate's session frames (`welcome`, `expiring`,
    /// `refresh`): the `101` selects [`SESSION_SUBPROTOCOL`](crate::source::SESSION_SUBPROTOCOL)
    /// when the client offered it, `wsgate.v1` otherwise. [`WsAuth::on_session`] does this;
    /// call it before [`WsAuth::on_upgrade`] when you wrap the socket in a [`Session`]
    /// yourself. Clients answer `expiring` with a fresh token only on such a socket.
    pub fn speaks_session_frames(mut self) -> Self {
        self.protocol = Answer::SessionFrames;
        self
    }

    /// Applies the socket settings and upgrades; `f` runs only for an authenticated socket.
    /// A deferred refusal closes (`CloseReason::Refused`); a `message` source is awaited first.
    pub fn on_upgrade<F, Fut>(mut self, ws: WebSocketUpgrade, f: F) -> Response
    where
        F: FnOnce(WebSocket, Identity) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut ws = self.auth.socket().apply(ws);
        match std::mem::replace(&mut self.protocol, Answer::Default) {
            Answer::Default => {}
            Answer::SessionFrames => ws = ws.protocols([SESSION_SUBPROTOCOL, SUBPROTOCOL]),
            Answer::Exactly(protocol) => ws = ws.protocols(protocol),
        }
        ws.on_upgrade(move |socket| match self.state {
            // The common case runs the caller's future as is: no wrapper state per socket.
            State::Ready(id) => Either::Left(f(socket, id)),
            _ => Either::Right(Box::pin(async move {
                if let Some((socket, id)) = self.finish(socket).await {
                    f(socket, id).await;
                }
            })),
        })
    }

    /// Upgrades and runs `f` with a ready [`Session`]: the welcome frame is sent, and
    /// expiry, refresh, revocation, limits and shutdown are the session's business — the
    /// one-call form for the common case:
    ///
    /// ```no_run
    /// # use axum::{extract::ws::WebSocketUpgrade, response::Response};
    /// # use wsgate::WsAuth;
    /// async fn echo(auth: WsAuth, ws: WebSocketUpgrade) -> Response {
    ///     auth.on_session(ws, |mut s| async move {
    ///         while let Some(msg) = s.recv().await {
    ///             if !s.send(msg).await { break }
    ///         }
    ///     })
    /// }
    /// ```
    ///
    /// The session's rules come from [`Authenticator::session_options`].
    pub fn on_session<F, Fut>(self, ws: WebSocketUpgrade, f: F) -> Response
    where
        F: FnOnce(Session) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let auth = self.auth.clone();
        self.speaks_session_frames()
            .on_upgrade(ws, move |socket, identity| {
                let options = auth.session_options_ref().clone();
                let mut session = Session::new(socket, identity, auth, &options);
                async move {
                    if session.welcome().await {
                        f(session).await;
                    }
                }
            })
    }

    /// The part of authentication that happens after the upgrade: for an authenticated
    /// request, nothing; otherwise wait for the `auth` frame or close (`CloseReason::Refused`).
    pub async fn finish(self, socket: WebSocket) -> Option<(WebSocket, Identity)> {
        self.finish_on(socket).await
    }

    /// [`WsAuth::finish`] on wsgate's own socket, for a caller that upgraded with
    /// [`ClientUpgrade`](crate::relay::ClientUpgrade) a request [`WsAuth::into_identity`]
    /// did not settle: the `auth` frame awaited (pings answered meanwhile), or the refusal
    /// sent as a close.
    #[cfg(feature = "relay")]
    pub async fn finish_own(
        self,
        socket: crate::relay::ClientSocket,
    ) -> Option<(crate::relay::ClientSocket, Identity)> {
        self.finish_on(socket).await
    }

    async fn finish_on<S: AuthSocket>(self, socket: S) -> Option<(S, Identity)> {
        match self.state {
            State::Ready(id) => Some((socket, id)),
            State::AwaitMessage(ctx) => self.auth.await_message_on(socket, ctx, &self.path).await,
            State::Refused(e) => {
                socket.refuse(e.close_reason()).await;
                None
            }
        }
    }
}

/// Handshake credentials only, refused with HTTP whatever the reject mode.
impl<S> FromRequestParts<S> for Identity
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AuthError> {
        let auth = Arc::<Authenticator>::from_ref(state);
        match auth.authenticate(parts).await? {
            Handshake::Authenticated(id) => Ok(id),
            Handshake::AwaitMessage(_) => Err(AuthError::Missing),
        }
    }
}
