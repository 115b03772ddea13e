//! Spans as OTLP protobuf (`ExportTraceServiceRequest`, opentelemetry-proto's
//! `collector/trace/v1`), written by hand: the few messages a span export needs are a page of
//! code, where the `opentelemetry` crates with their protobuf and HTTP stacks would add
//! build time and binary size for the same bytes. The field numbers are the .proto files';
//! the tests read our output back with the reference decoder (`tests/telemetry`).

use std::time::{SystemTime, UNIX_EPOCH};

use wsgate::trace::{Span, SpanKind, Value};

/// The `Resource` and `InstrumentationScope` every request repeats, encoded once.
pub struct Header {
    resource: Vec<u8>,
    scope: Vec<u8>,
}

impl Header {
    /// `service.name`, `service.instance.id` (the node) and `service.version`; the scope is
    /// `wsgate` at this version.
    pub fn new(service_name: &str, node: &str) -> Self {
        let version = env!("CARGO_PKG_VERSION");
        let mut resource = Vec::new();
        for (key, value) in [
            ("service.name", service_name),
            ("service.instance.id", node),
            ("service.version", version),
        ] {
            message(&mut resource, 1, |m| {
                key_value(m, key, &Value::Str(value.into()))
            });
        }
        let mut scope = Vec::new();
        string(&mut scope, 1, "wsgate");
        string(&mut scope, 2, version);
        Self { resource, scope }
    }

    /// One `ExportTraceServiceRequest` holding `spans`.
    pub fn request(&self, spans: &[Span]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + spans.len() * 256);
        // resource_spans = 1
        message(&mut out, 1, |rs| {
            bytes(rs, 1, &self.resource); // resource = 1
            // scope_spans = 2
            message(rs, 2, |ss| {
                bytes(ss, 1, &self.scope); // scope = 1
                for span in spans {
                    message(ss, 2, |s| encode_span(s, span)); // spans = 2
                }
            });
        });
        out
    }
}

/// `opentelemetry.proto.trace.v1.Span`.
fn encode_span(out: &mut Vec<u8>, span: &Span) {
    bytes(out, 1, &span.trace_id);
    bytes(out, 2, &span.span_id);
    if let Some(parent) = &span.parent_span_id {
        bytes(out, 4, parent);
    }
    string(out, 5, span.name);
    let kind = match span.kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    };
    varint_field(out, 6, kind);
    fixed64(out, 7, unix_nanos(span.start));
    fixed64(out, 8, unix_nanos(span.end));
    for (key, value) in &span.attributes {
        message(out, 9, |m| key_value(m, key, value));
    }
    // status = 15: code 1 OK, 2 ERROR (message = the error code).
    message(out, 15, |st| match span.error {
        Some(code) => {
            string(st, 2, code);
            varint_field(st, 3, 2);
        }
        None => varint_field(st, 3, 1),
    });
}

/// `KeyValue { key = 1, value = 2: AnyValue { string = 1 | bool = 2 | int = 3 } }`.
fn key_value(out: &mut Vec<u8>, key: &str, value: &Value) {
    string(out, 1, key);
    message(out, 2, |v| match value {
        Value::Str(s) => string(v, 1, s),
        Value::Bool(b) => varint_field(v, 2, u64::from(*b)),
        // int64 is written as its two's complement, ten bytes when negative.
        Value::Int(n) => varint_field(v, 3, *n as u64),
    });
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

fn tag(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn varint_field(out: &mut Vec<u8>, field: u64, n: u64) {
    tag(out, field, VARINT);
    varint(out, n);
}

fn fixed64(out: &mut Vec<u8>, field: u64, n: u64) {
    tag(out, field, FIXED64);
    out.extend_from_slice(&n.to_le_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    tag(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn string(out: &mut Vec<u8>, field: u64, s: &str) {
    bytes(out, field, s.as_bytes());
}

/// A nested message: written after its length, which is known once it is written.
fn message(out: &mut Vec<u8>, field: u64, write: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    write(&mut inner);
    bytes(out, field, &inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_protobuf_base_128() {
        let enc = |n| {
            let mut v = Vec::new();
            varint(&mut v, n);
            v
        };
        assert_eq!(enc(1), [1]);
        assert_eq!(enc(150), [0x96, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
    }

    #[test]
    fn a_span_is_laid_out_by_field_number() {
        let span = Span {
            name: "wsgate.refresh",
            kind: SpanKind::Internal,
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            start: UNIX_EPOCH,
            end: UNIX_EPOCH,
            attributes: vec![("wsgate.outcome", "refreshed".into())],
            error: None,
        };
        let mut out = Vec::new();
        encode_span(&mut out, &span);
        // trace_id: field 1, length 16
        assert_eq!(&out[..2], [0x0a, 16]);
        assert_eq!(&out[2..18], [1; 16]);
        // span_id: field 2, length 8
        assert_eq!(&out[18..20], [0x12, 8]);
        // name: field 5
        assert_eq!(&out[28..30], [0x2a, 14]);
        assert_eq!(&out[30..44], b"wsgate.refresh");
        // kind: field 6 = INTERNAL
        assert_eq!(&out[44..46], [0x30, 1]);
        // status last: field 15, { code = OK }
        assert_eq!(&out[out.len() - 4..], [0x7a, 2, 0x18, 1]);
    }
}
