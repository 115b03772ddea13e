//! Security Event Tokens (RFC 8417) from an OpenID Shared Signals transmitter: how an
//! identity provider tells wsgate, unasked, that a session was revoked, a credential changed
//! or an account was disabled (CAEP, RISC).
//!
//! A SET is a compact JWS whose header says `typ: secevent+jwt`, signed by a key of the
//! transmitter's key set (a JWKS URL, or `jwks_uri` from `{issuer}/.well-known/
//! ssf-configuration`), with `iss` (the transmitter), `aud` (this receiver), `iat`, `jti` and
//! `events`. The checks are the JWT verifier's — allowlisted asymmetric algorithms, each key
//! pinned to its own, `crit` refused, unknown `kid`s refetched at most once per
//! [`JwksCache::MIN_REFETCH`] — plus `typ`. Refusals carry the RFC 8935 §2.3 error code the
//! push endpoint answers with ([`SetError::code`]).
//!
//! [`parse_events`] reads the payload into plain data: each event's type, its subject (RFC
//! 9493 `sub_id`, or a `subject` member inside the event) in the formats wsgate acts on, and
//! its time. It is pure (and fuzzed).

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation, decode, decode_header, errors::ErrorKind};
use serde_json::Value;

use super::discovery::DiscoveryError;
use super::jwks::{JwksCache, JwksSource};
use super::{BodyError, numeric_date, read_bounded};

/// Algorithms a transmitter may sign with: asymmetric only (a shared secret would let anyone
/// who knows it revoke every session).
pub const SET_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Longest SET taken (a push body, a polled entry).
pub const MAX_SET_BYTES: usize = 64 * 1024;
/// Longest `jti` taken.
const MAX_JTI: usize = 256;
/// Events acted on in one SET, at most (others in the same SET are ignored).
const MAX_EVENTS: usize = 16;

/// Why a SET was refused, with its RFC 8935 §2.3 code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// `invalid_request`: not a SET, malformed, missing or wrong members.
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// `invalid_key`: no key of the transmitter verifies it (unknown `kid`, bad signature).
    #[error("{0}")]
    InvalidKey(&'static str),
    /// `invalid_issuer`: not from the configured transmitter.
    #[error("the SET's iss is not the configured transmitter")]
    InvalidIssuer,
    /// `invalid_audience`: not for this receiver.
    #[error("the SET's aud does not name this receiver")]
    InvalidAudience,
    /// The transmitter's keys cannot be had now (discovery or the JWKS failed): ask again.
    #[error("{0}")]
    Unavailable(&'static str),
}

impl SetError {
    /// The RFC 8935 error code (`Unavailable` is not one: the push endpoint answers 503).
    pub fn code(&self) -> &'static str {
        match self {
            SetError::InvalidRequest(_) => "invalid_request",
            SetError::InvalidKey(_) => "invalid_key",
            SetError::InvalidIssuer => "invalid_issuer",
            SetError::InvalidAudience => "invalid_audience",
            SetError::Unavailable(_) => "temporarily_unavailable",
        }
    }
}

/// One verified SET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityEvent {
    /// Its id, unique per transmitter (de-duplicated by the receiver).
    pub jti: String,
    /// When it was issued (unix seconds).
    pub iat: u64,
    /// Its events (at most 16).
    pub events: Vec<Event>,
}

/// One event of a SET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event type URI.
    pub kind: String,
    /// Whom it is about; `None` when it names no subject wsgate can match.
    pub subject: Option<Subject>,
    /// When it happened (`event_timestamp`), if said.
    pub at: Option<u64>,
}

impl Event {
    /// The short name of a type wsgate acts on (`session-revoked`, `credential-change`,
    /// `account-disabled`, `account-purged`, `sessions-revoked`); `None` for any other.
    pub fn acted_on(&self) -> Option<&'static str> {
        const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
        const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
        let (family, name) = if let Some(n) = self.kind.strip_prefix(CAEP) {
            ("caep", n)
        } else if let Some(n) = self.kind.strip_prefix(RISC) {
            ("risc", n)
        } else {
            return None;
        };
        match (family, name) {
            ("caep", "session-revoked") => Some("session-revoked"),
            ("caep", "credential-change") => Some("credential-change"),
            ("risc", "account-disabled") => Some("account-disabled"),
            ("risc", "account-purged") => Some("account-purged"),
            ("risc", "sessions-revoked") => Some("sessions-revoked"),
            _ => None,
        }
    }
}

/// A subject in a format wsgate acts on (RFC 9493).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `iss_sub`: a provider's subject.
    IssSub {
        /// The issuer.
        iss: String,
        /// The subject at that issuer.
        sub: String,
    },
    /// `email`: sessions whose token's `email` claim is this (ASCII case ignored).
    Email(String),
    /// `opaque`: sessions whose subject is this.
    Opaque(String),
    /// `complex` with `session`: only sessions whose token's `sid` claim is this.
    Session(String),
}

/// Where the transmitter's keys come from.
enum Keys {
    Jwks(Arc<JwksCache>),
    /// Found through `{issuer}/.well-known/ssf-configuration` on first use (retried, at most
    /// once per [`JwksCache::MIN_REFETCH`], while it fails).
    Discovered {
        url: String,
        client: reqwest::Client,
        found: tokio::sync::OnceCell<Arc<JwksCache>>,
        last_try: std::sync::Mutex<Option<std::time::Instant>>,
    },
}

/// Verifies SETs from one transmitter for one audience.
pub struct SetVerifier {
    keys: Keys,
    issuer: String,
    audience: String,
}

impl SetVerifier {
    /// SETs from `issuer` for `audience`, signed by a key of the JWKS at `jwks_url`.
    pub fn with_jwks_url(
        issuer: &str,
        audience: &str,
        jwks_url: &str,
    ) -> Result<Self, super::JwksError> {
        let source = JwksSource::url(jwks_url)?;
        Ok(Self {
            keys: Keys::Jwks(Arc::new(JwksCache::new(source, SET_ALGORITHMS))),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// SETs from `issuer` for `audience`, the keys found through the transmitter's
    /// configuration document.
    pub fn discovered(issuer: &str, audience: &str) -> Result<Self, DiscoveryError> {
        let url = format!(
            "{}/.well-known/ssf-configuration",
            issuer.trim_end_matches('/')
        );
        JwksSource::url(&url).map_err(|e| DiscoveryError::BadUrl(format!("issuer: {e}")))?;
        let timeout = Duration::from_secs(5);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DiscoveryError::BadUrl(e.to_string()))?;
        Ok(Self {
            keys: Keys::Discovered {
                url,
                client,
                found: tokio::sync::OnceCell::new(),
                last_try: std::sync::Mutex::new(None),
            },
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// The transmitter it takes SETs from.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    async fn jwks(&self) -> Result<&Arc<JwksCache>, SetError> {
        const DOWN: SetError = SetError::Unavailable("the transmitter's keys cannot be had now");
        match &self.keys {
            Keys::Jwks(cache) => Ok(cache),
            Keys::Discovered {
                url,
                client,
                found,
                last_try,
            } => {
                if let Some(cache) = found.get() {
                    return Ok(cache);
                }
                {
                    let mut last = last_try.lock().unwrap_or_else(|p| p.into_inner());
                    if last.is_some_and(|t| t.elapsed() < JwksCache::MIN_REFETCH) {
                        return Err(DOWN);
                    }
                    *last = Some(std::time::Instant::now());
                }
                found
                    .get_or_try_init(|| async {
                        let jwks_uri = fetch_jwks_uri(client, url).await.map_err(|why| {
                            tracing::warn!(target: "wsgate::ssf", url = %url, why, "Shared Signals discovery failed");
                            DOWN
                        })?;
                        let source = JwksSource::url(&jwks_uri).map_err(|_| DOWN)?;
                        tracing::info!(target: "wsgate::ssf", jwks_uri = %jwks_uri, "Shared Signals discovery: transmitter keys found");
                        Ok(Arc::new(JwksCache::new(source, SET_ALGORITHMS)))
                    })
                    .await
            }
        }
    }

    /// Verifies one SET: header, signature, `iss`, `aud`, `exp` when present, then the payload.
    pub async fn verify(&self, set: &str) -> Result<SecurityEvent, SetError> {
        if set.len() > MAX_SET_BYTES {
            return Err(SetError::InvalidRequest("the SET is too large"));
        }
        let header = decode_header(set).map_err(|_| SetError::InvalidRequest("not a JWS"))?;
        let typ = header.typ.as_deref().unwrap_or_default();
        let typ = typ.strip_prefix("application/").unwrap_or(typ);
        if !typ.eq_ignore_ascii_case("secevent+jwt") {
            return Err(SetError::InvalidRequest(
                "the header's typ is not secevent+jwt",
            ));
        }
        if header.crit.is_some() {
            return Err(SetError::InvalidRequest("unsupported critical header"));
        }
        if !SET_ALGORITHMS.contains(&header.alg) {
            return Err(SetError::InvalidKey("algorithm not allowed"));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or(SetError::InvalidKey("the SET names no key (kid)"))?;
        let key = self
            .jwks()
            .await?
            .find(kid)
            .await
            .ok_or(SetError::InvalidKey("unknown key id"))?;
        if key.alg != header.alg {
            return Err(SetError::InvalidKey("algorithm does not match key"));
        }
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["iss", "aud"]);
        let data = decode::<Value>(set, &key.key, &v).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => SetError::InvalidKey("bad signature"),
            ErrorKind::InvalidIssuer => SetError::InvalidIssuer,
            ErrorKind::InvalidAudience => SetError::InvalidAudience,
            ErrorKind::MissingRequiredClaim(c) if c == "iss" => SetError::InvalidIssuer,
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => SetError::InvalidAudience,
            ErrorKind::ExpiredSignature => SetError::InvalidRequest("the SET expired"),
            _ => SetError::InvalidRequest("malformed SET"),
        })?;
        parse_events(&data.claims)
    }
}

/// `jwks_uri` of a transmitter's configuration document.
async fn fetch_jwks_uri(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let res = client
        .get(url)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if !res.status().is_success() {
        return Err(format!("HTTP {}", res.status()));
    }
    let body = read_bounded(res, 256 * 1024).await.map_err(|e| match e {
        BodyError::TooLarge => "the document is larger than 256 KiB".to_owned(),
        BodyError::Failed(e) => e.without_url().to_string(),
    })?;
    #[derive(serde::Deserialize)]
    struct Doc {
        jwks_uri: String,
    }
    serde_json::from_slice::<Doc>(&body)
        .map(|d| d.jwks_uri)
        .map_err(|_| "the document has no jwks_uri".to_owned())
}

/// How a `jti` is remembered (any length, any characters, a fixed-size key).
pub fn jti_digest(jti: &str) -> [u8; 32] {
    crate::source::digest(jti)
}

/// A verified SET's payload as plain data: `jti` (a non-empty string of at most 256
/// characters), `iat`, and `events` (an object of at most 16 event objects). Public for the
/// fuzzers.
pub fn parse_events(claims: &Value) -> Result<SecurityEvent, SetError> {
    const BAD: fn(&'static str) -> SetError = SetError::InvalidRequest;
    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() && j.len() <= MAX_JTI => j.clone(),
        _ => return Err(BAD("jti must be a string of 1 to 256 characters")),
    };
    let iat = claims
        .get("iat")
        .and_then(numeric_date)
        .ok_or(BAD("iat must be a NumericDate"))?;
    let Some(Value::Object(events)) = claims.get("events") else {
        return Err(BAD("events must be an object"));
    };
    if events.is_empty() {
        return Err(BAD("events is empty"));
    }
    let top = claims.get("sub_id");
    let mut out = Vec::new();
    for (kind, body) in events.iter().take(MAX_EVENTS) {
        let Value::Object(body) = body else {
            return Err(BAD("each event must be an object"));
        };
        let subject = body.get("subject").or(top).and_then(subject);
        let at = body.get("event_timestamp").and_then(numeric_date);
        out.push(Event {
            kind: kind.clone(),
            subject,
            at,
        });
    }
    Ok(SecurityEvent {
        jti,
        iat,
        events: out,
    })
}

/// A subject identifier (RFC 9493) in a format wsgate acts on.
fn subject(v: &Value) -> Option<Subject> {
    let text = |name: &str| match v.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    match v.get("format")?.as_str()? {
        "iss_sub" => Some(Subject::IssSub {
            iss: text("iss")?,
            sub: text("sub")?,
        }),
        "email" => Some(Subject::Email(text("email")?)),
        "opaque" => Some(Subject::Opaque(text("id")?)),
        "complex" => match v.get("session") {
            // The session's own identifier names the token's `sid`.
            Some(s) => match subject(s)? {
                Subject::Opaque(sid) => Some(Subject::Session(sid)),
                _ => None,
            },
            None => v.get("user").and_then(subject),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_are_read_strictly() {
        let set = json!({
            "jti": "j1", "iat": 1000,
            "sub_id": {"format": "iss_sub", "iss": "https://idp", "sub": "u1"},
            "events": {
                "https://schemas.openid.net/secevent/caep/event-type/session-revoked": {"event_timestamp": 990},
                "https://schemas.openid.net/secevent/risc/event-type/account-disabled": {
                    "subject": {"format": "email", "email": "A@x.example"}
                },
                "https://example.com/other": {}
            }
        });
        let e = parse_events(&set).unwrap();
        assert_eq!((e.jti.as_str(), e.iat, e.events.len()), ("j1", 1000, 3));
        let by = |name: &str| e.events.iter().find(|ev| ev.kind.ends_with(name)).unwrap();
        assert_eq!(
            by("session-revoked").subject,
            Some(Subject::IssSub {
                iss: "https://idp".into(),
                sub: "u1".into()
            })
        );
        assert_eq!(by("session-revoked").at, Some(990));
        assert_eq!(by("session-revoked").acted_on(), Some("session-revoked"));
        assert_eq!(
            by("account-disabled").subject,
            Some(Subject::Email("A@x.example".into()))
        );
        assert_eq!(by("other").acted_on(), None);
        let complex = json!({"jti": "j", "iat": 1, "events": {"e": {"subject": {
            "format": "complex",
            "user": {"format": "opaque", "id": "u"},
            "session": {"format": "opaque", "id": "sid-9"}
        }}}});
        assert_eq!(
            parse_events(&complex).unwrap().events[0].subject,
            Some(Subject::Session("sid-9".into()))
        );
        for bad in [
            json!({"iat": 1, "events": {"e": {}}}),
            json!({"jti": "", "iat": 1, "events": {"e": {}}}),
            json!({"jti": "x".repeat(257), "iat": 1, "events": {"e": {}}}),
            json!({"jti": "j", "events": {"e": {}}}),
            json!({"jti": "j", "iat": "1", "events": {"e": {}}}),
            json!({"jti": "j", "iat": 1, "events": {}}),
            json!({"jti": "j", "iat": 1, "events": []}),
            json!({"jti": "j", "iat": 1, "events": {"e": 5}}),
            json!([1, 2]),
        ] {
            assert!(
                matches!(parse_events(&bad), Err(SetError::InvalidRequest(_))),
                "{bad}"
            );
        }
        // A subject in no format wsgate knows is kept as "no subject", not refused.
        let odd = json!({"jti": "j", "iat": 1, "events": {"e": {"subject": {"format": "phone_number", "phone_number": "+1"}}}});
        assert_eq!(parse_events(&odd).unwrap().events[0].subject, None);
    }
}
