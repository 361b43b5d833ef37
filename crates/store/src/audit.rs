//! The audit trail: every state change an operator asks for (start, stop, replay, dead-letter
//! retry and drop) and every config change a start applies, with its time, who asked (how they
//! were authenticated and from where, never the token itself) and the outcome. Entries are
//! appended in their own transaction and never changed; ids grow with time.

use redb::{ReadableTable, TableError};
use serde::{Deserialize, Serialize};

use super::record::now_ms;
use super::tables::AUDIT;
use super::{Store, StoreError, decode_json, encode_json};

/// Who asked for a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// How the caller was let in: `token` (a valid bearer token), `loopback, no token` (no
    /// token is configured, so only loopback can listen) or `host` (the host itself, e.g.
    /// restarting the workflows that were running).
    pub auth: String,
    /// The peer's address, when the change came over the network.
    pub peer: Option<String>,
    /// The client as it named itself (`cli`, `page`), else `api`; informative only, since
    /// any client can send any name.
    pub via: String,
}

impl Caller {
    /// The host acting on its own (restoring workflows at start).
    pub fn host() -> Caller {
        Caller {
            auth: "host".into(),
            peer: None,
            via: "host start".into(),
        }
    }
}

/// How a change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// It was done.
    Ok,
    /// It was refused (not found, not allowed in this state, invalid config).
    Refused,
    /// It failed (a store or service error).
    Failed,
}

impl AuditOutcome {
    /// The name used in the API and the CLI (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Failed => "failed",
        }
    }
}

/// An entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// What was asked: `start`, `stop`, `replay`, `dead-letter-retry`, `dead-letter-drop`,
    /// `config-applied`.
    pub action: String,
    /// What it was asked of, e.g. `ingress`, `ingress/contacts`, `egress/12`.
    pub target: String,
    /// Who asked.
    pub caller: Caller,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// The answer given or what changed.
    pub detail: String,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its id: later entries have larger ids.
    pub id: u64,
    /// When it was recorded (milliseconds since the Unix epoch).
    pub at_ms: i64,
    /// What was asked.
    pub action: String,
    /// What it was asked of.
    pub target: String,
    /// Who asked.
    pub caller: Caller,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// The answer given or what changed.
    pub detail: String,
}

impl Store {
    /// Appends an entry to the audit trail and returns its id.
    pub fn record_audit(&self, entry: NewAuditEntry) -> Result<u64, StoreError> {
        let write = self.begin_write()?;
        let id = {
            let mut table = write.open_table(AUDIT)?;
            let id = table.last()?.map_or(1, |(key, _)| key.value() + 1);
            let stored = AuditEntry {
                id,
                at_ms: now_ms(),
                action: entry.action,
                target: entry.target,
                caller: entry.caller,
                outcome: entry.outcome,
                detail: entry.detail,
            };
            table.insert(id, encode_json(&stored).as_slice())?;
            id
        };
        write.commit()?;
        Ok(id)
    }

    /// The latest entries, newest first: at most `limit`, only those with ids below `before`
    /// when given (paging back in time).
    pub fn audit(&self, limit: usize, before: Option<u64>) -> Result<Vec<AuditEntry>, StoreError> {
        let read = self.begin_read()?;
        // A store created before the audit trail existed has no table until the first entry.
        let table = match read.open_table(AUDIT) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(other) => return Err(other.into()),
        };
        let upper = before.unwrap_or(u64::MAX);
        let mut entries = Vec::new();
        for item in table.range(..upper)?.rev().take(limit) {
            let (_, value) = item?;
            entries.push(decode_json("audit entry", value.value())?);
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str, outcome: AuditOutcome) -> NewAuditEntry {
        NewAuditEntry {
            action: action.into(),
            target: "ingress".into(),
            caller: Caller {
                auth: "token".into(),
                peer: Some("127.0.0.1:50000".into()),
                via: "cli".into(),
            },
            outcome,
            detail: format!("{action} answered"),
        }
    }

    #[test]
    fn entries_survive_a_reopen_newest_first_and_page_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conduit.redb");
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.audit(10, None).unwrap(), Vec::new());
            assert_eq!(
                store
                    .record_audit(entry("start", AuditOutcome::Ok))
                    .unwrap(),
                1
            );
            store
                .record_audit(entry("replay", AuditOutcome::Refused))
                .unwrap();
            store.record_audit(entry("stop", AuditOutcome::Ok)).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let all = store.audit(10, None).unwrap();
        let actions: Vec<_> = all.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["stop", "replay", "start"]);
        assert_eq!(all[1].outcome, AuditOutcome::Refused);
        assert_eq!(all[2].caller.auth, "token");
        assert!(all[0].at_ms >= all[2].at_ms && all[2].at_ms > 0);
        let page: Vec<_> = store
            .audit(1, Some(3))
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(page, [2]);
    }

    #[test]
    fn a_store_from_before_the_audit_trail_reads_an_empty_trail_then_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conduit.redb");
        drop(Store::open(&path).unwrap());
        {
            // What an older build left: every table but the audit trail.
            let db = redb::Database::create(&path).unwrap();
            let write = db.begin_write().unwrap();
            write.delete_table(AUDIT).unwrap();
            write.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.audit(5, None).unwrap(), Vec::new());
        store.record_audit(entry("stop", AuditOutcome::Ok)).unwrap();
        assert_eq!(store.audit(5, None).unwrap().len(), 1);
    }
}
