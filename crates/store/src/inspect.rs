//! What `conduit verify` asks of the store: which destination keys still wait in a workflow's
//! queue, in the re-read list or in the dead letters (a difference there is work in progress,
//! not a fault), which destination records Conduit wrote (the ledger), and the repair request
//! that sends keys back through the normal reader and writer.
//!
//! Only reads, except [`Store::request_rereads`], which adds keys to the re-read list in one
//! transaction: the reader then reads each row afresh and maps it with the mapping in force,
//! so a repair writes the source as it is then, never a value remembered from the comparison.

use std::collections::HashSet;

use conduit_model::{System, WorkflowId};

use super::codec::decode_queued;
use super::dead_letters::DeadLetterPayload;
use super::ledger;
use super::tables::{DEAD_LETTERS, LEDGER, QUEUE, REREAD};
use super::{DeadLetter, Store, StoreError, decode_json};

/// The keys of a workflow's unfinished work, by where they wait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingKeys {
    /// Queued writes: (destination table, key).
    pub queued: HashSet<(String, String)>,
    /// Keys waiting to be read again: (mapping, key).
    pub rereads: HashSet<(String, String)>,
    /// Dead-lettered writes: (destination table, key).
    pub dead_writes: HashSet<(String, String)>,
    /// Dead-lettered source records: (origin, source key).
    pub dead_sources: HashSet<(String, String)>,
}

impl PendingKeys {
    /// True when the write of `key` to `table` (read through `mapping`) still waits in the
    /// queue or the re-read list.
    pub fn in_backlog(&self, mapping: &str, table: &str, key: &str) -> bool {
        self.queued.contains(&(table.to_owned(), key.to_owned()))
            || self.rereads.contains(&(mapping.to_owned(), key.to_owned()))
    }

    /// True when a dead letter holds the write of `key` to `table`, or the source record
    /// `key` read through `mapping`.
    pub fn dead_lettered(&self, mapping: &str, table: &str, key: &str) -> bool {
        self.dead_writes
            .contains(&(table.to_owned(), key.to_owned()))
            || self
                .dead_sources
                .contains(&(mapping.to_owned(), key.to_owned()))
    }
}

impl Store {
    /// The keys of `workflow`'s queued writes, re-reads (Ingress) and dead letters, read in
    /// one transaction.
    pub fn pending_keys(&self, workflow: WorkflowId) -> Result<PendingKeys, StoreError> {
        let wf = workflow.as_str();
        let read = self.begin_read()?;
        let mut keys = PendingKeys::default();
        let queue = read.open_table(QUEUE)?;
        for entry in queue.range((wf, 0)..=(wf, u64::MAX))? {
            let (key, value) = entry?;
            let queued = decode_queued(key.value().1, value.value())?;
            keys.queued
                .insert((queued.record.target.table, queued.record.key));
        }
        if workflow == WorkflowId::Ingress {
            let rereads = read.open_table(REREAD)?;
            for entry in rereads.range::<(&str, &str)>(..)? {
                let (key, _) = entry?;
                let (mapping, record) = key.value();
                keys.rereads.insert((mapping.to_owned(), record.to_owned()));
            }
        }
        let letters = read.open_table(DEAD_LETTERS)?;
        for entry in letters.range((wf, 0)..=(wf, u64::MAX))? {
            let (_, value) = entry?;
            let letter: DeadLetter = decode_json("dead letter", value.value())?;
            match letter.payload {
                DeadLetterPayload::Write { record } => {
                    keys.dead_writes.insert((record.target.table, record.key));
                }
                DeadLetterPayload::SourceRecord { batch, .. } => {
                    for row in batch.rows {
                        keys.dead_sources.insert((letter.origin.clone(), row.key));
                    }
                }
                DeadLetterPayload::OptOut { contact } => {
                    keys.dead_sources
                        .insert((letter.origin.clone(), contact.contact_key));
                }
                DeadLetterPayload::Event { .. } => {}
            }
        }
        Ok(keys)
    }

    /// Which of `keys` of `system`'s `table` Conduit has written and not deleted since (the
    /// ledger's entries): only those may be deleted by Conduit.
    pub fn owned_keys(
        &self,
        system: System,
        table: &str,
        keys: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        let destination = ledger::destination_name(system, table);
        let read = self.begin_read()?;
        let ledger_table = read.open_table(LEDGER)?;
        let mut owned = HashSet::new();
        for key in keys {
            if ledger_table
                .get((destination.as_str(), key.as_str()))?
                .is_some()
            {
                owned.insert(key.clone());
            }
        }
        Ok(owned)
    }

    /// Adds keys of Ingress mapping `mapping` to the re-read list, in one transaction, as a
    /// replay would (every mapped field is written again); returns how many were not waiting
    /// already. They show in the backlog until the reader has read and queued them.
    pub fn request_rereads(&self, mapping: &str, keys: &[String]) -> Result<u64, StoreError> {
        let write = self.begin_write()?;
        let mut added = 0;
        {
            let mut rereads = write.open_table(REREAD)?;
            for key in keys {
                // The replay phase: the ledger must not skip a write that Campaign lost.
                if rereads
                    .insert((mapping, key.as_str()), [1u8].as_slice())?
                    .is_none()
                {
                    added += 1;
                }
            }
        }
        write.commit()?;
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LedgerPolicy, ReadCommit};
    use conduit_model::{Operation, Target, Value, WriteRecord};

    fn write(key: &str) -> WriteRecord {
        WriteRecord {
            target: Target {
                system: System::Campaign,
                table: "profile".into(),
                key_field: "externalId".into(),
            },
            key: key.into(),
            op: Operation::Upsert,
            fields: vec![("firstName".into(), Value::Text("Ann".into()))],
        }
    }

    #[test]
    fn queued_keys_owned_keys_and_repairs_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("conduit.redb")).unwrap();
        store
            .commit_read(
                WorkflowId::Ingress,
                ReadCommit {
                    source: "contacts".into(),
                    records: vec![("contacts".into(), write("c-1"))],
                    ledger: LedgerPolicy::Record,
                    ..ReadCommit::default()
                },
            )
            .unwrap();
        let keys = store.pending_keys(WorkflowId::Ingress).unwrap();
        assert!(keys.in_backlog("contacts", "profile", "c-1"));
        assert!(!keys.in_backlog("contacts", "profile", "c-2"));
        assert!(!keys.dead_lettered("contacts", "profile", "c-1"));
        let owned = store
            .owned_keys(System::Campaign, "profile", &["c-1".into(), "c-2".into()])
            .unwrap();
        assert_eq!(owned, HashSet::from(["c-1".to_string()]));

        assert_eq!(
            store
                .request_rereads("contacts", &["c-2".into(), "c-3".into()])
                .unwrap(),
            2
        );
        assert_eq!(
            store.request_rereads("contacts", &["c-2".into()]).unwrap(),
            0
        );
        assert_eq!(store.reread_count().unwrap(), 2);
        let keys = store.pending_keys(WorkflowId::Ingress).unwrap();
        assert!(keys.in_backlog("contacts", "profile", "c-3"));
        assert!(!keys.in_backlog("vehicles", "profile", "c-3"));
        assert_eq!(
            store.rereads("contacts", 10).unwrap(),
            [
                ("c-2".to_string(), conduit_model::Phase::Replay),
                ("c-3".to_string(), conduit_model::Phase::Replay)
            ]
        );
    }
}
