//! A socket's outbox: frames others send it (pub/sub deliveries), and the decision of who
//! writes them.
//!
//! Bounded, because a subscriber that stops reading must not grow the server's memory: a frame that
//! finds the outbox full marks it overflowed, drops what it held, and the socket's own guard then
//! closes it (`CloseReason::SlowConsumer`) — no search for the socket needed. Lazily allocated,
//! because most sockets are idle most of the time: an empty `VecDeque` owns nothing and a drained
//! one gives its buffer back.
//!
//! **Direct writes.** Waking 10,000 socket tasks to write one small frame each costs as much again
//! as the writes themselves (scheduling, polling, framing per socket). So an outbox may be given
//! the socket's [`DirectWrite`] (the server's connection, which can take a whole encoded frame
//! from any thread), and then a [`Delivery`] is written by the publisher itself, from the bytes
//! encoded once for everyone — the socket's task is not woken at all. It falls back to the queue
//! whenever a direct write could reorder or interleave frames: while the socket's own task holds
//! the outbox (it is writing a queued frame, or its endpoint is handling a client frame, whose
//! answers come first — `subscribed` before the channel's messages, `published` before the
//! publisher's own copy), while frames are queued, and when the socket cannot take the frame now.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// Why a frame was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The outbox was full: it is now overflowed and its socket will be closed. Reported once.
    Full,
    /// The socket is gone, closing, or already overflowed.
    Closed,
}

/// What a [`DirectWrite`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// All of it is in the kernel's send buffer.
    All,
    /// The start of it is; the writer kept the rest and sends it on the socket owner's next
    /// flush, before anything else.
    Part,
    /// None of it (the socket is busy or cannot take it now): queue it instead.
    Nothing,
}

/// A socket's write side that a publisher may use without the socket's task: whole encoded
/// WebSocket frames, never interleaved with the task's own writes.
pub trait DirectWrite: Send + Sync + 'static {
    /// Writes `frame` (one complete server frame) without waiting.
    fn try_write_frame(&self, frame: &[u8]) -> Written;
}

/// A text frame for many sockets: its text for the queues, and its encoding on the wire, made
/// once per publication, for direct writes.
#[derive(Debug, Clone)]
pub struct Delivery {
    text: Utf8Bytes,
    encoded: Bytes,
}

impl Delivery {
    /// Encodes `text` as a server text frame (unmasked, final), once.
    pub fn new(text: Utf8Bytes) -> Self {
        let payload = Bytes::from(text.clone());
        let frame = Frame::message(payload, OpCode::Data(Data::Text), true);
        let mut encoded = Vec::with_capacity(frame.len());
        // Writing into a `Vec` cannot fail.
        let _ = frame.format(&mut encoded);
        Self {
            text,
            encoded: encoded.into(),
        }
    }
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Inner>,
    waker: AtomicWaker,
    capacity: usize,
    direct: Option<Arc<dyn DirectWrite>>,
}

#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<Utf8Bytes>,
    closed: bool,
    overflowed: bool,
    /// The socket's task is writing or answering: deliveries queue behind it.
    held: bool,
    /// A direct write left part of a frame with the writer: the task must flush.
    flush: bool,
    /// Frames written directly since the task last asked (for its message counts).
    written: u64,
}

impl std::fmt::Debug for dyn DirectWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectWrite")
    }
}

/// The sending half; cheap to clone.
#[derive(Debug, Clone)]
pub struct OutboxSender(Arc<Shared>);

/// The receiving half, owned by the socket's task. Dropping it closes the outbox.
#[derive(Debug)]
pub struct Outbox(Arc<Shared>);

/// How a delivery went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Written to the socket by the publisher itself: the fast path, no task woken.
    Written,
    /// Queued for the socket's own task: it was busy, or other frames had to go first.
    Queued,
}

/// What the socket's task must do for its outbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// Write this queued frame.
    Frame(Utf8Bytes),
    /// Flush the socket: a direct write left the end of a frame to send.
    Flush,
    /// The outbox overflowed: close the socket as too slow.
    Overflowed,
}

/// An outbox holding at most `capacity` frames, written by the socket's own task.
pub fn outbox(capacity: usize) -> (OutboxSender, Outbox) {
    with_direct(capacity, None)
}

/// An outbox whose deliveries the publisher writes itself through `direct` whenever that
/// keeps the socket's frames whole and in order (see the module's notes).
pub fn outbox_writing_to(capacity: usize, direct: Arc<dyn DirectWrite>) -> (OutboxSender, Outbox) {
    with_direct(capacity, Some(direct))
}

fn with_direct(capacity: usize, direct: Option<Arc<dyn DirectWrite>>) -> (OutboxSender, Outbox) {
    let shared = Arc::new(Shared {
        // Held until the task first waits for frames: nothing may overtake its first answers.
        queue: Mutex::new(Inner {
            held: true,
            ..Inner::default()
        }),
        waker: AtomicWaker::new(),
        capacity: capacity.max(1),
        direct,
    });
    (OutboxSender(shared.clone()), Outbox(shared))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl OutboxSender {
    /// Queues a frame without waiting.
    pub fn try_send(&self, frame: Utf8Bytes) -> Result<(), SendError> {
        let mut q = self.0.lock();
        self.queue(&mut q, frame)
    }

    /// Delivers a frame without waiting: written here and now when the outbox has a
    /// [`DirectWrite`] and nothing must come first, queued for the socket's task otherwise.
    pub fn try_deliver(&self, frame: &Delivery) -> Result<Delivered, SendError> {
        let mut q = self.0.lock();
        if let Some(direct) = &self.0.direct
            && !(q.closed || q.overflowed || q.held || q.flush)
            && q.frames.is_empty()
        {
            // Under the outbox's lock, so the task cannot start writing (or close) meanwhile.
            match direct.try_write_frame(&frame.encoded) {
                Written::All => {
                    q.written += 1;
                    return Ok(Delivered::Written);
                }
                Written::Part => {
                    q.written += 1;
                    q.flush = true;
                    drop(q);
                    self.0.waker.wake();
                    return Ok(Delivered::Written);
                }
                Written::Nothing => {}
            }
        }
        self.queue(&mut q, frame.text.clone())
            .map(|()| Delivered::Queued)
    }

    fn queue(&self, q: &mut MutexGuard<'_, Inner>, frame: Utf8Bytes) -> Result<(), SendError> {
        if q.closed || q.overflowed {
            return Err(SendError::Closed);
        }
        if q.frames.len() >= self.0.capacity {
            q.overflowed = true;
            q.frames = VecDeque::new();
            self.0.waker.wake();
            return Err(SendError::Full);
        }
        q.frames.push_back(frame);
        self.0.waker.wake();
        Ok(())
    }
}

impl Outbox {
    /// What to do next; pending while there is nothing. A queued frame holds the outbox until
    /// [`Outbox::release`] (after it was written), so later deliveries queue behind it.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Outgoing> {
        if let Some(out) = self.next() {
            return Poll::Ready(out);
        }
        self.0.waker.register(cx.waker());
        // A frame may have landed between the first look and the registration.
        match self.next() {
            Some(out) => Poll::Ready(out),
            None => Poll::Pending,
        }
    }

    /// Like [`Outbox::poll_recv`].
    pub async fn recv(&mut self) -> Outgoing {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Resolves once the outbox overflowed (to stop waiting on a socket that does not read).
    pub async fn overflowed(&self) {
        std::future::poll_fn(|cx| {
            if self.0.lock().overflowed {
                return Poll::Ready(());
            }
            self.0.waker.register(cx.waker());
            if self.0.lock().overflowed {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// The socket's task is about to write or answer on its own: deliveries queue meanwhile.
    pub fn hold(&self) {
        self.0.lock().held = true;
    }

    /// The socket's task is waiting again: deliveries may be written directly (once the
    /// queue is empty).
    pub fn release(&self) {
        self.0.lock().held = false;
    }

    /// The socket is closing: nothing more may be written to it (a close frame is last).
    pub fn close(&self) {
        let mut q = self.0.lock();
        q.closed = true;
        q.frames = VecDeque::new();
    }

    /// How many frames were written directly since the last call.
    pub fn take_written(&self) -> u64 {
        std::mem::take(&mut self.0.lock().written)
    }

    fn next(&self) -> Option<Outgoing> {
        let mut q = self.0.lock();
        if q.overflowed {
            return Some(Outgoing::Overflowed);
        }
        if std::mem::take(&mut q.flush) {
            q.held = true;
            return Some(Outgoing::Flush);
        }
        let frame = q.frames.pop_front()?;
        if q.frames.is_empty() && q.frames.capacity() > 0 {
            // Give the buffer back: idle subscribers should cost nothing here.
            q.frames = VecDeque::new();
        }
        q.held = true;
        Some(Outgoing::Frame(frame))
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn frame(out: Outgoing) -> Option<Utf8Bytes> {
        match out {
            Outgoing::Frame(f) => Some(f),
            _ => None,
        }
    }

    #[tokio::test]
    async fn bounded_ordered_and_closed_on_drop() {
        let (tx, mut rx) = outbox(2);
        tx.try_send("a".into()).unwrap();
        assert_eq!(frame(rx.recv().await).as_deref(), Some("a"));
        tx.try_send("b".into()).unwrap();
        let waiter = tokio::spawn(async move {
            let f = frame(rx.recv().await);
            (f, rx)
        });
        let (f, mut rx) = waiter.await.unwrap();
        assert_eq!(f.as_deref(), Some("b"));
        let waiter = tokio::spawn(async move {
            let f = frame(rx.recv().await);
            (f, rx)
        });
        tokio::task::yield_now().await;
        tx.try_send("c".into()).unwrap();
        let (f, rx) = waiter.await.unwrap();
        assert_eq!(f.as_deref(), Some("c"));
        drop(rx);
        assert_eq!(tx.try_send("e".into()), Err(SendError::Closed));
    }

    #[tokio::test]
    async fn overflow_is_reported_once_and_ends_the_outbox() {
        let (tx, mut rx) = outbox(2);
        tx.try_send("a".into()).unwrap();
        tx.try_send("b".into()).unwrap();
        assert_eq!(tx.try_send("c".into()), Err(SendError::Full));
        assert_eq!(tx.try_send("d".into()), Err(SendError::Closed));
        assert_eq!(
            rx.recv().await,
            Outgoing::Overflowed,
            "queued frames are dropped: the socket is closing"
        );
        rx.overflowed().await;
    }

    /// Takes frames whole until told to take only part, or none.
    #[derive(Default)]
    struct Wire {
        taken: Mutex<Vec<Vec<u8>>>,
        mode: AtomicUsize,
    }
    impl DirectWrite for Wire {
        fn try_write_frame(&self, frame: &[u8]) -> Written {
            match self.mode.load(Ordering::Relaxed) {
                0 => {
                    self.taken.lock().unwrap().push(frame.to_vec());
                    Written::All
                }
                1 => Written::Part,
                _ => Written::Nothing,
            }
        }
    }

    #[tokio::test]
    async fn direct_writes_only_when_nothing_must_come_first() {
        let wire = Arc::new(Wire::default());
        let (tx, mut rx) = outbox_writing_to(4, wire.clone());
        let d = |s: &'static str| Delivery::new(s.into());

        assert_eq!(tx.try_deliver(&d("first")), Ok(Delivered::Queued));
        assert!(
            wire.taken.lock().unwrap().is_empty(),
            "held until the task waits"
        );
        assert_eq!(frame(rx.recv().await).as_deref(), Some("first"));
        tx.try_deliver(&d("behind")).unwrap();
        assert!(wire.taken.lock().unwrap().is_empty(), "the task is writing");
        rx.release();
        tx.try_deliver(&d("queued")).unwrap();
        assert!(
            wire.taken.lock().unwrap().is_empty(),
            "frames are queued: they go first"
        );
        assert_eq!(frame(rx.recv().await).as_deref(), Some("behind"));
        assert_eq!(frame(rx.recv().await).as_deref(), Some("queued"));
        rx.release();

        assert_eq!(tx.try_deliver(&d("hi")), Ok(Delivered::Written));
        assert_eq!(*wire.taken.lock().unwrap(), vec![b"\x81\x02hi".to_vec()]);
        assert_eq!(rx.take_written(), 1);

        wire.mode.store(1, Ordering::Relaxed);
        assert_eq!(tx.try_deliver(&d("part")), Ok(Delivered::Written));
        assert_eq!(rx.recv().await, Outgoing::Flush);
        wire.mode.store(0, Ordering::Relaxed);
        tx.try_deliver(&d("after the flush")).unwrap();
        assert_eq!(
            frame(rx.recv().await).as_deref(),
            Some("after the flush"),
            "nothing is written beside a frame's unsent end"
        );
        rx.release();

        wire.mode.store(2, Ordering::Relaxed);
        assert_eq!(tx.try_deliver(&d("busy")), Ok(Delivered::Queued));
        assert_eq!(frame(rx.recv().await).as_deref(), Some("busy"));
        rx.release();

        wire.mode.store(0, Ordering::Relaxed);
        rx.close();
        assert_eq!(tx.try_deliver(&d("late")), Err(SendError::Closed));
        assert_eq!(wire.taken.lock().unwrap().len(), 1, "nothing after a close");
    }
}
