//! Opaque access tokens (RFC 7662 token introspection): tokens only the identity
//! provider can check (Okta, Ping, Keycloak, Ory issue them).
//!
//! The token is POSTed as `token=…&token_type_hint=access_token`
//! (`application/x-www-form-urlencoded`) with HTTP Basic `client_id:client_secret` (each
//! form-encoded first, RFC 6749 §2.3.1). `"active": true` is the identity, read through the
//! provider's claim mapping (`exp` sets the deadline); `"active": false` is 401; no answer
//! within the timeout, or anything but a 200 with a JSON object, is 503 — the client is not
//! told its token is bad when the IdP could not say.
//!
//! An active answer is reused for the same token for at most the cache period, never past
//! the token's `exp`: one IdP call per token per period, never one per handshake. The cache
//! is keyed by a SHA-256 of the token (the token itself is kept nowhere) and holds at most
//! [`Introspection::MAX_CACHED`] answers. No token appears in a log line, metric or error.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::claims::ClaimMap;
use super::jwt::verified_from_claims;
use super::{BodyError, VerifyError, now_unix, read_bounded};
use crate::identity::Verified;

/// Where and how to introspect.
#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    /// The RFC 7662 endpoint (https, or http to a loopback host).
    pub url: String,
    /// This client's id at the IdP.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// How long an active answer is reused (never past the token's `exp`).
    pub cache_for: Duration,
    /// How long the IdP may take to answer.
    pub timeout: Duration,
    /// Where the answer carries the subject and the channel patterns.
    pub claims: ClaimMap,
}

/// Introspects opaque tokens, with a bounded cache of active answers.
pub struct Introspection {
    config: IntrospectionConfig,
    client: reqwest::Client,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    answers: HashMap<[u8; 32], (Verified, Instant)>,
    /// Keys in insertion order: the front is evicted first when the cache is full.
    order: VecDeque<[u8; 32]>,
}

/// Largest answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

impl Introspection {
    /// Answers kept at most (each ~1 KiB with its claims).
    pub const MAX_CACHED: usize = 10_000;

    /// An introspector for `config`; `Err` when the URL breaks the https-or-loopback rule.
    pub fn new(config: IntrospectionConfig) -> Result<Self, super::JwksError> {
        super::JwksSource::url(&config.url)?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| super::JwksError::BadUrl(e.to_string()))?;
        Ok(Self {
            config,
            client,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// The identity an active token stands for (from the cache when it has a fresh answer,
    /// unless `fresh`: a live session's re-check asks the IdP itself).
    pub async fn introspect(&self, token: &str, fresh: bool) -> Result<Verified, VerifyError> {
        let key = crate::source::digest(token);
        if !fresh && let Some(v) = self.cached(&key) {
            return Ok(v);
        }
        let answer = match self.ask(token).await {
            Ok(body) => parse_answer(&body, &self.config.claims),
            Err(e) => Err(e),
        };
        crate::metrics::introspected(match &answer {
            Ok(Some(_)) => "active",
            Ok(None) | Err(VerifyError::Invalid(_)) => "inactive",
            Err(_) => "unavailable",
        });
        let verified = answer?.ok_or(VerifyError::Invalid("token not active"))?;
        let now = now_unix();
        if verified.expires_at.is_some_and(|exp| exp <= now) {
            return Err(VerifyError::Invalid("token expired"));
        }
        let keep = verified.expires_at.map_or(self.config.cache_for, |exp| {
            self.config.cache_for.min(Duration::from_secs(exp - now))
        });
        if !keep.is_zero() {
            self.remember(key, verified.clone(), Instant::now() + keep);
        }
        Ok(verified)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Verified> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .answers
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone())
    }

    fn remember(&self, key: [u8; 32], verified: Verified, until: Instant) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.answers.len() >= Self::MAX_CACHED {
            let now = Instant::now();
            cache.answers.retain(|_, (_, until)| *until > now);
            let Cache { answers, order } = &mut *cache;
            order.retain(|k| answers.contains_key(k));
            while cache.answers.len() >= Self::MAX_CACHED {
                let Some(oldest) = cache.order.pop_front() else {
                    break;
                };
                cache.answers.remove(&oldest);
            }
        }
        if cache.answers.insert(key, (verified, until)).is_none() {
            cache.order.push_back(key);
        }
    }

    /// Answers held now (tests, metrics).
    pub fn cached_len(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .answers
            .len()
    }

    async fn ask(&self, token: &str) -> Result<Vec<u8>, VerifyError> {
        const SILENT: VerifyError =
            VerifyError::Unavailable("the introspection endpoint did not answer");
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let res = self
            .client
            .post(&self.config.url)
            .basic_auth(
                encode(&self.config.client_id),
                Some(encode(&self.config.client_secret)),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(target: "wsgate::introspection", error = %e.without_url(), "introspection failed");
                SILENT
            })?;
        if res.status() != reqwest::StatusCode::OK {
            tracing::warn!(target: "wsgate::introspection", status = %res.status(), "introspection refused");
            return Err(VerifyError::Unavailable(
                "the introspection endpoint refused the request",
            ));
        }
        read_bounded(res, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => VerifyError::Unavailable("introspection answer too large"),
                BodyError::Failed(_) => SILENT,
            })
    }
}

/// An introspection answer: `Ok(None)` for `"active": false` (or no `active` at all: RFC
/// 7662 §2.2 makes it required, and only `true` means active), the identity for an active
/// one, `Unavailable` for something that is not a JSON object. Public for the fuzzers.
#[doc(hidden)]
pub fn parse_answer(body: &[u8], claims: &ClaimMap) -> Result<Option<Verified>, VerifyError> {
    #[derive(serde::Deserialize)]
    struct Active {
        #[serde(default)]
        active: Option<serde_json::Value>,
    }
    const UNUSABLE: VerifyError = VerifyError::Unavailable("unusable introspection answer");
    let text = std::str::from_utf8(body).map_err(|_| UNUSABLE)?;
    if !text.trim_start().starts_with('{') {
        return Err(UNUSABLE);
    }
    let active: Active = serde_json::from_str(text).map_err(|_| UNUSABLE)?;
    if active.active != Some(serde_json::Value::Bool(true)) {
        return Ok(None);
    }
    let raw = RawValue::from_string(text.to_owned()).map_err(|_| UNUSABLE)?;
    verified_from_claims(raw, claims).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_strictly() {
        let map = ClaimMap::default();
        let active = br#"{"active":true,"sub":"u","exp":4102444800,"scope":"a b","client_id":"c"}"#;
        let v = parse_answer(active, &map).unwrap().unwrap();
        assert_eq!((v.sub.as_str(), v.expires_at), ("u", Some(4_102_444_800)));
        assert_eq!(v.scopes, ["a", "b"]);
        for inactive in [
            &br#"{"active":false,"sub":"u"}"#[..],
            br#"{"active":"true","sub":"u"}"#,
            br#"{"sub":"u"}"#,
        ] {
            assert_eq!(parse_answer(inactive, &map), Ok(None));
        }
        for broken in [&b"[]"[..], b"", b"{", b"\xff"] {
            assert!(matches!(
                parse_answer(broken, &map),
                Err(VerifyError::Unavailable(_))
            ));
        }
        assert_eq!(
            parse_answer(br#"{"active":true}"#, &map),
            Err(VerifyError::Invalid("missing sub")),
            "active, but no subject"
        );
    }
}
