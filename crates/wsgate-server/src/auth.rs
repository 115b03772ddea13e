//! From the `[auth]` section to the library's verifiers.
//!
//! The config says *what* to trust; this builds the [`VerifierChain`] that checks it, in a
//! fixed order — static tokens, then the identity providers (`[auth.jwt]`, named `jwt`, and
//! every `[[auth.providers]]`, routed by issuer), then the backend proxy — and resolves key
//! material (inline secret, environment variable, PEM file, JWKS, OpenID discovery, or the
//! secret generated once and kept in the store). Every problem comes back as a
//! [`ConfigError`] naming the key.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wsgate::Algorithm;
use wsgate::verify::discovery::Discovery;
use wsgate::verify::introspection::{Introspection, IntrospectionConfig};
use wsgate::verify::{
    ClaimMap, JwksCache, JwksSource, JwtConfig, JwtVerifier, Provider, ProviderKeys, Providers,
    ProxyVerifier, StaticTokens, VerifierChain,
};

use crate::config::{Config, ConfigError, JWT_PROVIDER, JwtFileConfig, Origin, ProviderConfig};
use crate::store::Store;

/// What `wsgate token` needs to mint a token this configuration accepts.
#[derive(Clone)]
pub struct Minting {
    pub secret: Vec<u8>,
    pub algorithm: Algorithm,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
}

impl Minting {
    /// Signs a token for `sub` valid `ttl`, with the configured issuer and audience, a random
    /// `jti`, and the given channel/publish patterns (omitted when empty).
    pub fn mint(
        &self,
        sub: &str,
        ttl: Duration,
        channels: &[String],
        publish: &[String],
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign(self.claims(sub, ttl, channels, publish))
    }

    /// The claims [`Minting::mint`] signs, for a caller that adds its own.
    pub fn claims(
        &self,
        sub: &str,
        ttl: Duration,
        channels: &[String],
        publish: &[String],
    ) -> serde_json::Value {
        let now = wsgate::verify::now_unix();
        let mut jti = [0u8; 16];
        // A jti only has to be unique; if the RNG fails, time still makes it so.
        if aws_lc_rs::rand::fill(&mut jti).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            jti = nanos.to_le_bytes();
        }
        let mut claims = json!({
            "sub": sub,
            "iat": now,
            "exp": now + ttl.as_secs(),
            "jti": base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, jti),
        });
        if let Some(iss) = &self.issuer {
            claims["iss"] = json!(iss);
        }
        match self.audience.as_slice() {
            [] => {}
            [one] => claims["aud"] = json!(one),
            many => claims["aud"] = json!(many),
        }
        for (name, list) in [("channels", channels), ("publish", publish)] {
            let list: Vec<&String> = list.iter().filter(|p| !p.is_empty()).collect();
            if !list.is_empty() {
                claims[name] = json!(list);
            }
        }
        claims
    }

    /// Signs `claims` with the configured secret and algorithm.
    pub fn sign(&self, claims: serde_json::Value) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(self.algorithm),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&self.secret),
        )
    }
}

/// Shortest HMAC secret accepted without a warning: the size of the SHA-256 output.
pub const MIN_HMAC_SECRET: usize = 32;

pub struct BuiltAuth {
    pub chain: VerifierChain,
    /// Human-readable lines for `check-config` and the start-up log.
    pub summary: Vec<String>,
    pub minting: Option<Minting>,
    /// Expiry leeway applied by the session guard (the JWT `leeway_secs`), for what the
    /// server decides beside the authenticators (how long a revocation must last).
    pub leeway: Duration,
}

/// Where the generated secret comes from when the config names no key.
pub enum SecretStore<'a> {
    /// Read or create it (serve, token).
    Open(&'a Store),
    /// Do not create anything (check-config): report what would happen.
    DryRun,
}

/// The JWT section in force: the configured one, or — when the file configures no verifier
/// at all — HS256 with the generated secret, so `wsgate token` works out of the box.
pub fn effective_jwt(cfg: &Config) -> Option<JwtFileConfig> {
    let other_verifier = cfg
        .auth
        .static_tokens
        .as_ref()
        .is_some_and(|s| !s.tokens.is_empty())
        || cfg.auth.proxy_url.is_some()
        || !cfg.auth.providers.is_empty();
    cfg.auth
        .jwt
        .clone()
        .or_else(|| (!other_verifier).then(JwtFileConfig::default))
}

/// Whether this configuration can mint tokens (`wsgate token`, the demo): HS256/384/512
/// with an inline secret, a secret variable, or the generated one.
pub fn can_mint(cfg: &Config) -> bool {
    effective_jwt(cfg).is_some_and(|jwt| {
        jwt.algorithms
            .iter()
            .any(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac)
            && (jwt.secret.is_some() || jwt.secret_env.is_some() || !jwt.has_key_material())
    })
}

pub async fn build(
    cfg: &Config,
    origin: &Origin,
    store: SecretStore<'_>,
) -> Result<BuiltAuth, ConfigError> {
    let mut chain = VerifierChain::new();
    let mut summary = Vec::new();
    let mut minting = None;

    if let Some(st) = &cfg.auth.static_tokens
        && !st.tokens.is_empty()
    {
        chain = chain.with(
            StaticTokens::new(st.tokens.iter().map(|(t, s)| (t.as_str(), s.clone())))
                .channels(st.channels.clone())
                .publish(st.publish.clone()),
        );
        summary.push(format!("static tokens: {}", st.tokens.len()));
    }

    let mut providers = Vec::new();
    if let Some(jwt) = effective_jwt(cfg) {
        let (verifier, line, mint) =
            build_jwt(&jwt, "auth.jwt", ClaimMap::default(), origin, store).await?;
        providers.push(Provider::new(
            JWT_PROVIDER,
            jwt.issuer.clone(),
            ProviderKeys::Jwt(verifier),
        ));
        summary.push(line);
        minting = mint;
    }
    for (i, p) in cfg.auth.providers.iter().enumerate() {
        let timeout = Duration::from_millis(cfg.auth.proxy_timeout_ms.max(1));
        let (provider, line) = build_provider(p, i, timeout, origin).await?;
        providers.push(provider);
        summary.push(line);
    }
    if !providers.is_empty() {
        let providers = Providers::new(providers)
            .map_err(|e| ConfigError::new(origin, "auth.providers", e.to_string()))?;
        chain = chain.with(providers);
    }

    if let Some(url) = &cfg.auth.proxy_url {
        let timeout = Duration::from_millis(cfg.auth.proxy_timeout_ms.max(1));
        let every = Duration::from_secs(cfg.auth.proxy_revalidate_secs);
        chain = chain.with(ProxyVerifier::new(url.clone(), timeout).revalidate_every(every));
        let rechecked = match cfg.auth.proxy_revalidate_secs {
            0 => String::new(),
            n => format!(", sessions re-checked every {n} s"),
        };
        summary.push(format!(
            "auth backend: {url} (timeout {} ms{rechecked})",
            cfg.auth.proxy_timeout_ms
        ));
    }

    if chain.is_empty() {
        return Err(ConfigError::new(
            origin,
            "auth",
            "no verifier is configured (set auth.static.tokens, [auth.jwt] or auth.proxy_url)",
        ));
    }
    Ok(BuiltAuth {
        // As the library's `Authenticator` reads it: the verifiers' own, or the default.
        leeway: chain.leeway().unwrap_or(wsgate::verify::DEFAULT_LEEWAY),
        chain,
        summary,
        minting,
    })
}

/// One `[[auth.providers]]` entry: its keys (configured, or found through discovery — tried
/// now, so the start-up log and `check-config` say whether they can be had) and its
/// summary line.
async fn build_provider(
    p: &ProviderConfig,
    i: usize,
    introspection_timeout: Duration,
    origin: &Origin,
) -> Result<(Provider, String), ConfigError> {
    let table = format!("auth.providers[{i}]");
    let map = p
        .claims
        .map()
        .map_err(|(key, e)| ConfigError::new(origin, format!("{table}.claims.{key}"), e))?;
    let mapping = if map.is_default() {
        String::new()
    } else {
        format!(
            ", claims sub={} channels={} publish={}",
            map.subject.as_str(),
            map.channels.as_str(),
            map.publish.as_str()
        )
    };
    let jwt = p.jwt();
    let (keys, line) = match (&p.issuer, p.discovery) {
        _ if p.introspection_url.is_some() => {
            let url = p.introspection_url.clone().unwrap_or_default();
            let var = p.client_secret_env.clone().unwrap_or_default();
            let secret = match std::env::var(&var) {
                Ok(s) if !s.is_empty() => s,
                _ => {
                    return Err(ConfigError::new(
                        origin,
                        format!("{table}.client_secret_env"),
                        format!("environment variable {var} is not set (or empty)"),
                    ));
                }
            };
            let config = IntrospectionConfig {
                url: url.clone(),
                client_id: p.client_id.clone().unwrap_or_default(),
                client_secret: secret,
                cache_for: Duration::from_secs(p.introspection_cache_secs),
                timeout: introspection_timeout,
                claims: map,
            };
            let i = Introspection::new(config).map_err(|e| {
                ConfigError::new(origin, format!("{table}.introspection_url"), e.to_string())
            })?;
            let line = format!(
                "introspection at {url} (answers kept {} s)",
                p.introspection_cache_secs
            );
            (ProviderKeys::Introspection(i), line)
        }
        (Some(issuer), true) => {
            let config = jwt_config(&jwt, map);
            let d = Discovery::new(issuer, config)
                .map_err(|e| ConfigError::new(origin, format!("{table}.issuer"), e.to_string()))?;
            let found = match d.prime().await {
                Ok(n) => format!("{n} keys"),
                Err(e) => format!("keys not obtainable yet, its tokens get 503: {e}"),
            };
            (
                ProviderKeys::Discovered(d),
                format!("discovery of {issuer}: {found}"),
            )
        }
        _ => {
            let (v, line, _) = build_jwt(&jwt, &table, map, origin, SecretStore::DryRun).await?;
            (ProviderKeys::Jwt(v), line)
        }
    };
    let line = format!("provider {}: {line}{mapping}", p.name);
    let provider = Provider::new(&p.name, p.issuer.clone(), keys)
        .revalidate_every(Duration::from_secs(p.revalidate_secs));
    let line = match p.revalidate_secs {
        0 => line,
        n => format!("{line}; sessions re-checked every {n} s"),
    };
    Ok((provider, line))
}

fn jwt_config(jwt: &JwtFileConfig, claims: ClaimMap) -> JwtConfig {
    JwtConfig {
        algorithms: jwt.algorithms.clone(),
        issuer: jwt.issuer.clone(),
        audience: jwt.audience(),
        leeway_secs: jwt.leeway_secs,
        require_exp: jwt.require_exp,
        claims,
    }
}

/// A JWT verifier from `[auth.jwt]` (`table`) or a provider's key settings. Only
/// `[auth.jwt]` falls back to the generated secret: a provider always names its keys.
async fn build_jwt(
    jwt: &JwtFileConfig,
    table: &str,
    claims: ClaimMap,
    origin: &Origin,
    store: SecretStore<'_>,
) -> Result<(JwtVerifier, String, Option<Minting>), ConfigError> {
    let err =
        |key: &str, problem: String| ConfigError::new(origin, format!("{table}.{key}"), problem);
    let config = jwt_config(jwt, claims);
    let mut v = JwtVerifier::new(config).map_err(|e| err("algorithms", e.to_string()))?;
    let mut keys = Vec::new();
    let hmac_alg = jwt
        .algorithms
        .iter()
        .copied()
        .find(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac);

    let secret: Option<(Vec<u8>, &str, String)> = if let Some(s) = &jwt.secret {
        Some((s.as_bytes().to_vec(), "secret", "inline secret".into()))
    } else if let Some(var) = &jwt.secret_env {
        match std::env::var(var) {
            Ok(s) if !s.is_empty() => {
                Some((s.into_bytes(), "secret_env", format!("secret from ${var}")))
            }
            _ => {
                return Err(err(
                    "secret_env",
                    format!("environment variable {var} is not set (or empty)"),
                ));
            }
        }
    } else if !jwt.has_key_material() {
        if hmac_alg.is_none() {
            return Err(ConfigError::new(
                origin,
                table,
                "no key is configured for these algorithms: set public_key_file, jwks_url or jwks_file",
            ));
        }
        match store {
            SecretStore::Open(store) => {
                let s = store
                    .jwt_secret()
                    .map_err(|e| ConfigError::new(origin, "storage.path", e.to_string()))?;
                Some((
                    s,
                    "secret",
                    format!("generated secret kept in {}", store.path().display()),
                ))
            }
            SecretStore::DryRun => {
                keys.push("generated secret (created in the store on first start)".to_string());
                None
            }
        }
    } else {
        None
    };

    let mut minting = None;
    if let Some((bytes, key, what)) = secret {
        v = v.with_secret(&bytes).map_err(|e| err(key, e.to_string()))?;
        // RFC 7518 §3.2: an HS256 key shorter than the hash can be brute-forced offline from
        // any one token. Refusing it would break existing deployments at upgrade; say it at
        // every start and in check-config instead.
        if bytes.len() < MIN_HMAC_SECRET {
            tracing::warn!(
                target: "wsgate::auth",
                "{table}.{key}: the HMAC secret is {} bytes; anyone holding one token can guess a secret this short offline. Use at least {MIN_HMAC_SECRET} random bytes (e.g. `openssl rand -hex 32`)",
                bytes.len()
            );
            keys.push(format!(
                "{what} (WEAK: {} bytes, use at least {MIN_HMAC_SECRET})",
                bytes.len()
            ));
        } else {
            keys.push(what);
        }
        minting = hmac_alg.map(|algorithm| Minting {
            secret: bytes,
            algorithm,
            issuer: jwt.issuer.clone(),
            audience: jwt.audience(),
        });
    }
    if let Some(path) = &jwt.public_key_file {
        let pem = std::fs::read(path).map_err(|e| {
            err(
                "public_key_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        v = v
            .with_public_key_pem(&pem)
            .map_err(|e| err("public_key_file", format!("{}: {e}", path.display())))?;
        keys.push(format!("public key {}", path.display()));
    }
    for (key, source) in [
        ("jwks_file", jwt.jwks_file.clone().map(JwksSource::File)),
        (
            "jwks_url",
            jwt.jwks_url
                .as_deref()
                .map(JwksSource::url)
                .transpose()
                .map_err(|e| err("jwks_url", e.to_string()))?,
        ),
    ] {
        let Some(source) = source else { continue };
        let is_file = matches!(source, JwksSource::File(_));
        let cache = Arc::new(JwksCache::new(source.clone(), &jwt.algorithms));
        match cache.refresh().await {
            Ok(n) => keys.push(format!("JWKS {} ({n} keys)", describe(&source))),
            // A file is under the operator's control: a broken one is a config error. A URL
            // may be briefly down: start anyway and fetch on the first unknown `kid`.
            Err(e) if is_file => return Err(err(key, e.to_string())),
            Err(e) => {
                tracing::warn!(target: "wsgate::jwks", error = %e, "JWKS not loaded at start; will retry on demand");
                keys.push(format!(
                    "JWKS {} (not reachable yet: {e})",
                    describe(&source)
                ));
            }
        }
        v = v.with_jwks(cache);
    }

    let algs: Vec<String> = jwt.algorithms.iter().map(|a| format!("{a:?}")).collect();
    let line = format!(
        "jwt: {} with {}{}{}",
        algs.join("/"),
        keys.join(", "),
        jwt.issuer
            .as_deref()
            .map(|i| format!(", issuer {i}"))
            .unwrap_or_default(),
        if jwt.audience().is_empty() {
            String::new()
        } else {
            format!(", audience {}", jwt.audience().join("/"))
        },
    );
    Ok((v, line, minting))
}

fn describe(s: &JwksSource) -> String {
    match s {
        JwksSource::File(p) => p.display().to_string(),
        JwksSource::Url(u) => u.clone(),
    }
}
