//! The text log's field formatter: the same bytes as tracing-subscriber's default, cheaper.
//!
//! Every accepted connection writes two lines of seven or so fields each, and the default
//! formatter writes each field through styling (a no-op with colours off, but paid for) and
//! escapes each string character by character: a tenth of a proxied handshake's
//! instructions went to its two lines (`bench/callgrind.sh`). A string field that needs no
//! escaping (printable ASCII without `"` or `\`, what subjects, session ids, paths and names
//! almost always are) is written here as `name="value"` directly; every other field — the
//! message (whose ANSI escapes the default sanitizes), numbers, errors, debug values, any
//! string that needs escaping — goes to the default formatter, so a line reads the same
//! either way.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// The field formatter for text logs (`fmt().fmt_fields(Fields)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields;

impl<'a> MakeVisitor<Writer<'a>> for Fields {
    type Visitor = FieldVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> FieldVisitor<'a> {
        FieldVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's (or span's) fields, separated by spaces.
pub struct FieldVisitor<'a> {
    writer: Writer<'a>,
    /// Whether no field has been written yet (the next one needs no leading space).
    is_empty: bool,
    result: fmt::Result,
}

impl FieldVisitor<'_> {
    /// Hands one field to the default formatter, which pads it the same way.
    fn by_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut default = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut default);
        self.result = default.finish();
        self.is_empty = false;
    }
}

/// Whether `value` reads the same through `{:?}` as between two quotes: printable ASCII
/// other than `"` and `\` (`str`'s `Debug` escapes those, controls and some non-ASCII).
fn plain(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if name == "message" || name.starts_with("r#") || name.starts_with("log.") || !plain(value)
        {
            return self.by_default(|d| d.record_str(field, value));
        }
        if !self.is_empty {
            self.result = self.writer.write_char(' ');
        }
        self.is_empty = false;
        self.result = self
            .result
            .and_then(|()| self.writer.write_str(name))
            .and_then(|()| self.writer.write_str("=\""))
            .and_then(|()| self.writer.write_str(value))
            .and_then(|()| self.writer.write_char('"'));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_ok() {
            self.by_default(|d| d.record_error(field, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.by_default(|d| d.record_debug(field, value));
        }
    }
}

impl VisitOutput<fmt::Result> for FieldVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for FieldVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// Captured log output.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// Every kind of field, through `fields` (this formatter or the default).
    fn lines(custom: bool) -> String {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false);
        let log = || {
            let err = std::io::Error::other("disk \"full\"");
            let addr: std::net::SocketAddr = ([127, 0, 0, 1], 8080).into();
            tracing::info!(
                path = "/ws",
                sub = "alice@example.com",
                quoted = "say \"hi\"",
                back = "a\\b",
                control = "a\tb\nc",
                unicode = "José",
                empty = "",
                n = 42u64,
                neg = -1i64,
                yes = true,
                remote = %addr,
                dbg = ?Some("x"),
                error = &err as &(dyn std::error::Error + 'static),
                "connection \"accepted\" \u{1b}[31m"
            );
            tracing::warn!("a message alone");
            tracing::warn!(only = "field");
        };
        if custom {
            tracing::subscriber::with_default(builder.fmt_fields(Fields).finish(), log);
        } else {
            tracing::subscriber::with_default(builder.finish(), log);
        }
        let bytes = out.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn lines_read_exactly_as_the_default_formatter_writes_them() {
        let (ours, default) = (lines(true), lines(false));
        assert_eq!(ours, default);
        assert!(ours.contains(r#"sub="alice@example.com""#), "{ours}");
        assert!(ours.contains(r#"quoted="say \"hi\"""#), "{ours}");
        assert_eq!(ours.lines().count(), 3, "{ours}");
    }

    #[test]
    fn plain_strings_are_the_ones_debug_leaves_alone() {
        for s in ["alice", "a b", "/ws?x=1", "it's", "", "~!@#$%^&*()"] {
            assert!(plain(s), "{s}");
            assert_eq!(format!("{s:?}"), format!("\"{s}\""));
        }
        for s in ["\"", "\\", "\t", "\u{7f}", "José", "\u{1b}[31m"] {
            assert!(!plain(s), "{s:?}");
        }
    }
}
