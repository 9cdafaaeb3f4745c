//! One retry policy for the three things the queue retries: planning a trigger, running a
//! build that hit an infrastructure fault, and delivering a report to the forge. Each used
//! to carry its own backoff formula and give-up rule; here they are one type configured
//! three times, so that the rule is written, read and tested once.
//!
//! Attempts are counted from 1: `delay(n)` is the wait after the n-th attempt failed, and
//! `gives_up(n, ..)` says whether the n-th failure was the last one allowed.

use std::time::Duration;

use super::QueueConfig;

/// How often a failed step is tried again, and how long to wait in between: `base` after
/// the first failure, doubled after each further one, never more than `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Give up once this many attempts failed with a [`Fault::Transient`] fault.
    pub max_attempts: u32,
    /// Give up once this many attempts failed with a [`Fault::Permanent`] fault.
    pub max_permanent_attempts: u32,
}

/// Whether trying again may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Infrastructure: a fetch that failed, a Docker daemon that went away, a forge's 5xx.
    Transient,
    /// The other side said retrying will not help (an invalid repository, a forge's 404).
    Permanent,
}

impl RetryPolicy {
    /// Reports to the forge: 2 s, 4 s, 8 s... up to an hour (a forge's Retry-After wins, see
    /// the outbox); 20 attempts, 3 when the forge says the error is permanent.
    pub const OUTBOX: RetryPolicy = RetryPolicy {
        base: Duration::from_secs(2),
        cap: Duration::from_secs(3600),
        max_attempts: 20,
        max_permanent_attempts: 3,
    };

    /// Planning and builds: `retry_backoff`, doubled up to ten times, `max_attempts`
    /// attempts; a permanent fault (an invalid repository) is not retried.
    pub fn from_config(cfg: &QueueConfig) -> RetryPolicy {
        RetryPolicy {
            base: cfg.retry_backoff,
            cap: cfg.retry_backoff.saturating_mul(1 << 10),
            max_attempts: cfg.max_attempts,
            max_permanent_attempts: 1,
        }
    }

    /// The wait after the `attempt`-th attempt failed (an `attempt` of 0 counts as 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.max(1) - 1;
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Whether the `attempt`-th failure, of kind `fault`, is the last one allowed.
    pub fn gives_up(&self, attempt: u32, fault: Fault) -> bool {
        let max = match fault {
            Fault::Transient => self.max_attempts,
            Fault::Permanent => self.max_permanent_attempts,
        };
        attempt >= max
    }

    /// After the `attempt`-th attempt failed: the wait before the next one, or `None` to
    /// give up.
    pub fn next(&self, attempt: u32, fault: Fault) -> Option<Duration> {
        (!self.gives_up(attempt, fault)).then(|| self.delay(attempt))
    }
}

/// The queue's three policies.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    pub planning: RetryPolicy,
    pub builds: RetryPolicy,
    pub outbox: RetryPolicy,
}

impl Retries {
    pub fn from_config(cfg: &QueueConfig) -> Retries {
        Retries {
            planning: RetryPolicy::from_config(cfg),
            builds: RetryPolicy::from_config(cfg),
            outbox: RetryPolicy::OUTBOX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_policy(backoff_ms: u64, max_attempts: u32) -> RetryPolicy {
        RetryPolicy::from_config(&QueueConfig {
            parallel: 1,
            data_dir: "/nowhere".into(),
            public_url: String::new(),
            repos_url: String::new(),
            max_attempts,
            retry_backoff: Duration::from_millis(backoff_ms),
            shutdown_grace: Duration::from_secs(1),
            build_forks: false,
            targets: Default::default(),
            repos: Default::default(),
            change_disk_quota: None,
        })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn queue_delays_double_from_the_configured_backoff() {
        let p = queue_policy(100, 3);
        assert_eq!(p.delay(1), ms(100));
        assert_eq!(p.delay(2), ms(200));
        assert_eq!(p.delay(3), ms(400));
        assert_eq!(p.delay(0), ms(100), "attempt 0 counts as the first");
        // Ten doublings at most.
        assert_eq!(p.delay(11), ms(102_400));
        assert_eq!(p.delay(12), ms(102_400));
        assert_eq!(p.delay(u32::MAX), ms(102_400));
    }

    #[test]
    fn outbox_delays_double_from_two_seconds_up_to_an_hour() {
        let p = RetryPolicy::OUTBOX;
        assert_eq!(p.delay(1), secs(2));
        assert_eq!(p.delay(2), secs(4));
        assert_eq!(p.delay(5), secs(32));
        assert_eq!(p.delay(11), secs(2048));
        assert_eq!(p.delay(12), secs(3600));
        assert_eq!(p.delay(40), secs(3600));
    }

    #[test]
    fn give_up_after_max_attempts_and_sooner_for_permanent_faults() {
        let p = queue_policy(100, 3);
        assert!(!p.gives_up(1, Fault::Transient));
        assert!(!p.gives_up(2, Fault::Transient));
        assert!(p.gives_up(3, Fault::Transient));
        assert!(
            p.gives_up(1, Fault::Permanent),
            "an invalid plan is not retried"
        );
        assert_eq!(p.next(2, Fault::Transient), Some(ms(200)));
        assert_eq!(p.next(3, Fault::Transient), None);

        let o = RetryPolicy::OUTBOX;
        assert!(!o.gives_up(19, Fault::Transient));
        assert!(o.gives_up(20, Fault::Transient));
        assert!(!o.gives_up(2, Fault::Permanent));
        assert!(o.gives_up(3, Fault::Permanent));
    }

    /// The formulas the policy replaced, written out as they were: planning counted the
    /// failures before this one, builds the attempt that just ran, the outbox the attempt
    /// about to be recorded.
    #[test]
    fn same_delays_and_give_up_rules_as_the_three_formulas_it_replaced() {
        let backoff = ms(250);
        for max in 1..6u32 {
            let p = queue_policy(250, max);
            for n in 1..40u32 {
                // Planning: `st.attempts` failures before this one.
                let before = n - 1;
                let retried = before + 1 < max;
                let wait = backoff.saturating_mul(1 << before.min(10));
                assert_eq!(
                    p.next(n, Fault::Transient),
                    retried.then_some(wait),
                    "plan {n}/{max}"
                );
                assert_eq!(p.next(n, Fault::Permanent), None, "invalid plan {n}/{max}");
                // Builds: `b.attempts.max(1)`, the attempt that just ran.
                let attempts = n.max(1);
                let retried = attempts < max;
                let wait = backoff.saturating_mul(1 << (attempts - 1).min(10));
                assert_eq!(
                    p.next(n, Fault::Transient),
                    retried.then_some(wait),
                    "build {n}/{max}"
                );
            }
        }
        let o = RetryPolicy::OUTBOX;
        for attempts in 1..40u32 {
            for permanent in [false, true] {
                let abandon = permanent && attempts >= 3 || attempts >= 20;
                let backoff = secs(2u64.saturating_pow(attempts.min(12))).min(secs(3600));
                let fault = if permanent {
                    Fault::Permanent
                } else {
                    Fault::Transient
                };
                assert_eq!(o.gives_up(attempts, fault), abandon, "outbox {attempts}");
                assert_eq!(o.delay(attempts), backoff, "outbox {attempts}");
            }
        }
    }
}
