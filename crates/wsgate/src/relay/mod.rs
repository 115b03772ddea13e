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

mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header, request::Parts};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::authenticator::SocketSettings;
use crate::identity::Identity;
use crate::reject::GatewayError;
use crate::source::{
    SESSION_SUBPROTOCOL, SUBPROTOCOL, SUBPROTOCOL_TOKEN_PREFIX, Sources, TICKET_PARAM,
};
use crate::trace::{SpanKind, TRACEPARENT, TRACESTATE, TraceContext, Traced};

/// The upstream side of a proxied connection.
pub type UpstreamSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

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

/// Client headers passed on as sent.
const PASSED: [HeaderName; 3] = [header::ORIGIN, header::USER_AGENT, header::ACCEPT_LANGUAGE];

/// Largest upstream message relayed (a client's are held to its own `max_message_bytes`);
/// a larger one closes both sides ([`CloseReason::TooBig`](crate::CloseReason::TooBig)).
/// The client side's write bound must take one ([`Upstream::client_socket_settings`]).
pub const MAX_UPSTREAM_MESSAGE: usize = 16 * 1024 * 1024;

/// What an upstream request is made from: the client's request, who it is, where its
/// credential travelled (never passed on), and the dial's trace context when traced.
#[derive(Clone, Copy)]
struct Caller<'a> {
    parts: &'a Parts,
    identity: &'a Identity,
    sources: &'a Sources,
    trace: Option<&'a TraceContext>,
}

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
    pub(crate) socket: UpstreamSocket,
    protocol: Option<String>,
}

impl Connected {
    /// The subprotocol the upstream selected, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// What the client is answered: the upstream's choice; if none, and wsgate
    /// speaks session frames on this socket (`refresh_frames`) and the client offered
    /// [`SESSION_SUBPROTOCOL`], that; else `wsgate.v1` if offered (a browser fails a
    /// handshake whose offered protocols get no answer); otherwise none.
    pub fn client_protocol(
        &self,
        client_headers: &HeaderMap,
        refresh_frames: bool,
    ) -> Option<String> {
        if let Some(p) = &self.protocol {
            return Some(p.clone());
        }
        let offered: Vec<&str> = offered(client_headers).collect();
        [SESSION_SUBPROTOCOL, SUBPROTOCOL]
            .into_iter()
            .filter(|p| refresh_frames || *p != SESSION_SUBPROTOCOL)
            .find(|p| offered.contains(p))
            .map(str::to_owned)
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
            Ok(Ok((socket, protocol))) => Ok(Connected { socket, protocol }),
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
            None => MaybeTlsStream::Plain(tcp),
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
                MaybeTlsStream::Rustls(tls)
            }
        };
        let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
        let protocols = upstream_protocols(&parts.headers);
        let head = self.request_head(&uri, &key, caller, &protocols)?;
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
        let config = WebSocketConfig::default()
            .read_buffer_size(2 * 1024)
            .write_buffer_size(8 * 1024)
            .max_write_buffer_size(1024 * 1024 + MAX_UPSTREAM_MESSAGE)
            .max_message_size(Some(MAX_UPSTREAM_MESSAGE))
            .max_frame_size(Some(MAX_UPSTREAM_MESSAGE));
        let socket = WebSocketStream::from_partially_read(
            stream,
            buf.split_off(body_start),
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            Some(config),
        )
        .await;
        Ok((socket, protocol))
    }

    fn request_head(
        &self,
        uri: &axum::http::Uri,
        key: &str,
        caller: &Caller<'_>,
        protocols: &[&str],
    ) -> Result<Vec<u8>, GatewayError> {
        let Caller {
            parts,
            identity,
            sources,
            trace,
        } = *caller;
        let mut h = HeaderMap::new();
        let claims = serde_json::to_vec(identity.claims()).unwrap_or_else(|_| b"null".to_vec());
        let identity_headers = [
            (
                SUB_HEADER,
                HeaderValue::from_str(&subject_header_value(identity.sub())),
            ),
            (SESSION_HEADER, HeaderValue::from_str(identity.session())),
            (
                CLAIMS_HEADER,
                HeaderValue::from_str(&URL_SAFE_NO_PAD.encode(claims)),
            ),
            (PROVIDER_HEADER, HeaderValue::from_str(identity.provider())),
        ];
        for (name, value) in identity_headers {
            let value = value.map_err(|_| GatewayError::Unreachable("identity not sendable"))?;
            h.insert(name, value);
        }
        for name in PASSED {
            for v in parts.headers.get_all(&name) {
                h.append(name.clone(), v.clone());
            }
        }
        // The trace context: the dial's own when traced, else the client's passed on as sent
        // (a transparent hop).
        match trace.map(|t| HeaderValue::from_str(&t.traceparent())) {
            Some(Ok(own)) => {
                h.insert(TRACEPARENT, own);
            }
            _ => {
                if let Some(v) = parts.headers.get(TRACEPARENT) {
                    h.insert(TRACEPARENT, v.clone());
                }
            }
        }
        // The vendors' state belongs to the client's trace: passed on only when that goes on.
        let continued = parts
            .headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse)
            .is_some();
        if let Some(v) = parts.headers.get(TRACESTATE).filter(|_| continued) {
            h.insert(TRACESTATE, v.clone());
        }
        if let Some(xff) = forwarded_for(parts) {
            h.insert("x-forwarded-for", xff);
        }
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        if let Some(cookies) = other_cookies(&parts.headers, sources.cookie_name_ref()) {
            h.insert(header::COOKIE, cookies);
        }
        if !protocols.is_empty()
            && let Ok(v) = HeaderValue::from_str(&protocols.join(", "))
        {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = uri.authority().map_or("", |a| a.as_str());
        let mut head = format!(
            "GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
        )
        .into_bytes();
        for (name, value) in &h {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        Ok(head)
    }
}

/// `X-Wsgate-Sub`'s value: the subject exactly as it is when it is made of visible ASCII
/// other than `%`; otherwise every other byte of its UTF-8 (spaces, controls, `%`, non-ASCII)
/// as `%XX`. An HTTP parser strips edge whitespace (`admin␠` would arrive as `admin`, another
/// identity) and reads non-ASCII bytes as Latin-1; percent-decoding the value as UTF-8 always
/// gives the subject back, and distinct subjects never share a value.
pub fn subject_header_value(sub: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(sub.len());
    for &b in sub.as_bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Largest upstream answer head read.
const MAX_HEAD: usize = 16 * 1024;

/// Reads the upstream's answer to a handshake sent with `key`, from the bytes received so
/// far: `Ok(None)` while the head is incomplete; once complete, the subprotocol it selected
/// and where the WebSocket bytes start; an error for anything but a `101` that accepts
/// this key, and for a head past [`MAX_HEAD`]. Public for the fuzzers (`fuzz/`).
#[doc(hidden)]
pub fn read_answer(buf: &[u8], key: &str) -> Result<Option<(Option<String>, usize)>, GatewayError> {
    const REFUSED: GatewayError =
        GatewayError::Unreachable("the upstream refused the WebSocket handshake");
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some((check_answer(&res, key)?, len))),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Ok(None),
        _ => Err(REFUSED),
    }
}

/// A `101` that really accepts our handshake; its selected subprotocol.
fn check_answer(
    res: &httparse::Response<'_, '_>,
    key: &str,
) -> Result<Option<String>, GatewayError> {
    const REFUSED: GatewayError =
        GatewayError::Unreachable("the upstream refused the WebSocket handshake");
    if res.code != Some(101) {
        return Err(REFUSED);
    }
    let get = |name: &str| {
        res.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    if get("sec-websocket-accept") != Some(accept.as_str())
        || !get("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
    {
        return Err(REFUSED);
    }
    Ok(get("sec-websocket-protocol")
        .filter(|p| !p.is_empty())
        .map(str::to_owned))
}

/// The client's offered subprotocols the upstream is offered: all but wsgate's own
/// (`wsgate.v1`, `wsgate.session.v1`) and the token entry `wsgate.bearer.<token>`.
fn upstream_protocols(headers: &HeaderMap) -> Vec<&str> {
    offered(headers)
        .filter(|p| {
            *p != SUBPROTOCOL
                && *p != SESSION_SUBPROTOCOL
                && !p.starts_with(SUBPROTOCOL_TOKEN_PREFIX)
        })
        .collect()
}

/// The subprotocols a client offered, in order.
fn offered(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// The upstream URL followed by the client's query parameters, minus the credential ones
/// (`auth.query_param` and `ticket`), wsgate's own `wsgate_attempt`, and any the operator's URL sets itself (a client
/// must not add a second `tenant` to `?tenant=acme`: backends differ on which one wins), kept
/// as sent (encoding included).
fn with_client_query(upstream: &str, client_query: Option<&str>, token_param: &str) -> String {
    let name_of = |pair: &str| -> String {
        let name = pair.split('=').next().unwrap_or_default();
        form_urlencoded::parse(name.as_bytes())
            .next()
            .map(|(k, _)| k.into_owned())
            .unwrap_or_default()
    };
    let configured: Vec<String> = upstream
        .split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(name_of)
                .collect()
        })
        .unwrap_or_default();
    let kept: Vec<&str> = client_query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = name_of(pair);
            name != token_param
                && name != TICKET_PARAM
                && name != crate::attempts::ATTEMPT_PARAM
                && !configured.contains(&name)
        })
        .collect();
    if kept.is_empty() {
        return upstream.to_owned();
    }
    let sep = if upstream.contains('?') { "&" } else { "?" };
    format!("{upstream}{sep}{}", kept.join("&"))
}

/// `X-Forwarded-For`: what the client sent, with the client's own address appended.
fn forwarded_for(parts: &Parts) -> Option<HeaderValue> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let mut list: Vec<String> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    list.extend(peer);
    if list.is_empty() {
        return None;
    }
    HeaderValue::from_str(&list.join(", ")).ok()
}

/// The client's cookies without the one that carries the credential.
fn other_cookies(headers: &HeaderMap, auth_cookie: &str) -> Option<HeaderValue> {
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split('=').next().map(str::trim) != Some(auth_cookie))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

/// Frame conversions between the client side (axum) and the upstream side (tungstenite):
/// payloads are shared `Bytes`, never copied; text is re-checked as UTF-8 (it already is).
pub(crate) mod convert {
    use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
    use tokio_tungstenite::tungstenite::protocol::CloseFrame as UpCloseFrame;
    use tokio_tungstenite::tungstenite::{Bytes, Message as UpMessage, Utf8Bytes as UpUtf8};

    fn up_text(t: Utf8Bytes) -> UpUtf8 {
        UpUtf8::try_from(Bytes::from(t)).unwrap_or_default()
    }
    fn client_text(t: UpUtf8) -> Utf8Bytes {
        Utf8Bytes::try_from(Bytes::from(t)).unwrap_or_default()
    }

    pub fn to_upstream_close(f: Option<CloseFrame>) -> Option<UpCloseFrame> {
        f.map(|f| UpCloseFrame {
            code: f.code.into(),
            reason: up_text(f.reason),
        })
    }

    /// One of wsgate's own close reasons, for the upstream.
    pub fn to_upstream_reason(reason: crate::protocol::CloseReason) -> UpCloseFrame {
        UpCloseFrame {
            code: reason.code().into(),
            reason: reason.reason().into(),
        }
    }

    pub fn to_client_close(f: Option<UpCloseFrame>) -> Option<CloseFrame> {
        f.map(|f| CloseFrame {
            code: f.code.into(),
            reason: client_text(f.reason),
        })
    }

    /// A client frame for the upstream (`Close` is handled by the relay, not here).
    pub fn to_upstream(m: Message) -> UpMessage {
        match m {
            Message::Text(t) => UpMessage::Text(up_text(t)),
            Message::Binary(b) => UpMessage::Binary(b),
            Message::Ping(b) => UpMessage::Ping(b),
            Message::Pong(b) => UpMessage::Pong(b),
            Message::Close(f) => UpMessage::Close(to_upstream_close(f)),
        }
    }

    /// An upstream frame for the client; `None` for raw frames (never produced by reads).
    pub fn to_client(m: UpMessage) -> Option<Message> {
        Some(match m {
            UpMessage::Text(t) => Message::Text(client_text(t)),
            UpMessage::Binary(b) => Message::Binary(b),
            UpMessage::Ping(b) => Message::Ping(b),
            UpMessage::Pong(b) => Message::Pong(b),
            UpMessage::Close(f) => Message::Close(to_client_close(f)),
            UpMessage::Frame(_) => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_parameters_never_reach_the_upstream() {
        let u = "ws://up/ws?a=1";
        assert_eq!(with_client_query(u, None, "token"), u);
        assert_eq!(
            with_client_query(u, Some("token=s3cret&room=x%20y&ticket=t&b"), "token"),
            "ws://up/ws?a=1&room=x%20y&b"
        );
        assert_eq!(
            with_client_query("ws://up/ws", Some("access_token=s&x=1"), "access_token"),
            "ws://up/ws?x=1"
        );
        assert_eq!(
            with_client_query("ws://up/ws", Some("%74oken=s"), "token"),
            "ws://up/ws",
            "an encoded name is still the credential"
        );
        assert_eq!(
            with_client_query(
                "ws://up/ws?tenant=acme",
                Some("tenant=evil&%74enant=evil2&room=1"),
                "token"
            ),
            "ws://up/ws?tenant=acme&room=1",
            "the operator's parameters are not the client's to repeat"
        );
    }

    #[test]
    fn subjects_travel_exactly() {
        assert_eq!(
            subject_header_value("alice@example.com"),
            "alice@example.com"
        );
        assert_eq!(subject_header_value("auth0|abc"), "auth0|abc");
        assert_eq!(subject_header_value("admin "), "admin%20");
        assert_eq!(subject_header_value(" admin"), "%20admin");
        assert_eq!(subject_header_value("José Smith"), "Jos%C3%A9%20Smith");
        assert_eq!(subject_header_value("50%"), "50%25", "% itself is encoded");
        assert_eq!(subject_header_value("a\tb\r\n"), "a%09b%0D%0A");
        let decoded = |v: &str| {
            form_urlencoded::parse(format!("s={v}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        for sub in ["admin ", "José Smith", "50%", "a+b", "плохой\u{0}"] {
            let v = subject_header_value(sub);
            assert!(HeaderValue::from_str(&v).is_ok(), "{sub:?}");
            assert_eq!(decoded(&v.replace('+', "%2B")).as_deref(), Some(sub));
        }
    }

    #[test]
    fn the_auth_cookie_is_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; wsgate_session=s3cret; b=2"),
        );
        assert_eq!(other_cookies(&h, "wsgate_session").unwrap(), "a=1; b=2");
        h.insert(header::COOKIE, HeaderValue::from_static("wsgate_session=x"));
        assert!(other_cookies(&h, "wsgate_session").is_none());
    }

    #[test]
    fn upstream_answers_are_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat.v2\r\n\r\n\x81\x02hi";
        let (protocol, start) = read_answer(ok, key).unwrap().unwrap();
        assert_eq!(protocol.as_deref(), Some("chat.v2"));
        assert_eq!(
            &ok[start..],
            b"\x81\x02hi",
            "the frame after the head is kept"
        );
        assert_eq!(read_answer(&ok[..20], key), Ok(None), "incomplete head");
        let wrong_key = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: bm9wZQ==\r\n\r\n";
        assert!(read_answer(wrong_key, key).is_err());
        assert!(read_answer(b"HTTP/1.1 403 Forbidden\r\n\r\n", key).is_err());
        assert!(read_answer(&vec![b'a'; MAX_HEAD + 1], key).is_err());
    }

    #[test]
    fn urls_are_checked() {
        assert!(Upstream::new("ws://127.0.0.1:9/ws", Duration::from_secs(1)).is_ok());
        assert!(Upstream::new("wss://up.example/ws", Duration::from_secs(1)).is_ok());
        for bad in ["http://x/", "ws://", "x", "wss:///p"] {
            assert!(Upstream::new(bad, Duration::from_secs(1)).is_err(), "{bad}");
        }
    }
}
