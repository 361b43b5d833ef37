//! Fault injection for the Campaign simulator: 429 with `Retry-After`, 5xx gateway errors, slow
//! responses, dropped connections and unreadable bodies, either at configured rates (seeded RNG,
//! so runs repeat) or queued one-shot for the next requests. Applied to the Campaign API and the
//! event journal, never to IMS or the `/_sim` control API.
//!
//! Shaped like the shared `sim::faults` module so the two can be folded together.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// 429 with `Retry-After: <seconds>`.
    RateLimited {
        /// The seconds announced in `Retry-After`.
        retry_after_secs: u64,
    },
    /// A gateway/server error with this status (500, 502, 503, 504).
    ServerError {
        /// The HTTP status.
        status: u16,
    },
    /// The response is delayed by this many milliseconds, then served normally.
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

/// Fault probabilities per request (each in 0..=1), checked in this order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultRates {
    /// Share of requests answered 429.
    pub rate_limited: f64,
    /// The `Retry-After` seconds of those 429s.
    pub retry_after_secs: u64,
    /// Share of requests answered 503.
    pub server_error: f64,
    /// Share of requests whose connection is dropped.
    pub reset: f64,
    /// Share of requests delayed by `latency_ms`.
    pub slow: f64,
    /// The delay of slow requests.
    pub latency_ms: u64,
}

struct FaultState {
    rates: FaultRates,
    queued: VecDeque<Fault>,
    rng: fastrand::Rng,
    injected: u64,
}

/// The simulator's fault switchboard (cheap to clone; shared state).
#[derive(Clone)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
}

impl Faults {
    /// No faults; `seed` fixes the random draws.
    pub fn new(seed: u64) -> Faults {
        Faults {
            state: Arc::new(Mutex::new(FaultState {
                rates: FaultRates::default(),
                queued: VecDeque::new(),
                rng: fastrand::Rng::with_seed(seed),
                injected: 0,
            })),
        }
    }

    fn with<T>(&self, action: impl FnOnce(&mut FaultState) -> T) -> T {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        action(&mut state)
    }

    /// Sets the random fault rates.
    pub fn set_rates(&self, rates: FaultRates) {
        self.with(|state| state.rates = rates);
    }

    /// Queues faults for the next requests, one each, before any random draw.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.with(|state| state.queued.extend(faults));
    }

    /// Removes all rates and queued faults.
    pub fn clear(&self) {
        self.with(|state| {
            state.rates = FaultRates::default();
            state.queued.clear();
        });
    }

    /// How many faults were served so far.
    pub fn injected(&self) -> u64 {
        self.with(|state| state.injected)
    }

    /// Draws the fault for one request, if any.
    pub fn next_fault(&self) -> Option<Fault> {
        self.with(|state| {
            let fault = state.queued.pop_front().or_else(|| {
                let rates = state.rates.clone();
                let mut hit = |rate: f64| rate > 0.0 && state.rng.f64() < rate;
                if hit(rates.rate_limited) {
                    Some(Fault::RateLimited {
                        retry_after_secs: rates.retry_after_secs,
                    })
                } else if hit(rates.server_error) {
                    Some(Fault::ServerError { status: 503 })
                } else if hit(rates.reset) {
                    Some(Fault::Reset)
                } else if hit(rates.slow) {
                    Some(Fault::Slow {
                        delay_ms: rates.latency_ms,
                    })
                } else {
                    None
                }
            });
            if fault.as_ref().is_some_and(|fault| *fault != Fault::Pass) {
                state.injected += 1;
            }
            fault
        })
    }
}

/// Middleware: serves the drawn fault instead of (or, for slowness, before) the real handler.
pub async fn inject_faults(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    match faults.next_fault() {
        None | Some(Fault::Pass) => next.run(request).await,
        Some(Fault::LostResponse) => {
            next.run(request).await;
            dropped_connection()
        }
        Some(Fault::Slow { delay_ms }) => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            next.run(request).await
        }
        Some(Fault::RateLimited { retry_after_secs }) => {
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(serde_json::json!({
                    "error_code": "429050",
                    "message": "Too many requests"
                })),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        Some(Fault::ServerError { status }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            (
                status,
                axum::Json(serde_json::json!({
                    "code": status.as_u16(),
                    "message": "Oops. Something went wrong. Check your URI and try again."
                })),
            )
                .into_response()
        }
        Some(Fault::Malformed) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>Gateway maintenance</body></html>",
        )
            .into_response(),
        Some(Fault::Reset) => dropped_connection(),
    }
}

/// A response whose body fails mid-stream, which makes the server abort the connection.
fn dropped_connection() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated connection reset",
        ))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, "64")
        .body(Body::from_stream(failing))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_faults_come_first_then_rates_draw_reproducibly() {
        let faults = Faults::new(1);
        faults.inject([Fault::Reset]);
        assert_eq!(faults.next_fault(), Some(Fault::Reset));
        assert_eq!(faults.next_fault(), None);
        faults.set_rates(FaultRates {
            server_error: 0.5,
            ..FaultRates::default()
        });
        let draws: Vec<_> = (0..20).map(|_| faults.next_fault()).collect();
        let again = Faults::new(1);
        again.inject([Fault::Reset]);
        again.next_fault();
        again.set_rates(FaultRates {
            server_error: 0.5,
            ..FaultRates::default()
        });
        let redraws: Vec<_> = (0..20).map(|_| again.next_fault()).collect();
        assert_eq!(draws, redraws);
        assert!(draws.iter().any(Option::is_some) && draws.iter().any(Option::is_none));
    }
}
