//! Process-wide measurements that have no home in the store: HTTP statuses returned by the
//! services, time spent in plugins, queue commit latency and admin requests refused. They are
//! `prometheus-client` metric families; the admin surface registers them, with gauges and
//! counters read from the store at scrape time, and renders `/metrics` (see `admin/metrics.rs`).

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the queue commit latency buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// The `workflow` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkflowLabel {
    /// The workflow's id (`ingress`, `egress`, `optinout`).
    pub workflow: String,
}

/// The labels of an error response.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpErrorLabels {
    service: String,
    status: u16,
}

/// The labels of a queue commit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommitLabels {
    workflow: String,
    stage: String,
}

/// The label of a refused admin request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabel {
    reason: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The measured families, shared by every part of the process.
struct Measurements {
    http_errors: Family<HttpErrorLabels, Counter>,
    plugin_seconds: Family<WorkflowLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    commit_latency: Family<CommitLabels, Histogram, fn() -> Histogram>,
    admin_refusals: Family<RefusalLabel, Counter>,
}

fn measurements() -> &'static Measurements {
    static MEASUREMENTS: OnceLock<Measurements> = OnceLock::new();
    MEASUREMENTS.get_or_init(|| Measurements {
        http_errors: Family::default(),
        plugin_seconds: Family::default(),
        commit_latency: Family::new_with_constructor(latency_histogram),
        admin_refusals: Family::default(),
    })
}

/// Counts an error response (4xx/5xx) from a service.
pub fn record_http_error(service: &str, status: u16) {
    measurements()
        .http_errors
        .get_or_create(&HttpErrorLabels {
            service: service.to_owned(),
            status,
        })
        .inc();
}

/// Adds time spent in a plugin call.
pub fn record_plugin_time(workflow: &str, elapsed: Duration) {
    measurements()
        .plugin_seconds
        .get_or_create(&WorkflowLabel {
            workflow: workflow.to_owned(),
        })
        .inc_by(elapsed.as_secs_f64());
}

/// Records how long a queue commit took.
pub fn record_commit(workflow: &str, stage: &str, elapsed: Duration) {
    measurements()
        .commit_latency
        .get_or_create(&CommitLabels {
            workflow: workflow.to_owned(),
            stage: stage.to_owned(),
        })
        .observe(elapsed.as_secs_f64());
}

/// Counts an admin API request refused for `reason`.
pub fn record_admin_refusal(reason: &str) {
    measurements()
        .admin_refusals
        .get_or_create(&RefusalLabel {
            reason: reason.to_owned(),
        })
        .inc();
}

/// Makes every refusal reason appear at 0 before the first refusal, so a dashboard can tell
/// "none yet" from "not measured".
pub fn declare_admin_refusals<'a>(reasons: impl IntoIterator<Item = &'a str>) {
    for reason in reasons {
        drop(measurements().admin_refusals.get_or_create(&RefusalLabel {
            reason: reason.to_owned(),
        }));
    }
}

/// Registers the process-wide families in `registry` (they stay shared: a scrape reads them
/// as they are now).
pub fn register(registry: &mut Registry) {
    let measured = measurements();
    registry.register(
        "conduit_plugin_seconds",
        "Time spent in plugin calls.",
        measured.plugin_seconds.clone(),
    );
    registry.register(
        "conduit_http_errors",
        "Error responses from the services, by status.",
        measured.http_errors.clone(),
    );
    registry.register(
        "conduit_queue_commit_seconds",
        "Latency of queue commits.",
        measured.commit_latency.clone(),
    );
    registry.register(
        "conduit_admin_refusals",
        "Admin API requests refused, by reason (foreign_host is a DNS-rebinding attempt or a name missing from host.admin_hosts).",
        measured.admin_refusals.clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_render_with_escaped_labels_and_cumulative_buckets() {
        record_http_error("campaign \"eu\"\nline", 503);
        record_commit("test-workflow", "read", Duration::from_millis(2));
        record_commit("test-workflow", "read", Duration::from_millis(200));
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"conduit_http_errors_total{service="campaign \"eu\"\nline",status="503"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"conduit_queue_commit_seconds_bucket{le="0.0025",workflow="test-workflow",stage="read"} 1"#)
                || text.contains(r#"conduit_queue_commit_seconds_bucket{workflow="test-workflow",stage="read",le="0.0025"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"stage="read",le="+Inf"} 2"#)
                || text.contains(r#"le="+Inf",workflow="test-workflow",stage="read"} 2"#),
            "{text}"
        );
    }
}
