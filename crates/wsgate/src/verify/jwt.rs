//! JSON Web Tokens: HMAC secrets, PEM public keys and JWKS (file or URL).
//!
//! Safety rests on three rules, each enforced here rather than trusted to callers:
//! - the token header's `alg` must be in the configured allowlist (`none` is not even
//!   parseable by the backend), and
//! - every key carries the algorithms of its own family only, so an RSA public key is never
//!   used as an HMAC secret (algorithm confusion), and JWKS keys are pinned to one algorithm;
//! - HMAC keys only ever come from local configuration: `oct` keys in a JWKS are dropped.
//!
//! Unknown `kid`s trigger at most one JWKS refetch per [`JwksCache::MIN_REFETCH`], and the
//! fetch itself is single-flight and time-bounded, so a kid-spraying client cannot turn the
//! gateway into a load generator against the identity provider.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

use super::claims::{ClaimMap, words};
use super::jwks::JwksCache;
use super::{Verifier, VerifyContext, VerifyError, VerifyFuture, now_unix, numeric_date};
use crate::identity::{Claims, Verified};
use crate::source::Credential;
use serde_json::value::RawValue;

/// Claim policy shared by every key.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Allowed `alg` values; a token with any other is refused before its signature is checked.
    pub algorithms: Vec<Algorithm>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Accepted `aud` values; when non-empty a token must carry one of them.
    pub audience: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
    /// Where the subject and the channel patterns are read (default: `sub`, `channels`,
    /// `publish`).
    pub claims: ClaimMap,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithms: vec![Algorithm::HS256],
            issuer: None,
            audience: Vec::new(),
            leeway_secs: super::DEFAULT_LEEWAY.as_secs(),
            require_exp: true,
            claims: ClaimMap::default(),
        }
    }
}

/// A key that cannot be used as configured.
#[derive(Debug, thiserror::Error)]
pub enum JwtSetupError {
    /// `algorithms` is empty.
    #[error("no algorithm is configured")]
    NoAlgorithms,
    /// The HMAC secret is empty.
    #[error("the HMAC secret is empty")]
    EmptySecret,
    /// The key's family matches none of the configured algorithms.
    #[error("a {family} key cannot verify any configured algorithm ({configured})")]
    NoAlgorithmForKey {
        /// The key's family (HMAC, RSA, EC, Ed25519).
        family: &'static str,
        /// The configured algorithms.
        configured: String,
    },
    /// Not a PEM public key wsgate can use.
    #[error("not a PEM public key (RSA, EC P-256/P-384 or Ed25519)")]
    BadPem,
}

struct Key {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
    /// The claim policy with exactly this key's algorithms.
    validation: Validation,
}

/// Verifies JWTs against local keys and/or a JWKS.
pub struct JwtVerifier {
    config: JwtConfig,
    keys: Vec<Key>,
    jwks: Option<Arc<JwksCache>>,
    validations: Vec<(Algorithm, Validation)>,
}

impl JwtVerifier {
    /// A verifier with this claim policy and no key yet (add one or more).
    pub fn new(config: JwtConfig) -> Result<Self, JwtSetupError> {
        crate::install_crypto();
        if config.algorithms.is_empty() {
            return Err(JwtSetupError::NoAlgorithms);
        }
        let validations = config
            .algorithms
            .iter()
            .map(|&alg| (alg, validation(&config, alg)))
            .collect();
        Ok(Self {
            config,
            keys: Vec::new(),
            jwks: None,
            validations,
        })
    }

    /// Adds an HMAC secret (HS256/384/512, as configured).
    pub fn with_secret(mut self, secret: &[u8]) -> Result<Self, JwtSetupError> {
        if secret.is_empty() {
            return Err(JwtSetupError::EmptySecret);
        }
        self.add_key(DecodingKey::from_secret(secret))?;
        Ok(self)
    }

    /// Adds a PEM public key (RSA, EC or Ed25519); its family decides which of the configured
    /// algorithms it may verify.
    pub fn with_public_key_pem(mut self, pem: &[u8]) -> Result<Self, JwtSetupError> {
        let key = DecodingKey::from_rsa_pem(pem)
            .or_else(|_| DecodingKey::from_ec_pem(pem))
            .or_else(|_| DecodingKey::from_ed_pem(pem))
            .map_err(|_| JwtSetupError::BadPem)?;
        self.add_key(key)?;
        Ok(self)
    }

    /// Looks keys up by `kid` in a JWKS.
    pub fn with_jwks(mut self, jwks: Arc<JwksCache>) -> Self {
        self.jwks = Some(jwks);
        self
    }

    fn add_key(&mut self, key: DecodingKey) -> Result<(), JwtSetupError> {
        let family = key.family();
        let algorithms: Vec<Algorithm> = self
            .config
            .algorithms
            .iter()
            .copied()
            .filter(|a| a.family() == family)
            .collect();
        if algorithms.is_empty() {
            return Err(JwtSetupError::NoAlgorithmForKey {
                family: family_name(family),
                configured: alg_list(&self.config.algorithms),
            });
        }
        let mut validation = validation(&self.config, algorithms[0]);
        validation.algorithms = algorithms.clone();
        self.keys.push(Key {
            key,
            algorithms,
            validation,
        });
        Ok(())
    }

    fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        self.validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
    }

    /// Verifies `token`; `NotRecognized` when it is not JWT-shaped at all.
    pub async fn verify_token(&self, token: &str) -> Result<Verified, VerifyError> {
        if token.bytes().filter(|&b| b == b'.').count() != 2 {
            return Err(VerifyError::NotRecognized);
        }
        if self.jwks.is_none() && self.keys.len() == 1 {
            // The common case: one local key. jsonwebtoken checks the header's `alg`
            // against the key's own algorithms, so parsing the header here would be waste.
            let key = &self.keys[0];
            return check(token, &key.key, &key.validation, &self.config.claims).map_err(
                |e| match e {
                    VerifyError::Invalid("algorithm does not match key") => {
                        VerifyError::Invalid("algorithm not allowed")
                    }
                    other => other,
                },
            );
        }
        let header = decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(_) => VerifyError::Invalid("unsupported or malformed header"),
            _ => VerifyError::Invalid("malformed token"),
        })?;
        let alg = header.alg;
        let validation = self
            .validation(alg)
            .ok_or(VerifyError::Invalid("algorithm not allowed"))?;

        if let (Some(jwks), Some(kid)) = (&self.jwks, header.kid.as_deref()) {
            match jwks.find(kid).await {
                Some(k) if k.alg == alg => {
                    return check(token, &k.key, validation, &self.config.claims);
                }
                Some(_) => return Err(VerifyError::Invalid("algorithm does not match key")),
                None if self.keys.is_empty() => return Err(VerifyError::Invalid("unknown key id")),
                None => {}
            }
        }

        let mut last = VerifyError::Invalid("no key for this algorithm");
        let local = self
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(&alg))
            .map(|k| &k.key);
        for key in local {
            match check(token, key, validation, &self.config.claims) {
                Err(VerifyError::Invalid("bad signature")) => {
                    last = VerifyError::Invalid("bad signature")
                }
                other => return other,
            }
        }
        if let (Some(jwks), None) = (&self.jwks, &header.kid) {
            for k in jwks.current().keys.iter().filter(|k| k.alg == alg) {
                match check(token, &k.key, validation, &self.config.claims) {
                    Err(VerifyError::Invalid("bad signature")) => {
                        last = VerifyError::Invalid("bad signature")
                    }
                    other => return other,
                }
            }
        }
        Err(last)
    }
}

impl Verifier for JwtVerifier {
    fn name(&self) -> &'static str {
        "jwt"
    }
    fn verify<'a>(&'a self, cred: &'a Credential, _: &'a VerifyContext) -> VerifyFuture<'a> {
        Box::pin(self.verify_token(cred.token()))
    }
    fn leeway(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(self.config.leeway_secs))
    }
}

fn validation(config: &JwtConfig, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = config.leeway_secs;
    v.validate_nbf = true;
    v.validate_exp = true;
    // The subject is checked by `verified_from_claims`, wherever the mapping puts it.
    let mut required = Vec::new();
    if config.claims.subject.is_plain("sub") {
        required.push("sub");
    }
    if config.require_exp {
        required.push("exp");
    }
    if let Some(iss) = &config.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    if config.audience.is_empty() {
        // No audience configured: the operator has not asked for one, so `aud` is not checked.
        v.validate_aud = false;
    } else {
        v.set_audience(&config.audience);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

fn check(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
    map: &ClaimMap,
) -> Result<Verified, VerifyError> {
    let data = decode::<Box<RawValue>>(token, key, validation).map_err(|e| {
        VerifyError::Invalid(match e.kind() {
            ErrorKind::InvalidSignature => "bad signature",
            ErrorKind::ExpiredSignature => "token expired",
            ErrorKind::ImmatureSignature => "token not yet valid",
            ErrorKind::InvalidIssuer => "wrong issuer",
            ErrorKind::InvalidAudience => "wrong audience",
            ErrorKind::MissingRequiredClaim(_) => "missing required claim",
            ErrorKind::InvalidClaimFormat(_) => "malformed claim",
            ErrorKind::InvalidAlgorithm => "algorithm does not match key",
            _ => "malformed token",
        })
    })?;
    // RFC 7515 §4.1.11: an extension we were told is critical and do not understand (we
    // understand none) makes the token invalid.
    if data.header.crit.is_some() {
        return Err(VerifyError::Invalid("unsupported critical header"));
    }
    let verified = verified_from_claims(data.claims, map)?;
    // A token "issued" in the future would slip past a subject revocation ("every token
    // issued until now"), so it is refused like a token not yet valid.
    if verified
        .issued_at
        .is_some_and(|iat| iat > now_unix().saturating_add(validation.leeway))
    {
        return Err(VerifyError::Invalid("token issued in the future"));
    }
    Ok(verified)
}

/// Reads the claims wsgate uses out of a JWT payload (or an introspection answer), where
/// `map` says they are, keeping the payload itself as raw JSON.
pub(crate) fn verified_from_claims(
    raw: Box<RawValue>,
    map: &ClaimMap,
) -> Result<Verified, VerifyError> {
    #[derive(serde::Deserialize)]
    struct Known<'a> {
        #[serde(borrow, default)]
        sub: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        exp: Option<Value>,
        #[serde(default)]
        iat: Option<Value>,
        #[serde(default)]
        jti: Option<Value>,
        #[serde(default)]
        channels: Option<Value>,
        #[serde(default)]
        publish: Option<Value>,
        #[serde(default)]
        scope: Option<Value>,
        #[serde(default)]
        scp: Option<Value>,
    }
    let known: Known =
        serde_json::from_str(raw.get()).map_err(|_| VerifyError::Invalid("malformed claim"))?;
    // The default names are read above without a parsed tree (the common, fast case);
    // a provider's own names walk a parsed one.
    let (sub, channels, publish) = if map.is_default() {
        let sub = known.sub.filter(|s| !s.is_empty()).map(|s| s.into_owned());
        (
            sub,
            words(known.channels.as_ref()),
            words(known.publish.as_ref()),
        )
    } else {
        let tree: Value =
            serde_json::from_str(raw.get()).map_err(|_| VerifyError::Invalid("malformed claim"))?;
        let sub = map
            .subject
            .read(&tree)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        (
            sub,
            words(map.channels.read(&tree)),
            words(map.publish.read(&tree)),
        )
    };
    let sub = sub.ok_or(VerifyError::Invalid("missing sub"))?;
    Ok(Verified {
        sub,
        expires_at: known.exp.as_ref().and_then(numeric_date),
        issued_at: known.iat.as_ref().and_then(numeric_date),
        jti: known
            .jti
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_owned),
        channels,
        publish,
        scopes: words(known.scope.or(known.scp).as_ref()),
        claims: Claims::raw(raw),
        credential_id: None,
        provider: None,
        recheck_every: None,
    })
}

fn family_name(f: jsonwebtoken::AlgorithmFamily) -> &'static str {
    use jsonwebtoken::AlgorithmFamily::*;
    match f {
        Hmac => "HMAC",
        Rsa => "RSA",
        Ec => "EC",
        Ed => "Ed25519",
    }
}

fn alg_list(algs: &[Algorithm]) -> String {
    algs.iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn hs(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap()
    }

    fn now() -> u64 {
        crate::verify::now_unix()
    }

    #[test]
    fn claims_are_read() {
        let v = JwtVerifier::new(JwtConfig::default())
            .unwrap()
            .with_secret(b"k")
            .unwrap();
        let t = hs(
            json!({"sub":"al","exp":now()+60,"jti":"j1","channels":["a","b"],"publish":"c","scope":"x y"}),
        );
        let id = rt().block_on(v.verify_token(&t)).unwrap();
        assert_eq!(id.sub, "al");
        assert_eq!(id.jti.as_deref(), Some("j1"));
        assert_eq!(id.channels, ["a", "b"]);
        assert_eq!(id.publish, ["c"]);
        assert_eq!(id.scopes, ["x", "y"]);
        assert_eq!(
            id.claims.get()["channels"][1],
            "b",
            "raw claims parse on demand"
        );
    }

    #[test]
    fn shape_decides_recognition() {
        let v = JwtVerifier::new(JwtConfig::default())
            .unwrap()
            .with_secret(b"k")
            .unwrap();
        assert_eq!(
            rt().block_on(v.verify_token("valid-token")),
            Err(VerifyError::NotRecognized)
        );
        assert_eq!(
            rt().block_on(v.verify_token("a.b.c")),
            Err(VerifyError::Invalid("malformed token"))
        );
    }

    #[test]
    fn key_family_must_match_configured_algorithms() {
        let cfg = JwtConfig {
            algorithms: vec![Algorithm::RS256],
            ..JwtConfig::default()
        };
        let err = JwtVerifier::new(cfg).unwrap().with_secret(b"k").err();
        assert!(matches!(err, Some(JwtSetupError::NoAlgorithmForKey { .. })));
    }
}
