//! The verifier chain as a live handle, so a server can change its verifiers (a rotated
//! secret, a new JWKS file, another identity provider) without dropping a socket.
//!
//! An `Authenticator` and a `Revalidator` (layers above this one) hold a [`LiveChain`]; every clone of them (one per endpoint, one per open session) shares
//! it. [`LiveChain::replace`] swaps the verifiers for all of them at once: the next handshake,
//! the next `refresh` of a session already open and the next re-check all use the new ones.
//! A check already under way finishes with the chain it started with.

use std::sync::{Arc, RwLock};

use super::VerifierChain;

/// A shared, replaceable [`VerifierChain`]. Cloning shares it.
#[derive(Clone, Default)]
pub struct LiveChain(Arc<RwLock<Arc<VerifierChain>>>);

impl LiveChain {
    /// A handle on `chain`, shared by its clones.
    pub fn new(chain: VerifierChain) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(chain))))
    }

    /// The chain as it is now (held only for the lock's moment: a slow verifier never
    /// blocks a replacement).
    pub fn current(&self) -> Arc<VerifierChain> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `chain` in place for every holder of this handle.
    pub fn replace(&self, chain: VerifierChain) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(chain);
    }
}

impl From<VerifierChain> for LiveChain {
    fn from(chain: VerifierChain) -> Self {
        Self::new(chain)
    }
}

impl std::fmt::Debug for LiveChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.current().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Credential, SourceKind};
    use crate::verify::{StaticTokens, VerifyContext};

    #[tokio::test]
    async fn a_replacement_is_seen_by_every_clone() {
        let live = LiveChain::new(VerifierChain::new().with(StaticTokens::new([("old", "ann")])));
        let held = live.clone();
        let ctx = VerifyContext::default();
        let old = Credential::new("old", SourceKind::Bearer);
        let new = Credential::new("new", SourceKind::Bearer);
        assert!(held.current().verify(&old, &ctx).await.is_ok());
        live.replace(VerifierChain::new().with(StaticTokens::new([("new", "ann")])));
        assert!(held.current().verify(&old, &ctx).await.is_err());
        assert_eq!(
            held.current().verify(&new, &ctx).await.expect("new").0.sub,
            "ann"
        );
    }
}
