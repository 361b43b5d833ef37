//! Ingress: Dynamics 365 tables, each through its table mapping's plugin, to Campaign
//! profiles and custom resources. Each mapping keeps its own change-tracking cursor and phase
//! (initial read, replay, incremental); a mapping changed since the last start first reads
//! again the records still queued under its old form.

use std::collections::{BTreeMap, HashSet};

use conduit_config::{Config, ConfigKey, EffectiveLimits, MappingSpec};
use conduit_connectors::{ChangeRequest, ConnectorError};
use conduit_model::{Outcome, Phase, RecordBatch, System, WorkflowId};
use conduit_store::{CursorState, DeadLetterPayload, LedgerPolicy, ReadCommit};

use super::super::Environment;
use super::super::reader::{
    Isolated, ReaderCore, StepError, collect, on_plugin_thread, single_outcome,
};
use super::super::services::{
    LoadFailed, Loaded, PluginBuild, PluginFactory, RecordMapping, Services,
};
use super::super::stage::{PrepareError, StageContext};
use super::{Ready, RemapError, Start, Workflow, load, located};

/// One table mapping being read.
struct MappingReader {
    name: String,
    request: ChangeRequest,
    mapper: Option<Box<dyn RecordMapping>>,
}

/// The Ingress workflow: its table mappings.
pub(crate) struct Ingress {
    mappings: Vec<MappingReader>,
}

impl Workflow for Ingress {
    const ID: WorkflowId = WorkflowId::Ingress;
    type Plugin = Box<dyn RecordMapping>;

    fn load(
        factory: &dyn PluginFactory,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Self::Plugin>, LoadFailed> {
        factory.record_mapper(plugin, settings, limits)
    }

    fn configure(
        build: &dyn PluginBuild,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Self::Plugin, LoadFailed> {
        build.record_mapper(settings, limits)
    }

    async fn prepare(start: Start<'_>) -> Result<Ready<Self>, PrepareError> {
        let Start {
            env,
            config,
            services,
            page_size,
        } = start;
        let section = config.ingress().ok_or("ingress is not configured")?;
        let mut mappings = Vec::new();
        let mut needed = Vec::new();
        let mut plugin_fingerprint = String::new();
        // One build for all mappings (the workflow has one plugin): the last one loaded, whose
        // fingerprint is the workflow's.
        let mut build = None;
        let mut mapping_fingerprints = BTreeMap::new();
        for mapping in &section.mappings {
            check_source_fields(services, mapping).await?;
            let settings = mapping.plugin_settings();
            let loaded = load::<Self>(env, config, settings.clone())
                .await
                .map_err(|error| {
                    located(
                        config,
                        ConfigKey::Mapping(&mapping.name),
                        format!("mapping '{}': {error}", mapping.name),
                    )
                })?;
            mapping_fingerprints.insert(
                mapping.name.clone(),
                mapping_fingerprint(&settings, &loaded.fingerprint),
            );
            plugin_fingerprint = loaded.fingerprint;
            build = loaded.build;
            mappings.push(MappingReader {
                name: mapping.name.clone(),
                request: change_request(mapping, page_size),
                mapper: Some(loaded.plugin),
            });
            let mut fields = vec![mapping.key.destination.clone()];
            fields.extend(mapping.fields.iter().map(|f| f.destination.clone()));
            needed.push((System::Campaign, mapping.destination.clone(), fields));
        }
        take_pending_replays(env, config)?;
        reread_changed_mappings(env, mapping_fingerprints)?;
        Ok(Ready {
            workflow: Ingress { mappings },
            needed,
            plugin_fingerprint,
            build,
        })
    }

    /// One page of each table mapping; true when any mapping had work.
    async fn step(&mut self, core: &mut ReaderCore, ctx: &StageContext) -> Result<bool, StepError> {
        let mut worked = false;
        for mapping in &mut self.mappings {
            if ctx.stop_requested() {
                break;
            }
            if reread_step(core, ctx, mapping).await? {
                worked = true;
                continue;
            }
            let stored = core.store.cursor(core.workflow, &mapping.name)?;
            let phase = stored.as_ref().map_or(Phase::Initial, |c| c.phase);
            let cursor = stored.and_then(|c| c.cursor);
            let page = match core
                .services
                .dynamics_source
                .read_changes(&mapping.request, cursor.as_deref())
                .await
            {
                Ok(page) => page,
                Err(ConnectorError::CursorExpired { message }) => {
                    tracing::warn!(mapping = %mapping.name, %message, "change tracking token expired; starting a full resync");
                    core.store.set_cursor(
                        core.workflow,
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
            let all_failed =
                map_into(core.workflow, mapping, phase, page.batch, &mut commit).await?;
            core.commit(ctx, commit, all_failed).await?;
            worked |= rows > 0 || !page.caught_up;
        }
        Ok(worked)
    }

    fn remap_settings(config: &Config, origin: &str) -> Result<serde_json::Value, RemapError> {
        let section = config
            .ingress()
            .ok_or(RemapError::NotConfigured(Self::ID))?;
        let mapping = section
            .mapping(origin)
            .ok_or_else(|| RemapError::MappingGone(origin.to_string()))?;
        Ok(mapping.plugin_settings())
    }

    fn remap(
        plugin: &mut Self::Plugin,
        payload: &DeadLetterPayload,
    ) -> Result<Outcome, RemapError> {
        match payload {
            DeadLetterPayload::SourceRecord { batch, phase } => {
                single_outcome(plugin.map(*phase, batch)).map_err(RemapError::Plugin)
            }
            _ => Err(RemapError::OtherWorkflow(Self::ID)),
        }
    }
}

/// Reads again, and maps with the mapping as configured now, a page of the records whose
/// queued writes were mapped under an older mapping; false when none wait.
async fn reread_step(
    core: &mut ReaderCore,
    ctx: &StageContext,
    mapping: &mut MappingReader,
) -> Result<bool, StepError> {
    let waiting = core
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
    let batch = core
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
    let all_failed = map_into(core.workflow, mapping, phase, batch, &mut commit).await?;
    core.commit(ctx, commit, all_failed).await?;
    Ok(true)
}

/// Maps rows with a table mapping's plugin (on a blocking thread) into `commit`: queued
/// writes, skips and dead letters. True when the plugin failed on every row.
async fn map_into(
    workflow: WorkflowId,
    mapping: &mut MappingReader,
    phase: Phase,
    batch: RecordBatch,
    commit: &mut ReadCommit,
) -> Result<bool, StepError> {
    let (batch, results) = on_plugin_thread(
        &mut mapping.mapper,
        "mapper",
        workflow,
        batch,
        move |mapper, batch| map_rows_isolated(mapper.as_mut(), phase, batch).results,
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

/// Maps a page of rows, falling back to one row at a time when the batch fails, and says why
/// the whole page failed (for `conduit plugin test`). An empty page (every poll of a
/// caught-up source) does not call the plugin.
pub fn map_rows_isolated(
    mapper: &mut dyn RecordMapping,
    phase: Phase,
    batch: &RecordBatch,
) -> Isolated {
    super::super::reader::isolate_items(&batch.rows, |rows| {
        if rows.len() == batch.rows.len() {
            mapper.map(phase, batch)
        } else {
            mapper.map(
                phase,
                &RecordBatch {
                    table: batch.table.clone(),
                    columns: batch.columns.clone(),
                    rows: rows.to_vec(),
                },
            )
        }
    })
}

/// How Ingress outputs are checked against what was sent before: a first read or a replay
/// writes every value ("values written, apply-updates ignored"); later changes that would
/// write nothing new are skipped.
fn ledger_policy(phase: Phase) -> LedgerPolicy {
    match phase {
        Phase::Incremental => LedgerPolicy::SkipUnchanged,
        Phase::Initial | Phase::Replay => LedgerPolicy::Record,
    }
}

/// The read of a table mapping: its table and columns (`MappingSpec::source_columns`).
fn change_request(mapping: &MappingSpec, page_size: u32) -> ChangeRequest {
    ChangeRequest {
        table: mapping.source.clone(),
        columns: mapping.source_columns(),
        page_size,
    }
}

async fn check_source_fields(
    services: &Services,
    mapping: &MappingSpec,
) -> Result<(), PrepareError> {
    let table = &mapping.source;
    let fields = services
        .dynamics_source
        .describe(table)
        .await
        .map_err(|error| {
            PrepareError::service(
                &format!("cannot read the metadata of the Dynamics 365 table '{table}'"),
                &error,
            )
        })?;
    let known: HashSet<_> = fields.iter().map(|f| f.name.as_str()).collect();
    let mut used = vec![&mapping.key.source];
    used.extend(mapping.fields.iter().map(|f| &f.source));
    for field in used {
        if !known.contains(field.as_str()) {
            return Err(format!(
                "schema drift: the field '{field}' of the Dynamics 365 table '{table}' does not exist (mapping '{}')",
                mapping.name
            )
            .into());
        }
    }
    Ok(())
}

/// What a table mapping's outputs depend on: its settings and the plugin's build.
fn mapping_fingerprint(settings: &serde_json::Value, plugin_fingerprint: &str) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(settings.to_string().as_bytes());
    hasher.update([0]);
    hasher.update(plugin_fingerprint.as_bytes());
    hex::encode(hasher.finalize())
}

/// Records queued under a mapping that has changed since the last start leave the queue to be
/// read again and mapped with the mapping as it is now: following the documented procedure
/// (fix the mapping, restart) then loses nothing and dead-letters nothing.
fn reread_changed_mappings(
    env: &Environment,
    fingerprints: BTreeMap<String, String>,
) -> Result<(), String> {
    let record = env
        .store
        .workflow(WorkflowId::Ingress)
        .map_err(|error| error.to_string())?;
    for (name, now) in &fingerprints {
        let changed = record
            .mapping_fingerprints
            .get(name)
            .is_some_and(|before| before != now);
        if changed {
            let moved = env
                .store
                .queue_rereads(name)
                .map_err(|error| error.to_string())?;
            if moved > 0 {
                tracing::info!(mapping = %name, records = moved, "the mapping changed: queued records are read again and mapped with it");
            }
        }
    }
    env.store
        .update_workflow(WorkflowId::Ingress, |record| {
            record.mapping_fingerprints = fingerprints;
        })
        .map_err(|error| error.to_string())?;
    Ok(())
}

/// Pending replays restart their mappings' cursors in the replay phase.
fn take_pending_replays(env: &Environment, config: &Config) -> Result<(), String> {
    let record = env
        .store
        .workflow(WorkflowId::Ingress)
        .map_err(|error| error.to_string())?;
    if record.pending_replays.is_empty() {
        return Ok(());
    }
    let known = |name: &str| config.ingress().is_some_and(|s| s.mapping(name).is_some());
    for mapping in &record.pending_replays {
        if known(mapping) {
            env.store
                .set_cursor(
                    WorkflowId::Ingress,
                    mapping,
                    &CursorState::new(None, Phase::Replay),
                )
                .map_err(|error| error.to_string())?;
        }
    }
    env.store
        .update_workflow(WorkflowId::Ingress, |record| record.pending_replays.clear())
        .map_err(|error| error.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::isolate;
    use crate::services::MappingFailed;
    use conduit_model::EmailEvent;

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
        assert!(
            map_rows_isolated(&mut mapper, Phase::Incremental, &empty)
                .results
                .is_empty()
        );
        assert_eq!(mapper.0, 0);
        let events: Vec<EmailEvent> = Vec::new();
        let results = isolate(&events, |_| {
            mapper.0 += 1;
            Ok(Vec::new())
        });
        assert!(results.is_empty());
        assert_eq!(mapper.0, 0);
    }
}
