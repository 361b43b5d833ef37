//! Dead letters: inputs a plugin rejected or could not map, and writes the destination refused
//! for good, each with its payload, reason, stage, times and attempts. Nothing is ever dropped
//! silently: a dead letter leaves the store only by an operator's retry or drop.

use redb::WriteTransaction;
use serde::{Deserialize, Serialize};

use super::codec::encode_queued;
use super::counters::{counter_add, counter_get, counter_set};
use super::record::{QueuedRecord, now_ms};
use super::tables::{DEAD_LETTERS, QUEUE, counter};
use super::{Store, StoreError, decode_json, encode_json};
use conduit_model::{ContactOptOut, EmailEvent, Phase, RecordBatch, WorkflowId, WriteRecord};

/// Which stage gave up on the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The reader: the plugin rejected or failed on the input.
    Read,
    /// The writer: the destination refused the write.
    Write,
}

impl Stage {
    /// The name used in the API and the CLI (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Write => "write",
        }
    }
}

/// What was dead-lettered, kept whole so that it can be retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DeadLetterPayload {
    /// A source row (as a one-row batch) and the phase it was read in.
    SourceRecord {
        /// The row with its table and columns.
        batch: RecordBatch,
        /// The phase it was read in.
        phase: Phase,
    },
    /// An email event.
    Event {
        /// The event.
        event: EmailEvent,
    },
    /// A contact's opt-out states.
    OptOut {
        /// The states.
        contact: ContactOptOut,
    },
    /// A write the destination refused.
    Write {
        /// The write.
        record: WriteRecord,
    },
}

/// A dead letter to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    /// The stage that gave up.
    pub stage: Stage,
    /// Where it came from (mapping name, `events`, `opt-out`).
    pub origin: String,
    /// Why.
    pub reason: String,
    /// The item.
    pub payload: DeadLetterPayload,
    /// Attempts made before giving up.
    pub attempts: u32,
}

impl NewDeadLetter {
    /// A write the destination refused.
    pub fn write_refused(queued: QueuedRecord, reason: String) -> NewDeadLetter {
        NewDeadLetter {
            stage: Stage::Write,
            origin: queued.origin,
            reason,
            payload: DeadLetterPayload::Write {
                record: queued.record,
            },
            attempts: queued.attempts.saturating_add(1),
        }
    }
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its id within the workflow.
    #[serde(default)]
    pub id: u64,
    /// The workflow.
    pub workflow: WorkflowId,
    /// The stage that gave up.
    pub stage: Stage,
    /// Where it came from.
    pub origin: String,
    /// Why.
    pub reason: String,
    /// The item.
    pub payload: DeadLetterPayload,
    /// Attempts made.
    pub attempts: u32,
    /// When it was dead-lettered (milliseconds since the Unix epoch).
    pub failed_at_ms: i64,
}

/// Which dead letters to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only this stage.
    pub stage: Option<Stage>,
    /// Only this origin.
    pub origin: Option<String>,
    /// Only reasons containing this text (case-insensitive).
    pub reason_contains: Option<String>,
    /// Only ids after this one (paging).
    pub after_id: Option<u64>,
    /// At most this many (default 100).
    pub limit: Option<usize>,
}

impl DeadLetterFilter {
    fn matches(&self, letter: &DeadLetter) -> bool {
        self.stage.is_none_or(|stage| stage == letter.stage)
            && self
                .origin
                .as_ref()
                .is_none_or(|origin| origin == &letter.origin)
            && self
                .reason_contains
                .as_ref()
                .is_none_or(|text| letter.reason.to_lowercase().contains(&text.to_lowercase()))
    }
}

pub(super) fn insert_all(
    write: &WriteTransaction,
    workflow: WorkflowId,
    letters: Vec<NewDeadLetter>,
    now: i64,
) -> Result<(), StoreError> {
    if letters.is_empty() {
        return Ok(());
    }
    let wf = workflow.as_str();
    let mut next_id = counter_get(write, wf, counter::NEXT_DEAD_LETTER)?.max(1);
    let count = letters.len() as i64;
    {
        let mut table = write.open_table(DEAD_LETTERS)?;
        for letter in letters {
            let stored = DeadLetter {
                id: next_id,
                workflow,
                stage: letter.stage,
                origin: letter.origin,
                reason: letter.reason,
                payload: letter.payload,
                attempts: letter.attempts,
                failed_at_ms: now,
            };
            table.insert((wf, next_id), encode_json(&stored).as_slice())?;
            next_id += 1;
        }
    }
    counter_set(write, wf, counter::NEXT_DEAD_LETTER, next_id)?;
    counter_add(write, wf, counter::DEAD_LETTERS, count)?;
    counter_add(write, wf, counter::DEAD_LETTERED, count)?;
    Ok(())
}

impl Store {
    /// Lists a workflow's dead letters, oldest first.
    pub fn dead_letters(
        &self,
        workflow: WorkflowId,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let wf = workflow.as_str();
        let limit = filter.limit.unwrap_or(100);
        let start = filter.after_id.map_or(0, |id| id.saturating_add(1));
        let read = self.begin_read()?;
        let table = read.open_table(DEAD_LETTERS)?;
        let mut found = Vec::new();
        for entry in table.range((wf, start)..=(wf, u64::MAX))? {
            if found.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let mut letter: DeadLetter = decode_json("dead letter", value.value())?;
            letter.id = key.value().1;
            if filter.matches(&letter) {
                found.push(letter);
            }
        }
        Ok(found)
    }

    /// One dead letter.
    pub fn dead_letter(&self, workflow: WorkflowId, id: u64) -> Result<DeadLetter, StoreError> {
        let read = self.begin_read()?;
        let table = read.open_table(DEAD_LETTERS)?;
        let value = table
            .get((workflow.as_str(), id))?
            .ok_or_else(|| not_found(workflow, id))?;
        let mut letter: DeadLetter = decode_json("dead letter", value.value())?;
        letter.id = id;
        Ok(letter)
    }

    /// Deletes a dead letter for good.
    pub fn drop_dead_letter(&self, workflow: WorkflowId, id: u64) -> Result<(), StoreError> {
        let wf = workflow.as_str();
        let write = self.begin_write()?;
        {
            let mut table = write.open_table(DEAD_LETTERS)?;
            if table.remove((wf, id))?.is_none() {
                return Err(not_found(workflow, id));
            }
            drop(table);
            counter_add(&write, wf, counter::DEAD_LETTERS, -1)?;
        }
        write.commit()?;
        Ok(())
    }

    /// Moves a refused write back to the front of its workflow's queue, in one transaction.
    /// Fails for dead letters of the read stage: those are retried through the plugin.
    pub fn requeue_dead_letter(&self, workflow: WorkflowId, id: u64) -> Result<(), StoreError> {
        let wf = workflow.as_str();
        let letter = self.dead_letter(workflow, id)?;
        let DeadLetterPayload::Write { record } = letter.payload else {
            return Err(StoreError::NotFound(format!(
                "dead letter {id} of {workflow} is not a refused write; retry it through the plugin"
            )));
        };
        let write = self.begin_write()?;
        {
            let mut table = write.open_table(DEAD_LETTERS)?;
            if table.remove((wf, id))?.is_none() {
                return Err(not_found(workflow, id));
            }
            drop(table);
            let mut queue = write.open_table(QUEUE)?;
            let seq = counter_get(&write, wf, counter::NEXT_SEQ)?;
            let body = QueuedRecord::new(seq, record, letter.origin, now_ms());
            queue.insert((wf, seq), encode_queued(&body).as_slice())?;
            drop(queue);
            counter_set(&write, wf, counter::NEXT_SEQ, seq + 1)?;
            counter_add(&write, wf, counter::QUEUED, 1)?;
            counter_add(&write, wf, counter::DEAD_LETTERS, -1)?;
        }
        write.commit()?;
        Ok(())
    }
}

fn not_found(workflow: WorkflowId, id: u64) -> StoreError {
    StoreError::NotFound(format!(
        "no dead letter {id} in {workflow}; list them with `conduit dlq list {workflow}`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WriteCommit;
    use conduit_model::{Operation, System, Target};

    #[test]
    fn a_requeued_write_leaves_the_dead_letters_and_joins_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.redb")).unwrap();
        let record = WriteRecord {
            target: Target {
                system: System::Dynamics,
                table: "contacts".into(),
                key_field: "contactid".into(),
            },
            key: "k".into(),
            op: Operation::Update,
            fields: vec![],
        };
        let queued = QueuedRecord::new(0, record.clone(), "opt-out".into(), 0);
        store
            .commit_read(
                WorkflowId::OptInOut,
                crate::ReadCommit {
                    records: vec![("opt-out".into(), record.clone())],
                    ..Default::default()
                },
            )
            .unwrap();
        store
            .commit_write(
                WorkflowId::OptInOut,
                WriteCommit {
                    refused: vec![(queued, "404".into())],
                    ..Default::default()
                },
            )
            .unwrap();
        let letters = store
            .dead_letters(WorkflowId::OptInOut, &DeadLetterFilter::default())
            .unwrap();
        assert_eq!(letters.len(), 1);
        store
            .requeue_dead_letter(WorkflowId::OptInOut, letters[0].id)
            .unwrap();
        assert_eq!(store.backlog(WorkflowId::OptInOut).unwrap(), 1);
        assert!(
            store
                .dead_letters(WorkflowId::OptInOut, &DeadLetterFilter::default())
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .dead_letter(WorkflowId::OptInOut, letters[0].id)
                .is_err()
        );
    }

    #[test]
    fn filters_select_dead_letters_by_stage_origin_and_reason() {
        let letter = DeadLetter {
            id: 1,
            workflow: WorkflowId::Ingress,
            stage: Stage::Read,
            origin: "contacts".into(),
            reason: "Plugin trapped: OUT OF FUEL".into(),
            payload: DeadLetterPayload::Write {
                record: WriteRecord {
                    target: Target {
                        system: System::Campaign,
                        table: "profile".into(),
                        key_field: "externalId".into(),
                    },
                    key: "k".into(),
                    op: Operation::Delete,
                    fields: vec![],
                },
            },
            attempts: 1,
            failed_at_ms: 0,
        };
        let by_reason = DeadLetterFilter {
            reason_contains: Some("out of fuel".into()),
            ..Default::default()
        };
        assert!(by_reason.matches(&letter));
        let by_stage = DeadLetterFilter {
            stage: Some(Stage::Write),
            ..Default::default()
        };
        assert!(!by_stage.matches(&letter));
        let by_origin = DeadLetterFilter {
            origin: Some("vehicles".into()),
            ..Default::default()
        };
        assert!(!by_origin.matches(&letter));
    }
}
