//! The workflow engine: one supervisor running the three workflows, each a reader stage and a
//! writer stage joined by a durable queue. It owns the lifecycle (STOPPED, STARTING, RUNNING,
//! ERROR), the desired state kept in the store, replay requests, dead-letter retries, and the
//! comparison between the config a workflow started with and the one on disk now.
//!
//! The engine knows the connector and mapping traits, never HTTP or Wasm.

mod drift;
mod lifecycle;
mod metadata;
pub mod offline;
mod prepare;
mod preview;
mod reader;
pub mod services;
mod stage;
mod verify;
mod verify_egress;
mod verify_opt_outs;
mod view;
mod workflows;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use conduit_config::{Config, Problem};
use conduit_model::WorkflowId;
use conduit_store::{
    AuditOutcome, Caller, DeadLetterPayload, DesiredState, NewAuditEntry, ReadCommit, Store,
    StoreError,
};

pub use lifecycle::{Status, StatusKind};
pub use metadata::{MetadataError, MetadataField, MetadataSystem};
pub use preview::{
    FieldChange, MappingPreview, PreviewOptions, PreviewReport, RecordChange, plain as plain_value,
};
pub use services::{
    Connect, ConnectFailed, LoadFailed, MappingFailed, PluginBuild, PluginFactory, Services,
};
pub use verify::{
    FieldDifference, KeyList, MappingCheck, StaleRecord, VerifyError, VerifyEvent, VerifyOptions,
    VerifyProgress, VerifyReport,
};
pub use view::{CursorView, HostView, MappingView, WorkflowView};
pub use workflows::RemapError;

use lifecycle::LiveState;
use stage::{StageContext, StageRun};
use workflows::{Egress, Ingress, OptInOut, Workflow};

/// Why an operator request was refused.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The config on disk is invalid.
    #[error("the config is invalid:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    InvalidConfig(Vec<Problem>),
    /// No valid config has been read since the host started.
    #[error("no valid config has been read: fix the config file and try again")]
    NoValidConfig,
    /// The workflow has no section in the config.
    #[error("the {0} workflow is not configured: add a [{0}] section to the config")]
    NotConfigured(WorkflowId),
    /// A replay was asked of a workflow without table mappings.
    #[error("replay applies to the table mappings of ingress, not to {0}")]
    ReplayNotIngress(WorkflowId),
    /// A replay named a table mapping the config does not have.
    #[error("no table mapping named '{name}'; the mappings are: {}", .known.join(", "))]
    UnknownMapping {
        /// The name asked for.
        name: String,
        /// The mappings the config has.
        known: Vec<String>,
    },
    /// A replay of the mapping is already waiting for the next start.
    #[error("a replay of '{0}' is already pending; it starts at the next start of ingress")]
    ReplayPending(String),
    /// The backlog is too large for a replay.
    #[error(
        "replay refused: the ingress backlog holds {backlog} records (the limit is {limit}); wait for it to drain"
    )]
    BacklogOverLimit {
        /// Records queued now.
        backlog: u64,
        /// `replay_max_rows` in force.
        limit: u64,
    },
    /// The table is too large for a replay.
    #[error("replay refused: {table} holds {rows} rows (the limit is {limit})")]
    TableOverLimit {
        /// The Dynamics 365 table.
        table: String,
        /// Its rows now.
        rows: u64,
        /// `replay_max_rows` in force.
        limit: u64,
    },
    /// The connectors could not be built from the config.
    #[error(transparent)]
    Connect(#[from] ConnectFailed),
    /// The source could not count a table's rows.
    #[error("cannot count the rows of {table}: {source}")]
    CountRows {
        /// The Dynamics 365 table.
        table: String,
        /// The connector's error.
        #[source]
        source: conduit_connectors::ConnectorError,
    },
    /// A dead letter could not be mapped again (the mapping is gone, the plugin does not
    /// load, or it failed on the record).
    #[error(transparent)]
    Remap(#[from] RemapError),
    /// The plugin as configured now still rejects the dead letter.
    #[error("the plugin still rejects dead letter {letter}: {reason}")]
    StillRejected {
        /// The dead letter's id.
        letter: u64,
        /// The plugin's reason.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the supervisor needs from the outside world.
pub struct Environment {
    /// The durable store.
    pub store: Store,
    /// Builds connectors from a config.
    pub connect: Arc<dyn Connect>,
    /// Loads plugins.
    pub plugins: Arc<dyn PluginFactory>,
    /// The config file, re-read on every start and watched for edits.
    pub config_path: PathBuf,
}

/// What a started workflow was started with.
struct Snapshot {
    config: Config,
    plugin_fingerprint: String,
    /// The plugin build it loaded: one per running workflow, dropped at its stop.
    build: Option<Arc<dyn PluginBuild>>,
}

struct Slot {
    live: Arc<LiveState>,
    snapshot: Option<Snapshot>,
    stop: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
    rate: view::RateMeter,
}

struct ConfigWatch {
    latest_valid: Option<Config>,
    problems: Vec<Problem>,
    last_text: Option<String>,
}

struct Inner {
    env: Environment,
    slots: Mutex<HashMap<WorkflowId, Slot>>,
    watch: Mutex<ConfigWatch>,
}

/// Runs the workflows of one host. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Supervisor {
    /// A supervisor with every workflow stopped; call [`Supervisor::restore`] to start those
    /// that were running.
    pub fn new(env: Environment) -> Supervisor {
        let slots = WorkflowId::ALL
            .into_iter()
            .map(|id| {
                (
                    id,
                    Slot {
                        live: Arc::new(LiveState::default()),
                        snapshot: None,
                        stop: None,
                        task: None,
                        rate: view::RateMeter::default(),
                    },
                )
            })
            .collect();
        let supervisor = Supervisor {
            inner: Arc::new(Inner {
                env,
                slots: Mutex::new(slots),
                watch: Mutex::new(ConfigWatch {
                    latest_valid: None,
                    problems: Vec::new(),
                    last_text: None,
                }),
            }),
        };
        supervisor.refresh_config();
        supervisor
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.env.store
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.inner.env.config_path
    }

    /// Starts the workflows whose desired state is running.
    pub async fn restore(&self) -> Vec<(WorkflowId, EngineError)> {
        let mut failures = Vec::new();
        for id in WorkflowId::ALL {
            let wanted = match self.store().workflow(id) {
                Ok(record) => record.desired == DesiredState::Running,
                Err(error) => {
                    failures.push((id, error.into()));
                    continue;
                }
            };
            if wanted && let Err(error) = self.start(id).await {
                failures.push((id, error));
            }
        }
        failures
    }

    /// Starts a workflow: the config is re-read and validated now (an invalid one is refused
    /// with its problems), then STARTING loads plugins and checks credentials and schemas in
    /// the background. Starting a running workflow does nothing.
    pub async fn start(&self, id: WorkflowId) -> Result<Status, EngineError> {
        self.start_as(id, &Caller::host()).await
    }

    /// [`Supervisor::start`] on behalf of `caller`: when the config the workflow starts with
    /// differs from the one of its last start, the audit trail records that `caller` applied it.
    pub async fn start_as(&self, id: WorkflowId, caller: &Caller) -> Result<Status, EngineError> {
        let config = self.load_config()?;
        if !config.has_workflow(id) {
            return Err(EngineError::NotConfigured(id));
        }
        let (live, stop_rx) = {
            let mut slots = lock(&self.inner.slots);
            let slot = slot_mut(&mut slots, id);
            let status = slot.live.status();
            if matches!(status, Status::Running | Status::Starting) {
                return Ok(status);
            }
            if let Some(task) = slot.task.take() {
                task.abort();
            }
            let (stop_tx, stop_rx) = watch::channel(false);
            slot.stop = Some(stop_tx);
            slot.live.set_status(Status::Starting);
            slot.live.set_warning(None);
            slot.snapshot = None;
            (slot.live.clone(), stop_rx)
        };
        let fingerprint = config.workflow_fingerprint(id);
        let mut previous = None;
        self.store().update_workflow(id, |record| {
            record.desired = DesiredState::Running;
            record.last_status = "STARTING".into();
            record.last_error = None;
            if record.applied_config != fingerprint {
                previous = Some(std::mem::replace(
                    &mut record.applied_config,
                    fingerprint.clone(),
                ));
            }
        })?;
        if let Some(previous) = previous {
            self.audit_config_applied(id, caller, previous, fingerprint);
        }
        let supervisor = self.clone();
        // Every log line of the workflow's run carries its name (a field of the JSON logs).
        let span = tracing::info_span!("workflow", workflow = %id);
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                supervisor.run(id, config, live, stop_rx).await;
            },
            span,
        ));
        slot_mut(&mut lock(&self.inner.slots), id).task = Some(task);
        Ok(Status::Starting)
    }

    /// Stops a workflow gracefully: the reader finishes its page, the writer its batch; the
    /// backlog stays queued for the next start.
    pub async fn stop(&self, id: WorkflowId) -> Result<Status, EngineError> {
        let (stop, task) = {
            let mut slots = lock(&self.inner.slots);
            let slot = slot_mut(&mut slots, id);
            (slot.stop.take(), slot.task.take())
        };
        if let Some(stop) = stop {
            let _ = stop.send(true);
        }
        if let Some(task) = task {
            let _ = task.await;
        }
        {
            let mut slots = lock(&self.inner.slots);
            let slot = slot_mut(&mut slots, id);
            slot.live.set_status(Status::Stopped);
            slot.live.set_warning(None);
            slot.snapshot = None;
        }
        self.store().update_workflow(id, |record| {
            record.desired = DesiredState::Stopped;
            record.last_status = "STOPPED".into();
        })?;
        Ok(Status::Stopped)
    }

    /// The config a started workflow runs with, while it has one.
    fn running_config(&self, id: WorkflowId) -> Option<Config> {
        let slots = lock(&self.inner.slots);
        slots
            .get(&id)
            .and_then(|slot| slot.snapshot.as_ref())
            .map(|snapshot| snapshot.config.clone())
    }

    /// The config and plugin build a started workflow runs with, while it has them.
    fn in_force(&self, id: WorkflowId) -> Option<(Config, Option<Arc<dyn PluginBuild>>)> {
        let slots = lock(&self.inner.slots);
        slots
            .get(&id)
            .and_then(|slot| slot.snapshot.as_ref())
            .map(|snapshot| (snapshot.config.clone(), snapshot.build.clone()))
    }

    /// Records that a start applied a config other than the one of the workflow's last start.
    /// The start has happened by now, so a failure to record is logged rather than returned.
    fn audit_config_applied(
        &self,
        id: WorkflowId,
        caller: &Caller,
        previous: Option<String>,
        now: Option<String>,
    ) {
        let short = |fingerprint: Option<String>| {
            fingerprint.map_or_else(|| "none".to_string(), |f| f.chars().take(12).collect())
        };
        let detail = match previous {
            None => format!("first start with this config (fingerprint {})", short(now)),
            Some(previous) => format!(
                "the config of {id} changed since its last start (fingerprint {} -> {})",
                short(Some(previous)),
                short(now)
            ),
        };
        let entry = NewAuditEntry {
            action: "config-applied".into(),
            target: id.to_string(),
            caller: caller.clone(),
            outcome: AuditOutcome::Ok,
            detail,
        };
        if let Err(error) = self.store().record_audit(entry) {
            tracing::error!(workflow = %id, %error, "cannot record the applied config in the audit trail");
        }
    }

    /// Stops every workflow without changing what should run at the next host start.
    pub async fn shutdown(&self) {
        let tasks: Vec<_> = {
            let mut slots = lock(&self.inner.slots);
            slots
                .values_mut()
                .filter_map(|slot| {
                    if let Some(stop) = slot.stop.take() {
                        let _ = stop.send(true);
                    }
                    slot.task.take()
                })
                .collect()
        };
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Asks for a replay of an Ingress table mapping, taken at the next start. Refused when
    /// the backlog or the table holds at least the configured limit of rows, or when one is
    /// already pending.
    pub async fn replay(&self, id: WorkflowId, mapping: &str) -> Result<String, EngineError> {
        if id != WorkflowId::Ingress {
            return Err(EngineError::ReplayNotIngress(id));
        }
        let config = self.load_config()?;
        let Some(section) = config.ingress() else {
            return Err(EngineError::NotConfigured(id));
        };
        let Some(found) = section.mapping(mapping) else {
            return Err(EngineError::UnknownMapping {
                name: mapping.to_string(),
                known: section.mappings.iter().map(|m| m.name.clone()).collect(),
            });
        };
        // The limit in force is the running workflow's: an edited limit shows as pending until
        // the restart and must not apply before its badge clears.
        let limit = self
            .running_config(id)
            .unwrap_or_else(|| config.clone())
            .limits(id)
            .replay_max_rows;
        let record = self.store().workflow(id)?;
        if record.pending_replays.iter().any(|m| m == mapping) {
            return Err(EngineError::ReplayPending(mapping.to_string()));
        }
        let backlog = self.store().backlog(id)?;
        if backlog >= limit {
            return Err(EngineError::BacklogOverLimit { backlog, limit });
        }
        let services = self.inner.env.connect.connect(&config)?;
        let rows = services
            .dynamics_source
            .count_rows(&found.source)
            .await
            .map_err(|source| EngineError::CountRows {
                table: found.source.clone(),
                source,
            })?;
        if rows >= limit {
            return Err(EngineError::TableOverLimit {
                table: found.source.clone(),
                rows,
                limit,
            });
        }
        self.store().update_workflow(id, |record| {
            record.pending_replays.push(mapping.to_string());
        })?;
        Ok(format!(
            "replay of '{mapping}' accepted; it starts at the next stop and start of ingress"
        ))
    }

    /// Retries a dead letter: a refused write goes back to the queue; a record the plugin
    /// rejected is mapped again by the plugin as configured now, and its result is queued.
    pub async fn retry_dead_letter(
        &self,
        id: WorkflowId,
        letter: u64,
    ) -> Result<String, EngineError> {
        let dead = self.store().dead_letter(id, letter)?;
        if matches!(dead.payload, DeadLetterPayload::Write { .. }) {
            self.store().requeue_dead_letter(id, letter)?;
            return Ok(format!("dead letter {letter} is queued again"));
        }
        let config = self.load_config()?;
        let outcome = workflows::remap(&self.inner.env, &config, id, &dead).await?;
        let records = match outcome {
            conduit_model::Outcome::Write { records } => records,
            conduit_model::Outcome::Skip { reason } => {
                self.store().commit_read(
                    id,
                    ReadCommit {
                        source: dead.origin.clone(),
                        skipped: 1,
                        retired_dead_letters: vec![letter],
                        ..ReadCommit::default()
                    },
                )?;
                return Ok(format!(
                    "dead letter {letter} was skipped by the plugin now: {reason}"
                ));
            }
            conduit_model::Outcome::Reject { reason } => {
                return Err(EngineError::StillRejected { letter, reason });
            }
        };
        let count = records.len();
        self.store().commit_read(
            id,
            ReadCommit {
                source: dead.origin.clone(),
                records: records
                    .into_iter()
                    .map(|r| (dead.origin.clone(), r))
                    .collect(),
                retired_dead_letters: vec![letter],
                // A retried source record is written whatever was sent before, and recorded as
                // Conduit's, as a first read would.
                ledger: match &dead.payload {
                    DeadLetterPayload::SourceRecord { .. } => conduit_store::LedgerPolicy::Record,
                    _ => conduit_store::LedgerPolicy::Off,
                },
                ..ReadCommit::default()
            },
        )?;
        Ok(format!(
            "dead letter {letter} mapped again: {count} write(s) queued"
        ))
    }

    /// Re-reads the config file if it changed; an invalid edit is recorded (and logged) and
    /// changes nothing else. Returns the current problems.
    pub fn refresh_config(&self) -> Vec<Problem> {
        let path = self.inner.env.config_path.clone();
        let text = std::fs::read_to_string(&path);
        let mut watch = lock(&self.inner.watch);
        match text {
            Err(error) => {
                watch.problems = vec![Problem {
                    file: path.clone(),
                    line: 1,
                    column: 1,
                    message: format!("cannot read the config: {error}"),
                    hint: Some("restore the file; running workflows are not affected".into()),
                    span: 0..0,
                }];
                watch.last_text = None;
            }
            Ok(text) => {
                if watch.last_text.as_deref() == Some(text.as_str()) {
                    return watch.problems.clone();
                }
                match Config::parse(&path, &text) {
                    Ok(config) => {
                        if !watch.problems.is_empty() {
                            tracing::info!("the config is valid again");
                        }
                        watch.latest_valid = Some(config);
                        watch.problems.clear();
                    }
                    Err(problems) => {
                        for problem in &problems {
                            tracing::warn!(
                                "invalid config edit, running workflows are unaffected: {problem}"
                            );
                        }
                        watch.problems = problems;
                    }
                }
                watch.last_text = Some(text);
            }
        }
        watch.problems.clone()
    }

    /// Polls the config file (and plugin files) every `interval` until the host stops.
    pub fn watch_config(&self, interval: Duration) -> JoinHandle<()> {
        let supervisor = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                supervisor.refresh_config();
            }
        })
    }

    /// A workflow's section of the latest valid config, as JSON (for the read-only view).
    pub fn config_section(&self, id: WorkflowId) -> Option<serde_json::Value> {
        lock(&self.inner.watch)
            .latest_valid
            .as_ref()
            .and_then(|config| config.workflow_section_json(id))
    }

    fn load_config(&self) -> Result<Config, EngineError> {
        self.refresh_config();
        let watch = lock(&self.inner.watch);
        if !watch.problems.is_empty() {
            return Err(EngineError::InvalidConfig(watch.problems.clone()));
        }
        watch.latest_valid.clone().ok_or(EngineError::NoValidConfig)
    }

    /// STARTING, then RUNNING until stopped or failed: the one place that picks a
    /// workflow's type from its id.
    async fn run(
        &self,
        id: WorkflowId,
        config: Config,
        live: Arc<LiveState>,
        stop: watch::Receiver<bool>,
    ) {
        match id {
            WorkflowId::Ingress => self.run_as::<Ingress>(config, live, stop).await,
            WorkflowId::Egress => self.run_as::<Egress>(config, live, stop).await,
            WorkflowId::OptInOut => self.run_as::<OptInOut>(config, live, stop).await,
        }
    }

    async fn run_as<W: Workflow>(
        &self,
        config: Config,
        live: Arc<LiveState>,
        stop: watch::Receiver<bool>,
    ) {
        let id = W::ID;
        let mut retries =
            conduit_base::retry::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let prepared = loop {
            match prepare::prepare::<W>(&self.inner.env, &config).await {
                Ok(prepared) => break prepared,
                Err(error) if error.transient => {
                    // A service that is down or busy delays the start; it does not fail it.
                    let delay = retries.next_delay(None);
                    tracing::warn!(workflow = %id, reason = %error.message, "start delayed");
                    live.set_warning(Some(format!(
                        "{}; retrying in {:.0}s",
                        error.message,
                        delay.as_secs_f64()
                    )));
                    let mut stopped = stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stopped.wait_for(|stopped| *stopped) => return,
                    }
                }
                Err(error) => {
                    let reason = error.message;
                    tracing::error!(workflow = %id, %reason, "start failed");
                    live.fail(reason.clone());
                    let _ = self.store().update_workflow(id, |record| {
                        record.last_status = "ERROR".into();
                        record.last_error = Some(reason);
                    });
                    return;
                }
            }
        };
        live.set_warning(None);
        if *stop.borrow() {
            return;
        }
        {
            let mut slots = lock(&self.inner.slots);
            slot_mut(&mut slots, id).snapshot = Some(Snapshot {
                plugin_fingerprint: prepared.plugin_fingerprint.clone(),
                build: prepared.build.clone(),
                config: config.clone(),
            });
        }
        live.set_status(Status::Running);
        let _ = self.store().update_workflow(id, |record| {
            record.last_status = "RUNNING".into();
        });
        tracing::info!(workflow = %id, "running");
        let threshold = config.limits(id).failure_threshold.max(1);
        let ctx = StageContext {
            stop,
            queue_changed: Arc::new(Notify::new()),
            live: live.clone(),
        };
        let (mut reader, mut writer) = (prepared.reader, prepared.writer);
        let (failed_tx, _) = tokio::sync::broadcast::channel::<String>(2);
        let reader_ctx = ctx.clone();
        let reader_failed = failed_tx.clone();
        let reader_task = tokio::spawn(tracing::Instrument::instrument(
            async move { supervise("reader", &reader_ctx, threshold, reader_failed, &mut reader).await },
            tracing::info_span!("stage", stage = "reader"),
        ));
        let writer_ctx = ctx.clone();
        let writer_failed = failed_tx.clone();
        let writer_task = tokio::spawn(tracing::Instrument::instrument(
            async move { supervise("writer", &writer_ctx, threshold, writer_failed, &mut writer).await },
            tracing::info_span!("stage", stage = "writer"),
        ));
        let results = [reader_task.await, writer_task.await];
        let failure = results.into_iter().find_map(|result| match result {
            Ok(Some(reason)) => Some(reason),
            Ok(None) => None,
            Err(panic) => Some(format!("internal error: a stage panicked: {panic}")),
        });
        if let Some(reason) = failure {
            tracing::error!(workflow = %id, %reason, "workflow failed");
            live.fail(reason.clone());
            let _ = self.store().update_workflow(id, |record| {
                record.last_status = "ERROR".into();
                record.last_error = Some(reason);
            });
        }
    }
}

/// Runs a stage, restarting it with backoff after a failure. Returns the reason when the
/// workflow must go to ERROR (a fatal failure, or too many in a row), after asking the other
/// stage to stop through the shared failure channel.
async fn supervise<S: StageRun>(
    name: &'static str,
    ctx: &StageContext,
    threshold: u32,
    failed: tokio::sync::broadcast::Sender<String>,
    stage: &mut S,
) -> Option<String> {
    let mut other_failed = failed.subscribe();
    let mut failures = 0u32;
    let mut delays =
        conduit_base::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            result = stage.run(ctx) => result,
            _ = other_failed.recv() => return None,
        };
        let error = match result {
            Ok(()) => return None,
            Err(error) => error,
        };
        if started.elapsed() > Duration::from_secs(60) {
            failures = 0;
            delays.reset();
        }
        failures += 1;
        tracing::warn!(stage = name, attempt = failures, %error, "stage failed");
        if error.is_fatal() || failures >= threshold {
            let reason = format!("{name}: {error}");
            let _ = failed.send(reason.clone());
            return Some(reason);
        }
        ctx.live
            .set_warning(Some(format!("{name} restarting after: {error}")));
        ctx.sleep(delays.next_delay(None)).await;
        if ctx.stop_requested() {
            return None;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps behind these locks hold plain values that a panic cannot leave half-written.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn slot_mut(slots: &mut HashMap<WorkflowId, Slot>, id: WorkflowId) -> &mut Slot {
    slots.entry(id).or_insert_with(|| Slot {
        live: Arc::new(LiveState::default()),
        snapshot: None,
        stop: None,
        task: None,
        rate: view::RateMeter::default(),
    })
}

#[cfg(test)]
mod tests;
