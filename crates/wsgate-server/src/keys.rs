//! API keys: long-lived credentials for services, created and revoked from the CLI.
//!
//! A key reads `wsk_<id>_<secret>`: the id (public, 64 bits) finds the row, the secret (256
//! bits) proves possession. Only `HMAC-SHA256(pepper, secret)` is stored, the pepper being a
//! random value kept in the store's settings; a fast keyed hash fits high-entropy secrets
//! (a password hash would cost milliseconds per handshake for nothing). The CLI writes to the
//! store; the running server reads each key at its handshake (so a revocation refuses new
//! handshakes at once) and sweeps for revoked keys every second to close their sockets.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;
use wsgate::verify::{Verifier, VerifyContext, VerifyError, VerifyFuture, now_unix};
use wsgate::{Cause, CloseOrder, CloseReason, Credential, Registry, Target, Verified};

use crate::store::{ApiKey, Store, StoreError};

const PREFIX: &str = "wsk_";
/// `last_used` is written at most this often per key: a handshake should not be a write.
const LAST_USED_EVERY: u64 = 60;

/// A freshly created key: the only time its secret exists outside the client.
pub struct NewKey {
    pub id: String,
    pub key: String,
}

/// Creates and stores a key for `sub`.
pub fn create(
    store: &Store,
    name: &str,
    sub: &str,
    channels: &[String],
    publish: &[String],
    expires_in: Option<Duration>,
) -> Result<NewKey, StoreError> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| store.error("no randomness"))?;
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| store.error("no randomness"))?;
    let id = wsgate::identity::hex(&id);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let hash = digest(&store.key_pepper()?, &secret);
    let now = now_unix();
    store.insert_key(&ApiKey {
        id: id.clone(),
        name: name.to_owned(),
        sub: sub.to_owned(),
        channels: channels.to_vec(),
        publish: publish.to_vec(),
        created: now,
        last_used: None,
        expires: expires_in.map(|d| now + d.as_secs()),
        revoked: None,
        hash,
    })?;
    Ok(NewKey {
        key: format!("{PREFIX}{id}_{secret}"),
        id,
    })
}

fn digest(pepper: &[u8], secret: &str) -> Vec<u8> {
    hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, pepper),
        secret.as_bytes(),
    )
    .as_ref()
    .to_vec()
}

/// `wsk_<id>_<secret>` → (id, secret).
fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty())
        .then_some((id, secret))
}

/// The verifier for API keys; recognizes only `wsk_` tokens.
pub struct ApiKeyVerifier {
    store: Arc<Store>,
    pepper: Vec<u8>,
}

impl ApiKeyVerifier {
    pub fn new(store: Arc<Store>) -> Result<Self, StoreError> {
        let pepper = store.key_pepper()?;
        Ok(Self { store, pepper })
    }

    async fn check(&self, token: &str) -> Result<Verified, VerifyError> {
        let (id, secret) = parse(token).ok_or(VerifyError::NotRecognized)?;
        let given = digest(&self.pepper, secret);
        let (store, id_owned) = (self.store.clone(), id.to_owned());
        let row = tokio::task::spawn_blocking(move || store.key(&id_owned))
            .await
            .map_err(|_| VerifyError::Unavailable("key store unavailable"))?
            .map_err(|_| VerifyError::Unavailable("key store unavailable"))?
            .ok_or(VerifyError::Invalid("unknown API key"))?;
        if !bool::from(row.hash.ct_eq(&given)) {
            return Err(VerifyError::Invalid("unknown API key"));
        }
        let now = now_unix();
        if row.revoked.is_some() {
            return Err(VerifyError::Invalid("API key revoked"));
        }
        if row.expires.is_some_and(|e| e <= now) {
            return Err(VerifyError::Invalid("API key expired"));
        }
        if row.last_used.is_none_or(|t| t + LAST_USED_EVERY <= now) {
            let store = self.store.clone();
            let id = row.id.clone();
            tokio::task::spawn_blocking(move || store.touch_key(&id, now));
        }
        Ok(Verified {
            sub: row.sub,
            // A subject revocation covers the keys created until it, not the ones after.
            issued_at: Some(row.created),
            expires_at: row.expires,
            channels: row.channels,
            publish: row.publish,
            credential_id: Some(row.id),
            ..Verified::default()
        })
    }
}

impl Verifier for ApiKeyVerifier {
    fn name(&self) -> &'static str {
        "api_key"
    }
    fn verify<'a>(&'a self, cred: &'a Credential, _: &'a VerifyContext) -> VerifyFuture<'a> {
        Box::pin(self.check(cred.token()))
    }
}

/// Closes the sockets of keys revoked from the CLI (another process), checking every second.
pub async fn sweep_revoked(store: Arc<Store>, registry: Arc<Registry>) {
    let mut since = now_unix();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        let (s, from) = (store.clone(), since);
        let Ok(Ok(revoked)) = tokio::task::spawn_blocking(move || s.keys_revoked_since(from)).await
        else {
            continue;
        };
        for (id, at) in revoked {
            since = since.max(at);
            let order = CloseOrder::revoked(CloseReason::KeyRevoked, Cause::Key);
            let closed = registry.close(&Target::Credential(id.clone()), order);
            if !closed.is_empty() {
                tracing::info!(target: "wsgate::keys", key = %id, closed = closed.len(), "API key revoked: sockets closed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_format() {
        assert_eq!(
            parse("wsk_0123456789abcdef_c2VjcmV0"),
            Some(("0123456789abcdef", "c2VjcmV0"))
        );
        assert_eq!(parse("wsk_short_x"), None);
        assert_eq!(parse("wsk_0123456789abcdef_"), None);
        assert_eq!(parse("eyJ.a.b"), None);
    }

    #[tokio::test]
    async fn created_keys_verify_and_revoked_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("k.db")).unwrap());
        let k = create(&store, "ci", "svc", &["a:*".into()], &[], None).unwrap();
        let v = ApiKeyVerifier::new(store.clone()).unwrap();
        let got = v.check(&k.key).await.unwrap();
        assert_eq!(
            (got.sub.as_str(), got.credential_id.as_deref()),
            ("svc", Some(k.id.as_str()))
        );
        assert_eq!(got.channels, ["a:*"]);
        let forged = format!("wsk_{}_{}", k.id, "A".repeat(43));
        assert_eq!(
            v.check(&forged).await,
            Err(VerifyError::Invalid("unknown API key"))
        );
        assert!(store.revoke_key("ci").unwrap());
        assert_eq!(
            v.check(&k.key).await,
            Err(VerifyError::Invalid("API key revoked"))
        );
    }
}
