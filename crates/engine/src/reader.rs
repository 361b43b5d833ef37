//! The reader stages: fetch a page after the stored cursor, run the plugin on it, and commit
//! outputs, dead letters and the new cursor in one transaction. A crash before the commit
//! re-reads the page; after it, nothing is read twice. When the plugin fails on a batch, the
//! batch is mapped again record by record so that only the poison records are dead-lettered.

use std::time::Duration;

use conduit_connectors::{ChangeRequest, ConnectorError};
use conduit_model::{
    ContactOptOut, EmailEvent, Operation, OptOutValue, Outcome, Phase, RecordBatch, System, Value,
    WorkflowId,
};
use conduit_store::{
    CursorState, DeadLetterPayload, LedgerPolicy, NewDeadLetter, OptOutSnapshot, ReadCommit, Stage,
    Store,
};

use super::services::{EventMapping, MappingFailed, OptOutResolution, RecordMapping, Services};
use super::stage::{StageContext, StageError, StageRun};
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

/// One Ingress table mapping being read.
pub(super) struct MappingReader {
    pub(super) name: String,
    pub(super) request: ChangeRequest,
    pub(super) mapper: Option<Box<dyn RecordMapping>>,
}

/// What a reader reads and how it maps it.
pub(super) enum ReaderKind {
    /// Dynamics 365 tables, each through its table mapping.
    Ingress(Vec<MappingReader>),
    /// Campaign's email event journal.
    Egress(Option<Box<dyn EventMapping>>),
    /// Both sides' opt-out changes.
    OptInOut {
        resolver: Option<Box<dyn OptOutResolution>>,
        contacts: Option<ChangeRequest>,
        read_exports: bool,
        /// The paired Campaign attributes, read from every profile at the first start.
        campaign_attributes: Vec<String>,
    },
}

/// The reader of one workflow.
pub(super) struct Reader {
    pub(super) workflow: WorkflowId,
    pub(super) store: Store,
    pub(super) services: Services,
    pub(super) pacing: ReaderPacing,
    pub(super) kind: ReaderKind,
    pub(super) failing_batches: u32,
}

/// The source name of the email events cursor.
pub(super) const EVENTS_SOURCE: &str = "events";
/// The source name of the opt-out contacts cursor.
pub(super) const OPT_OUT_CONTACTS_SOURCE: &str = "contacts";
/// The source name of the opt-out exports cursor.
pub(super) const OPT_OUT_EXPORTS_SOURCE: &str = "exports";
/// The source name of the first start's pass over Campaign's profiles.
pub(super) const OPT_OUT_PROFILES_SOURCE: &str = "profiles";
/// The Campaign field holding a profile's CRM ID.
const PROFILE_KEY_FIELD: &str = "externalId";
const OPT_OUT_ORIGIN: &str = "opt-out";

impl Reader {
    /// Reads until stopped; returns an error for the supervisor when the stage cannot go on.
    pub(super) async fn read_until_stopped(
        &mut self,
        ctx: &StageContext,
    ) -> Result<(), StageError> {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        while !ctx.stop_requested() {
            if self.store.backlog(self.workflow)? >= self.pacing.max_backlog {
                ctx.live.set_warning(Some(format!(
                    "reading paused: the backlog reached {}",
                    self.pacing.max_backlog
                )));
                ctx.sleep(Duration::from_secs(1)).await;
                continue;
            }
            let step = match &mut self.kind {
                ReaderKind::Ingress(_) => self.step_ingress(ctx).await,
                ReaderKind::Egress(_) => self.step_egress(ctx).await,
                ReaderKind::OptInOut { .. } => self.step_opt_out(ctx).await,
            };
            match step {
                Ok(true) => {
                    backoff.reset();
                    ctx.live.set_warning(None);
                }
                Ok(false) => ctx.sleep(self.pacing.poll_interval).await,
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

    /// One page of each table mapping; true when any mapping had work.
    async fn step_ingress(&mut self, ctx: &StageContext) -> Result<bool, StepError> {
        let mut mappings = match std::mem::replace(&mut self.kind, ReaderKind::Ingress(Vec::new()))
        {
            ReaderKind::Ingress(mappings) => mappings,
            other => {
                self.kind = other;
                return Ok(false);
            }
        };
        let result = self.step_mappings(ctx, &mut mappings).await;
        self.kind = ReaderKind::Ingress(mappings);
        result
    }

    async fn step_mappings(
        &mut self,
        ctx: &StageContext,
        mappings: &mut [MappingReader],
    ) -> Result<bool, StepError> {
        let mut worked = false;
        for mapping in mappings.iter_mut() {
            if ctx.stop_requested() {
                break;
            }
            if self.reread_step(ctx, mapping).await? {
                worked = true;
                continue;
            }
            let stored = self.store.cursor(self.workflow, &mapping.name)?;
            let phase = stored.as_ref().map_or(Phase::Initial, |c| c.phase);
            let cursor = stored.and_then(|c| c.cursor);
            let page = match self
                .services
                .dynamics_source
                .read_changes(&mapping.request, cursor.as_deref())
                .await
            {
                Ok(page) => page,
                Err(ConnectorError::CursorExpired { message }) => {
                    tracing::warn!(mapping = %mapping.name, %message, "change tracking token expired; starting a full resync");
                    self.store.set_cursor(
                        self.workflow,
                        &mapping.name,
                        &CursorState::new(None, Phase::Initial),
                    )?;
                    worked = true;
                    continue;
                }
                Err(error) => return Err(StepError::from_source(&mapping.name, error)),
            };
            let rows = page.batch.rows.len();
            let next_phase = if page.caught_up {
                Phase::Incremental
            } else {
                phase
            };
            let mut commit = ReadCommit {
                source: mapping.name.clone(),
                cursor: Some(CursorState::new(Some(page.cursor), next_phase)),
                read: rows as u64,
                ledger: ledger_policy(phase),
                phase: Some(phase),
                ..ReadCommit::default()
            };
            let all_failed = self
                .map_into(mapping, phase, page.batch, &mut commit)
                .await?;
            self.commit(ctx, commit, all_failed).await?;
            worked |= rows > 0 || !page.caught_up;
        }
        Ok(worked)
    }

    /// Reads again, and maps with the mapping as configured now, a page of the records whose
    /// queued writes were mapped under an older mapping; false when none wait.
    async fn reread_step(
        &mut self,
        ctx: &StageContext,
        mapping: &mut MappingReader,
    ) -> Result<bool, StepError> {
        let waiting = self
            .store
            .rereads(&mapping.name, mapping.request.page_size.max(1) as usize)?;
        if waiting.is_empty() {
            return Ok(false);
        }
        // One phase per commit: a replay-phase key writes apply-updates-off fields too.
        let phase = waiting[0].1;
        let keys: Vec<String> = waiting
            .into_iter()
            .filter(|(_, p)| *p == phase)
            .map(|(key, _)| key)
            .collect();
        let batch = self
            .services
            .dynamics_source
            .read_rows(&mapping.request, &keys)
            .await
            .map_err(|error| StepError::from_source(&mapping.name, error))?;
        let mut commit = ReadCommit {
            source: mapping.name.clone(),
            read: batch.rows.len() as u64,
            ledger: ledger_policy(phase),
            phase: Some(phase),
            rereads_done: keys
                .iter()
                .map(|key| (mapping.name.clone(), key.clone()))
                .collect(),
            ..ReadCommit::default()
        };
        let all_failed = self.map_into(mapping, phase, batch, &mut commit).await?;
        self.commit(ctx, commit, all_failed).await?;
        Ok(true)
    }

    /// Maps rows with a table mapping's plugin (on a blocking thread) into `commit`: queued
    /// writes, skips and dead letters. True when the plugin failed on every row.
    async fn map_into(
        &mut self,
        mapping: &mut MappingReader,
        phase: Phase,
        batch: RecordBatch,
        commit: &mut ReadCommit,
    ) -> Result<bool, StepError> {
        let (batch, results) = on_plugin_thread(
            &mut mapping.mapper,
            "mapper",
            self.workflow,
            batch,
            move |mapper, batch| map_rows(mapper.as_mut(), phase, batch),
        )
        .await?;
        Ok(collect(commit, &mapping.name, results, |index| {
            DeadLetterPayload::SourceRecord {
                batch: RecordBatch {
                    table: batch.table.clone(),
                    columns: batch.columns.clone(),
                    rows: vec![batch.rows[index].clone()],
                },
                phase,
            }
        }))
    }

    async fn step_egress(&mut self, ctx: &StageContext) -> Result<bool, StepError> {
        let cursor = self
            .store
            .cursor(self.workflow, EVENTS_SOURCE)?
            .and_then(|c| c.cursor);
        let page = self
            .services
            .events
            .read_events(cursor.as_deref(), self.pacing.page_size)
            .await
            .map_err(|error| StepError::from_source(EVENTS_SOURCE, error))?;
        if page.events.is_empty() {
            return Ok(false);
        }
        let ReaderKind::Egress(slot) = &mut self.kind else {
            return Ok(false);
        };
        let (events, results) = on_plugin_thread(
            slot,
            "mapper",
            self.workflow,
            page.events,
            |mapper, events| isolate(events, |items| mapper.map(items)),
        )
        .await?;
        let mut commit = ReadCommit {
            source: EVENTS_SOURCE.into(),
            cursor: page
                .cursor
                .map(|c| CursorState::new(Some(c), Phase::Incremental)),
            read: events.len() as u64,
            ..ReadCommit::default()
        };
        let all_failed = collect(&mut commit, EVENTS_SOURCE, results, |index| {
            DeadLetterPayload::Event {
                event: events[index].clone(),
            }
        });
        self.commit(ctx, commit, all_failed).await?;
        Ok(true)
    }

    async fn step_opt_out(&mut self, ctx: &StageContext) -> Result<bool, StepError> {
        let ReaderKind::OptInOut {
            contacts,
            read_exports,
            campaign_attributes,
            ..
        } = &self.kind
        else {
            return Ok(false);
        };
        let (contacts, read_exports) = (contacts.clone(), *read_exports);
        let attributes = campaign_attributes.clone();
        // The first start learns what Campaign holds now before it reads any change, so that
        // its first pass over the contacts reconciles both sides and writes only where they
        // disagree.
        if contacts.is_some() && !self.profiles_known()? {
            return self.step_opt_out_profiles(ctx, &attributes).await;
        }
        let mut worked = false;
        if let Some(request) = contacts {
            worked |= self.step_opt_out_contacts(ctx, &request).await?;
        }
        if read_exports {
            worked |= self.step_opt_out_exports(ctx).await?;
        }
        Ok(worked)
    }

    /// True once Campaign's profiles were read, or when they need not be: no source of them,
    /// or a store whose contacts were read before this pass existed.
    fn profiles_known(&self) -> Result<bool, StepError> {
        if self.services.profile_opt_outs.is_none() {
            return Ok(true);
        }
        if let Some(done) = self.store.cursor(self.workflow, OPT_OUT_PROFILES_SOURCE)? {
            return Ok(done.phase == Phase::Incremental);
        }
        let contacts = self.store.cursor(self.workflow, OPT_OUT_CONTACTS_SOURCE)?;
        Ok(contacts.is_some_and(|c| c.phase == Phase::Incremental))
    }

    /// One page of Campaign's profiles: their paired attributes become the known Campaign
    /// values (with no change time, so the conflict rule lets an opt-out win).
    async fn step_opt_out_profiles(
        &mut self,
        ctx: &StageContext,
        attributes: &[String],
    ) -> Result<bool, StepError> {
        let Some(source) = self.services.profile_opt_outs.clone() else {
            return Ok(false);
        };
        let cursor = self
            .store
            .cursor(self.workflow, OPT_OUT_PROFILES_SOURCE)?
            .and_then(|c| c.cursor);
        let page = source
            .read_profile_opt_outs(
                PROFILE_KEY_FIELD,
                attributes,
                cursor.as_deref(),
                self.pacing.page_size,
            )
            .await
            .map_err(|error| StepError::from_source("Campaign profiles", error))?;
        let mut states = Vec::with_capacity(page.profiles.len());
        for profile in page.profiles {
            let mut snapshot = self
                .store
                .opt_out_snapshot(&profile.contact_key)?
                .unwrap_or_default();
            for (attribute, value) in profile.values {
                snapshot
                    .campaign
                    .retain(|known| known.attribute != attribute);
                snapshot.campaign.push(OptOutValue {
                    attribute,
                    value,
                    changed_at: None,
                });
            }
            states.push((profile.contact_key, snapshot));
        }
        let cursor = match page.next {
            Some(next) => CursorState::new(Some(next), Phase::Initial),
            None => CursorState::new(None, Phase::Incremental),
        };
        let commit = ReadCommit {
            source: OPT_OUT_PROFILES_SOURCE.into(),
            cursor: Some(cursor),
            opt_out_states: states,
            ..ReadCommit::default()
        };
        self.commit(ctx, commit, false).await?;
        Ok(true)
    }

    /// Dynamics 365 side: every contact of the first pass is reconciled with what Campaign
    /// holds; later, a contact whose paired values did not change is not resolved again.
    async fn step_opt_out_contacts(
        &mut self,
        ctx: &StageContext,
        request: &ChangeRequest,
    ) -> Result<bool, StepError> {
        let stored = self.store.cursor(self.workflow, OPT_OUT_CONTACTS_SOURCE)?;
        let phase = stored.as_ref().map_or(Phase::Initial, |c| c.phase);
        let cursor = stored.and_then(|c| c.cursor);
        let page = match self
            .services
            .dynamics_source
            .read_changes(request, cursor.as_deref())
            .await
        {
            Ok(page) => page,
            Err(ConnectorError::CursorExpired { .. }) => {
                self.store.set_cursor(
                    self.workflow,
                    OPT_OUT_CONTACTS_SOURCE,
                    &CursorState::new(None, Phase::Initial),
                )?;
                return Ok(true);
            }
            Err(error) => return Err(StepError::from_source(OPT_OUT_CONTACTS_SOURCE, error)),
        };
        let batch = page.batch;
        let modified_column = batch.columns.iter().position(|c| c == "modifiedon");
        let mut contacts = Vec::new();
        // States of the contacts to resolve (in `contacts` order), and of the others.
        let mut states = Vec::new();
        let mut other_states = Vec::new();
        let mut unchanged_contacts = 0u64;
        for row in &batch.rows {
            if row.op == Operation::Delete {
                continue;
            }
            let changed_at = row.modified_at.clone().or_else(|| {
                modified_column.and_then(|i| match &row.values[i] {
                    Value::Datetime(at) => Some(at.clone()),
                    _ => None,
                })
            });
            let dynamics: Vec<OptOutValue> = batch
                .columns
                .iter()
                .zip(&row.values)
                .filter_map(|(column, value)| match value {
                    Value::Boolean(flag) => Some(OptOutValue {
                        attribute: column.clone(),
                        value: *flag,
                        changed_at: changed_at.clone(),
                    }),
                    _ => None,
                })
                .collect();
            let mut snapshot = self.store.opt_out_snapshot(&row.key)?.unwrap_or_default();
            let unchanged = phase == Phase::Incremental
                && !snapshot.dynamics.is_empty()
                && same_values(&snapshot.dynamics, &dynamics);
            snapshot.dynamics = dynamics.clone();
            if unchanged {
                // Another column of the contact changed: nothing new to resolve.
                unchanged_contacts += 1;
                other_states.push((row.key.clone(), snapshot));
            } else {
                contacts.push(ContactOptOut {
                    contact_key: row.key.clone(),
                    dynamics,
                    campaign: snapshot.campaign.clone(),
                });
                states.push((row.key.clone(), snapshot));
            }
        }
        let next_phase = if page.caught_up {
            Phase::Incremental
        } else {
            phase
        };
        let mut commit = ReadCommit {
            source: OPT_OUT_CONTACTS_SOURCE.into(),
            cursor: Some(CursorState::new(Some(page.cursor), next_phase)),
            read: batch.rows.len() as u64,
            skipped: unchanged_contacts,
            ..ReadCommit::default()
        };
        let rows = batch.rows.len();
        if contacts.is_empty() {
            commit.opt_out_states = other_states;
            self.commit(ctx, commit, false).await?;
        } else {
            // `resolve_into` lines the states up with the contacts it resolves.
            commit.opt_out_states = states;
            let all_failed = self.resolve_into(&mut commit, contacts).await?;
            commit.opt_out_states.extend(other_states);
            self.commit(ctx, commit, all_failed).await?;
        }
        Ok(rows > 0 || !page.caught_up)
    }

    /// Campaign side: each export file's changes update Campaign's known values and are
    /// resolved against Dynamics 365's.
    async fn step_opt_out_exports(&mut self, ctx: &StageContext) -> Result<bool, StepError> {
        let Some(exports) = self.services.opt_out_exports.clone() else {
            return Ok(false);
        };
        let cursor = self
            .store
            .cursor(self.workflow, OPT_OUT_EXPORTS_SOURCE)?
            .and_then(|c| c.cursor);
        let page = exports
            .read_next_export(cursor.as_deref())
            .await
            .map_err(|error| StepError::from_source(OPT_OUT_EXPORTS_SOURCE, error))?;
        let Some(next_cursor) = page.cursor else {
            return Ok(false);
        };
        let mut by_contact: Vec<(String, OptOutSnapshot)> = Vec::new();
        for change in &page.changes {
            let position = match by_contact
                .iter()
                .position(|(k, _)| *k == change.contact_key)
            {
                Some(position) => position,
                None => {
                    let snapshot = self
                        .store
                        .opt_out_snapshot(&change.contact_key)?
                        .unwrap_or_default();
                    by_contact.push((change.contact_key.clone(), snapshot));
                    by_contact.len() - 1
                }
            };
            let snapshot = &mut by_contact[position].1;
            snapshot
                .campaign
                .retain(|v| v.attribute != change.attribute);
            snapshot
                .sent_to_campaign
                .retain(|(attribute, _)| *attribute != change.attribute);
            snapshot.campaign.push(OptOutValue {
                attribute: change.attribute.clone(),
                value: change.value,
                changed_at: Some(change.changed_at.clone()),
            });
        }
        let contacts: Vec<ContactOptOut> = by_contact
            .iter()
            .map(|(key, snapshot)| ContactOptOut {
                contact_key: key.clone(),
                dynamics: snapshot.dynamics.clone(),
                campaign: snapshot.campaign.clone(),
            })
            .collect();
        let mut commit = ReadCommit {
            source: OPT_OUT_EXPORTS_SOURCE.into(),
            cursor: Some(CursorState::new(Some(next_cursor), Phase::Incremental)),
            read: page.changes.len() as u64,
            opt_out_states: by_contact,
            ..ReadCommit::default()
        };
        let all_failed = if contacts.is_empty() {
            false
        } else {
            self.resolve_into(&mut commit, contacts).await?
        };
        self.commit(ctx, commit, all_failed).await?;
        Ok(true)
    }

    async fn resolve_into(
        &mut self,
        commit: &mut ReadCommit,
        contacts: Vec<ContactOptOut>,
    ) -> Result<bool, StepError> {
        let ReaderKind::OptInOut { resolver, .. } = &mut self.kind else {
            return Ok(false);
        };
        let (contacts, results) = on_plugin_thread(
            resolver,
            "resolver",
            self.workflow,
            contacts,
            |plugin, contacts| isolate(contacts, |items| plugin.resolve(items)),
        )
        .await?;
        let mut results = results;
        skip_campaign_values_that_agree(&mut results, &mut commit.opt_out_states);
        Ok(collect(commit, OPT_OUT_ORIGIN, results, |index| {
            DeadLetterPayload::OptOut {
                contact: contacts[index].clone(),
            }
        }))
    }

    /// Commits a step and tracks batches on which the plugin failed for every record.
    async fn commit(
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
enum StepError {
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    Stage(StageError),
}

impl StepError {
    fn from_source(source: &str, error: ConnectorError) -> StepError {
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

/// How Ingress outputs are checked against what was sent before: a first read or a replay
/// writes every value ("values written, apply-updates ignored"); later changes that would
/// write nothing new are skipped.
pub(super) fn ledger_policy(phase: Phase) -> LedgerPolicy {
    match phase {
        Phase::Incremental => LedgerPolicy::SkipUnchanged,
        Phase::Initial | Phase::Replay => LedgerPolicy::Record,
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

/// Runs `work` with the plugin held in `slot` on a blocking thread (plugin calls block, and
/// must never stall an async worker), puts the plugin back and records the time it took.
/// The plugin is taken out of the slot for the call: if `work` panics the slot stays empty,
/// and the next step ends the stage run with [`StageError::PluginLost`] so the supervisor's
/// restart prepares a fresh plugin. `what` names the plugin in that error.
async fn on_plugin_thread<P, I, R>(
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
    let (plugin, input, result) = tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        let result = work(&mut plugin, &input);
        (plugin, input, result)
    })
    .await
    .map_err(|error| StepError::Stage(StageError::Task(error)))?;
    *slot = Some(plugin);
    conduit_base::telemetry::record_plugin_time(workflow.as_str(), started.elapsed());
    Ok((input, result))
}

/// Maps a page of rows, falling back to one row at a time when the batch fails. An empty page
/// (every poll of a caught-up source) does not call the plugin.
fn map_rows(
    mapper: &mut dyn RecordMapping,
    phase: Phase,
    batch: &RecordBatch,
) -> Vec<Result<Outcome, String>> {
    map_rows_isolated(mapper, phase, batch).results
}

/// [`map_rows`] saying why the whole page failed, for `conduit plugin test`.
pub fn map_rows_isolated(
    mapper: &mut dyn RecordMapping,
    phase: Phase,
    batch: &RecordBatch,
) -> Isolated {
    if batch.rows.is_empty() {
        return Isolated {
            batch_failure: None,
            results: Vec::new(),
        };
    }
    let batch_failure = match batch_call(batch.rows.len(), mapper.map(phase, batch)) {
        Ok(results) => {
            return Isolated {
                batch_failure: None,
                results,
            };
        }
        Err(failure) => failure,
    };
    let results = batch
        .rows
        .iter()
        .map(|row| {
            let single = RecordBatch {
                table: batch.table.clone(),
                columns: batch.columns.clone(),
                rows: vec![row.clone()],
            };
            single_outcome(mapper.map(phase, &single))
        })
        .collect();
    Isolated {
        batch_failure: Some(batch_failure),
        results,
    }
}

/// Calls a plugin on a batch, falling back to one item at a time when the batch fails. An
/// empty batch does not call the plugin.
fn isolate<T>(
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

fn single_outcome(result: Result<Vec<Outcome>, MappingFailed>) -> Result<Outcome, String> {
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
fn collect(
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

/// True when two sides' readings hold the same values, whatever their change times.
fn same_values(before: &[OptOutValue], now: &[OptOutValue]) -> bool {
    before.len() == now.len()
        && now.iter().all(|value| {
            before
                .iter()
                .any(|old| old.attribute == value.attribute && old.value == value.value)
        })
}

/// Drops Campaign opt-out values that Campaign is known to hold already, and remembers what
/// is queued now, so that nothing is written where both sides agree (every write costs API
/// quota). What Campaign holds is, newest first: the value this workflow last queued, until
/// Campaign reports the attribute again; the value Campaign last reported (an export, or the
/// first start's read of every profile). A profile Campaign never reported holds no opt-out
/// (every opt-out attribute is false until someone sets it, and that reaches us through the
/// exports), so writing `false` to it is skipped too. `states` lines up with `results`, one
/// per contact.
fn skip_campaign_values_that_agree(
    results: &mut [Result<Outcome, String>],
    states: &mut [(String, OptOutSnapshot)],
) {
    for (result, (_, snapshot)) in results.iter_mut().zip(states.iter_mut()) {
        let Ok(Outcome::Write { records }) = result else {
            continue;
        };
        for record in records.iter_mut() {
            if record.target.system != System::Campaign || record.op == Operation::Delete {
                continue;
            }
            record.fields.retain(|(attribute, value)| {
                let Value::Boolean(flag) = value else {
                    return true;
                };
                let known = snapshot
                    .sent_to_campaign
                    .iter()
                    .find(|(sent, _)| sent == attribute)
                    .map(|(_, sent)| *sent)
                    .or_else(|| {
                        snapshot
                            .campaign
                            .iter()
                            .find(|reported| reported.attribute == *attribute)
                            .map(|reported| reported.value)
                    })
                    .unwrap_or(false);
                let agrees = known == *flag;
                if !agrees {
                    snapshot
                        .sent_to_campaign
                        .retain(|(sent, _)| sent != attribute);
                    snapshot.sent_to_campaign.push((attribute.clone(), *flag));
                }
                !agrees
            });
        }
        records.retain(|record| !record.fields.is_empty());
        if records.is_empty() {
            *result = Ok(Outcome::Skip {
                reason: "Campaign already holds these opt-out values".into(),
            });
        }
    }
}

/// Exposed for the supervisor's dead-letter retry: maps one source record again.
pub(super) fn remap_one(
    mapper: &mut dyn RecordMapping,
    batch: &RecordBatch,
    phase: Phase,
) -> Result<Outcome, String> {
    single_outcome(mapper.map(phase, batch))
}

/// Exposed for the dead-letter retry of events.
pub(super) fn remap_event(
    mapper: &mut dyn EventMapping,
    event: &EmailEvent,
) -> Result<Outcome, String> {
    single_outcome(mapper.map(std::slice::from_ref(event)))
}

impl StageRun for Reader {
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
    use conduit_model::{Target, WriteRecord};

    fn campaign_flag(contact: &str, flag: bool) -> Result<Outcome, String> {
        Ok(Outcome::Write {
            records: vec![WriteRecord {
                target: Target {
                    system: System::Campaign,
                    table: "profile".into(),
                    key_field: "externalId".into(),
                },
                key: contact.into(),
                op: Operation::Update,
                fields: vec![("blackListEmail".into(), Value::Boolean(flag))],
            }],
        })
    }

    fn state(contact: &str) -> (String, OptOutSnapshot) {
        (contact.to_string(), OptOutSnapshot::default())
    }

    /// Counts its calls; maps nothing.
    struct CountingMapper(usize);

    impl RecordMapping for CountingMapper {
        fn map(&mut self, _: Phase, batch: &RecordBatch) -> Result<Vec<Outcome>, MappingFailed> {
            self.0 += 1;
            Ok(batch
                .rows
                .iter()
                .map(|_| Outcome::Skip {
                    reason: "counted".into(),
                })
                .collect())
        }
    }

    #[test]
    fn an_empty_page_does_not_call_the_plugin() {
        let mut mapper = CountingMapper(0);
        let empty = RecordBatch {
            table: "contact".into(),
            columns: vec!["firstname".into()],
            rows: Vec::new(),
        };
        assert!(map_rows(&mut mapper, Phase::Incremental, &empty).is_empty());
        assert_eq!(mapper.0, 0);
        let events: Vec<EmailEvent> = Vec::new();
        let results = isolate(&events, |_| {
            mapper.0 += 1;
            Ok(Vec::new())
        });
        assert!(results.is_empty());
        assert_eq!(mapper.0, 0);
    }

    #[test]
    fn a_campaign_opt_out_value_already_sent_is_not_written_again() {
        let mut states = vec![state("c1")];
        let mut first = vec![campaign_flag("c1", true)];
        skip_campaign_values_that_agree(&mut first, &mut states);
        assert_eq!(
            first[0],
            campaign_flag("c1", true),
            "the first value is written"
        );

        let mut repeat = vec![campaign_flag("c1", true)];
        skip_campaign_values_that_agree(&mut repeat, &mut states);
        assert!(
            matches!(repeat[0], Ok(Outcome::Skip { .. })),
            "{:?}",
            repeat[0]
        );

        let mut changed = vec![campaign_flag("c1", false)];
        skip_campaign_values_that_agree(&mut changed, &mut states);
        assert_eq!(
            changed[0],
            campaign_flag("c1", false),
            "a new value is written"
        );
        assert_eq!(
            states[0].1.sent_to_campaign,
            vec![("blackListEmail".to_string(), false)]
        );
    }

    #[test]
    fn values_campaign_reported_or_never_set_are_not_written() {
        let reported = |flag: bool| OptOutSnapshot {
            campaign: vec![OptOutValue {
                attribute: "blackListEmail".into(),
                value: flag,
                changed_at: None,
            }],
            ..OptOutSnapshot::default()
        };
        let mut states = vec![("c1".to_string(), reported(true))];
        let mut results = vec![campaign_flag("c1", true)];
        skip_campaign_values_that_agree(&mut results, &mut states);
        assert!(
            matches!(results[0], Ok(Outcome::Skip { .. })),
            "{:?}",
            results[0]
        );

        let mut states = vec![("c1".to_string(), reported(true))];
        let mut results = vec![campaign_flag("c1", false)];
        skip_campaign_values_that_agree(&mut results, &mut states);
        assert_eq!(
            results[0],
            campaign_flag("c1", false),
            "a disagreement is written"
        );

        let mut states = vec![state("c2")];
        let mut results = vec![campaign_flag("c2", false)];
        skip_campaign_values_that_agree(&mut results, &mut states);
        assert!(
            matches!(results[0], Ok(Outcome::Skip { .. })),
            "a profile never reported holds no opt-out: {:?}",
            results[0]
        );
    }

    #[test]
    fn change_times_do_not_make_values_differ() {
        let value = |flag: bool, at: &str| OptOutValue {
            attribute: "donotbulkemail".into(),
            value: flag,
            changed_at: Some(at.into()),
        };
        assert!(same_values(&[value(true, "a")], &[value(true, "b")]));
        assert!(!same_values(&[value(true, "a")], &[value(false, "a")]));
        assert!(!same_values(&[], &[value(false, "a")]));
    }

    #[test]
    fn sent_values_are_per_contact_and_dynamics_writes_are_untouched() {
        let mut states = vec![state("c1"), state("c2")];
        let mut results = vec![campaign_flag("c1", true), campaign_flag("c2", true)];
        skip_campaign_values_that_agree(&mut results, &mut states);
        let mut results = vec![campaign_flag("c1", true), campaign_flag("c2", false)];
        skip_campaign_values_that_agree(&mut results, &mut states);
        assert!(matches!(results[0], Ok(Outcome::Skip { .. })));
        assert_eq!(results[1], campaign_flag("c2", false));

        let dynamics = Ok(Outcome::Write {
            records: vec![WriteRecord {
                target: Target {
                    system: System::Dynamics,
                    table: "contacts".into(),
                    key_field: "contactid".into(),
                },
                key: "c1".into(),
                op: Operation::Update,
                fields: vec![("donotbulkemail".into(), Value::Boolean(true))],
            }],
        });
        let mut results = vec![dynamics.clone()];
        skip_campaign_values_that_agree(&mut results, &mut states);
        assert_eq!(results[0], dynamics);
    }
}
