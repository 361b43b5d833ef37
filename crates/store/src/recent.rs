//! Records the reader queued moments ago, kept decoded in memory next to the bytes it
//! committed, so that the writer, which usually takes them soon after, does not decode what was
//! just encoded.
//!
//! The queue table stays the only truth. A kept record is used only for a queue entry whose
//! committed bytes are byte-for-byte the bytes it was kept with; anything else (an entry
//! deferred and re-encoded since, a sequence number reused after a failed commit, an entry
//! removed and never taken) is decoded from the table as if nothing were kept. So no ordering
//! between commits, reads and this cache can ever hand the writer a record the table does not
//! hold, and the cache needs no invalidation to be correct; it is pruned only to bound memory.
//!
//! The cache is bounded per workflow in records and in bytes. When it is full, new records are
//! not kept (the oldest kept ones are those the writer takes next), so a large backlog costs a
//! bounded amount of memory and falls back to decoding.

use std::collections::{HashMap, VecDeque};

use conduit_model::WorkflowId;

use super::record::QueuedRecord;

/// The most records kept per workflow: a few writer batches' worth.
const MAX_RECORDS: usize = 8192;
/// The most encoded bytes kept per workflow (the decoded records take about as much again).
const MAX_BYTES: usize = 8 * 1024 * 1024;

/// One kept record and the bytes the queue committed for it.
struct Kept {
    bytes: Vec<u8>,
    record: QueuedRecord,
}

/// The kept records of one workflow in queue order: sequence numbers only grow, so a deque
/// with the taken ones left as holes until they reach its front is all the index needed.
#[derive(Default)]
struct Shelf {
    entries: VecDeque<(u64, Option<Kept>)>,
    /// Entries still holding a record.
    live: usize,
    /// Their encoded bytes.
    bytes: usize,
}

impl Shelf {
    /// Drops the holes at the front.
    fn compact(&mut self) {
        while matches!(self.entries.front(), Some((_, None))) {
            self.entries.pop_front();
        }
    }
}

/// Recently queued records of every workflow.
#[derive(Default)]
pub(super) struct Recent {
    shelves: HashMap<WorkflowId, Shelf>,
}

impl Recent {
    /// Keeps records whose queue entries were just committed with these bytes, as far as the
    /// bounds allow.
    pub(super) fn keep(
        &mut self,
        workflow: WorkflowId,
        committed: impl IntoIterator<Item = (Vec<u8>, QueuedRecord)>,
    ) {
        let shelf = self.shelves.entry(workflow).or_default();
        for (bytes, record) in committed {
            let full = shelf.live >= MAX_RECORDS
                || shelf.entries.len() >= 2 * MAX_RECORDS
                || shelf.bytes + bytes.len() > MAX_BYTES;
            // Out of order means a sequence number seen before: keep nothing rather than
            // lose the order the lookup relies on.
            let out_of_order = shelf
                .entries
                .back()
                .is_some_and(|(last, _)| *last >= record.seq);
            if full || out_of_order {
                return;
            }
            shelf.live += 1;
            shelf.bytes += bytes.len();
            shelf
                .entries
                .push_back((record.seq, Some(Kept { bytes, record })));
        }
    }

    /// The kept record of queue entry `seq` if it was kept with exactly `committed` (the
    /// entry's bytes now), removing it from the cache. `None`: decode the entry.
    pub(super) fn take(
        &mut self,
        workflow: WorkflowId,
        seq: u64,
        committed: &[u8],
    ) -> Option<QueuedRecord> {
        let shelf = self.shelves.get_mut(&workflow)?;
        let at = shelf
            .entries
            .binary_search_by_key(&seq, |(kept_seq, _)| *kept_seq)
            .ok()?;
        let kept = shelf.entries[at].1.take()?;
        shelf.live -= 1;
        shelf.bytes -= kept.bytes.len();
        shelf.compact();
        (kept.bytes == committed).then_some(kept.record)
    }

    /// Forgets every kept record below `head`, the oldest entry still queued: they were
    /// written, refused or removed, and will never be asked for.
    pub(super) fn forget_before(&mut self, workflow: WorkflowId, head: Option<u64>) {
        let Some(shelf) = self.shelves.get_mut(&workflow) else {
            return;
        };
        let Some(head) = head else {
            *shelf = Shelf::default();
            return;
        };
        while let Some((seq, _)) = shelf.entries.front() {
            if *seq >= head {
                break;
            }
            if let Some((_, Some(kept))) = shelf.entries.pop_front() {
                shelf.live -= 1;
                shelf.bytes -= kept.bytes.len();
            }
        }
        shelf.compact();
    }

    /// Forgets every kept record of a workflow (after entries were removed from the middle of
    /// its queue).
    pub(super) fn forget_workflow(&mut self, workflow: WorkflowId) {
        self.shelves.remove(&workflow);
    }

    /// How many records are kept for a workflow (for tests).
    #[cfg(test)]
    pub(super) fn len(&self, workflow: WorkflowId) -> usize {
        self.shelves.get(&workflow).map_or(0, |shelf| shelf.live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_model::{Operation, System, Target, WriteRecord};

    fn queued(seq: u64) -> (Vec<u8>, QueuedRecord) {
        let record = WriteRecord {
            target: Target {
                system: System::Campaign,
                table: "profile".into(),
                key_field: "externalId".into(),
            },
            key: format!("key-{seq}"),
            op: Operation::Upsert,
            fields: vec![],
        };
        let queued = QueuedRecord::new(seq, record, "contacts".into(), 0);
        (crate::codec::encode_queued(&queued), queued)
    }

    #[test]
    fn a_full_shelf_keeps_the_oldest_and_stays_within_its_bounds() {
        let mut recent = Recent::default();
        recent.keep(
            WorkflowId::Ingress,
            (0..MAX_RECORDS as u64 + 50).map(queued),
        );
        assert_eq!(recent.len(WorkflowId::Ingress), MAX_RECORDS);
        let (bytes, _) = queued(0);
        assert!(
            recent.take(WorkflowId::Ingress, 0, &bytes).is_some(),
            "the oldest is kept"
        );
        let (late, _) = queued(MAX_RECORDS as u64 + 10);
        assert!(
            recent
                .take(WorkflowId::Ingress, MAX_RECORDS as u64 + 10, &late)
                .is_none()
        );
        assert_eq!(recent.len(WorkflowId::Egress), 0, "workflows are apart");
    }

    #[test]
    fn the_byte_bound_holds_for_large_records() {
        let mut recent = Recent::default();
        let big = |seq: u64| {
            let (_, record) = queued(seq);
            (vec![1u8; 1024 * 1024], record)
        };
        recent.keep(WorkflowId::Ingress, (0..20).map(big));
        assert_eq!(recent.len(WorkflowId::Ingress), MAX_BYTES / (1024 * 1024));
    }

    #[test]
    fn other_bytes_are_never_answered_with_the_kept_record() {
        let mut recent = Recent::default();
        let (bytes, record) = queued(7);
        recent.keep(WorkflowId::Ingress, [(bytes.clone(), record)]);
        let mut changed = bytes.clone();
        changed.push(0);
        assert!(recent.take(WorkflowId::Ingress, 7, &changed).is_none());
        assert!(
            recent.take(WorkflowId::Ingress, 7, &bytes).is_none(),
            "a mismatch forgets the kept copy"
        );
    }

    #[test]
    fn records_taken_out_of_order_leave_the_rest_findable() {
        let mut recent = Recent::default();
        recent.keep(WorkflowId::Ingress, (0..6).map(queued));
        for seq in [3, 0, 5] {
            let (bytes, _) = queued(seq);
            assert!(
                recent.take(WorkflowId::Ingress, seq, &bytes).is_some(),
                "{seq}"
            );
        }
        assert_eq!(recent.len(WorkflowId::Ingress), 3);
        for seq in [1, 2, 4] {
            let (bytes, _) = queued(seq);
            let taken = recent.take(WorkflowId::Ingress, seq, &bytes);
            assert_eq!(taken.map(|record| record.seq), Some(seq));
        }
        assert_eq!(recent.len(WorkflowId::Ingress), 0);
        // A sequence number at or below the last kept is not kept.
        recent.keep(WorkflowId::Ingress, [queued(9)]);
        recent.keep(WorkflowId::Ingress, [queued(7), queued(9)]);
        assert_eq!(recent.len(WorkflowId::Ingress), 1);
    }

    #[test]
    fn forgetting_below_the_head_prunes_what_left_the_queue() {
        let mut recent = Recent::default();
        recent.keep(WorkflowId::Ingress, (0..10).map(queued));
        recent.forget_before(WorkflowId::Ingress, Some(6));
        assert_eq!(recent.len(WorkflowId::Ingress), 4);
        let (bytes, _) = queued(6);
        assert!(recent.take(WorkflowId::Ingress, 6, &bytes).is_some());
        recent.forget_before(WorkflowId::Ingress, None);
        assert_eq!(recent.len(WorkflowId::Ingress), 0);
    }
}
