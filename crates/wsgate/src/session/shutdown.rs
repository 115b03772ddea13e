//! The server's shutdown, as one session waits for it.
//!
//! Every session waits on the same `CancellationToken`, and a session's loop polls all it
//! waits on at each wake-up (every frame in or out). Polling the token's own future again
//! takes the lock of the token's waiter list (tokio's `Notify` checks the stored waker under
//! it) — one lock shared by every session of the process, taken for every frame, and ~700
//! instructions a message through the proxy (callgrind). [`Shutdown`] joins that list once,
//! and afterwards reads only the token's flag, joining again only when polled with a
//! different waker (a session moved to another task or combinator).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Resolves once the token is cancelled. Boxed inside: an idle session holds one pointer.
pub(crate) struct Shutdown(Pin<Box<Waiting>>);

pin_project_lite::pin_project! {
    struct Waiting {
        token: CancellationToken,
        // The token's own future, holding this session's place in the waiter list.
        #[pin]
        wait: WaitForCancellationFutureOwned,
        // The waker that place was taken with.
        waker: Option<Waker>,
    }
}

impl Shutdown {
    pub(crate) fn new(token: CancellationToken) -> Self {
        Self(Box::pin(Waiting {
            wait: token.clone().cancelled_owned(),
            token,
            waker: None,
        }))
    }
}

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let waiting = self.0.as_mut().project();
        if waiting.token.is_cancelled() {
            return Poll::Ready(());
        }
        if waiting
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            // Already in the waiter list with this waker: the cancellation will wake it.
            return Poll::Pending;
        }
        let polled = waiting.wait.poll(cx);
        if polled.is_pending() {
            *waiting.waker = Some(cx.waker().clone());
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(shutdown: &mut Shutdown, waker: &Arc<Count>) -> Poll<()> {
        let waker = Waker::from(waker.clone());
        Pin::new(shutdown).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn the_waker_it_was_last_polled_with_is_woken_once_cancelled() {
        let token = CancellationToken::new();
        let mut shutdown = Shutdown::new(token.clone());
        let (first, second) = (Arc::new(Count::default()), Arc::new(Count::default()));
        assert!(poll(&mut shutdown, &first).is_pending());
        // Polled again with the same waker: nothing is joined again (and nothing wakes).
        assert!(poll(&mut shutdown, &first).is_pending());
        // Moved to another waker: that one is woken.
        assert!(poll(&mut shutdown, &second).is_pending());
        token.cancel();
        assert_eq!(
            second.0.load(Ordering::SeqCst),
            1,
            "the latest waker is woken"
        );
        assert!(poll(&mut shutdown, &second).is_ready());
        assert!(poll(&mut shutdown, &first).is_ready(), "and stays ready");
    }

    #[test]
    fn a_token_cancelled_before_the_first_poll_is_ready_at_once() {
        let token = CancellationToken::new();
        token.cancel();
        let mut shutdown = Shutdown::new(token);
        assert!(poll(&mut shutdown, &Arc::new(Count::default())).is_ready());
    }

    #[tokio::test]
    async fn a_child_token_cancelled_through_its_parent_ends_the_wait() {
        let parent = CancellationToken::new();
        let shutdown = Shutdown::new(parent.child_token());
        let waiting = tokio::spawn(shutdown);
        tokio::task::yield_now().await;
        parent.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(2), waiting)
            .await
            .expect("woken by the cancellation")
            .unwrap();
    }
}
