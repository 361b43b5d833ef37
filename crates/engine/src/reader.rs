//! The reader stage: the loop every workflow's reader runs (pause on a full backlog, back off
//! on transient source failures, give up after batches the plugin fails entirely), and the
//! parts of a step that every workflow shares: calling the plugin on a plugin thread,
//! isolating the records a batch call failed on, and committing outputs, dead letters and the
//! new cursor in one transaction. A crash before the commit re-reads the page; after it,
//! nothing is read twice. What a workflow reads and how it maps it is its own module under
//! `workflows/`.

use std::time::Duration;

use conduit_connectors::ConnectorError;
use conduit_model::{Outcome, WorkflowId};
use conduit_store::{DeadLetterPayload, NewDeadLetter, ReadCommit, Stage, Store};

use super::services::{MappingFailed, Services};
use super::stage::{StageContext, StageError, StageRun};
use super::workflows::Workflow;
use conduit_base::retry::Backoff;

/// How a reader paces itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReaderPacing {
    pub(super) page_size: u32,
    pub(super) poll_interval: Duration,
    /// The reader pauses while the backlog is at least this large, so a dead destination
    /// cannot fill the disk without bound.
    pub(super) max_backlog: u64,
    /// Batches on which the plugin fails for every record before the stage gives up.
    pub(super) failure_threshold: u32,
}

/// What every workflow's reader steps with: its store, its connectors, its pacing, and the
/// count of batches in a row on which the plugin failed for every record.
pub(super) struct ReaderCore {
    pub(super) workflow: WorkflowId,
    pub(super) store: Store,
    pub(super) services: Services,
    pub(super) pacing: ReaderPacing,
    pub(super) failing_batches: u32,
}

/// The reader of one workflow: the shared loop around the workflow's own step.
pub(super) struct Reader<W> {
    pub(super) core: ReaderCore,
    pub(super) workflow: W,
}

impl<W: Workflow> Reader<W> {
    /// Reads until stopped; returns an error for the supervisor when the stage cannot go on.
    pub(super) async fn read_until_stopped(
        &mut self,
        ctx: &StageContext,
    ) -> Result<(), StageError> {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        while !ctx.stop_requested() {
            if self.core.store.backlog(self.core.workflow)? >= self.core.pacing.max_backlog {
                ctx.live.set_warning(Some(format!(
                    "reading paused: the backlog reached {}",
                    self.core.pacing.max_backlog
                )));
                ctx.sleep(Duration::from_secs(1)).await;
                continue;
            }
            let step = self.workflow.step(&mut self.core, ctx).await;
            match step {
                Ok(true) => {
                    backoff.reset();
                    ctx.live.set_warning(None);
                }
                Ok(false) => ctx.sleep(self.core.pacing.poll_interval).await,
                Err(StepError::Transient {
                    message,
                    retry_after,
                }) => {
                    let delay = backoff.next_delay(retry_after);
                    ctx.live.set_warning(Some(format!(
                        "{message}; retrying in {:.1}s",
                        delay.as_secs_f64()
                    )));
                    ctx.sleep(delay).await;
                }
                Err(StepError::Stage(error)) => return Err(error),
            }
        }
        Ok(())
    }
}

impl ReaderCore {
    /// Commits a step and tracks batches on which the plugin failed for every record.
    pub(super) async fn commit(
        &mut self,
        ctx: &StageContext,
        commit: ReadCommit,
        all_failed: bool,
    ) -> Result<(), StepError> {
        let store = self.store.clone();
        let workflow = self.workflow;
        let first_reason = commit.dead_letters.first().map(|d| d.reason.clone());
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || store.commit_read(workflow, commit))
            .await
            .map_err(|error| StepError::Stage(StageError::Task(error)))?
            .map_err(StageError::from)?;
        conduit_base::telemetry::record_commit(workflow.as_str(), "read", started.elapsed());
        ctx.notify_progress();
        if all_failed {
            self.failing_batches += 1;
            if self.failing_batches >= self.pacing.failure_threshold {
                return Err(StepError::Stage(StageError::Plugin(
                    first_reason.unwrap_or_else(|| "every record was rejected".into()),
                )));
            }
        } else {
            self.failing_batches = 0;
        }
        Ok(())
    }
}

/// A failed reader step: retried in place, or handed to the supervisor.
pub(super) enum StepError {
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    Stage(StageError),
}

impl StepError {
    pub(super) fn from_source(source: &str, error: ConnectorError) -> StepError {
        match error {
            ConnectorError::Transient {
                message,
                retry_after,
            } => StepError::Transient {
                message: format!("reading {source}: {message}"),
                retry_after,
            },
            ConnectorError::Auth { message } => StepError::Stage(StageError::Auth(message)),
            error => StepError::Stage(StageError::Source {
                origin: source.to_string(),
                error,
            }),
        }
    }
}

impl From<conduit_store::StoreError> for StepError {
    fn from(error: conduit_store::StoreError) -> Self {
        StepError::Stage(StageError::Store(error))
    }
}

impl From<StageError> for StepError {
    fn from(error: StageError) -> Self {
        StepError::Stage(error)
    }
}

/// A plugin call on a batch, record by record: one result per input and, when the call on the
/// whole batch failed (so that each input was then mapped alone), why it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Isolated {
    /// Why the call on the whole batch failed, when it did.
    pub batch_failure: Option<String>,
    /// One result per input, in order.
    pub results: Vec<Result<Outcome, String>>,
}

/// The threads plugin calls run on: plain threads outside the async runtime, kept between
/// calls. A call made on a tokio thread would need a thread of its own (wasmtime-wasi's
/// synchronous functions start a runtime, which panics inside one), and starting a thread per
/// call costs more than mapping a small batch. None when the pool cannot be built; calls then
/// run on tokio's blocking threads (and the plugin host starts a thread for each).
fn plugin_threads() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            // One per workflow reader (each calls its plugin one batch at a time), and spare
            // ones for retries of dead letters.
            .num_threads(PLUGIN_THREADS)
            .thread_name(|index| format!("plugin-{index}"))
            // The plugin runs on this stack: wasmtime's own stack limit plus the host's calls.
            .stack_size(PLUGIN_THREAD_STACK)
            .build()
            .inspect_err(|error| {
                tracing::warn!(%error, "no plugin threads; plugin calls use the blocking pool");
            })
            .ok()
    })
    .as_ref()
}

/// The plugin threads: the three workflows' readers and a retry or two.
const PLUGIN_THREADS: usize = 6;

/// A plugin thread's stack.
const PLUGIN_THREAD_STACK: usize = 8 << 20;

/// Runs `work` with the plugin held in `slot` on a plugin thread (plugin calls block, and
/// must never stall an async worker), puts the plugin back and records the time it took.
/// The plugin is taken out of the slot for the call: if `work` panics the slot stays empty,
/// and the next step ends the stage run with [`StageError::PluginLost`] so the supervisor's
/// restart prepares a fresh plugin. `what` names the plugin in that error.
pub(super) async fn on_plugin_thread<P, I, R>(
    slot: &mut Option<P>,
    what: &'static str,
    workflow: WorkflowId,
    input: I,
    work: impl FnOnce(&mut P, &I) -> R + Send + 'static,
) -> Result<(I, R), StepError>
where
    P: Send + 'static,
    I: Send + 'static,
    R: Send + 'static,
{
    let mut plugin = slot
        .take()
        .ok_or(StepError::Stage(StageError::PluginLost(what)))?;
    let started = std::time::Instant::now();
    // The plugin's log lines keep the workflow and stage they were written for.
    let span = tracing::Span::current();
    let job = move || {
        let _span = span.enter();
        let result = work(&mut plugin, &input);
        (plugin, input, result)
    };
    let (plugin, input, result) = match plugin_threads() {
        Some(pool) => {
            let (done, answer) = tokio::sync::oneshot::channel();
            pool.spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                // The receiver is gone only when the step itself was dropped (shutdown).
                let _ = done.send(outcome);
            });
            match answer.await {
                Ok(Ok(done)) => done,
                Ok(Err(payload)) => {
                    return Err(StepError::Stage(StageError::PluginPanicked(
                        what,
                        panic_text(&*payload),
                    )));
                }
                Err(_) => {
                    return Err(StepError::Stage(StageError::PluginPanicked(
                        what,
                        "the plugin thread ended without an answer".to_owned(),
                    )));
                }
            }
        }
        None => tokio::task::spawn_blocking(job)
            .await
            .map_err(|error| StepError::Stage(StageError::Task(error)))?,
    };
    *slot = Some(plugin);
    conduit_base::telemetry::record_plugin_time(workflow.as_str(), started.elapsed());
    Ok((input, result))
}

/// The message of a panic's payload (a `&str` or a `String`; anything else is named so).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Calls a plugin on a batch, falling back to one item at a time when the batch fails. An
/// empty batch does not call the plugin.
pub(super) fn isolate<T>(
    items: &[T],
    call: impl FnMut(&[T]) -> Result<Vec<Outcome>, MappingFailed>,
) -> Vec<Result<Outcome, String>> {
    isolate_items(items, call).results
}

/// [`isolate`] saying why the whole batch failed, for `conduit plugin test`.
pub fn isolate_items<T>(
    items: &[T],
    mut call: impl FnMut(&[T]) -> Result<Vec<Outcome>, MappingFailed>,
) -> Isolated {
    if items.is_empty() {
        return Isolated {
            batch_failure: None,
            results: Vec::new(),
        };
    }
    let batch_failure = match batch_call(items.len(), call(items)) {
        Ok(results) => {
            return Isolated {
                batch_failure: None,
                results,
            };
        }
        Err(failure) => failure,
    };
    let results = items
        .iter()
        .map(|item| single_outcome(call(std::slice::from_ref(item))))
        .collect();
    Isolated {
        batch_failure: Some(batch_failure),
        results,
    }
}

/// The outcomes of a call on `count` inputs, or why they cannot be used one per input.
fn batch_call(
    count: usize,
    result: Result<Vec<Outcome>, MappingFailed>,
) -> Result<Vec<Result<Outcome, String>>, String> {
    match result {
        Ok(outcomes) if outcomes.len() == count => Ok(outcomes.into_iter().map(Ok).collect()),
        Ok(outcomes) => Err(format!(
            "the plugin returned {} outcomes for {count} inputs",
            outcomes.len()
        )),
        Err(failed) => Err(failed.to_string()),
    }
}

pub(super) fn single_outcome(
    result: Result<Vec<Outcome>, MappingFailed>,
) -> Result<Outcome, String> {
    match result {
        Ok(mut outcomes) if outcomes.len() == 1 => Ok(outcomes.remove(0)),
        Ok(outcomes) => Err(format!(
            "the plugin returned {} outcomes for one input",
            outcomes.len()
        )),
        Err(failed) => Err(format!("the plugin failed on this record: {failed}")),
    }
}

/// Turns outcomes into queued writes, skips and dead letters; true when every input failed.
pub(super) fn collect(
    commit: &mut ReadCommit,
    origin: &str,
    results: Vec<Result<Outcome, String>>,
    payload: impl Fn(usize) -> DeadLetterPayload,
) -> bool {
    let total = results.len();
    let mut failed = 0;
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Ok(Outcome::Write { records }) => {
                commit
                    .records
                    .extend(records.into_iter().map(|r| (origin.to_string(), r)));
            }
            Ok(Outcome::Skip { .. }) => commit.skipped += 1,
            Ok(Outcome::Reject { reason }) => commit.dead_letters.push(NewDeadLetter {
                stage: Stage::Read,
                origin: origin.to_string(),
                reason: format!("rejected by the plugin: {reason}"),
                payload: payload(index),
                attempts: 1,
            }),
            Err(reason) => {
                failed += 1;
                commit.dead_letters.push(NewDeadLetter {
                    stage: Stage::Read,
                    origin: origin.to_string(),
                    reason,
                    payload: payload(index),
                    attempts: 1,
                });
            }
        }
    }
    total > 0 && failed == total
}

impl<W: Workflow> StageRun for Reader<W> {
    fn run(
        &mut self,
        ctx: &StageContext,
    ) -> impl std::future::Future<Output = Result<(), StageError>> + Send {
        self.read_until_stopped(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_plugin_call_runs_outside_the_runtime_and_the_plugin_comes_back() {
        let mut slot = Some(41_u32);
        let (input, inside_runtime) = on_plugin_thread(
            &mut slot,
            "mapper",
            WorkflowId::Ingress,
            1_u32,
            |plugin, one| {
                *plugin += one;
                tokio::runtime::Handle::try_current().is_ok()
            },
        )
        .await
        .unwrap_or_else(|_| panic!("the call fails"));
        assert_eq!(input, 1);
        assert!(!inside_runtime, "the plugin call ran inside the runtime");
        assert_eq!(slot, Some(42));
    }

    #[tokio::test]
    async fn a_panicking_plugin_call_is_a_stage_error_and_the_plugin_is_lost() {
        let mut slot = Some(0_u32);
        let result = on_plugin_thread(&mut slot, "mapper", WorkflowId::Ingress, (), |_, ()| {
            panic!("host bug on purpose")
        })
        .await;
        let Err(StepError::Stage(StageError::PluginPanicked("mapper", message))) = result else {
            panic!("not a PluginPanicked error");
        };
        assert_eq!(message, "host bug on purpose");
        assert_eq!(slot, None);
        let again =
            on_plugin_thread(&mut slot, "mapper", WorkflowId::Ingress, (), |_, ()| ()).await;
        assert!(matches!(
            again,
            Err(StepError::Stage(StageError::PluginLost("mapper")))
        ));
    }
}
