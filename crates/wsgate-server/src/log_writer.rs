//! Where log lines go: a buffer in memory, written to stderr by one thread in batches.
//!
//! A connection logs a line or two (accepted, ended). Handing each line to a writer thread
//! through a channel wakes that thread once per line: a `write` and two context switches per
//! line, and the channel's receiver spins (`sched_yield`) before it sleeps — on one core ~7
//! `sched_yield` and ~2.6 `futex` calls per proxied handshake (BENCHMARKS.md, issue 22). Here
//! the event loop only appends the line to a buffer (a short, nearly always uncontended
//! lock; never a syscall), and wakes the writer only when the buffer was empty. The writer
//! writes at once when its last write is [`BATCH`] old, and otherwise lets lines gather
//! until it is — so a quiet server's lines appear as they happen, a busy one's in at most
//! 100 writes a second whatever the connection rate, and an idle server never wakes it. A
//! line reaches stderr at most [`BATCH`] (plus the write) after it was logged.
//!
//! Bounded: past [`MAX_PENDING`] bytes waiting (stderr blocked, say) lines are dropped, and
//! the next batch says how many. [`LogWriter::start`]'s guard writes what is left on drop.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// The least time between two writes; lines logged meanwhile gather for the next one.
pub const BATCH: Duration = Duration::from_millis(10);
/// The most text waiting to be written; lines past it are dropped (and counted).
pub const MAX_PENDING: usize = 4 * 1024 * 1024;

/// The handle the log subscriber writes through (cheap to clone).
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

struct Shared {
    pending: Mutex<Vec<u8>>,
    /// Lines dropped since the last batch was written.
    dropped: AtomicU64,
    closing: AtomicBool,
    /// The writer thread, woken by the first line of a batch.
    writer: thread::Thread,
}

/// Writes what is still waiting when dropped (at the end of `main`).
pub struct FlushOnDrop {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Starts the writer thread, writing to `out`.
    pub fn start(out: impl Write + Send + 'static) -> io::Result<(Self, FlushOnDrop)> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Shared>>(1);
        let thread = thread::Builder::new()
            .name("wsgate-log".into())
            .spawn(move || {
                if let Ok(shared) = rx.recv() {
                    write_batches(&shared, out);
                }
            })?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            writer: thread.thread().clone(),
        });
        // The thread was just spawned and waits for exactly this: the send cannot fail but
        // by the thread having died, and then there is nothing to write to anyway.
        let _ = tx.send(shared.clone());
        let guard = FlushOnDrop {
            shared: shared.clone(),
            thread: Some(thread),
        };
        Ok((Self { shared }, guard))
    }

    fn push(&self, line: &[u8]) {
        let mut pending = self.shared.lock();
        if pending.len() + line.len() > MAX_PENDING {
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let first = pending.is_empty();
        pending.extend_from_slice(line);
        drop(pending);
        if first {
            self.shared.writer.unpark();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer thread: sleep until a line comes, let more gather if the last write was less
/// than [`BATCH`] ago, write them; until closing.
fn write_batches(shared: &Shared, mut out: impl Write) {
    // Swapped with the pending buffer, so both keep their capacity between batches.
    let mut batch = Vec::new();
    let mut last_write: Option<Instant> = None;
    loop {
        let closing = shared.closing.load(Ordering::Acquire);
        if !closing {
            thread::park();
            let since = last_write.map_or(BATCH, |at| at.elapsed());
            if since < BATCH && !shared.closing.load(Ordering::Acquire) {
                thread::sleep(BATCH - since);
            }
        }
        std::mem::swap(&mut *shared.lock(), &mut batch);
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "wsgate: {dropped} log lines dropped (stderr did not keep up)"
            );
        }
        if !batch.is_empty() {
            // Nowhere to report a failing stderr: the lines are lost, the server goes on.
            let _ = out.write_all(&batch);
            let _ = out.flush();
            last_write = Some(Instant::now());
            batch.clear();
            if batch.capacity() > 64 * 1024 {
                batch = Vec::new(); // a burst's buffer is not kept for ever
            }
        }
        if closing {
            return;
        }
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// One log line's writer: the subscriber formats a whole line, then writes it once.
pub struct Line<'a>(&'a LogWriter);

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        Line(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` the test can look into.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_in_few_writes_and_the_rest_on_drop() {
        let sink = Sink::default();
        let (log, guard) = LogWriter::start(sink.clone()).unwrap();
        for i in 0..1000 {
            log.make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        thread::sleep(BATCH * 5);
        let writes = sink.0.lock().unwrap().len();
        assert!(
            (1..=10).contains(&writes),
            "1000 lines in a burst come out in a write or a few, not {writes}"
        );
        log.make_writer().write_all(b"last\n").unwrap();
        drop(guard); // at once, without waiting for a batch
        let text = String::from_utf8(sink.0.lock().unwrap().concat()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected + "last\n");
    }

    #[test]
    fn past_the_bound_lines_are_dropped_and_counted() {
        /// A stderr that blocks until told to go on.
        struct Stuck(Arc<(Mutex<bool>, std::sync::Condvar)>, Sink);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let (lock, cv) = &*self.0;
                let mut go = lock.lock().unwrap();
                while !*go {
                    go = cv.wait(go).unwrap();
                }
                self.1.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let sink = Sink::default();
        let (log, guard) = LogWriter::start(Stuck(gate.clone(), sink.clone())).unwrap();
        log.make_writer().write_all(b"first\n").unwrap();
        thread::sleep(BATCH * 3); // the writer is now stuck writing "first"
        let line = vec![b'x'; 1023];
        for _ in 0..(MAX_PENDING / 1024 + 10) {
            log.make_writer()
                .write_all(&[&line[..], b"\n"].concat())
                .unwrap();
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().concat()).unwrap();
        assert!(text.starts_with("first\n"));
        assert!(
            text.contains("wsgate: 10 log lines dropped"),
            "the drop is reported"
        );
        assert_eq!(
            text.matches(&*String::from_utf8(line).unwrap()).count(),
            MAX_PENDING / 1024
        );
    }
}
