//! The host's one retry policy: exponential backoff with jitter (from `backon`) that honours a
//! service's `Retry-After`. Connectors use it between tries of one request
//! ([`RetryPolicy::delay`]); the workflow engine uses it for its loops ([`Backoff`]) and for the
//! next try of a queued record after a number of failures ([`RetryPolicy::delay_after`]), so
//! every wait in the host follows the same curve.
//!
//! The curve: the delay after `n` failures is a random point in `[c/2, c)`, where the ceiling
//! `c` starts at `base_delay` and doubles with each failure up to `max_delay`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// How often and how patiently to retry transient failures.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (at least 1), where a caller counts them.
    pub max_attempts: u32,
    /// The ceiling of the first retry's delay; it doubles with each further retry.
    pub base_delay: Duration,
    /// No delay of the curve is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// Failures past this many no longer change the delay (the ceiling has long reached the cap).
const MAX_COUNTED_FAILURES: u32 = 30;

impl RetryPolicy {
    /// The jittered delay after `failures` failed attempts (0: before the first retry).
    pub fn delay_after(&self, failures: u32) -> Duration {
        // backon adds a jitter of [0, d) to each step d: halving both ends gives [c/2, c).
        let mut delays = ExponentialBuilder::new()
            .with_min_delay(self.base_delay / 2)
            .with_max_delay(self.max_delay / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        let steps = failures.min(MAX_COUNTED_FAILURES) as usize;
        delays
            .nth(steps)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The wait before retry number `retry` (1-based) of one request: the curve, or the
    /// service's `Retry-After` when it gave one, never more than `max_delay` (a caller that
    /// must honour a longer wait hands the failure back instead, see the connectors).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(asked) => asked.min(self.max_delay),
            None => self.delay_after(retry.saturating_sub(1)),
        }
    }
}

/// The delays of one retrying loop (a workflow's reader, writer or supervisor); `reset` after
/// a success. A service's `Retry-After` is honoured even past the cap: a loop has nothing
/// better to do than wait as asked.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
}

impl Backoff {
    /// Delays start below `base` and never exceed `max` (except to honour `Retry-After`).
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            policy: RetryPolicy {
                max_attempts: u32::MAX,
                base_delay: base,
                max_delay: max,
            },
            attempt: 0,
        }
    }

    /// The next delay of the loop, and never less than what the service asked for.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let delay = self.delay_after(self.attempt, retry_after);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// The delay after `failures` earlier failed attempts (0 for the first retry), without
    /// changing this loop's place: the same curve as [`Backoff::next_delay`].
    pub fn delay_after(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let jittered = self.policy.delay_after(failures);
        match retry_after {
            Some(asked) if asked > jittered => asked,
            _ => jittered,
        }
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = backoff.next_delay(None);
        assert!(first <= Duration::from_millis(100), "{first:?}");
        for _ in 0..10 {
            backoff.next_delay(None);
        }
        let late = backoff.next_delay(None);
        assert!(
            late >= Duration::from_secs(1) && late <= Duration::from_secs(2),
            "{late:?}"
        );
    }

    #[test]
    fn retry_after_is_honoured_even_past_the_cap_by_a_loop() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_record_delay_follows_the_same_curve_by_its_failure_count() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..50 {
            let first = backoff.delay_after(0, None);
            assert!(
                first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
                "{first:?}"
            );
            let third = backoff.delay_after(2, None);
            assert!(
                third >= Duration::from_millis(200) && third <= Duration::from_millis(400),
                "{third:?}"
            );
            let late = backoff.delay_after(u32::MAX, None);
            assert!(
                late >= Duration::from_secs(1) && late <= Duration::from_secs(2),
                "{late:?}"
            );
        }
        assert_eq!(
            backoff.delay_after(0, Some(Duration::from_secs(9))),
            Duration::from_secs(9)
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..6 {
            backoff.next_delay(None);
        }
        backoff.reset();
        assert!(backoff.next_delay(None) <= Duration::from_millis(100));
    }

    #[test]
    fn a_request_waits_as_asked_but_never_past_its_cap() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for retry in 1..40 {
            assert!(policy.delay(retry, None) <= Duration::from_secs(1));
        }
        assert!(policy.delay(1, None) <= Duration::from_millis(100));
        assert_eq!(
            policy.delay(1, Some(Duration::from_millis(450))),
            Duration::from_millis(450)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(600))),
            Duration::from_secs(1)
        );
    }
}
