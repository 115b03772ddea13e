//! The HTTP API beside the sockets: `POST /api/tickets` for any valid credential, and the
//! admin calls `POST /api/disconnect`, `/api/publish` and `/api/reload`, guarded by the key in
//! `admin.api_key_env`.
//!
//! Disconnects close matching sessions (`CloseReason::Disconnected`/`Revoked`) through the
//! registry; with `"revoke": true` they also refuse the token's `jti` (or the subject's tokens
//! issued until now) at future handshakes and refreshes, and write the revocation to the store so a
//! restart forgets nothing.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use wsgate::protocol::{ErrorBody, ErrorCode};
use wsgate::{Authenticator, Cause, Registry, Revocations, Target, TicketStore};

use crate::broker::{Broker, BrokerError};
use crate::cluster::Cluster;
use crate::cluster::control::Announced;
use crate::events::Events;
use crate::revoke::{
    MAX_GRACE_SECS, carry_out, keep_revocations, revocations_for, revoke_api_keys,
};
use crate::store::Store;

/// Where a reload's outcome is sent: the new config generation, or why it was refused.
pub type ReloadAnswer = tokio::sync::oneshot::Sender<Result<u64, String>>;
/// Asks the server's reloader (`reload::run`) to read its config again.
pub type ReloadRequests = tokio::sync::mpsc::Sender<ReloadAnswer>;

/// Longest `POST /api/reload` waits for the reload (identity providers' discovery included).
const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Clone)]
pub struct Admin {
    /// The admin key; `None` when `admin.api_key_env` names no set variable (API disabled).
    pub key: Option<Arc<[u8]>>,
    pub registry: Arc<Registry>,
    pub revocations: Arc<Revocations>,
    pub store: Arc<Store>,
    pub tickets: Arc<dyn TicketStore>,
    pub broker: Arc<dyn Broker>,
    /// Set in cluster mode: disconnects are announced to every node.
    pub cluster: Option<Arc<Cluster>>,
    /// Authenticates ticket requests: the handshake sources, minus `ticket` and `message`.
    pub ticket_auth: Arc<Authenticator>,
    /// Wrong or missing admin keys per address: a budget of their own, so refused handshakes
    /// from a shared address never lock the admin out (nor the other way round).
    pub failures: Option<Arc<wsgate::FailureLimiter>>,
    pub leeway_secs: u64,
    /// Set by `serve`: `POST /api/reload` asks it to read the config again.
    pub reload: Option<ReloadRequests>,
    /// Connection events: a revoking disconnect is a `revoked` event.
    pub events: Option<Arc<Events>>,
}

pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/api/tickets", post(issue_ticket))
        .route("/api/disconnect", post(disconnect))
        .route("/api/publish", post(publish))
        .route("/api/reload", post(reload))
        .with_state(admin)
}

/// Why an admin call was refused; mapped to a status and the handshake refusals' JSON shape
/// in exactly one place, `into_response`.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    /// Too many failures from this address (wrong admin keys count too).
    #[error(transparent)]
    Refused(wsgate::AuthError),
    #[error("admin key required")]
    MissingKey,
    #[error("wrong admin key")]
    WrongKey,
    #[error("the admin API is disabled: set the variable named by admin.api_key_env")]
    Disabled,
    #[error("{0}")]
    BadRequest(String),
    #[error("the message bus is unavailable; try again")]
    Unavailable,
    #[error("the cluster is unavailable: delivered to {0} subscriber(s) on this node only")]
    LocalOnly(usize),
    #[error("the cluster is unavailable: done on this node only; try again")]
    NotClusterWide { closed: usize, revoked: usize },
    /// The new config was refused; the running one stays.
    #[error("reload refused, the running config stays: {0}")]
    ReloadRefused(String),
}

/// An admin refusal: the one error body, plus what was done anyway (on this node only) when
/// the cluster could not be reached.
#[derive(Serialize)]
struct Partial<'a> {
    #[serde(flatten)]
    body: ErrorBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    closed: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked: Option<usize>,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            Self::Refused(e) => return e.into_response(),
            Self::MissingKey => (StatusCode::UNAUTHORIZED, ErrorCode::MissingToken),
            Self::WrongKey => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            Self::Disabled => (StatusCode::FORBIDDEN, ErrorCode::AdminDisabled),
            Self::BadRequest(_) | Self::ReloadRefused(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::BadRequest)
            }
            Self::Unavailable | Self::LocalOnly(_) | Self::NotClusterWide { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable)
            }
        };
        // What did happen, on this node, so a caller can tell a retry from a rollback.
        let (delivered, closed, revoked) = match self {
            Self::LocalOnly(delivered) => (Some(delivered), None, None),
            Self::NotClusterWide { closed, revoked } => (None, Some(closed), Some(revoked)),
            _ => (None, None, None),
        };
        let body = Partial {
            body: ErrorBody::new(code, self.to_string()),
            delivered,
            closed,
            revoked,
        };
        let mut res = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

async fn issue_ticket(State(admin): State<Admin>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let identity = match admin.ticket_auth.authenticate_request(&parts).await {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    match admin.tickets.issue(identity.verified().clone()).await {
        Ok(ticket) => {
            tracing::info!(target: "wsgate::admin", sub = identity.sub(), source = identity.source().as_str(), "ticket issued");
            Json(json!({"ticket": ticket, "expires_in": admin.tickets.ttl().as_secs()}))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Whether `Authorization: Bearer <t>` (the scheme required, case-insensitive) carries
/// `secret`, compared in constant time; `None` when no such header is there. For the
/// server's own secrets (the admin key, the Shared Signals push token), which are never sent
/// bare.
pub(crate) fn bearer_matches(headers: &axum::http::HeaderMap, secret: &[u8]) -> Option<bool> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))?
        .1
        .trim();
    Some(bool::from(given.as_bytes().ct_eq(secret)))
}

/// Checks `Authorization: Bearer <admin key>` in constant time. The admin key is a
/// credential like any other: a wrong or missing one counts against the caller's address in
/// the admin's own failure budget (429 past the limit) and is logged — never the key itself.
/// The right key is always let through: with at least 8 characters it cannot be guessed at
/// `auth_failures_per_min`, and a lock-out would let anyone who shares the admin's address
/// (a NAT, a proxy) shut the admin out.
fn check_admin(admin: &Admin, parts: &Parts) -> Result<(), AdminError> {
    let ctx = admin.ticket_auth.context(parts);
    let key = admin.key.as_ref().ok_or(AdminError::Disabled)?;
    let refused = match bearer_matches(&parts.headers, key) {
        None => AdminError::MissingKey,
        Some(true) => return Ok(()),
        Some(false) => AdminError::WrongKey,
    };
    if let (Some(limiter), Some(addr)) = (&admin.failures, ctx.remote_addr) {
        limiter.check(addr.ip()).map_err(AdminError::Refused)?;
        limiter.record(addr.ip());
    }
    metrics::counter!("wsgate_admin_refused_total", "reason" => if matches!(refused, AdminError::MissingKey) { "missing_key" } else { "wrong_key" }).increment(1);
    tracing::warn!(
        target: "wsgate::admin",
        path = parts.uri.path(),
        remote = %ctx.remote_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        reason = %refused,
        "admin call refused"
    );
    Err(refused)
}

/// Largest admin request body: a channel name and a message (the socket limit is 64 KiB).
const MAX_BODY: usize = 1024 * 1024;

/// The body, read only after the caller proved it holds the admin key; its time is bounded
/// by the connection's handshake deadline.
async fn read_body(body: axum::body::Body) -> Result<axum::body::Bytes, AdminError> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| AdminError::BadRequest("the body is unreadable or larger than 1 MiB".into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    channel: String,
    data: serde_json::Value,
}

/// `POST /api/publish {channel, data}`: a backend speaks on a channel (`"from": null`).
async fn publish(State(admin): State<Admin>, req: Request) -> Result<Response, AdminError> {
    let (parts, body) = req.into_parts();
    check_admin(&admin, &parts)?;
    let body = read_body(body).await?;
    let req: PublishRequest = serde_json::from_slice(&body)
        .map_err(|e| AdminError::BadRequest(format!("invalid body: {e}")))?;
    if !wsgate::permissions::valid_channel(&req.channel) {
        return Err(AdminError::BadRequest("invalid channel name".into()));
    }
    let frame = crate::endpoints::pubsub::message_frame(&req.channel, None, &req.data);
    let delivered = admin
        .broker
        .publish(&req.channel, frame)
        .await
        .map_err(|e| match e {
            BrokerError::LocalOnly(n) => AdminError::LocalOnly(n),
            BrokerError::Unavailable => AdminError::Unavailable,
        })?;
    Ok(Json(json!({"delivered": delivered})).into_response())
}

/// `POST /api/reload`: the config file read again, as on SIGHUP. 200 `{"generation": n}`
/// once the new config is live; 400 with the reason when it is refused (the old one stays).
async fn reload(State(admin): State<Admin>, req: Request) -> Result<Response, AdminError> {
    let (parts, _) = req.into_parts();
    check_admin(&admin, &parts)?;
    let requests = admin.reload.as_ref().ok_or(AdminError::Unavailable)?;
    let (answer, outcome) = tokio::sync::oneshot::channel();
    requests
        .send(answer)
        .await
        .map_err(|_| AdminError::Unavailable)?;
    match tokio::time::timeout(RELOAD_WAIT, outcome).await {
        Ok(Ok(Ok(generation))) => Ok(Json(json!({"generation": generation})).into_response()),
        Ok(Ok(Err(why))) => Err(AdminError::ReloadRefused(why)),
        Ok(Err(_)) | Err(_) => Err(AdminError::Unavailable),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    sub: Option<String>,
    session: Option<String>,
    /// `{"name": "value"}`: sessions whose verified claim is (or holds) that string.
    claim: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    revoke: bool,
    /// A soft revocation: `expiring`, then the close after this many seconds (1–300).
    grace_secs: Option<serde_json::Value>,
}

impl DisconnectRequest {
    /// Exactly one of `sub`, `session`, `claim`, each non-empty.
    fn target(&mut self) -> Result<Target, AdminError> {
        let claim = match self.claim.take() {
            None => None,
            Some(map) => {
                let mut members = map.into_iter();
                match (members.next(), members.next()) {
                    (Some((name, serde_json::Value::String(value))), None)
                        if !name.is_empty() && !value.is_empty() =>
                    {
                        Some(Target::Claim { name, value })
                    }
                    _ => {
                        return Err(AdminError::BadRequest(
                            "\"claim\" must be one member with a non-empty string: {\"tenant\": \"acme\"}".into(),
                        ));
                    }
                }
            }
        };
        match (self.sub.take(), self.session.take(), claim) {
            (Some(sub), None, None) if !sub.is_empty() => Ok(Target::Sub(sub)),
            (None, Some(s), None) if !s.is_empty() => Ok(Target::Session(s)),
            (None, None, Some(claim)) => Ok(claim),
            _ => Err(AdminError::BadRequest(
                "give exactly one of \"sub\", \"session\" or \"claim\"".into(),
            )),
        }
    }

    /// `grace_secs` as whole seconds from 1 to 300 (not fractional, negative or huge).
    fn grace_secs(&self) -> Result<Option<u64>, AdminError> {
        let Some(v) = &self.grace_secs else {
            return Ok(None);
        };
        match v.as_u64() {
            Some(n) if (1..=MAX_GRACE_SECS).contains(&n) => Ok(Some(n)),
            _ => Err(AdminError::BadRequest(
                "\"grace_secs\" must be a whole number of seconds from 1 to 300".into(),
            )),
        }
    }
}

async fn disconnect(State(admin): State<Admin>, req: Request) -> Result<Response, AdminError> {
    let (parts, body) = req.into_parts();
    check_admin(&admin, &parts)?;
    let body = read_body(body).await?;
    let mut req: DisconnectRequest = serde_json::from_slice(&body)
        .map_err(|e| AdminError::BadRequest(format!("invalid body: {e}")))?;
    let target = req.target()?;
    let now = wsgate::verify::now_unix();
    let grace = req.grace_secs()?.map(|secs| (now + secs, now));
    let closed = carry_out(&admin.registry, &target, req.revoke, grace, Cause::Admin);
    if let Some(events) = &admin.events
        && (req.revoke || grace.is_some())
    {
        events.revoked(Cause::Admin, &target, closed.len());
    }
    let mut revoked = Vec::new();
    if req.revoke {
        revoked = revocations_for(&target, &closed, admin.leeway_secs);
        if !keep_revocations(&admin.revocations, &admin.store, &revoked).await {
            tracing::error!(target: "wsgate::admin", "could not persist a revocation; it holds until restart");
        }
        revoke_api_keys(&admin.store, &target, &closed).await;
    }
    tracing::info!(target: "wsgate::admin", target = ?target, closed = closed.len(), grace = ?grace.map(|(until, _)| until - now), revoked = revoked.len(), "disconnect");
    if let Some(cluster) = &admin.cluster
        && let Err(e) = crate::cluster::control::announce_disconnect(
            cluster,
            &target,
            Announced {
                revoke: req.revoke,
                grace,
                cause: Cause::Admin,
            },
            &revoked,
        )
        .await
    {
        tracing::error!(target: "wsgate::admin", error = %e, "disconnect not sent to the other nodes");
        return Err(AdminError::NotClusterWide {
            closed: closed.len(),
            revoked: revoked.len(),
        });
    }
    let body = match grace {
        // Warned now, closed at the deadline unless they refresh with a newer credential.
        Some(_) => json!({"closed": 0, "warned": closed.len(), "revoked": revoked.len()}),
        None => json!({"closed": closed.len(), "revoked": revoked.len()}),
    };
    Ok(Json(body).into_response())
}
