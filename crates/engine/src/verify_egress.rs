//! `conduit verify egress`: reads Campaign's email event journal from its start (through the
//! connector, leaving the workflow's cursor alone), maps the events with the event mapper in
//! force, and looks each resulting activity up in Dynamics 365 by the identity the writer
//! writes it under (the record's key field, `activityid` = the event id for the builtin mapper:
//! its primary key, or an alternate key), comparing field by field in the form Dataverse
//! stores values. An activity whose event the workflow has not read yet, whose write waits in
//! the queue, or that a dead letter holds is reported as such, not as a difference.
//!
//! `--repair` queues the mapped activities of the missing and stale events for the normal
//! writer, durably, in one transaction: upserts by the activity's key, so a repair never makes
//! a second activity. The journal is append-only and an event never changes, so what is
//! queued is the event as Campaign recorded it, mapped with the plugin in force; it is not a
//! value remembered from a side that may have moved since.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use conduit_config::Config;
use conduit_connectors::{RecordReader, StoredRecord};
use conduit_model::{EmailEvent, Outcome, System, WorkflowId, WriteRecord};
use conduit_store::{DeadLetterFilter, DeadLetterPayload, ReadCommit};

use super::reader::{isolate, on_plugin_thread};
use super::services::{EventMapping, PluginBuild};
use super::verify::{
    EXAMPLES, MappingCheck, StaleRecord, VerifyError, VerifyOptions, VerifyProgress, VerifyReport,
    comparable_fields, differences_from, step_reason,
};
use super::workflows::{Egress, load_in_force};
use super::{EngineError, Services, Supervisor};

/// The name the report gives the journal's comparison (and `--mapping` accepts).
pub(super) const EVENTS: &str = "events";

/// The source the Egress reader keeps its journal cursor under (and its dead letters' origin).
const EVENTS_SOURCE: &str = "events";

/// Activities looked up per request round, between two progress lines.
const LOOKUP_CHUNK: usize = 500;

/// One event mapped to the activity the destination should hold.
struct Expected {
    /// The event's position in the journal as read (0 first).
    position: usize,
    /// The event's id.
    event: String,
    /// The activity write.
    record: WriteRecord,
}

impl Supervisor {
    /// Compares the activities Dynamics 365 holds with the email events mapped by the plugin in
    /// force; with `options.repair`, queues the differing ones for the writer.
    pub(super) async fn verify_egress(
        &self,
        config: &Config,
        build: Option<Arc<dyn PluginBuild>>,
        options: &VerifyOptions,
        progress: &(dyn Fn(VerifyProgress) + Send + Sync),
        in_force_note: String,
    ) -> Result<VerifyReport, VerifyError> {
        let id = WorkflowId::Egress;
        let section = config
            .egress()
            .ok_or(EngineError::NotConfigured(id))?
            .clone();
        if let Some(name) = &options.mapping
            && name != EVENTS
        {
            return Err(EngineError::UnknownMapping {
                name: name.clone(),
                known: vec![EVENTS.to_owned()],
            }
            .into());
        }
        let services = self
            .inner
            .env
            .connect
            .connect(config)
            .map_err(EngineError::from)?;
        let reader = services
            .dynamics_records
            .clone()
            .ok_or(VerifyError::NoReader("Dynamics 365"))?;
        let plugin =
            load_in_force::<Egress>(&self.inner.env, config, section.plugin_settings(), build)
                .await
                .map_err(|reason| VerifyError::Load {
                    mapping: EVENTS.into(),
                    reason,
                })?;
        let mut mapper = Some(plugin);
        let mut check = MappingCheck {
            mapping: EVENTS.into(),
            source: "email event journal".into(),
            destination: "activities".into(),
            ..MappingCheck::default()
        };

        // Source side: the journal from its oldest retained event, mapped page by page.
        let page_size = config.pacing(id).page_size.max(1);
        let page_size = options.sample.map_or(page_size, |n| n.clamp(1, page_size));
        let mut expected: Vec<Expected> = Vec::new();
        let mut rejected: Vec<(usize, String)> = Vec::new();
        let mut positions: HashMap<String, usize> = HashMap::new();
        let mut pages = JournalPages::new(&services, page_size, options.sample);
        while let Some(events) = pages.next().await? {
            let first = positions.len();
            for (offset, event) in events.iter().enumerate() {
                positions.insert(event.id.clone(), first + offset);
            }
            let (events, results) = map_events(&mut mapper, events).await?;
            for (offset, (event, result)) in events.iter().zip(results).enumerate() {
                let position = first + offset;
                match result {
                    Ok(Outcome::Write { records }) => {
                        expected.extend(
                            records
                                .into_iter()
                                .filter(|record| record.target.system == System::Dynamics)
                                .map(|record| Expected {
                                    position,
                                    event: event.id.clone(),
                                    record,
                                }),
                        );
                    }
                    Ok(Outcome::Skip { .. }) => check.filtered += 1,
                    Ok(Outcome::Reject { .. }) | Err(_) => {
                        rejected.push((position, event.id.clone()));
                    }
                }
            }
            check.source_records = positions.len() as u64;
            progress(VerifyProgress {
                mapping: EVENTS.into(),
                side: "source".into(),
                records: check.source_records,
            });
        }
        // A re-delivered event maps to the same activity: the last write of a key is what the
        // destination ends with.
        let mut latest: HashMap<(String, String), usize> = HashMap::new();
        for (index, wanted) in expected.iter().enumerate() {
            latest.insert(
                (
                    wanted.record.target.table.clone(),
                    wanted.record.key.clone(),
                ),
                index,
            );
        }
        let mut kept: Vec<usize> = latest.into_values().collect();
        kept.sort_unstable();
        let expected: Vec<Expected> = {
            let mut slots: Vec<Option<Expected>> = expected.into_iter().map(Some).collect();
            kept.into_iter()
                .filter_map(|index| slots[index].take())
                .collect()
        };

        // Destination side: each activity looked up by the key it is written under.
        let stored = self
            .read_activities(reader.as_ref(), &expected, progress, &mut check)
            .await?;
        let mut missing: Vec<&Expected> = Vec::new();
        let mut stale: Vec<(&Expected, StaleRecord)> = Vec::new();
        let mut by_table: HashMap<&str, Vec<(&Expected, &StoredRecord)>> = HashMap::new();
        for wanted in &expected {
            let key = (
                wanted.record.target.table.clone(),
                wanted.record.key.clone(),
            );
            match stored.get(&key) {
                Some(found) => by_table
                    .entry(wanted.record.target.table.as_str())
                    .or_default()
                    .push((wanted, found)),
                None => missing.push(wanted),
            }
        }
        for (table, found) in by_table {
            let inputs: Vec<_> = found
                .iter()
                .map(|(wanted, _)| comparable_fields(&wanted.record))
                .collect();
            let forms = reader
                .stored_forms(table, &inputs)
                .await
                .map_err(|source| VerifyError::Destination {
                    table: table.to_owned(),
                    source,
                })?;
            for ((wanted, record), form) in found.into_iter().zip(forms) {
                let fields = differences_from(form, record);
                if fields.is_empty() {
                    check.matching += 1;
                } else {
                    stale.push((
                        wanted,
                        StaleRecord {
                            key: wanted.record.key.clone(),
                            fields,
                        },
                    ));
                }
            }
        }
        missing.sort_by_key(|wanted| wanted.position);
        stale.sort_by_key(|(wanted, _)| wanted.position);

        // The workflow's progress, read after both sides so that work done meanwhile counts as
        // work in progress: events it has not read yet, queued writes, dead letters.
        let unread_from = self.first_unread(&services, &positions).await?;
        let pending = self.store().pending_keys(id)?;
        let dead_events = self.dead_lettered_events()?;
        let waiting = |wanted: &Expected| {
            unread_from.is_some_and(|first| wanted.position >= first)
                || pending.queued.contains(&(
                    wanted.record.target.table.clone(),
                    wanted.record.key.clone(),
                ))
        };
        let dead = |wanted: &Expected| {
            dead_events.contains(&wanted.event)
                || pending.dead_writes.contains(&(
                    wanted.record.target.table.clone(),
                    wanted.record.key.clone(),
                ))
        };
        let mut differing: Vec<WriteRecord> = Vec::new();
        for wanted in missing {
            if waiting(wanted) {
                check.in_backlog.push(&wanted.record.key);
            } else if dead(wanted) {
                check.dead_lettered.push(&wanted.record.key);
            } else {
                check.missing.push(&wanted.record.key);
                differing.push(wanted.record.clone());
            }
        }
        for (wanted, record) in stale {
            if waiting(wanted) {
                check.in_backlog.push(&wanted.record.key);
            } else if dead(wanted) {
                check.dead_lettered.push(&wanted.record.key);
            } else {
                check.stale_count += 1;
                if check.stale.len() < EXAMPLES {
                    check.stale.push(record);
                }
                differing.push(wanted.record.clone());
            }
        }
        rejected.sort_unstable();
        for (position, event) in &rejected {
            if unread_from.is_some_and(|first| *position >= first) {
                check.in_backlog.push(event);
            } else if dead_events.contains(event) {
                check.dead_lettered.push(event);
            } else {
                check.rejected.push(event);
            }
        }
        if options.repair && !differing.is_empty() {
            check.repaired = differing.len() as u64;
            let records = differing
                .into_iter()
                .map(|record| (EVENTS_SOURCE.to_owned(), record))
                .collect();
            // The reader's own commit, without a cursor: queued behind what is queued already,
            // visible in the backlog, written by the normal writer.
            self.store().commit_read(
                id,
                ReadCommit {
                    source: EVENTS_SOURCE.into(),
                    records,
                    ..ReadCommit::default()
                },
            )?;
        }
        let differences = check.differences();
        let repaired = check.repaired;
        let mut notes = vec![in_force_note];
        if options.sample.is_some() {
            notes.push(
                "a sample maps the oldest events of the journal and looks their activities up by key"
                    .to_owned(),
            );
        }
        notes.push(
            "events the journal no longer retains are not compared; activities are looked up by the key the mapper writes them under"
                .to_owned(),
        );
        if repaired > 0 {
            notes.push(format!(
                "{repaired} activit(ies) queued for the writer, mapped from their events; watch the backlog drain with `conduit status`"
            ));
        }
        Ok(VerifyReport {
            workflow: id,
            scope: options.scope(),
            in_sync: differences == 0,
            differences,
            mappings: vec![check],
            repaired,
            notes,
        })
    }

    /// Looks the expected activities up, a chunk of keys at a time per table.
    async fn read_activities(
        &self,
        reader: &dyn RecordReader,
        expected: &[Expected],
        progress: &(dyn Fn(VerifyProgress) + Send + Sync),
        check: &mut MappingCheck,
    ) -> Result<HashMap<(String, String), StoredRecord>, VerifyError> {
        let mut keys_of: Vec<((&str, &str), Vec<String>)> = Vec::new();
        for wanted in expected {
            let target = (
                wanted.record.target.table.as_str(),
                wanted.record.target.key_field.as_str(),
            );
            match keys_of.iter_mut().find(|(at, _)| *at == target) {
                Some((_, keys)) => keys.push(wanted.record.key.clone()),
                None => keys_of.push((target, vec![wanted.record.key.clone()])),
            }
        }
        let mut stored = HashMap::new();
        for ((table, key_field), keys) in keys_of {
            for chunk in keys.chunks(LOOKUP_CHUNK) {
                let found = reader
                    .read_stored_keys(table, key_field, chunk)
                    .await
                    .map_err(|source| VerifyError::Destination {
                        table: table.to_owned(),
                        source,
                    })?;
                for record in found {
                    stored.insert((table.to_owned(), record.key.clone()), record);
                }
                check.destination_records = stored.len() as u64;
                progress(VerifyProgress {
                    mapping: EVENTS.into(),
                    side: "destination".into(),
                    records: check.destination_records,
                });
            }
        }
        Ok(stored)
    }

    /// The journal position (as read by the verify) of the first event the workflow has not
    /// read yet, if it is among those read; `None` when the workflow has read them all.
    async fn first_unread(
        &self,
        services: &Services,
        positions: &HashMap<String, usize>,
    ) -> Result<Option<usize>, VerifyError> {
        let cursor = self
            .store()
            .cursor(WorkflowId::Egress, EVENTS_SOURCE)?
            .and_then(|state| state.cursor);
        let next = services
            .events
            .read_events(cursor.as_deref(), 1)
            .await
            .map_err(journal_error)?;
        Ok(next
            .events
            .first()
            .and_then(|event| positions.get(&event.id).copied()))
    }

    /// The ids of the events Egress holds in read-stage dead letters.
    fn dead_lettered_events(&self) -> Result<HashSet<String>, VerifyError> {
        let letters = self.store().dead_letters(
            WorkflowId::Egress,
            &DeadLetterFilter {
                limit: Some(usize::MAX),
                ..DeadLetterFilter::default()
            },
        )?;
        Ok(letters
            .into_iter()
            .filter_map(|letter| match letter.payload {
                DeadLetterPayload::Event { event } => Some(event.id),
                _ => None,
            })
            .collect())
    }
}

/// What a failed read of the journal says.
fn journal_error(source: conduit_connectors::ConnectorError) -> VerifyError {
    VerifyError::Source {
        table: "email event journal".into(),
        source,
    }
}

/// Campaign's email event journal read from its oldest retained event (the workflow's cursor
/// left alone), page by page, up to `limit` events when given: the source side of verify and
/// preview of Egress.
pub(super) struct JournalPages<'a> {
    services: &'a Services,
    page_size: u32,
    limit: Option<u32>,
    read: u64,
    cursor: Option<String>,
    done: bool,
}

impl<'a> JournalPages<'a> {
    /// Pages of `page_size` events, at most `limit` events in all.
    pub(super) fn new(services: &'a Services, page_size: u32, limit: Option<u32>) -> Self {
        JournalPages {
            services,
            page_size: page_size.max(1),
            limit,
            read: 0,
            cursor: None,
            done: limit == Some(0),
        }
    }

    /// The next page's events, or `None` once the journal's end or the limit is reached.
    pub(super) async fn next(&mut self) -> Result<Option<Vec<EmailEvent>>, VerifyError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .services
            .events
            .read_events(self.cursor.as_deref(), self.page_size)
            .await
            .map_err(journal_error)?;
        let mut events = page.events;
        if let Some(limit) = self.limit {
            events.truncate((limit as usize).saturating_sub(self.read as usize));
        }
        self.read += events.len() as u64;
        let full = self
            .limit
            .is_some_and(|limit| self.read >= u64::from(limit));
        // A journal that hands back no new cursor has nothing after this page.
        self.done =
            events.is_empty() || full || page.cursor.is_none() || page.cursor == self.cursor;
        self.cursor = page.cursor;
        Ok((!events.is_empty()).then_some(events))
    }
}

/// Maps one page of events with `mapper` on a plugin thread, one event at a time after a
/// failing batch, as the reader does.
pub(super) async fn map_events(
    mapper: &mut Option<Box<dyn EventMapping>>,
    events: Vec<EmailEvent>,
) -> Result<(Vec<EmailEvent>, Vec<Result<Outcome, String>>), VerifyError> {
    on_plugin_thread(
        mapper,
        "mapper",
        WorkflowId::Egress,
        events,
        |mapper, events: &Vec<EmailEvent>| isolate(events, |items| mapper.map(items)),
    )
    .await
    .map_err(|error| VerifyError::Plugin {
        mapping: EVENTS.into(),
        reason: step_reason(error),
    })
}
