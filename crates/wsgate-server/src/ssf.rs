//! The OpenID Shared Signals receiver: revocations pushed (RFC 8935) or polled (RFC 8936) by
//! the identity provider, acted on like `/api/disconnect` with `"revoke": true`.
//!
//! A Security Event Token is verified by the library (`wsgate::verify::set`: typ, signature by
//! the transmitter's keys, iss, aud), de-duplicated by its `jti` (on this node, and in cluster
//! mode once for the whole cluster through Redis `SET NX`), and each event wsgate acts on —
//! CAEP session-revoked and credential-change, RISC account-disabled, account-purged and
//! sessions-revoked — closes the matching sessions (`CloseReason::Revoked`) on every node
//! and refuses the subject's (or the session's) tokens issued before the event, across
//! restarts, as an admin revocation does (`revoke.rs`). Other events are accepted and
//! counted.
//!
//! Subjects: `iss_sub` → the subject's sessions from the provider with that issuer (any
//! provider's, when the transmitter is the issuer and no provider names it); `email` → the
//! `email` claim (ASCII case ignored); `opaque` → the subject; `complex` with `session` → the
//! `sid` claim.
//!
//! The push endpoint answers as RFC 8935 §2.3 says — `202` with no body, or `400` with
//! `{"err","description"}`, `401` `authentication_failed` for a missing or wrong push token —
//! not with wsgate's own error body: the transmitter is the client, and it speaks RFC 8935.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wsgate::verify::set::{MAX_SET_BYTES, SecurityEvent, SetError, SetVerifier, Subject};
use wsgate::{Cause, Registry, Revocations, Revoked, Target};

use crate::admin::bearer_matches;
use crate::cluster::Cluster;
use crate::cluster::control::{Announced, announce_disconnect};
use crate::events::Events;
use crate::revoke::{FOR_GOOD, carry_out, keep_revocations};
use crate::store::Store;

/// Counter: SETs' events by `event` (short name, `other`, or `set` for a refused SET) and
/// `outcome` (`acted`, `ignored`, `duplicate`, and the RFC 8935 code of a refusal).
pub const SSF_EVENTS: &str = "wsgate_ssf_events_total";

/// How long a `jti` is remembered (a transmitter retries for less than this).
const JTI_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);
/// `jti`s remembered on one node, at most (the oldest go first).
const MAX_SEEN: usize = 100_000;

/// The receiver: what it verifies with, and what it acts on.
pub struct Ssf {
    pub verifier: SetVerifier,
    pub push_token: Option<String>,
    pub registry: Arc<Registry>,
    pub revocations: Arc<Revocations>,
    pub store: Arc<Store>,
    pub cluster: Option<Arc<Cluster>>,
    /// `(provider name, issuer)` of every provider with an issuer.
    pub issuers: Vec<(String, String)>,
    /// Connection events: each event acted on is a `revoked` event (set after `new`).
    pub events: Option<Arc<Events>>,
    seen: Mutex<Seen>,
}

/// `jti`s taken on this node (SHA-256 of each), oldest first.
#[derive(Default)]
struct Seen {
    at: HashMap<[u8; 32], Instant>,
    order: VecDeque<[u8; 32]>,
}

/// Why a SET was not taken.
#[derive(Debug)]
pub enum SsfError {
    /// Refused: `400` with its RFC 8935 code.
    Refused(SetError),
    /// A missing or wrong push token: `401`.
    Unauthenticated,
    /// The keys or the cluster cannot be used now: `503`, the transmitter retries.
    Unavailable(&'static str),
}

impl IntoResponse for SsfError {
    fn into_response(self) -> Response {
        let (status, err, description) = match &self {
            SsfError::Refused(SetError::Unavailable(why)) | SsfError::Unavailable(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                *why,
            ),
            SsfError::Refused(e) => (StatusCode::BAD_REQUEST, e.code(), ""),
            SsfError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "authentication_failed",
                "a push must carry the configured bearer token",
            ),
        };
        let description = match &self {
            SsfError::Refused(e) if description.is_empty() => e.to_string(),
            _ => description.to_owned(),
        };
        let mut res = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"err": err, "description": description}).to_string(),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

impl Ssf {
    pub fn new(
        verifier: SetVerifier,
        push_token: Option<String>,
        registry: Arc<Registry>,
        revocations: Arc<Revocations>,
        store: Arc<Store>,
        cluster: Option<Arc<Cluster>>,
        issuers: Vec<(String, String)>,
    ) -> Self {
        Self {
            verifier,
            push_token,
            registry,
            revocations,
            store,
            cluster,
            issuers,
            events: None,
            seen: Mutex::default(),
        }
    }

    /// Verifies, de-duplicates and acts on one SET (a `jti` taken before, here or on another
    /// node, is counted and not acted on again).
    pub async fn take(&self, set: &str) -> Result<(), SsfError> {
        let event = match self.verifier.verify(set).await {
            Ok(e) => e,
            Err(e) => {
                count("set", e.code());
                tracing::warn!(target: "wsgate::ssf", reason = e.code(), detail = %e, "a Security Event Token was refused");
                return Err(SsfError::Refused(e));
            }
        };
        if !self.first_time(&event.jti).await? {
            for e in &event.events {
                count(e.acted_on().unwrap_or("other"), "duplicate");
            }
            return Ok(());
        }
        self.act(&event).await;
        Ok(())
    }

    /// Whether this `jti` is new here and (in cluster mode) to the whole cluster.
    async fn first_time(&self, jti: &str) -> Result<bool, SsfError> {
        let digest = wsgate::verify::set::jti_digest(jti);
        if self.seen_before(&digest) {
            return Ok(false);
        }
        if let Some(cluster) = &self.cluster {
            let key = cluster.key(&["ssf:jti:", &wsgate::identity::hex(&digest)]);
            let set: Option<String> = cluster
                .query_up(
                    redis::cmd("SET")
                        .arg(key)
                        .arg(1)
                        .arg("NX")
                        .arg("EX")
                        .arg(JTI_MEMORY.as_secs()),
                )
                .await
                .map_err(|_| SsfError::Unavailable("the cluster's Redis is unreachable"))?;
            if set.is_none() {
                self.remember(digest);
                return Ok(false);
            }
        }
        self.remember(digest);
        Ok(true)
    }

    fn seen_before(&self, digest: &[u8; 32]) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.at
            .get(digest)
            .is_some_and(|at| at.elapsed() < JTI_MEMORY)
    }

    fn remember(&self, digest: [u8; 32]) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        while seen.at.len() >= MAX_SEEN {
            let Some(oldest) = seen.order.pop_front() else {
                break;
            };
            seen.at.remove(&oldest);
        }
        if seen.at.insert(digest, Instant::now()).is_none() {
            seen.order.push_back(digest);
        }
    }

    /// Carries out every event wsgate acts on, as a revoking disconnect.
    async fn act(&self, set: &SecurityEvent) {
        for event in &set.events {
            let Some(name) = event.acted_on() else {
                count("other", "ignored");
                continue;
            };
            let Some((target, revoked)) = event
                .subject
                .as_ref()
                .and_then(|s| self.target(s, event.at.unwrap_or(set.iat)))
            else {
                count(name, "ignored");
                tracing::info!(target: "wsgate::ssf", event = name, "a Security Event names no subject wsgate can match; ignored");
                continue;
            };
            // The event's own revocation covers the closed sessions' tokens (see
            // `cluster::control`: naming each would revoke a subject for one session's event).
            // Refused from this moment, closed here and announced to the other nodes at once;
            // the store's write does not hold up any socket.
            let all = vec![revoked];
            let persisted = keep_revocations(&self.revocations, &self.store, &all);
            let closed = carry_out(&self.registry, &target, true, None, Cause::Ssf);
            if let Some(events) = &self.events {
                events.revoked(Cause::Ssf, &target, closed.len());
            }
            let announce = async {
                let Some(cluster) = &self.cluster else { return };
                let order = Announced {
                    revoke: true,
                    grace: None,
                    cause: Cause::Ssf,
                };
                if let Err(e) = announce_disconnect(cluster, &target, order, &all).await {
                    tracing::error!(target: "wsgate::ssf", error = %e, "a Security Event's disconnect was not sent to the other nodes");
                }
            };
            let (kept, ()) = tokio::join!(persisted, announce);
            if !kept {
                tracing::error!(target: "wsgate::ssf", "could not persist a revocation; it holds until restart");
            }
            count(name, "acted");
            tracing::info!(target: "wsgate::ssf", event = name, closed = closed.len(), revoked = all.len(), "a Security Event was acted on");
        }
    }

    /// The sessions a subject names, and what to refuse from now on (tokens issued at or
    /// before `at`).
    fn target(&self, subject: &Subject, at: u64) -> Option<(Target, Revoked)> {
        let at = at.min(FOR_GOOD);
        let by_claim = |claim: &str, value: &str| {
            let target = Target::Claim {
                name: claim.to_owned(),
                value: value.to_owned(),
            };
            let revoked = Revoked::Claim {
                claim: claim.to_owned(),
                value: value.to_owned(),
                at,
                until: FOR_GOOD,
            };
            Some((target, revoked))
        };
        let by_sub = |sub: &str, target: Target| {
            let revoked = Revoked::Subject {
                sub: sub.to_owned(),
                at,
                until: FOR_GOOD,
            };
            Some((target, revoked))
        };
        match subject {
            Subject::IssSub { iss, sub } => {
                let providers: Vec<String> = self
                    .issuers
                    .iter()
                    .filter(|(_, i)| i == iss)
                    .map(|(name, _)| name.clone())
                    .collect();
                if !providers.is_empty() {
                    by_sub(
                        sub,
                        Target::SubOf {
                            sub: sub.clone(),
                            providers,
                        },
                    )
                } else if iss == self.verifier.issuer() {
                    by_sub(sub, Target::Sub(sub.clone()))
                } else {
                    None
                }
            }
            Subject::Opaque(sub) => by_sub(sub, Target::Sub(sub.clone())),
            Subject::Email(email) => by_claim("email", email),
            Subject::Session(sid) => by_claim("sid", sid),
        }
    }
}

fn count(event: &'static str, outcome: &'static str) {
    metrics::counter!(SSF_EVENTS, "event" => event, "outcome" => outcome).increment(1);
}

/// The push endpoint at `path`.
pub fn router(ssf: Arc<Ssf>, path: &str) -> Router {
    Router::new().route(path, post(push)).with_state(ssf)
}

/// `POST {push_path}`: one SET as the body (RFC 8935).
async fn push(State(ssf): State<Arc<Ssf>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(token) = &ssf.push_token
        && bearer_matches(&headers, token.as_bytes()) != Some(true)
    {
        tracing::warn!(target: "wsgate::ssf", "a push without the configured bearer token was refused");
        return SsfError::Unauthenticated.into_response();
    }
    if body.len() > MAX_SET_BYTES {
        return SsfError::Refused(SetError::InvalidRequest("the SET is too large")).into_response();
    }
    let Ok(set) = std::str::from_utf8(&body) else {
        return SsfError::Refused(SetError::InvalidRequest("the body is not a compact JWS"))
            .into_response();
    };
    match ssf.take(set.trim()).await {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Largest poll answer read.
const MAX_POLL_BYTES: usize = 4 * 1024 * 1024;
/// SETs asked for per poll.
const MAX_EVENTS_PER_POLL: usize = 100;

/// RFC 8936 polling: every `interval` (at once again while the transmitter says more are
/// available), acknowledging what was taken and reporting what was refused in the next poll.
pub async fn poll(
    ssf: Arc<Ssf>,
    url: String,
    token: Option<String>,
    interval: Duration,
    stop: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(target: "wsgate::ssf", error = %e, "Shared Signals polling cannot start");
            return;
        }
    };
    let (mut ack, mut errs): (Vec<String>, serde_json::Map<String, Value>) = Default::default();
    loop {
        let mut body =
            json!({"ack": ack, "maxEvents": MAX_EVENTS_PER_POLL, "returnImmediately": true});
        if !errs.is_empty() {
            body["setErrs"] = Value::Object(std::mem::take(&mut errs));
        }
        let mut req = client.post(&url).json(&body);
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let more = match poll_once(req).await {
            Ok(answer) => {
                ack.clear();
                let sets = answer.sets.into_iter().take(MAX_EVENTS_PER_POLL);
                for (jti, set) in sets {
                    match ssf.take(&set).await {
                        Ok(_) => ack.push(jti),
                        Err(SsfError::Refused(e)) if !matches!(e, SetError::Unavailable(_)) => {
                            errs.insert(
                                jti,
                                json!({"err": e.code(), "description": e.to_string()}),
                            );
                        }
                        // Not taken now, neither acknowledged nor refused: polled again.
                        Err(_) => {}
                    }
                }
                answer.more
            }
            Err(why) => {
                // What was taken is acknowledged in the next poll that gets through.
                tracing::warn!(target: "wsgate::ssf", why, "a Shared Signals poll failed");
                false
            }
        };
        let wait = if more { Duration::ZERO } else { interval };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

struct PollAnswer {
    sets: Vec<(String, String)>,
    more: bool,
}

async fn poll_once(req: reqwest::RequestBuilder) -> Result<PollAnswer, String> {
    use wsgate::verify::{BodyError, read_bounded};
    let res = req.send().await.map_err(|e| e.without_url().to_string())?;
    if !res.status().is_success() {
        return Err(format!("HTTP {}", res.status()));
    }
    let body = read_bounded(res, MAX_POLL_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => "the answer is larger than 4 MiB".to_owned(),
            BodyError::Failed(e) => e.without_url().to_string(),
        })?;
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        sets: HashMap<String, String>,
        #[serde(default, rename = "moreAvailable")]
        more: bool,
    }
    let a: Answer =
        serde_json::from_slice(&body).map_err(|_| "the answer is not a poll answer".to_owned())?;
    Ok(PollAnswer {
        sets: a.sets.into_iter().collect(),
        more: a.more,
    })
}
