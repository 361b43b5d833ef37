//! The JSON endpoints: workflows (list, show, start, stop, replay, config section), dead
//! letters (list with filters, show, retry, drop), config problems, health and the audit
//! trail. Every state change is recorded in the audit trail with its caller and outcome.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AdminState;
use super::views::{
    AuditEntry, ConfigSectionView, DeadLetter, DesiredState, ErrorBody, HostView, MappingView,
    MessageAnswer, ProblemsView, ReadinessView, StatusAnswer, StatusKind, WorkflowReadiness,
    WorkflowView,
};
use conduit_engine::EngineError;
use conduit_model::WorkflowId;
use conduit_store::{AuditOutcome, Caller, DeadLetterFilter, NewAuditEntry, Stage, StoreError};

type Shared = State<Arc<AdminState>>;

/// An API error: a status and a message that tells the caller what to do.
pub(super) struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody::new(message),
        }
    }
}

/// What the audit trail keeps of a successful state change's answer.
pub(super) trait AuditDetail {
    /// The answer in a few words.
    fn detail(&self) -> String;
}

impl AuditDetail for StatusAnswer {
    fn detail(&self) -> String {
        self.status.name().to_string()
    }
}

impl AuditDetail for MessageAnswer {
    fn detail(&self) -> String {
        self.message.clone()
    }
}

/// Records a state change and its outcome in the audit trail, then answers. The change has
/// happened (or not) by now, so a failure to record is logged, not turned into an error.
pub(super) fn audited<T: AuditDetail>(
    state: &AdminState,
    caller: &Caller,
    action: &str,
    target: String,
    result: Result<T, ApiError>,
) -> Result<Json<T>, ApiError> {
    let (outcome, detail) = match &result {
        Ok(answer) => (AuditOutcome::Ok, answer.detail()),
        Err(error) => (
            if error.status.is_server_error() {
                AuditOutcome::Failed
            } else {
                AuditOutcome::Refused
            },
            error.body.error.clone(),
        ),
    };
    let entry = NewAuditEntry {
        action: action.into(),
        target,
        caller: caller.clone(),
        outcome,
        detail,
    };
    if let Err(error) = state.supervisor.store().record_audit(entry) {
        tracing::error!(%action, %error, "cannot record a state change in the audit trail");
    }
    result.map(Json)
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(message) => ApiError::new(StatusCode::NOT_FOUND, message),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::InvalidConfig(problems) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                body: ErrorBody {
                    error: format!(
                        "the config is invalid ({} problem(s)); fix it and try again",
                        problems.len()
                    ),
                    problems,
                },
            },
            EngineError::Store(store) => store.into(),
            EngineError::NoValidConfig => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
            }
            // The request does not fit the workflow's state or the services' answers now.
            EngineError::NotConfigured(_)
            | EngineError::ReplayNotIngress(_)
            | EngineError::UnknownMapping { .. }
            | EngineError::ReplayPending(_)
            | EngineError::BacklogOverLimit { .. }
            | EngineError::TableOverLimit { .. }
            | EngineError::Connect(_)
            | EngineError::CountRows { .. }
            | EngineError::Remap(_)
            | EngineError::StillRejected { .. } => {
                ApiError::new(StatusCode::CONFLICT, error.to_string())
            }
        }
    }
}

fn workflow(id: &str) -> Result<WorkflowId, ApiError> {
    id.parse()
        .map_err(|message: String| ApiError::new(StatusCode::NOT_FOUND, message))
}

pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 200 when the store answers a read and every workflow is where its desired
/// state says (RUNNING when desired running, STOPPED when desired stopped; STARTING and ERROR
/// are not ready), 503 otherwise, naming what is not where it should be.
pub(super) async fn readyz(State(state): Shared) -> (StatusCode, Json<ReadinessView>) {
    let view = readiness(&state.supervisor);
    let status = if view.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(view))
}

/// Computes the readiness answer.
fn readiness(supervisor: &conduit_engine::Supervisor) -> ReadinessView {
    let mut workflows = Vec::new();
    let mut not_ready = Vec::new();
    let mut store_error = None;
    for id in WorkflowId::ALL {
        let desired = match supervisor.store().workflow(id) {
            Ok(record) => record.desired,
            Err(error) => {
                store_error = Some(error.to_string());
                break;
            }
        };
        let view = match supervisor.workflow_view(id) {
            Ok(view) => view,
            Err(error) => {
                store_error = Some(error.to_string());
                break;
            }
        };
        let ready = matches!(
            (desired, view.status),
            (DesiredState::Running, StatusKind::Running)
                | (DesiredState::Stopped, StatusKind::Stopped)
        );
        if !ready {
            let wanted = match desired {
                DesiredState::Running => "RUNNING",
                DesiredState::Stopped => "STOPPED",
            };
            let reason = view
                .reason
                .as_deref()
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default();
            not_ready.push(format!(
                "{id} should be {wanted} but is {}{reason}",
                view.status.name()
            ));
        }
        workflows.push(WorkflowReadiness {
            id,
            desired,
            status: view.status,
            ready,
        });
    }
    if let Some(error) = &store_error {
        not_ready.insert(0, format!("the store does not answer: {error}"));
    }
    ReadinessView {
        ready: not_ready.is_empty(),
        store_open: store_error.is_none(),
        store_error,
        workflows,
        not_ready,
    }
}

pub(super) async fn list_workflows(State(state): Shared) -> Result<Json<HostView>, ApiError> {
    Ok(Json(state.supervisor.view()?))
}

pub(super) async fn get_workflow(
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Json<WorkflowView>, ApiError> {
    Ok(Json(state.supervisor.workflow_view(workflow(&id)?)?))
}

pub(super) async fn start(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<StatusAnswer>, ApiError> {
    let result = async {
        let status = state.supervisor.start_as(workflow(&id)?, &caller).await?;
        Ok::<_, ApiError>(StatusAnswer {
            status: status.kind(),
        })
    }
    .await;
    audited(&state, &caller, "start", id, result)
}

pub(super) async fn stop(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<StatusAnswer>, ApiError> {
    let result = async {
        let status = state.supervisor.stop(workflow(&id)?).await?;
        Ok::<_, ApiError>(StatusAnswer {
            status: status.kind(),
        })
    }
    .await;
    audited(&state, &caller, "stop", id, result)
}

pub(super) async fn replay(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    Path((id, mapping)): Path<(String, String)>,
) -> Result<Json<MessageAnswer>, ApiError> {
    let result = async {
        let message = state.supervisor.replay(workflow(&id)?, &mapping).await?;
        Ok::<_, ApiError>(MessageAnswer { message })
    }
    .await;
    audited(&state, &caller, "replay", format!("{id}/{mapping}"), result)
}

pub(super) async fn workflow_config(
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Json<ConfigSectionView>, ApiError> {
    let id = workflow(&id)?;
    let view = state.supervisor.workflow_view(id)?;
    Ok(Json(ConfigSectionView {
        section: state.supervisor.config_section(id),
        pending_changes: view.pending_changes,
        pending_summary: view.pending_summary,
    }))
}

/// Query parameters of the dead-letter list.
#[derive(Debug, Deserialize)]
pub(super) struct DeadLetterQuery {
    stage: Option<String>,
    origin: Option<String>,
    reason: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn list_dead_letters(
    State(state): Shared,
    Path(id): Path<String>,
    Query(query): Query<DeadLetterQuery>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    let stage = match query.stage.as_deref() {
        None => None,
        Some("read") => Some(Stage::Read),
        Some("write") => Some(Stage::Write),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("stage '{other}' is unknown: use read or write"),
            ));
        }
    };
    let filter = DeadLetterFilter {
        stage,
        origin: query.origin,
        reason_contains: query.reason,
        after_id: query.after,
        limit: query.limit,
    };
    let letters = state
        .supervisor
        .store()
        .dead_letters(workflow(&id)?, &filter)?;
    Ok(Json(letters))
}

pub(super) async fn show_dead_letter(
    State(state): Shared,
    Path((id, letter)): Path<(String, u64)>,
) -> Result<Json<DeadLetter>, ApiError> {
    let letter = state
        .supervisor
        .store()
        .dead_letter(workflow(&id)?, letter)?;
    Ok(Json(letter))
}

pub(super) async fn retry_dead_letter(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    Path((id, letter)): Path<(String, u64)>,
) -> Result<Json<MessageAnswer>, ApiError> {
    let result = async {
        let message = state
            .supervisor
            .retry_dead_letter(workflow(&id)?, letter)
            .await?;
        Ok::<_, ApiError>(MessageAnswer { message })
    }
    .await;
    audited(
        &state,
        &caller,
        "dead-letter-retry",
        format!("{id}/{letter}"),
        result,
    )
}

pub(super) async fn drop_dead_letter(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    Path((id, letter)): Path<(String, u64)>,
) -> Result<Json<MessageAnswer>, ApiError> {
    let result = (|| {
        state
            .supervisor
            .store()
            .drop_dead_letter(workflow(&id)?, letter)?;
        Ok::<_, ApiError>(MessageAnswer {
            message: format!("dead letter {letter} dropped"),
        })
    })();
    audited(
        &state,
        &caller,
        "dead-letter-drop",
        format!("{id}/{letter}"),
        result,
    )
}

/// Query parameters of the audit trail.
#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    limit: Option<usize>,
    before: Option<u64>,
}

/// At most this many audit entries per call.
const AUDIT_PAGE_MAX: usize = 1000;

pub(super) async fn audit(
    State(state): Shared,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, AUDIT_PAGE_MAX);
    let entries = state.supervisor.store().audit(limit, query.before)?;
    Ok(Json(entries))
}

pub(super) async fn config_problems(State(state): Shared) -> Json<ProblemsView> {
    Json(ProblemsView {
        problems: state.supervisor.refresh_config(),
    })
}

pub(super) async fn ingress_mappings(
    State(state): Shared,
) -> Result<Json<Vec<MappingView>>, ApiError> {
    Ok(Json(state.supervisor.mapping_views()?))
}
