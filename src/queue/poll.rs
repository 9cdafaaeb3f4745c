//! The loop the queue's three workers (planning, scheduling, the outbox) run in: do a step,
//! then sleep until the next item is due (at most 30 s; 1 s after an error), the worker is
//! woken, or the queue stops. Written once so that the three cannot drift apart.
//!
//! When the next item is due is kept in memory by each loop's [`Alarm`]: whoever stores an
//! item due later (a retry, a requeue) sets the alarm in the same breath, so the loops do
//! not ask the store after every step. The store is asked once, at start, and the idle
//! wake-up (every 30 s) is the safety net.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::QueueError;
use crate::store::Millis;

/// The longest sleep: whatever the step says, look again after this.
pub const IDLE_WAIT: Duration = Duration::from_secs(30);
/// The sleep after a step failed (the store was busy, say).
pub const ERROR_WAIT: Duration = Duration::from_secs(1);
/// The shortest sleep, so that an item due in the past cannot spin the loop.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// A loop's wake-ups: now ([`Alarm::wake`]) or at a time ([`Alarm::at`]). Times already
/// reached are forgotten when the step runs; a wake-up sent while it runs is kept.
#[derive(Default)]
pub struct Alarm {
    wake: Notify,
    due: Mutex<BTreeSet<i64>>,
}

impl Alarm {
    /// Something is due now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Something becomes due at `at`.
    pub fn at(&self, at: Millis) {
        self.due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(at.0);
        self.wake.notify_one();
    }

    /// Forgets the times reached by `now` (the step about to run handles them).
    fn reached(&self, now: Millis) {
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        *due = due.split_off(&(now.0 + 1));
    }

    /// The earliest time still ahead.
    fn next(&self) -> Option<Millis> {
        let due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        due.first().copied().map(Millis)
    }
}

/// When a loop must read the store again for one kind of item (commands stored, failed
/// deliveries to retry): the earliest such time, or none known. What comes in memory needs
/// no read; this keeps the reads to the items that did not.
#[derive(Debug)]
pub struct DueAt(Mutex<Option<Millis>>);

impl Default for DueAt {
    fn default() -> DueAt {
        DueAt::now()
    }
}

impl DueAt {
    /// Known due at once: at start, nothing is known, so the first step reads.
    pub fn now() -> DueAt {
        DueAt(Mutex::new(Some(Millis(0))))
    }

    /// Items become due at `at` (kept if earlier than what is known).
    pub fn set(&self, at: Millis) {
        let mut due = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *due = Some(due.map_or(at, |d| d.min(at)));
    }

    /// Whether the time has come by `now`; if so, forgets it (the caller reads now).
    pub fn take_if_due(&self, now: Millis) -> bool {
        let mut due = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let reached = due.is_some_and(|d| d <= now);
        if reached {
            *due = None;
        }
        reached
    }
}

/// Runs `step` until `stop` is cancelled. A step does what is due and may return when it
/// wants to run again (`None`: only when the alarm says); the alarm runs it again at once
/// when woken, or at the times set on it.
pub async fn run<F, Fut>(name: &str, alarm: &Alarm, stop: &CancellationToken, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Millis>, QueueError>>,
{
    loop {
        alarm.reached(Millis::now());
        let wait = match step().await {
            Ok(due) => {
                let due = [due, alarm.next()].into_iter().flatten().min();
                wait_for(due, Millis::now())
            }
            Err(e) => {
                tracing::error!("{name}: {e}");
                ERROR_WAIT
            }
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = alarm.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// How long to sleep at `now` when the next item is `due`.
fn wait_for(due: Option<Millis>, now: Millis) -> Duration {
    match due {
        None => IDLE_WAIT,
        Some(due) => {
            let ms = due.0.saturating_sub(now.0).max(0) as u64;
            Duration::from_millis(ms).clamp(MIN_WAIT, IDLE_WAIT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn sleeps_until_the_next_item_is_due_within_bounds() {
        let now = Millis(1_000_000);
        assert_eq!(wait_for(None, now), IDLE_WAIT);
        assert_eq!(
            wait_for(Some(Millis(now.0 + 1500)), now),
            Duration::from_millis(1500)
        );
        assert_eq!(wait_for(Some(Millis(now.0 + 3_600_000)), now), IDLE_WAIT);
        assert_eq!(wait_for(Some(Millis(now.0 - 5000)), now), MIN_WAIT);
        assert_eq!(wait_for(Some(now), now), MIN_WAIT);
    }

    /// Runs the loop over a step that counts its calls and answers with `answer(call)`.
    fn spawn_counting(
        answer: fn(u32) -> Result<Option<Millis>, QueueError>,
    ) -> (
        Arc<Alarm>,
        CancellationToken,
        Arc<AtomicU32>,
        tokio::task::JoinHandle<()>,
    ) {
        let wake = Arc::new(Alarm::default());
        let stop = CancellationToken::new();
        let calls = Arc::new(AtomicU32::new(0));
        let (w, s, c) = (wake.clone(), stop.clone(), calls.clone());
        let task = tokio::spawn(async move {
            run("test", &w, &s, || {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                async move { answer(n) }
            })
            .await
        });
        (wake, stop, calls, task)
    }

    async fn until(what: &str, deadline: Duration, f: impl Fn() -> bool) {
        let end = Instant::now() + deadline;
        while !f() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_wake_up_runs_the_step_again_and_stop_ends_the_loop() {
        let (wake, stop, calls, task) = spawn_counting(|_| Ok(None));
        until("the first step", Duration::from_secs(5), || {
            calls.load(Ordering::SeqCst) == 1
        })
        .await;
        wake.wake();
        until("the woken step", Duration::from_secs(5), || {
            calls.load(Ordering::SeqCst) == 2
        })
        .await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop ends when stopped")
            .expect("no panic");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "nothing due: no step without a wake-up"
        );
    }

    #[tokio::test]
    async fn the_step_runs_again_when_its_next_item_is_due_or_after_an_error() {
        let started = Instant::now();
        let (_wake, stop, calls, task) = spawn_counting(|n| match n {
            1 => Ok(Some(Millis::now().after(Duration::from_millis(100)))),
            2 => Err(QueueError::Store(crate::store::StoreError::Corrupt(
                "x".into(),
            ))),
            _ => Ok(None),
        });
        until("the due step", Duration::from_secs(5), || {
            calls.load(Ordering::SeqCst) >= 2
        })
        .await;
        let due = started.elapsed();
        assert!(due >= Duration::from_millis(100), "{due:?}");
        until("the step after an error", Duration::from_secs(5), || {
            calls.load(Ordering::SeqCst) >= 3
        })
        .await;
        let after_error = started.elapsed() - due;
        assert!(after_error >= Duration::from_millis(900), "{after_error:?}");
        stop.cancel();
        task.await.expect("no panic");
    }

    #[tokio::test]
    async fn an_alarm_set_for_later_runs_the_step_then_and_only_once() {
        let started = Instant::now();
        let (alarm, stop, calls, task) = spawn_counting(|_| Ok(None));
        until("the first step", Duration::from_secs(5), || {
            calls.load(Ordering::SeqCst) == 1
        })
        .await;
        alarm.at(Millis::now().after(Duration::from_millis(300)));
        // Setting it wakes the loop to sleep anew: one step now, one when it rings.
        until("the step at the alarm", Duration::from_secs(5), || {
            calls.load(Ordering::SeqCst) == 3
        })
        .await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "a time reached rings once");
        stop.cancel();
        task.await.expect("no panic");
    }
}
