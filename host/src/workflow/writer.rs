//! The writer stage: takes the oldest batch from the workflow's queue, writes it to the
//! destination(s), and commits removals, dead letters and retry counts in one transaction.
//! Transient failures stay queued and are retried with backoff; a permanent failure is first
//! checked for schema drift, which stops the workflow instead of dead-lettering good data.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::connector::{ConnectorError, WriteOutcome};
use crate::model::{System, WorkflowId};
use crate::store::{QueuedRecord, Store, WriteCommit};

use super::backoff::Backoff;
use super::drift::DriftGuard;
use super::services::Services;
use super::stage::{StageContext, StageError};

/// The writer of one workflow.
pub(super) struct Writer {
    pub(super) workflow: WorkflowId,
    pub(super) store: Store,
    pub(super) services: Services,
    pub(super) batch_size: usize,
    pub(super) drift: Arc<DriftGuard>,
}

impl Writer {
    /// Writes until stopped; returns an error for the supervisor when the stage cannot go on.
    pub(super) async fn write_until_stopped(
        &mut self,
        ctx: &StageContext,
    ) -> Result<(), StageError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        while !ctx.stop_requested() {
            let store = self.store.clone();
            let (workflow, size) = (self.workflow, self.batch_size);
            let batch = tokio::task::spawn_blocking(move || store.next_batch(workflow, size))
                .await
                .map_err(|error| StageError::Internal(error.to_string()))??;
            if batch.is_empty() {
                ctx.idle(Duration::from_millis(500)).await;
                continue;
            }
            let outcomes = self.write(&batch).await;
            let (commit, retry_after, auth_failure) = self.classify(batch, outcomes).await?;
            let transient = !commit.failed_transiently.is_empty();
            let progressed = !commit.written.is_empty() || !commit.refused.is_empty();
            let store = self.store.clone();
            let started = std::time::Instant::now();
            tokio::task::spawn_blocking(move || store.commit_write(workflow, commit))
                .await
                .map_err(|error| StageError::Internal(error.to_string()))??;
            crate::telemetry::record_commit(workflow.as_str(), "write", started.elapsed());
            ctx.notify_progress();
            if let Some(message) = auth_failure {
                return Err(StageError::Auth(message));
            }
            if transient {
                let delay = backoff.next_delay(retry_after);
                ctx.live.set_warning(Some(format!(
                    "destination unavailable, retrying in {:.1}s",
                    delay.as_secs_f64()
                )));
                ctx.sleep(delay).await;
            } else if progressed {
                backoff.reset();
                ctx.live.set_warning(None);
            }
        }
        Ok(())
    }

    /// Writes a batch, each system's records through its sink, and returns outcomes in
    /// batch order.
    async fn write(&self, batch: &[QueuedRecord]) -> Vec<WriteOutcome> {
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; batch.len()];
        for system in [System::Campaign, System::Dynamics] {
            let positions: Vec<usize> = (0..batch.len())
                .filter(|&i| batch[i].record.target.system == system)
                .collect();
            if positions.is_empty() {
                continue;
            }
            let records: Vec<_> = positions.iter().map(|&i| batch[i].record.clone()).collect();
            let results = self.services.sink(system).write(&records).await;
            for (slot, position) in positions.iter().enumerate() {
                outcomes[*position] = Some(results.get(slot).cloned().unwrap_or_else(|| {
                    WriteOutcome::Failed(ConnectorError::Transient {
                        message: "the connector returned fewer results than records".into(),
                        retry_after: None,
                    })
                }));
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or(WriteOutcome::Failed(ConnectorError::Transient {
                    message: "not written".into(),
                    retry_after: None,
                }))
            })
            .collect()
    }

    async fn classify(
        &self,
        batch: Vec<QueuedRecord>,
        outcomes: Vec<WriteOutcome>,
    ) -> Result<(WriteCommit, Option<Duration>, Option<String>), StageError> {
        let mut commit = WriteCommit::default();
        let mut retry_after: Option<Duration> = None;
        let mut auth_failure = None;
        let mut drift_checked: HashMap<(System, String), Option<String>> = HashMap::new();
        for (queued, outcome) in batch.into_iter().zip(outcomes) {
            match outcome {
                WriteOutcome::Written => commit.written.push(queued.seq),
                WriteOutcome::Failed(ConnectorError::Transient {
                    retry_after: asked, ..
                }) => {
                    retry_after = retry_after.max(asked);
                    commit.failed_transiently.push(queued.seq);
                }
                WriteOutcome::Failed(ConnectorError::Auth { message }) => {
                    auth_failure = Some(message);
                    commit.failed_transiently.push(queued.seq);
                }
                WriteOutcome::Failed(error) => {
                    let target = &queued.record.target;
                    let key = (target.system, target.table.clone());
                    let drift = match drift_checked.get(&key) {
                        Some(found) => found.clone(),
                        None => {
                            let found = self
                                .drift
                                .check(&self.services, target.system, &target.table)
                                .await;
                            drift_checked.insert(key, found.clone());
                            found
                        }
                    };
                    if let Some(reason) = drift {
                        // Commit what was decided so far, keep the rest queued, and stop.
                        let store = self.store.clone();
                        let workflow = self.workflow;
                        tokio::task::spawn_blocking(move || store.commit_write(workflow, commit))
                            .await
                            .map_err(|error| StageError::Internal(error.to_string()))??;
                        return Err(StageError::Drift(reason));
                    }
                    commit.refused.push((queued, error.to_string()));
                }
            }
        }
        Ok((commit, retry_after, auth_failure))
    }
}
