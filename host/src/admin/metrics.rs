//! `/metrics` in the Prometheus text format: backlog and record counters from the store,
//! plugin time, HTTP errors by status, queue commit latency and admin requests refused by
//! reason from the telemetry registry. Every label value is escaped as the format requires.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::auth::Refusal;
use crate::store::Counters;
use crate::telemetry::{self, LATENCY_BUCKETS};

/// A counter family: name, help text, and how to read it from a workflow's counters.
type CounterFamily = (&'static str, &'static str, fn(&Counters) -> u64);

pub(super) async fn render(State(state): State<Arc<AdminState>>) -> Response {
    match state.supervisor.view() {
        Ok(view) => {
            let mut out = String::new();
            let rows: Vec<_> = view
                .workflows
                .iter()
                .map(|w| (label(w.id.as_str()), w.status, w.counters))
                .collect();
            family(
                &mut out,
                "conduit_backlog",
                "gauge",
                "Records read and queued, not yet written.",
            );
            for (id, _, c) in &rows {
                let _ = writeln!(out, "conduit_backlog{{workflow=\"{id}\"}} {}", c.queued);
            }
            let counters: [CounterFamily; 4] = [
                ("conduit_records_read_total", "Source records read.", |c| {
                    c.read
                }),
                (
                    "conduit_records_written_total",
                    "Records written to the destination.",
                    |c| c.written,
                ),
                (
                    "conduit_records_skipped_total",
                    "Source records the plugin skipped.",
                    |c| c.skipped,
                ),
                (
                    "conduit_records_dead_lettered_total",
                    "Records moved to the dead letters.",
                    |c| c.dead_lettered,
                ),
            ];
            for (name, help, get) in counters {
                family(&mut out, name, "counter", help);
                for (id, _, c) in &rows {
                    let _ = writeln!(out, "{name}{{workflow=\"{id}\"}} {}", get(c));
                }
            }
            family(
                &mut out,
                "conduit_dead_letters",
                "gauge",
                "Dead letters held.",
            );
            for (id, _, c) in &rows {
                let _ = writeln!(
                    out,
                    "conduit_dead_letters{{workflow=\"{id}\"}} {}",
                    c.dead_letters
                );
            }
            family(
                &mut out,
                "conduit_workflow_running",
                "gauge",
                "1 when the workflow is RUNNING.",
            );
            for (id, status, _) in &rows {
                let up = u8::from(*status == "RUNNING");
                let _ = writeln!(out, "conduit_workflow_running{{workflow=\"{id}\"}} {up}");
            }
            let measured = telemetry::snapshot();
            family(
                &mut out,
                "conduit_plugin_seconds_total",
                "counter",
                "Time spent in plugin calls.",
            );
            for (workflow, seconds) in &measured.plugin_seconds {
                let workflow = label(workflow);
                let _ = writeln!(
                    out,
                    "conduit_plugin_seconds_total{{workflow=\"{workflow}\"}} {seconds}"
                );
            }
            family(
                &mut out,
                "conduit_http_errors_total",
                "counter",
                "Error responses from the services, by status.",
            );
            for ((service, status), count) in &measured.http_errors {
                let service = label(service);
                let _ = writeln!(
                    out,
                    "conduit_http_errors_total{{service=\"{service}\",status=\"{status}\"}} {count}"
                );
            }
            family(
                &mut out,
                "conduit_queue_commit_seconds",
                "histogram",
                "Latency of queue commits.",
            );
            for ((workflow, stage), histogram) in &measured.commit_latency {
                let labels = format!(
                    "workflow=\"{}\",stage=\"{}\"",
                    label(workflow),
                    label(stage)
                );
                for (bound, count) in LATENCY_BUCKETS.iter().zip(histogram.buckets) {
                    let _ = writeln!(
                        out,
                        "conduit_queue_commit_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                    );
                }
                let _ = writeln!(
                    out,
                    "conduit_queue_commit_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    histogram.count
                );
                let _ = writeln!(
                    out,
                    "conduit_queue_commit_seconds_sum{{{labels}}} {}",
                    histogram.sum
                );
                let _ = writeln!(
                    out,
                    "conduit_queue_commit_seconds_count{{{labels}}} {}",
                    histogram.count
                );
            }
            family(
                &mut out,
                "conduit_admin_refusals_total",
                "counter",
                "Admin API requests refused, by reason (foreign_host is a DNS-rebinding attempt or a name missing from host.admin_hosts).",
            );
            for reason in Refusal::ALL {
                let count = measured
                    .admin_refusals
                    .get(reason.label())
                    .copied()
                    .unwrap_or(0);
                let _ = writeln!(
                    out,
                    "conduit_admin_refusals_total{{reason=\"{}\"}} {count}",
                    label(reason.label())
                );
            }
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
        }
        Err(error) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("# the store failed: {error}\n"),
        )
            .into_response(),
    }
}

/// A label value escaped for the text format: backslash, double quote and line feed.
fn label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_line_feed() {
        assert_eq!(label("ingress"), "ingress");
        assert_eq!(label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(label("line\nbreak"), "line\\nbreak");
    }
}
