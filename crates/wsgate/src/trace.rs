//! Spans for the decisions a session's life is made of — its handshake, each refresh, each
//! re-check with the issuer, a proxy's dial to its upstream — joined to the caller's trace
//! by the W3C `traceparent` header. The library measures and names; a [`Tracer`] given to an
//! `Authenticator` (`Authenticator::trace`) exports (the server: OTLP).
//!
//! Without a tracer nothing here runs: no ids are drawn, no clock read, and a session carries
//! one empty pointer. Attributes never hold a credential or a subject.

use std::sync::Arc;
use std::time::SystemTime;

use axum::http::HeaderMap;

/// The W3C trace context header (<https://www.w3.org/TR/trace-context/>).
pub const TRACEPARENT: &str = "traceparent";
/// The vendors' part of the trace context, passed on beside `traceparent`.
pub const TRACESTATE: &str = "tracestate";

/// One span's place in a trace: the trace id, its own span id, and whether it is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

impl TraceContext {
    /// Reads a `traceparent` header: `00-<32 hex>-<16 hex>-<2 hex>` (lowercase, ids not all
    /// zero). A later version is read by its first four fields, as the W3C text asks; version
    /// `ff` and anything malformed are `None` (the handshake then starts a trace of its own).
    pub fn parse(traceparent: &str) -> Option<Self> {
        let v = traceparent.trim_matches([' ', '\t']).as_bytes();
        if v.len() < 55 {
            return None;
        }
        let version = hex::<1>(&v[0..2])?[0];
        let exact = version == 0 && v.len() == 55;
        let later = version != 0 && version != 0xff && (v.len() == 55 || v[55] == b'-');
        if !(exact || later) || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let trace_id = hex::<16>(&v[3..35])?;
        let span_id = hex::<8>(&v[36..52])?;
        let flags = hex::<1>(&v[53..55])?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// This context as a `traceparent` value (version 00).
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.span_id);
        s.push_str(if self.sampled { "-01" } else { "-00" });
        s
    }

    /// The trace's id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// This span's id.
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// Whether the trace is recorded (the caller's `sampled` flag; a new trace always is).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// A new trace's first span.
    fn root() -> Self {
        let mut trace_id = [0u8; 16];
        fill_nonzero(&mut trace_id);
        Self {
            trace_id,
            span_id: new_span_id(),
            sampled: true,
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }
}

/// What a span is to the caller, as OpenTelemetry names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Work inside the gateway (a refresh, a re-check).
    Internal,
    /// Answering a request (the handshake).
    Server,
    /// A request of our own (the upstream dial).
    Client,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string.
    Str(String),
    /// A signed integer.
    Int(i64),
    /// A flag.
    Bool(bool),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

/// A finished span, handed to the [`Tracer`].
#[derive(Debug, Clone)]
pub struct Span {
    /// `wsgate.handshake`, `wsgate.refresh`, `wsgate.revalidate`, `wsgate.upstream.connect`.
    pub name: &'static str,
    /// What the span is to the caller.
    pub kind: SpanKind,
    /// The trace it belongs to.
    pub trace_id: [u8; 16],
    /// Its own id.
    pub span_id: [u8; 8],
    /// `None` for a trace's first span.
    pub parent_span_id: Option<[u8; 8]>,
    /// When the work began.
    pub start: SystemTime,
    /// When it was decided.
    pub end: SystemTime,
    /// OpenTelemetry's names where they exist (`url.path`, `client.address`, `server.address`),
    /// `wsgate.*` for ours (`outcome`, `source`, `provider`, `session`, `error`).
    pub attributes: Vec<(&'static str, Value)>,
    /// Set when the span's work failed: its error code (the span's status is then an error).
    pub error: Option<&'static str>,
}

/// Where finished spans go. Called on the task that did the work, so it must return at once
/// (queue, never wait on I/O).
pub trait Tracer: Send + Sync + 'static {
    /// Takes a finished span.
    fn export(&self, span: Span);
}

/// One handshake's trace, carried by its `VerifyContext` and then by its session's `Identity`:
/// later spans of the session (refresh, re-check, upstream dial) are its children.
pub struct Traced {
    tracer: Arc<dyn Tracer>,
    /// The handshake span's own context.
    context: TraceContext,
    /// The caller's span, from the request's `traceparent`.
    parent: Option<[u8; 8]>,
    started: SystemTime,
}

impl std::fmt::Debug for Traced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traced")
            .field("context", &self.context)
            .finish()
    }
}

impl Traced {
    /// Starts a handshake's span: a child of the request's `traceparent` when it has a valid
    /// one, else the first span of a new trace.
    pub(crate) fn begin(tracer: Arc<dyn Tracer>, headers: &HeaderMap) -> Arc<Self> {
        let caller = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse);
        Arc::new(Self {
            tracer,
            context: caller.map_or_else(TraceContext::root, |c| c.child()),
            parent: caller.map(|c| c.span_id),
            started: SystemTime::now(),
        })
    }

    /// The handshake span's context.
    pub fn context(&self) -> &TraceContext {
        &self.context
    }

    /// Exports the handshake span itself (once, when the handshake is decided).
    pub(crate) fn handshake(
        &self,
        attributes: Vec<(&'static str, Value)>,
        error: Option<&'static str>,
    ) {
        self.emit(Span {
            name: "wsgate.handshake",
            kind: SpanKind::Server,
            trace_id: self.context.trace_id,
            span_id: self.context.span_id,
            parent_span_id: self.parent,
            start: self.started,
            end: SystemTime::now(),
            attributes,
            error,
        });
    }

    /// Exports a span of the session's (started at `start`, ending now), a child of its
    /// handshake.
    pub(crate) fn span(
        &self,
        name: &'static str,
        start: SystemTime,
        attributes: Vec<(&'static str, Value)>,
        error: Option<&'static str>,
    ) {
        let own = self.context.child();
        self.span_as(name, SpanKind::Internal, own, start, attributes, error);
    }

    /// As [`Traced::span`], with the span's own context drawn beforehand (from
    /// [`TraceContext::child`]) because the work passes it on, as a dial does.
    pub(crate) fn span_as(
        &self,
        name: &'static str,
        kind: SpanKind,
        own: TraceContext,
        start: SystemTime,
        attributes: Vec<(&'static str, Value)>,
        error: Option<&'static str>,
    ) {
        self.emit(Span {
            name,
            kind,
            trace_id: own.trace_id,
            span_id: own.span_id,
            parent_span_id: Some(self.context.span_id),
            start,
            end: SystemTime::now(),
            attributes,
            error,
        });
    }

    fn emit(&self, span: Span) {
        // The caller's decision stands: an unsampled trace is passed on, never recorded.
        if self.context.sampled {
            self.tracer.export(span);
        }
    }
}

fn new_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    fill_nonzero(&mut id);
    id
}

/// Random bytes, never all zero (an invalid id).
fn fill_nonzero(buf: &mut [u8]) {
    loop {
        if aws_lc_rs::rand::fill(buf).is_err() {
            // The system's generator failed: a time-derived id still identifies the span.
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos());
            for (b, n) in buf.iter_mut().zip(nanos.to_le_bytes().iter().cycle()) {
                *b = *n;
            }
        }
        if buf.iter().any(|&b| b != 0) {
            return;
        }
    }
}

/// Lowercase hex only, as the W3C text requires.
fn hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

/// Lowercase hex of an id, for logs and tests.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const W3C_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_and_writes_the_w3c_example() {
        let c = TraceContext::parse(W3C_EXAMPLE).expect("valid");
        assert_eq!(to_hex(&c.trace_id()), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(to_hex(&c.span_id()), "00f067aa0ba902b7");
        assert!(c.sampled());
        assert_eq!(c.traceparent(), W3C_EXAMPLE);
        let unsampled = TraceContext::parse(&W3C_EXAMPLE.replace("-01", "-00")).expect("valid");
        assert!(!unsampled.sampled());
    }

    #[test]
    fn refuses_what_the_w3c_text_refuses() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        // A later version may carry more fields; its first four are read.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert!(TraceContext::parse(later).is_some());
    }

    #[test]
    fn a_child_keeps_the_trace_and_draws_a_new_span_id() {
        let parent = TraceContext::parse(W3C_EXAMPLE).expect("valid");
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
        let root = TraceContext::root();
        assert_ne!(root.trace_id(), [0; 16]);
        assert!(root.sampled());
    }
}
