//! What a credential may be.
//!
//! One small trait, [`Verifier`], and one implementation per kind of credential: static
//! tokens, JWTs (secret, PEM key or JWKS), and a backend asked over HTTP. Several can be
//! enabled at once; [`VerifierChain`] asks them in order and **the first that recognizes the
//! credential decides** — a JWT with a bad signature is refused by the JWT verifier, it is not
//! offered to the next one in the hope that it accepts.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use crate::identity::Verified;
use crate::reject::AuthError;
use crate::source::{Credential, SourceKind};
use crate::trace::Traced;

pub mod claims;
#[cfg(feature = "remote")]
pub mod discovery;
#[cfg(feature = "remote")]
pub mod introspection;
pub mod jwks;
pub mod jwt;
pub mod live;
pub mod providers;
#[cfg(feature = "remote")]
pub mod proxy;
#[cfg(feature = "remote")]
pub mod set;
pub mod static_tokens;

/// How far past `exp` (and before `nbf`) a credential is still accepted when nothing else is
/// configured: clocks of issuers and gateways drift.
pub const DEFAULT_LEEWAY: std::time::Duration = std::time::Duration::from_secs(30);

pub use claims::{ClaimMap, ClaimPath, Requirements};
pub use jwks::{JwksCache, JwksError, JwksSource, check_remote_url};
pub use jwt::{JwtConfig, JwtSetupError, JwtVerifier};
pub use live::LiveChain;
pub use providers::{Provider, ProviderKeys, Providers, ProvidersError};
#[cfg(feature = "remote")]
pub use proxy::ProxyVerifier;
pub use static_tokens::StaticTokens;

/// Why an answer's body could not be read whole.
#[cfg(feature = "remote")]
#[derive(Debug)]
pub enum BodyError {
    /// Longer than the caller's bound.
    TooLarge,
    /// The connection failed (or timed out) while reading.
    Failed(reqwest::Error),
}

/// An answer's body, at most `max` bytes: an identity provider or a backend is not trusted
/// to send a bounded one.
#[cfg(feature = "remote")]
pub async fn read_bounded(mut res: reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(BodyError::Failed)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Longest token any verifier looks at; longer ones are refused unparsed.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The boxed future a verifier returns (JWT and static checks are ready at once; the proxy
/// verifier really waits).
pub type VerifyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Verified, VerifyError>> + Send + 'a>>;

/// Facts about the request that some verifiers pass on (the proxy verifier does).
#[derive(Debug, Clone, Default)]
pub struct VerifyContext {
    /// The client's address (behind trusted proxies, the one they name).
    pub remote_addr: Option<SocketAddr>,
    /// The request's `Origin`.
    pub origin: Option<String>,
    /// Set when a live session's credential is checked again (continuous authorization): the
    /// session's id. Caches are skipped, and a backend is told (`"revalidate": true`).
    pub recheck: Option<String>,
    /// The handshake's trace, when the endpoint traces ([`Authenticator::trace`]).
    ///
    /// [`Authenticator::trace`]: crate::Authenticator::trace
    pub trace: Option<Arc<Traced>>,
}

/// A verifier's answer when it does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not this verifier's kind of credential: ask the next one.
    #[error("not recognized")]
    NotRecognized,
    /// Recognized and refused, with a fixed reason phrase.
    #[error("invalid: {0}")]
    Invalid(&'static str),
    /// Could not decide (a backend is down or slow).
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
}

impl From<VerifyError> for AuthError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::NotRecognized => AuthError::Invalid("unknown credential"),
            VerifyError::Invalid(r) => AuthError::Invalid(r),
            VerifyError::Unavailable(r) => AuthError::Unavailable(r),
        }
    }
}

/// Checks one kind of credential.
pub trait Verifier: Send + Sync + 'static {
    /// Short name for logs and metrics: `"static"`, `"jwt"`, `"proxy"`, …
    fn name(&self) -> &'static str;

    /// The name an accepted credential is reported under: [`Verifier::name`], unless the
    /// verifier checks several kinds (the identity providers: `jwt` or `introspection`).
    fn name_of(&self, _verified: &Verified) -> &'static str {
        self.name()
    }

    /// Whether credentials from this place are for this verifier. Tickets are redeemed only
    /// by a ticket verifier, and no ticket verifier takes a bearer token.
    fn handles(&self, source: SourceKind) -> bool {
        source != SourceKind::Ticket
    }

    /// Checks `credential`: `NotRecognized` to pass it on, `Invalid` to refuse it.
    fn verify<'a>(&'a self, credential: &'a Credential, ctx: &'a VerifyContext)
    -> VerifyFuture<'a>;

    /// The clock skew this verifier tolerates on a credential's times, if it has a say: the
    /// session guard closes at `exp` plus the same leeway.
    fn leeway(&self) -> Option<std::time::Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numeric_dates_are_floored_and_clamped() {
        assert_eq!(numeric_date(&json!(5)), Some(5));
        assert_eq!(numeric_date(&json!(5.9)), Some(5));
        assert_eq!(numeric_date(&json!(-3)), Some(0));
        assert_eq!(numeric_date(&json!(-3.5)), Some(0));
        assert_eq!(numeric_date(&json!(1e16)), Some(10_000_000_000_000_000));
        assert_eq!(numeric_date(&json!(1e300)), Some(u64::MAX));
        assert_eq!(numeric_date(&json!("5")), None);
        assert_eq!(numeric_date(&json!(null)), None);
    }
}

/// Verifiers asked in order; the first that recognizes a credential decides.
#[derive(Clone, Default)]
pub struct VerifierChain {
    verifiers: Vec<Arc<dyn Verifier>>,
}

impl VerifierChain {
    /// An empty one.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a verifier at the end.
    pub fn with(mut self, v: impl Verifier) -> Self {
        self.verifiers.push(Arc::new(v));
        self
    }
    /// Adds a shared verifier at the end.
    pub fn push(&mut self, v: Arc<dyn Verifier>) {
        self.verifiers.push(v);
    }
    /// Asks `v` before every verifier already in the chain.
    pub fn prepend(&mut self, v: Arc<dyn Verifier>) {
        self.verifiers.insert(0, v);
    }
    /// Whether there is nothing here.
    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }
    /// The largest leeway any verifier in the chain declares.
    pub fn leeway(&self) -> Option<std::time::Duration> {
        self.verifiers.iter().filter_map(|v| v.leeway()).max()
    }
    /// Names of the verifiers, in order (logs, `check-config`).
    pub fn names(&self) -> Vec<&'static str> {
        self.verifiers.iter().map(|v| v.name()).collect()
    }

    /// The verified identity and the name of the verifier that accepted it.
    pub async fn verify(
        &self,
        credential: &Credential,
        ctx: &VerifyContext,
    ) -> Result<(Verified, &'static str), AuthError> {
        if credential.token().len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid("credential too large"));
        }
        for v in &self.verifiers {
            if !v.handles(credential.source()) {
                continue;
            }
            match v.verify(credential, ctx).await {
                Ok(verified) => {
                    let name = v.name_of(&verified);
                    return Ok((verified, name));
                }
                Err(VerifyError::NotRecognized) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VerifyError::NotRecognized.into())
    }
}

impl std::fmt::Debug for VerifierChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// The latest time wsgate hands to another system (9999-12-31T23:59:59Z). A credential keeps
/// its own `exp` (the welcome frame shows it as sent), but where a time meets a store, Redis
/// or a timer it is capped to this, so an absurd `exp` (10^16, a backend answering in
/// nanoseconds) behaves like a large one everywhere.
pub const MAX_UNIX_TIME: u64 = 253_402_300_799;

/// An RFC 7519 NumericDate (`exp`, `nbf`, `iat`, a backend's `expires_at`) as whole seconds:
/// fractional values are floored (a fractional `exp` ends at the second before, never
/// after), negative ones are 0, larger than `u64` saturate. `None` for a non-number.
pub fn numeric_date(v: &serde_json::Value) -> Option<u64> {
    let n = v.as_number()?;
    let secs = match (n.as_u64(), n.as_i64(), n.as_f64()) {
        (Some(u), _, _) => u,
        (None, Some(_negative), _) => 0,
        (None, None, Some(f)) if f.is_finite() => f.max(0.0).floor() as u64, // `as` saturates
        _ => return None,
    };
    Some(secs)
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
