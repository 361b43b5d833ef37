//! The durable store (redb): each workflow's queue between its reader and writer, the cursor
//! per source, dead letters, workflow state and counters, and the operators' audit trail.
//!
//! Every change a stage makes is one write transaction: the reader's outputs, dead letters,
//! counters and new cursor commit together, and so do the writer's removals and dead letters.
//! Counters live in the same transactions as the data they count, so the backlog is exact and
//! O(1) to read. This crate knows redb and serde; it knows nothing of HTTP or plugins.

mod audit;
mod backup;
mod codec;
mod counters;
mod dead_letters;
mod group;
mod inspect;
mod ledger;
mod locations;
mod queue;
mod recent;
mod record;
mod reread;
mod state;
mod tables;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase};

pub use audit::{AuditEntry, AuditOutcome, Caller, NewAuditEntry};
pub use backup::{BackupError, CopySummary, check_backup, restore};
pub use dead_letters::{DeadLetter, DeadLetterFilter, DeadLetterPayload, NewDeadLetter, Stage};
pub use group::GroupCommits;
pub use inspect::PendingKeys;
pub use ledger::LedgerPolicy;
pub use locations::{LocationChange, LocationKey};
pub use queue::{Deferral, InFlight, Located, ReadCommit, ReadyBatch, WriteCommit};
pub use record::{QueuedRecord, now_ms};
pub use state::{Counters, CursorState, DesiredState, OptOutSnapshot, WorkflowRecord};

use tables::{META, META_FORMAT_VERSION};

/// The on-disk format this build writes and understands. Version 2 added the ledger; version
/// 3 queues records in a binary form (`codec.rs`; JSON entries of older builds still read) and
/// keeps destination addresses (`locations.rs`); version 4 keys those addresses by a 16-byte
/// digest instead of the scope and key strings (0.91x the write calls and 0.85x the bytes the
/// host sent to storage over a 1M-record initial load; the version 3 addresses are moved over
/// on upgrade); version 5 gives each Ingress key an address slot in its ledger entry and
/// queued record, and keeps the addresses of such keys by slot (`locations.rs`; addresses kept
/// by digest are still read, and move to their slot when they next change).
/// An older file is upgraded in place when opened; an older build refuses a newer file instead
/// of misreading its queue.
pub const FORMAT_VERSION: u32 = 5;

/// redb's page cache. Its default (1 GiB) keeps every page touched in memory, so a large
/// backlog would grow the host's RSS with the file; the queue is only ever read at its head
/// and appended at its tail, so a small cache loses nothing.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// What can go wrong with the store. Each failure of redb keeps redb's own error (one variant
/// per kind of operation, as redb types them) as its source, and says it in its message too,
/// because operators see the message alone (a workflow's reason, an API answer).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database.
    #[error(
        "the data file {path} is in use by another Conduit host; stop that host or give this one another --data-dir"
    )]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// The file was written by a newer Conduit.
    #[error(
        "the data file {path} has format version {found}, but this build understands up to {supported}; run a newer conduit (the file is left untouched)"
    )]
    NewerFormat {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },
    /// The data folder or file could not be created.
    #[error("the data store failed: cannot create {path}: {source}")]
    Create {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// redb could not open the database file.
    #[error("the data store failed: cannot open {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: redb::DatabaseError,
    },
    /// The file is being reopened after an I/O error and is still held by transactions of
    /// the discarded handle.
    #[error("the data store failed: {path} is being reopened after an I/O error; retrying")]
    Reopening {
        /// The database file.
        path: PathBuf,
    },
    /// A read or write transaction could not begin.
    #[error("the data store failed: {0}")]
    Transaction(#[source] redb::TransactionError),
    /// A table could not be opened.
    #[error("the data store failed: {0}")]
    Table(#[source] redb::TableError),
    /// Reading or writing inside a transaction failed.
    #[error("the data store failed: {0}")]
    Storage(#[source] redb::StorageError),
    /// Inserting through a table cursor failed.
    #[error("the data store failed: {0}")]
    Cursor(#[source] redb::CursorError),
    /// The disk refused a write (full, read-only, I/O error). Nothing of the transaction was kept.
    #[error(
        "the data store could not commit: {0}; nothing of this step was kept, it will be retried"
    )]
    Commit(#[source] redb::CommitError),
    /// Another step committed in the same transaction failed, so this one was not kept
    /// either (see `group.rs`).
    #[error(
        "the data store could not commit: a step committed together with this one failed ({cause}); nothing of this step was kept, it will be retried"
    )]
    GroupFailed {
        /// The other step's failure, as its message.
        cause: String,
    },
    /// A stored value could not be decoded.
    #[error("a stored {what} could not be decoded: {source}")]
    Decode {
        /// What kind of value.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored binary value could not be decoded.
    #[error("a stored {what} could not be decoded: {source}")]
    DecodeBinary {
        /// What kind of value.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: postcard::Error,
    },
    /// The stored format version is not a 4-byte number.
    #[error("a stored format version could not be decoded: not a 4-byte number")]
    BadFormatVersion,
    /// The queue holds an entry at or past the number its sequence counter gives the next one.
    #[error(
        "the data store is damaged: the {workflow} queue already holds a record numbered {seq} or later, past its sequence counter; restore the data file from a backup (`conduit restore`)"
    )]
    QueueOrder {
        /// The workflow whose queue it is.
        workflow: String,
        /// The number the next record was to take.
        seq: u64,
    },
    /// A requested item does not exist.
    #[error("{0}")]
    NotFound(String),
}

impl From<redb::TransactionError> for StoreError {
    fn from(error: redb::TransactionError) -> Self {
        StoreError::Transaction(error)
    }
}

impl From<redb::TableError> for StoreError {
    fn from(error: redb::TableError) -> Self {
        StoreError::Table(error)
    }
}

impl From<redb::StorageError> for StoreError {
    fn from(error: redb::StorageError) -> Self {
        StoreError::Storage(error)
    }
}

impl From<redb::CommitError> for StoreError {
    fn from(error: redb::CommitError) -> Self {
        StoreError::Commit(error)
    }
}

/// The durable store of one host. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    /// `None` after an I/O error poisoned the open database: the next use reopens the file.
    db: Arc<Mutex<Option<Arc<Database>>>>,
    path: PathBuf,
    /// Records just queued, kept decoded for the writer (`recent.rs`).
    recent: Arc<Mutex<recent::Recent>>,
    /// The workflows' group commits (`group.rs`).
    groups: Arc<group::Groups>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `path`, recovering from a crash if needed, and checks
    /// its format version. A second host on the same file is refused. A new file and its
    /// missing folders are private (0600 / 0700): queued records and dead letters hold
    /// contacts' personal data.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent() {
            conduit_base::private::create_dir(parent).map_err(|source| StoreError::Create {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        conduit_base::private::precreate_file(path).map_err(|source| StoreError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let db = open_database(path)?;
        let store = Store {
            db: Arc::new(Mutex::new(Some(Arc::new(db)))),
            path: path.to_path_buf(),
            recent: Arc::default(),
            groups: Arc::default(),
        };
        store.check_format_version()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open database, reopening the file if an earlier I/O error poisoned it.
    fn database(&self) -> Result<Arc<Database>, StoreError> {
        let mut slot = self
            .db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        // Transactions still running on the poisoned database keep its file lock for a moment.
        let db = open_database(&self.path).map_err(|error| match error {
            StoreError::InUse { path } => StoreError::Reopening { path },
            other => other,
        })?;
        let db = Arc::new(db);
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Forgets a database that redb refuses to use after a failed write (a full disk, an I/O
    /// error): redb recovers its file only on open, so without this the host would never heal.
    fn discard_poisoned(&self, poisoned: &Arc<Database>) {
        let mut slot = self
            .db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.as_ref().is_some_and(|db| Arc::ptr_eq(db, poisoned)) {
            *slot = None;
        }
    }

    /// The recently queued records (a cache that is correct whatever it holds, so a panic
    /// while it was locked leaves nothing to repair).
    fn recent(&self) -> std::sync::MutexGuard<'_, recent::Recent> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Begins a read, reopening the database first if an I/O error poisoned it.
    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        let db = self.database()?;
        match db.begin_read() {
            Err(redb::TransactionError::Storage(redb::StorageError::PreviousIo)) => {
                self.discard_poisoned(&db);
                drop(db);
                Ok(self.database()?.begin_read()?)
            }
            other => Ok(other?),
        }
    }

    /// Begins a write, reopening the database first if an I/O error poisoned it.
    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let db = self.database()?;
        match db.begin_write() {
            Err(redb::TransactionError::Storage(redb::StorageError::PreviousIo)) => {
                self.discard_poisoned(&db);
                drop(db);
                Ok(self.database()?.begin_write()?)
            }
            other => Ok(other?),
        }
    }

    fn check_format_version(&self) -> Result<(), StoreError> {
        let found = {
            let read = self.begin_read()?;
            match read.open_table(META) {
                Ok(table) => table
                    .get(META_FORMAT_VERSION)?
                    .map(|bytes| decode_u32(bytes.value())),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(other) => return Err(other.into()),
            }
        };
        match found {
            Some(Some(version)) if version > FORMAT_VERSION => Err(StoreError::NewerFormat {
                path: self.path.clone(),
                found: version,
                supported: FORMAT_VERSION,
            }),
            Some(Some(version)) if version < FORMAT_VERSION => self.upgrade(version),
            Some(Some(_)) => Ok(()),
            Some(None) => Err(StoreError::BadFormatVersion),
            None => {
                let write = self.begin_write()?;
                {
                    let mut meta = write.open_table(META)?;
                    meta.insert(META_FORMAT_VERSION, FORMAT_VERSION.to_le_bytes().as_slice())?;
                    tables::create_all(&write)?;
                }
                write.commit()?;
                Ok(())
            }
        }
    }
}

impl Store {
    /// Upgrades an older file in place: new tables are created, and a store that already
    /// synced records notes that its ledger does not know them.
    fn upgrade(&self, from: u32) -> Result<(), StoreError> {
        let write = self.begin_write()?;
        let mut moved_addresses = 0;
        {
            tables::create_all(&write)?;
            let mut meta = write.open_table(META)?;
            if from < 2 {
                meta.insert(tables::META_LEDGER_PARTIAL, [1u8].as_slice())?;
            }
            if from < 4 {
                moved_addresses = locations::upgrade_from_format_3(&write)?;
            }
            meta.insert(META_FORMAT_VERSION, FORMAT_VERSION.to_le_bytes().as_slice())?;
        }
        write.commit()?;
        tracing::info!(from, to = FORMAT_VERSION, moved_addresses, path = %self.path.display(), "upgraded the data file");
        Ok(())
    }
}

/// Opens (or creates) the database file; redb repairs it if a crash interrupted a commit.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                path: path.to_path_buf(),
            },
            source => StoreError::Open {
                path: path.to_path_buf(),
                source,
            },
        })
}

fn decode_u32(bytes: &[u8]) -> Option<u32> {
    let array: [u8; 4] = bytes.try_into().ok()?;
    Some(u32::from_le_bytes(array))
}

fn encode_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own plain data types to JSON cannot fail (no maps with non-string keys).
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_the_same_file_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conduit.redb");
        let _first = Store::open(&path).unwrap();
        let second = Store::open(&path).unwrap_err();
        assert!(matches!(second, StoreError::InUse { .. }), "{second}");
        assert!(
            second
                .to_string()
                .contains("in use by another Conduit host")
        );
    }

    #[test]
    fn a_file_from_a_newer_format_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conduit.redb");
        {
            let db = Database::create(&path).unwrap();
            let write = db.begin_write().unwrap();
            {
                let mut meta = write.open_table(META).unwrap();
                meta.insert(META_FORMAT_VERSION, 99u32.to_le_bytes().as_slice())
                    .unwrap();
            }
            write.commit().unwrap();
        }
        let error = Store::open(&path).unwrap_err();
        assert!(
            matches!(error, StoreError::NewerFormat { found: 99, .. }),
            "{error}"
        );
        let db = Database::create(&path).unwrap();
        let read = db.begin_read().unwrap();
        let meta = read.open_table(META).unwrap();
        let version = meta.get(META_FORMAT_VERSION).unwrap().unwrap();
        assert_eq!(decode_u32(version.value()), Some(99));
    }

    #[test]
    fn reopening_keeps_the_format_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conduit.redb");
        drop(Store::open(&path).unwrap());
        Store::open(&path).unwrap();
    }

    #[test]
    fn failures_keep_their_cause_as_the_source_and_say_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let error = Store::open(&file.join("conduit.redb")).unwrap_err();
        assert!(matches!(error, StoreError::Create { .. }), "{error:?}");
        let source = std::error::Error::source(&error).expect("the I/O error is the source");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert!(
            error.to_string().contains("cannot create")
                && error.to_string().contains(&source.to_string()),
            "{error}"
        );

        let error = decode_json::<Counters>("counters", b"{not json").unwrap_err();
        let source = std::error::Error::source(&error).expect("serde's error is the source");
        assert!(source.downcast_ref::<serde_json::Error>().is_some());
        assert_eq!(
            error.to_string(),
            format!("a stored counters could not be decoded: {source}")
        );

        let error = StoreError::from(redb::StorageError::PreviousIo);
        assert!(
            std::error::Error::source(&error)
                .and_then(|source| source.downcast_ref::<redb::StorageError>())
                .is_some(),
            "{error:?}"
        );
    }
}
