//! Where a token travels.
//!
//! A WebSocket handshake can carry a credential in several places, because browsers cannot
//! set `Authorization` on a WebSocket: a header for servers and CLIs, a query parameter or a
//! single-use ticket for browsers, a cookie for same-site apps, a subprotocol entry, or the
//! first message after the upgrade. [`Sources`] reads them in the configured order and
//! reports the first one that carries something; which verifier checks it is not its concern.
//!
//! The token itself only ever lives in a [`Credential`], whose `Debug` is redacted, so it
//! cannot end up in a log line by accident.

use std::fmt;
use std::str::FromStr;

use axum::http::{HeaderMap, HeaderValue, header, request::Parts};
use serde::{Deserialize, Serialize};

use crate::reject::AuthError;

/// The subprotocol the server selects when a client offers it (never the token entry).
pub const SUBPROTOCOL: &str = "wsgate.v1";
/// The subprotocol a socket selects when wsgate itself speaks session frames on it
/// (`welcome`, `expiring`, `refreshed`: echo, pubsub, a proxy with `refresh_frames` whose
/// upstream chose no subprotocol). The browser client offers it first and answers `expiring`
/// with a token only on a socket that selected it: on a proxied socket whose frames come from
/// the upstream, an `expiring` is the upstream's (or another user's) and is not answered.
/// Never forwarded to an upstream, and an upstream that selects it anyway is refused.
pub const SESSION_SUBPROTOCOL: &str = "wsgate.session.v1";
/// Prefix of the subprotocol entry that carries a token: `wsgate.bearer.<token>`.
pub const SUBPROTOCOL_TOKEN_PREFIX: &str = "wsgate.bearer.";
/// Query parameter that carries a single-use ticket.
pub const TICKET_PARAM: &str = "ticket";

/// A place a credential may travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// `Authorization: Bearer <token>` or the bare `Authorization: <token>`.
    Bearer,
    /// `?token=<token>` (name configurable).
    Query,
    /// A cookie, only with an allowed `Origin`.
    Cookie,
    /// `Sec-WebSocket-Protocol: wsgate.v1, wsgate.bearer.<token>`.
    Subprotocol,
    /// `?ticket=<ticket>`, single use.
    Ticket,
    /// The first frame after the upgrade: `{"type":"auth","token":"..."}`.
    Message,
}

impl SourceKind {
    /// Every source, in a stable order.
    pub const ALL: [SourceKind; 6] = [
        Self::Bearer,
        Self::Query,
        Self::Cookie,
        Self::Subprotocol,
        Self::Ticket,
        Self::Message,
    ];

    /// The name used in config files, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Query => "query",
            Self::Cookie => "cookie",
            Self::Subprotocol => "subprotocol",
            Self::Ticket => "ticket",
            Self::Message => "message",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown source `{s}` (expected one of: bearer, query, cookie, subprotocol, ticket, message)"
                )
            })
    }
}

/// A credential as found in a request. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    token: String,
    source: SourceKind,
}

impl Credential {
    /// A credential found in `source`.
    pub fn new(token: impl Into<String>, source: SourceKind) -> Self {
        Self {
            token: token.into(),
            source,
        }
    }
    /// The secret itself: hand it to a verifier, never to a log line.
    pub fn token(&self) -> &str {
        &self.token
    }
    /// Where the credential travelled.
    pub fn source(&self) -> SourceKind {
        self.source
    }
}

/// SHA-256 of a token: how a credential is named where the token itself must not be kept
/// (the introspection cache, the table of re-checked sessions).
pub(crate) fn digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(d.as_ref());
    key
}

impl Drop for Credential {
    /// A credential's bytes do not outlive it: one kept for revalidation lives as long as its
    /// session, and its memory is zeroed when the session ends.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("source", &self.source)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Which places to read, in which order, and the names they use.
#[derive(Debug, Clone)]
pub struct Sources {
    order: Vec<SourceKind>,
    query_param: String,
    cookie_name: String,
    allowed_origins: Vec<String>,
}

impl Default for Sources {
    /// `bearer`, `subprotocol`, `ticket`, `query`: the ones safe without further settings.
    fn default() -> Self {
        Self {
            order: vec![
                SourceKind::Bearer,
                SourceKind::Subprotocol,
                SourceKind::Ticket,
                SourceKind::Query,
            ],
            query_param: "token".into(),
            cookie_name: "wsgate_session".into(),
            allowed_origins: Vec::new(),
        }
    }
}

impl Sources {
    /// Reads exactly these places, in this order.
    pub fn new(order: impl IntoIterator<Item = SourceKind>) -> Self {
        Self {
            order: dedup(order),
            ..Self::default()
        }
    }
    /// The query parameter of the `query` source (default `token`).
    pub fn query_param(mut self, name: impl Into<String>) -> Self {
        self.query_param = name.into();
        self
    }
    /// The cookie of the `cookie` source (default `wsgate_session`).
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }
    /// When non-empty, a request whose `Origin` is present and not listed is refused (403),
    /// whatever the source; a cookie credential additionally needs an `Origin` from this list.
    pub fn allowed_origins(mut self, origins: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.allowed_origins = origins
            .into_iter()
            .map(|o| normalize_origin(&o.into()))
            .collect();
        self
    }
    /// The same names and origins with another order (per-endpoint overrides).
    pub fn with_order(&self, order: impl IntoIterator<Item = SourceKind>) -> Self {
        Self {
            order: dedup(order),
            ..self.clone()
        }
    }

    /// The sources, in the order they are read.
    pub fn order(&self) -> &[SourceKind] {
        &self.order
    }
    /// Whether the `message` source is enabled.
    pub fn accepts_message(&self) -> bool {
        self.order.contains(&SourceKind::Message)
    }

    /// Refuses a foreign `Origin` before anything else is looked at, and a request that
    /// names two origins or two `Authorization` values (which one would a proxy in front of
    /// us have checked?).
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        for name in [header::ORIGIN, header::AUTHORIZATION] {
            if headers.get_all(&name).iter().nth(1).is_some() {
                return Err(AuthError::Ambiguous(if name == header::ORIGIN {
                    "two Origin headers"
                } else {
                    "two Authorization headers"
                }));
            }
        }
        match origin(headers) {
            Some(o) if !self.allowed_origins.is_empty() && !self.origin_allowed(o) => {
                Err(AuthError::ForeignOrigin)
            }
            _ => Ok(()),
        }
    }

    /// The first handshake place (in order) that carries a credential. `Ok(None)` means
    /// none did; a cookie without an allowed `Origin` is an error, not a fall-through, and so
    /// is a place that carries two credentials (`Ambiguous`, 400).
    pub fn find(&self, parts: &Parts) -> Result<Option<Credential>, AuthError> {
        for &kind in &self.order {
            let token = match kind {
                SourceKind::Bearer => bearer(&parts.headers),
                SourceKind::Query => query_value(parts.uri.query(), &self.query_param)?,
                SourceKind::Ticket => query_value(parts.uri.query(), TICKET_PARAM)?,
                SourceKind::Subprotocol => subprotocol(&parts.headers)?,
                SourceKind::Cookie => {
                    let found = cookie(&parts.headers, &self.cookie_name)?;
                    if found.is_some() {
                        self.check_cookie_origin(&parts.headers)?;
                    }
                    found
                }
                SourceKind::Message => None,
            };
            if let Some(token) = token.filter(|t| !t.is_empty()) {
                return Ok(Some(Credential::new(token, kind)));
            }
        }
        Ok(None)
    }

    /// The query parameter that carries a token (`auth.query_param`).
    pub fn query_param_name(&self) -> &str {
        &self.query_param
    }
    /// The cookie that carries a token (`auth.cookie_name`).
    pub fn cookie_name_ref(&self) -> &str {
        &self.cookie_name
    }

    /// Cross-site WebSocket hijacking: a browser attaches cookies to a WebSocket opened by
    /// any page, so a cookie only counts when the page's `Origin` is one we trust.
    fn check_cookie_origin(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        match origin(headers) {
            Some(o) if self.origin_allowed(o) => Ok(()),
            _ => Err(AuthError::CookieOrigin),
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let origin = normalize_origin(origin);
        self.allowed_origins.contains(&origin)
    }
}

fn dedup(order: impl IntoIterator<Item = SourceKind>) -> Vec<SourceKind> {
    let mut out = Vec::new();
    for k in order {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

fn normalize_origin(o: &str) -> String {
    o.trim().trim_end_matches('/').to_ascii_lowercase()
}

fn header_str(v: &HeaderValue) -> Option<&str> {
    v.to_str().ok().map(str::trim)
}

fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(header_str)
}

/// `Authorization: Bearer <t>` (scheme case-insensitive) or the seed's bare `Authorization: <t>`.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION).and_then(header_str)?;
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        // `Bearer` with nothing after it carries no credential.
        None if value.eq_ignore_ascii_case("bearer") => "",
        _ => value,
    };
    Some(token.to_owned())
}

/// At most one of something, or `Ambiguous`.
fn at_most_one<T>(
    mut items: impl Iterator<Item = T>,
    what: &'static str,
) -> Result<Option<T>, AuthError> {
    let first = items.next();
    match items.next() {
        Some(_) => Err(AuthError::Ambiguous(what)),
        None => Ok(first),
    }
}

fn query_value(query: Option<&str>, name: &str) -> Result<Option<String>, AuthError> {
    let Some(query) = query else { return Ok(None) };
    at_most_one(
        form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned()),
        "a credential parameter appears twice",
    )
}

fn cookie(headers: &HeaderMap, name: &str) -> Result<Option<String>, AuthError> {
    at_most_one(
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(header_str)
            .flat_map(|h| h.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().trim_matches('"').to_owned()),
        "the credential cookie appears twice",
    )
}

fn subprotocol(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    at_most_one(
        headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(header_str)
            .flat_map(|h| h.split(','))
            .filter_map(|p| p.trim().strip_prefix(SUBPROTOCOL_TOKEN_PREFIX))
            .map(str::to_owned),
        "two wsgate.bearer subprotocol entries",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut req = Request::builder().uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    fn all() -> Sources {
        Sources::new(SourceKind::ALL).allowed_origins(["http://app.example"])
    }

    fn found(s: &Sources, p: &Parts) -> Option<(String, SourceKind)> {
        s.find(p)
            .unwrap()
            .map(|c| (c.token().to_owned(), c.source()))
    }

    #[test]
    fn bearer_forms() {
        let s = Sources::default();
        for h in ["Bearer abc", "bearer abc", "BEARER  abc ", "abc"] {
            let p = parts("/", &[("authorization", h)]);
            assert_eq!(
                found(&s, &p),
                Some(("abc".into(), SourceKind::Bearer)),
                "{h}"
            );
        }
        assert_eq!(
            found(&s, &parts("/", &[("authorization", "Bearer ")])),
            None
        );
    }

    #[test]
    fn query_is_percent_decoded_and_named() {
        let s = Sources::default().query_param("access_token");
        let p = parts("/ws?x=1&access_token=a%2Bb.c", &[]);
        assert_eq!(found(&s, &p), Some(("a+b.c".into(), SourceKind::Query)));
        assert_eq!(found(&s, &parts("/ws?token=x", &[])), None);
    }

    #[test]
    fn subprotocol_entry_carries_the_token() {
        let s = Sources::default();
        let p = parts(
            "/",
            &[("sec-websocket-protocol", "wsgate.v1, wsgate.bearer.t0k")],
        );
        assert_eq!(found(&s, &p), Some(("t0k".into(), SourceKind::Subprotocol)));
    }

    #[test]
    fn order_decides_and_first_carrier_wins() {
        let s = Sources::new([SourceKind::Query, SourceKind::Bearer]);
        let p = parts("/?token=q", &[("authorization", "Bearer b")]);
        assert_eq!(found(&s, &p), Some(("q".into(), SourceKind::Query)));
        let s = Sources::new([SourceKind::Bearer, SourceKind::Query]);
        assert_eq!(found(&s, &p), Some(("b".into(), SourceKind::Bearer)));
    }

    #[test]
    fn ticket_is_its_own_parameter() {
        let p = parts("/?ticket=tk", &[]);
        assert_eq!(
            found(&Sources::default(), &p),
            Some(("tk".into(), SourceKind::Ticket))
        );
    }

    #[test]
    fn cookie_needs_an_allowed_origin() {
        let s = all();
        let cookie = ("cookie", "a=1; wsgate_session=\"c\"; b=2");
        let ok = parts("/", &[cookie, ("origin", "http://APP.example/")]);
        assert_eq!(found(&s, &ok), Some(("c".into(), SourceKind::Cookie)));
        let foreign = parts("/", &[cookie, ("origin", "http://evil.example")]);
        assert!(matches!(s.find(&foreign), Err(AuthError::CookieOrigin)));
        let none = parts("/", &[cookie]);
        assert!(matches!(s.find(&none), Err(AuthError::CookieOrigin)));
    }

    #[test]
    fn foreign_origin_is_refused_whatever_the_source() {
        let s = all();
        let p = parts("/", &[("origin", "http://evil.example")]);
        assert!(matches!(
            s.check_origin(&p.headers),
            Err(AuthError::ForeignOrigin)
        ));
        assert!(s.check_origin(&parts("/", &[]).headers).is_ok());
        assert!(Sources::default().check_origin(&p.headers).is_ok());
    }

    #[test]
    fn two_credentials_in_one_place_are_ambiguous() {
        let s = all();
        for p in [
            parts("/?token=a&token=b", &[]),
            parts("/?ticket=a&ticket=b", &[]),
            parts(
                "/",
                &[("sec-websocket-protocol", "wsgate.bearer.a, wsgate.bearer.b")],
            ),
            parts(
                "/",
                &[
                    ("cookie", "wsgate_session=a; wsgate_session=b"),
                    ("origin", "http://app.example"),
                ],
            ),
        ] {
            assert!(
                matches!(s.find(&p), Err(AuthError::Ambiguous(_))),
                "{:?}",
                p.uri
            );
        }
        let two = parts(
            "/",
            &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
        );
        assert!(matches!(
            s.check_origin(&two.headers),
            Err(AuthError::Ambiguous(_))
        ));
        let two = parts(
            "/",
            &[
                ("origin", "http://app.example"),
                ("origin", "http://x.example"),
            ],
        );
        assert!(matches!(
            s.check_origin(&two.headers),
            Err(AuthError::Ambiguous(_))
        ));
    }

    #[test]
    fn debug_redacts() {
        let c = Credential::new("s3cret", SourceKind::Query);
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn parse_kinds() {
        for k in SourceKind::ALL {
            assert_eq!(k.as_str().parse::<SourceKind>(), Ok(k));
        }
        assert!("header".parse::<SourceKind>().is_err());
    }
}
