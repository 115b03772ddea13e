//! Fixed tokens mapped to subjects: the seed's `valid-token`, for development and for
//! service-to-service links that cannot mint JWTs.
//!
//! Tokens are kept only as SHA-256 digests and a candidate is compared with every entry in
//! constant time, so neither the response time nor a memory dump gives a token away.

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::{Verifier, VerifyContext, VerifyError, VerifyFuture};
use crate::identity::Verified;
use crate::source::Credential;

/// `auth.static`: token → subject, with the same channel/publish patterns for all of them.
#[derive(Clone, Default)]
pub struct StaticTokens {
    entries: Vec<([u8; 32], String)>,
    channels: Vec<String>,
    publish: Vec<String>,
}

impl StaticTokens {
    /// Maps each token to its subject.
    pub fn new<T: AsRef<str>, S: Into<String>>(tokens: impl IntoIterator<Item = (T, S)>) -> Self {
        Self {
            entries: tokens
                .into_iter()
                .map(|(t, s)| (digest(t.as_ref()), s.into()))
                .collect(),
            ..Self::default()
        }
    }
    /// Channel patterns every static token may subscribe to (default: none).
    pub fn channels(mut self, patterns: Vec<String>) -> Self {
        self.channels = patterns;
        self
    }
    /// Channel patterns every static token may publish to (default: none).
    pub fn publish(mut self, patterns: Vec<String>) -> Self {
        self.publish = patterns;
        self
    }
    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// Whether there is nothing here.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn lookup(&self, token: &str) -> Option<&str> {
        let candidate = digest(token);
        // Visit every entry whatever matches, and pick the match without a branch on secrets.
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, (d, _)) in self.entries.iter().enumerate() {
            let eq = d.ct_eq(&candidate);
            index.conditional_assign(&(i as u32), eq);
            found |= eq;
        }
        bool::from(found).then(|| self.entries[index as usize].1.as_str())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Verifier for StaticTokens {
    fn name(&self) -> &'static str {
        "static"
    }

    fn verify<'a>(&'a self, cred: &'a Credential, _: &'a VerifyContext) -> VerifyFuture<'a> {
        let result = match self.lookup(cred.token()) {
            Some(sub) => Ok(Verified {
                sub: sub.to_owned(),
                channels: self.channels.clone(),
                publish: self.publish.clone(),
                ..Verified::default()
            }),
            None => Err(VerifyError::NotRecognized),
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceKind;

    fn check(v: &StaticTokens, t: &str) -> Result<Verified, VerifyError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(v.verify(
            &Credential::new(t, SourceKind::Bearer),
            &VerifyContext::default(),
        ))
    }

    #[test]
    fn maps_tokens_to_subjects() {
        let v = StaticTokens::new([("valid-token", "demo-user"), ("other", "bob")])
            .channels(vec!["chat:*".into()]);
        let id = check(&v, "valid-token").unwrap();
        assert_eq!(id.sub, "demo-user");
        assert_eq!(id.channels, vec!["chat:*".to_string()]);
        assert_eq!(check(&v, "other").unwrap().sub, "bob");
        assert_eq!(check(&v, "valid-tokeN"), Err(VerifyError::NotRecognized));
        assert_eq!(check(&v, ""), Err(VerifyError::NotRecognized));
    }
}
