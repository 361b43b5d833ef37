//! The simulator's HTTP control API under `/_sim/...`: the same levers as the Rust API of
//! [`CampaignSim`] for out-of-process use (`conduit sim campaign`):
//!
//! | call | effect |
//! |---|---|
//! | `GET /_sim/records/{resource}` | all records of a resource |
//! | `POST /_sim/events` | append one journal event or an array of them (journal JSON) |
//! | `POST /_sim/opt-outs` `{"crmId","attribute","value"}` | change an opt-out in Campaign and queue it |
//! | `POST /_sim/exports` | write the next opt-out export file, answers `{"path"}` |
//! | `POST /_sim/schema/{resource}/{field}` `{"type":"long"}` or `{"removed":true}` | schema drift |
//! | `GET /_sim/faults` | the fault configuration in force |
//! | `PUT /_sim/faults/rates` `{"throttle_rate":0.1,"retry_after_secs":2,"error_rate":0.05,"reset_rate":0.01,"slow_rate":0.1,"slow_ms":300,"lost_response_rate":0.01,"malformed_rate":0.01,"seed":7}` | rates, bursts and limits (every field of [`FaultConfig`], each optional; 400 names a bad one) |
//! | `POST /_sim/faults/next` `[{"kind":"rate-limited","retry_after_secs":2},{"kind":"server-error","status":502},{"kind":"reset"}]` | faults for the next requests, in order (kinds: `rate-limited`, `server-error`, `slow` with `delay_ms`, `reset`, `lost-response`, `malformed`, `pass`) |
//! | `GET /_sim/faults/stats` | what the fault layer has seen ([`FaultStats`](crate::faults::FaultStats)) |
//! | `DELETE /_sim/faults` | no more faults, scripted ones included |
//! | `POST /_sim/tokens/revoke` | invalidate every issued token |

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::schema::FieldType;
use super::{CampaignSim, FieldChange, SimError};
use crate::faults::{Fault, FaultConfig};

/// The `/_sim` routes.
pub fn routes() -> Router<CampaignSim> {
    Router::new()
        .route("/_sim/records/{resource}", get(records))
        .route("/_sim/events", post(events))
        .route("/_sim/opt-outs", post(opt_out))
        .route("/_sim/exports", post(export))
        .route("/_sim/schema/{resource}/{field}", post(schema))
        .route("/_sim/faults/rates", put(fault_rates))
        .route("/_sim/faults/next", post(next_faults))
        .route("/_sim/faults/stats", get(fault_stats))
        .route("/_sim/faults", get(fault_config).delete(clear_faults))
        .route("/_sim/tokens/revoke", post(revoke_tokens))
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        let status = match self {
            SimError::Refused { status, .. } => {
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({"message": self.to_string()}))).into_response()
    }
}

async fn records(State(sim): State<CampaignSim>, Path(resource): Path<String>) -> Response {
    Json(json!({ "content": sim.records(&resource) })).into_response()
}

async fn events(State(sim): State<CampaignSim>, Json(body): Json<Value>) -> Response {
    let events = match body {
        Value::Array(events) => events,
        event => vec![event],
    };
    let count = events.len();
    for event in events {
        sim.emit_raw_event(event);
    }
    Json(json!({ "appended": count })).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OptOutRequest {
    crm_id: String,
    attribute: String,
    value: bool,
}

async fn opt_out(State(sim): State<CampaignSim>, Json(request): Json<OptOutRequest>) -> Response {
    match sim.set_opt_out(&request.crm_id, &request.attribute, request.value) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn export(State(sim): State<CampaignSim>) -> Response {
    match sim.drop_opt_out_export() {
        Ok(path) => Json(json!({ "path": path })).into_response(),
        Err(error) => error.into_response(),
    }
}

#[derive(Deserialize)]
struct SchemaRequest {
    #[serde(rename = "type")]
    field_type: Option<FieldType>,
    #[serde(default)]
    removed: bool,
}

async fn schema(
    State(sim): State<CampaignSim>,
    Path((resource, field)): Path<(String, String)>,
    Json(request): Json<SchemaRequest>,
) -> Response {
    let change = match (request.removed, request.field_type) {
        (true, _) => FieldChange::Remove,
        (false, Some(field_type)) => FieldChange::Retype(field_type),
        (false, None) => {
            return SimError::Refused {
                status: 400,
                detail: "give either {\"type\": \"<campaign type>\"} or {\"removed\": true}".into(),
            }
            .into_response();
        }
    };
    match sim.change_field(&resource, &field, change) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn fault_config(State(sim): State<CampaignSim>) -> Response {
    Json(sim.faults().config()).into_response()
}

async fn fault_stats(State(sim): State<CampaignSim>) -> Response {
    Json(sim.faults().stats()).into_response()
}

async fn fault_rates(State(sim): State<CampaignSim>, Json(config): Json<FaultConfig>) -> Response {
    match sim.faults().set(config) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(detail) => SimError::Refused {
            status: 400,
            detail,
        }
        .into_response(),
    }
}

async fn next_faults(State(sim): State<CampaignSim>, Json(faults): Json<Vec<Fault>>) -> Response {
    if let Some(detail) = faults.iter().find_map(|fault| fault.validate().err()) {
        return SimError::Refused {
            status: 400,
            detail,
        }
        .into_response();
    }
    sim.faults().inject(faults);
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_faults(State(sim): State<CampaignSim>) -> Response {
    sim.faults().clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn revoke_tokens(State(sim): State<CampaignSim>) -> Response {
    sim.revoke_tokens();
    StatusCode::NO_CONTENT.into_response()
}
