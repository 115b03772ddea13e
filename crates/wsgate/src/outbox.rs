//! A socket's outbox: frames others send it (pub/sub deliveries), drained by its own task.
//!
//! Bounded, because a subscriber that stops reading must not grow the server's memory: a frame that
//! finds the outbox full marks it overflowed, drops what it held, and the socket's own guard then
//! closes it (`CloseReason::SlowConsumer`) — no search for the socket needed. Lazily allocated,
//! because most sockets are idle most of the time: tokio's bounded `mpsc` allocates a 32-slot block
//! per channel up front (~1.4 KiB with its state), while an empty `VecDeque` owns nothing and a
//! drained one gives its buffer back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The outbox was full: it is now overflowed and its socket will be closed. Reported once.
    Full,
    /// The socket is gone, or already overflowed.
    Closed,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Inner>,
    waker: AtomicWaker,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<Utf8Bytes>,
    closed: bool,
    overflowed: bool,
}

/// The sending half; cheap to clone.
#[derive(Debug, Clone)]
pub struct OutboxSender(Arc<Shared>);

/// The receiving half, owned by the socket's task. Dropping it closes the outbox.
#[derive(Debug)]
pub struct Outbox(Arc<Shared>);

/// An outbox holding at most `capacity` frames.
pub fn outbox(capacity: usize) -> (OutboxSender, Outbox) {
    let shared = Arc::new(Shared {
        queue: Mutex::default(),
        waker: AtomicWaker::new(),
        capacity: capacity.max(1),
    });
    (OutboxSender(shared.clone()), Outbox(shared))
}

impl OutboxSender {
    /// Queues a frame without waiting.
    pub fn try_send(&self, frame: Utf8Bytes) -> Result<(), SendError> {
        {
            let mut q = self.0.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.closed || q.overflowed {
                return Err(SendError::Closed);
            }
            if q.frames.len() >= self.0.capacity {
                q.overflowed = true;
                q.frames = VecDeque::new();
                drop(q);
                self.0.waker.wake();
                return Err(SendError::Full);
            }
            q.frames.push_back(frame);
        }
        self.0.waker.wake();
        Ok(())
    }
}

impl Outbox {
    /// The next frame; `None` once the outbox overflowed (close the socket as too slow);
    /// pending while empty.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Utf8Bytes>> {
        if let Some(f) = self.pop() {
            return Poll::Ready(f);
        }
        self.0.waker.register(cx.waker());
        // A frame may have landed between the first look and the registration.
        match self.pop() {
            Some(f) => Poll::Ready(f),
            None => Poll::Pending,
        }
    }

    /// The next queued frame; `None` once the outbox overflowed (the socket must close).
    pub async fn recv(&mut self) -> Option<Utf8Bytes> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn pop(&self) -> Option<Option<Utf8Bytes>> {
        let mut q = self.0.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.overflowed {
            return Some(None);
        }
        let frame = q.frames.pop_front()?;
        if q.frames.is_empty() && q.frames.capacity() > 0 {
            // Give the buffer back: idle subscribers should cost nothing here.
            q.frames = VecDeque::new();
        }
        Some(Some(frame))
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut q = self.0.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.closed = true;
        q.frames = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_ordered_and_closed_on_drop() {
        let (tx, mut rx) = outbox(2);
        tx.try_send("a".into()).unwrap();
        assert_eq!(rx.recv().await.as_deref(), Some("a"));
        tx.try_send("b".into()).unwrap();
        let waiter = tokio::spawn(async move {
            let f = rx.recv().await;
            (f, rx)
        });
        let (f, mut rx) = waiter.await.unwrap();
        assert_eq!(f.as_deref(), Some("b"));
        let waiter = tokio::spawn(async move {
            let f = rx.recv().await;
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
            None,
            "queued frames are dropped: the socket is closing"
        );
    }
}
