//! [`QueuedRecord`]: a write as the store keeps it, shared by the queue, the dead letters (a
//! refused write keeps its record) and the re-read list; and the store's clock.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use conduit_model::{Phase, WriteRecord};

/// A write waiting in a workflow's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedRecord {
    /// Its position in the queue.
    #[serde(skip)]
    pub seq: u64,
    /// What to write.
    pub record: WriteRecord,
    /// Where it came from (the table mapping's name, `events`, `opt-out`).
    pub origin: String,
    /// Failed write attempts so far.
    pub attempts: u32,
    /// When it was queued (milliseconds since the Unix epoch).
    pub queued_at_ms: i64,
    /// The pass over the source it was read in (Ingress), so that a re-read under a changed
    /// mapping knows whether apply-updates-off fields were due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Not handed to the writer before this time (ms since the Unix epoch); 0: at once.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_before_ms: i64,
    /// Why the last attempt did not write it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,
    /// When it was first deferred (ms since the Unix epoch): the start of a bounded wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_since_ms: Option<i64>,
    /// Its key's address slot, given by the ledger (Ingress; see the store's `ledger.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_slot: Option<u64>,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

impl QueuedRecord {
    /// A record as the reader queues it: no attempt yet, ready at once.
    pub fn new(seq: u64, record: WriteRecord, origin: String, queued_at_ms: i64) -> QueuedRecord {
        QueuedRecord {
            seq,
            record,
            origin,
            attempts: 0,
            queued_at_ms,
            not_before_ms: 0,
            last_reason: None,
            deferred_since_ms: None,
            phase: None,
            address_slot: None,
        }
    }

    /// How long it has been deferred at `now_ms` (zero if it never was).
    pub fn deferred_for(&self, now_ms: i64) -> Duration {
        let since = self.deferred_since_ms.unwrap_or(now_ms);
        Duration::from_millis(u64::try_from(now_ms.saturating_sub(since)).unwrap_or(0))
    }
}

/// Now, in milliseconds since the Unix epoch (the clock of "queued at" and "not before").
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
