//! What a session's loop waits on besides its peers: the server's shutdown and its one timer.
//!
//! A session's loop polls everything it waits on at each wake-up (every frame in or out),
//! and re-polling these two is not free: the shutdown token's future takes the lock of the
//! token's waiter list (tokio's `Notify` checks the stored waker under it) — one lock that
//! every session of the process shares, taken on every frame — and a `Sleep` re-registers
//! its waker. Together ~1,000 instructions a message through the proxy (callgrind). So each
//! is joined once ([`poll_joined`]): after one poll has left this task's waker with it, it
//! is polled again only when a flag says it may be ready (the token cancelled, the timer
//! fired), or with a different waker (the session moved to another task or combinator).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Polls `fut` unless it already holds this waker (`joined`) and cannot be ready yet.
fn poll_joined<F: Future>(
    fut: Pin<&mut F>,
    joined: &mut Option<Waker>,
    may_be_ready: bool,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    if !may_be_ready && joined.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        return Poll::Pending;
    }
    let polled = fut.poll(cx);
    *joined = polled.is_pending().then(|| cx.waker().clone());
    polled
}

/// Resolves once the token is cancelled. Boxed inside: an idle session holds one pointer.
pub(crate) struct Shutdown(Pin<Box<WaitingForShutdown>>);

pin_project_lite::pin_project! {
    struct WaitingForShutdown {
        token: CancellationToken,
        // The token's own future, holding this session's place in the waiter list.
        #[pin]
        wait: WaitForCancellationFutureOwned,
        joined: Option<Waker>,
    }
}

impl Shutdown {
    pub(crate) fn new(token: CancellationToken) -> Self {
        Self(Box::pin(WaitingForShutdown {
            wait: token.clone().cancelled_owned(),
            token,
            joined: None,
        }))
    }
}

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let w = self.0.as_mut().project();
        poll_joined(w.wait, w.joined, w.token.is_cancelled(), cx)
    }
}

/// The session's one timer entry: pending for ever while unset. Boxed inside, as above.
#[derive(Default)]
pub(crate) struct Timer(Option<Pin<Box<Armed>>>);

pin_project_lite::pin_project! {
    struct Armed {
        #[pin]
        sleep: Sleep,
        joined: Option<Waker>,
    }
}

impl Timer {
    /// Sets the timer to fire at `at`, or unsets it.
    pub(crate) fn set(&mut self, at: Option<Instant>) {
        match (at, &mut self.0) {
            (None, _) => self.0 = None,
            (Some(at), Some(armed)) => {
                let armed = armed.as_mut().project();
                armed.sleep.reset(at);
                // Whatever the entry kept across the reset, the next poll leaves this task's
                // waker with it (a fired timer's was already let go: it returned `Ready`).
                *armed.joined = None;
            }
            (Some(at), None) => {
                self.0 = Some(Box::pin(Armed {
                    sleep: tokio::time::sleep_until(at),
                    joined: None,
                }));
            }
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(armed) = self.0.as_mut() else {
            return Poll::Pending;
        };
        let a = armed.as_mut().project();
        let fired = a.sleep.is_elapsed();
        poll_joined(a.sleep, a.joined, fired, cx)
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

    fn poll_timer(timer: &mut Timer, waker: &Arc<Count>) -> Poll<()> {
        let waker = Waker::from(waker.clone());
        Pin::new(timer).poll(&mut Context::from_waker(&waker))
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_wakes_its_task_when_it_fires_and_again_once_reset() {
        let ms = std::time::Duration::from_millis;
        let woken = Arc::new(Count::default());
        let wakes = || woken.0.load(Ordering::SeqCst);
        let mut timer = Timer::default();
        assert!(poll_timer(&mut timer, &woken).is_pending(), "unset: never");

        timer.set(Some(Instant::now() + ms(10)));
        assert!(poll_timer(&mut timer, &woken).is_pending());
        assert!(
            poll_timer(&mut timer, &woken).is_pending(),
            "joined: not polled"
        );
        tokio::time::advance(ms(5)).await;
        assert_eq!(wakes(), 0);
        tokio::time::advance(ms(10)).await;
        assert_eq!(wakes(), 1, "the fired timer wakes the task");
        assert!(poll_timer(&mut timer, &woken).is_ready());

        // Reset after firing: the fired entry gave its waker away; it must be given one again.
        timer.set(Some(Instant::now() + ms(10)));
        assert!(poll_timer(&mut timer, &woken).is_pending());
        tokio::time::advance(ms(15)).await;
        assert_eq!(wakes(), 2, "the reset timer wakes the task too");
        assert!(poll_timer(&mut timer, &woken).is_ready());

        // Reset before firing, to later: it fires at the new time, not the old one.
        timer.set(Some(Instant::now() + ms(10)));
        assert!(poll_timer(&mut timer, &woken).is_pending());
        timer.set(Some(Instant::now() + ms(30)));
        assert!(poll_timer(&mut timer, &woken).is_pending());
        tokio::time::advance(ms(15)).await;
        assert!(poll_timer(&mut timer, &woken).is_pending(), "not yet");
        tokio::time::advance(ms(20)).await;
        assert_eq!(wakes(), 3);
        assert!(poll_timer(&mut timer, &woken).is_ready());

        timer.set(None);
        assert!(poll_timer(&mut timer, &woken).is_pending(), "unset again");
    }
}
