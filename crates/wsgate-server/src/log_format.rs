//! The text log's line format: the same bytes as tracing-subscriber's default, cheaper.
//!
//! Every accepted connection writes two lines of seven or so fields each, and a tenth of a
//! proxied handshake's instructions went to them (`bench/callgrind.sh`): the default
//! formatter writes each field through styling (a no-op with colours off, but paid for),
//! escapes each string character by character, and works out the calendar date for every
//! line. Here:
//! - [`Fields`]: a string field that needs no escaping (printable ASCII without `"` or `\`,
//!   what subjects, session ids, paths and names almost always are) is written as
//!   `name="value"` directly; every other field — the message (whose ANSI escapes the
//!   default sanitizes), numbers, errors, debug values, any string that needs escaping —
//!   goes to the default formatter;
//! - [`Timestamp`]: the same RFC 3339 time, its date and time of day worked out once a
//!   second (per thread).
//!
//! A line reads the same either way (the tests compare both formatters byte for byte).

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// The default timer's time (`2026-12-07T01:10:08.487272Z`, UTC, microseconds), with the
/// part that changes once a second formatted once a second.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timestamp;

/// Seconds since the epoch and their `YYYY-MM-DDTHH:MM:SS`, as last formatted on this thread.
type Second = (u64, [u8; 19]);

thread_local! {
    static LAST_SECOND: Cell<Option<Second>> = const { Cell::new(None) };
}

/// The last second this form can write: 9999-12-31T23:59:59 (later years, and times before
/// 1970, are left to the default timer, which writes them its own way).
const LAST_FOUR_DIGIT_YEAR: u64 = 253_402_300_799;

impl tracing_subscriber::fmt::time::FormatTime for Timestamp {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).ok();
        let Some(now) = since_epoch.filter(|d| d.as_secs() <= LAST_FOUR_DIGIT_YEAR) else {
            return tracing_subscriber::fmt::time::SystemTime.format_time(w);
        };
        let secs = now.as_secs();
        let second = match LAST_SECOND.get() {
            Some((s, text)) if s == secs => text,
            _ => {
                let text = date_and_time(secs);
                LAST_SECOND.set(Some((secs, text)));
                text
            }
        };
        let line = with_micros(&second, now.subsec_micros());
        w.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` from the second's text and the microseconds.
fn with_micros(second: &[u8; 19], micros: u32) -> [u8; 27] {
    let mut out = [0u8; 27];
    out[..19].copy_from_slice(second);
    out[19] = b'.';
    put_digits(&mut out[20..26], u64::from(micros));
    out[26] = b'Z';
    out
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of `secs` since the epoch, up to [`LAST_FOUR_DIGIT_YEAR`]:
/// the civil date of a day count (the proleptic Gregorian calendar, as in Howard
/// Hinnant's `civil_from_days`).
fn date_and_time(secs: u64) -> [u8; 19] {
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    // Days counted from 0000-03-01, so that a leap day ends its year.
    let from_march = days + 719_468;
    let era = from_march / 146_097;
    let day_of_era = from_march % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);

    let mut out = *b"0000-00-00T00:00:00";
    put_digits(&mut out[0..4], year);
    put_digits(&mut out[5..7], month);
    put_digits(&mut out[8..10], day);
    put_digits(&mut out[11..13], of_day / 3_600);
    put_digits(&mut out[14..16], of_day / 60 % 60);
    put_digits(&mut out[17..19], of_day % 60);
    out
}

/// `n`'s last `out.len()` decimal digits, zero-padded, into `out`.
fn put_digits(out: &mut [u8], mut n: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
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
    fn dates_and_times_are_the_calendars() {
        let at = |secs| String::from_utf8(date_and_time(secs).to_vec()).unwrap();
        assert_eq!(at(0), "1970-01-01T00:00:00");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00", "a leap day");
        assert_eq!(at(951_868_799), "2000-02-29T23:59:59");
        assert_eq!(at(1_796_613_945), "2026-12-07T03:25:45");
        assert_eq!(
            at(4_102_444_800),
            "2100-01-01T00:00:00",
            "2100 is no leap year"
        );
        assert_eq!(at(LAST_FOUR_DIGIT_YEAR), "9999-12-31T23:59:59");
        let line = with_micros(&date_and_time(0), 7_050);
        assert_eq!(&line, b"1970-01-01T00:00:00.007050Z");
    }

    #[test]
    fn the_time_reads_as_the_default_timers() {
        use tracing_subscriber::fmt::time::FormatTime;
        let write = |timer: &dyn FormatTime| {
            let mut s = String::new();
            timer.format_time(&mut Writer::new(&mut s)).unwrap();
            s
        };
        // Both read the clock: try until both fall in the same second.
        for _ in 0..100 {
            let (ours, theirs) = (
                write(&Timestamp),
                write(&tracing_subscriber::fmt::time::SystemTime),
            );
            assert_eq!(ours.len(), theirs.len(), "{ours} / {theirs}");
            if ours[..20] == theirs[..20] {
                assert!(ours.ends_with('Z'));
                return;
            }
        }
        panic!("the two timers never agreed on the second");
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
