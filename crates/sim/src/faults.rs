//! Fault injection shared by the simulators: throttling (429 with `Retry-After`, at a rate or
//! in bursts), server errors, added latency (always or for some requests), dropped connections
//! (before the request is processed, or after it: a lost response), 200 answers whose body is
//! not JSON, and service-protection limits (requests per sliding window, concurrent requests).
//! Besides rates and bursts, a script of [`Fault`]s can be queued for the next requests in order.
//!
//! [`Faults`] decides; each simulator renders rejections in its own wire format through a
//! [`RejectionRenderer`] given to [`fault_middleware`]. Random rates come from a seeded RNG so a
//! test run is repeatable. Only the API routes go through the middleware: token endpoints and
//! the `/_sim` control API are never faulted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// A service-protection limit on requests per sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestWindowLimit {
    /// Requests allowed per window.
    pub max_requests: u32,
    /// The sliding window, in milliseconds.
    pub window_ms: u64,
}

/// One scripted fault, served to exactly one request (see [`Faults::inject`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// 429 with `Retry-After: <seconds>`.
    RateLimited {
        /// The seconds announced in `Retry-After`.
        retry_after_secs: u64,
    },
    /// A server error with this status (500..=599).
    ServerError {
        /// The HTTP status.
        status: u16,
    },
    /// The request is delayed by this many milliseconds, then served normally.
    Slow {
        /// The delay.
        delay_ms: u64,
    },
    /// The connection is dropped before the request is processed.
    Reset,
    /// The request is processed, then the connection is dropped: the client never learns
    /// that its write happened.
    LostResponse,
    /// A 200 whose body is not JSON (a misbehaving proxy).
    Malformed,
    /// Served normally: queued before another fault to aim that one at a later request.
    Pass,
}

impl Fault {
    /// Checks the fault's parameters, naming what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Fault::ServerError { status } if !(500..=599).contains(status) => Err(format!(
                "a server-error fault needs a 5xx status, got {status}"
            )),
            _ => Ok(()),
        }
    }
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
    /// Probability (0..=1) that a request is delayed by a further `slow_ms`.
    pub slow_rate: f64,
    /// The extra delay of slow requests, in milliseconds.
    pub slow_ms: u64,
    /// Probability (0..=1) that a request is processed but its response is lost (dropped).
    pub lost_response_rate: f64,
    /// Probability (0..=1) that a request is answered 200 with a body that is not JSON.
    pub malformed_rate: f64,
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
            slow_rate: 0.0,
            slow_ms: 0,
            lost_response_rate: 0.0,
            malformed_rate: 0.0,
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
            ("slow_rate", self.slow_rate),
            ("lost_response_rate", self.lost_response_rate),
            ("malformed_rate", self.malformed_rate),
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
    /// Connections dropped before the request was processed.
    pub resets: u64,
    /// Requests delayed by a slow fault (the constant `latency_ms` is not counted).
    pub slowed: u64,
    /// Requests processed whose response was then dropped.
    pub lost_responses: u64,
    /// Requests answered with a body that is not JSON.
    pub malformed: u64,
    /// The most requests seen in flight at once.
    pub max_in_flight: u64,
}

impl FaultStats {
    /// How many requests got a fault of any kind (service-protection limits included).
    pub fn faults_injected(&self) -> u64 {
        self.throttled
            + self.server_errors
            + self.resets
            + self.slowed
            + self.lost_responses
            + self.malformed
    }
}

struct FaultState {
    config: FaultConfig,
    script: VecDeque<Fault>,
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
    /// Serve it (after `delay`), then drop the connection instead of answering.
    LoseResponse {
        /// Added latency.
        delay: Duration,
        /// Holds the request's concurrency slot.
        guard: InFlightGuard,
    },
    /// Answer 200 with a body that is not JSON, without serving the request.
    Malformed,
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
                script: VecDeque::new(),
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
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Queues `faults` for the next requests, one each in order, ahead of every other fault.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().script.extend(faults);
    }

    /// Removes every fault, scripted ones included.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.config = FaultConfig::default();
        state.script.clear();
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
        let latency = Duration::from_millis(config.latency_ms);

        if let Some(fault) = state.script.pop_front() {
            return scripted(&mut state.stats, fault, latency, guard);
        }

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
        if config.malformed_rate > 0.0 && state.rng.f64() < config.malformed_rate {
            state.stats.malformed += 1;
            return Admission::Malformed;
        }
        let mut delay = latency;
        if config.slow_rate > 0.0 && state.rng.f64() < config.slow_rate {
            state.stats.slowed += 1;
            delay += Duration::from_millis(config.slow_ms);
        }
        if config.lost_response_rate > 0.0 && state.rng.f64() < config.lost_response_rate {
            state.stats.lost_responses += 1;
            return Admission::LoseResponse { delay, guard };
        }
        Admission::Proceed { delay, guard }
    }
}

/// The admission of a scripted fault, counted in `stats`.
fn scripted(
    stats: &mut FaultStats,
    fault: Fault,
    latency: Duration,
    guard: InFlightGuard,
) -> Admission {
    match fault {
        Fault::Pass => Admission::Proceed {
            delay: latency,
            guard,
        },
        Fault::RateLimited { retry_after_secs } => {
            stats.throttled += 1;
            Admission::Reject(Rejection::Throttled {
                retry_after: Duration::from_secs(retry_after_secs),
            })
        }
        Fault::ServerError { status } => {
            stats.server_errors += 1;
            Admission::Reject(Rejection::ServerError { status })
        }
        Fault::Slow { delay_ms } => {
            stats.slowed += 1;
            Admission::Proceed {
                delay: latency + Duration::from_millis(delay_ms),
                guard,
            }
        }
        Fault::Reset => {
            stats.resets += 1;
            Admission::Reset
        }
        Fault::LostResponse => {
            stats.lost_responses += 1;
            Admission::LoseResponse {
                delay: latency,
                guard,
            }
        }
        Fault::Malformed => {
            stats.malformed += 1;
            Admission::Malformed
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
        Admission::Reset => drop_connection(),
        Admission::LoseResponse { delay, guard } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            // The handler runs to completion (the write happens); only its answer is lost.
            drop(next.run(request).await);
            drop(guard);
            drop_connection()
        }
        Admission::Malformed => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>Gateway maintenance</body></html>",
        )
            .into_response(),
    }
}

/// Ends the connection without a response.
fn drop_connection() -> Response {
    // Unwinding out of the connection's task makes hyper drop the socket without writing a
    // response: exactly what a reset looks like to the client. `resume_unwind` skips the panic
    // hook, so nothing is printed.
    std::panic::resume_unwind(Box::new("simulated connection reset"))
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
    fn scripted_faults_come_first_in_order_and_pass_is_not_counted() {
        let faults = Faults::new(FaultConfig {
            error_burst: 1,
            ..FaultConfig::default()
        });
        faults.inject([Fault::Pass, Fault::LostResponse, Fault::Malformed]);
        assert!(matches!(faults.admit(), Admission::Proceed { .. }));
        assert!(matches!(faults.admit(), Admission::LoseResponse { .. }));
        assert!(matches!(faults.admit(), Admission::Malformed));
        assert!(matches!(
            faults.admit(),
            Admission::Reject(Rejection::ServerError { status: 503 })
        ));
        assert!(matches!(faults.admit(), Admission::Proceed { .. }));
        let stats = faults.stats();
        assert_eq!(
            (stats.lost_responses, stats.malformed, stats.server_errors),
            (1, 1, 1)
        );
        assert_eq!(stats.faults_injected(), 3);
    }

    #[test]
    fn a_slow_fault_adds_its_delay_to_the_constant_latency() {
        let faults = Faults::new(FaultConfig {
            latency_ms: 10,
            ..FaultConfig::default()
        });
        faults.inject([Fault::Slow { delay_ms: 250 }]);
        match faults.admit() {
            Admission::Proceed { delay, .. } => assert_eq!(delay, Duration::from_millis(260)),
            other => panic!("expected a slowed request, got {other:?}"),
        }
        assert_eq!(faults.stats().slowed, 1);
    }

    #[test]
    fn clear_drops_the_script_too() {
        let faults = Faults::default();
        faults.inject([Fault::Reset]);
        faults.clear();
        assert!(matches!(faults.admit(), Admission::Proceed { .. }));
    }

    #[test]
    fn a_scripted_server_error_needs_a_5xx_status() {
        let error = Fault::ServerError { status: 200 }
            .validate()
            .expect_err("200 is no server error");
        assert!(error.contains("200"), "{error}");
        assert!(Fault::ServerError { status: 502 }.validate().is_ok());
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
