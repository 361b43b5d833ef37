//! `POST /api/backup`: a consistent copy of the running host's store, streamed back to the
//! caller. The host cannot leave the copy to anyone else (redb holds the store's file lock),
//! and it writes it only to an unnamed temporary file in its data directory: no path from the
//! network decides where the host writes, the backup lands where the operator runs
//! `conduit backup` (through `kubectl port-forward` too), and nothing is left behind.

use std::io::{Read, Seek};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::api::{ApiError, audited};
use super::views::MessageAnswer;
use conduit_store::Caller;

/// The header carrying the number of entries copied.
pub const ENTRIES_HEADER: &str = "x-conduit-backup-entries";
/// The header carrying the copy's store format version.
pub const FORMAT_HEADER: &str = "x-conduit-format-version";

/// How much of the copy is read per chunk of the answer.
const CHUNK: usize = 256 * 1024;

pub(super) async fn backup(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let store = state.supervisor.store().clone();
    let copied = tokio::task::spawn_blocking(move || {
        let dir = store.path().parent().map_or_else(
            || std::path::PathBuf::from("."),
            std::path::Path::to_path_buf,
        );
        let failed = |error: std::io::Error| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "cannot make room for the backup in {}: {error}",
                    dir.display()
                ),
            )
        };
        // Unnamed: removed by the system once the answer is sent, even after a crash.
        let mut file = tempfile::tempfile_in(&dir).map_err(failed)?;
        let summary = store
            .backup_into(file.try_clone().map_err(failed)?, &dir.join("(backup)"))
            .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
        file.rewind().map_err(failed)?;
        let length = file.metadata().map_err(failed)?.len();
        Ok::<_, ApiError>((file, length, summary))
    })
    .await
    .map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the backup task failed: {error}"),
        )
    })
    .and_then(|result| result);
    let (file, length, summary) = match copied {
        Ok(copied) => copied,
        // Recorded as failed in the audit trail, and answered with the error.
        Err(error) => {
            return audited::<MessageAnswer>(&state, &caller, "backup", "store".into(), Err(error))
                .map(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
        }
    };
    let answer = MessageAnswer {
        message: format!(
            "{} entries, format version {}, {length} bytes",
            summary.entries, summary.format_version
        ),
    };
    audited(&state, &caller, "backup", "store".into(), Ok(answer)).map(drop)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
            (
                header::HeaderName::from_static(ENTRIES_HEADER),
                summary.entries.to_string(),
            ),
            (
                header::HeaderName::from_static(FORMAT_HEADER),
                summary.format_version.to_string(),
            ),
        ],
        Body::from_stream(chunks(file)),
    )
        .into_response())
}

/// The file's bytes as a stream of chunks, each read on a blocking thread.
fn chunks(
    file: std::fs::File,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send {
    futures_util::stream::try_unfold(Some(file), |file| async move {
        let Some(mut file) = file else {
            return Ok(None);
        };
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            let mut chunk = vec![0; CHUNK];
            let read = file.read(&mut chunk)?;
            chunk.truncate(read);
            Ok::<_, std::io::Error>((file, chunk))
        })
        .await
        .map_err(std::io::Error::other)??;
        if chunk.is_empty() {
            Ok(None)
        } else {
            Ok(Some((chunk, Some(file))))
        }
    })
}
