//! Deadlines on tokio's clock, and one long-lived timer serving many of
//! them: the server loop's head timeout and the upstream exchange timeout
//! each keep one timer per connection instead of arming and cancelling one
//! per request, which cost more than the rest of the wait.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// What "never" is taken to mean (tokio's own far future is 30 years).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + after`, saturating: a configured timeout may be as large as a
/// `u64` of seconds, which `Instant` addition would panic on.
pub fn after(after: Duration) -> Instant {
    after_from(Instant::now(), after)
}

/// `now + after`, saturating, for a caller that has read the clock already.
pub fn after_from(now: Instant, after: Duration) -> Instant {
    now.checked_add(after.min(FAR_FUTURE)).unwrap_or(now)
}

/// For a long-lived timer that has fired: whether `deadline` has passed;
/// if not, the timer is moved to it.
pub fn passed(timer: Pin<&mut Sleep>, deadline: Instant) -> bool {
    if Instant::now() >= deadline {
        return true;
    }
    timer.reset(deadline);
    false
}

/// Runs `work` until `deadline`; `None` when the deadline passed first.
/// `timer` must be set at or before `deadline` (a connection's earlier
/// deadlines are): it is left where it is and, when it fires early, moved to
/// `deadline` then, so a busy connection re-arms it about once per timeout.
pub async fn within<F: Future>(
    work: F,
    mut timer: Pin<&mut Sleep>,
    deadline: Instant,
) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            done = &mut work => return Some(done),
            () = timer.as_mut() => if passed(timer.as_mut(), deadline) {
                return None;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_of_any_timeout_is_in_the_future() {
        let now = Instant::now();
        assert!(after(Duration::MAX) > now);
        assert!(after(Duration::from_secs(5)) >= now + Duration::from_secs(5));
    }

    #[tokio::test]
    async fn an_early_timer_is_moved_not_obeyed() {
        let mut timer = std::pin::pin!(tokio::time::sleep(Duration::from_millis(100)));
        let deadline = after(Duration::from_millis(300));
        let work = tokio::time::sleep(Duration::from_millis(200));
        assert_eq!(within(work, timer.as_mut(), deadline).await, Some(()));
        let deadline = after(Duration::from_millis(300));
        let start = Instant::now();
        let never = std::future::pending::<()>();
        assert_eq!(within(never, timer.as_mut(), deadline).await, None);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_millis(600), "{waited:?}");
    }
}
