//! What the library counts, through the `metrics` facade: the embedding application picks the
//! exporter (the `wsgate` binary serves Prometheus text on `/metrics`). Names start with
//! `wsgate_`. Nothing here is per message: message counts are kept per session and added in
//! batches (at each timer tick and when the session ends).

use std::time::Duration;

use crate::reject::AuthError;
use crate::source::SourceKind;

/// Counter: handshakes by `outcome`, `source` and `reason`.
pub const HANDSHAKES: &str = "wsgate_handshakes_total";
/// Counter: accepted connections by identity `provider` (configured names; `static`,
/// `api_key`, `proxy` for other credentials).
pub const PROVIDER_CONNECTIONS: &str = "wsgate_provider_connections_total";
/// Counter: RFC 7662 introspection requests to identity providers, by `outcome` (`active`,
/// `inactive`, `unavailable`); answers from the cache are not requests.
pub const INTROSPECTIONS: &str = "wsgate_introspection_requests_total";
/// Histogram: time to verify one credential, by `verifier`.
pub const VERIFY_SECONDS: &str = "wsgate_verify_seconds";
/// Gauge: authenticated sockets open now.
pub const CONNECTIONS_OPEN: &str = "wsgate_connections_open";
/// Counter: sockets closed, by close `code` (`peer` when the client went first).
pub const CLOSES: &str = "wsgate_closes_total";
/// Counter: data frames by `direction`.
pub const MESSAGES: &str = "wsgate_messages_total";
/// Histogram: proxy upstream connect + handshake time.
pub const UPSTREAM_CONNECT_SECONDS: &str = "wsgate_upstream_connect_seconds";
/// Counter: proxy upstreams that failed, by `reason` (`bad_gateway`, `gateway_timeout`).
pub const UPSTREAM_FAILURES: &str = "wsgate_upstream_failures_total";
/// Counter: connections relayed to an upstream.
pub const PROXIED: &str = "wsgate_proxied_connections_total";
/// Counter: frames relayed, by `direction`.
pub const PROXIED_FRAMES: &str = "wsgate_proxied_frames_total";
/// Counter: refused `refresh` frames, by `reason`.
pub const REFRESH_REFUSED: &str = "wsgate_refresh_refused_total";
/// Counter: client frames a proxy dropped because they carried a credential, by `type`
/// (`auth`, `refresh`): the upstream never sees a credential.
pub const CREDENTIAL_FRAMES_DROPPED: &str = "wsgate_proxy_credential_frames_dropped_total";

/// Counter: re-checks of live sessions' credentials with their issuer, by `outcome`
/// (`valid`, `invalid`, `unavailable`): one per distinct credential per period.
pub const REVALIDATIONS: &str = "wsgate_revalidations_total";
/// Histogram: from the moment a node learns of a revocation to the close frame on each
/// socket it closes, by `cause` (`admin`, `ssf`, `revalidate`, `key`).
pub const REVOCATION_TO_CLOSE: &str = "wsgate_revocation_to_close_seconds";

/// Describes every family and creates its main series at zero, so `/metrics` shows what it
/// will count from the first scrape, not an empty page until the first connection.
pub fn register() {
    metrics::describe_counter!(
        HANDSHAKES,
        "WebSocket handshakes by outcome, source and reason"
    );
    metrics::describe_histogram!(VERIFY_SECONDS, "Time to verify one credential, by verifier");
    metrics::describe_counter!(
        PROVIDER_CONNECTIONS,
        "Accepted connections by identity provider"
    );
    metrics::describe_counter!(
        INTROSPECTIONS,
        "Token introspection requests to identity providers, by outcome"
    );
    metrics::describe_gauge!(CONNECTIONS_OPEN, "Authenticated sockets open now");
    metrics::describe_counter!(CLOSES, "Sockets closed, by close code");
    metrics::describe_counter!(MESSAGES, "Data frames, by direction");
    metrics::describe_counter!(REFRESH_REFUSED, "Refused refresh frames, by reason");
    metrics::describe_counter!(
        REVALIDATIONS,
        "Re-checks of live sessions' credentials with their issuer, by outcome"
    );
    metrics::describe_histogram!(
        REVOCATION_TO_CLOSE,
        "From a node learning of a revocation to each close frame it causes, by cause"
    );
    metrics::gauge!(CONNECTIONS_OPEN).set(0.0);
    metrics::counter!(HANDSHAKES, "outcome" => "accepted", "source" => "bearer").absolute(0);
    metrics::counter!(MESSAGES, "direction" => "in").absolute(0);
    metrics::counter!(MESSAGES, "direction" => "out").absolute(0);
    #[cfg(feature = "relay")]
    {
        metrics::describe_counter!(PROXIED, "Connections relayed to an upstream");
        metrics::describe_counter!(
            UPSTREAM_FAILURES,
            "Upstream connections that failed, by reason"
        );
        metrics::describe_histogram!(
            UPSTREAM_CONNECT_SECONDS,
            "Upstream connect + handshake time"
        );
        metrics::describe_counter!(PROXIED_FRAMES, "Frames relayed, by direction");
        metrics::describe_counter!(
            CREDENTIAL_FRAMES_DROPPED,
            "Client frames carrying a credential that a proxy did not forward, by type"
        );
        metrics::counter!(PROXIED).absolute(0);
    }
}

/// `provider` shared, not copied: this runs on every accepted handshake.
pub(crate) fn accepted(source: SourceKind, provider: metrics::SharedString) {
    metrics::counter!(HANDSHAKES, "outcome" => "accepted", "source" => source.as_str())
        .increment(1);
    metrics::counter!(PROVIDER_CONNECTIONS, "provider" => provider).increment(1);
}

pub(crate) fn refused(source: Option<SourceKind>, e: &AuthError) {
    let source = source.map(SourceKind::as_str).unwrap_or("none");
    metrics::counter!(HANDSHAKES, "outcome" => "refused", "reason" => e.code().as_str(), "source" => source)
        .increment(1);
}

pub(crate) fn refresh_refused(e: &AuthError) {
    metrics::counter!(REFRESH_REFUSED, "reason" => e.code().as_str()).increment(1);
}

pub(crate) fn verified(verifier: &'static str, took: Duration) {
    metrics::histogram!(VERIFY_SECONDS, "verifier" => verifier).record(took.as_secs_f64());
}

pub(crate) fn revalidated(outcome: &'static str) {
    metrics::counter!(REVALIDATIONS, "outcome" => outcome).increment(1);
}

pub(crate) fn revocation_closed(cause: &'static str, took: Duration) {
    metrics::histogram!(REVOCATION_TO_CLOSE, "cause" => cause).record(took.as_secs_f64());
}

pub(crate) fn opened() {
    metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
}

pub(crate) fn ended(close_code: Option<u16>, msgs_in: u64, msgs_out: u64) {
    metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
    let code = crate::protocol::close_label(close_code);
    metrics::counter!(CLOSES, "code" => code).increment(1);
    messages(msgs_in, msgs_out);
}

pub(crate) fn messages(msgs_in: u64, msgs_out: u64) {
    if msgs_in > 0 {
        metrics::counter!(MESSAGES, "direction" => "in").increment(msgs_in);
    }
    if msgs_out > 0 {
        metrics::counter!(MESSAGES, "direction" => "out").increment(msgs_out);
    }
}

#[cfg(feature = "relay")]
pub(crate) fn upstream_connect(took: Duration, failed: Option<&crate::reject::GatewayError>) {
    match failed {
        None => {
            metrics::counter!(PROXIED).increment(1);
            metrics::histogram!(UPSTREAM_CONNECT_SECONDS).record(took.as_secs_f64());
        }
        Some(e) => metrics::counter!(UPSTREAM_FAILURES, "reason" => e.code().as_str()).increment(1),
    }
}

#[cfg(feature = "relay")]
pub(crate) fn proxied_frames(to_upstream: u64, to_client: u64) {
    metrics::counter!(PROXIED_FRAMES, "direction" => "to_upstream").increment(to_upstream);
    metrics::counter!(PROXIED_FRAMES, "direction" => "to_client").increment(to_client);
}

#[cfg(feature = "relay")]
pub(crate) fn credential_frame_dropped(kind: &'static str) {
    metrics::counter!(CREDENTIAL_FRAMES_DROPPED, "type" => kind).increment(1);
}

#[cfg(feature = "remote")]
pub(crate) fn introspected(outcome: &'static str) {
    metrics::counter!(INTROSPECTIONS, "outcome" => outcome).increment(1);
}
