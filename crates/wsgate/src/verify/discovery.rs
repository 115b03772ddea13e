//! OpenID Connect discovery: a provider's keys found from its issuer alone.
//!
//! `{issuer}/.well-known/openid-configuration` names the `jwks_uri` (Azure AD keeps its keys
//! on another host than its issuer). The document must name exactly the configured issuer —
//! a discovery document that speaks for someone else is refused — and both URLs follow the
//! JWKS rule: https, or http to a loopback host. Discovery runs when the provider is first
//! needed (the server also tries at start); while it fails, the provider's tokens are answered
//! 503 `unavailable` — never a silent 401 — and it is tried again at most once per
//! [`JwksCache::MIN_REFETCH`], by one caller at a time. Once found, the key set behaves as a
//! configured `jwks_url` (refetch on an unknown `kid`, rate-limited).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::jwks::{JwksCache, JwksError, JwksSource};
use super::jwt::{JwtConfig, JwtVerifier};
use super::{BodyError, VerifyError, read_bounded};

/// Why a provider's keys could not be had through discovery.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The issuer or the `jwks_uri` breaks the URL rule.
    #[error("{0}")]
    BadUrl(String),
    /// The document could not be fetched.
    #[error("fetching {url}: {why}")]
    Fetch {
        /// The discovery URL.
        url: String,
        /// What went wrong (status or transport).
        why: String,
    },
    /// Not a discovery document.
    #[error("{0} is not an OpenID configuration document with `issuer` and `jwks_uri`")]
    Parse(String),
    /// The document speaks for another issuer.
    #[error("the discovery document names issuer `{found}`, not the configured `{configured}`")]
    WrongIssuer {
        /// The configured issuer.
        configured: String,
        /// The document's.
        found: String,
    },
    /// The key set named by the document could not be used.
    #[error("the key set at {url}: {err}")]
    Keys {
        /// The `jwks_uri`.
        url: String,
        /// Why.
        err: JwksError,
    },
    /// The claim policy cannot be used (no algorithm).
    #[error("{0}")]
    Setup(String),
}

/// A provider's keys through discovery, fetched once and kept.
pub struct Discovery {
    issuer: String,
    config: JwtConfig,
    ready: tokio::sync::OnceCell<JwtVerifier>,
    last_failure: Mutex<Option<Instant>>,
    client: reqwest::Client,
}

impl Discovery {
    const TIMEOUT: Duration = Duration::from_secs(5);
    const MAX_BYTES: usize = 256 * 1024;

    /// Discovery for `issuer`, whose tokens are checked with `config` (its `issuer` is set
    /// to this one). Fails only on an issuer that breaks the URL rule.
    pub fn new(issuer: &str, mut config: JwtConfig) -> Result<Self, DiscoveryError> {
        document_url(issuer)?;
        config.issuer = Some(issuer.to_owned());
        let client = reqwest::Client::builder()
            .timeout(Self::TIMEOUT)
            .connect_timeout(Self::TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DiscoveryError::Setup(e.to_string()))?;
        Ok(Self {
            issuer: issuer.to_owned(),
            config,
            ready: tokio::sync::OnceCell::new(),
            last_failure: Mutex::new(None),
            client,
        })
    }

    /// The configured leeway (the session guard closes at `exp` plus it).
    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.config.leeway_secs)
    }

    /// Whether the keys have been found.
    pub fn is_ready(&self) -> bool {
        self.ready.initialized()
    }

    /// The verifier with the discovered keys; discovers them first if need be (one caller at
    /// a time, at most once per [`JwksCache::MIN_REFETCH`] after a failure).
    pub async fn verifier(&self) -> Result<&JwtVerifier, VerifyError> {
        const UNAVAILABLE: VerifyError =
            VerifyError::Unavailable("the identity provider's keys cannot be had yet");
        if let Some(v) = self.ready.get() {
            return Ok(v);
        }
        let recently_failed = self
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < JwksCache::MIN_REFETCH);
        if recently_failed {
            return Err(UNAVAILABLE);
        }
        self.ready
            .get_or_try_init(|| async {
                self.discover()
                    .await
                    .map(|(v, _)| v)
                    .inspect_err(|e| self.failed(e))
            })
            .await
            .map_err(|_| UNAVAILABLE)
    }

    /// Discovers now (the server's start, `check-config`): how many keys were found, or why
    /// none. Keys found are kept; a failure counts for the refetch limit.
    pub async fn prime(&self) -> Result<usize, DiscoveryError> {
        match self.discover().await {
            Ok((verifier, n)) => {
                let _ = self.ready.set(verifier);
                Ok(n)
            }
            Err(e) => {
                self.failed(&e);
                Err(e)
            }
        }
    }

    fn failed(&self, e: &DiscoveryError) {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        tracing::warn!(target: "wsgate::jwks", issuer = %self.issuer, error = %e, "OpenID discovery failed; the provider's tokens are answered 503 until it works");
    }

    /// Fetches the discovery document and the key set it names: a verifier with those keys,
    /// and how many there are.
    async fn discover(&self) -> Result<(JwtVerifier, usize), DiscoveryError> {
        let url = document_url(&self.issuer)?;
        let doc = self.fetch(&url).await?;
        let (issuer, jwks_uri) = parse_document(&doc).ok_or(DiscoveryError::Parse(url))?;
        if issuer != self.issuer {
            return Err(DiscoveryError::WrongIssuer {
                configured: self.issuer.clone(),
                found: issuer,
            });
        }
        let keys = |err| DiscoveryError::Keys {
            url: jwks_uri.clone(),
            err,
        };
        let source = JwksSource::url(&jwks_uri).map_err(keys)?;
        let cache = JwksCache::new(source, &self.config.algorithms);
        cache.refresh().await.map_err(keys)?;
        let verifier = JwtVerifier::new(self.config.clone())
            .map_err(|e| DiscoveryError::Setup(e.to_string()))?;
        let n = cache.len();
        tracing::info!(target: "wsgate::jwks", issuer = %self.issuer, jwks_uri = %jwks_uri, keys = n, "OpenID discovery: keys found");
        Ok((verifier.with_jwks(Arc::new(cache)), n))
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, DiscoveryError> {
        let fetch = |why: String| DiscoveryError::Fetch {
            url: url.to_owned(),
            why,
        };
        let res = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| fetch(e.without_url().to_string()))?;
        if !res.status().is_success() {
            return Err(fetch(format!("HTTP {}", res.status())));
        }
        read_bounded(res, Self::MAX_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => fetch("the document is larger than 256 KiB".into()),
                BodyError::Failed(e) => fetch(e.without_url().to_string()),
            })
    }
}

/// `{issuer without trailing /}/.well-known/openid-configuration`, under the JWKS URL rule.
pub fn document_url(issuer: &str) -> Result<String, DiscoveryError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    JwksSource::url(&url).map_err(|e| DiscoveryError::BadUrl(format!("issuer: {e}")))?;
    Ok(url)
}

/// The `issuer` and `jwks_uri` of a discovery document. Public for the fuzzers.
#[doc(hidden)]
pub fn parse_document(doc: &[u8]) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Doc {
        issuer: String,
        jwks_uri: String,
    }
    let d: Doc = serde_json::from_slice(doc).ok()?;
    Some((d.issuer, d.jwks_uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_url_follows_the_issuer_and_the_url_rule() {
        assert_eq!(
            document_url("https://login.example/tenant/v2.0/").unwrap(),
            "https://login.example/tenant/v2.0/.well-known/openid-configuration"
        );
        assert!(document_url("http://127.0.0.1:9/realms/a").is_ok());
        assert!(
            document_url("http://idp.example").is_err(),
            "clear text off loopback"
        );
        assert_eq!(
            parse_document(br#"{"issuer":"https://i","jwks_uri":"https://i/k","x":1}"#),
            Some(("https://i".into(), "https://i/k".into()))
        );
        assert_eq!(parse_document(br#"{"issuer":"https://i"}"#), None);
    }
}
