//! Futures run in place: boxed where they are built, and finished on a task
//! of their own only when their owner drops them half-way.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// `Box::pin(make())` with the box allocated first, so that the future can
/// be built in it: a future is as large as its largest state, and `Box::pin`
/// copied all of it (2.6 KiB for a request) though only its arguments were set.
pub fn pinned_in_place<F>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// A future polled by its owner, as an `.await` would, that is never cut
/// in two: dropped before it is ready (a client hung up and its request
/// went), it is handed to a task of its own, which finishes it.
///
/// `tokio::spawn` gives the same guarantee, but a task for every session
/// write cost about 4,300 instructions (callgrind, `bench/instructions.py
/// --store redis`): its allocation, the copy of the future into it, its
/// scheduling and the wake of the request waiting on it. Here the future
/// pays that only when it is abandoned, which a write seldom is.
///
/// A panic while it is polled is caught and returned, as a task's
/// `JoinError` returns it: the caller answers it as a failed write.
pub struct Detached<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    future: Option<Pin<Box<F>>>,
}

impl<F> Detached<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    pub fn new(make: impl FnOnce() -> F) -> Self {
        Detached {
            future: Some(pinned_in_place(make)),
        }
    }
}

impl<F> Future for Detached<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let future = this
            .future
            .as_mut()
            .expect("a Detached future is not polled after it is ready");
        let polled = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx)));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => {
                this.future = None;
                Poll::Ready(Ok(out))
            }
            Err(payload) => {
                this.future = None;
                Poll::Ready(Err(payload))
            }
        }
    }
}

impl<F> Drop for Detached<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        // Outside a runtime (it is shutting down) there is nothing left to
        // finish the future on: it is dropped, as a task of that runtime's
        // would be.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(future);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Two steps with a wait between them, counting the steps done.
    async fn two_steps(done: Arc<AtomicUsize>, wait: Arc<tokio::sync::Notify>) -> usize {
        done.fetch_add(1, Ordering::SeqCst);
        wait.notified().await;
        done.fetch_add(1, Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_future_run_to_the_end_gives_its_output_and_spawns_nothing() {
        let done = Arc::new(AtomicUsize::new(0));
        let wait = Arc::new(tokio::sync::Notify::new());
        wait.notify_one();
        let d = done.clone();
        let out = Detached::new(move || two_steps(d, wait)).await;
        assert_eq!(out.ok(), Some(1));
        assert_eq!(done.load(Ordering::SeqCst), 2);
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert_eq!(tasks, 0, "no task was spawned");
    }

    #[tokio::test]
    async fn a_future_dropped_half_way_is_finished_on_a_task_of_its_own() {
        let done = Arc::new(AtomicUsize::new(0));
        let wait = Arc::new(tokio::sync::Notify::new());
        let (d, w) = (done.clone(), wait.clone());
        let mut detached = Detached::new(move || two_steps(d, w));
        // Polled once: the first step is done, then it waits.
        let waker = std::task::Waker::noop();
        let polled = Pin::new(&mut detached).poll(&mut Context::from_waker(waker));
        assert!(polled.is_pending());
        assert_eq!(done.load(Ordering::SeqCst), 1);
        drop(detached);
        wait.notify_one();
        for _ in 0..100 {
            if done.load(Ordering::SeqCst) == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the abandoned future's second step never ran");
    }

    #[tokio::test]
    async fn a_panic_is_returned_not_propagated() {
        let out = Detached::new(|| async {
            if true {
                panic!("the store broke");
            }
            1
        })
        .await;
        let payload = out.expect_err("the panic comes back as an error");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"the store broke"));
    }
}
