//! The workflow editor's endpoints: `GET /api/workflows/{id}/edit` hands out a workflow's
//! section with the version of the file it came from, and `POST` of the same path saves an
//! edited section through `conduit_config::edit` (validated as `conduit config check` does,
//! the edited workflow's plugin loaded and configured with its settings through the runtime's
//! [`PluginCheck`](super::PluginCheck), written with the file's comments and formatting kept,
//! refused when the file changed since). A save is a state change: the API's guard (token, same origin, the request header)
//! admits it and the audit trail records it. The running workflow is untouched; the edit shows
//! as "changes pending restart" until its next stop and start. `GET /api/metadata/{system}/
//! {table}` lists a table's fields with their types, as the services describe them, for the
//! editor's pickers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::api::ApiError;
use super::views::{
    EditChecked, EditRefusal, EditRefused, EditSaved, EditableSection, EditorChoices,
    MetadataField, MetadataSystem, SectionEdit,
};
use conduit_config::edit::{self, EditError};
use conduit_config::{ClosedSet, Combine, Direction, FilterOp};
use conduit_model::WorkflowId;
use conduit_store::{AuditOutcome, Caller, NewAuditEntry};

/// How many file texts handed out to editors are remembered, to show a conflicting save the
/// other change (the text it loaded against the text now).
const REMEMBERED_TEXTS: usize = 16;

/// What the editor endpoints share: saves one at a time, and the texts recently handed out.
#[derive(Default)]
pub(crate) struct EditorState {
    /// Held across a save's read, check and write, so two saves from this host cannot
    /// interleave.
    saving: Mutex<()>,
    /// Recently handed-out texts by version, newest last.
    texts: Mutex<VecDeque<(String, Arc<str>)>>,
    /// Held while a plugin check runs: one at a time, so editors checking as they type cannot
    /// take the plugin runtime's instance slots from the running workflows.
    checking: Mutex<()>,
}

impl EditorState {
    fn remember(&self, version: &str, text: &str) {
        let mut texts = self
            .texts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if texts.iter().any(|(known, _)| known == version) {
            return;
        }
        if texts.len() == REMEMBERED_TEXTS {
            texts.pop_front();
        }
        texts.push_back((version.to_string(), Arc::from(text)));
    }

    fn text_of(&self, version: &str) -> Option<Arc<str>> {
        let texts = self
            .texts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        texts
            .iter()
            .find(|(known, _)| known == version)
            .map(|(_, text)| text.clone())
    }
}

fn workflow(id: &str) -> Result<WorkflowId, ApiError> {
    id.parse()
        .map_err(|message: String| ApiError::new(StatusCode::NOT_FOUND, message))
}

/// The pending-restart state of a workflow after a save, as the page's badge shows it.
fn pending(state: &AdminState, id: WorkflowId) -> (bool, Vec<String>) {
    state
        .supervisor
        .workflow_view(id)
        .map(|view| (view.pending_changes, view.pending_summary))
        .unwrap_or_default()
}

pub(super) async fn load(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<EditableSection>, Response> {
    let id = workflow(&id).map_err(IntoResponse::into_response)?;
    let path = state.supervisor.config_path().to_path_buf();
    let loaded = edit::load(&path, id).map_err(|error| {
        let (status, body) = refused(error, None, "");
        (status, Json(body)).into_response()
    })?;
    state.editor.remember(&loaded.version, &loaded.text);
    let (pending_changes, pending_summary) = pending(&state, id);
    Ok(Json(EditableSection {
        workflow: id,
        version: loaded.version,
        section: loaded.section,
        file: path.display().to_string(),
        pending_changes,
        pending_summary,
        choices: choices(id),
    }))
}

/// The closed sets a workflow's section draws from.
fn choices(id: WorkflowId) -> EditorChoices {
    let names = |set: &[&str]| set.iter().map(|name| (*name).to_string()).collect();
    EditorChoices {
        builtin_plugins: conduit_model::BUILTINS
            .iter()
            .filter(|builtin| builtin.world == id.world())
            .map(|builtin| builtin.reference())
            .collect(),
        filter_ops: names(FilterOp::NAMES),
        combines: names(Combine::NAMES),
        directions: names(Direction::NAMES),
        opt_out_attributes: names(&conduit_model::OPT_OUT_ATTRIBUTES),
    }
}

/// Validates an edit without writing it (the editor calls it as the operator types); not a
/// state change, so not audited.
pub(super) async fn check(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Json(request): Json<SectionEdit>,
) -> Response {
    let id = match workflow(&id) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    let path = state.supervisor.config_path().to_path_buf();
    let checked = off_the_workers(move || {
        edit::check_with(&path, id, &request.section, &|config| {
            plugin_problems(&state, config, id)
        })
    })
    .await;
    let checked = match checked {
        Ok(checked) => checked,
        Err(message) => {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message).into_response();
        }
    };
    match checked {
        Ok(diff) => Json(EditChecked {
            field_problems: Vec::new(),
            diff,
        })
        .into_response(),
        Err(EditError::Invalid(field_problems)) => Json(EditChecked {
            field_problems,
            diff: String::new(),
        })
        .into_response(),
        Err(error) => {
            let (status, body) = refused(error, None, "");
            (status, Json(body)).into_response()
        }
    }
}

pub(super) async fn save(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(request): Json<SectionEdit>,
) -> Response {
    let target = id.clone();
    let id = match workflow(&id) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    let path = state.supervisor.config_path().to_path_buf();
    let result = {
        let (state, path, version) = (state.clone(), path.clone(), request.version.clone());
        off_the_workers(move || {
            let _one_at_a_time = state
                .editor
                .saving
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            edit::save_with(&path, &version, id, &request.section, &|config| {
                plugin_problems(&state, config, id)
            })
        })
        .await
    };
    let (outcome, detail, response) = match result {
        Err(message) => {
            let response =
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message.clone()).into_response();
            (AuditOutcome::Failed, message, response)
        }
        Ok(Ok(saved)) => {
            // The watcher would notice within its interval; the editor shows the badge now.
            state.supervisor.refresh_config();
            if let Ok(text) = std::fs::read_to_string(&path) {
                state.editor.remember(&saved.version, &text);
            }
            let (pending_changes, pending_summary) = pending(&state, id);
            let changed = !saved.diff.is_empty();
            let detail = if changed {
                let count = saved
                    .diff
                    .lines()
                    .filter(|l| {
                        (l.starts_with('+') || l.starts_with('-'))
                            && !l.starts_with("+++")
                            && !l.starts_with("---")
                    })
                    .count();
                format!("saved: {count} line(s) of the config changed")
            } else {
                "saved: nothing changed".into()
            };
            let answer = EditSaved {
                version: saved.version,
                changed,
                diff: saved.diff,
                pending_changes,
                pending_summary,
            };
            (AuditOutcome::Ok, detail, Json(answer).into_response())
        }
        Ok(Err(error)) => {
            let loaded = state.editor.text_of(&request.version);
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (status, body) = refused(error, loaded.as_deref(), &name);
            let outcome = if status.is_server_error() {
                AuditOutcome::Failed
            } else {
                AuditOutcome::Refused
            };
            let detail = body.error.clone();
            (outcome, detail, (status, Json(body)).into_response())
        }
    };
    let entry = NewAuditEntry {
        action: "config-edit".into(),
        target,
        caller,
        outcome,
        detail,
    };
    if let Err(error) = state.supervisor.store().record_audit(entry) {
        tracing::error!(%error, "cannot record a config edit in the audit trail");
    }
    response
}

/// The problems of the edited workflow's plugin in an edited config; none without a check
/// (an admin API built without the runtime's plugin host).
fn plugin_problems(
    state: &AdminState,
    config: &conduit_config::Config,
    id: WorkflowId,
) -> Vec<conduit_config::Problem> {
    let Some(check) = &state.plugin_check else {
        return Vec::new();
    };
    let _one_at_a_time = state
        .editor
        .checking
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    check.check(config, id)
}

/// Runs a check or save on a blocking thread: it reads and writes the file, and the plugin
/// check runs plugin code for up to the workflow's plugin deadline per call, which must not
/// hold an async worker. Fails only when the work panicked.
async fn off_the_workers<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| format!("the edit could not be checked: {error}"))
}

/// The status and body of a refused load or save; `loaded` is the text the editor loaded,
/// when remembered, to show a conflicting save the other change (in a diff naming `file`).
fn refused(error: EditError, loaded: Option<&str>, file: &str) -> (StatusCode, EditRefused) {
    let message = error.to_string();
    let mut body = EditRefused {
        error: message,
        refusal: EditRefusal::Failed,
        field_problems: Vec::new(),
        current_version: None,
        current_text: None,
        other_change: None,
        patch: None,
    };
    let status = match error {
        EditError::Invalid(problems) => {
            body.refusal = EditRefusal::Invalid;
            body.field_problems = problems;
            StatusCode::UNPROCESSABLE_ENTITY
        }
        EditError::Conflict {
            current_text,
            current_version,
        } => {
            body.refusal = EditRefusal::Changed;
            body.other_change =
                loaded.map(|old| conduit_config::unified_diff(old, &current_text, file));
            body.current_text = Some(current_text);
            body.current_version = Some(current_version);
            StatusCode::CONFLICT
        }
        EditError::ReadOnly { patch, .. } => {
            body.refusal = EditRefusal::ReadOnly;
            body.patch = Some(patch);
            StatusCode::CONFLICT
        }
        EditError::BadEdit(_) => {
            body.refusal = EditRefusal::BadEdit;
            StatusCode::BAD_REQUEST
        }
        EditError::Unparsable(_) => {
            body.refusal = EditRefusal::Unparsable;
            StatusCode::UNPROCESSABLE_ENTITY
        }
        EditError::Read { .. } | EditError::Write { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, body)
}

/// The fields of a Dynamics 365 table or a Campaign resource with their types; 502 when the
/// service cannot be asked (the editor then takes typed names). It makes the host call the
/// services with their credentials, so like a state change it needs the token or the
/// `X-Conduit-Request` header: a cross-site page cannot make the host call out.
pub(super) async fn metadata(
    State(state): State<Arc<AdminState>>,
    headers: axum::http::HeaderMap,
    Path((system, table)): Path<(String, String)>,
) -> Result<Json<Vec<MetadataField>>, ApiError> {
    if state.token.is_none() && !headers.contains_key(super::auth::REQUEST_HEADER) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this call asks the services, so it needs the X-Conduit-Request header (the page sends it)",
        ));
    }
    let system = match system.as_str() {
        "dynamics" => MetadataSystem::Dynamics,
        "campaign" => MetadataSystem::Campaign,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("'{other}' is not a service: use dynamics or campaign"),
            ));
        }
    };
    match state.supervisor.describe_fields(system, &table).await {
        Ok(fields) => Ok(Json(fields)),
        Err(conduit_engine::MetadataError::Config(error)) => Err(error.into()),
        Err(error) => Err(ApiError::new(StatusCode::BAD_GATEWAY, error.to_string())),
    }
}
