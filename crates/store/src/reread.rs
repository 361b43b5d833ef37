//! Re-reads: records still queued when their table mapping changed. At the restart that
//! applies the change, their queued writes (mapped under the old mapping) leave the queue and
//! their keys wait here; the reader then reads those rows afresh and maps them with the new
//! mapping, so a field the new mapping no longer has is never written and nothing is
//! dead-lettered for it. Deletes stay queued: they carry no fields.

use redb::{ReadableTable, ReadableTableMetadata};

use super::codec::decode_queued;
use super::counters::counter_add;
use super::ledger;
use super::tables::{LEDGER, QUEUE, REREAD, counter};
use super::{Store, StoreError};
use conduit_model::{Operation, Phase, WorkflowId};

/// The phase byte of a re-read: whether apply-updates-off fields must be written again.
fn phase_byte(phase: Phase) -> u8 {
    match phase {
        Phase::Incremental => 0,
        Phase::Initial | Phase::Replay => 1,
    }
}

fn byte_phase(byte: u8) -> Phase {
    if byte == 0 {
        Phase::Incremental
    } else {
        Phase::Replay
    }
}

impl Store {
    /// Moves the queued upserts of Ingress mapping `mapping` to its re-read list, in one
    /// transaction; returns how many left the queue.
    pub fn queue_rereads(&self, mapping: &str) -> Result<u64, StoreError> {
        let wf = WorkflowId::Ingress.as_str();
        let write = self.begin_write()?;
        let moved;
        {
            let mut queue = write.open_table(QUEUE)?;
            let mut rereads = write.open_table(REREAD)?;
            let mut ledger_table = write.open_table(LEDGER)?;
            let mut doomed = Vec::new();
            for entry in queue.range((wf, 0)..=(wf, u64::MAX))? {
                let (key, value) = entry?;
                let record = decode_queued(key.value().1, value.value())?;
                if record.origin == mapping && record.record.op != Operation::Delete {
                    doomed.push((key.value().1, record));
                }
            }
            self.recent().forget_workflow(WorkflowId::Ingress);
            for (seq, record) in &doomed {
                queue.remove((wf, *seq))?;
                // A record queued before phases were kept is re-read as a replay would be:
                // writing an apply-updates-off field once more beats never writing it.
                let phase = phase_byte(record.phase.unwrap_or(Phase::Replay));
                let key = (mapping, record.record.key.as_str());
                let stronger = rereads
                    .get(key)?
                    .map(|found| found.value().first().copied().unwrap_or(1))
                    .unwrap_or(0)
                    .max(phase);
                rereads.insert(key, [stronger].as_slice())?;
                // Its old values never reached the destination: the re-read must not be
                // skipped as unchanged.
                ledger::forget_values(&mut ledger_table, &record.record)?;
            }
            moved = doomed.len() as u64;
            drop(queue);
            counter_add(&write, wf, counter::QUEUED, -(moved as i64))?;
        }
        write.commit()?;
        Ok(moved)
    }

    /// Up to `max` keys of mapping `mapping` waiting to be read again, with their phase.
    pub fn rereads(&self, mapping: &str, max: usize) -> Result<Vec<(String, Phase)>, StoreError> {
        let read = self.begin_read()?;
        let table = read.open_table(REREAD)?;
        let mut found = Vec::new();
        for entry in table.range((mapping, "")..)? {
            let (key, value) = entry?;
            let (owner, record_key) = key.value();
            if owner != mapping || found.len() >= max {
                break;
            }
            let phase = byte_phase(value.value().first().copied().unwrap_or(1));
            found.push((record_key.to_string(), phase));
        }
        Ok(found)
    }

    /// How many keys wait to be read again, over all mappings.
    pub fn reread_count(&self) -> Result<u64, StoreError> {
        let read = self.begin_read()?;
        Ok(read.open_table(REREAD)?.len()?)
    }

    /// Keys waiting on the re-read list of one owner (a mapping, or Opt-in/out's list), counted
    /// without reading them out.
    pub fn reread_count_of(&self, owner: &str) -> Result<u64, StoreError> {
        let read = self.begin_read()?;
        let table = read.open_table(REREAD)?;
        let mut count = 0;
        for entry in table.range((owner, "")..)? {
            if entry?.0.value().0 != owner {
                break;
            }
            count += 1;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_owner_counts_only_its_own_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("conduit.redb")).unwrap();
        let keys = |names: &[&str]| names.iter().map(ToString::to_string).collect::<Vec<_>>();
        store
            .request_rereads("contacts", &keys(&["a", "b", "c"]))
            .unwrap();
        store.request_rereads("contacts2", &keys(&["a"])).unwrap();
        store
            .request_rereads("opt-in/out", &keys(&["x", "y"]))
            .unwrap();
        assert_eq!(store.reread_count().unwrap(), 6);
        assert_eq!(store.reread_count_of("contacts").unwrap(), 3);
        assert_eq!(store.reread_count_of("contacts2").unwrap(), 1);
        assert_eq!(store.reread_count_of("opt-in/out").unwrap(), 2);
        assert_eq!(store.reread_count_of("contact").unwrap(), 0);
    }
}
