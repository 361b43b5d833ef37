//! Process-wide measurements that have no home in the store: HTTP statuses returned by the
//! services, time spent in plugins, queue commit latency and admin requests refused. The admin surface renders them
//! (with the store's counters) as Prometheus text.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// A latency histogram in Prometheus' cumulative form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations at or under each bound of [`LATENCY_BUCKETS`].
    pub buckets: [u64; 10],
    /// All observations.
    pub count: u64,
    /// Their sum in seconds.
    pub sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// A copy of the measurements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Error responses by (service, HTTP status).
    pub http_errors: BTreeMap<(String, u16), u64>,
    /// Seconds spent in plugin calls, by workflow.
    pub plugin_seconds: BTreeMap<String, f64>,
    /// Queue commit latency, by workflow and stage (`read`/`write`).
    pub commit_latency: BTreeMap<(String, String), Histogram>,
    /// Admin API requests refused, by reason (e.g. `foreign_host`).
    pub admin_refusals: BTreeMap<String, u64>,
}

static REGISTRY: Mutex<Option<Snapshot>> = Mutex::new(None);

fn with<R>(change: impl FnOnce(&mut Snapshot) -> R) -> R {
    let mut guard = REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    change(guard.get_or_insert_with(Snapshot::default))
}

/// Counts an error response (4xx/5xx) from a service.
pub fn record_http_error(service: &str, status: u16) {
    with(|s| {
        *s.http_errors
            .entry((service.to_string(), status))
            .or_default() += 1
    });
}

/// Adds time spent in a plugin call.
pub fn record_plugin_time(workflow: &str, elapsed: Duration) {
    with(|s| *s.plugin_seconds.entry(workflow.to_string()).or_default() += elapsed.as_secs_f64());
}

/// Records how long a queue commit took.
pub fn record_commit(workflow: &str, stage: &str, elapsed: Duration) {
    with(|s| {
        s.commit_latency
            .entry((workflow.to_string(), stage.to_string()))
            .or_default()
            .observe(elapsed.as_secs_f64());
    });
}

/// Counts an admin API request refused for `reason`.
pub fn record_admin_refusal(reason: &str) {
    with(|s| *s.admin_refusals.entry(reason.to_string()).or_default() += 1);
}

/// A copy of everything measured so far.
pub fn snapshot() -> Snapshot {
    with(|s| s.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut histogram = Histogram::default();
        histogram.observe(0.002);
        histogram.observe(0.2);
        assert_eq!(histogram.buckets[0], 0);
        assert_eq!(histogram.buckets[2], 1);
        assert_eq!(histogram.buckets[9], 2);
        assert_eq!(histogram.count, 2);
    }
}
