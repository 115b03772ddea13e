//! Ask a backend: POST the credential to `auth.proxy_url` and take its JSON answer as the
//! identity, so any existing session system (Rails cookies, Django sessions, an in-house
//! token service) can authenticate WebSockets without wsgate knowing its format.
//!
//! Request: `{"token","source","remote_addr","origin"}`. `200` with
//! `{"sub", "expires_at"?, "channels"?, "publish"?}` accepts; any other status refuses (401);
//! no answer within the timeout, or an unusable answer, is `Unavailable` (503): the client is
//! not at fault, so it is not told its credential is bad.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::claims::words;
use super::{BodyError, Verifier, VerifyContext, VerifyError, VerifyFuture, read_bounded};
use crate::identity::{Claims, Verified};
use crate::source::Credential;

const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Asks a backend over HTTP (`auth.proxy_url`): POST the credential, take its identity.
pub struct ProxyVerifier {
    url: String,
    client: reqwest::Client,
    /// How often live sessions are checked again (`auth.proxy_revalidate_secs`).
    recheck_every: Option<Duration>,
}

impl ProxyVerifier {
    /// POSTs to `url`; no answer within `timeout` is a 503.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Self {
        Self {
            url: url.into(),
            client: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()
                .unwrap_or_default(),
            recheck_every: None,
        }
    }

    /// Checks live sessions again every `period` (zero: never).
    pub fn revalidate_every(mut self, period: Duration) -> Self {
        self.recheck_every = Some(period).filter(|p| !p.is_zero());
        self
    }

    async fn ask(&self, cred: &Credential, ctx: &VerifyContext) -> Result<Verified, VerifyError> {
        #[derive(Serialize)]
        struct Ask<'a> {
            token: &'a str,
            source: &'static str,
            remote_addr: Option<String>,
            origin: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            session: Option<&'a str>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            revalidate: bool,
        }
        let ask = Ask {
            token: cred.token(),
            source: cred.source().as_str(),
            remote_addr: ctx.remote_addr.map(|a| a.ip().to_string()),
            origin: ctx.origin.as_deref(),
            session: ctx.recheck.as_deref(),
            revalidate: ctx.recheck.is_some(),
        };
        let res = self
            .client
            .post(&self.url)
            .json(&ask)
            .send()
            .await
            .map_err(|e| {
                let why = if e.is_timeout() {
                    "auth backend timed out"
                } else {
                    "auth backend unreachable"
                };
                tracing::warn!(target: "wsgate::proxy", error = %e.without_url(), "{why}");
                VerifyError::Unavailable(why)
            })?;
        if ctx.recheck.is_some() && res.status().is_server_error() {
            // A re-check the backend could not answer says nothing about the session.
            return Err(VerifyError::Unavailable("auth backend failed"));
        }
        if res.status() != reqwest::StatusCode::OK {
            return Err(VerifyError::Invalid("refused by auth backend"));
        }
        let body = read_bounded(res, MAX_ANSWER_BYTES).await.map_err(|e| {
            VerifyError::Unavailable(match e {
                BodyError::TooLarge => "auth backend answer too large",
                BodyError::Failed(e) if e.is_timeout() => "auth backend timed out",
                BodyError::Failed(_) => "auth backend unreachable",
            })
        })?;
        let mut verified = parse_answer(&body)?;
        verified.recheck_every = self.recheck_every;
        Ok(verified)
    }
}

/// The backend's identity document.
fn parse_answer(body: &[u8]) -> Result<Verified, VerifyError> {
    #[derive(Deserialize)]
    struct Answer {
        sub: String,
        #[serde(default)]
        expires_at: Option<Value>,
    }
    let claims: Value = serde_json::from_slice(body)
        .map_err(|_| VerifyError::Unavailable("auth backend answered with invalid JSON"))?;
    let answer: Answer = serde_json::from_value(claims.clone())
        .map_err(|_| VerifyError::Unavailable("auth backend answer lacks a usable sub"))?;
    if answer.sub.is_empty() {
        return Err(VerifyError::Unavailable(
            "auth backend answer lacks a usable sub",
        ));
    }
    Ok(Verified {
        sub: answer.sub,
        expires_at: answer.expires_at.as_ref().and_then(super::numeric_date),
        channels: words(claims.get("channels")),
        publish: words(claims.get("publish")),
        claims: Claims::from_value(claims),
        ..Verified::default()
    })
}

impl Verifier for ProxyVerifier {
    fn name(&self) -> &'static str {
        "proxy"
    }
    fn verify<'a>(&'a self, cred: &'a Credential, ctx: &'a VerifyContext) -> VerifyFuture<'a> {
        Box::pin(self.ask(cred, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let v = parse_answer(br#"{"sub":"a","expires_at":5,"channels":["x"]}"#).unwrap();
        assert_eq!((v.sub.as_str(), v.expires_at), ("a", Some(5)));
        assert_eq!(v.channels, ["x"]);
        assert!(parse_answer(br#"{"expires_at":5}"#).is_err());
        let v = parse_answer(br#"{"sub":"a","expires_at":7.9}"#).unwrap();
        assert_eq!(v.expires_at, Some(7), "fractional NumericDate");
        let v = parse_answer(br#"{"sub":"a","expires_at":1e16}"#).unwrap();
        assert_eq!(
            v.expires_at,
            Some(10_000_000_000_000_000),
            "absurd but usable"
        );
        assert!(parse_answer(b"nope").is_err());
    }
}
