//! The writer stage: takes the oldest ready batch from the workflow's queue, writes it to the
//! destination(s), and commits removals, dead letters and deferrals in one transaction per
//! batch. A few batches are written at once, so that a slow straggler in one (a record whose
//! connector is retrying) does not hold the rest of the queue. Each batch is written by a task
//! of its own: its calls go on while this loop takes the next batch and commits the last one
//! (each a blocking store transaction), instead of waiting for the loop to poll them again.
//!
//! Progress is not failure: a record that failed transiently is deferred on its own (it stays
//! queued with a "not before" time from its own attempt count, honouring `Retry-After`) and the
//! rest of the queue flows past it, except later writes of its key, which wait behind it. The
//! whole queue pauses only when the destination asks for it (`Retry-After`, e.g. a 429, which
//! the connector's pacer also applies to every request) or when most of a batch failed
//! transiently (the destination looks down). A destination that is not ready for a record yet
//! ([`WriteOutcome::NotYet`]) defers it the same way, for a bounded wait, then dead-letters it
//! with the reason. A permanent failure is first checked for schema drift, which stops the
//! workflow instead of dead-lettering good data.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use conduit_connectors::{ConnectorError, Learnt, WriteOutcome};
use conduit_model::{System, Target, WorkflowId, WriteRecord};
use conduit_store::{
    Deferral, InFlight, Located, LocationChange, LocationKey, QueuedRecord, ReadyBatch, Store,
    WriteCommit, now_ms,
};

use super::drift::DriftGuard;
use super::services::Services;
use super::stage::{StageContext, StageError, StageRun};
use conduit_base::retry::Backoff;

/// Batches written at the same time (each at most `batch_size` records, disjoint keys). A
/// batch lasts as long as its slowest record, and a record the connector retries waits out
/// its backoff (a few hundred milliseconds): with three in flight, 2% of failing calls halved
/// the drain rate; with eight the other batches keep the connector's concurrency busy
/// meanwhile (BENCHMARKS.md, "Drain under faults").
const IN_FLIGHT_BATCHES: usize = 8;
/// The longest the writer sleeps with nothing to do before looking at the queue again.
const IDLE: Duration = Duration::from_millis(500);

/// The writer of one workflow.
pub(super) struct Writer {
    pub(super) workflow: WorkflowId,
    pub(super) store: Store,
    pub(super) services: Services,
    pub(super) batch_size: usize,
    pub(super) drift: Arc<DriftGuard>,
    /// How long an update-only write waits for its record to be created.
    pub(super) missing_record_wait: Duration,
}

/// How soon an update-only write whose record is missing is tried again (its own backoff
/// grows from here): the workflow that creates the record is usually seconds behind.
const MISSING_RECORD_RETRY: Duration = Duration::from_secs(2);

/// The delays of the writer: one record's next try, and a pause of the whole queue.
#[derive(Debug, Clone)]
pub(super) struct RetryTiming {
    /// The delay of a deferred record, by its attempt count.
    pub(super) record: Backoff,
    /// The pause of the whole queue when the destination looks down.
    pub(super) queue: Backoff,
}

impl Default for RetryTiming {
    fn default() -> RetryTiming {
        RetryTiming {
            record: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
            queue: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
        }
    }
}

/// A batch taken from the queue, with what is known of where its records live at their
/// destinations (from earlier writes; `None` where nothing is, or the sink keeps no addresses).
struct Batch {
    records: Vec<QueuedRecord>,
    /// Each record's key in the store's address table, when its sink keeps addresses.
    location_keys: Vec<Option<LocationKey>>,
    /// Each record's known address.
    known: Vec<Option<String>>,
}

/// The address scope of each destination's sink (see `RecordSink::location_scope`).
#[derive(Debug, Clone, Default)]
struct Scopes {
    campaign: Option<String>,
    dynamics: Option<String>,
}

impl Scopes {
    fn of(services: &Services) -> Scopes {
        Scopes {
            campaign: services.sink(System::Campaign).location_scope(),
            dynamics: services.sink(System::Dynamics).location_scope(),
        }
    }

    fn get(&self, system: System) -> Option<&str> {
        match system {
            System::Campaign => self.campaign.as_deref(),
            System::Dynamics => self.dynamics.as_deref(),
        }
    }
}

/// What one written batch decided, besides the commit itself.
#[derive(Debug, Default)]
struct Step {
    commit: WriteCommit,
    /// The longest `Retry-After` a destination asked for.
    retry_after: Option<Duration>,
    /// Credentials were refused.
    auth_failure: Option<String>,
    /// Records that failed transiently (not counting "not yet" deferrals).
    transient: usize,
    /// Records in the batch.
    total: usize,
    /// Records deferred because their record does not exist yet, with the reason.
    waiting: Vec<(u64, String)>,
}

impl Writer {
    /// Writes until stopped; returns an error for the supervisor when the stage cannot go on.
    pub(super) async fn write_until_stopped(
        &mut self,
        ctx: &StageContext,
    ) -> Result<(), StageError> {
        self.write_with(ctx, RetryTiming::default()).await
    }

    /// [`Writer::write_until_stopped`] with chosen delays. On Stop, batches being written are
    /// finished and committed; no new one starts.
    pub(super) async fn write_with(
        &self,
        ctx: &StageContext,
        mut timing: RetryTiming,
    ) -> Result<(), StageError> {
        let mut in_flight = Arc::new(InFlight::default());
        let mut writing = JoinSet::new();
        let scopes = Arc::new(Scopes::of(&self.services));
        // Records deferred because their record does not exist yet, with the latest reason.
        let mut waiting: HashMap<u64, String> = HashMap::new();
        let mut paused_until: Option<Instant> = None;
        loop {
            let stopping = ctx.stop_requested();
            if stopping && writing.is_empty() {
                return Ok(());
            }
            let pause_left =
                paused_until.and_then(|until| until.checked_duration_since(Instant::now()));
            let mut next_due = None;
            if !stopping && pause_left.is_none() && writing.len() < IN_FLIGHT_BATCHES {
                let (ready, next) = self.ready(&in_flight, &scopes).await?;
                if !ready.records.is_empty() {
                    if let Some(reason) = self.drift.admit(&self.services, &ready.records).await {
                        // Nothing of this batch is written or dead-lettered: it stays queued.
                        return Err(StageError::Drift(reason));
                    }
                    Arc::make_mut(&mut in_flight).add(&ready.records);
                    writing.spawn(write_batch(self.services.clone(), ready));
                    continue;
                }
                next_due = next;
            }
            // A batch's task ends only by returning or by panicking (the set is aborted only
            // when this loop is dropped); a panic ends the stage, and its records stay queued.
            let Some((batch, outcomes)) = writing.join_next().await.transpose()? else {
                // Nothing being written: wait for new records, the next deferred one to fall
                // due, the end of a pause, or Stop.
                match pause_left {
                    Some(left) => ctx.sleep(left).await,
                    None => ctx.idle(until_due(next_due).min(IDLE)).await,
                }
                continue;
            };
            // No batch is fetched before this one is committed, so its records may leave the
            // in-flight set now.
            Arc::make_mut(&mut in_flight).remove(&batch.records);
            for queued in &batch.records {
                waiting.remove(&queued.seq);
            }
            let step = self.decide(batch, outcomes, &timing.record).await?;
            waiting.extend(step.waiting.iter().cloned());
            ctx.live.set_waiting(waiting_note(&waiting));
            self.commit(step.commit).await?;
            ctx.notify_progress();
            if let Some(message) = step.auth_failure {
                return Err(StageError::Auth(message));
            }
            let mostly_failed = step.transient * 2 > step.total;
            if let Some(asked) = step.retry_after {
                // The destination asked the whole connection to wait (a 429): so does the queue.
                let until = Instant::now() + asked;
                paused_until = Some(paused_until.map_or(until, |current| current.max(until)));
                ctx.live.set_warning(Some(format!(
                    "the destination asked to wait, retrying in {:.1}s",
                    asked.as_secs_f64()
                )));
            } else if mostly_failed {
                let delay = timing.queue.next_delay(None);
                paused_until = Some(Instant::now() + delay);
                ctx.live.set_warning(Some(format!(
                    "destination unavailable, retrying in {:.1}s",
                    delay.as_secs_f64()
                )));
            } else {
                timing.queue.reset();
                if paused_until.is_none_or(|until| until <= Instant::now()) {
                    ctx.live.set_warning(None);
                }
            }
        }
    }

    /// The next ready batch, passing by deferred records and those being written, with the
    /// known addresses of its records; and the earliest "not before" of the deferred ones.
    async fn ready(
        &self,
        in_flight: &Arc<InFlight>,
        scopes: &Arc<Scopes>,
    ) -> Result<(Batch, Option<i64>), StageError> {
        let store = self.store.clone();
        let (workflow, size) = (self.workflow, self.batch_size);
        let in_flight = Arc::clone(in_flight);
        let scopes = Arc::clone(scopes);
        let ready = tokio::task::spawn_blocking(move || {
            let (
                ReadyBatch {
                    records,
                    next_due_ms,
                },
                Located { keys, known },
            ) = store.ready_batch_located(workflow, size, now_ms(), &in_flight, |record| {
                let scope = scopes.get(record.target.system)?;
                Some(LocationKey::new(scope, record))
            })?;
            let batch = Batch {
                records,
                location_keys: keys,
                known,
            };
            Ok::<_, conduit_store::StoreError>((batch, next_due_ms))
        })
        .await
        .map_err(StageError::Task)??;
        Ok(ready)
    }

    async fn commit(&self, commit: WriteCommit) -> Result<(), StageError> {
        let store = self.store.clone();
        let workflow = self.workflow;
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || store.commit_write(workflow, commit))
            .await
            .map_err(StageError::Task)??;
        conduit_base::telemetry::record_commit(workflow.as_str(), "write", started.elapsed());
        Ok(())
    }

    /// Decides each record's fate from its outcome: written, deferred or refused. Schema drift
    /// commits what was decided so far, keeps the rest queued, and stops the stage.
    async fn decide(
        &self,
        batch: Batch,
        outcomes: Vec<(WriteOutcome, Learnt)>,
        record_retry: &Backoff,
    ) -> Result<Step, StageError> {
        let now = now_ms();
        let mut step = Step {
            total: batch.records.len(),
            ..Step::default()
        };
        // What the writes taught of their records' addresses is kept, whatever the outcome.
        for ((key, known), (_, learnt)) in batch
            .location_keys
            .into_iter()
            .zip(batch.known)
            .zip(&outcomes)
        {
            let Some(key) = key else { continue };
            match learnt {
                Learnt::At(address) if known.as_ref() != Some(address) => {
                    step.commit
                        .locations
                        .push((key, LocationChange::Set(address.clone())));
                }
                Learnt::Gone if known.is_some() => {
                    step.commit.locations.push((key, LocationChange::Forget));
                }
                _ => {}
            }
        }
        let outcomes = outcomes.into_iter().map(|(outcome, _)| outcome);
        // Per table and set of fields written: one metadata read per kind of failing record.
        let mut drift_checked: HashMap<(System, String, Vec<String>), Option<String>> =
            HashMap::new();
        for (queued, outcome) in batch.records.into_iter().zip(outcomes) {
            match outcome {
                WriteOutcome::Written => step.commit.written.push(queued.seq),
                WriteOutcome::NotYet {
                    reason,
                    retry_after,
                    give_up_after,
                } => {
                    let wait = Wait {
                        reason,
                        retry_after: Some(retry_after),
                        give_up_after: Some(give_up_after),
                    };
                    wait.apply(queued, record_retry, now, &mut step.commit);
                }
                WriteOutcome::Failed(ConnectorError::Transient {
                    message,
                    retry_after,
                }) => {
                    step.retry_after = step.retry_after.max(retry_after);
                    step.transient += 1;
                    let wait = Wait {
                        reason: message,
                        retry_after,
                        give_up_after: None,
                    };
                    wait.apply(queued, record_retry, now, &mut step.commit);
                }
                WriteOutcome::Failed(ConnectorError::Missing { message }) => {
                    // Another workflow may not have created the record yet (Ingress creating
                    // the profile an opt-out is for): wait for it, a bounded time.
                    let reason = format!(
                        "waiting for the record to be created (is the contact synced by Ingress, or was it filtered out or deleted?): {message}"
                    );
                    let seq = queued.seq;
                    let wait = Wait {
                        reason: reason.clone(),
                        retry_after: Some(MISSING_RECORD_RETRY),
                        give_up_after: Some(self.missing_record_wait),
                    };
                    if wait.apply(queued, record_retry, now, &mut step.commit) {
                        step.waiting.push((seq, reason));
                    }
                }
                WriteOutcome::Failed(ConnectorError::Auth { message }) => {
                    // Retried as soon as the stage restarts with new credentials.
                    step.commit.deferred.push(Deferral {
                        seq: queued.seq,
                        not_before_ms: now,
                        reason: message.clone(),
                    });
                    step.auth_failure = Some(message);
                }
                WriteOutcome::Failed(error) => {
                    let target = &queued.record.target;
                    let fields = queued.record.fields.iter().map(|(name, _)| name.clone());
                    let key = (target.system, target.table.clone(), fields.collect());
                    let drift = match drift_checked.get(&key) {
                        Some(None) => None,
                        _ => {
                            let found = self
                                .drift
                                .check_record(&self.services, &queued.record)
                                .await;
                            drift_checked.insert(key, found.clone());
                            found
                        }
                    };
                    if let Some(reason) = drift {
                        self.commit(step.commit).await?;
                        return Err(StageError::Drift(reason));
                    }
                    step.commit.refused.push((queued, error.to_string()));
                }
            }
        }
        Ok(step)
    }
}

/// The status line for writes waiting for their record: how many, and one reason.
fn waiting_note(waiting: &HashMap<u64, String>) -> Option<String> {
    let (_, reason) = waiting.iter().min_by_key(|(seq, _)| **seq)?;
    Some(format!(
        "{} write(s) wait for their record to be created; the oldest: {reason}",
        waiting.len()
    ))
}

/// A record not written now: why, the earliest retry the destination asked for, and how long
/// it may wait in all (counted from its first deferral) before it is dead-lettered.
struct Wait {
    reason: String,
    retry_after: Option<Duration>,
    give_up_after: Option<Duration>,
}

impl Wait {
    /// Defers the record by its own backoff (at least `retry_after`), or refuses it with the
    /// reason once it has waited `give_up_after`.
    /// True when the record was deferred, false when it was refused.
    fn apply(
        self,
        queued: QueuedRecord,
        backoff: &Backoff,
        now: i64,
        commit: &mut WriteCommit,
    ) -> bool {
        if let Some(limit) = self.give_up_after
            && queued.deferred_since_ms.is_some()
            && queued.deferred_for(now) >= limit
        {
            let reason = format!(
                "gave up after waiting {}s: {}",
                queued.deferred_for(now).as_secs(),
                self.reason
            );
            commit.refused.push((queued, reason));
            return false;
        }
        let delay = backoff.delay_after(queued.attempts, self.retry_after);
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        commit.deferred.push(Deferral {
            seq: queued.seq,
            not_before_ms: now.saturating_add(delay_ms),
            reason: self.reason,
        });
        true
    }
}

/// How long until `due_ms` (zero when due or unknown).
fn until_due(due_ms: Option<i64>) -> Duration {
    due_ms.map_or(IDLE, |due| {
        Duration::from_millis(u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0))
    })
}

/// Takes `record` out of its place for a while, leaving an empty record of the same system
/// and operation (nothing allocated) until it is put back.
fn lend(record: &mut WriteRecord) -> WriteRecord {
    let placeholder = WriteRecord {
        target: Target {
            system: record.target.system,
            table: String::new(),
            key_field: String::new(),
        },
        key: String::new(),
        op: record.op,
        fields: Vec::new(),
    };
    std::mem::replace(record, placeholder)
}

/// Writes a batch, each system's records through its sink (with their known addresses), and
/// returns it with its outcomes in batch order.
async fn write_batch(services: Services, mut batch: Batch) -> (Batch, Vec<(WriteOutcome, Learnt)>) {
    let mut outcomes: Vec<Option<(WriteOutcome, Learnt)>> = vec![None; batch.records.len()];
    for system in [System::Campaign, System::Dynamics] {
        let positions: Vec<usize> = (0..batch.records.len())
            .filter(|&i| batch.records[i].record.target.system == system)
            .collect();
        if positions.is_empty() {
            continue;
        }
        // The records and their addresses are lent to the sink and put back after, not
        // copied (a copy of every field of every record was ~5% of the host's work).
        let to_write: Vec<WriteRecord> = positions
            .iter()
            .map(|&i| lend(&mut batch.records[i].record))
            .collect();
        let known: Vec<Option<String>> = positions.iter().map(|&i| batch.known[i].take()).collect();
        let results = services.sink(system).write_located(&to_write, &known).await;
        for ((record, address), &position) in to_write.into_iter().zip(known).zip(&positions) {
            batch.records[position].record = record;
            batch.known[position] = address;
        }
        let mut results = results.into_iter();
        for position in &positions {
            outcomes[*position] = Some(results.next().unwrap_or_else(|| {
                let error = ConnectorError::Transient {
                    message: "the connector returned fewer results than records".into(),
                    retry_after: None,
                };
                (WriteOutcome::Failed(error), Learnt::Nothing)
            }));
        }
    }
    let outcomes = outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|| {
                let error = ConnectorError::Transient {
                    message: "not written".into(),
                    retry_after: None,
                };
                (WriteOutcome::Failed(error), Learnt::Nothing)
            })
        })
        .collect();
    (batch, outcomes)
}

impl StageRun for Writer {
    fn run(
        &mut self,
        ctx: &StageContext,
    ) -> impl std::future::Future<Output = Result<(), StageError>> + Send {
        self.write_until_stopped(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_model::{Operation, Target, WriteRecord};

    fn queued(deferred_since_ms: Option<i64>, attempts: u32) -> QueuedRecord {
        let record = WriteRecord {
            target: Target {
                system: System::Campaign,
                table: "profile".into(),
                key_field: "externalId".into(),
            },
            key: "c1".into(),
            op: Operation::Update,
            fields: vec![],
        };
        let mut queued = QueuedRecord::new(7, record, "opt-out".into(), 0);
        queued.deferred_since_ms = deferred_since_ms;
        queued.attempts = attempts;
        queued
    }

    fn not_yet(give_up_after: Duration) -> Wait {
        Wait {
            reason: "no profile c1 yet".into(),
            retry_after: Some(Duration::from_secs(5)),
            give_up_after: Some(give_up_after),
        }
    }

    #[test]
    fn a_record_not_ready_yet_is_deferred_at_least_as_long_as_asked() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let now = 1_000_000;
        let mut commit = WriteCommit::default();
        not_yet(Duration::from_secs(60)).apply(queued(None, 0), &backoff, now, &mut commit);
        assert!(commit.refused.is_empty());
        assert_eq!(
            commit.deferred,
            [Deferral {
                seq: 7,
                not_before_ms: now + 5_000,
                reason: "no profile c1 yet".into()
            }]
        );
    }

    #[test]
    fn a_record_not_ready_after_its_bounded_wait_is_dead_lettered_with_the_reason() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let now = 1_000_000;
        let mut commit = WriteCommit::default();
        let waited = queued(Some(now - 61_000), 4);
        not_yet(Duration::from_secs(60)).apply(waited, &backoff, now, &mut commit);
        assert!(commit.deferred.is_empty());
        assert_eq!(commit.refused.len(), 1);
        assert_eq!(
            commit.refused[0].1,
            "gave up after waiting 61s: no profile c1 yet"
        );
        // Within the bound it waits on, by its own backoff.
        let mut commit = WriteCommit::default();
        let waiting = queued(Some(now - 30_000), 4);
        not_yet(Duration::from_secs(60)).apply(waiting, &backoff, now, &mut commit);
        assert_eq!(commit.deferred.len(), 1);
        assert!(commit.deferred[0].not_before_ms >= now + 5_000);
    }

    #[test]
    fn a_transient_failure_waits_by_its_attempt_count_and_never_gives_up() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let now = 1_000_000;
        let mut commit = WriteCommit::default();
        let wait = Wait {
            reason: "503".into(),
            retry_after: None,
            give_up_after: None,
        };
        wait.apply(queued(Some(0), 40), &backoff, now, &mut commit);
        let due = commit.deferred[0].not_before_ms - now;
        assert!((500..=1000).contains(&due), "{due}");
    }
}
