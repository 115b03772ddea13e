//! The one TOML file (docs/config.md): plain data, every key optional, unknown keys refused.
//!
//! Loading has two steps with one error type: parsing (`toml` reports the line and the key)
//! and checking the values that parse but cannot work (`cookie` without allowed origins, a
//! `jwks_url` over plain http, a secret variable that is not set). Every error names the
//! file and the key, so `wsgate check-config` can say exactly what to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use wsgate::{Algorithm, RejectMode, SourceKind};

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Defaults,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Defaults => f.write_str("embedded defaults"),
        }
    }
}

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {key}{sep}{problem}", sep = if key.is_empty() { "" } else { ": " })]
pub struct ConfigError {
    pub origin: Origin,
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(origin: &Origin, key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            origin: origin.clone(),
            key: key.into(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: String,
    pub demo: bool,
    /// Load balancers whose `X-Forwarded-For` is believed: CIDRs or addresses.
    pub trusted_proxies: Vec<String>,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub tickets: TicketsConfig,
    pub limits: LimitsConfig,
    pub admin: AdminConfig,
    pub cluster: Option<ClusterConfig>,
    pub shutdown: ShutdownConfig,
    /// `[ssf]`: revocations pushed (or polled) from an OpenID Shared Signals transmitter.
    pub ssf: Option<SsfConfig>,
    /// `[events]`: connection events to a webhook and/or a Redis Stream.
    pub events: Option<EventsConfig>,
    /// `[telemetry]`: spans exported to an OpenTelemetry collector (OTLP/HTTP).
    pub telemetry: Option<TelemetryConfig>,
    pub endpoints: Vec<EndpointConfig>,
}

/// `[telemetry]`: where spans go and what the service is called there.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP address, `http://127.0.0.1:4318`: spans are posted to
    /// `{otlp_endpoint}/v1/traces` (an address already ending in `/v1/traces` is used as is).
    pub otlp_endpoint: String,
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_service_name() -> String {
    "wsgate".into()
}

impl TelemetryConfig {
    /// Where spans are posted.
    pub fn traces_url(&self) -> String {
        let base = self.otlp_endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        }
    }
}

/// `[events]`: what happens to connections, sent to a webhook (Standard Webhooks) and/or, in
/// cluster mode, added to a Redis Stream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The variable holding the signing secret: `whsec_` + base64.
    #[serde(default)]
    pub webhook_secret_env: Option<String>,
    /// Cluster mode: events are also added to the stream `{key_prefix}{redis_stream}`.
    #[serde(default)]
    pub redis_stream: Option<String>,
    #[serde(default = "default_event_types")]
    pub types: Vec<EventType>,
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    #[serde(default = "default_batch_ms")]
    pub batch_ms: u64,
    #[serde(default = "default_buffer_max")]
    pub buffer_max: usize,
}

/// The kinds of connection event a consumer may ask for (`node_started`, `node_stopped` and
/// `gap` are always sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Connected,
    Refreshed,
    Closed,
    Revoked,
}

fn default_event_types() -> Vec<EventType> {
    vec![
        EventType::Connected,
        EventType::Refreshed,
        EventType::Closed,
        EventType::Revoked,
    ]
}

fn default_batch_max() -> usize {
    100
}

fn default_batch_ms() -> u64 {
    1000
}

fn default_buffer_max() -> usize {
    100_000
}

/// `[ssf]`: an OpenID Shared Signals transmitter whose CAEP/RISC events close sessions and
/// revoke their tokens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsfConfig {
    /// The transmitter: SETs must carry this `iss`.
    pub issuer: String,
    /// Its key set; without it, `{issuer}/.well-known/ssf-configuration` names it.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// This receiver: SETs must carry this `aud`.
    pub audience: String,
    /// Where pushes (RFC 8935) are taken.
    #[serde(default = "default_push_path")]
    pub push_path: String,
    /// The variable holding the bearer token pushes must carry (none: pushes are taken on
    /// their signature alone).
    #[serde(default)]
    pub push_token_env: Option<String>,
    /// RFC 8936 polling, for a wsgate the transmitter cannot reach.
    #[serde(default)]
    pub poll_url: Option<String>,
    #[serde(default)]
    pub poll_token_env: Option<String>,
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
}

fn default_push_path() -> String {
    "/api/ssf/events".into()
}

fn default_poll_interval_secs() -> u64 {
    10
}

/// The API paths the server answers itself: a push path may not take one.
pub const API_PATHS: [&str; 6] = [
    "/api/tickets",
    "/api/publish",
    "/api/disconnect",
    "/api/reload",
    "/api/handshake-status",
    "/api/demo/token",
];

/// `[shutdown]`: how a SIGTERM drains sockets, so a deploy does not send every
/// client back in the same second.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Sockets closed (`CloseReason::Shutdown`) per interval.
    pub drain_batch: u64,
    pub drain_interval_ms: u64,
    /// By then every socket is closed, and the process exits.
    pub timeout_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_batch: 10_000,
            drain_interval_ms: 2000,
            timeout_secs: 30,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            demo: false,
            trusted_proxies: Vec::new(),
            auth: AuthConfig::default(),
            storage: StorageConfig::default(),
            tickets: TicketsConfig::default(),
            limits: LimitsConfig::default(),
            admin: AdminConfig::default(),
            cluster: None,
            shutdown: ShutdownConfig::default(),
            ssf: None,
            events: None,
            telemetry: None,
            endpoints: vec![
                EndpointConfig::new("/ws", EndpointKind::Pubsub),
                EndpointConfig::new("/echo", EndpointKind::Echo),
            ],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub sources: Vec<SourceKind>,
    pub query_param: String,
    pub cookie_name: String,
    pub allowed_origins: Vec<String>,
    pub reject: RejectMode,
    pub message_timeout_ms: u64,
    /// Seconds before a session's deadline at which `expiring` is sent; 0 = off.
    pub expiry_warning_secs: u64,
    /// An absolute cap on a session's life, whatever its refreshes; 0 = none.
    pub max_session_secs: u64,
    pub proxy_url: Option<String>,
    pub proxy_timeout_ms: u64,
    /// Live sessions of `proxy_url` credentials are checked again this often; 0 = never.
    pub proxy_revalidate_secs: u64,
    /// When a re-check gets no answer: `keep` the session (default) or `close` it (`CloseReason::TryAgainLater`).
    pub revalidate_on_error: wsgate::OnError,
    #[serde(rename = "static")]
    pub static_tokens: Option<StaticConfig>,
    pub jwt: Option<JwtFileConfig>,
    /// Identity providers (`[[auth.providers]]`), beside `[auth.jwt]` (which is one named `jwt`).
    pub providers: Vec<ProviderConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            sources: wsgate::Sources::default().order().to_vec(),
            query_param: "token".into(),
            cookie_name: "wsgate_session".into(),
            allowed_origins: Vec::new(),
            reject: RejectMode::Http,
            message_timeout_ms: 5000,
            expiry_warning_secs: 30,
            max_session_secs: 0,
            proxy_url: None,
            proxy_timeout_ms: 2000,
            proxy_revalidate_secs: 0,
            revalidate_on_error: wsgate::OnError::Keep,
            static_tokens: None,
            jwt: None,
            providers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    pub tokens: BTreeMap<String, String>,
    pub channels: Vec<String>,
    pub publish: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtFileConfig {
    pub algorithms: Vec<Algorithm>,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub public_key_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<OneOrMany>,
    pub leeway_secs: u64,
    pub require_exp: bool,
}

impl Default for JwtFileConfig {
    fn default() -> Self {
        Self {
            algorithms: vec![Algorithm::HS256],
            secret: None,
            secret_env: None,
            public_key_file: None,
            jwks_url: None,
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_secs: wsgate::verify::DEFAULT_LEEWAY.as_secs(),
            require_exp: true,
        }
    }
}

impl JwtFileConfig {
    /// Whether any key material is configured; if not, the secret kept in the store is used.
    pub fn has_key_material(&self) -> bool {
        self.secret.is_some()
            || self.secret_env.is_some()
            || self.public_key_file.is_some()
            || self.jwks_url.is_some()
            || self.jwks_file.is_some()
    }
    pub fn audience(&self) -> Vec<String> {
        match &self.audience {
            None => Vec::new(),
            Some(OneOrMany::One(a)) => vec![a.clone()],
            Some(OneOrMany::Many(a)) => a.clone(),
        }
    }
}

/// One `[[auth.providers]]` entry: a JWT issuer with its own keys (the key sources of
/// `[auth.jwt]`, or OpenID discovery) and its own claim names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub discovery: bool,
    #[serde(default = "default_provider_algorithms")]
    pub algorithms: Vec<Algorithm>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub audience: Option<OneOrMany>,
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    #[serde(default = "default_true")]
    pub require_exp: bool,
    #[serde(default)]
    pub claims: ClaimsConfig,
    /// RFC 7662: opaque tokens are asked of this endpoint, instead of keys.
    #[serde(default)]
    pub introspection_url: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// The variable holding the client secret for introspection (never in the file).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default = "default_introspection_cache_secs")]
    pub introspection_cache_secs: u64,
    /// Live sessions of this provider's tokens are introspected again this often; 0 = never.
    #[serde(default)]
    pub revalidate_secs: u64,
}

fn default_introspection_cache_secs() -> u64 {
    60
}

/// Where a provider's tokens carry the subject and the channel patterns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimsConfig {
    pub subject: String,
    pub channels: String,
    pub publish: String,
}

impl Default for ClaimsConfig {
    /// The library's own default names, written once there.
    fn default() -> Self {
        let map = wsgate::verify::ClaimMap::default();
        Self {
            subject: map.subject.as_str().into(),
            channels: map.channels.as_str().into(),
            publish: map.publish.as_str().into(),
        }
    }
}

impl ClaimsConfig {
    /// The mapping, or the first claim name that cannot be a path (with its key).
    pub fn map(&self) -> Result<wsgate::verify::ClaimMap, (&'static str, String)> {
        use wsgate::verify::ClaimPath;
        let path =
            |key: &'static str, name: &str| ClaimPath::new(name).map_err(|e| (key, e.to_string()));
        Ok(wsgate::verify::ClaimMap {
            subject: path("subject", &self.subject)?,
            channels: path("channels", &self.channels)?,
            publish: path("publish", &self.publish)?,
        })
    }
}

fn default_provider_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::RS256, Algorithm::ES256]
}
fn default_leeway() -> u64 {
    wsgate::verify::DEFAULT_LEEWAY.as_secs()
}
fn default_true() -> bool {
    true
}

impl ProviderConfig {
    /// The key and claim settings as `[auth.jwt]` spells them, so one builder serves both.
    pub fn jwt(&self) -> JwtFileConfig {
        JwtFileConfig {
            algorithms: self.algorithms.clone(),
            secret: self.secret.clone(),
            secret_env: self.secret_env.clone(),
            public_key_file: self.public_key_file.clone(),
            jwks_url: self.jwks_url.clone(),
            jwks_file: self.jwks_file.clone(),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway_secs: self.leeway_secs,
            require_exp: self.require_exp,
        }
    }
}

/// The name `[auth.jwt]` has among the providers.
pub const JWT_PROVIDER: &str = "jwt";

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub path: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            path: "wsgate.db".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketsConfig {
    pub ttl_secs: u64,
}

impl Default for TicketsConfig {
    fn default() -> Self {
        Self { ttl_secs: 30 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_message_bytes: usize,
    pub handshake_timeout_ms: u64,
    pub idle_timeout_secs: u64,
    pub max_connections_per_user: u32,
    pub messages_per_sec: u32,
    pub auth_failures_per_min: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 65536,
            handshake_timeout_ms: 5000,
            idle_timeout_secs: 60,
            max_connections_per_user: 100,
            messages_per_sec: 100,
            auth_failures_per_min: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub api_key_env: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            api_key_env: "WSGATE_ADMIN_KEY".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster (Redis ≥ 7), instead of `redis_url`.
    pub redis_cluster: Vec<String>,
    pub key_prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_cluster: Vec::new(),
            key_prefix: "wsgate:".into(),
        }
    }
}

/// Which Redis the nodes share.
#[derive(Debug, Clone, Copy)]
pub enum RedisBackend<'a> {
    /// One Redis (`redis_url`).
    Single(&'a str),
    /// A Redis Cluster's seed nodes (`redis_cluster`).
    Cluster(&'a [String]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    Echo,
    Pubsub,
    Proxy,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Pubsub => "pubsub",
            Self::Proxy => "proxy",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub path: String,
    pub kind: EndpointKind,
    #[serde(default = "yes")]
    pub welcome: bool,
    #[serde(default)]
    pub sources: Option<Vec<SourceKind>>,
    #[serde(default)]
    pub upstream: Option<String>,
    /// Proxy: TCP connect + TLS + upstream handshake, in ms.
    #[serde(default = "upstream_timeout_ms")]
    pub upstream_timeout_ms: u64,
    /// Proxy: PEM roots for a `wss://` upstream (default: the system's).
    #[serde(default)]
    pub upstream_ca_file: Option<PathBuf>,
    /// Proxy: take `refresh` frames in-band and send `expiring` (default false).
    #[serde(default)]
    pub refresh_frames: bool,
    /// Claims a credential must hold here: claim name (dotted for
    /// nested) → a value or a list of values.
    #[serde(default)]
    pub require: BTreeMap<String, OneOrMany>,
}

fn upstream_timeout_ms() -> u64 {
    5000
}

impl EndpointConfig {
    /// The endpoint's `require`, as the library checks it; or the first entry that cannot be
    /// one (its claim name, why).
    pub fn requirements(&self) -> Result<wsgate::verify::Requirements, (String, String)> {
        let mut req = wsgate::verify::Requirements::new();
        for (claim, values) in &self.require {
            let path = wsgate::verify::ClaimPath::new(claim)
                .map_err(|e| (claim.clone(), e.to_string()))?;
            let values = match values {
                OneOrMany::One(v) => vec![v.clone()],
                OneOrMany::Many(v) => v.clone(),
            };
            if values.is_empty() || values.iter().any(String::is_empty) {
                let why = "give a non-empty value, or a list of them".to_owned();
                return Err((claim.clone(), why));
            }
            req = req.with(path, values);
        }
        Ok(req)
    }

    /// A proxy endpoint's upstream, ready to connect (reads `upstream_ca_file`); `Ok(None)`
    /// for other kinds. `check` calls it, so `check-config` refuses what `serve` could not use.
    pub fn upstream(&self) -> Result<Option<wsgate::relay::Upstream>, (&'static str, String)> {
        let Some(url) = self
            .upstream
            .as_deref()
            .filter(|_| self.kind == EndpointKind::Proxy)
        else {
            return Ok(None);
        };
        let timeout = std::time::Duration::from_millis(self.upstream_timeout_ms);
        let upstream =
            wsgate::relay::Upstream::new(url, timeout).map_err(|e| ("upstream", e.to_string()))?;
        match &self.upstream_ca_file {
            None => Ok(Some(upstream)),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    (
                        "upstream_ca_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                upstream
                    .with_ca_pem(&pem)
                    .map(Some)
                    .map_err(|e| ("upstream_ca_file", format!("{}: {e}", path.display())))
            }
        }
    }
}

fn yes() -> bool {
    true
}

impl EndpointConfig {
    fn new(path: &str, kind: EndpointKind) -> Self {
        Self {
            path: path.into(),
            kind,
            welcome: true,
            sources: None,
            upstream: None,
            upstream_timeout_ms: upstream_timeout_ms(),
            upstream_ca_file: None,
            refresh_frames: false,
            require: BTreeMap::new(),
        }
    }
}

/// Paths the server itself answers; endpoints may not take them.
pub const RESERVED_PATHS: [&str; 5] = ["/healthz", "/readyz", "/metrics", "/api", "/wsgate.js"];

/// Upper bounds for numbers that become timers: past them a value is a typo, and near
/// `u64::MAX` it would overflow a deadline.
const MAX_MS: u64 = 3_600_000;
const MAX_SECS: u64 = 365 * 24 * 3600;
/// Longest re-check period: a day (a credential unchecked for longer is not "continuous").
const MAX_REVALIDATE_SECS: u64 = 24 * 3600;

impl Config {
    /// Cluster mode's settings, when `cluster.redis_url` or `cluster.redis_cluster` is set.
    pub fn cluster_mode(&self) -> Option<(RedisBackend<'_>, &ClusterConfig)> {
        let c = self.cluster.as_ref()?;
        match (&c.redis_url, c.redis_cluster.as_slice()) {
            (Some(url), _) => Some((RedisBackend::Single(url), c)),
            (None, []) => None,
            (None, seeds) => Some((RedisBackend::Cluster(seeds), c)),
        }
    }

    /// `explicit` if given (it must exist), else `./wsgate.toml` if present, else defaults.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Origin), ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None if Path::new("wsgate.toml").is_file() => PathBuf::from("wsgate.toml"),
            None => {
                let cfg = Config::default();
                let _ = cfg.check(&Origin::Defaults)?;
                return Ok((cfg, Origin::Defaults));
            }
        };
        let origin = Origin::File(path.clone());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::new(&origin, "", format!("cannot read the file: {e}")))?;
        let cfg = Self::parse(&text, &origin)?;
        Ok((cfg, origin))
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str, origin: &Origin) -> Result<Config, ConfigError> {
        let error = |key: String, e: toml::de::Error| {
            let problem = e.message().trim().to_owned() + &line_of(text, &e);
            ConfigError::new(origin, key, problem)
        };
        // Not valid TOML: the line says where.
        let document = toml::Deserializer::parse(text).map_err(|e| error(String::new(), e))?;
        // Valid TOML but not a config: the deserializer's own path names the key.
        let cfg: Config = serde_path_to_error::deserialize(document).map_err(|e| {
            let key = match e.path().to_string() {
                root if root == "." => String::new(),
                key => key,
            };
            error(key, e.into_inner())
        })?;
        let _ = cfg.check(origin)?;
        Ok(cfg)
    }

    /// `trusted_proxies` as networks; the first bad entry's index and why.
    pub fn trusted_proxies(&self) -> Result<wsgate::TrustedProxies, (usize, String)> {
        let nets = self
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, p)| p.parse::<wsgate::IpNet>().map_err(|e| (i, e)));
        Ok(wsgate::TrustedProxies::new(
            nets.collect::<Result<Vec<_>, _>>()?,
        ))
    }

    /// Value checks beyond types. File-system and environment checks that depend on the
    /// keys (secret variables, key files) happen when the verifiers are built.
    pub fn check(&self, origin: &Origin) -> Result<Checked, ConfigError> {
        let err = |key: &str, problem: String| Err(ConfigError::new(origin, key, problem));
        if let Err(e) = check_listen(&self.listen) {
            return err("listen", e);
        }
        let trusted_proxies = match self.trusted_proxies() {
            Ok(t) => t,
            Err((i, e)) => return err(&format!("trusted_proxies[{i}]"), e),
        };
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for (key, value, min, max) in [
            (
                "auth.message_timeout_ms",
                self.auth.message_timeout_ms,
                1,
                MAX_MS,
            ),
            (
                "auth.proxy_timeout_ms",
                self.auth.proxy_timeout_ms,
                1,
                MAX_MS,
            ),
            (
                "auth.expiry_warning_secs",
                self.auth.expiry_warning_secs,
                0,
                MAX_SECS,
            ),
            (
                "auth.max_session_secs",
                self.auth.max_session_secs,
                0,
                MAX_SECS,
            ),
            (
                "auth.proxy_revalidate_secs",
                self.auth.proxy_revalidate_secs,
                0,
                MAX_REVALIDATE_SECS,
            ),
            ("tickets.ttl_secs", self.tickets.ttl_secs, 1, 3600),
            (
                "shutdown.drain_batch",
                self.shutdown.drain_batch,
                1,
                10_000_000,
            ),
            (
                "shutdown.drain_interval_ms",
                self.shutdown.drain_interval_ms,
                1,
                60_000,
            ),
            ("shutdown.timeout_secs", self.shutdown.timeout_secs, 1, 3600),
            (
                "limits.handshake_timeout_ms",
                self.limits.handshake_timeout_ms,
                1,
                MAX_MS,
            ),
            (
                "limits.idle_timeout_secs",
                self.limits.idle_timeout_secs,
                0,
                MAX_SECS,
            ),
            (
                "limits.max_message_bytes",
                self.limits.max_message_bytes as u64,
                128,
                64 * 1024 * 1024,
            ),
        ] {
            if !(min..=max).contains(&value) {
                return err(
                    key,
                    format!("must be between {min} and {max} (got {value})"),
                );
            }
        }
        if let Some(jwt) = &self.auth.jwt
            && jwt.leeway_secs > MAX_SECS
        {
            return err(
                "auth.jwt.leeway_secs",
                format!("must be at most {MAX_SECS}"),
            );
        }
        if self.storage.path.as_os_str().is_empty() {
            return err(
                "storage.path",
                "must not be empty (SQLite would use a temporary database, and revocations, API keys and the generated secret would be lost at exit); name a file such as \"wsgate.db\"".into(),
            );
        }
        check_sources("auth.sources", &self.auth.sources, &self.auth, origin)?;
        if self.auth.query_param.is_empty() {
            return err("auth.query_param", "must not be empty".into());
        }
        if self.auth.cookie_name.is_empty() {
            return err("auth.cookie_name", "must not be empty".into());
        }
        for o in &self.auth.allowed_origins {
            if !(o.starts_with("http://") || o.starts_with("https://")) {
                return err(
                    "auth.allowed_origins",
                    format!("`{o}` is not an origin like https://app.example"),
                );
            }
        }
        if let Some(url) = &self.auth.proxy_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return err("auth.proxy_url", format!("`{url}` is not an http(s) URL"));
        }
        if self.auth.proxy_revalidate_secs > 0 && self.auth.proxy_url.is_none() {
            return err(
                "auth.proxy_revalidate_secs",
                "re-checks `auth.proxy_url` sessions: set `proxy_url` too".into(),
            );
        }
        if let Some(jwt) = &self.auth.jwt {
            check_jwt("auth.jwt", jwt, origin)?;
        }
        self.check_providers(origin)?;
        if let Some(c) = &self.cluster {
            if let Some(url) = &c.redis_url
                && let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str())
            {
                return err(
                    "cluster.redis_url",
                    format!("not a Redis URL (redis://, rediss://, redis+unix://): {e}"),
                );
            }
            if c.redis_url.is_some() && !c.redis_cluster.is_empty() {
                return err(
                    "cluster.redis_cluster",
                    "set either `redis_url` (one Redis) or `redis_cluster` (seed nodes of a Redis Cluster), not both".into(),
                );
            }
            for (i, url) in c.redis_cluster.iter().enumerate() {
                if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
                    return err(
                        &format!("cluster.redis_cluster[{i}]"),
                        format!("not a Redis URL (redis://host:port, rediss://): {e}"),
                    );
                }
            }
            if c.key_prefix.contains(['*', '?', '[', ' ', '{', '}']) {
                return err(
                    "cluster.key_prefix",
                    "must not contain spaces, the glob characters * ? [ or braces".into(),
                );
            }
        }
        if self.endpoints.is_empty() {
            return err(
                "endpoints",
                "configure at least one [[endpoints]] entry".into(),
            );
        }
        let mut seen = Vec::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            let key = |k: &str| format!("endpoints[{i}].{k}");
            if !is_plain_path(&ep.path) {
                return err(
                    &key("path"),
                    format!(
                        "`{}` is not a plain path like /ws (letters, digits, - . _ ~ and / only)",
                        ep.path
                    ),
                );
            }
            if RESERVED_PATHS
                .iter()
                .any(|r| ep.path == *r || ep.path.starts_with(&format!("{r}/")))
            {
                return err(
                    &key("path"),
                    format!("`{}` is reserved by the server", ep.path),
                );
            }
            if self.demo && ["/", "/demo.js", "/demo.css"].contains(&ep.path.as_str()) {
                return err(
                    &key("path"),
                    format!("`{}` is the demo page's (demo = true)", ep.path),
                );
            }
            if seen.contains(&ep.path.as_str()) {
                return err(
                    &key("path"),
                    format!("`{}` is used by two endpoints", ep.path),
                );
            }
            seen.push(&ep.path);
            if let Some(sources) = &ep.sources {
                check_sources(&key("sources"), sources, &self.auth, origin)?;
            }
            match (ep.kind, &ep.upstream) {
                (EndpointKind::Proxy, None) => {
                    return err(
                        &key("upstream"),
                        "a proxy endpoint needs `upstream = \"ws://...\"`".into(),
                    );
                }
                (EndpointKind::Proxy, Some(u))
                    if !(u.starts_with("ws://") || u.starts_with("wss://")) =>
                {
                    return err(
                        &key("upstream"),
                        format!("`{u}` is not a ws:// or wss:// URL"),
                    );
                }
                (EndpointKind::Echo | EndpointKind::Pubsub, Some(_)) => {
                    return err(
                        &key("upstream"),
                        "only proxy endpoints have an upstream".into(),
                    );
                }
                _ => {}
            }
            let upstream = match ep.upstream() {
                Ok(u) => u,
                Err((k, problem)) => return err(&key(k), problem),
            };
            let requirements = match ep.requirements() {
                Ok(r) => r,
                Err((claim, problem)) => return err(&key(&format!("require.{claim}")), problem),
            };
            if !(1..=MAX_MS).contains(&ep.upstream_timeout_ms) {
                return err(
                    &key("upstream_timeout_ms"),
                    format!("must be between 1 and {MAX_MS}"),
                );
            }
            if ep.kind != EndpointKind::Proxy
                && (ep.upstream_ca_file.is_some() || ep.refresh_frames)
            {
                return err(
                    &key(if ep.refresh_frames {
                        "refresh_frames"
                    } else {
                        "upstream_ca_file"
                    }),
                    "only proxy endpoints take this key".into(),
                );
            }
            endpoints.push(CheckedEndpoint {
                upstream,
                requirements,
            });
        }
        let ssf = match &self.ssf {
            Some(ssf) => Some(check_ssf(ssf, origin)?),
            None => None,
        };
        if let Some(events) = &self.events {
            check_events(events, self.cluster_mode().is_some(), origin)?;
        }
        if let Some(telemetry) = &self.telemetry {
            check_telemetry(telemetry, origin)?;
        }
        Ok(Checked {
            trusted_proxies,
            endpoints,
            ssf,
        })
    }
}

/// What checking a config built on the way — kept and handed to the server as it is, so
/// `check-config` and `serve` work from the same values and cannot drift.
#[derive(Debug)]
pub struct Checked {
    /// `trusted_proxies` as networks.
    pub trusted_proxies: wsgate::TrustedProxies,
    /// One per `[[endpoints]]` entry, in order.
    pub endpoints: Vec<CheckedEndpoint>,
    /// `[ssf]`: the SET verifier and the tokens read from their variables.
    pub ssf: Option<CheckedSsf>,
}

/// `[ssf]` as checking built it (its tokens are read from the environment at start:
/// [`SsfConfig::tokens`]).
pub struct CheckedSsf {
    pub verifier: wsgate::verify::set::SetVerifier,
}

impl std::fmt::Debug for CheckedSsf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedSsf")
            .field("issuer", &self.verifier.issuer())
            .finish()
    }
}

/// The bearer tokens of `[ssf]`, read from their variables.
pub struct SsfTokens {
    /// Pushes must carry it.
    pub push: Option<String>,
    /// Polls carry it.
    pub poll: Option<String>,
}

impl SsfConfig {
    /// The push and poll tokens from the variables they name: set, and long enough. Read at
    /// start (and by `check-config`), like the admin key, not when a file is parsed.
    pub fn tokens(&self, origin: &Origin) -> Result<SsfTokens, ConfigError> {
        let token = |key: &str, var: &Option<String>| -> Result<Option<String>, ConfigError> {
            let Some(var) = var else { return Ok(None) };
            let err = |problem| ConfigError::new(origin, format!("ssf.{key}"), problem);
            match std::env::var(var) {
                Ok(t) if t.len() >= MIN_SSF_TOKEN_LEN => Ok(Some(t)),
                Ok(t) => Err(err(format!(
                    "${var} holds a {}-character token; use at least {MIN_SSF_TOKEN_LEN}",
                    t.len()
                ))),
                Err(_) => Err(err(format!("${var} is not set"))),
            }
        };
        Ok(SsfTokens {
            push: token("push_token_env", &self.push_token_env)?,
            poll: token("poll_token_env", &self.poll_token_env)?,
        })
    }
}

/// One endpoint's values beyond its plain settings.
#[derive(Debug)]
pub struct CheckedEndpoint {
    /// A proxy's upstream, ready to dial (its CA file read).
    pub upstream: Option<wsgate::relay::Upstream>,
    /// Its `require`.
    pub requirements: wsgate::verify::Requirements,
}

/// Shortest push or poll token taken: a guessable one would let anyone replay SETs at us (or
/// read ours at the transmitter).
const MIN_SSF_TOKEN_LEN: usize = 16;

/// `[ssf]`: URLs under the https-or-loopback rule, a push path of its own under `/api/` — and
/// the SET verifier built from them.
fn check_ssf(ssf: &SsfConfig, origin: &Origin) -> Result<CheckedSsf, ConfigError> {
    use wsgate::verify::set::SetVerifier;
    let err = |key: &str, problem: String| ConfigError::new(origin, format!("ssf.{key}"), problem);
    if ssf.issuer.is_empty() {
        return Err(err("issuer", "must not be empty".into()));
    }
    if ssf.audience.is_empty() {
        return Err(err("audience", "must not be empty".into()));
    }
    let verifier = match &ssf.jwks_url {
        Some(url) => SetVerifier::with_jwks_url(&ssf.issuer, &ssf.audience, url)
            .map_err(|e| err("jwks_url", e.to_string()))?,
        None => SetVerifier::discovered(&ssf.issuer, &ssf.audience)
            .map_err(|e| err("issuer", format!("the keys are found from it: {e}")))?,
    };
    let path = &ssf.push_path;
    if !path.starts_with("/api/") || !is_plain_path(path) || API_PATHS.contains(&path.as_str()) {
        return Err(err(
            "push_path",
            format!(
                "`{path}` must be a plain path under /api/ that the server does not answer already"
            ),
        ));
    }
    if let Some(url) = &ssf.poll_url {
        wsgate::verify::check_remote_url(url).map_err(|e| err("poll_url", e))?;
    } else if ssf.poll_token_env.is_some() {
        return Err(err("poll_token_env", "polls `poll_url`: set it too".into()));
    }
    if !(1..=3600).contains(&ssf.poll_interval_secs) {
        return Err(err(
            "poll_interval_secs",
            "must be between 1 and 3600".into(),
        ));
    }
    Ok(CheckedSsf { verifier })
}

/// `[events]`: somewhere to send them, a signed webhook under the https-or-loopback rule, a
/// stream only with a cluster, and bounds a consumer cannot be hurt by.
fn check_events(events: &EventsConfig, cluster: bool, origin: &Origin) -> Result<(), ConfigError> {
    let err =
        |key: &str, problem: String| ConfigError::new(origin, format!("events.{key}"), problem);
    if events.webhook_url.is_none() && events.redis_stream.is_none() {
        return Err(err(
            "webhook_url",
            "set `webhook_url` or `redis_stream` (or both): events need somewhere to go".into(),
        ));
    }
    if let Some(url) = &events.webhook_url {
        wsgate::verify::check_remote_url(url).map_err(|e| err("webhook_url", e))?;
        if events.webhook_secret_env.is_none() {
            return Err(err(
                "webhook_secret_env",
                "webhooks are signed: name the variable holding the `whsec_…` secret".into(),
            ));
        }
    } else if events.webhook_secret_env.is_some() {
        return Err(err(
            "webhook_secret_env",
            "signs `webhook_url`: set it too".into(),
        ));
    }
    if let Some(stream) = &events.redis_stream {
        if !cluster {
            return Err(err(
                "redis_stream",
                "needs [cluster] (redis_url or redis_cluster)".into(),
            ));
        }
        if stream.is_empty()
            || stream.len() > 64
            || !stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
        {
            return Err(err(
                "redis_stream",
                "1–64 characters of letters, digits, `-`, `_`, `:` and `.`".into(),
            ));
        }
    }
    if events.types.is_empty() {
        return Err(err("types", "list at least one event type".into()));
    }
    if !(1..=10_000).contains(&events.batch_max) {
        return Err(err("batch_max", "must be between 1 and 10000".into()));
    }
    if !(1..=60_000).contains(&events.batch_ms) {
        return Err(err("batch_ms", "must be between 1 and 60000".into()));
    }
    if !(events.batch_max..=10_000_000).contains(&events.buffer_max) {
        return Err(err(
            "buffer_max",
            "must be between batch_max and 10000000".into(),
        ));
    }
    Ok(())
}

/// `[telemetry]`: an http(s) address with a host and nothing secret in it (spans carry no
/// credential, so a plain-http collector on the local network is allowed), and a name.
fn check_telemetry(telemetry: &TelemetryConfig, origin: &Origin) -> Result<(), ConfigError> {
    let err =
        |key: &str, problem: &str| ConfigError::new(origin, format!("telemetry.{key}"), problem);
    let url = reqwest::Url::parse(&telemetry.otlp_endpoint).map_err(|_| {
        err(
            "otlp_endpoint",
            "must be the collector's OTLP/HTTP address, like `http://127.0.0.1:4318`",
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(err(
            "otlp_endpoint",
            "must be an http:// or https:// address with a host (OTLP/HTTP; gRPC is not spoken)",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(err(
            "otlp_endpoint",
            "takes no user, password or query (they would be logged with the address)",
        ));
    }
    let name = &telemetry.service_name;
    if name.trim().is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(err("service_name", "1–255 printable characters"));
    }
    Ok(())
}

/// Fewest bytes of webhook signing key taken (the Standard Webhooks spec asks for 24–64).
const MIN_WEBHOOK_KEY_LEN: usize = 24;

impl EventsConfig {
    /// The webhook signing key from `webhook_secret_env` (`whsec_` + base64, the prefix
    /// optional), read at start and by `check-config`; `None` without a webhook.
    pub fn webhook_key(&self, origin: &Origin) -> Result<Option<Vec<u8>>, ConfigError> {
        use base64::Engine;
        let Some(var) = &self.webhook_secret_env else {
            return Ok(None);
        };
        let err = |problem: String| ConfigError::new(origin, "events.webhook_secret_env", problem);
        let secret = std::env::var(var).map_err(|_| err(format!("${var} is not set")))?;
        let encoded = secret.strip_prefix("whsec_").unwrap_or(&secret);
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| err(format!("${var} must be `whsec_` followed by base64")))?;
        if key.len() < MIN_WEBHOOK_KEY_LEN {
            return Err(err(format!(
                "${var} holds a {}-byte key; use {MIN_WEBHOOK_KEY_LEN}–64 random bytes (e.g. `whsec_$(openssl rand -base64 32)`)",
                key.len()
            )));
        }
        Ok(Some(key))
    }
}

/// The checks `[auth.jwt]` and every provider's key settings share.
fn check_jwt(table: &str, jwt: &JwtFileConfig, origin: &Origin) -> Result<(), ConfigError> {
    let err = |key: &str, problem: String| {
        Err(ConfigError::new(origin, format!("{table}.{key}"), problem))
    };
    if jwt.algorithms.is_empty() {
        return err("algorithms", "list at least one algorithm".into());
    }
    if jwt.secret.is_some() && jwt.secret_env.is_some() {
        return err(
            "secret_env",
            "set either `secret` or `secret_env`, not both".into(),
        );
    }
    if let Some(url) = &jwt.jwks_url
        && let Err(e) = wsgate::verify::JwksSource::url(url)
    {
        return err("jwks_url", e.to_string());
    }
    Ok(())
}

impl Config {
    /// `[[auth.providers]]`: names (unique, short, printable: they are log fields and metric
    /// labels), issuers (one per provider, at most one provider without), key sources, claim
    /// names.
    fn check_providers(&self, origin: &Origin) -> Result<(), ConfigError> {
        let mut names: Vec<&str> = Vec::new();
        let mut issuers: Vec<Option<&str>> = Vec::new();
        if let Some(jwt) = &self.auth.jwt {
            names.push(JWT_PROVIDER);
            issuers.push(jwt.issuer.as_deref());
        }
        for (i, p) in self.auth.providers.iter().enumerate() {
            let table = format!("auth.providers[{i}]");
            let err = |key: &str, problem: String| {
                Err(ConfigError::new(origin, format!("{table}.{key}"), problem))
            };
            let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if p.name.is_empty() || p.name.len() > 64 || !p.name.chars().all(plain) {
                return err(
                    "name",
                    format!(
                        "`{}` is not a name of 1 to 64 letters, digits, - _ or .",
                        p.name
                    ),
                );
            }
            if names.contains(&p.name.as_str()) {
                let why = if p.name == JWT_PROVIDER {
                    "`jwt` is the name of [auth.jwt]".to_owned()
                } else {
                    format!("another provider is named `{}`", p.name)
                };
                return err("name", why);
            }
            names.push(&p.name);
            if let Some(iss) = &p.issuer {
                if iss.is_empty() {
                    return err("issuer", "must not be empty".into());
                }
                if issuers.contains(&Some(iss.as_str())) {
                    return err("issuer", format!("another provider has the issuer `{iss}`"));
                }
            } else if p.introspection_url.is_some() {
                // Takes opaque tokens only (no JWT routes to it): not the issuer-less JWT one.
            } else if issuers.contains(&None) {
                return err(
                    "issuer",
                    "at most one provider may have no issuer (it takes the tokens whose iss names no other)".into(),
                );
            }
            if p.issuer.is_some() || p.introspection_url.is_none() {
                issuers.push(p.issuer.as_deref());
            }
            let jwt = p.jwt();
            check_jwt(&table, &jwt, origin)?;
            if let Some(url) = &p.introspection_url {
                if jwt.has_key_material() || p.discovery {
                    return err(
                        "introspection_url",
                        "asks the IdP about each token: set no keys or discovery beside it (use another provider for the IdP's JWTs)".into(),
                    );
                }
                if let Err(e) = wsgate::verify::check_remote_url(url) {
                    return err("introspection_url", e);
                }
                if p.client_id.as_deref().is_none_or(str::is_empty) {
                    return err(
                        "client_id",
                        "introspection needs the client id wsgate has at the IdP".into(),
                    );
                }
                if p.client_secret_env.as_deref().is_none_or(str::is_empty) {
                    return err(
                        "client_secret_env",
                        "introspection needs the variable that holds the client secret".into(),
                    );
                }
                if p.introspection_cache_secs > 3600 {
                    return err(
                        "introspection_cache_secs",
                        "must be between 0 and 3600".into(),
                    );
                }
                if p.revalidate_secs > MAX_REVALIDATE_SECS {
                    return err("revalidate_secs", "must be between 0 and 86400".into());
                }
            } else if p.revalidate_secs > 0 {
                return err(
                    "revalidate_secs",
                    "only introspecting providers (introspection_url) are re-checked: a JWT's issuer cannot say it was revoked (use [ssf] for that)".into(),
                );
            } else if p.client_id.is_some() || p.client_secret_env.is_some() {
                return err(
                    if p.client_id.is_some() {
                        "client_id"
                    } else {
                        "client_secret_env"
                    },
                    "only introspecting providers (introspection_url) take this key".into(),
                );
            } else if p.discovery {
                let Some(iss) = &p.issuer else {
                    return err(
                        "discovery",
                        "needs `issuer`: the keys are found from it".into(),
                    );
                };
                if jwt.has_key_material() {
                    return err(
                        "discovery",
                        "takes its keys from the issuer: set no secret, key file or JWKS beside it"
                            .into(),
                    );
                }
                if let Err(e) = wsgate::verify::discovery::document_url(iss) {
                    return err("issuer", e.to_string());
                }
            } else if !jwt.has_key_material() {
                return err(
                    "name",
                    "has no keys: set `discovery = true` (with `issuer`), `jwks_url`, `jwks_file`, `public_key_file`, `secret` or `secret_env`".into(),
                );
            }
            if let Err((key, e)) = p.claims.map() {
                return err(&format!("claims.{key}"), e);
            }
        }
        Ok(())
    }
}

/// `127.0.0.1:8080`, `[::1]:8080` or `localhost:8080`: an address, or a host name with a port.
pub fn check_listen(listen: &str) -> Result<(), String> {
    if listen.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let ok = listen.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && port.parse::<u16>().is_ok()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{listen}` is not an address like 127.0.0.1:8080 or localhost:8080"
        ))
    }
}

/// A path axum can route as a literal: `/`, then segments of unreserved characters. Route
/// syntax (`:x`, `{x}`, `*x`) and anything needing escapes are refused here, not at start.
fn is_plain_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b))
}

fn check_sources(
    key: &str,
    sources: &[SourceKind],
    auth: &AuthConfig,
    origin: &Origin,
) -> Result<(), ConfigError> {
    if sources.is_empty() {
        return Err(ConfigError::new(origin, key, "list at least one source"));
    }
    if sources.contains(&SourceKind::Cookie) && auth.allowed_origins.is_empty() {
        return Err(ConfigError::new(
            origin,
            key,
            "the `cookie` source needs `auth.allowed_origins` (cross-site WebSocket hijacking)",
        ));
    }
    Ok(())
}

fn line_of(text: &str, e: &toml::de::Error) -> String {
    e.span()
        .map(|s| {
            let line = text.as_bytes()[..s.start.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            format!(" (line {line})")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, &Origin::File("t.toml".into()))
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = parse("").unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(
            c.auth.sources,
            [
                SourceKind::Bearer,
                SourceKind::Subprotocol,
                SourceKind::Ticket,
                SourceKind::Query
            ]
        );
        assert_eq!(c.limits.max_message_bytes, 65536);
        assert_eq!(c.tickets.ttl_secs, 30);
        assert_eq!(c.endpoints.len(), 2);
    }

    #[test]
    fn the_spec_example_parses() {
        let c = parse(
            r#"
listen = "127.0.0.1:8080"
demo = false
[auth]
sources = ["bearer", "subprotocol", "ticket", "query"]
query_param = "token"
cookie_name = "wsgate_session"
allowed_origins = ["http://localhost:8080"]
reject = "http"
message_timeout_ms = 5000
[auth.static]
tokens = { "valid-token" = "demo-user" }
[auth.jwt]
algorithms = ["HS256"]
secret_env = "WSGATE_JWT_SECRET"
issuer = "https://issuer.example"
audience = "wsgate"
leeway_secs = 30
require_exp = true
[storage]
path = "wsgate.db"
[tickets]
ttl_secs = 30
[limits]
max_message_bytes = 65536
handshake_timeout_ms = 5000
idle_timeout_secs = 60
max_connections_per_user = 100
messages_per_sec = 100
auth_failures_per_min = 60
[admin]
api_key_env = "WSGATE_ADMIN_KEY"
[[endpoints]]
path = "/ws"
kind = "pubsub"
[[endpoints]]
path = "/echo"
kind = "echo"
"#,
        )
        .unwrap();
        assert_eq!(c.auth.jwt.unwrap().audience(), ["wsgate"]);
    }

    /// Every ```toml block of the README and the config reference parses as written.
    #[test]
    fn every_documented_snippet_parses() {
        for (name, text) in [
            ("README.md", include_str!("../../../README.md")),
            ("docs/config.md", include_str!("../../../docs/config.md")),
        ] {
            let mut blocks = 0;
            for block in text.split("```toml").skip(1) {
                let snippet = block.split("```").next().unwrap_or_default();
                if let Err(e) = parse(snippet) {
                    panic!("{name}: this snippet does not parse ({e}):\n{snippet}");
                }
                blocks += 1;
            }
            assert!(blocks > 0, "{name} has no toml snippet");
        }
    }

    #[test]
    fn unknown_keys_name_the_key_and_file() {
        let e = parse("[auth]\nsorces = [\"bearer\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml"), "{e}");
        assert!(e.contains("auth.sorces"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("listen = \"nope\"", "listen"),
            ("[auth]\nsources = [\"cookie\"]", "auth.sources"),
            ("[auth]\nsources = [\"header\"]", "header"),
            (
                "[auth.jwt]\njwks_url = \"http://idp.example/jwks\"",
                "auth.jwt.jwks_url",
            ),
            ("[auth.jwt]\nalgorithms = [\"none\"]", "none"),
            (
                "[[endpoints]]\npath = \"/api/x\"\nkind = \"echo\"",
                "endpoints[0].path",
            ),
            (
                "[[endpoints]]\npath = \"/p\"\nkind = \"proxy\"",
                "endpoints[0].upstream",
            ),
            (
                "[[endpoints]]\npath = \"/:x\"\nkind = \"echo\"",
                "endpoints[0].path",
            ),
            (
                "[tickets]\nttl_secs = 9223372036854775807",
                "tickets.ttl_secs",
            ),
            (
                "[limits]\nhandshake_timeout_ms = 0",
                "limits.handshake_timeout_ms",
            ),
            (
                "[limits]\nidle_timeout_secs = 18446744073709551615",
                "limits.idle_timeout_secs",
            ),
            ("trusted_proxies = [\"10.0.0.0/33\"]", "trusted_proxies[0]"),
            // Which of several endpoints: the deserializer's path, not a guess from the text.
            (
                "[[endpoints]]\npath = \"/x\"\nkind = \"echo\"\n[[endpoints]]\npath = \"/y\"\nkind = \"ech\"",
                "endpoints[1].kind",
            ),
            (
                "[limits]\nidle_timeout_secs = -1",
                "limits.idle_timeout_secs",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} gave {e}");
        }
    }
}
