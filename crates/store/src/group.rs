//! Group commits: the steps of one workflow that are ready to commit at the same moment (its
//! reader's page, its writer's batches) share one write transaction, and so one fsync.
//!
//! Each workflow has a lane. A step joins its lane's waiting list, then takes the lane's
//! commit turn; whoever holds the turn commits everything waiting at that moment in one
//! transaction and hands each step its outcome. A step that finds its outcome already there
//! when its turn comes was committed by the step before it. Alone, a step commits as before;
//! while one transaction is being made durable, the steps that arrive meanwhile wait and then
//! share the next one. Durability is redb's default for every step: a step's call returns only
//! after the transaction holding it was committed.
//!
//! All or nothing holds per transaction, so a group is all or nothing too: when one step fails
//! (or the commit does), no step of the group is kept, and each is told so. Every step a
//! stage commits is redone when its commit fails (the reader reads the page again, the writer's
//! records stay queued), so a failure costs a retry, never a record. Lanes are per workflow, so
//! one workflow's failing step never fails another workflow's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use conduit_model::WorkflowId;
use redb::WriteTransaction;

use super::{Store, StoreError};

/// What a step does after the transaction holding it committed (e.g. keep its records for the
/// writer).
pub(super) type AfterCommit = Box<dyn FnOnce(&Store) + Send>;

/// A step's work inside the group's transaction.
pub(super) type Step = Box<dyn FnOnce(&WriteTransaction) -> Result<AfterCommit, StoreError> + Send>;

/// Where a step's outcome is left for it.
type Outcome = Arc<Mutex<Option<Result<(), StoreError>>>>;

/// A step waiting for its commit.
struct Waiting {
    step: Step,
    outcome: Outcome,
}

/// One workflow's waiting steps and its commit turn.
#[derive(Default)]
struct Lane {
    waiting: Mutex<Vec<Waiting>>,
    turn: Mutex<()>,
}

/// The lanes of every workflow, and how many transactions served how many steps.
#[derive(Default)]
pub(super) struct Groups {
    lanes: [Lane; WorkflowId::ALL.len()],
    transactions: AtomicU64,
    steps: AtomicU64,
}

/// How many group transactions committed how many steps since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommits {
    /// Transactions committed.
    pub transactions: u64,
    /// Steps they held (at least `transactions`; the excess is the fsyncs saved).
    pub steps: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while a lane was locked leaves a consistent list (pushes and takes are whole).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lane_index(workflow: WorkflowId) -> usize {
    match workflow {
        WorkflowId::Ingress => 0,
        WorkflowId::Egress => 1,
        WorkflowId::OptInOut => 2,
    }
}

impl Store {
    /// Commits `step` in the next transaction of `workflow`'s lane, with whatever other steps
    /// of the workflow are waiting; returns once that transaction committed or failed.
    pub(super) fn commit_step(&self, workflow: WorkflowId, step: Step) -> Result<(), StoreError> {
        let lane = &self.groups.lanes[lane_index(workflow)];
        let outcome: Outcome = Arc::default();
        lock(&lane.waiting).push(Waiting {
            step,
            outcome: Arc::clone(&outcome),
        });
        let _turn = lock(&lane.turn);
        if let Some(done) = lock(&outcome).take() {
            return done;
        }
        let group = std::mem::take(&mut *lock(&lane.waiting));
        self.commit_group(group);
        lock(&outcome).take().unwrap_or_else(|| {
            Err(StoreError::GroupFailed {
                cause: "the step committing it stopped unexpectedly".into(),
            })
        })
    }

    /// Applies every step of `group` in one transaction and commits it, leaving each step its
    /// outcome.
    fn commit_group(&self, group: Vec<Waiting>) {
        let size = group.len() as u64;
        let mut outcomes = Vec::with_capacity(group.len());
        let mut afters = Vec::with_capacity(group.len());
        // The failure, and the index of the step it belongs to (the first for the
        // transaction's own).
        let mut failure: Option<(usize, StoreError)> = None;
        match self.begin_write() {
            Err(error) => {
                outcomes.extend(group.into_iter().map(|waiting| waiting.outcome));
                failure = Some((0, error));
            }
            Ok(write) => {
                for (index, waiting) in group.into_iter().enumerate() {
                    outcomes.push(waiting.outcome);
                    if failure.is_none() {
                        match (waiting.step)(&write) {
                            Ok(after) => afters.push(after),
                            Err(error) => failure = Some((index, error)),
                        }
                    }
                }
                if failure.is_none() {
                    match write.commit() {
                        Ok(()) => {
                            self.groups.transactions.fetch_add(1, Ordering::Relaxed);
                            self.groups.steps.fetch_add(size, Ordering::Relaxed);
                        }
                        Err(error) => failure = Some((0, error.into())),
                    }
                }
            }
        }
        match failure {
            None => {
                for after in afters {
                    after(self);
                }
                for outcome in outcomes {
                    *lock(&outcome) = Some(Ok(()));
                }
            }
            Some((failed, error)) => {
                // The failing step is told its failure, the others that it took theirs along.
                let cause = error.to_string();
                let mut error = Some(error);
                for (index, outcome) in outcomes.into_iter().enumerate() {
                    let told = match error.take_if(|_| index == failed) {
                        Some(own) => own,
                        None => StoreError::GroupFailed {
                            cause: cause.clone(),
                        },
                    };
                    *lock(&outcome) = Some(Err(told));
                }
            }
        }
    }

    /// How many transactions served how many reader and writer steps since the store was
    /// opened (the steps beyond the transactions are fsyncs saved).
    pub fn group_commits(&self) -> GroupCommits {
        GroupCommits {
            transactions: self.groups.transactions.load(Ordering::Relaxed),
            steps: self.groups.steps.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::tables::QUEUE;
    use crate::{Deferral, ReadCommit, WriteCommit};
    use conduit_model::{Operation, System, Target, WriteRecord};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("conduit.redb")).unwrap();
        (dir, store)
    }

    fn page(keys: &[&str]) -> ReadCommit {
        ReadCommit {
            source: "contacts".into(),
            read: keys.len() as u64,
            records: keys
                .iter()
                .map(|key| {
                    let record = WriteRecord {
                        target: Target {
                            system: System::Campaign,
                            table: "profile".into(),
                            key_field: "externalId".into(),
                        },
                        key: (*key).into(),
                        op: Operation::Upsert,
                        fields: vec![],
                    };
                    ("contacts".into(), record)
                })
                .collect(),
            ..ReadCommit::default()
        }
    }

    /// Waits until `count` steps wait in the workflow's lane.
    fn wait_for_waiting(store: &Store, workflow: WorkflowId, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while lock(&store.groups.lanes[lane_index(workflow)].waiting).len() < count {
            assert!(Instant::now() < deadline, "{count} steps never waited");
            thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn steps_waiting_together_share_one_transaction() {
        let (_dir, store) = store();
        store
            .commit_read(WorkflowId::Ingress, page(&["a"]))
            .unwrap();
        let taken = store.next_batch(WorkflowId::Ingress, 10).unwrap();
        let before = store.group_commits();
        assert_eq!(
            before,
            GroupCommits {
                transactions: 1,
                steps: 1
            }
        );

        let turn = lock(&store.groups.lanes[0].turn);
        let handles = vec![
            {
                let store = store.clone();
                thread::spawn(move || store.commit_read(WorkflowId::Ingress, page(&["b", "c"])))
            },
            {
                let store = store.clone();
                thread::spawn(move || store.commit_read(WorkflowId::Ingress, page(&["d"])))
            },
            {
                let store = store.clone();
                let written = taken.iter().map(|queued| queued.seq).collect();
                thread::spawn(move || {
                    store.commit_write(
                        WorkflowId::Ingress,
                        WriteCommit {
                            written,
                            ..WriteCommit::default()
                        },
                    )
                })
            },
        ];
        wait_for_waiting(&store, WorkflowId::Ingress, 3);
        drop(turn);
        for handle in handles {
            handle.join().unwrap().unwrap();
        }
        let after = store.group_commits();
        assert_eq!(
            after.transactions - before.transactions,
            1,
            "one fsync for three steps"
        );
        assert_eq!(after.steps - before.steps, 3);
        let mut keys: Vec<String> = store
            .next_batch(WorkflowId::Ingress, 10)
            .unwrap()
            .into_iter()
            .map(|queued| queued.record.key)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            ["b", "c", "d"],
            "both pages queued, the written record gone"
        );
        assert_eq!(store.backlog(WorkflowId::Ingress).unwrap(), 3);
        assert_eq!(store.counters(WorkflowId::Ingress).unwrap().written, 1);
    }

    #[test]
    fn a_failing_step_keeps_nothing_of_its_group_and_only_it_is_told_its_own_error() {
        let (_dir, store) = store();
        // A queued entry that cannot be decoded: deferring it fails.
        {
            let write = store.begin_write().unwrap();
            write
                .open_table(QUEUE)
                .unwrap()
                .insert(("ingress", 900u64), [1u8, 0xff, 0xff, 0xff].as_slice())
                .unwrap();
            write.commit().unwrap();
        }
        let turn = lock(&store.groups.lanes[0].turn);
        let reader = {
            let store = store.clone();
            thread::spawn(move || store.commit_read(WorkflowId::Ingress, page(&["x"])))
        };
        wait_for_waiting(&store, WorkflowId::Ingress, 1);
        let writer = {
            let store = store.clone();
            thread::spawn(move || {
                store.commit_write(
                    WorkflowId::Ingress,
                    WriteCommit {
                        deferred: vec![Deferral {
                            seq: 900,
                            not_before_ms: 0,
                            reason: "503".into(),
                        }],
                        ..WriteCommit::default()
                    },
                )
            })
        };
        wait_for_waiting(&store, WorkflowId::Ingress, 2);
        // Another workflow's lane is not held up by this one's.
        store.commit_read(WorkflowId::Egress, page(&["e"])).unwrap();
        drop(turn);

        let reader = reader.join().unwrap().unwrap_err();
        let writer = writer.join().unwrap().unwrap_err();
        assert!(
            matches!(reader, StoreError::GroupFailed { ref cause } if cause.contains("could not be decoded")),
            "{reader}"
        );
        assert!(reader.to_string().contains("will be retried"), "{reader}");
        assert!(
            matches!(writer, StoreError::DecodeBinary { .. }),
            "{writer}"
        );
        assert_eq!(
            store.counters(WorkflowId::Ingress).unwrap().read,
            0,
            "nothing kept"
        );
        assert_eq!(store.queue_len_by_scan(WorkflowId::Ingress).unwrap(), 1);
        assert_eq!(store.backlog(WorkflowId::Egress).unwrap(), 1);

        // Retried alone, the reader's step commits.
        store
            .commit_read(WorkflowId::Ingress, page(&["x"]))
            .unwrap();
        assert_eq!(store.counters(WorkflowId::Ingress).unwrap().read, 1);
    }
}
