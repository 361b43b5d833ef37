//! `/metrics` in the OpenMetrics text format (`prometheus-client`): backlog, record counters,
//! dead letters and running state read from the store at each scrape, plus the process-wide
//! families of `telemetry` (plugin time, HTTP errors by status, queue commit latency, admin
//! requests refused by reason), and the store's group commits (steps per transaction). The encoder escapes label values as the format requires.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::AdminState;
use conduit_base::telemetry::{self, WorkflowLabel};
use conduit_engine::StatusKind;
use conduit_store::Counters;

/// The content type of the OpenMetrics text format, which Prometheus negotiates.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A family read from each workflow's store counters: name, help, kind and reader.
struct StoreFamily {
    name: &'static str,
    help: &'static str,
    counter: bool,
    read: fn(&Counters) -> u64,
}

const STORE_FAMILIES: [StoreFamily; 6] = [
    StoreFamily {
        name: "conduit_backlog",
        help: "Records read and queued, not yet written.",
        counter: false,
        read: |c| c.queued,
    },
    StoreFamily {
        name: "conduit_records_read",
        help: "Source records read.",
        counter: true,
        read: |c| c.read,
    },
    StoreFamily {
        name: "conduit_records_written",
        help: "Records written to the destination.",
        counter: true,
        read: |c| c.written,
    },
    StoreFamily {
        name: "conduit_records_skipped",
        help: "Source records the plugin skipped.",
        counter: true,
        read: |c| c.skipped,
    },
    StoreFamily {
        name: "conduit_records_dead_lettered",
        help: "Records moved to the dead letters.",
        counter: true,
        read: |c| c.dead_lettered,
    },
    StoreFamily {
        name: "conduit_dead_letters",
        help: "Dead letters held.",
        counter: false,
        read: |c| c.dead_letters,
    },
];

pub(super) async fn render(State(state): State<Arc<AdminState>>) -> Response {
    let view = match state.supervisor.view() {
        Ok(view) => view,
        Err(error) => {
            return (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("# the store failed: {error}\n"),
            )
                .into_response();
        }
    };
    let mut registry = Registry::default();
    let label = |id: &str| WorkflowLabel {
        workflow: id.to_owned(),
    };
    for family in &STORE_FAMILIES {
        if family.counter {
            let counters = Family::<WorkflowLabel, Counter>::default();
            for workflow in &view.workflows {
                counters
                    .get_or_create(&label(workflow.id.as_str()))
                    .inc_by((family.read)(&workflow.counters));
            }
            registry.register(family.name, family.help, counters);
        } else {
            let gauges = Family::<WorkflowLabel, Gauge<u64, AtomicU64>>::default();
            for workflow in &view.workflows {
                gauges
                    .get_or_create(&label(workflow.id.as_str()))
                    .set((family.read)(&workflow.counters));
            }
            registry.register(family.name, family.help, gauges);
        }
    }
    let running = Family::<WorkflowLabel, Gauge>::default();
    for workflow in &view.workflows {
        running
            .get_or_create(&label(workflow.id.as_str()))
            .set(i64::from(workflow.status == StatusKind::Running));
    }
    registry.register(
        "conduit_workflow_running",
        "1 when the workflow is RUNNING.",
        running,
    );
    let groups = state.supervisor.store().group_commits();
    let transactions = Counter::<u64>::default();
    transactions.inc_by(groups.transactions);
    registry.register(
        "conduit_queue_transactions",
        "Write transactions (each one fsync) that committed reader and writer steps.",
        transactions,
    );
    let steps = Counter::<u64>::default();
    steps.inc_by(groups.steps);
    registry.register(
        "conduit_queue_steps",
        "Reader and writer steps committed; those beyond conduit_queue_transactions shared another step's transaction.",
        steps,
    );
    telemetry::register(&mut registry);
    let mut out = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("# the metrics cannot be encoded: {error}\n"),
        )
            .into_response();
    }
    ([(header::CONTENT_TYPE, OPENMETRICS)], out).into_response()
}
