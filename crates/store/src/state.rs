//! Per-workflow state kept across restarts: desired and last status, pending replays, source
//! cursors, counters and the last known opt-out values of each contact.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::tables::{COUNTERS, CURSORS, OPT_OUT_STATE, WORKFLOWS, counter};
use super::{Store, StoreError, decode_json, encode_json};
use conduit_model::{OptOutValue, Phase, WorkflowId};

/// Whether the operator wants a workflow running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Stopped (the default for a new host).
    #[default]
    Stopped,
    /// Running: started again when the host starts.
    Running,
}

/// What the store keeps about a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorkflowRecord {
    /// Running or stopped, as the operator last asked.
    pub desired: DesiredState,
    /// The last status reached (e.g. `RUNNING`, `ERROR`).
    pub last_status: String,
    /// The reason of the last error.
    pub last_error: Option<String>,
    /// Table mappings whose replay was accepted and is taken at the next start.
    pub pending_replays: Vec<String>,
    /// Each Ingress table mapping's fingerprint (its settings and plugin) when the workflow
    /// last started: a different one at a start means its queued records are mapped again.
    #[serde(default)]
    pub mapping_fingerprints: std::collections::BTreeMap<String, String>,
    /// The fingerprint of the workflow's config at its last start, to record in the audit
    /// trail when a start applies an edited config.
    #[serde(default)]
    pub applied_config: Option<String>,
}

/// Where a source's reader continues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorState {
    /// The opaque cursor (next link, delta link, journal position, file name); `None` = from the start.
    pub cursor: Option<String>,
    /// The phase the reader is in.
    pub phase: Phase,
    /// When the cursor was stored (milliseconds since the Unix epoch).
    pub updated_at_ms: i64,
}

impl CursorState {
    /// A cursor in the incremental phase.
    pub fn incremental(cursor: String) -> CursorState {
        CursorState::new(Some(cursor), Phase::Incremental)
    }

    /// A cursor in any phase, stamped now.
    pub fn new(cursor: Option<String>, phase: Phase) -> CursorState {
        CursorState {
            cursor,
            phase,
            updated_at_ms: super::record::now_ms(),
        }
    }
}

/// A workflow's counters, read in one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Records queued and not yet written: the backlog.
    pub queued: u64,
    /// Source records read, all time.
    pub read: u64,
    /// Records written, all time.
    pub written: u64,
    /// Source records skipped by the plugin or as changing nothing, all time.
    pub skipped: u64,
    /// Of the skipped: changes that would have written nothing new, all time.
    #[serde(default)]
    pub skipped_unchanged: u64,
    /// Of the skipped: deletes of destination records Conduit never wrote, left alone.
    #[serde(default)]
    pub skipped_not_owned: u64,
    /// Records dead-lettered, all time.
    pub dead_lettered: u64,
    /// Dead letters currently held.
    pub dead_letters: u64,
}

/// The last known opt-out values of one contact on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OptOutSnapshot {
    /// Dynamics 365 values.
    pub dynamics: Vec<OptOutValue>,
    /// Campaign values.
    pub campaign: Vec<OptOutValue>,
    /// Values this workflow last queued for Campaign, by attribute, that Campaign has not
    /// reported back yet: a repeat of one of them is not written again.
    #[serde(default)]
    pub sent_to_campaign: Vec<(String, bool)>,
}

impl Store {
    /// The stored record of a workflow (defaults for a new host).
    pub fn workflow(&self, workflow: WorkflowId) -> Result<WorkflowRecord, StoreError> {
        let read = self.begin_read()?;
        let table = read.open_table(WORKFLOWS)?;
        match table.get(workflow.as_str())? {
            Some(value) => decode_json("workflow state", value.value()),
            None => Ok(WorkflowRecord::default()),
        }
    }

    /// Changes the stored record of a workflow in one transaction.
    pub fn update_workflow(
        &self,
        workflow: WorkflowId,
        change: impl FnOnce(&mut WorkflowRecord),
    ) -> Result<WorkflowRecord, StoreError> {
        let write = self.begin_write()?;
        let record = {
            let mut table = write.open_table(WORKFLOWS)?;
            let mut record = match table.get(workflow.as_str())? {
                Some(value) => decode_json("workflow state", value.value())?,
                None => WorkflowRecord::default(),
            };
            change(&mut record);
            table.insert(workflow.as_str(), encode_json(&record).as_slice())?;
            record
        };
        write.commit()?;
        Ok(record)
    }

    /// The cursor of one source of a workflow.
    pub fn cursor(
        &self,
        workflow: WorkflowId,
        source: &str,
    ) -> Result<Option<CursorState>, StoreError> {
        let read = self.begin_read()?;
        let table = read.open_table(CURSORS)?;
        let value = table.get((workflow.as_str(), source))?;
        value
            .map(|value| decode_json("cursor", value.value()))
            .transpose()
    }

    /// Every cursor of a workflow, by source.
    pub fn cursors(&self, workflow: WorkflowId) -> Result<Vec<(String, CursorState)>, StoreError> {
        let wf = workflow.as_str();
        let read = self.begin_read()?;
        let table = read.open_table(CURSORS)?;
        let mut cursors = Vec::new();
        for entry in table.range((wf, "")..)? {
            let (key, value) = entry?;
            let (owner, source) = key.value();
            if owner != wf {
                break;
            }
            cursors.push((source.to_string(), decode_json("cursor", value.value())?));
        }
        Ok(cursors)
    }

    /// Sets a source's cursor outside a reader step (replay, resync).
    pub fn set_cursor(
        &self,
        workflow: WorkflowId,
        source: &str,
        cursor: &CursorState,
    ) -> Result<(), StoreError> {
        let write = self.begin_write()?;
        {
            let mut table = write.open_table(CURSORS)?;
            table.insert((workflow.as_str(), source), encode_json(cursor).as_slice())?;
        }
        write.commit()?;
        Ok(())
    }

    /// A workflow's counters.
    pub fn counters(&self, workflow: WorkflowId) -> Result<Counters, StoreError> {
        let wf = workflow.as_str();
        let read = self.begin_read()?;
        let table = read.open_table(COUNTERS)?;
        let get = |name: &str| -> Result<u64, StoreError> {
            Ok(table.get((wf, name))?.map(|v| v.value()).unwrap_or(0))
        };
        Ok(Counters {
            queued: get(counter::QUEUED)?,
            read: get(counter::READ)?,
            written: get(counter::WRITTEN)?,
            skipped: get(counter::SKIPPED)?,
            skipped_unchanged: get(counter::SKIPPED_UNCHANGED)?,
            skipped_not_owned: get(counter::SKIPPED_NOT_OWNED)?,
            dead_lettered: get(counter::DEAD_LETTERED)?,
            dead_letters: get(counter::DEAD_LETTERS)?,
        })
    }

    /// The last known opt-out values of a contact.
    pub fn opt_out_snapshot(
        &self,
        contact_key: &str,
    ) -> Result<Option<OptOutSnapshot>, StoreError> {
        let read = self.begin_read()?;
        let table = read.open_table(OPT_OUT_STATE)?;
        let value = table.get(contact_key)?;
        value
            .map(|value| decode_json("opt-out state", value.value()))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_state_and_pending_replays_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        {
            let store = Store::open(&path).unwrap();
            store
                .update_workflow(WorkflowId::Ingress, |record| {
                    record.desired = DesiredState::Running;
                    record.pending_replays.push("contacts".into());
                })
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let record = store.workflow(WorkflowId::Ingress).unwrap();
        assert_eq!(record.desired, DesiredState::Running);
        assert_eq!(record.pending_replays, ["contacts"]);
        assert_eq!(
            store.workflow(WorkflowId::Egress).unwrap().desired,
            DesiredState::Stopped
        );
    }

    #[test]
    fn cursors_are_listed_per_workflow() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.redb")).unwrap();
        store
            .set_cursor(
                WorkflowId::Ingress,
                "contacts",
                &CursorState::incremental("a".into()),
            )
            .unwrap();
        store
            .set_cursor(
                WorkflowId::Ingress,
                "vehicles",
                &CursorState::new(None, Phase::Replay),
            )
            .unwrap();
        store
            .set_cursor(
                WorkflowId::Egress,
                "events",
                &CursorState::incremental("p".into()),
            )
            .unwrap();
        let sources: Vec<_> = store
            .cursors(WorkflowId::Ingress)
            .unwrap()
            .into_iter()
            .map(|(source, _)| source)
            .collect();
        assert_eq!(sources, ["contacts", "vehicles"]);
    }
}
