//! Exponential backoff with jitter that honours a service's `Retry-After`: the delay sequence of
//! one retrying loop ([`Backoff`]), and the delay of one record's next try after a number of
//! failed attempts ([`Backoff::delay_after`], for per-record retries kept in the queue).

use std::time::Duration;

/// The delay sequence of one retrying loop; `reset` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays start around `base` and never exceed `max` (except to honour `Retry-After`).
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay: a random point in [ceiling/2, ceiling], where the ceiling doubles per
    /// attempt up to `max`, and never less than what the service asked for.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let delay = self.delay_after(self.attempt, retry_after);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// The delay after `failures` earlier failed attempts (0 for the first retry), without
    /// changing this sequence: the same curve as [`Backoff::next_delay`].
    pub fn delay_after(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = failures.min(20);
        let ceiling = self
            .base
            .saturating_mul(1u32 << exponent)
            .min(self.max)
            .as_millis() as u64;
        let jittered = Duration::from_millis(fastrand::u64(ceiling / 2..=ceiling.max(1)));
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
        assert!(first <= Duration::from_millis(100));
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
    fn retry_after_is_honoured_even_past_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_record_delay_follows_the_same_curve_by_its_failure_count() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = backoff.delay_after(0, None);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let third = backoff.delay_after(2, None);
        assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
        let late = backoff.delay_after(30, None);
        assert!(late >= Duration::from_secs(1) && late <= Duration::from_secs(2));
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
}
