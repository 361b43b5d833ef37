//! The queue between a workflow's reader and writer: the reader's atomic commit (outputs, dead
//! letters, cursor, counters) and the writer's atomic commit (removals, dead letters, retries).
//!
//! A record that could not be written now (a transient failure, or a destination not ready for
//! it yet) is *deferred*: it keeps its place in the queue with a "not before" time, its attempt
//! count and the reason, all in the same transaction as the rest of the writer's step. Until
//! then the writer passes it by and writes what is behind it, except later writes of the same
//! key, which wait behind it: per-key order holds across deferrals, restarts and crashes.

use std::hash::{BuildHasher, RandomState};
use std::ops::Bound;

use rustc_hash::FxHashSet;

use redb::{CursorError, ReadTransaction, ReadableTable, Table, WriteTransaction};

use super::codec::{decode_queued, encode_queued};
use super::counters::{counter_add, counter_get, counter_set};
use super::dead_letters::{self, NewDeadLetter};
use super::ledger::{self, Decision, LedgerPolicy};
use super::locations::{self, LocationChange, LocationKey};
use super::record::{QueuedRecord, now_ms};
use super::state::{CursorState, OptOutSnapshot};
use super::tables::{
    CURSORS, DEAD_LETTERS, LEDGER, LOCATIONS, META, META_LEDGER_PARTIAL, META_NEXT_ADDRESS_SLOT,
    OPT_OUT_STATE, QUEUE, REREAD, SLOT_LOCATIONS, counter,
};
use super::{Store, StoreError, encode_json};
use conduit_model::{Phase, WorkflowId, WriteRecord};

/// A queued record not written now, to be tried again later: it stays queued (holding back later
/// writes of its key) with one more attempt counted, but is not handed to the writer before
/// `not_before_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Deferral {
    /// The record's position in the queue.
    pub seq: u64,
    /// Not before this time (ms since the Unix epoch).
    pub not_before_ms: i64,
    /// Why it was not written (kept with the record, and in its dead letter if it comes to it).
    pub reason: String,
}

/// The records an earlier batch is still writing: a later batch passes them by, and later
/// writes of their keys wait until that batch is committed.
///
/// Destination keys are held as 64-bit hashes ([`InFlight::identity`]), not copies: a batch
/// compares every record it scans, and hashing borrows where copying allocates. Two keys with
/// the same hash only make the later one wait for the next batch; order is never broken,
/// because a key whose hash is in flight or already in the batch is never taken.
#[derive(Debug, Default, Clone)]
pub struct InFlight {
    seqs: FxHashSet<u64>,
    keys: FxHashSet<u64>,
    hasher: RandomState,
}

impl InFlight {
    /// Marks records as being written.
    pub fn add(&mut self, records: &[QueuedRecord]) {
        for queued in records {
            self.seqs.insert(queued.seq);
            self.keys.insert(self.identity(&queued.record));
        }
    }

    /// Marks records as no longer being written (their step was committed or abandoned).
    pub fn remove(&mut self, records: &[QueuedRecord]) {
        for queued in records {
            self.seqs.remove(&queued.seq);
            self.keys.remove(&self.identity(&queued.record));
        }
    }

    /// The hash of a record's destination key (its target and key).
    fn identity(&self, record: &WriteRecord) -> u64 {
        self.hasher.hash_one((&record.target, &record.key))
    }

    /// The last of the consecutive sequence numbers in flight from `seq` on (`seq` itself
    /// when `seq + 1` is not in flight).
    fn run_end(&self, seq: u64) -> u64 {
        let mut end = seq;
        while let Some(next) = end.checked_add(1).filter(|next| self.seqs.contains(next)) {
            end = next;
        }
        end
    }

    /// True when nothing is being written.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

/// The records ready to write now, and when the next deferred one falls due.
#[derive(Debug, Default)]
pub struct ReadyBatch {
    /// Ready records, oldest first, at most one per destination key.
    pub records: Vec<QueuedRecord>,
    /// The earliest "not before" of the deferred records seen, if any.
    pub next_due_ms: Option<i64>,
}

/// The address keys and known addresses of a ready batch's records, in its order.
#[derive(Debug, Default)]
pub struct Located {
    /// Each record's key in the address table, when its sink keeps addresses.
    pub keys: Vec<Option<LocationKey>>,
    /// Each record's known address (`None` without a key or where nothing is known).
    pub known: Vec<Option<String>>,
}

/// Everything one reader step produced, committed in one transaction.
#[derive(Debug, Default)]
pub struct ReadCommit {
    /// The source whose cursor advances (a table mapping, `events`, ...).
    pub source: String,
    /// The new cursor; `None` leaves it unchanged.
    pub cursor: Option<CursorState>,
    /// The writes to queue: origin and record.
    pub records: Vec<(String, WriteRecord)>,
    /// Inputs the plugin rejected or could not map.
    pub dead_letters: Vec<NewDeadLetter>,
    /// Source records consumed by this step.
    pub read: u64,
    /// Source records deliberately not propagated.
    pub skipped: u64,
    /// New last-known opt-out states by contact key.
    pub opt_out_states: Vec<(String, OptOutSnapshot)>,
    /// Dead letters this step re-processed successfully (a retry): removed.
    pub retired_dead_letters: Vec<u64>,
    /// How `records` are checked against what was sent before (Ingress only).
    pub ledger: LedgerPolicy,
    /// The pass over the source `records` come from (Ingress).
    pub phase: Option<Phase>,
    /// Re-reads this step completed: (mapping, key), removed from the re-read list.
    pub rereads_done: Vec<(String, String)>,
}

/// The outcome of one writer step, committed in one transaction.
#[derive(Debug, Default)]
pub struct WriteCommit {
    /// Records the destination accepted: removed from the queue.
    pub written: Vec<u64>,
    /// Records the destination refused for good: moved to the dead letters with the reason.
    pub refused: Vec<(QueuedRecord, String)>,
    /// Records not written now: they stay queued with one more attempt counted, the reason, and
    /// a time before which they are not tried again.
    pub deferred: Vec<Deferral>,
    /// What the writes taught about where their destination records live.
    pub locations: Vec<(LocationKey, LocationChange)>,
}

impl Store {
    /// Commits a reader step: queues outputs, stores dead letters, opt-out states and the new
    /// cursor, and updates the counters, all or nothing.
    pub fn commit_read(&self, workflow: WorkflowId, commit: ReadCommit) -> Result<(), StoreError> {
        self.commit_step(
            workflow,
            Box::new(move |write| {
                let committed = apply_read(write, workflow, commit)?;
                Ok(Box::new(move |store: &Store| {
                    store.recent().keep(workflow, committed);
                }))
            }),
        )
    }

    /// The oldest queued records ready now, at most `max` of them and at most one per destination
    /// key, so that a batch never holds two writes of one record and per-key order is kept even
    /// when a write fails and stays queued. Scans at most `max * 4` entries.
    pub fn next_batch(
        &self,
        workflow: WorkflowId,
        max: usize,
    ) -> Result<Vec<QueuedRecord>, StoreError> {
        Ok(self
            .ready_batch(workflow, max, now_ms(), &InFlight::default())?
            .records)
    }

    /// The oldest records ready at `now_ms`, at most `max` and at most one per destination key.
    /// A deferred record (not due yet) is passed by, and so is every later write of its key; so
    /// are the records `in_flight` (being written by an earlier batch) with every later write of
    /// their keys. Scans at most `max * 4` entries besides those.
    pub fn ready_batch(
        &self,
        workflow: WorkflowId,
        max: usize,
        now_ms: i64,
        in_flight: &InFlight,
    ) -> Result<ReadyBatch, StoreError> {
        let read = self.begin_read()?;
        self.ready_in(&read, workflow, max, now_ms, in_flight)
    }

    /// [`Store::ready_batch`] with the known address of each record that `locate` gives a key
    /// (see [`Store::locations`]), read in the same transaction: the writer's one read per
    /// batch.
    pub fn ready_batch_located(
        &self,
        workflow: WorkflowId,
        max: usize,
        now_ms: i64,
        in_flight: &InFlight,
        locate: impl Fn(&WriteRecord) -> Option<LocationKey>,
    ) -> Result<(ReadyBatch, Located), StoreError> {
        let read = self.begin_read()?;
        let ready = self.ready_in(&read, workflow, max, now_ms, in_flight)?;
        let ledger_table = read.open_table(LEDGER)?;
        let keys = ready
            .records
            .iter()
            .map(|queued| {
                let Some(key) = locate(&queued.record) else {
                    return Ok(None);
                };
                // A record queued without a slot (Opt-in/out, or by a format 4 store) takes
                // its key's slot from the ledger, where Ingress keeps the key's address.
                let slot = match queued.address_slot {
                    Some(slot) => Some(slot),
                    None => ledger::slot_of(&ledger_table, &queued.record)?,
                };
                Ok(Some(key.in_slot(slot)))
            })
            .collect::<Result<Vec<Option<LocationKey>>, StoreError>>()?;
        let known = locations::read_in(&read, &keys)?;
        Ok((ready, Located { keys, known }))
    }

    fn ready_in(
        &self,
        read: &ReadTransaction,
        workflow: WorkflowId,
        max: usize,
        now_ms: i64,
        in_flight: &InFlight,
    ) -> Result<ReadyBatch, StoreError> {
        let wf = workflow.as_str();
        let queue = read.open_table(QUEUE)?;
        let mut recent = self.recent();
        let mut head = None;
        let mut ready = ReadyBatch::default();
        // Identities are already hashes: the sets need no second strong hash.
        let mut keys =
            FxHashSet::with_capacity_and_hasher(max.min(DEFERRED_SCAN), Default::default());
        let mut blocked = FxHashSet::default();
        let mut scanned = 0usize;
        // Deferred records are passed by without counting towards the scan, up to a bound, so a
        // few of them at the head of the queue never shorten a batch.
        let mut passed = 0usize;
        let pass_limit = max.saturating_mul(4).max(DEFERRED_SCAN);
        // Where the scan (re)starts: after a run of records in flight it jumps past the run
        // with a new range instead of stepping through it entry by entry. The batches in
        // flight are the oldest records, mostly in runs of consecutive numbers, so with many
        // of them the steps were most of a take's work.
        let mut from = 0;
        'scan: loop {
            let mut jump_to = None;
            for entry in queue.range((wf, from)..=(wf, u64::MAX))? {
                if ready.records.len() >= max
                    || scanned >= max.saturating_mul(4)
                    || passed >= pass_limit
                {
                    break 'scan;
                }
                let (key, value) = entry?;
                let seq = key.value().1;
                head.get_or_insert(seq);
                if in_flight.seqs.contains(&seq) {
                    // Its key is in `in_flight.keys`: no need to decode it.
                    let end = in_flight.run_end(seq);
                    if end > seq {
                        match end.checked_add(1) {
                            Some(next) => {
                                jump_to = Some(next);
                                break;
                            }
                            None => break 'scan,
                        }
                    }
                    continue;
                }
                let bytes = value.value();
                let record = match recent.take(workflow, seq, bytes) {
                    Some(kept) => kept,
                    None => decode_queued(seq, bytes)?,
                };
                let identity = in_flight.identity(&record.record);
                if record.not_before_ms > now_ms {
                    ready.next_due_ms = Some(
                        ready
                            .next_due_ms
                            .map_or(record.not_before_ms, |due| due.min(record.not_before_ms)),
                    );
                    // It keeps its place: later writes of its key wait behind it.
                    blocked.insert(identity);
                    passed += 1;
                    continue;
                }
                scanned += 1;
                if keys.contains(&identity)
                    || blocked.contains(&identity)
                    || in_flight.keys.contains(&identity)
                {
                    // A later write of a key already in the batch waits for the next batch.
                    blocked.insert(identity);
                    continue;
                }
                keys.insert(identity);
                ready.records.push(record);
            }
            match jump_to {
                Some(next) => from = next,
                None => break,
            }
        }
        // The scan starts at the queue's head: what is kept below it has left the queue.
        if head.is_none() {
            head = match queue.range((wf, 0)..=(wf, u64::MAX))?.next() {
                Some(entry) => Some(entry?.0.value().1),
                None => None,
            };
        }
        recent.forget_before(workflow, head);
        Ok(ready)
    }

    /// Commits a writer step: removes what was written, dead-letters what was refused and
    /// defers the rest (an attempt counted, the reason and the "not before" kept), all or
    /// nothing.
    pub fn commit_write(
        &self,
        workflow: WorkflowId,
        commit: WriteCommit,
    ) -> Result<(), StoreError> {
        self.commit_step(
            workflow,
            Box::new(move |write| {
                apply_write(write, workflow, commit)?;
                Ok(Box::new(|_: &Store| {}))
            }),
        )
    }

    /// Records waiting in a workflow's queue (the backlog), read from its counter.
    pub fn backlog(&self, workflow: WorkflowId) -> Result<u64, StoreError> {
        Ok(self.counters(workflow)?.queued)
    }

    /// Counts the queue's entries one by one (for checks; `backlog` is the O(1) way).
    pub fn queue_len_by_scan(&self, workflow: WorkflowId) -> Result<u64, StoreError> {
        let wf = workflow.as_str();
        let read = self.begin_read()?;
        let queue = read.open_table(QUEUE)?;
        let mut count = 0;
        for entry in queue.range((wf, 0)..=(wf, u64::MAX))? {
            entry?;
            count += 1;
        }
        Ok(count)
    }

    /// Removes every queued record of a workflow whose origin matches (used when a mapping is
    /// deleted from the config); returns how many.
    pub fn purge_origin(&self, workflow: WorkflowId, origin: &str) -> Result<u64, StoreError> {
        let wf = workflow.as_str();
        let write = self.begin_write()?;
        let removed;
        {
            let mut queue = write.open_table(QUEUE)?;
            let mut doomed = Vec::new();
            for entry in queue.range((wf, 0)..=(wf, u64::MAX))? {
                let (key, value) = entry?;
                let record = decode_queued(key.value().1, value.value())?;
                if record.origin == origin {
                    doomed.push(key.value().1);
                }
            }
            for seq in &doomed {
                queue.remove((wf, *seq))?;
            }
            self.recent().forget_workflow(workflow);
            removed = doomed.len() as u64;
            drop(queue);
            counter_add(&write, wf, counter::QUEUED, -(removed as i64))?;
        }
        write.commit()?;
        Ok(removed)
    }
}

/// A reader step's work inside a write transaction: queues outputs, stores dead letters,
/// opt-out states and the new cursor, and updates the counters. Returns the queued records
/// with their committed bytes, for the writer's cache.
fn apply_read(
    write: &WriteTransaction,
    workflow: WorkflowId,
    commit: ReadCommit,
) -> Result<Vec<(Vec<u8>, QueuedRecord)>, StoreError> {
    let wf = workflow.as_str();
    let now = now_ms();
    let mut committed = Vec::with_capacity(commit.records.len());
    {
        let mut queue = write.open_table(QUEUE)?;
        let mut seq = counter_get(write, wf, counter::NEXT_SEQ)?;
        // New records go in one ascending run at the end of the workflow's queue: redb's cursor
        // buffers the run and fills each leaf once, where an insert per record rewrites the
        // last leaf and its path every time (~7,300 instructions per record at 20,000).
        let mut tail = queue.upper_bound_mut(Bound::Excluded((wf, seq)))?;
        let mut ledger_table = write.open_table(LEDGER)?;
        // A store upgraded from before the ledger cannot tell whose records older ones
        // are, so it keeps deleting by key as it always did.
        let deletes_need_ownership = commit.ledger != LedgerPolicy::Off
            && write.open_table(META)?.get(META_LEDGER_PARTIAL)?.is_none();
        let first_slot = if commit.ledger == LedgerPolicy::Off {
            0
        } else {
            next_address_slot(write)?
        };
        let mut next_slot = first_slot;
        let (mut queued, mut unchanged, mut not_owned) = (0u64, 0u64, 0u64);
        for (origin, record) in commit.records {
            let slot = match ledger::decide(
                &mut ledger_table,
                &record,
                commit.ledger,
                deletes_need_ownership,
                &mut next_slot,
            )? {
                Decision::Queue(slot) => {
                    queued += 1;
                    slot
                }
                Decision::Unchanged => {
                    unchanged += 1;
                    continue;
                }
                Decision::NotOwned => {
                    tracing::info!(
                        workflow = wf,
                        table = %record.target.table,
                        key = %record.key,
                        "delete skipped: the record was not created by Conduit"
                    );
                    not_owned += 1;
                    continue;
                }
            };
            let mut body = QueuedRecord::new(seq, record, origin, now);
            body.phase = commit.phase;
            body.address_slot = slot;
            let bytes = encode_queued(&body);
            tail.insert_before((wf, seq), bytes.as_slice())
                .map_err(|error| queue_order_error(wf, seq, error))?;
            committed.push((bytes, body));
            seq += 1;
        }
        tail.close()?;
        drop(queue);
        counter_set(write, wf, counter::NEXT_SEQ, seq)?;
        if next_slot != first_slot {
            write
                .open_table(META)?
                .insert(META_NEXT_ADDRESS_SLOT, next_slot.to_le_bytes().as_slice())?;
        }
        counter_add(write, wf, counter::QUEUED, queued as i64)?;
        counter_add(write, wf, counter::READ, commit.read as i64)?;
        counter_add(
            write,
            wf,
            counter::SKIPPED,
            (commit.skipped + unchanged + not_owned) as i64,
        )?;
        counter_add(write, wf, counter::SKIPPED_UNCHANGED, unchanged as i64)?;
        counter_add(write, wf, counter::SKIPPED_NOT_OWNED, not_owned as i64)?;
        drop(ledger_table);

        dead_letters::insert_all(write, workflow, commit.dead_letters, now)?;
        if !commit.retired_dead_letters.is_empty() {
            let mut table = write.open_table(DEAD_LETTERS)?;
            let mut removed = 0i64;
            for id in commit.retired_dead_letters {
                if table.remove((wf, id))?.is_some() {
                    removed += 1;
                }
            }
            drop(table);
            counter_add(write, wf, counter::DEAD_LETTERS, -removed)?;
        }

        if !commit.rereads_done.is_empty() {
            let mut rereads = write.open_table(REREAD)?;
            for (mapping, key) in &commit.rereads_done {
                rereads.remove((mapping.as_str(), key.as_str()))?;
            }
        }

        if !commit.opt_out_states.is_empty() {
            let mut states = write.open_table(OPT_OUT_STATE)?;
            for (key, snapshot) in commit.opt_out_states {
                states.insert(key.as_str(), encode_json(&snapshot).as_slice())?;
            }
        }

        if let Some(cursor) = commit.cursor {
            let mut cursors = write.open_table(CURSORS)?;
            cursors.insert(
                (wf, commit.source.as_str()),
                encode_json(&cursor).as_slice(),
            )?;
        }
    }
    Ok(committed)
}

/// The next address slot to give (see `ledger.rs`); 0 in a store that never gave one.
fn next_address_slot(write: &WriteTransaction) -> Result<u64, StoreError> {
    let meta = write.open_table(META)?;
    let stored = meta.get(META_NEXT_ADDRESS_SLOT)?;
    Ok(stored
        .and_then(|bytes| bytes.value().try_into().ok().map(u64::from_le_bytes))
        .unwrap_or(0))
}

/// A writer step's work inside a write transaction: removes what was written, dead-letters
/// what was refused and defers the rest.
fn apply_write(
    write: &WriteTransaction,
    workflow: WorkflowId,
    commit: WriteCommit,
) -> Result<(), StoreError> {
    let wf = workflow.as_str();
    let now = now_ms();
    {
        let mut queue = write.open_table(QUEUE)?;
        let written = remove_all(&mut queue, wf, commit.written)?;
        let mut removed = written;
        let mut refused = Vec::new();
        let mut ledger_table = write.open_table(LEDGER)?;
        for (record, reason) in commit.refused {
            // What was refused never reached the destination: the next change of that
            // record must not be skipped as already sent.
            if workflow == WorkflowId::Ingress {
                ledger::forget_values(&mut ledger_table, &record.record)?;
            }
            if queue.remove((wf, record.seq))?.is_some() {
                removed += 1;
                refused.push(NewDeadLetter::write_refused(record, reason));
            }
        }
        for deferral in commit.deferred {
            let existing = queue
                .get((wf, deferral.seq))?
                .map(|bytes| bytes.value().to_vec());
            if let Some(bytes) = existing {
                let mut record = decode_queued(deferral.seq, &bytes)?;
                record.attempts = record.attempts.saturating_add(1);
                record.not_before_ms = deferral.not_before_ms;
                record.last_reason = Some(deferral.reason);
                record.deferred_since_ms.get_or_insert(now);
                queue.insert((wf, deferral.seq), encode_queued(&record).as_slice())?;
            }
        }
        drop(queue);
        drop(ledger_table);
        if !commit.locations.is_empty() {
            let mut by_digest = write.open_table(LOCATIONS)?;
            let mut by_slot = write.open_table(SLOT_LOCATIONS)?;
            locations::apply(&mut by_digest, &mut by_slot, &commit.locations)?;
        }
        counter_add(write, wf, counter::QUEUED, -removed)?;
        counter_add(write, wf, counter::WRITTEN, written)?;
        dead_letters::insert_all(write, workflow, refused, now)?;
    }
    Ok(())
}

/// The reader's queue insert failing: a storage error, or an entry already at or past the
/// workflow's sequence counter, which only a damaged file holds.
fn queue_order_error(workflow: &str, seq: u64, error: CursorError) -> StoreError {
    match error {
        CursorError::Storage(error) => StoreError::Storage(error),
        CursorError::UnorderedKey => StoreError::QueueOrder {
            workflow: workflow.to_owned(),
            seq,
        },
        other => StoreError::Cursor(other),
    }
}

/// How far apart two written records' numbers may be and still be removed by one scan: the
/// scan passes by at most this many entries that stay for each one it removes.
const REMOVAL_GAP: u64 = 64;

/// Removes the entries numbered `seqs` from `workflow`'s queue; returns how many were there.
///
/// Why not a `remove` each: redb rewrites a leaf and the path to it for every removal (~9,300
/// instructions per record at 20,000 records), while one scan over a run of neighbouring
/// numbers removes the run's entries together, leaf by leaf. A writer's batch is mostly such a
/// run; numbers further apart than [`REMOVAL_GAP`] start a new scan, so entries that stay
/// (deferred, or in another batch's flight) cost little to pass.
fn remove_all(
    queue: &mut Table<(&'static str, u64), &'static [u8]>,
    workflow: &str,
    mut seqs: Vec<u64>,
) -> Result<i64, StoreError> {
    seqs.sort_unstable();
    seqs.dedup();
    let mut removed = 0i64;
    let mut rest = seqs.as_slice();
    while let Some(&first) = rest.first() {
        let run_len = rest
            .windows(2)
            .position(|pair| pair[1] - pair[0] > REMOVAL_GAP)
            .map_or(rest.len(), |last| last + 1);
        let (run, after) = rest.split_at(run_len);
        rest = after;
        let last = run[run.len() - 1];
        if run.len() == 1 {
            removed += i64::from(queue.remove((workflow, first))?.is_some());
            continue;
        }
        let mut pending = run.iter().peekable();
        queue.retain_in((workflow, first)..=(workflow, last), |(_, seq), _| {
            while pending.next_if(|&&next| next < seq).is_some() {}
            let written = pending.next_if_eq(&&seq).is_some();
            removed += i64::from(written);
            !written
        })?;
    }
    Ok(removed)
}

/// How many deferred or in-flight entries a batch scan may pass by at least.
const DEFERRED_SCAN: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_model::{Operation, System, Target, Value};

    fn record(key: &str, name: &str) -> WriteRecord {
        WriteRecord {
            target: Target {
                system: System::Campaign,
                table: "profile".into(),
                key_field: "externalId".into(),
            },
            key: key.into(),
            op: Operation::Upsert,
            fields: vec![("firstName".into(), Value::Text(name.into()))],
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("conduit.redb")).unwrap();
        (dir, store)
    }

    fn enqueue(store: &Store, records: Vec<WriteRecord>) {
        enqueue_to(store, WorkflowId::Ingress, records);
    }

    fn enqueue_to(store: &Store, workflow: WorkflowId, records: Vec<WriteRecord>) {
        store
            .commit_read(
                workflow,
                ReadCommit {
                    source: "contacts".into(),
                    read: records.len() as u64,
                    records: records
                        .into_iter()
                        .map(|r| ("contacts".into(), r))
                        .collect(),
                    ..ReadCommit::default()
                },
            )
            .unwrap();
    }

    #[test]
    fn reader_commit_queues_records_in_order_and_counts_them() {
        let (_dir, store) = store();
        enqueue(&store, vec![record("a", "Ann"), record("b", "Bob")]);
        assert_eq!(store.backlog(WorkflowId::Ingress).unwrap(), 2);
        let batch = store.next_batch(WorkflowId::Ingress, 10).unwrap();
        let keys: Vec<_> = batch.iter().map(|r| r.record.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(store.backlog(WorkflowId::Egress).unwrap(), 0);
    }

    #[test]
    fn a_batch_holds_one_write_per_key_and_later_writes_wait() {
        let (_dir, store) = store();
        enqueue(
            &store,
            vec![
                record("a", "v1"),
                record("b", "v1"),
                record("a", "v2"),
                record("c", "v1"),
            ],
        );
        let batch = store.next_batch(WorkflowId::Ingress, 10).unwrap();
        let seen: Vec<_> = batch
            .iter()
            .map(|r| (r.record.key.clone(), r.record.fields[0].1.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                ("a".to_string(), Value::Text("v1".into())),
                ("b".to_string(), Value::Text("v1".into())),
                ("c".to_string(), Value::Text("v1".into()))
            ]
        );
        // a transient failure of a/v1 keeps a/v2 behind it
        let first = batch[0].seq;
        store
            .commit_write(
                WorkflowId::Ingress,
                WriteCommit {
                    written: vec![batch[1].seq, batch[2].seq],
                    deferred: vec![Deferral {
                        seq: first,
                        not_before_ms: 0,
                        reason: "503".into(),
                    }],
                    ..WriteCommit::default()
                },
            )
            .unwrap();
        let next = store.next_batch(WorkflowId::Ingress, 10).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].seq, first);
        assert_eq!(next[0].attempts, 1);
        assert_eq!(store.backlog(WorkflowId::Ingress).unwrap(), 2);
    }

    #[test]
    fn a_deferred_record_is_passed_by_until_due_and_holds_back_later_writes_of_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conduit.redb");
        let store = Store::open(&path).unwrap();
        enqueue(
            &store,
            vec![
                record("a", "v1"),
                record("b", "v1"),
                record("a", "v2"),
                record("c", "v1"),
            ],
        );
        let first = store.next_batch(WorkflowId::Ingress, 2).unwrap();
        let (a1, b1) = (first[0].seq, first[1].seq);
        let due = 1_000_000;
        store
            .commit_write(
                WorkflowId::Ingress,
                WriteCommit {
                    written: vec![b1],
                    deferred: vec![Deferral {
                        seq: a1,
                        not_before_ms: due,
                        reason: "503 Service Unavailable".into(),
                    }],
                    ..WriteCommit::default()
                },
            )
            .unwrap();
        // Kept across a restart: reopen the file.
        drop(store);
        let store = Store::open(&path).unwrap();
        let none = InFlight::default();
        // Before it is due: a/v1 is passed by, a/v2 waits behind it, c flows.
        let before = store
            .ready_batch(WorkflowId::Ingress, 10, due - 1, &none)
            .unwrap();
        let keys: Vec<_> = before
            .records
            .iter()
            .map(|r| r.record.key.as_str())
            .collect();
        assert_eq!(keys, ["c"]);
        assert_eq!(before.next_due_ms, Some(due));
        // Once due: a/v1 comes back first, with its attempt and reason; a/v2 still waits.
        let after = store
            .ready_batch(WorkflowId::Ingress, 10, due, &none)
            .unwrap();
        let keys: Vec<_> = after
            .records
            .iter()
            .map(|r| r.record.key.as_str())
            .collect();
        assert_eq!(keys, ["a", "c"]);
        let again = &after.records[0];
        assert_eq!(again.seq, a1);
        assert_eq!(again.record.fields[0].1, Value::Text("v1".into()));
        assert_eq!(again.attempts, 1);
        assert_eq!(
            again.last_reason.as_deref(),
            Some("503 Service Unavailable")
        );
        assert!(again.deferred_since_ms.is_some());
        assert_eq!(after.next_due_ms, None);
    }

    #[test]
    fn records_in_flight_are_passed_by_with_the_later_writes_of_their_keys() {
        let (_dir, store) = store();
        enqueue(
            &store,
            vec![
                record("a", "v1"),
                record("b", "v1"),
                record("a", "v2"),
                record("c", "v1"),
            ],
        );
        let first = store.next_batch(WorkflowId::Ingress, 1).unwrap();
        let mut in_flight = InFlight::default();
        in_flight.add(&first);
        let second = store
            .ready_batch(WorkflowId::Ingress, 10, now_ms(), &in_flight)
            .unwrap();
        let keys: Vec<_> = second
            .records
            .iter()
            .map(|r| r.record.key.as_str())
            .collect();
        assert_eq!(keys, ["b", "c"]);
        in_flight.remove(&first);
        assert!(in_flight.is_empty());
    }

    #[test]
    fn a_take_passes_by_runs_of_records_in_flight_and_only_them() {
        let (_dir, store) = store();
        let mut records: Vec<_> = (0..12).map(|i| record(&format!("k{i}"), "v1")).collect();
        // A later write of a key in flight, after the runs.
        records.push(record("k1", "v2"));
        enqueue(&store, records);
        let all = store.next_batch(WorkflowId::Ingress, 13).unwrap();
        assert_eq!(all.len(), 12, "k1's second write waits behind its first");
        // In flight: runs of 4 and 2, a single one, and the last record of the queue's
        // first twelve (nothing after it but k1's second write).
        let mut in_flight = InFlight::default();
        for index in [0, 1, 2, 3, 5, 6, 9, 11] {
            in_flight.add(std::slice::from_ref(&all[index]));
        }
        // A written record leaves a gap in the numbers inside a run.
        store
            .commit_write(
                WorkflowId::Ingress,
                WriteCommit {
                    written: vec![all[2].seq],
                    ..WriteCommit::default()
                },
            )
            .unwrap();
        let ready = store
            .ready_batch(WorkflowId::Ingress, 20, now_ms(), &in_flight)
            .unwrap();
        let keys: Vec<_> = ready
            .records
            .iter()
            .map(|r| r.record.key.as_str())
            .collect();
        assert_eq!(keys, ["k4", "k7", "k8", "k10"]);
        // With nothing in flight, every record comes back but k1's second write.
        let none = store
            .ready_batch(WorkflowId::Ingress, 20, now_ms(), &InFlight::default())
            .unwrap();
        assert_eq!(none.records.len(), 11);
    }

    #[test]
    fn kept_records_are_handed_out_only_while_the_queue_holds_their_exact_bytes() {
        let (_dir, store) = store();
        enqueue(&store, vec![record("a", "Ann"), record("b", "Bob")]);
        assert_eq!(
            store.recent().len(WorkflowId::Ingress),
            2,
            "just queued: kept"
        );
        let batch = store.next_batch(WorkflowId::Ingress, 10).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(
            store.recent().len(WorkflowId::Ingress),
            0,
            "taken: no longer kept"
        );
        let first = batch[0].clone();
        store
            .commit_write(
                WorkflowId::Ingress,
                WriteCommit {
                    written: vec![batch[1].seq],
                    deferred: vec![Deferral {
                        seq: first.seq,
                        not_before_ms: 0,
                        reason: "503 from Campaign".into(),
                    }],
                    ..WriteCommit::default()
                },
            )
            .unwrap();
        // A copy kept as first queued (as a reader's commit racing the writer could leave it)
        // no longer matches the deferred entry's bytes: the entry is decoded instead.
        store.recent().keep(
            WorkflowId::Ingress,
            [(encode_queued(&first), first.clone())],
        );
        let again = store.next_batch(WorkflowId::Ingress, 10).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].seq, first.seq);
        assert_eq!(again[0].attempts, 1, "the deferral is counted");
        assert_eq!(again[0].last_reason.as_deref(), Some("503 from Campaign"));
        // What left the queue is not kept: the scan prunes below the queue's head.
        store
            .commit_write(
                WorkflowId::Ingress,
                WriteCommit {
                    written: vec![first.seq],
                    ..WriteCommit::default()
                },
            )
            .unwrap();
        store
            .recent()
            .keep(WorkflowId::Ingress, [(encode_queued(&first), first)]);
        assert!(
            store
                .next_batch(WorkflowId::Ingress, 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.recent().len(WorkflowId::Ingress), 0);
    }

    /// The numbers of `workflow`'s queued entries, read from the table itself.
    fn queued_seqs(store: &Store, workflow: WorkflowId) -> Vec<u64> {
        let read = store.begin_read().unwrap();
        let queue = read.open_table(QUEUE).unwrap();
        let wf = workflow.as_str();
        queue
            .range((wf, 0)..=(wf, u64::MAX))
            .unwrap()
            .map(|entry| entry.unwrap().0.value().1)
            .collect()
    }

    #[test]
    fn a_queue_entry_past_the_sequence_counter_stops_the_reader_with_a_damage_error() {
        let (_dir, store) = store();
        enqueue(&store, vec![record("a", "1")]);
        {
            let write = store.begin_write().unwrap();
            write
                .open_table(QUEUE)
                .unwrap()
                .insert(("ingress", 2u64), [0u8].as_slice())
                .unwrap();
            write.commit().unwrap();
        }
        let commit = ReadCommit {
            source: "contacts".into(),
            read: 3,
            records: ["b", "c", "d"]
                .iter()
                .map(|key| ("contacts".into(), record(key, "1")))
                .collect(),
            cursor: Some(CursorState::incremental("next".into())),
            ..ReadCommit::default()
        };
        let error = store.commit_read(WorkflowId::Ingress, commit).unwrap_err();
        assert!(
            matches!(&error, StoreError::QueueOrder { workflow, seq: 2 } if workflow == "ingress"),
            "{error}"
        );
        assert!(error.to_string().contains("conduit restore"), "{error}");
        // Nothing of the step was kept, and the entry in the way was not overwritten.
        assert_eq!(queued_seqs(&store, WorkflowId::Ingress), [0, 2]);
        assert_eq!(store.counters(WorkflowId::Ingress).unwrap().read, 1);
    }

    #[test]
    fn refused_writes_move_to_dead_letters_with_the_reason() {
        let (_dir, store) = store();
        enqueue(&store, vec![record("a", "Ann")]);
        let batch = store.next_batch(WorkflowId::Ingress, 10).unwrap();
        store
            .commit_write(
                WorkflowId::Ingress,
                WriteCommit {
                    refused: vec![(batch[0].clone(), "400 firstName too long".into())],
                    ..WriteCommit::default()
                },
            )
            .unwrap();
        assert_eq!(store.backlog(WorkflowId::Ingress).unwrap(), 0);
        let letters = store
            .dead_letters(WorkflowId::Ingress, &Default::default())
            .unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].reason, "400 firstName too long");
        let counters = store.counters(WorkflowId::Ingress).unwrap();
        assert_eq!(counters.dead_letters, 1);
        assert_eq!(counters.dead_lettered, 1);
    }

    #[test]
    fn cursor_commits_with_the_records_it_produced() {
        let (_dir, store) = store();
        let cursor = CursorState::incremental("https://x/delta?$deltatoken=1".into());
        store
            .commit_read(
                WorkflowId::Ingress,
                ReadCommit {
                    source: "contacts".into(),
                    cursor: Some(cursor.clone()),
                    records: vec![("contacts".into(), record("a", "Ann"))],
                    read: 1,
                    ..ReadCommit::default()
                },
            )
            .unwrap();
        assert_eq!(
            store.cursor(WorkflowId::Ingress, "contacts").unwrap(),
            Some(cursor)
        );
        assert_eq!(store.counters(WorkflowId::Ingress).unwrap().read, 1);
    }

    mod backlog_property {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Enqueue(Vec<u8>),
            Write {
                take: usize,
                refuse_every: usize,
                fail_every: usize,
            },
            Purge,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => proptest::collection::vec(0u8..6, 0..20).prop_map(Op::Enqueue),
                4 => (0usize..25, 1usize..5, 1usize..5)
                    .prop_map(|(take, refuse_every, fail_every)| Op::Write { take, refuse_every, fail_every }),
                1 => Just(Op::Purge),
            ]
        }

        /// A queue of up to 400 entries, and a writer's list of written numbers drawn from
        /// them and around them (repeats, numbers long gone or never given, runs with gaps
        /// shorter and longer than a removal scan spans), in any order.
        fn queue_and_written() -> impl Strategy<Value = (usize, Vec<u64>)> {
            (1usize..400).prop_flat_map(|len| {
                let seq = prop_oneof![
                    8 => 0..len as u64,
                    1 => len as u64..len as u64 + 300,
                    1 => Just(u64::MAX),
                ];
                (Just(len), proptest::collection::vec(seq, 0..250))
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 64, rng_seed: proptest::test_runner::RngSeed::Fixed(11), ..ProptestConfig::default() })]
            #[test]
            fn a_writer_commit_removes_exactly_the_written_entries_of_its_own_workflow(
                (len, written) in queue_and_written(),
            ) {
                let (_dir, store) = store();
                // The other workflows' queues sit on both sides of Ingress's in the table.
                let records = |count: usize| (0..count).map(|i| record(&i.to_string(), "x")).collect();
                enqueue_to(&store, WorkflowId::Egress, records(50));
                enqueue_to(&store, WorkflowId::Ingress, records(len));
                enqueue_to(&store, WorkflowId::OptInOut, records(50));
                let queued = store.counters(WorkflowId::Ingress).unwrap().queued;
                let commit = WriteCommit { written: written.clone(), ..WriteCommit::default() };
                store.commit_write(WorkflowId::Ingress, commit).unwrap();

                let gone: std::collections::BTreeSet<u64> = written.into_iter().collect();
                let left: Vec<u64> = (0..len as u64).filter(|seq| !gone.contains(seq)).collect();
                prop_assert_eq!(queued_seqs(&store, WorkflowId::Ingress), left.clone());
                let removed = len as u64 - left.len() as u64;
                let counters = store.counters(WorkflowId::Ingress).unwrap();
                prop_assert_eq!(counters.written, removed);
                prop_assert_eq!(counters.queued, queued - removed);
                prop_assert_eq!(queued_seqs(&store, WorkflowId::Egress), (0..50).collect::<Vec<u64>>());
                prop_assert_eq!(queued_seqs(&store, WorkflowId::OptInOut), (0..50).collect::<Vec<u64>>());
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 48, rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]
            #[test]
            fn backlog_counter_always_equals_the_queue_length(ops in proptest::collection::vec(op(), 1..25)) {
                let (_dir, store) = store();
                for op in ops {
                    match op {
                        Op::Enqueue(keys) => enqueue(
                            &store,
                            keys.iter().map(|k| record(&k.to_string(), "x")).collect(),
                        ),
                        Op::Write { take, refuse_every, fail_every } => {
                            let batch = store.next_batch(WorkflowId::Ingress, take).unwrap();
                            let mut commit = WriteCommit::default();
                            for (i, queued) in batch.into_iter().enumerate() {
                                if i % refuse_every == 0 {
                                    commit.refused.push((queued, "refused".into()));
                                } else if i % fail_every == 0 {
                                    commit.deferred.push(Deferral {
                                        seq: queued.seq,
                                        not_before_ms: 0,
                                        reason: "503".into(),
                                    });
                                } else {
                                    commit.written.push(queued.seq);
                                }
                            }
                            store.commit_write(WorkflowId::Ingress, commit).unwrap();
                        }
                        Op::Purge => {
                            store.purge_origin(WorkflowId::Ingress, "contacts").unwrap();
                        }
                    }
                    prop_assert_eq!(
                        store.backlog(WorkflowId::Ingress).unwrap(),
                        store.queue_len_by_scan(WorkflowId::Ingress).unwrap()
                    );
                }
            }
        }
    }
}
