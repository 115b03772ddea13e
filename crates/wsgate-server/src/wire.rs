//! A connection's socket: read by the connection's own stack, written by it and by the
//! publishers that write pub/sub deliveries to it directly (`wsgate::outbox`'s direct writes).
//! Also where sockets enter tokio's reactor ([`register`], the listener's too).
//!
//! Fan-out at the machine's floor means one `write` per subscriber from the publisher, with
//! no task woken: so the publisher must be able to write to a socket that hyper and the
//! session's WebSocket (wsgate's own, or tungstenite for a `message` client) also write
//! to. Two writers on one byte stream stay correct only if neither ever leaves part of a
//! frame unsent while the other writes. [`Wire`] makes that hold:
//! - a write from the connection's own stack is taken **whole or not at all**: when the
//!   kernel takes only the start of it, the rest is kept here (`pending`) and reported
//!   written, so the WebSocket never holds a frame's tail of its own; its flush waits until
//!   `pending` is sent;
//! - a publisher's frame ([`DirectWrite::try_write_frame`]) is written only when nothing is
//!   pending and the connection's task is not writing at that very moment (the lock is free);
//!   if the kernel takes only part of it, the rest is kept the same way and the connection's
//!   task flushes it (the outbox tells it to).
//!
//! So every write call's bytes reach the socket contiguously, and frames never interleave.
//! `pending` holds at most the end of one write (a frame, or a batch of frames);
//! it owns no memory while empty. Publishers write only once the connection is a WebSocket
//! ([`Wire::upgraded`], told by the listener when the `101` is written). That nothing follows
//! a close frame is the outbox's to keep, not this file's: the session closes its outbox
//! before any close frame can be written (its own, or its answer to the client's),
//! and a closed outbox hands publishers nothing to write.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use tokio::io::ReadBuf;
use tokio::io::unix::AsyncFd;
use wsgate::outbox::{DirectWrite, Written};

/// The most one read takes: what a typical upgrade request needs, and as much as a WebSocket
/// read takes (`SocketSettings`: 2 KiB read buffer).
const READ_CHUNK: usize = 2 * 1024;

/// One TCP connection, readable by its owner, writable by its owner and its publishers.
/// One allocation per connection, made at accept. The socket sits in tokio's reactor as an
/// `AsyncFd` so that readiness is handled as tokio's own `TcpStream` does (a short read or
/// write means the kernel is drained or full: wait for the next edge, no extra syscall),
/// while every write can be made through a shared reference.
pub struct Wire {
    fd: AsyncFd<TcpStream>,
    /// Its lock is also what makes a publisher's write wait for none of the owner's.
    out: Mutex<Out>,
    /// Where the HTTP exchange is ([`READING`], [`ANSWERING`], [`SWITCHING`]): set by the
    /// request service, which sees the typed request and response, and taken by the
    /// listener when the answer's first bytes are written.
    phase: AtomicU8,
}

/// Reading a request (or waiting for one): the handshake deadline runs.
const READING: u8 = 0;
/// A complete request without a body is being answered: the deadline waits.
const ANSWERING: u8 = 1;
/// The answer is a `101 Switching Protocols`: once written, the socket is a WebSocket.
const SWITCHING: u8 = 2;

#[derive(Default)]
struct Out {
    /// Accepted, not yet in the kernel: the end of one write, sent before anything else.
    pending: Vec<u8>,
    /// The 101 is written: the owner's writes are whole WebSocket frames.
    websocket: bool,
}

impl Wire {
    /// Takes an accepted, non-blocking stream into tokio's reactor.
    pub fn new(stream: TcpStream) -> io::Result<Self> {
        Ok(Self {
            fd: register(stream)?,
            out: Mutex::default(),
            phase: AtomicU8::new(READING),
        })
    }

    /// A complete request without a body was handed to the router.
    pub fn answering(&self) {
        self.phase.store(ANSWERING, Ordering::Relaxed);
    }

    /// The router answered `101 Switching Protocols` (not yet written).
    pub fn switching(&self) {
        self.phase.store(SWITCHING, Ordering::Relaxed);
    }

    /// The answer's first bytes were written: `true` when that answer is the `101`.
    pub fn answered(&self) -> bool {
        self.phase.swap(READING, Ordering::Relaxed) == SWITCHING
    }

    pub fn is_answering(&self) -> bool {
        self.phase.load(Ordering::Relaxed) != READING
    }

    pub fn stream(&self) -> &TcpStream {
        self.fd.get_ref()
    }

    fn lock(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection is a WebSocket from now on (its `101` is written).
    pub fn upgraded(&self) {
        self.lock().websocket = true;
    }

    /// The owner's read.
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.fd.poll_read_ready(cx))?;
            // Safe code reads into initialized memory only, and hyper hands over a fresh
            // uninitialized buffer for every read: zero at most one read's worth of it.
            let len = buf.remaining().min(READ_CHUNK);
            let unfilled = buf.initialize_unfilled_to(len);
            match ready.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    if n > 0 && n < len {
                        ready.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // `WouldBlock`: readiness was cleared; the next poll registers the waker.
                Err(_) => continue,
            }
        }
    }

    /// The owner's write: all of `buf` is taken (its unsent end kept), or none.
    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut out = self.lock();
        ready!(self.poll_drain(&mut out.pending, cx))?;
        let n = ready!(self.poll_io(cx, buf.len(), |mut s| s.write(buf)))?;
        if n > 0 && n < buf.len() {
            out.pending.extend_from_slice(&buf[n..]);
        }
        Poll::Ready(Ok(if n == 0 { 0 } else { buf.len() }))
    }

    /// Like [`Wire::poll_write`], for several buffers written as one.
    pub fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut out = self.lock();
        ready!(self.poll_drain(&mut out.pending, cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let n = ready!(self.poll_io(cx, total, |mut s| s.write_vectored(bufs)))?;
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut skip = n;
        for b in bufs {
            if skip >= b.len() {
                skip -= b.len();
            } else {
                out.pending.extend_from_slice(&b[skip..]);
                skip = 0;
            }
        }
        Poll::Ready(Ok(total))
    }

    /// Sends what is pending; ready once the kernel has all of it.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = self.lock();
        self.poll_drain(&mut out.pending, cx)
    }

    /// Sends what is pending, then ends the write direction.
    pub fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush(cx))?;
        // Already gone: nothing left to end.
        Poll::Ready(match self.stream().shutdown(Shutdown::Write) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        })
    }

    /// A write of `len` bytes, retried once the socket is writable again.
    fn poll_io(
        &self,
        cx: &mut Context<'_>,
        len: usize,
        mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = ready!(self.fd.poll_write_ready(cx))?;
            match ready.try_io(|fd| write(fd.get_ref())) {
                Ok(Ok(n)) => {
                    if n > 0 && n < len {
                        ready.clear_ready();
                    }
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_) => continue,
            }
        }
    }

    fn poll_drain(&self, pending: &mut Vec<u8>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !pending.is_empty() {
            let n = ready!(self.poll_io(cx, pending.len(), |mut s| s.write(pending)))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            pending.drain(..n);
        }
        if pending.capacity() > 0 {
            // Give the buffer back: an idle connection owns nothing here.
            *pending = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

/// The sockets [`register`] takes: types that own their descriptor. Not `AsRawFd` at large,
/// which a bare descriptor number (`i32`) also is: with it a safe call could register a
/// descriptor that something else closes.
pub(crate) trait OwnsItsSocket: AsRawFd {}
impl OwnsItsSocket for TcpStream {}
impl OwnsItsSocket for std::net::TcpListener {}

/// An owned socket in tokio's reactor.
#[allow(unsafe_code)] // the one unsafe block: see the SAFETY argument below
pub(crate) fn register<S: OwnsItsSocket>(socket: S) -> io::Result<AsyncFd<S>> {
    // SAFETY: `register` needs the descriptor to stay open, and the same, for as long as it
    // is registered. The `AsyncFd` owns the socket that owns the descriptor and gives out only
    // `&S`, with which a `TcpStream` or `TcpListener` cannot be closed or replaced; dropping
    // the `AsyncFd` deregisters it before the socket closes it.
    unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)
}

impl DirectWrite for Wire {
    fn try_write_frame(&self, frame: &[u8]) -> Written {
        // Busy (the owner is writing right now) or poisoned: queue it instead.
        let Ok(mut out) = self.out.try_lock() else {
            return Written::Nothing;
        };
        if !out.websocket || !out.pending.is_empty() {
            return Written::Nothing;
        }
        // Straight to the kernel: tokio's readiness may stay stale on a `WouldBlock` here,
        // which only costs the owner's next write one syscall to find out.
        match self.stream().write(frame) {
            Ok(n) if n == frame.len() => Written::All,
            Ok(0) => Written::Nothing,
            Ok(n) => {
                out.pending.extend_from_slice(&frame[n..]);
                Written::Part
            }
            // Full (`WouldBlock`) or failed: the owner writes it, or finds out.
            Err(_) => Written::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker_ref;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn writes_take_turns_whole_and_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let wire = Wire::new(server.into_std().unwrap()).unwrap();
        assert_eq!(
            wire.try_write_frame(b"DIRECT"),
            Written::Nothing,
            "not before the 101"
        );
        wire.upgraded();

        // The connection's own writes (binary frames of 64 KiB), until the kernel takes only
        // the start of one.
        let mut chunk = vec![0x82, 127];
        chunk.extend_from_slice(&(64u64 * 1024).to_be_bytes());
        chunk.resize(chunk.len() + 64 * 1024, b'a');
        // A socket just handed to the reactor is writable once the reactor has seen it.
        drop(wire.fd.writable().await.unwrap());
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut accepted = 0;
        while wire.lock().pending.is_empty() {
            match wire.poll_write(&mut cx, &chunk) {
                Poll::Ready(Ok(n)) => {
                    assert_eq!(n, chunk.len(), "a write is taken whole");
                    accepted += n;
                }
                other => panic!("the kernel stopped taking bytes at a write's edge: {other:?}"),
            }
        }
        assert_eq!(
            wire.try_write_frame(b"DIRECT"),
            Written::Nothing,
            "nothing beside a write's unsent end"
        );
        assert_eq!(
            wire.poll_write(&mut cx, b"more").map(|r| r.ok()),
            Poll::Pending,
            "the owner's next write waits for the end too"
        );

        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        std::future::poll_fn(|cx| wire.poll_flush(cx))
            .await
            .unwrap();
        {
            let _owner_writing = wire.lock();
            assert_eq!(wire.try_write_frame(b"DIRECT"), Written::Nothing, "busy");
        }
        assert_eq!(wire.try_write_frame(b"DIRECT"), Written::All);
        std::future::poll_fn(|cx| wire.poll_shutdown(cx))
            .await
            .unwrap();

        let got = reader.await.unwrap();
        assert_eq!(got.len(), accepted + b"DIRECT".len());
        assert!(got[..accepted].chunks(chunk.len()).all(|c| c == chunk));
        assert_eq!(&got[accepted..], b"DIRECT");
    }
}
