//! Who is connected.
//!
//! Every verifier — static token, JWT, API key, backend proxy — reduces its credential to
//! the same [`Identity`], so the session guard, the endpoints and the user's own handlers
//! never care which kind of credential opened the socket.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::slots::Slot;
use crate::source::{Credential, SourceKind};
use crate::trace::Traced;

/// What a verifier learned from a credential: plain data, no behaviour. Serializable so a
/// ticket can carry it through a shared store (the cluster's Redis).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Verified {
    /// The subject (`sub`): the user or service the credential speaks for.
    pub sub: String,
    /// Unix seconds after which the credential is no longer valid (`exp`), if it expires.
    pub expires_at: Option<u64>,
    /// Unix seconds the credential was issued (`iat`), if known.
    pub issued_at: Option<u64>,
    /// The credential's own id (`jti`), used to revoke one token rather than a subject.
    pub jti: Option<String>,
    /// Channel patterns this identity may subscribe to.
    pub channels: Vec<String>,
    /// Channel patterns this identity may publish to.
    pub publish: Vec<String>,
    /// OAuth scopes (`scope`, space separated in the token).
    pub scopes: Vec<String>,
    /// Every claim as received; null for credentials that carry none.
    pub claims: Claims,
    /// Id of the stored credential (an API key's id), so revoking it can find its sockets.
    pub credential_id: Option<String>,
    /// The identity provider that vouched for it (its configured name), when one did.
    pub provider: Option<Arc<str>>,
    /// How often a live session of this credential is checked again with whoever vouched
    /// for it (an introspecting provider's `revalidate_secs`, `proxy_revalidate_secs`);
    /// `None`: never. Set by the verifier; not part of what a ticket carries.
    #[serde(skip)]
    pub recheck_every: Option<std::time::Duration>,
}

/// A credential's claims, kept as the raw JSON the verifier received and parsed into a
/// [`Value`] only when asked for. Most connections never ask, and a parsed map costs ~0.6 KiB
/// per idle connection where the raw text costs its length.
#[derive(Default)]
pub struct Claims {
    raw: Option<Box<serde_json::value::RawValue>>,
    parsed: std::sync::OnceLock<Value>,
}

impl Claims {
    /// Claims kept as received, parsed on first use.
    pub fn raw(raw: Box<serde_json::value::RawValue>) -> Self {
        Self {
            raw: Some(raw),
            parsed: std::sync::OnceLock::new(),
        }
    }
    /// Claims already parsed (a backend's answer).
    pub fn from_value(v: Value) -> Self {
        Self {
            raw: None,
            parsed: std::sync::OnceLock::from(v),
        }
    }
    /// Whether claim `name` is present and neither `null` nor `false` — without keeping a
    /// parsed copy when the raw text does not even mention it.
    pub fn is_set(&self, name: &str) -> bool {
        let set = |v: &Value| !matches!(v.get(name), None | Some(Value::Null | Value::Bool(false)));
        match (&self.raw, self.parsed.get()) {
            (_, Some(parsed)) => set(parsed),
            (Some(raw), None) if raw.get().contains(name) => set(self.get()),
            _ => false,
        }
    }

    /// `f` of the claims, without keeping a parsed copy when there is none yet (a connection
    /// that never asks for its claims keeps only their raw text).
    pub fn inspect<T>(&self, f: impl FnOnce(&Value) -> T) -> T {
        match (&self.raw, self.parsed.get()) {
            (_, Some(parsed)) => f(parsed),
            (Some(raw), None) => f(&serde_json::from_str(raw.get()).unwrap_or(Value::Null)),
            (None, None) => f(&Value::Null),
        }
    }

    /// Whether a parsed copy is kept (the tests of what keeps one).
    #[cfg(all(test, feature = "relay"))]
    pub(crate) fn is_parsed(&self) -> bool {
        self.parsed.get().is_some()
    }

    /// The claims as JSON (null when the credential carried none or they do not parse).
    pub fn get(&self) -> &Value {
        self.parsed.get_or_init(|| {
            self.raw
                .as_ref()
                .and_then(|r| serde_json::from_str(r.get()).ok())
                .unwrap_or(Value::Null)
        })
    }
}

impl Serialize for Claims {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (&self.raw, self.parsed.get()) {
            (Some(raw), None) => raw.serialize(s),
            _ => self.get().serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<serde_json::value::RawValue>::deserialize(d).map(Claims::raw)
    }
}

impl Clone for Claims {
    fn clone(&self) -> Self {
        match &self.raw {
            Some(r) => Self::raw(r.clone()),
            None => Self::from_value(self.get().clone()),
        }
    }
}

impl PartialEq for Claims {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// An authenticated connection: what was verified, plus where it came from and a session id
/// that names this one connection (a subject may hold many).
#[derive(Debug, Clone)]
pub struct Identity {
    inner: Arc<IdentityInner>,
}

#[derive(Debug)]
struct IdentityInner {
    verified: Verified,
    session: String,
    source: SourceKind,
    verifier: &'static str,
    /// The subject's connection slot, given back when the last clone goes (the session).
    slot: Option<Arc<Slot>>,
    /// The client's address (behind trusted proxies, the one they name), when known: a
    /// refused `refresh` counts against it like a refused handshake.
    remote: Option<IpAddr>,
    /// The credential itself, kept only when it must be checked again
    /// ([`Verified::recheck_every`]).
    kept: Option<Arc<Kept>>,
    /// The handshake's trace, when its endpoint traces: the session's later spans join it.
    trace: Option<Arc<Traced>>,
}

/// A credential kept in a live session's memory so it can be checked again with whoever
/// vouched for it: never logged, never stored or shared, zeroed when the last session holding
/// it ends ([`Credential`]'s drop). A `refresh` replaces it.
pub struct Kept {
    pub(crate) credential: Credential,
    /// SHA-256 of the token: sessions sharing a token share one check.
    pub(crate) digest: [u8; 32],
    /// The handshake's `Origin`, sent again with a backend re-check.
    pub(crate) origin: Option<String>,
}

impl Kept {
    /// Keeps `credential` (with the handshake's `origin`).
    pub(crate) fn new(credential: Credential, origin: Option<String>) -> Arc<Self> {
        let digest = crate::source::digest(credential.token());
        Arc::new(Self {
            credential,
            digest,
            origin,
        })
    }
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kept(<redacted>)")
    }
}

impl Identity {
    /// Wraps a verification result with a fresh random session id.
    pub fn new(verified: Verified, source: SourceKind, verifier: &'static str) -> Self {
        Self::with_slot(verified, source, verifier, None, None, None)
    }

    /// The same identity, its session's spans joined to `trace` (the handshake's). Called on
    /// an identity just made, before anything holds a clone of it.
    pub(crate) fn traced(mut self, trace: Option<Arc<Traced>>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.trace = trace;
        }
        self
    }

    /// The handshake's trace, when the endpoint traces.
    pub fn trace(&self) -> Option<&Arc<Traced>> {
        self.inner.trace.as_ref()
    }

    pub(crate) fn with_slot(
        verified: Verified,
        source: SourceKind,
        verifier: &'static str,
        slot: Option<Slot>,
        remote: Option<IpAddr>,
        kept: Option<Arc<Kept>>,
    ) -> Self {
        Self {
            inner: Arc::new(IdentityInner {
                verified,
                session: new_session_id(),
                source,
                verifier,
                slot: slot.map(Arc::new),
                remote,
                kept,
                trace: None,
            }),
        }
    }

    /// The subject: who the credential speaks for.
    pub fn sub(&self) -> &str {
        &self.inner.verified.sub
    }
    /// Names this connection; `POST /api/disconnect {"session": ...}` targets it.
    pub fn session(&self) -> &str {
        &self.inner.session
    }
    /// The credential's `exp` (unix seconds), if it expires.
    pub fn expires_at(&self) -> Option<u64> {
        self.inner.verified.expires_at
    }
    /// The credential's `iat` (unix seconds), if known.
    pub fn issued_at(&self) -> Option<u64> {
        self.inner.verified.issued_at
    }
    /// The credential's own id (`jti`), if any.
    pub fn jti(&self) -> Option<&str> {
        self.inner.verified.jti.as_deref()
    }
    /// Channel patterns this identity may subscribe to.
    pub fn channels(&self) -> &[String] {
        &self.inner.verified.channels
    }
    /// Channel patterns this identity may publish to.
    pub fn publish(&self) -> &[String] {
        &self.inner.verified.publish
    }
    /// OAuth scopes.
    pub fn scopes(&self) -> &[String] {
        &self.inner.verified.scopes
    }
    /// Every claim as received (parsed on first use; null for credentials without claims).
    pub fn claims(&self) -> &Value {
        self.inner.verified.claims.get()
    }
    /// `f` of the claims, without keeping a parsed copy on this identity for the rest of
    /// the connection when none was kept yet ([`Claims::inspect`]).
    #[cfg(feature = "relay")]
    pub(crate) fn inspect_claims<T>(&self, f: impl FnOnce(&Value) -> T) -> T {
        self.inner.verified.claims.inspect(f)
    }
    /// The stored credential's id (API keys), if any.
    pub fn credential_id(&self) -> Option<&str> {
        self.inner.verified.credential_id.as_deref()
    }
    /// What the verifier learned, as plain data.
    pub fn verified(&self) -> &Verified {
        &self.inner.verified
    }
    /// Where the credential travelled.
    pub fn source(&self) -> SourceKind {
        self.inner.source
    }
    /// Which verifier accepted it (`"static"`, `"jwt"`, `"proxy"`, …).
    pub fn verifier(&self) -> &'static str {
        self.inner.verifier
    }
    /// Who vouched for the credential: the identity provider's configured name (`jwt` for
    /// `[auth.jwt]`), or for other credentials the verifier's (`static`, `api_key`, `proxy`).
    /// A bounded set of names: fit for log fields, metric labels and `X-Wsgate-Provider`.
    pub fn provider(&self) -> &str {
        self.inner
            .verified
            .provider
            .as_deref()
            .unwrap_or(self.inner.verifier)
    }
    /// [`Self::provider`] as a metric label, sharing the name rather than copying it.
    pub(crate) fn provider_label(&self) -> metrics::SharedString {
        match &self.inner.verified.provider {
            Some(name) => name.clone().into(),
            None => self.inner.verifier.into(),
        }
    }
    /// The client's address, when the handshake knew it.
    pub fn remote_ip(&self) -> Option<IpAddr> {
        self.inner.remote
    }

    /// The credential kept for re-checking this session, if it is re-checked.
    pub(crate) fn kept(&self) -> Option<&Arc<Kept>> {
        self.inner.kept.as_ref()
    }

    /// The same connection with a refreshed credential (same session id, source and slot).
    pub fn refreshed(&self, verified: Verified, verifier: &'static str) -> Self {
        self.replaced(verified, verifier, None)
    }

    /// The same connection after a new credential (`kept`: the new one, if it is re-checked).
    pub(crate) fn replaced(
        &self,
        verified: Verified,
        verifier: &'static str,
        kept: Option<Arc<Kept>>,
    ) -> Self {
        Self {
            inner: Arc::new(IdentityInner {
                verified,
                session: self.inner.session.clone(),
                source: self.inner.source,
                verifier,
                slot: self.inner.slot.clone(),
                remote: self.inner.remote,
                kept,
                trace: self.inner.trace.clone(),
            }),
        }
    }

    /// The same connection and credential after its issuer vouched for it again.
    pub(crate) fn revalidated(&self, verified: Verified) -> Self {
        self.replaced(verified, self.inner.verifier, self.inner.kept.clone())
    }

    /// The first frame a client receives: `{"type":"welcome","sub","session","expires_at"}`.
    pub fn welcome_frame(&self) -> String {
        crate::protocol::ServerFrame::Welcome {
            sub: self.sub(),
            session: self.session(),
            expires_at: self.expires_at(),
        }
        .to_text()
    }
}

/// 128 random bits, hex: unguessable, so knowing one session id gives no handle on another.
/// aws-lc's user-space DRBG: no syscall on the handshake path.
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // The RNG failing is not something a caller can fix; a session id is not a secret
        // that grants access, so fall back to time-derived uniqueness rather than refusing.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = nanos.to_le_bytes();
    }
    hex(&bytes)
}

/// Whether `claims[name]` is the string `value`, or a list holding it: how sessions and
/// revocations are matched by claim (a tenant, a role, a Shared Signals session's `sid`).
/// `email` is compared without regard to ASCII case, as addresses are.
pub fn claim_holds(claims: &Value, name: &str, value: &str) -> bool {
    let same = |s: &str| {
        if name == "email" {
            s.eq_ignore_ascii_case(value)
        } else {
            s == value
        }
    };
    match claims.get(name) {
        Some(Value::String(s)) => same(s),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).any(same),
        _ => false,
    }
}

/// Lower-case hex of `bytes` (ids and digests, here and in the server).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welcome_frame_has_the_spec_fields() {
        let id = Identity::new(
            Verified {
                sub: "alice".into(),
                expires_at: Some(42),
                ..Default::default()
            },
            SourceKind::Bearer,
            "jwt",
        );
        let v: Value = serde_json::from_str(&id.welcome_frame()).unwrap();
        assert_eq!(v["type"], "welcome");
        assert_eq!(v["sub"], "alice");
        assert_eq!(v["session"], id.session());
        assert_eq!(v["expires_at"], 42);
    }

    #[test]
    fn sessions_are_distinct_and_128_bit() {
        let a = Identity::new(Verified::default(), SourceKind::Bearer, "static");
        let b = Identity::new(Verified::default(), SourceKind::Bearer, "static");
        assert_ne!(a.session(), b.session());
        assert_eq!(a.session().len(), 32);
    }
}
