//! Fault injection shared by the simulators: throttling (429 with `Retry-After`, at a rate or
//! in bursts), server errors at a rate, added latency, dropped connections, and service-
//! protection limits (requests per sliding window, concurrent requests).
//!
//! [`Faults`] decides; each simulator renders the decision in its own wire format through a
//! [`RejectionRenderer`] given to [`fault_middleware`]. Random rates come from a seeded RNG so a
//! test run is repeatable. Only the API routes go through the middleware: token endpoints and
//! the `/_sim` control API are never faulted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

/// A service-protection limit on requests per sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestWindowLimit {
    /// Requests allowed per window.
    pub max_requests: u32,
    /// The sliding window, in milliseconds.
    pub window_ms: u64,
}

/// What to inject; every field defaults to "no fault".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Probability (0..=1) that a request gets a 429.
    pub throttle_rate: f64,
    /// The next N requests get a 429 (decremented as they arrive).
    pub throttle_burst: u32,
    /// The `Retry-After` of injected 429s, in seconds.
    pub retry_after_secs: u64,
    /// Probability (0..=1) that a request gets a server error.
    pub error_rate: f64,
    /// The next N requests get a server error.
    pub error_burst: u32,
    /// The status of injected server errors (500..=599).
    pub error_status: u16,
    /// Delay added before every request, in milliseconds.
    pub latency_ms: u64,
    /// Probability (0..=1) that a request's connection is dropped without a response.
    pub reset_rate: f64,
    /// The next N requests have their connection dropped.
    pub reset_burst: u32,
    /// Requests per sliding window, as the service-protection limit.
    pub request_limit: Option<RequestWindowLimit>,
    /// Concurrent requests allowed, as the service-protection limit.
    pub concurrency_limit: Option<u32>,
    /// The seed of the RNG behind the rates (applied when the config is set).
    pub seed: u64,
}

impl Default for FaultConfig {
    fn default() -> FaultConfig {
        FaultConfig {
            throttle_rate: 0.0,
            throttle_burst: 0,
            retry_after_secs: 1,
            error_rate: 0.0,
            error_burst: 0,
            error_status: 503,
            latency_ms: 0,
            reset_rate: 0.0,
            reset_burst: 0,
            request_limit: None,
            concurrency_limit: None,
            seed: 7,
        }
    }
}

impl FaultConfig {
    /// Checks rates and statuses, naming the first bad field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("throttle_rate", self.throttle_rate),
            ("error_rate", self.error_rate),
            ("reset_rate", self.reset_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        if !(500..=599).contains(&self.error_status) {
            return Err(format!(
                "error_status must be a 5xx status, got {}",
                self.error_status
            ));
        }
        if let Some(limit) = self.request_limit
            && (limit.max_requests == 0 || limit.window_ms == 0)
        {
            return Err("request_limit needs max_requests and window_ms above 0".to_string());
        }
        if self.concurrency_limit == Some(0) {
            return Err("concurrency_limit must be above 0".to_string());
        }
        Ok(())
    }
}

/// Why a request is refused; the simulator renders it in its service's format.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// An injected 429.
    Throttled {
        /// The `Retry-After` to send.
        retry_after: Duration,
    },
    /// The requests-per-window service-protection limit was exceeded.
    RequestLimit {
        /// The limit.
        max_requests: u32,
        /// The window.
        window: Duration,
        /// When the oldest request leaves the window.
        retry_after: Duration,
    },
    /// The concurrent-requests service-protection limit was exceeded.
    ConcurrencyLimit {
        /// The limit.
        max_concurrent: u32,
    },
    /// An injected server error with this status.
    ServerError {
        /// The status (5xx).
        status: u16,
    },
}

/// Turns a rejection into the simulator's own response (status, headers, error body).
pub type RejectionRenderer = fn(&Rejection) -> Response;

/// Counters of what the fault layer saw, for tests and the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FaultStats {
    /// Requests that reached the fault layer.
    pub requests: u64,
    /// Requests refused with 429 (injected or by a limit).
    pub throttled: u64,
    /// Requests refused by a service-protection limit.
    pub limit_hits: u64,
    /// Requests answered with an injected server error.
    pub server_errors: u64,
    /// Connections dropped.
    pub resets: u64,
    /// The most requests seen in flight at once.
    pub max_in_flight: u64,
}

struct FaultState {
    config: FaultConfig,
    rng: fastrand::Rng,
    recent: VecDeque<Instant>,
    stats: FaultStats,
}

/// The fault injector of one simulator (cheap to clone; clones share state).
#[derive(Clone)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicU64>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("config", &self.config())
            .finish_non_exhaustive()
    }
}

impl Default for Faults {
    fn default() -> Faults {
        Faults::new(FaultConfig::default())
    }
}

/// What the fault layer decided for one request.
#[derive(Debug)]
pub enum Admission {
    /// Serve it (after `delay`); drop the guard when the response is done.
    Proceed {
        /// Added latency.
        delay: Duration,
        /// Holds the request's concurrency slot.
        guard: InFlightGuard,
    },
    /// Answer with this rejection.
    Reject(Rejection),
    /// Drop the connection without answering.
    Reset,
}

/// Releases a concurrency slot when dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    in_flight: Arc<AtomicUsize>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Faults {
    /// A fault injector with `config`, taken as given ([`Faults::set`] validates).
    pub fn new(config: FaultConfig) -> Faults {
        let rng = fastrand::Rng::with_seed(config.seed);
        Faults {
            state: Arc::new(Mutex::new(FaultState {
                config,
                rng,
                recent: VecDeque::new(),
                stats: FaultStats::default(),
            })),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: Arc::new(AtomicU64::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current configuration.
    pub fn config(&self) -> FaultConfig {
        self.lock().config.clone()
    }

    /// Replaces the configuration (and reseeds the RNG), or says which field is invalid.
    pub fn set(&self, config: FaultConfig) -> Result<(), String> {
        config.validate()?;
        let mut state = self.lock();
        state.rng = fastrand::Rng::with_seed(config.seed);
        state.config = config;
        state.recent.clear();
        Ok(())
    }

    /// Changes the configuration in place.
    pub fn update(&self, change: impl FnOnce(&mut FaultConfig)) -> Result<(), String> {
        let mut config = self.config();
        change(&mut config);
        self.set(config)
    }

    /// Removes every fault.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.config = FaultConfig::default();
        state.recent.clear();
    }

    /// What the layer has seen so far.
    pub fn stats(&self) -> FaultStats {
        let mut stats = self.lock().stats;
        stats.max_in_flight = self.max_in_flight.load(Ordering::SeqCst);
        stats
    }

    /// Decides the fate of one arriving request.
    pub fn admit(&self) -> Admission {
        let now = Instant::now();
        let in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let guard = InFlightGuard {
            in_flight: Arc::clone(&self.in_flight),
        };
        self.max_in_flight
            .fetch_max(in_flight as u64, Ordering::SeqCst);
        let mut state = self.lock();
        state.stats.requests += 1;
        let config = state.config.clone();

        if let Some(limit) = config.concurrency_limit
            && in_flight > limit as usize
        {
            state.stats.throttled += 1;
            state.stats.limit_hits += 1;
            return Admission::Reject(Rejection::ConcurrencyLimit {
                max_concurrent: limit,
            });
        }
        if let Some(limit) = config.request_limit {
            let window = Duration::from_millis(limit.window_ms);
            while state
                .recent
                .front()
                .is_some_and(|oldest| now.duration_since(*oldest) >= window)
            {
                state.recent.pop_front();
            }
            if state.recent.len() >= limit.max_requests as usize {
                let oldest = state.recent.front().copied().unwrap_or(now);
                let retry_after = window.saturating_sub(now.duration_since(oldest));
                state.stats.throttled += 1;
                state.stats.limit_hits += 1;
                return Admission::Reject(Rejection::RequestLimit {
                    max_requests: limit.max_requests,
                    window,
                    retry_after,
                });
            }
            state.recent.push_back(now);
        }
        if config.reset_burst > 0 {
            state.config.reset_burst -= 1;
            state.stats.resets += 1;
            return Admission::Reset;
        }
        if config.reset_rate > 0.0 && state.rng.f64() < config.reset_rate {
            state.stats.resets += 1;
            return Admission::Reset;
        }
        let retry_after = Duration::from_secs(config.retry_after_secs);
        if config.throttle_burst > 0 {
            state.config.throttle_burst -= 1;
            state.stats.throttled += 1;
            return Admission::Reject(Rejection::Throttled { retry_after });
        }
        if config.throttle_rate > 0.0 && state.rng.f64() < config.throttle_rate {
            state.stats.throttled += 1;
            return Admission::Reject(Rejection::Throttled { retry_after });
        }
        if config.error_burst > 0 {
            state.config.error_burst -= 1;
            state.stats.server_errors += 1;
            return Admission::Reject(Rejection::ServerError {
                status: config.error_status,
            });
        }
        if config.error_rate > 0.0 && state.rng.f64() < config.error_rate {
            state.stats.server_errors += 1;
            return Admission::Reject(Rejection::ServerError {
                status: config.error_status,
            });
        }
        Admission::Proceed {
            delay: Duration::from_millis(config.latency_ms),
            guard,
        }
    }
}

/// The axum middleware applying `faults` to every request of the routes it wraps.
pub async fn fault_middleware(
    State((faults, render)): State<(Faults, RejectionRenderer)>,
    request: Request,
    next: Next,
) -> Response {
    match faults.admit() {
        Admission::Proceed { delay, guard } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let response = next.run(request).await;
            drop(guard);
            response
        }
        Admission::Reject(rejection) => render(&rejection),
        Admission::Reset => {
            // Unwinding out of the connection's task makes hyper drop the socket without
            // writing a response: exactly what a reset looks like to the client.
            // `resume_unwind` skips the panic hook, so nothing is printed.
            std::panic::resume_unwind(Box::new("simulated connection reset"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_are_consumed_one_request_each() {
        let faults = Faults::new(FaultConfig {
            throttle_burst: 2,
            ..FaultConfig::default()
        });
        assert!(matches!(
            faults.admit(),
            Admission::Reject(Rejection::Throttled { .. })
        ));
        assert!(matches!(
            faults.admit(),
            Admission::Reject(Rejection::Throttled { .. })
        ));
        assert!(matches!(faults.admit(), Admission::Proceed { .. }));
        assert_eq!(faults.stats().throttled, 2);
    }

    #[test]
    fn request_window_limit_refuses_the_excess_with_a_retry_after() {
        let faults = Faults::new(FaultConfig {
            request_limit: Some(RequestWindowLimit {
                max_requests: 3,
                window_ms: 60_000,
            }),
            ..FaultConfig::default()
        });
        for _ in 0..3 {
            assert!(matches!(faults.admit(), Admission::Proceed { .. }));
        }
        match faults.admit() {
            Admission::Reject(Rejection::RequestLimit { retry_after, .. }) => {
                assert!(retry_after > Duration::from_secs(50));
            }
            other => panic!("expected the request limit, got {other:?}"),
        }
    }

    #[test]
    fn concurrency_limit_counts_requests_still_in_flight() {
        let faults = Faults::new(FaultConfig {
            concurrency_limit: Some(1),
            ..FaultConfig::default()
        });
        let first = faults.admit();
        assert!(matches!(first, Admission::Proceed { .. }));
        assert!(matches!(
            faults.admit(),
            Admission::Reject(Rejection::ConcurrencyLimit { max_concurrent: 1 })
        ));
        drop(first);
        assert!(matches!(faults.admit(), Admission::Proceed { .. }));
    }

    #[test]
    fn seeded_rates_repeat_exactly() {
        let pattern = |seed| {
            let faults = Faults::new(FaultConfig {
                error_rate: 0.5,
                seed,
                ..FaultConfig::default()
            });
            (0..32)
                .map(|_| matches!(faults.admit(), Admission::Reject(_)))
                .collect::<Vec<_>>()
        };
        assert_eq!(pattern(11), pattern(11));
        assert!(pattern(11).contains(&true));
        assert!(pattern(11).contains(&false));
    }

    #[test]
    fn invalid_rates_are_refused_by_name() {
        let faults = Faults::default();
        let error = faults
            .set(FaultConfig {
                error_rate: 1.5,
                ..FaultConfig::default()
            })
            .expect_err("1.5 is not a probability");
        assert!(error.contains("error_rate"), "{error}");
    }
}
