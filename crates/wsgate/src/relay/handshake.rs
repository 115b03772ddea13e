//! The upstream's handshake as wsgate writes and reads it: the request head (which of the
//! client's headers, cookies, query parameters and subprotocols go on, the identity headers,
//! the forwarding and trace headers — never a credential) and the bounded reading of the
//! upstream's `101`.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header, request::Parts};
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
/// `protocols` with `key`.
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

/// `X-Forwarded-For`: what the client sent, with the client's own address appended.
fn forwarded_for(parts: &Parts) -> Option<HeaderValue> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let mut list: Vec<String> = list_items(
        &parts.headers,
        HeaderName::from_static("x-forwarded-for"),
        ',',
    )
    .map(str::to_owned)
    .collect();
    list.extend(peer);
    if list.is_empty() {
        return None;
    }
    HeaderValue::from_str(&list.join(", ")).ok()
}

/// The client's cookies without the one that carries the credential.
fn other_cookies(headers: &HeaderMap, auth_cookie: &str) -> Option<HeaderValue> {
    let kept: Vec<&str> = list_items(headers, header::COOKIE, ';')
        .filter(|pair| pair.split('=').next().map(str::trim) != Some(auth_cookie))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
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
}
