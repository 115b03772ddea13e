//! Forwarding an authenticated socket to an upstream WebSocket server.
//!
//! Authenticating proxies check a credential once, at the handshake; wsgate keeps the session
//! rules for the socket's whole life. [`Upstream`] opens the upstream connection for an
//! authenticated request — passing the verified identity on as `X-Wsgate-*` headers and
//! never the credential — and [`Session::relay`](crate::Session::relay) then forwards frames
//! both ways until either side or the session ends, closing both with the same code.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use axum::{extract::{ws::WebSocketUpgrade, ConnectInfo}, http::request::Parts, response::{IntoResponse, Response}};
//! # use wsgate::{WsAuth, Session, SessionOptions, relay::Upstream};
//! async fn proxied(auth: WsAuth, ws: WebSocketUpgrade, parts: Parts, upstream: Arc<Upstream>) -> Response {
//!     let Some(identity) = auth.identity() else { return wsgate::AuthError::Missing.into_response() };
//!     let conn = match upstream.connect(&parts, identity, auth.authenticator().sources_ref()).await {
//!         Ok(c) => c,
//!         Err(e) => return e.into_response(), // 502 / 504
//!     };
//!     let policy = auth.authenticator().clone();
//!     auth.subprotocol(conn.client_protocol(&parts.headers, false))
//!         .on_upgrade(ws, move |socket, identity| async move {
//!             let options = SessionOptions { welcome: false, ..Default::default() };
//!             Session::new(socket, identity, policy, &options).relay(conn, false).await
//!         })
//! }
//! ```

mod frames;
mod handshake;
mod socket;
mod stream;
mod tls;
mod upgrade;

pub(crate) use frames::PeerError;
pub use frames::{Peer, read_frames};
use handshake::{Caller, request_head, upstream_protocols, with_client_query};
pub use handshake::{read_answer, subject_header_value};
pub(crate) use socket::Relayed;
pub use socket::{ClientSocket, FrameSocket, UpstreamSocket};
pub use stream::UpstreamIo;
pub use upgrade::{ClientUpgrade, UpgradeRejection, wsgate_protocol};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, request::Parts};
use tokio::net::TcpStream;

use crate::authenticator::SocketSettings;
use crate::identity::Identity;
use crate::reject::GatewayError;
use crate::source::Sources;
use crate::trace::{SpanKind, TraceContext, Traced};

/// The identity headers the upstream receives (and the only `X-Wsgate-*` headers it sees).
/// The subject is percent-encoded where a header cannot carry it exactly (see
/// [`subject_header_value`]).
pub const SUB_HEADER: &str = "x-wsgate-sub";
/// The session id header the upstream receives.
pub const SESSION_HEADER: &str = "x-wsgate-session";
/// The claims header the upstream receives (base64url JSON, no padding).
pub const CLAIMS_HEADER: &str = "x-wsgate-claims";
/// Who vouched for the identity ([`Identity::provider`]: a configured provider's name).
pub const PROVIDER_HEADER: &str = "x-wsgate-provider";

/// Largest upstream message relayed (a client's are held to its own `max_message_bytes`);
/// a larger one closes both sides ([`CloseReason::TooBig`](crate::CloseReason::TooBig)).
/// The client side's write bound must take one ([`Upstream::client_socket_settings`]).
pub const MAX_UPSTREAM_MESSAGE: usize = 16 * 1024 * 1024;

/// A configured upstream: where, how long to wait, which roots to trust for `wss://`.
#[derive(Clone)]
pub struct Upstream {
    /// `ws://host:port/path?query` as configured.
    url: String,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// An upstream that cannot be used as configured.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    /// Not a usable URL.
    #[error("`{0}` is not a ws:// or wss:// URL with a host")]
    BadUrl(String),
    /// The CA file holds no usable certificate.
    #[error("no usable CA certificate in the PEM ({0})")]
    BadCa(String),
    /// TLS could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// A connected upstream, and the subprotocol it selected.
pub struct Connected {
    /// Boxed: the socket is a few hundred bytes, and a `Connected` is moved through several
    /// futures on its way to the relay, each of which would otherwise keep a slot of that
    /// size for the connection's whole life.
    pub(crate) socket: Box<UpstreamSocket>,
    protocol: Option<String>,
}

impl Connected {
    /// The subprotocol the upstream selected, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// What the client is answered: the upstream's choice; if none, wsgate's own
    /// ([`wsgate_protocol`]: the session one only where wsgate speaks session frames on
    /// this socket, `refresh_frames`).
    pub fn client_protocol(
        &self,
        client_headers: &HeaderMap,
        refresh_frames: bool,
    ) -> Option<String> {
        match &self.protocol {
            Some(p) => Some(p.clone()),
            None => wsgate_protocol(client_headers, refresh_frames).map(str::to_owned),
        }
    }
}

impl Upstream {
    /// `url` must be `ws://` or `wss://`; `timeout` bounds TCP connect, TLS and the upstream's
    /// handshake together. `wss://` trusts the system's roots unless [`Self::with_ca_pem`].
    pub fn new(url: &str, timeout: Duration) -> Result<Self, UpstreamSetupError> {
        let uri: axum::http::Uri = url
            .parse()
            .map_err(|_| UpstreamSetupError::BadUrl(url.to_owned()))?;
        let tls = match uri.scheme_str() {
            Some("ws") => None,
            Some("wss") => Some(Arc::new(tls::system_config()?)),
            _ => return Err(UpstreamSetupError::BadUrl(url.to_owned())),
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(UpstreamSetupError::BadUrl(url.to_owned()));
        }
        Ok(Self {
            url: url.to_owned(),
            timeout,
            tls,
        })
    }

    /// Trusts exactly the certificates in `pem` for a `wss://` upstream: as CAs, and each as
    /// the upstream's own certificate (a self-signed one, as `openssl req -x509` makes it,
    /// pinned; its name and validity still checked).
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self, UpstreamSetupError> {
        self.tls = Some(Arc::new(tls::listed_config(pem)?));
        Ok(self)
    }

    /// The client side's socket settings for this relay: `settings`, with a write bound that
    /// takes any message the upstream may send ([`MAX_UPSTREAM_MESSAGE`]); with a smaller one
    /// the client would be dropped without a close frame mid-message. A bound, not an
    /// allocation: the buffer grows only while such a message is written.
    pub fn client_socket_settings(settings: SocketSettings) -> SocketSettings {
        SocketSettings {
            max_write_buffer_size: settings
                .max_write_buffer_size
                .max(settings.write_buffer_size + MAX_UPSTREAM_MESSAGE + 1),
            ..settings
        }
    }

    /// The URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens the upstream connection for an authenticated request: the upstream's URL with
    /// the client's query parameters (minus credentials), the identity headers, the
    /// forwarding headers and what the client sent that the upstream may need.
    /// Never the credential. TCP connect, TLS and the upstream's `101` share one deadline.
    pub async fn connect(
        &self,
        parts: &Parts,
        identity: &Identity,
        sources: &Sources,
    ) -> Result<Connected, GatewayError> {
        let started = Instant::now();
        // Traced: the dial is a span of the handshake's, and the upstream's parent.
        let span = identity
            .trace()
            .map(|t| (t, t.context().child(), SystemTime::now()));
        let own = span.as_ref().map(|(_, own, _)| own);
        let result = match tokio::time::timeout(
            self.timeout,
            self.open(&Caller {
                parts,
                identity,
                sources,
                trace: own,
            }),
        )
        .await
        {
            Err(_) => Err(GatewayError::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok((socket, protocol))) => Ok(Connected {
                socket: Box::new(socket),
                protocol,
            }),
        };
        crate::metrics::upstream_connect(started.elapsed(), result.as_ref().err());
        if let Some((trace, own, at)) = span {
            self.dial_span(trace, own, at, result.as_ref().err());
        }
        result
    }

    /// `wsgate.upstream.connect`: the dial as a child of the handshake, `own` being the
    /// context the upstream was handed as its parent.
    fn dial_span(
        &self,
        trace: &Traced,
        own: TraceContext,
        started: SystemTime,
        failed: Option<&GatewayError>,
    ) {
        let error = failed.map(|e| e.code().as_str());
        let outcome = if error.is_none() {
            "connected"
        } else {
            "failed"
        };
        let mut attributes = vec![("wsgate.outcome", outcome.into())];
        if let Ok(uri) = self.url.parse::<axum::http::Uri>() {
            attributes.push(("server.address", uri.host().unwrap_or_default().into()));
            if let Some(port) = uri.port_u16() {
                attributes.push(("server.port", i64::from(port).into()));
            }
        }
        let name = "wsgate.upstream.connect";
        trace.span_as(name, SpanKind::Client, own, started, attributes, error);
    }

    /// The handshake, done here rather than by tungstenite's client: an upstream may select
    /// no subprotocol from those the client offered (tungstenite would fail that), and what
    /// is read is bounded ([`MAX_HEAD`]).
    async fn open(
        &self,
        caller: &Caller<'_>,
    ) -> Result<(UpstreamSocket, Option<String>), GatewayError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const UNREACHABLE: GatewayError = GatewayError::Unreachable("the upstream is unreachable");
        const REFUSED: GatewayError =
            GatewayError::Unreachable("the upstream refused the WebSocket handshake");
        let parts = caller.parts;

        let url = with_client_query(
            &self.url,
            parts.uri.query(),
            caller.sources.query_param_name(),
        );
        let uri: axum::http::Uri = url
            .parse()
            .map_err(|_| GatewayError::Unreachable("bad upstream URL"))?;
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let port = uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|_| UNREACHABLE)?;
        let _ = tcp.set_nodelay(true);
        let mut stream = match &self.tls {
            None => UpstreamIo::Plain(tcp),
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|_| GatewayError::Unreachable("bad upstream host name"))?;
                let tls = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        // The answer stays a fixed phrase; the operator reads why here.
                        tracing::warn!(target: "wsgate::conn", upstream = host, error = %e, "TLS with the upstream failed");
                        GatewayError::Unreachable("TLS with the upstream failed")
                    })?;
                UpstreamIo::Tls(Box::new(tls))
            }
        };
        let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
        let protocols = upstream_protocols(&parts.headers);
        let head = request_head(&uri, &key, caller, &protocols)?;
        stream.write_all(&head).await.map_err(|_| UNREACHABLE)?;

        let mut buf = Vec::with_capacity(1024);
        let (protocol, body_start) = loop {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.map_err(|_| UNREACHABLE)?;
            if n == 0 {
                return Err(REFUSED);
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(answer) = read_answer(&buf, &key)? {
                break answer;
            }
        };
        // RFC 6455 §4.1: a subprotocol the client did not offer fails the connection; here
        // it would also let an upstream claim wsgate's own (`wsgate.session.v1`).
        if protocol.as_deref().is_some_and(|p| !protocols.contains(&p)) {
            return Err(GatewayError::Unreachable(
                "the upstream selected a subprotocol that was not offered",
            ));
        }
        let socket = UpstreamSocket::new(
            Peer::Server,
            stream,
            &buf[body_start..],
            MAX_UPSTREAM_MESSAGE,
        );
        Ok((socket, protocol))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(Upstream::new("ws://127.0.0.1:9/ws", Duration::from_secs(1)).is_ok());
        assert!(Upstream::new("wss://up.example/ws", Duration::from_secs(1)).is_ok());
        for bad in ["http://x/", "ws://", "x", "wss:///p"] {
            assert!(Upstream::new(bad, Duration::from_secs(1)).is_err(), "{bad}");
        }
    }
}
