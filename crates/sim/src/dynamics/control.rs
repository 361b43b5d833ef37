//! The `/_sim/...` control API: the HTTP face of [`DynamicsSim`]'s Rust API, for the CLI
//! simulator and out-of-process tests. Tables are named by logical name.
//!
//! | call | effect |
//! |---|---|
//! | `GET /_sim/tables/{table}/rows` | every row, as the Web API renders it |
//! | `GET /_sim/tables/{table}/count` | `{"count": n}` |
//! | `PUT /_sim/tables/{table}/rows/{id}` | upsert with a JSON object body |
//! | `DELETE /_sim/tables/{table}/rows/{id}` | delete |
//! | `POST /_sim/tables/{table}/attributes/{attribute}` | schema change: `{"retype":"Integer"}` or `"remove"` |
//! | `GET /_sim/faults` | the fault configuration in force |
//! | `PUT /_sim/faults/rates` (or `PUT /_sim/faults`) | rates, bursts and limits: every field of [`FaultConfig`], each optional; 400 names a bad one |
//! | `POST /_sim/faults/next` `[{"kind":"rate-limited","retry_after_secs":2},{"kind":"reset"}]` | faults for the next Web API requests, in order (the kinds of [`Fault`]) |
//! | `GET /_sim/faults/stats` | what the fault layer has seen |
//! | `DELETE /_sim/faults` | no more faults, scripted ones included |
//! | `POST /_sim/clock/advance` | `{"seconds": n}` moves the simulated clock |
//! | `POST /_sim/tokens/revoke` | every issued token stops working |

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::super::SimError;
use super::super::faults::{Fault, FaultConfig};
use super::{AttributeChange, DynamicsSim};

/// The control routes.
pub fn routes() -> axum::Router<DynamicsSim> {
    axum::Router::new()
        .route("/_sim/tables/{table}/rows", get(list_rows))
        .route("/_sim/tables/{table}/count", get(count_rows))
        .route(
            "/_sim/tables/{table}/rows/{id}",
            put(upsert_row).delete(delete_row),
        )
        .route(
            "/_sim/tables/{table}/attributes/{attribute}",
            post(change_attribute),
        )
        .route(
            "/_sim/faults",
            get(get_faults).put(set_faults).delete(clear_faults),
        )
        .route("/_sim/faults/rates", put(set_faults))
        .route("/_sim/faults/next", post(next_faults))
        .route("/_sim/faults/stats", get(fault_stats))
        .route("/_sim/clock/advance", post(advance_clock))
        .route("/_sim/tokens/revoke", post(revoke_tokens))
}

fn refused(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"code": "", "message": message}})),
    )
        .into_response()
}

fn outcome(result: Result<(), SimError>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => refused(StatusCode::BAD_REQUEST, error.to_string()),
    }
}

/// The 404 for a table the simulator does not have, or `None` when it exists.
fn unknown_table(sim: &DynamicsSim, table: &str) -> Option<Response> {
    if sim.store().table(table).is_some() {
        None
    } else {
        Some(refused(
            StatusCode::NOT_FOUND,
            format!("the simulator has no table '{table}'"),
        ))
    }
}

async fn list_rows(State(sim): State<DynamicsSim>, Path(table): Path<String>) -> Response {
    if let Some(response) = unknown_table(&sim, &table) {
        return response;
    }
    Json(sim.rows(&table)).into_response()
}

async fn count_rows(State(sim): State<DynamicsSim>, Path(table): Path<String>) -> Response {
    if let Some(response) = unknown_table(&sim, &table) {
        return response;
    }
    Json(json!({"count": sim.count(&table)})).into_response()
}

async fn upsert_row(
    State(sim): State<DynamicsSim>,
    Path((table, id)): Path<(String, String)>,
    Json(fields): Json<Map<String, Value>>,
) -> Response {
    outcome(sim.upsert(&table, &id, fields))
}

async fn delete_row(
    State(sim): State<DynamicsSim>,
    Path((table, id)): Path<(String, String)>,
) -> Response {
    outcome(sim.delete(&table, &id))
}

async fn change_attribute(
    State(sim): State<DynamicsSim>,
    Path((table, attribute)): Path<(String, String)>,
    Json(change): Json<AttributeChange>,
) -> Response {
    outcome(sim.change_attribute(&table, &attribute, change))
}

async fn get_faults(State(sim): State<DynamicsSim>) -> Response {
    Json(sim.faults().config()).into_response()
}

async fn set_faults(State(sim): State<DynamicsSim>, Json(config): Json<FaultConfig>) -> Response {
    outcome(sim.faults().set(config).map_err(SimError::Rejected))
}

async fn next_faults(State(sim): State<DynamicsSim>, Json(faults): Json<Vec<Fault>>) -> Response {
    if let Some(detail) = faults.iter().find_map(|fault| fault.validate().err()) {
        return refused(StatusCode::BAD_REQUEST, detail);
    }
    sim.faults().inject(faults);
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_faults(State(sim): State<DynamicsSim>) -> Response {
    sim.faults().clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn fault_stats(State(sim): State<DynamicsSim>) -> Response {
    Json(sim.faults().stats()).into_response()
}

#[derive(Deserialize)]
struct Advance {
    seconds: u64,
}

async fn advance_clock(State(sim): State<DynamicsSim>, Json(advance): Json<Advance>) -> Response {
    sim.advance_clock(Duration::from_secs(advance.seconds));
    Json(json!({"now": super::store::format_time(sim.now())})).into_response()
}

async fn revoke_tokens(State(sim): State<DynamicsSim>) -> Response {
    sim.revoke_tokens();
    StatusCode::NO_CONTENT.into_response()
}
