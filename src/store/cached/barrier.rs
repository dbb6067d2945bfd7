//! The read barrier of a `cached` store's invalidation channel. A cached
//! copy is served only after a round trip on that channel that began after
//! the read did (`SELECT 1` on PostgreSQL's listening connection, `PING` on
//! Redis's tracking one): the server sends every invalidation of a write it
//! committed earlier on that connection before the answer, so a write
//! acknowledged to anyone before this read began has been applied to the
//! cache by then. One round trip serves every read waiting for it.
//!
//! A reader waits with no timer of its own: each round trip is bounded by
//! the channel's timeout, and a channel that fails opens the barrier
//! (`release`), as does the channel's task ending in any way (`OpenOnExit`).
//! A per-read timer (a timer-wheel entry registered and removed on every
//! hit) and a watch subscription cost about 1,550 instructions a hit
//! (callgrind, one client: 49,250 -> 47,692 per cached read).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

pub struct Barrier {
    state: Mutex<State>,
    wake: tokio::sync::Notify,
}

struct State {
    /// Tickets handed out: each reader takes the next.
    requested: u64,
    /// Every ticket up to this one has had its round trip.
    done: u64,
    /// No channel to make round trips on: readers go on at once (and find
    /// the cache off, which is turned off before the barrier opens).
    open: bool,
    waiting: Vec<(u64, Waker)>,
}

impl Default for Barrier {
    fn default() -> Self {
        Barrier {
            state: Mutex::new(State {
                requested: 0,
                done: 0,
                open: true,
                waiting: Vec::new(),
            }),
            wake: tokio::sync::Notify::new(),
        }
    }
}

impl Barrier {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every unlock: a panic elsewhere
        // while it was held leaves nothing half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a round trip begun after this call, or for the barrier to
    /// open (the channel is down; the cache is then off).
    pub async fn pass(&self) {
        let ticket = {
            let mut s = self.state();
            if s.open {
                return;
            }
            s.requested += 1;
            s.requested
        };
        self.wake.notify_one();
        std::future::poll_fn(|cx| {
            let mut s = self.state();
            if s.open || s.done >= ticket {
                return Poll::Ready(());
            }
            match s.waiting.iter_mut().find(|(t, _)| *t == ticket) {
                Some((_, waker)) => waker.clone_from(cx.waker()),
                None => s.waiting.push((ticket, cx.waker().clone())),
            }
            Poll::Pending
        })
        .await
    }

    /// For the channel's task: waits until a reader asks, then says which
    /// requests the round trip it then makes covers.
    pub async fn asked(&self) -> u64 {
        self.wake.notified().await;
        self.state().requested
    }

    /// For the channel's task: the round trip covering `upto` completed
    /// and the invalidations it flushed were applied.
    pub fn passed(&self, upto: u64) {
        let ready: Vec<Waker> = {
            let mut s = self.state();
            s.done = s.done.max(upto);
            let done = s.done;
            s.waiting
                .extract_if(.., |(t, _)| *t <= done)
                .map(|(_, w)| w)
                .collect()
        };
        ready.into_iter().for_each(Waker::wake);
    }

    /// For the channel's task, before it turns the cache on: readers wait
    /// for round trips again.
    pub fn close(&self) {
        self.state().open = false;
    }

    /// Lets every waiting reader go on, and every later one until `close`
    /// (to find the cache off: turn it off first).
    pub fn release(&self) {
        let ready = {
            let mut s = self.state();
            s.open = true;
            s.done = s.requested;
            std::mem::take(&mut s.waiting)
        };
        ready.into_iter().for_each(|(_, w)| w.wake());
    }
}

/// Held by a channel's task: however the task ends (its loop returns, it
/// panics, the store aborts it), the cache goes off and the barrier opens,
/// so that no reader waits for a round trip that will never come.
pub struct OpenOnExit {
    pub cache: Arc<super::LocalCache>,
    pub barrier: Arc<Barrier>,
}

impl Drop for OpenOnExit {
    fn drop(&mut self) {
        self.cache.reset(false);
        self.barrier.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn passes_within(barrier: &Barrier, ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(ms), barrier.pass())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn an_open_barrier_does_not_wait() {
        let barrier = Barrier::default();
        assert!(passes_within(&barrier, 50).await);
    }

    #[tokio::test]
    async fn a_reader_waits_for_a_round_trip_begun_after_it() {
        let barrier = Arc::new(Barrier::default());
        barrier.close();
        // A round trip that covered earlier readers does not let it go.
        barrier.passed(0);
        let reader = tokio::spawn({
            let b = barrier.clone();
            async move { b.pass().await }
        });
        let upto = barrier.asked().await;
        assert_eq!(upto, 1, "the reader's ticket");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!reader.is_finished(), "no round trip has covered it yet");
        barrier.passed(upto);
        tokio::time::timeout(Duration::from_secs(1), reader)
            .await
            .expect("the round trip let it go")
            .unwrap();
    }

    #[tokio::test]
    async fn a_round_trip_in_flight_does_not_cover_a_later_reader() {
        let barrier = Arc::new(Barrier::default());
        barrier.close();
        let first = tokio::spawn({
            let b = barrier.clone();
            async move { b.pass().await }
        });
        let upto = barrier.asked().await;
        let second = tokio::spawn({
            let b = barrier.clone();
            async move { b.pass().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        barrier.passed(upto);
        tokio::time::timeout(Duration::from_secs(1), first)
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "it asked after the trip began");
        let next = barrier.asked().await;
        barrier.passed(next);
        tokio::time::timeout(Duration::from_secs(1), second)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_lost_channel_lets_every_waiting_reader_go() {
        let barrier = Arc::new(Barrier::default());
        barrier.close();
        let readers: Vec<_> = (0..5)
            .map(|_| {
                let b = barrier.clone();
                tokio::spawn(async move { b.pass().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        barrier.release();
        for r in readers {
            tokio::time::timeout(Duration::from_secs(1), r)
                .await
                .unwrap()
                .unwrap();
        }
        assert!(passes_within(&barrier, 50).await, "and later ones");
    }

    #[tokio::test]
    async fn a_channel_task_that_dies_turns_the_cache_off_and_opens_the_barrier() {
        let cache = Arc::new(super::super::LocalCache::new(10, true));
        let barrier = Arc::new(Barrier::default());
        barrier.close();
        let task = tokio::spawn({
            let guard = OpenOnExit {
                cache: cache.clone(),
                barrier: barrier.clone(),
            };
            async move {
                let _guard = guard;
                panic!("the channel's task failed");
            }
        });
        assert!(task.await.is_err());
        let id = crate::record::SessionId::generate();
        assert!(matches!(cache.get(&id, 1), Err(None)), "the cache is off");
        assert!(passes_within(&barrier, 50).await);
    }
}
