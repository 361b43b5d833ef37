//! `conduit verify`: proves that a destination holds what the source says it should. For
//! Ingress it reads a table mapping's source rows through the Dynamics 365 connector, maps
//! them with the plugin and settings in force (the running workflow's config, through the
//! same isolated mapping path the reader uses), reads the destination records back through
//! the Campaign connector, and compares them by key: missing, stale (field by field), orphaned
//! (Conduit's records whose source is gone where deletes propagate, or that the mapping now
//! deletes) and foreign (records Conduit did not write, which it leaves alone). A difference
//! whose key still waits in the backlog or sits in the dead letters is reported as such.
//!
//! `--repair` sends the differing keys back through the normal reader and writer: the keys
//! join the re-read list (visible in the backlog), so each row is read afresh and mapped with
//! the mapping in force when the reader gets to it; an orphan whose source is gone gets a
//! queued delete, which the ledger lets through only for records Conduit wrote. Nothing is
//! written from values remembered by the comparison.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use conduit_config::{Config, MappingSpec};
use conduit_connectors::{ChangeRequest, ConnectorError, RecordReader, StoredRecord};
use conduit_model::{Operation, Outcome, Phase, RecordBatch, System, WorkflowId, WriteRecord};
use conduit_store::{LedgerPolicy, ReadCommit, StoreError};

use super::reader::{StepError, on_plugin_thread};
use super::services::{PluginBuild, RecordMapping, Services};
use super::workflows::{Ingress, load_in_force, map_rows_isolated};
use super::{EngineError, Supervisor};

/// At most this many keys are listed per kind of difference (all are counted).
pub const EXAMPLES: usize = 200;

/// Destination records per page when a whole table is read back.
const DESTINATION_PAGE: u32 = 1000;

/// What to verify.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyOptions {
    /// Only this table mapping (Ingress); all of them when `None`.
    #[serde(default)]
    pub mapping: Option<String>,
    /// Compare only the first N source records of each mapping (looked up by key); the whole
    /// tables, orphans included, when `None`.
    #[serde(default)]
    pub sample: Option<u32>,
    /// Queue the differing keys for the writer after the comparison.
    #[serde(default)]
    pub repair: bool,
}

/// Some keys of one kind of difference: how many, and the first [`EXAMPLES`] of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    /// How many keys.
    pub count: u64,
    /// The first keys, in the order found.
    pub keys: Vec<String>,
}

impl KeyList {
    pub(super) fn push(&mut self, key: &str) {
        self.count += 1;
        if self.keys.len() < EXAMPLES {
            self.keys.push(key.to_owned());
        }
    }
}

/// One field whose stored value is not the mapped one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDifference {
    /// The destination field.
    pub field: String,
    /// What the mapping in force would write, as the destination stores it.
    pub expected: serde_json::Value,
    /// What the destination holds (`null` when it has no value).
    pub actual: serde_json::Value,
}

/// A destination record whose fields differ from the mapped source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaleRecord {
    /// The record's key.
    pub key: String,
    /// The fields that differ.
    pub fields: Vec<FieldDifference>,
}

/// The comparison of one table mapping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MappingCheck {
    /// The table mapping's name.
    pub mapping: String,
    /// The Dynamics 365 table.
    pub source: String,
    /// The Campaign resource.
    pub destination: String,
    /// Source records read.
    pub source_records: u64,
    /// Destination records read (with a key).
    pub destination_records: u64,
    /// Records that match.
    pub matching: u64,
    /// Mapped records the destination does not hold.
    pub missing: KeyList,
    /// How many records differ field by field (`stale` lists the first [`EXAMPLES`]).
    pub stale_count: u64,
    /// The first records that differ, with their fields.
    pub stale: Vec<StaleRecord>,
    /// Records Conduit wrote whose source is gone (where deletes propagate) or that the
    /// mapping now deletes.
    pub orphaned: KeyList,
    /// Destination records without a source record that Conduit did not write: left alone.
    pub foreign: KeyList,
    /// Differences whose write still waits in the backlog (queued or to be read again).
    pub in_backlog: KeyList,
    /// Differences held by a dead letter.
    pub dead_lettered: KeyList,
    /// Source records the plugin rejects now and no dead letter holds.
    pub rejected: KeyList,
    /// Source records the mapping deliberately does not write (filters).
    pub filtered: u64,
    /// Destination records without a key value (nothing to compare them with).
    pub without_key: u64,
    /// Keys queued for the writer by `--repair`.
    pub repaired: u64,
}

impl MappingCheck {
    /// How many records are out of sync (missing, stale, orphaned, rejected); foreign records,
    /// the backlog and dead letters are reported but are not differences.
    pub fn differences(&self) -> u64 {
        self.missing.count + self.stale_count + self.orphaned.count + self.rejected.count
    }
}

impl VerifyOptions {
    /// What a report says it compared: `full` or `sample of N`.
    pub(super) fn scope(&self) -> String {
        self.sample
            .map_or_else(|| "full".to_owned(), |n| format!("sample of {n}"))
    }
}

/// The answer of a verify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The workflow verified.
    pub workflow: WorkflowId,
    /// `full`, or `sample of N` per mapping.
    pub scope: String,
    /// True when no record is out of sync.
    pub in_sync: bool,
    /// Records out of sync, over all mappings.
    pub differences: u64,
    /// One comparison per table mapping.
    pub mappings: Vec<MappingCheck>,
    /// Keys queued for the writer by `--repair`, over all mappings.
    pub repaired: u64,
    /// What the numbers mean here (e.g. the config verified against).
    pub notes: Vec<String>,
}

/// How far a verify has got, for a progress line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyProgress {
    /// The table mapping being compared.
    pub mapping: String,
    /// `source` or `destination`: which side is being read.
    pub side: String,
    /// Records read of that side so far.
    pub records: u64,
}

/// One line of the streamed answer of `POST /api/workflows/{id}/verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum VerifyEvent {
    /// Progress.
    Progress(VerifyProgress),
    /// The finished comparison (the last line).
    Report(VerifyReport),
    /// The verify failed part-way (the last line).
    Failed {
        /// Why.
        error: String,
    },
}

/// Why a verify could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The config, the workflow or the mapping asked for is not usable.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The workflow is not running, so no change waits for its restart.
    #[error(
        "{0} is not running: nothing waits for a restart (the config file applies as it is at its next start)"
    )]
    NotRunning(WorkflowId),
    /// The connectors cannot read the destination back (the system named).
    #[error("the {0} connector cannot read records back, so there is nothing to compare")]
    NoReader(&'static str),
    /// The mapping's plugin does not load or configure.
    #[error("mapping '{mapping}': the plugin in force does not load: {reason}")]
    Load {
        /// The table mapping.
        mapping: String,
        /// The plugin host's message.
        reason: String,
    },
    /// The plugin thread failed (a panic while mapping).
    #[error("mapping '{mapping}': {reason}")]
    Plugin {
        /// The table mapping.
        mapping: String,
        /// What the plugin thread said.
        reason: String,
    },
    /// The source could not be read.
    #[error("cannot read the Dynamics 365 table '{table}': {source}")]
    Source {
        /// The table.
        table: String,
        /// The connector's error.
        #[source]
        source: ConnectorError,
    },
    /// The destination could not be read.
    #[error("cannot read the Campaign resource '{table}': {source}")]
    Destination {
        /// The resource.
        table: String,
        /// The connector's error.
        #[source]
        source: ConnectorError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The keys of one mapping that differ (all of them, not only the listed examples): what a
/// repair sends back through the reader and writer.
#[derive(Default)]
struct Differing {
    /// Missing and stale keys: read again.
    again: Vec<String>,
    /// Orphaned keys.
    orphans: Vec<String>,
}

/// What a verify maps with: the running workflow's config and plugin build (or the file's).
struct InForce<'a> {
    /// The config.
    config: &'a Config,
    /// The plugin build, when the workflow runs.
    build: Option<Arc<dyn PluginBuild>>,
}

/// One source row mapped: what the destination should hold for its key.
enum Expected {
    /// A record with these fields (the key field left out).
    Present(WriteRecord),
    /// No record (the mapping deletes it, e.g. filtered out with deletes).
    Absent,
    /// Not the mapping's to write (filtered out, or rejected): whatever the destination
    /// holds is left as it is.
    Untouched,
}

impl Supervisor {
    /// Verifies workflow `id` (Ingress or Opt-in/out) against its destination, reporting progress
    /// through `progress`; with `options.repair`, queues the differing keys for the writer.
    pub async fn verify(
        &self,
        id: WorkflowId,
        options: &VerifyOptions,
        progress: &(dyn Fn(VerifyProgress) + Send + Sync),
    ) -> Result<VerifyReport, VerifyError> {
        let latest = self.load_config()?;
        // The mapping in force is the running workflow's, with the plugin build it started
        // with; a stopped one would start with the file as it is now.
        let (config, build, in_force_note) = match self.in_force(id) {
            Some((config, build)) => (
                config,
                build,
                format!(
                    "compared with the config and plugin build the running {id} workflow started with"
                ),
            ),
            None => (
                latest,
                None,
                format!("{id} is not running: compared with the config file"),
            ),
        };
        if id == WorkflowId::Egress {
            return self
                .verify_egress(&config, build, options, progress, in_force_note)
                .await;
        }
        if id == WorkflowId::OptInOut {
            if !config.has_workflow(id) {
                return Err(EngineError::NotConfigured(id).into());
            }
            let services = self
                .inner
                .env
                .connect
                .connect(&config)
                .map_err(EngineError::from)?;
            let check = self
                .verify_opt_outs(&config, build, &services, options, progress)
                .await?;
            let differences = check.differences();
            let repaired = check.repaired;
            let mut notes = vec![
                in_force_note,
                "a flag is out of sync when the two sides disagree and the direction and conflict rule in force would write it; Campaign's change times come only with its exports, so the rule sees none".to_owned(),
            ];
            if repaired > 0 {
                notes.push(format!(
                    "{repaired} contact(s) queued: the reader reads each again from both sides and resolves it with the rule in force, and the writer writes what that says; watch the backlog drain with `conduit status`"
                ));
            }
            return Ok(VerifyReport {
                workflow: id,
                scope: options.scope(),
                in_sync: differences == 0,
                differences,
                mappings: vec![check],
                repaired,
                notes,
            });
        }
        let section = config
            .ingress()
            .ok_or(EngineError::NotConfigured(id))?
            .clone();
        let mappings: Vec<&MappingSpec> = match &options.mapping {
            None => section.mappings.iter().collect(),
            Some(name) => {
                vec![
                    section
                        .mapping(name)
                        .ok_or_else(|| EngineError::UnknownMapping {
                            name: name.clone(),
                            known: section.mappings.iter().map(|m| m.name.clone()).collect(),
                        })?,
                ]
            }
        };
        let services = self
            .inner
            .env
            .connect
            .connect(&config)
            .map_err(EngineError::from)?;
        let reader = services
            .campaign_records
            .clone()
            .ok_or(VerifyError::NoReader("Campaign"))?;
        let mut checks = Vec::new();
        for mapping in mappings {
            let in_force = InForce {
                config: &config,
                build: build.clone(),
            };
            let (mut check, differing) = self
                .verify_mapping(
                    &in_force,
                    &services,
                    reader.as_ref(),
                    mapping,
                    options,
                    progress,
                )
                .await?;
            if options.repair {
                check.repaired = self.repair(&services, mapping, differing).await?;
            }
            checks.push(check);
        }
        let differences = checks.iter().map(MappingCheck::differences).sum();
        let repaired = checks.iter().map(|check| check.repaired).sum();
        let mut notes = vec![in_force_note];
        if options.sample.is_some() {
            notes.push(
                "a sample looks up the first source records by key: records only the destination holds are not looked for (use --full)"
                    .to_owned(),
            );
        }
        if repaired > 0 {
            notes.push(format!(
                "{repaired} key(s) queued: the reader reads each again from Dynamics 365 and the writer writes it; watch the backlog drain with `conduit status`"
            ));
        }
        Ok(VerifyReport {
            workflow: id,
            scope: options.scope(),
            in_sync: differences == 0,
            differences,
            mappings: checks,
            repaired,
            notes,
        })
    }

    async fn verify_mapping(
        &self,
        in_force: &InForce<'_>,
        services: &Services,
        reader: &dyn RecordReader,
        mapping: &MappingSpec,
        options: &VerifyOptions,
        progress: &(dyn Fn(VerifyProgress) + Send + Sync),
    ) -> Result<(MappingCheck, Differing), VerifyError> {
        let config = in_force.config;
        let plugin = load_in_force::<Ingress>(
            &self.inner.env,
            config,
            mapping.plugin_settings(),
            in_force.build.clone(),
        )
        .await
        .map_err(|reason| VerifyError::Load {
            mapping: mapping.name.clone(),
            reason,
        })?;
        let mut mapper = Some(plugin);
        let pacing = config.pacing(WorkflowId::Ingress);
        let page_size = options
            .sample
            .map_or(pacing.page_size, |n| n.clamp(1, pacing.page_size.max(1)));
        let request = ChangeRequest {
            table: mapping.source.clone(),
            columns: mapping.source_columns(),
            page_size,
        };
        let mut check = MappingCheck {
            mapping: mapping.name.clone(),
            source: mapping.source.clone(),
            destination: mapping.destination.clone(),
            ..MappingCheck::default()
        };
        // Source side: every row mapped as an incremental change would be (apply-updates-off
        // fields are then not compared: Conduit leaves them as first written).
        let mut expected: HashMap<String, Expected> = HashMap::new();
        let mut rejected: Vec<String> = Vec::new();
        let mut pages = SourcePages::new(services, request, options.sample);
        while let Some(batch) = pages.next().await? {
            check.source_records += batch.rows.len() as u64;
            map_page(
                &mut mapper,
                mapping,
                batch,
                &mut expected,
                &mut rejected,
                &mut check,
            )
            .await?;
            progress(VerifyProgress {
                mapping: mapping.name.clone(),
                side: "source".into(),
                records: check.source_records,
            });
        }
        // Destination side: the whole resource, or the sampled keys.
        let key_field = &mapping.key.destination;
        let table = &mapping.destination;
        let destination_error = |source| VerifyError::Destination {
            table: table.clone(),
            source,
        };
        let mut stored: HashMap<String, StoredRecord> = HashMap::new();
        match options.sample {
            Some(_) => {
                let keys: Vec<String> = expected.keys().cloned().collect();
                for record in reader
                    .read_stored_keys(table, key_field, &keys)
                    .await
                    .map_err(destination_error)?
                {
                    stored.insert(record.key.clone(), record);
                }
                check.destination_records = stored.len() as u64;
                progress(VerifyProgress {
                    mapping: mapping.name.clone(),
                    side: "destination".into(),
                    records: check.destination_records,
                });
            }
            None => {
                let mut cursor: Option<String> = None;
                loop {
                    let page = reader
                        .read_stored(table, key_field, cursor.as_deref(), DESTINATION_PAGE)
                        .await
                        .map_err(destination_error)?;
                    check.without_key += page.without_key;
                    for record in page.records {
                        stored.insert(record.key.clone(), record);
                    }
                    check.destination_records = stored.len() as u64;
                    progress(VerifyProgress {
                        mapping: mapping.name.clone(),
                        side: "destination".into(),
                        records: check.destination_records,
                    });
                    match page.next {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
            }
        }
        // The backlog and dead letters are read after both sides, so that work queued while
        // the sides were read counts as work in progress.
        let pending = self.store().pending_keys(WorkflowId::Ingress)?;
        let mut missing = Vec::new();
        let mut stale = Vec::new();
        let mut gone = Vec::new();
        // The expected records in the form Campaign shows them, read against its metadata
        // once for the whole mapping.
        let present: Vec<(&String, &WriteRecord, &StoredRecord)> = expected
            .iter()
            .filter_map(|(key, wanted)| match (wanted, stored.get(key)) {
                (Expected::Present(record), Some(found)) => Some((key, record, found)),
                _ => None,
            })
            .collect();
        let forms = if present.is_empty() {
            Vec::new()
        } else {
            let inputs: Vec<_> = present
                .iter()
                .map(|(_, record, _)| comparable_fields(record))
                .collect();
            reader
                .stored_forms(table, &inputs)
                .await
                .map_err(destination_error)?
        };
        for ((key, _, found), form) in present.iter().zip(forms) {
            let differences = differences_from(form, found);
            if differences.is_empty() {
                check.matching += 1;
            } else {
                stale.push(StaleRecord {
                    key: (*key).clone(),
                    fields: differences,
                });
            }
        }
        for (key, wanted) in &expected {
            match (wanted, stored.get(key)) {
                (Expected::Present(_), None) => missing.push(key.clone()),
                (Expected::Absent, Some(_)) => gone.push(key.clone()),
                (Expected::Absent, None) => check.matching += 1,
                (Expected::Present(_), Some(_)) | (Expected::Untouched, _) => {}
            }
        }
        if options.sample.is_none() && mapping.apply_deletes {
            gone.extend(
                stored
                    .keys()
                    .filter(|key| !expected.contains_key(*key))
                    .cloned(),
            );
        }
        // Sorted, so that reports and repairs come out the same on every run.
        missing.sort();
        stale.sort_by(|a, b| a.key.cmp(&b.key));
        gone.sort();
        rejected.sort();
        let owned = self.store().owned_keys(System::Campaign, table, &gone)?;
        let name = &mapping.name;
        let mut differing = Differing::default();
        let mut classify = |key: &str, list: &mut KeyList| {
            if pending.in_backlog(name, table, key) {
                check.in_backlog.push(key);
                false
            } else if pending.dead_lettered(name, table, key) {
                check.dead_lettered.push(key);
                false
            } else {
                list.push(key);
                true
            }
        };
        let mut missing_list = KeyList::default();
        for key in &missing {
            if classify(key, &mut missing_list) {
                differing.again.push(key.clone());
            }
        }
        let mut stale_list = KeyList::default();
        let mut stale_records = Vec::new();
        for record in stale {
            if classify(&record.key, &mut stale_list) {
                differing.again.push(record.key.clone());
                if stale_records.len() < EXAMPLES {
                    stale_records.push(record);
                }
            }
        }
        let mut orphaned = KeyList::default();
        let mut foreign = KeyList::default();
        for key in &gone {
            // A queued delete has already taken the record out of the ledger: the backlog is
            // asked first.
            let waiting =
                pending.in_backlog(name, table, key) || pending.dead_lettered(name, table, key);
            if waiting || owned.contains(key) {
                if classify(key, &mut orphaned) {
                    differing.orphans.push(key.clone());
                }
            } else {
                foreign.push(key);
            }
        }
        let mut rejected_list = KeyList::default();
        for key in &rejected {
            if pending.dead_lettered(name, table, key) {
                check.dead_lettered.push(key);
            } else {
                rejected_list.push(key);
            }
        }
        check.missing = missing_list;
        check.stale_count = stale_list.count;
        check.stale = stale_records;
        check.orphaned = orphaned;
        check.foreign = foreign;
        check.rejected = rejected_list;
        Ok((check, differing))
    }

    /// Queues the differences of one mapping for the normal reader and writer; returns how
    /// many keys were queued.
    async fn repair(
        &self,
        services: &Services,
        mapping: &MappingSpec,
        differing: Differing,
    ) -> Result<u64, VerifyError> {
        let store = self.store();
        let Differing { mut again, orphans } = differing;
        // An orphan whose source row is back (or that the mapping filters out with deletes)
        // is read again like the others; one whose source is gone gets a queued delete.
        let orphans = &orphans;
        let mut deletes = Vec::new();
        if !orphans.is_empty() {
            let request = ChangeRequest {
                table: mapping.source.clone(),
                columns: mapping.source_columns(),
                page_size: orphans.len() as u32,
            };
            let present: HashSet<String> = services
                .dynamics_source
                .read_rows(&request, orphans)
                .await
                .map_err(|source| VerifyError::Source {
                    table: mapping.source.clone(),
                    source,
                })?
                .rows
                .into_iter()
                .map(|row| row.key)
                .collect();
            for key in orphans {
                if present.contains(key) {
                    again.push(key.clone());
                } else {
                    deletes.push(key.clone());
                }
            }
        }
        let mut queued = store.request_rereads(&mapping.name, &again)?;
        if !deletes.is_empty() {
            queued += deletes.len() as u64;
            let records = deletes
                .into_iter()
                .map(|key| {
                    let record = WriteRecord {
                        target: conduit_model::Target {
                            system: System::Campaign,
                            table: mapping.destination.clone(),
                            key_field: mapping.key.destination.clone(),
                        },
                        key,
                        op: Operation::Delete,
                        fields: Vec::new(),
                    };
                    (mapping.name.clone(), record)
                })
                .collect();
            // Through the ledger: a delete reaches only a record Conduit wrote.
            store.commit_read(
                WorkflowId::Ingress,
                ReadCommit {
                    source: mapping.name.clone(),
                    records,
                    ledger: LedgerPolicy::Record,
                    phase: Some(Phase::Replay),
                    ..ReadCommit::default()
                },
            )?;
        }
        Ok(queued)
    }
}

/// A Dynamics 365 table read from its start through the connector (a full read, as a first
/// load does, leaving the workflow's cursor alone), page by page, its deletes dropped, up to
/// `limit` rows when given: the source side of verify and preview.
pub(super) struct SourcePages<'a> {
    services: &'a Services,
    request: ChangeRequest,
    limit: Option<u32>,
    read: u64,
    cursor: Option<String>,
    done: bool,
}

impl<'a> SourcePages<'a> {
    /// Pages of `request`'s table, at most `limit` rows in all.
    pub(super) fn new(
        services: &'a Services,
        request: ChangeRequest,
        limit: Option<u32>,
    ) -> SourcePages<'a> {
        SourcePages {
            services,
            request,
            limit,
            read: 0,
            cursor: None,
            done: limit == Some(0),
        }
    }

    /// The next page's rows (possibly none, when a page held only deletes), or `None` once the
    /// table or the limit is reached.
    pub(super) async fn next(&mut self) -> Result<Option<RecordBatch>, VerifyError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .services
            .dynamics_source
            .read_changes(&self.request, self.cursor.as_deref())
            .await
            .map_err(|source| VerifyError::Source {
                table: self.request.table.clone(),
                source,
            })?;
        let mut batch = page.batch;
        batch.rows.retain(|row| row.op != Operation::Delete);
        if let Some(limit) = self.limit {
            let room = (limit as usize).saturating_sub(self.read as usize);
            batch.rows.truncate(room);
        }
        self.read += batch.rows.len() as u64;
        let full = self
            .limit
            .is_some_and(|limit| self.read >= u64::from(limit));
        self.done = page.caught_up || full;
        self.cursor = Some(page.cursor);
        Ok(Some(batch))
    }
}

/// Maps one page of source rows with the mapping's plugin (on a plugin thread, falling back
/// to one row at a time as the reader does) into what the destination should hold.
async fn map_page(
    mapper: &mut Option<Box<dyn RecordMapping>>,
    mapping: &MappingSpec,
    batch: RecordBatch,
    expected: &mut HashMap<String, Expected>,
    rejected: &mut Vec<String>,
    check: &mut MappingCheck,
) -> Result<(), VerifyError> {
    if batch.rows.is_empty() {
        return Ok(());
    }
    let (batch, results) = on_plugin_thread(
        mapper,
        "mapper",
        WorkflowId::Ingress,
        batch,
        |mapper, batch| map_rows_isolated(mapper.as_mut(), Phase::Incremental, batch).results,
    )
    .await
    .map_err(|error| VerifyError::Plugin {
        mapping: mapping.name.clone(),
        reason: step_reason(error),
    })?;
    for (row, result) in batch.rows.iter().zip(results) {
        match result {
            Ok(Outcome::Write { records }) => {
                for record in records {
                    // Writes to other resources (if a plugin makes them) are not this
                    // mapping's to compare.
                    if record.target.system != System::Campaign
                        || record.target.table != mapping.destination
                    {
                        continue;
                    }
                    let wanted = match record.op {
                        Operation::Delete => Expected::Absent,
                        Operation::Upsert | Operation::Update => Expected::Present(record),
                    };
                    let key = match &wanted {
                        Expected::Present(record) => record.key.clone(),
                        Expected::Absent | Expected::Untouched => row.key.clone(),
                    };
                    expected.insert(key, wanted);
                }
            }
            Ok(Outcome::Skip { .. }) => {
                check.filtered += 1;
                expected.insert(row.key.clone(), Expected::Untouched);
            }
            Ok(Outcome::Reject { .. }) | Err(_) => {
                rejected.push(row.key.clone());
                expected.insert(row.key.clone(), Expected::Untouched);
            }
        }
    }
    Ok(())
}

/// What a failed plugin-thread call says, for an operator.
pub(super) fn step_reason(error: StepError) -> String {
    match error {
        StepError::Transient { message, .. } => message,
        StepError::Stage(stage) => stage.to_string(),
    }
}

/// The fields of a mapped record that the destination stores (its key is what it is found by).
pub(super) fn comparable_fields(record: &WriteRecord) -> Vec<(String, conduit_model::Value)> {
    record
        .fields
        .iter()
        .filter(|(name, _)| *name != record.target.key_field)
        .cloned()
        .collect()
}

/// The fields whose stored value differs from the expected one.
/// The fields where `found` differs from the stored form of what would be written; a write
/// the destination cannot hold at all (it would refuse it to the writer too) is one
/// `(unwritable)` difference with the reason.
pub(super) fn differences_from(
    stored_form: Result<Vec<(String, serde_json::Value)>, String>,
    found: &StoredRecord,
) -> Vec<FieldDifference> {
    match stored_form {
        Ok(fields) => differing_fields(&fields, found),
        Err(reason) => vec![FieldDifference {
            field: "(unwritable)".into(),
            expected: serde_json::Value::String(reason),
            actual: serde_json::Value::Null,
        }],
    }
}

fn differing_fields(
    expected: &[(String, serde_json::Value)],
    found: &StoredRecord,
) -> Vec<FieldDifference> {
    expected
        .iter()
        .filter_map(|(field, want)| {
            let have = found
                .fields
                .get(field)
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            (!same_value(want, &have)).then(|| FieldDifference {
                field: field.clone(),
                expected: want.clone(),
                actual: have,
            })
        })
        .collect()
}

/// Whether a stored value is the expected one: numbers by value (`1` and `1.0`), and an empty
/// text the same as no value (Campaign answers `""` for a text it holds no value in).
fn same_value(expected: &serde_json::Value, actual: &serde_json::Value) -> bool {
    use serde_json::Value as Json;
    match (expected, actual) {
        (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
        (Json::Null, Json::String(text)) | (Json::String(text), Json::Null) => text.is_empty(),
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_compare_by_meaning_not_by_spelling() {
        assert!(same_value(&json!(1), &json!(1.0)));
        assert!(same_value(&json!(null), &json!("")));
        assert!(same_value(&json!(""), &json!(null)));
        assert!(!same_value(&json!("Ann"), &json!("ann")));
        assert!(!same_value(&json!(null), &json!("x")));
        assert!(!same_value(&json!(true), &json!("true")));
    }

    #[test]
    fn only_the_fields_that_differ_are_named() {
        let found = StoredRecord {
            key: "c-1".into(),
            fields: json!({"externalId": "c-1", "firstName": "Ann", "lastName": "Lee"})
                .as_object()
                .cloned()
                .unwrap(),
        };
        let expected = vec![
            ("firstName".to_string(), json!("Ann")),
            ("lastName".to_string(), json!("Li")),
            ("email".to_string(), json!(null)),
        ];
        assert_eq!(
            differing_fields(&expected, &found),
            [FieldDifference {
                field: "lastName".into(),
                expected: json!("Li"),
                actual: json!("Lee"),
            }]
        );
    }

    #[test]
    fn key_lists_count_everything_and_keep_the_first_examples() {
        let mut list = KeyList::default();
        for n in 0..(EXAMPLES + 5) {
            list.push(&format!("k{n}"));
        }
        assert_eq!(list.count, (EXAMPLES + 5) as u64);
        assert_eq!(list.keys.len(), EXAMPLES);
        assert_eq!(list.keys[0], "k0");
    }
}
