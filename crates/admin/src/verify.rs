//! `POST /api/workflows/{id}/preview`: what a restart with the config file as it is now would
//! change, on a sample of source records ([`PreviewReport`]); it writes nothing.
//!
//! `POST /api/workflows/{id}/verify`: compares a workflow's destination with its source
//! (`Supervisor::verify`) and streams the answer as JSON lines ([`VerifyEvent`]): progress
//! while both sides are read, then the report, or why it failed. A verify that cannot start
//! (an unknown workflow or mapping, an invalid config) is refused with a status, as any call.
//! A verify with `repair=true` changes state (it queues keys for the writer) and is recorded
//! in the audit trail with its caller and outcome.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::api::{ApiError, AuditDetail, audited};
use axum::Json;
use conduit_engine::{
    EngineError, PreviewOptions, PreviewReport, VerifyError, VerifyEvent, VerifyOptions,
    VerifyReport,
};
use conduit_model::WorkflowId;
use conduit_store::Caller;

/// What the verify task hands the answer.
enum Message {
    /// A line of the answer.
    Event(VerifyEvent),
    /// The verify failed; answered with a status when nothing was sent yet.
    Failed(VerifyError),
}

impl From<VerifyError> for ApiError {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::Engine(engine) => engine.into(),
            VerifyError::Store(store) => EngineError::Store(store).into(),
            VerifyError::NotRunning(_) | VerifyError::NoReader(_) | VerifyError::Load { .. } => {
                ApiError::new(StatusCode::CONFLICT, error.to_string())
            }
            VerifyError::Plugin { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
            }
            VerifyError::Source { .. } | VerifyError::Destination { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, error.to_string())
            }
        }
    }
}

impl AuditDetail for VerifyReport {
    fn detail(&self) -> String {
        format!(
            "{} difference(s); {} key(s) queued for the writer",
            self.differences, self.repaired
        )
    }
}

pub(super) async fn verify(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(options): Query<VerifyOptions>,
) -> Result<Response, ApiError> {
    let workflow: WorkflowId = id
        .parse()
        .map_err(|message: String| ApiError::new(StatusCode::NOT_FOUND, message))?;
    if options.sample == Some(0) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "sample must be at least 1 (or leave it out to compare everything)",
        ));
    }
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let task_state = Arc::clone(&state);
    let task_caller = caller.clone();
    tokio::spawn(async move {
        let progress_sender = sender.clone();
        let progress = move |step| {
            // The caller may have gone: the verify still finishes (and a repair still lands).
            let _ = progress_sender.send(Message::Event(VerifyEvent::Progress(step)));
        };
        let result = task_state
            .supervisor
            .verify(workflow, &options, &progress)
            .await;
        if options.repair {
            let answer = result.as_ref().map(Clone::clone).map_err(|error| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
            });
            // Recorded whatever became of the answer's reader.
            let _ = audited(
                &task_state,
                &task_caller,
                "verify-repair",
                workflow.to_string(),
                answer,
            );
        }
        let _ = sender.send(match result {
            Ok(report) => Message::Event(VerifyEvent::Report(report)),
            Err(error) => Message::Failed(error),
        });
    });
    let first = receiver.recv().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the verify task ended without an answer",
        )
    })?;
    let first = match first {
        Message::Event(event) => event,
        Message::Failed(error) => return Err(error.into()),
    };
    let lines = futures_util::stream::unfold(
        (Some(first), receiver),
        |(first, mut receiver)| async move {
            let event = match first {
                Some(event) => event,
                None => match receiver.recv().await? {
                    Message::Event(event) => event,
                    Message::Failed(error) => VerifyEvent::Failed {
                        error: error.to_string(),
                    },
                },
            };
            let mut line = serde_json::to_vec(&event).unwrap_or_default();
            line.push(b'\n');
            Some((Ok::<_, std::io::Error>(line), (None, receiver)))
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

pub(super) async fn preview(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    Query(options): Query<PreviewOptions>,
) -> Result<Json<PreviewReport>, ApiError> {
    let workflow: WorkflowId = id
        .parse()
        .map_err(|message: String| ApiError::new(StatusCode::NOT_FOUND, message))?;
    if options.limit == Some(0) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "limit must be at least 1",
        ));
    }
    Ok(Json(state.supervisor.preview(workflow, &options).await?))
}
