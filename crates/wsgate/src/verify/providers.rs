//! Several identity providers at once: a workforce IdP for people and another
//! for services, one realm per tenant.
//!
//! A JWT is routed by its `iss` to exactly one [`Provider`] — the unverified `iss` only
//! chooses; the chosen provider then verifies everything (signature, `iss`, `aud`, times)
//! with **its own keys only**. Keys never cross providers: each has its own key set, JWKS
//! cache, refetch limit and single flight, so a token routed to one provider is never checked
//! against another's key, even when both key sets use the same `kid` (Centrifugo's
//! GHSA-g6vg-wj8f-48cj was this bug). At most one provider has no `issuer`: it takes the
//! tokens whose `iss` names no other.
//!
//! With a single provider nothing is routed: its verifier is asked directly, so one
//! configured provider costs what `[auth.jwt]` always cost.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::jwt::JwtVerifier;
use super::{Verifier, VerifyContext, VerifyError, VerifyFuture};
use crate::identity::Verified;
use crate::source::Credential;

/// Where a provider's keys come from.
#[allow(clippy::large_enum_variant)] // a handful per process, built once
pub enum ProviderKeys {
    /// Known at start: a secret, a PEM key, a JWKS file or URL.
    Jwt(JwtVerifier),
    /// Found through OpenID discovery, fetched when first needed (and again, rate-limited,
    /// after a failure); until then the provider's tokens are answered 503.
    #[cfg(feature = "remote")]
    Discovered(super::discovery::Discovery),
    /// No keys: opaque tokens (and JWTs routed here) are asked of the IdP (RFC 7662).
    #[cfg(feature = "remote")]
    Introspection(super::introspection::Introspection),
}

/// One identity provider: its configured name, the issuer it answers for, its keys.
pub struct Provider {
    name: Arc<str>,
    issuer: Option<String>,
    keys: ProviderKeys,
    /// How often live sessions of its tokens are checked again (`revalidate_secs`).
    recheck_every: Option<std::time::Duration>,
}

impl Provider {
    /// A provider named `name` (shown in logs, metrics, the proxy's `X-Wsgate-Provider`)
    /// for tokens whose `iss` is `issuer` (`None`: those of no other provider).
    pub fn new(name: &str, issuer: Option<String>, keys: ProviderKeys) -> Self {
        Self {
            name: name.into(),
            issuer,
            keys,
            recheck_every: None,
        }
    }

    /// Checks live sessions of its tokens again every `period` (continuous authorization;
    /// meaningful for an introspecting provider, whose IdP can say a token was revoked).
    pub fn revalidate_every(mut self, period: std::time::Duration) -> Self {
        self.recheck_every = Some(period).filter(|p| !p.is_zero());
        self
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The issuer it answers for.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// `recheck`: a live session's credential checked again (only an introspecting
    /// provider has a cache to skip).
    #[cfg_attr(not(feature = "remote"), allow(unused_variables))]
    async fn verify_token(&self, token: &str, recheck: bool) -> Result<Verified, VerifyError> {
        let verified = match &self.keys {
            ProviderKeys::Jwt(v) => v.verify_token(token).await,
            #[cfg(feature = "remote")]
            ProviderKeys::Discovered(d) => d.verifier().await?.verify_token(token).await,
            #[cfg(feature = "remote")]
            ProviderKeys::Introspection(i) => i.introspect(token, recheck).await,
        };
        verified.map(|mut v| {
            v.provider = Some(self.name.clone());
            v.recheck_every = self.recheck_every;
            v
        })
    }

    fn leeway(&self) -> Option<std::time::Duration> {
        match &self.keys {
            ProviderKeys::Jwt(v) => v.leeway(),
            #[cfg(feature = "remote")]
            ProviderKeys::Discovered(d) => Some(d.leeway()),
            #[cfg(feature = "remote")]
            ProviderKeys::Introspection(_) => None,
        }
    }

    /// How its tokens are checked, for logs and metrics: `jwt` or `introspection`.
    fn kind(&self) -> &'static str {
        match &self.keys {
            #[cfg(feature = "remote")]
            ProviderKeys::Introspection(_) => "introspection",
            _ => "jwt",
        }
    }

    fn introspects(&self) -> bool {
        #[cfg(feature = "remote")]
        if let ProviderKeys::Introspection(_) = &self.keys {
            return true;
        }
        false
    }
}

/// Providers that cannot be routed between.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvidersError {
    /// Two providers share a name.
    #[error("two providers are named `{0}`")]
    DuplicateName(String),
    /// Two providers share an issuer.
    #[error("providers `{0}` and `{1}` have the same issuer")]
    DuplicateIssuer(String, String),
    /// More than one provider has no issuer.
    #[error(
        "providers `{0}` and `{1}` both have no issuer; at most one may take the tokens of no other"
    )]
    TwoWithoutIssuer(String, String),
}

/// Every configured provider, as one verifier that routes JWTs by `iss`.
pub struct Providers {
    list: Vec<Provider>,
    by_issuer: HashMap<String, usize>,
    without_issuer: Option<usize>,
    /// Where a token that is not a JWT goes: the first provider that introspects.
    opaque: Option<usize>,
}

impl Providers {
    /// The providers, checked: unique names and issuers, at most one without an issuer.
    pub fn new(list: Vec<Provider>) -> Result<Self, ProvidersError> {
        let mut by_issuer = HashMap::new();
        let mut without_issuer: Option<usize> = None;
        let opaque = list.iter().position(Provider::introspects);
        for (i, p) in list.iter().enumerate() {
            if p.introspects() && p.issuer.is_none() {
                // An introspecting provider takes opaque tokens, and JWTs of its issuer; one
                // without an issuer takes no JWT.
                continue;
            }
            match &p.issuer {
                Some(iss) => {
                    if let Some(&j) = by_issuer.get(iss) {
                        let other: &Provider = &list[j];
                        return Err(ProvidersError::DuplicateIssuer(
                            other.name.to_string(),
                            p.name.to_string(),
                        ));
                    }
                    by_issuer.insert(iss.clone(), i);
                }
                None => {
                    if let Some(j) = without_issuer {
                        return Err(ProvidersError::TwoWithoutIssuer(
                            list[j].name.to_string(),
                            p.name.to_string(),
                        ));
                    }
                    without_issuer = Some(i);
                }
            }
        }
        for (i, p) in list.iter().enumerate() {
            if let Some(other) = list[..i].iter().find(|o| o.name == p.name) {
                return Err(ProvidersError::DuplicateName(other.name.to_string()));
            }
        }
        Ok(Self {
            list,
            by_issuer,
            without_issuer,
            opaque,
        })
    }

    /// The providers, in configured order.
    pub fn list(&self) -> &[Provider] {
        &self.list
    }

    /// The provider a token goes to: one provider takes every token (it checks `iss` itself);
    /// several are chosen between by the token's unverified `iss`.
    fn route(&self, token: &str) -> Result<&Provider, VerifyError> {
        if let [only] = self.list.as_slice()
            && !only.introspects()
        {
            return Ok(only);
        }
        let i = match unverified_issuer(token)? {
            Some(iss) => self.by_issuer.get(&iss).copied(),
            None => None,
        };
        i.or(self.without_issuer)
            .map(|i| &self.list[i])
            .ok_or(VerifyError::Invalid("no provider for this issuer"))
    }
}

/// The `iss` of a JWT's payload, read without verifying anything: it only chooses whom to ask.
fn unverified_issuer(token: &str) -> Result<Option<String>, VerifyError> {
    #[derive(serde::Deserialize)]
    struct Iss {
        #[serde(default)]
        iss: Option<serde_json::Value>,
    }
    const MALFORMED: VerifyError = VerifyError::Invalid("malformed token");
    let payload = token.split('.').nth(1).ok_or(MALFORMED)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| MALFORMED)?;
    let claims: Iss = serde_json::from_slice(&bytes).map_err(|_| MALFORMED)?;
    Ok(match claims.iss {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    })
}

impl Verifier for Providers {
    fn name(&self) -> &'static str {
        "jwt"
    }

    fn verify<'a>(&'a self, cred: &'a Credential, ctx: &'a VerifyContext) -> VerifyFuture<'a> {
        Box::pin(async move {
            let token = cred.token();
            let recheck = ctx.recheck.is_some();
            if token.bytes().filter(|&b| b == b'.').count() != 2 {
                // Not a JWT: an opaque token, if a provider introspects.
                return match self.opaque {
                    Some(i) => self.list[i].verify_token(token, recheck).await,
                    None => Err(VerifyError::NotRecognized),
                };
            }
            self.route(token)?.verify_token(token, recheck).await
        })
    }

    fn name_of(&self, verified: &Verified) -> &'static str {
        let provider = verified.provider.as_deref();
        self.list
            .iter()
            .find(|p| Some(&*p.name) == provider)
            .map_or("jwt", Provider::kind)
    }

    fn leeway(&self) -> Option<std::time::Duration> {
        self.list.iter().filter_map(Provider::leeway).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::JwtConfig;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use serde_json::json;

    fn hs(secret: &[u8], kid: &str, claims: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.into());
        encode(&h, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn provider(name: &str, issuer: Option<&str>, secret: &[u8]) -> Provider {
        let cfg = JwtConfig {
            issuer: issuer.map(Into::into),
            ..JwtConfig::default()
        };
        let v = JwtVerifier::new(cfg).unwrap().with_secret(secret).unwrap();
        Provider::new(name, issuer.map(Into::into), ProviderKeys::Jwt(v))
    }

    fn verify(p: &Providers, token: &str) -> Result<Verified, VerifyError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let cred = Credential::new(token.to_owned(), crate::SourceKind::Bearer);
        rt.block_on(p.verify(&cred, &VerifyContext::default()))
    }

    #[test]
    fn tokens_are_routed_by_issuer_and_keys_never_cross() {
        let p = Providers::new(vec![
            provider("a", Some("https://a"), b"key-a"),
            provider("b", Some("https://b"), b"key-b"),
            provider("rest", None, b"key-r"),
        ])
        .unwrap();
        let exp = crate::verify::now_unix() + 60;
        let for_a = hs(
            b"key-a",
            "k1",
            json!({"sub":"x","iss":"https://a","exp":exp}),
        );
        assert_eq!(verify(&p, &for_a).unwrap().provider.as_deref(), Some("a"));
        // Signed with a's key, claiming b's issuer: b checks it with b's key only.
        let forged = hs(
            b"key-a",
            "k1",
            json!({"sub":"x","iss":"https://b","exp":exp}),
        );
        assert_eq!(
            verify(&p, &forged),
            Err(VerifyError::Invalid("bad signature"))
        );
        let other = hs(
            b"key-r",
            "k1",
            json!({"sub":"x","iss":"https://elsewhere","exp":exp}),
        );
        assert_eq!(
            verify(&p, &other).unwrap().provider.as_deref(),
            Some("rest")
        );
        assert_eq!(verify(&p, "opaque"), Err(VerifyError::NotRecognized));
    }

    #[test]
    fn ambiguous_providers_are_refused() {
        let two = Providers::new(vec![provider("a", None, b"1"), provider("b", None, b"2")]);
        assert!(matches!(two, Err(ProvidersError::TwoWithoutIssuer(..))));
        let same = Providers::new(vec![
            provider("a", Some("i"), b"1"),
            provider("b", Some("i"), b"2"),
        ]);
        assert!(matches!(same, Err(ProvidersError::DuplicateIssuer(..))));
        let names = Providers::new(vec![
            provider("a", Some("i"), b"1"),
            provider("a", Some("j"), b"2"),
        ]);
        assert!(matches!(names, Err(ProvidersError::DuplicateName(..))));
    }
}
