//! JSON Web Key Sets: where the public keys of an identity provider come from (a file, or a
//! URL fetched with [`reqwest`] under the `remote` feature) and the cache that serves them by
//! `kid`.
//!
//! Every key is pinned to one algorithm; `oct` (HMAC) and encryption keys are dropped, since
//! an HMAC key from the network would let its publisher mint tokens. Unknown `kid`s trigger
//! at most one refetch per [`JwksCache::MIN_REFETCH`], single-flight and time-bounded, so a
//! kid-spraying client cannot turn the gateway into a load generator against the identity
//! provider. A JWKS URL must be `https://` (or `http://` to a loopback host).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// Where a JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS file, read at start and on unknown `kid`s.
    File(PathBuf),
    /// `https://`, or `http://` to a loopback host only.
    Url(String),
}

impl JwksSource {
    /// Checks the scheme rule: a JWKS fetched in clear text could be swapped on the way.
    /// The URL is read by a real URL parser (WHATWG rules, as reqwest reads it), so the host
    /// checked here is the host fetched.
    pub fn url(url: &str) -> Result<Self, JwksError> {
        check_remote_url(url).map_err(JwksError::BadUrl)?;
        Ok(Self::Url(url.to_owned()))
    }
}

/// The rule for every address wsgate sends a secret to or takes keys from (a JWKS, an
/// introspection endpoint, a Shared Signals poll, a signed webhook): https, or plain http to
/// a loopback host only, since anything in clear text could be read or swapped on the way.
/// The URL is read by a real URL parser (WHATWG rules, as reqwest reads it), so the host
/// checked here is the host contacted. `Err` is a sentence naming the URL.
pub fn check_remote_url(url: &str) -> Result<(), String> {
    let parsed =
        url::Url::parse(url).map_err(|e| format!("`{url}` is not an absolute URL: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" if parsed.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "`{url}` must use https:// (plain http is only allowed to a loopback host)"
        )),
        _ => Err(format!("`{url}` must be an https:// URL")),
    }
}

/// Why a JWKS could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not a usable URL.
    #[error("{0}")]
    BadUrl(String),
    /// The JWKS file could not be read.
    #[error("reading {path}: {err}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        err: std::io::Error,
    },
    /// The fetch failed (status or transport).
    #[error("fetching the JWKS: {0}")]
    Fetch(String),
    /// The document is not a JWKS.
    #[error("the JWKS is not valid JSON of the form {{\"keys\": [...]}}: {0}")]
    Parse(String),
    /// No key fits the configured algorithms.
    #[error("the JWKS has no usable signing key for the configured algorithms")]
    NoUsableKey,
}

/// One JWKS key, pinned to one algorithm.
pub struct JwksKey {
    /// The key id (`kid`).
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    pub alg: Algorithm,
    pub(super) key: DecodingKey,
}

pub(super) struct KeySet {
    pub(super) keys: Vec<Arc<JwksKey>>,
    fetched_at: Option<Instant>,
}

/// A JWKS kept in memory: lock-free reads on the handshake path, refetched when an unknown
/// `kid` shows up (rate-limited) and, for URLs, when it is older than [`Self::MAX_AGE`].
pub struct JwksCache {
    source: JwksSource,
    allowed: Vec<Algorithm>,
    set: ArcSwap<KeySet>,
    /// Held for the whole fetch: concurrent misses wait for the one fetch in flight.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    #[cfg(feature = "remote")]
    client: reqwest::Client,
}

impl JwksCache {
    /// At most one refetch for unknown `kid`s in this interval.
    pub const MIN_REFETCH: Duration = Duration::from_secs(10);
    /// A URL-sourced set older than this is refreshed in the background on next use.
    pub const MAX_AGE: Duration = Duration::from_secs(600);
    #[cfg(feature = "remote")]
    const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
    #[cfg(feature = "remote")]
    const MAX_BYTES: usize = 1024 * 1024;

    /// An empty cache; call [`Self::refresh`] to load it (keys can also arrive on first use).
    pub fn new(source: JwksSource, allowed: &[Algorithm]) -> Self {
        Self {
            source,
            allowed: allowed.to_vec(),
            set: ArcSwap::from_pointee(KeySet {
                keys: Vec::new(),
                fetched_at: None,
            }),
            last_fetch: tokio::sync::Mutex::new(None),
            #[cfg(feature = "remote")]
            client: reqwest::Client::builder()
                .timeout(Self::FETCH_TIMEOUT)
                .connect_timeout(Self::FETCH_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }

    /// Fetches and installs the set now; returns how many keys are usable.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_store().await
    }

    /// Number of usable keys held now.
    pub fn len(&self) -> usize {
        self.set.load().keys.len()
    }
    /// Whether there is nothing here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.set.load()
    }

    fn lookup(&self, kid: &str) -> Option<Arc<JwksKey>> {
        self.current()
            .keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .cloned()
    }

    pub(super) async fn find(&self, kid: &str) -> Option<Arc<JwksKey>> {
        if let Some(k) = self.lookup(kid) {
            if self.is_stale() {
                // Serve the key we have; the next miss or stale check picks up the new set.
                self.refetch_limited().await;
            }
            return Some(k);
        }
        self.refetch_limited().await;
        self.lookup(kid)
    }

    fn is_stale(&self) -> bool {
        matches!(self.source, JwksSource::Url(_))
            && self
                .current()
                .fetched_at
                .is_none_or(|t| t.elapsed() > Self::MAX_AGE)
    }

    async fn refetch_limited(&self) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < Self::MIN_REFETCH) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch_and_store().await {
            tracing::warn!(target: "wsgate::jwks", error = %e, "JWKS refresh failed; keeping the previous keys");
        }
    }

    async fn fetch_and_store(&self) -> Result<usize, JwksError> {
        let bytes = self.fetch().await?;
        let keys = parse_jwks(&bytes, &self.allowed)?;
        let n = keys.len();
        self.set.store(Arc::new(KeySet {
            keys,
            fetched_at: Some(Instant::now()),
        }));
        tracing::info!(target: "wsgate::jwks", keys = n, "JWKS loaded");
        Ok(n)
    }

    async fn fetch(&self) -> Result<Vec<u8>, JwksError> {
        match &self.source {
            JwksSource::File(path) => tokio::fs::read(path).await.map_err(|err| JwksError::Read {
                path: path.display().to_string(),
                err,
            }),
            #[cfg(feature = "remote")]
            JwksSource::Url(url) => {
                let mut res = self
                    .client
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| JwksError::Fetch(e.without_url().to_string()))?;
                if !res.status().is_success() {
                    return Err(JwksError::Fetch(format!("HTTP {}", res.status())));
                }
                let mut body = Vec::new();
                while let Some(chunk) = res
                    .chunk()
                    .await
                    .map_err(|e| JwksError::Fetch(e.without_url().to_string()))?
                {
                    body.extend_from_slice(&chunk);
                    if body.len() > Self::MAX_BYTES {
                        return Err(JwksError::Fetch("response larger than 1 MiB".into()));
                    }
                }
                Ok(body)
            }
            #[cfg(not(feature = "remote"))]
            JwksSource::Url(_) => Err(JwksError::Fetch(
                "wsgate was built without the `remote` feature".into(),
            )),
        }
    }
}

/// Parses a JWKS, keeping only signing keys of an allowed algorithm, each pinned to one
/// algorithm. Keys this cannot use are skipped, not fatal: a provider may publish more than
/// we need.
fn parse_jwks(bytes: &[u8], allowed: &[Algorithm]) -> Result<Vec<Arc<JwksKey>>, JwksError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        keys: Vec<Value>,
    }
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| JwksError::Parse(e.to_string()))?;
    let keys: Vec<Arc<JwksKey>> = raw
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(|jwk| usable_key(&jwk, allowed))
        .map(Arc::new)
        .collect();
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(keys)
}

fn usable_key(jwk: &Jwk, allowed: &[Algorithm]) -> Option<JwksKey> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let inferred = match &jwk.algorithm {
        // HMAC keys never come from a key set: a public document cannot hold a shared secret.
        AlgorithmParameters::OctetKey(_) => return None,
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(p) => {
            (p.curve == EllipticCurve::Ed25519).then_some(Algorithm::EdDSA)
        }
        _ => None,
    };
    let alg = match jwk.common.key_algorithm {
        Some(a) => Algorithm::try_from(a).ok()?,
        None => inferred?,
    };
    if !allowed.contains(&alg) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    (key.family() == alg.family()).then(|| JwksKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jwks_url_rules() {
        assert!(JwksSource::url("https://idp.example/jwks").is_ok());
        assert!(JwksSource::url("http://127.0.0.1:9/jwks").is_ok());
        assert!(JwksSource::url("http://[::1]:9/jwks").is_ok());
        assert!(JwksSource::url("http://localhost/jwks").is_ok());
        assert!(JwksSource::url("http://idp.example/jwks").is_err());
        assert!(JwksSource::url("http://127.0.0.1.evil.example/jwks").is_err());
        assert!(JwksSource::url("ftp://x/jwks").is_err());
        assert!(JwksSource::url("jwks.json").is_err());
        assert!(JwksSource::url("HTTPS://IDP.example/jwks").is_ok());
        // The host a URL parser (and so reqwest) fetches is the host checked: a backslash is
        // a path separator in http URLs, so this goes to evil.example, not to localhost.
        assert!(JwksSource::url("http://evil.example\\@localhost/jwks").is_err());
        assert!(JwksSource::url("http://localhost@evil.example/jwks").is_err());
        assert!(
            JwksSource::url("http://127.1/jwks").is_ok(),
            "127.0.0.1 in short form"
        );
    }

    #[test]
    fn jwks_drops_hmac_and_encryption_keys() {
        let set = json!({"keys": [
            {"kty":"oct","k":"c2VjcmV0","kid":"h","alg":"HS256"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"e","use":"enc"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"s"}
        ]});
        let keys = parse_jwks(
            set.to_string().as_bytes(),
            &[Algorithm::HS256, Algorithm::EdDSA],
        )
        .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("s"));
        assert_eq!(keys[0].alg, Algorithm::EdDSA);
        assert!(matches!(
            parse_jwks(b"{\"keys\":[]}", &[Algorithm::EdDSA]),
            Err(JwksError::NoUsableKey)
        ));
    }
}
