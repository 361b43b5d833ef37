//! Pacing one connector's requests: a concurrency limit and a shared "pause until" gate that
//! a throttled request sets for all others; and [`with_retry`], the retry loop that uses it.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::ConnectorError;
use conduit_base::retry::RetryPolicy;

/// Bounds concurrent requests and lets one throttled request pause every other one, so that a
/// 429 slows the whole connector down instead of starting a retry storm.
#[derive(Debug)]
pub struct Pacer {
    permits: Semaphore,
    pause_until: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer allowing `max_concurrency` requests in flight (at least one).
    pub fn new(max_concurrency: usize) -> Pacer {
        Pacer {
            permits: Semaphore::new(max_concurrency.max(1)),
            pause_until: Mutex::new(None),
        }
    }

    /// Waits until no pause is in force and a request slot is free.
    pub async fn acquire(&self) -> SemaphorePermit<'_> {
        loop {
            self.wait_out_pause().await;
            // The semaphore is never closed, so acquiring only fails if it were.
            let Ok(permit) = self.permits.acquire().await else {
                continue;
            };
            // A pause may have started while we queued for the slot: honour it too.
            if self.remaining_pause().is_none() {
                return permit;
            }
            drop(permit);
        }
    }

    /// Makes every request wait `wait` from now (a longer pause already in force is kept).
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut pause = self
            .pause_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pause.is_none_or(|current| current < until) {
            *pause = Some(until);
        }
    }

    /// How long the current pause still lasts, if one is in force.
    pub fn remaining_pause(&self) -> Option<Duration> {
        let pause = self
            .pause_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pause
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    async fn wait_out_pause(&self) {
        while let Some(left) = self.remaining_pause() {
            tokio::time::sleep(left).await;
        }
    }
}

/// Runs `attempt` until it succeeds, fails permanently or runs out of attempts, sleeping per
/// `policy` between tries. A transient failure with `Retry-After` also pauses `pacer`.
pub async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    pacer: &Pacer,
    mut attempt: F,
) -> Result<T, ConnectorError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ConnectorError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(ConnectorError::Transient {
                message,
                retry_after,
            }) if tries < policy.max_attempts.max(1) => {
                let wait = policy.delay(tries, retry_after);
                if retry_after.is_some() {
                    pacer.pause_for(wait);
                }
                tracing::debug!(attempt = tries, ?wait, %message, "retrying after a transient failure");
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}
