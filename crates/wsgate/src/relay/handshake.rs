//! The upstream's handshake as wsgate writes and reads it: the request head (which of the
//! client's headers, cookies, query parameters and subprotocols go on, the identity headers,
//! the forwarding and trace headers — never a credential) and the bounded reading of the
//! upstream's `101`.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, header, request::Parts};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{CLAIMS_HEADER, PROVIDER_HEADER, SESSION_HEADER, SUB_HEADER};
use crate::identity::Identity;
use crate::reject::GatewayError;
use crate::source::{
    SESSION_SUBPROTOCOL, SUBPROTOCOL, SUBPROTOCOL_TOKEN_PREFIX, Sources, TICKET_PARAM,
};
use crate::trace::{TRACEPARENT, TRACESTATE, TraceContext};

/// What an upstream request is made from: the client's request, who it is, where its
/// credential travelled (never passed on), and the dial's trace context when traced.
#[derive(Clone, Copy)]
pub(super) struct Caller<'a> {
    pub(super) parts: &'a Parts,
    pub(super) identity: &'a Identity,
    pub(super) sources: &'a Sources,
    pub(super) trace: Option<&'a TraceContext>,
}

/// Client headers passed on as sent.
const PASSED: [HeaderName; 3] = [header::ORIGIN, header::USER_AGENT, header::ACCEPT_LANGUAGE];

/// The `GET … Upgrade: websocket` head the upstream receives for `caller`, asking for
/// `protocols` with `key`. Written straight into the bytes sent: this runs once per proxied
/// handshake, and a header map built only to be written out again cost a tenth of one.
pub(super) fn request_head(
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
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or("", |a| a.as_str());
    let mut head = Head(Vec::with_capacity(1024));
    head.line(&["GET ", target, " HTTP/1.1"]);
    head.header("Host", authority.as_bytes());
    head.header("Connection", b"Upgrade");
    head.header("Upgrade", b"websocket");
    head.header("Sec-WebSocket-Version", b"13");
    head.header("Sec-WebSocket-Key", key.as_bytes());

    // The identity: what the upstream trusts, so each value must travel exactly or not at
    // all. The claims are sent as wsgate read them (parsed and written out again, so an
    // upstream never sees a duplicated name wsgate read differently), without keeping the
    // parsed copy on the connection.
    let claims =
        identity.inspect_claims(|c| serde_json::to_vec(c).unwrap_or_else(|_| b"null".to_vec()));
    let identity_headers = [
        (
            SUB_HEADER,
            subject_header_value(identity.sub()).into_bytes(),
        ),
        (SESSION_HEADER, identity.session().as_bytes().to_vec()),
        (CLAIMS_HEADER, URL_SAFE_NO_PAD.encode(claims).into_bytes()),
        (PROVIDER_HEADER, identity.provider().as_bytes().to_vec()),
    ];
    for (name, value) in &identity_headers {
        if !sendable(value) {
            return Err(GatewayError::Unreachable("identity not sendable"));
        }
        head.header(name, value);
    }
    for name in PASSED {
        for v in parts.headers.get_all(&name) {
            head.header(name.as_str(), v.as_bytes());
        }
    }
    // The trace context: the dial's own when traced, else the client's passed on as sent
    // (a transparent hop).
    match trace {
        Some(own) => head.header(TRACEPARENT, own.traceparent().as_bytes()),
        None => {
            if let Some(v) = parts.headers.get(TRACEPARENT) {
                head.header(TRACEPARENT, v.as_bytes());
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
        head.header(TRACESTATE, v.as_bytes());
    }
    // `X-Forwarded-For`: what the client sent, with the client's own address appended.
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let sent = list_items(
        &parts.headers,
        HeaderName::from_static("x-forwarded-for"),
        ',',
    );
    head.list("x-forwarded-for", ", ", sent.chain(peer.as_deref()));
    head.header("x-forwarded-proto", b"http");
    head.list(
        "cookie",
        "; ",
        other_cookies(&parts.headers, sources.cookie_name_ref()),
    );
    head.list("sec-websocket-protocol", ", ", protocols.iter().copied());
    head.0.extend_from_slice(b"\r\n");
    Ok(head.0)
}

/// A request head being written.
struct Head(Vec<u8>);

impl Head {
    fn line(&mut self, parts: &[&str]) {
        for part in parts {
            self.0.extend_from_slice(part.as_bytes());
        }
        self.0.extend_from_slice(b"\r\n");
    }

    /// `name: value`; `value` is a client's header value (hyper checked it) or one checked
    /// with [`sendable`].
    fn header(&mut self, name: &str, value: &[u8]) {
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value);
        self.0.extend_from_slice(b"\r\n");
    }

    /// One header listing `items` joined by `sep`; none when there are no items.
    fn list<'a>(&mut self, name: &str, sep: &str, items: impl IntoIterator<Item = &'a str>) {
        let mut items = items.into_iter().peekable();
        if items.peek().is_none() {
            return;
        }
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b": ");
        for (i, item) in items.enumerate() {
            if i > 0 {
                self.0.extend_from_slice(sep.as_bytes());
            }
            self.0.extend_from_slice(item.as_bytes());
        }
        self.0.extend_from_slice(b"\r\n");
    }
}

/// Whether `value` can be a header value as it is (what `HeaderValue::from_bytes` takes:
/// no control character but tab, no DEL), so no value can end a line or the head early.
fn sendable(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
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
pub(super) fn upstream_protocols(headers: &HeaderMap) -> Vec<&str> {
    offered(headers)
        .filter(|p| {
            *p != SUBPROTOCOL
                && *p != SESSION_SUBPROTOCOL
                && !p.starts_with(SUBPROTOCOL_TOKEN_PREFIX)
        })
        .collect()
}

/// The subprotocols a client offered, in order.
pub(super) fn offered(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    list_items(headers, header::SEC_WEBSOCKET_PROTOCOL, ',')
}

/// The items of a header that may repeat and lists its values with `sep` (every line,
/// split, trimmed, empty items left out; a value that is not text is skipped).
fn list_items(headers: &HeaderMap, name: HeaderName, sep: char) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(move |v| v.split(sep))
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// The upstream URL followed by the client's query parameters, minus the credential ones
/// (`auth.query_param` and `ticket`), wsgate's own `wsgate_attempt`, and any the operator's URL sets itself (a client
/// must not add a second `tenant` to `?tenant=acme`: backends differ on which one wins), kept
/// as sent (encoding included).
pub(super) fn with_client_query(
    upstream: &str,
    client_query: Option<&str>,
    token_param: &str,
) -> String {
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

/// The client's cookies without the one that carries the credential.
fn other_cookies<'a>(
    headers: &'a HeaderMap,
    auth_cookie: &'a str,
) -> impl Iterator<Item = &'a str> {
    list_items(headers, header::COOKIE, ';')
        .filter(move |pair| pair.split('=').next().map(str::trim) != Some(auth_cookie))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

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
    fn the_head_carries_identity_and_passed_headers_and_no_credential() {
        use crate::identity::{Claims, Verified};
        use crate::source::SourceKind;
        let raw = serde_json::value::RawValue::from_string(
            r#"{"sub":"alice","role":"x","role":"admin"}"#.to_owned(),
        )
        .unwrap();
        let identity = Identity::new(
            Verified {
                sub: "al ice".into(),
                claims: Claims::raw(raw),
                ..Default::default()
            },
            SourceKind::Cookie,
            "jwt",
        );
        let mut req = axum::http::Request::get("/ws?room=1")
            .header(header::ORIGIN, "https://app.example")
            .header(header::COOKIE, "a=1; wsgate_session=s3cret")
            .header(header::COOKIE, "b=2")
            .header("x-forwarded-for", "10.0.0.1, 10.0.0.2")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 9], 4000))));
        let (parts, ()) = req.into_parts();
        let sources = Sources::default();
        let caller = Caller {
            parts: &parts,
            identity: &identity,
            sources: &sources,
            trace: None,
        };
        let uri: axum::http::Uri = "ws://up:9000/ws?room=1".parse().unwrap();
        let head = request_head(&uri, "a2V5", &caller, &["chat.v2", "chat.v1"]).unwrap();

        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        let len = parsed.parse(&head).unwrap();
        assert_eq!(
            len,
            httparse::Status::Complete(head.len()),
            "one complete head"
        );
        assert_eq!(parsed.path, Some("/ws?room=1"));
        let get = |name: &str| -> Vec<&str> {
            parsed
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| std::str::from_utf8(h.value).unwrap())
                .collect()
        };
        assert_eq!(get("host"), ["up:9000"]);
        assert_eq!(get("sec-websocket-key"), ["a2V5"]);
        assert_eq!(get(SUB_HEADER), ["al%20ice"]);
        assert_eq!(get(SESSION_HEADER), [identity.session()]);
        assert_eq!(get("origin"), ["https://app.example"]);
        assert_eq!(
            get("cookie"),
            ["a=1; b=2"],
            "the credential cookie stays here"
        );
        assert_eq!(get("x-forwarded-for"), ["10.0.0.1, 10.0.0.2, 127.0.0.9"]);
        assert_eq!(get("sec-websocket-protocol"), ["chat.v2, chat.v1"]);
        assert!(!String::from_utf8_lossy(&head).contains("s3cret"));
        // The claims as wsgate read them (a repeated name once, as it was read), and no
        // parsed copy left on the connection for writing them.
        let claims = URL_SAFE_NO_PAD.decode(get(CLAIMS_HEADER)[0]).unwrap();
        let text = String::from_utf8(claims).unwrap();
        assert_eq!(text.matches("\"role\"").count(), 1, "{text}");
        let claims: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(claims, serde_json::json!({"sub": "alice", "role": "admin"}));
        assert!(!identity.verified().claims.is_parsed());
    }

    #[test]
    fn header_values_that_could_end_a_line_are_not_sendable() {
        assert!(sendable(b"jwt"));
        assert!(sendable(b"a\tb \x80"));
        for bad in [&b"a\r\nx: y"[..], b"a\nb", b"\0", b"\x7f"] {
            assert!(!sendable(bad), "{bad:?}");
        }
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
        fn kept(h: &HeaderMap) -> Vec<&str> {
            other_cookies(h, "wsgate_session").collect()
        }
        assert_eq!(kept(&h), ["a=1", "b=2"]);
        h.insert(header::COOKIE, HeaderValue::from_static("wsgate_session=x"));
        assert!(kept(&h).is_empty());
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
}
