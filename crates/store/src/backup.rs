//! Backups and restores of the store: a consistent copy of every table taken in one read
//! transaction (so a running host keeps writing while it is taken), written to a new redb file
//! that replaces its target only once complete; and the restore of such a copy into a data
//! directory, refused while a host holds the store there.

use std::fs::File;
use std::path::{Path, PathBuf};

use redb::{Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase};

use super::tables::{self, META, META_FORMAT_VERSION};
use super::{CACHE_BYTES, FORMAT_VERSION, Store, StoreError, decode_u32};

/// What can go wrong taking or restoring a backup. Each keeps its cause as its source.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading the live store or writing the copy failed.
    #[error("copying the store failed: {0}")]
    Copy(#[source] StoreError),
    /// The new file could not be created, written or moved into place.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// redb could not create a database in the new file.
    #[error("cannot create a store in {path}: {source}")]
    Create {
        /// The file being written.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: redb::DatabaseError,
    },
    /// The backup file cannot be opened as a redb database.
    #[error("{path} is not a Conduit backup (it cannot be opened as a store: {source})")]
    Unreadable {
        /// The backup file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: redb::DatabaseError,
    },
    /// The file is a redb database without a Conduit format version.
    #[error("{path} is not a Conduit backup: it has no Conduit format version")]
    NotAStore {
        /// The backup file.
        path: PathBuf,
    },
    /// The file holds a table this build does not know (a store of a newer Conduit).
    #[error(
        "{path} holds the table '{table}', which this build does not know; use the Conduit that wrote it"
    )]
    UnknownTable {
        /// The file.
        path: PathBuf,
        /// The table's name.
        table: String,
    },
    /// The backup was written by a newer Conduit.
    #[error(
        "{path} has format version {found}, but this build understands up to {supported}; restore it with a newer conduit"
    )]
    NewerFormat {
        /// The backup file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },
    /// A host holds the store that a restore would replace.
    #[error(
        "the store {path} is in use by a running Conduit host; stop it (or scale its StatefulSet to 0) before restoring"
    )]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// A store already exists where a restore would write, and no `--force` was given.
    #[error(
        "a store already exists at {path}; restoring would replace it: pass --force to replace it"
    )]
    Exists {
        /// The store file.
        path: PathBuf,
    },
}

/// What a copy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopySummary {
    /// The format version of the copy.
    pub format_version: u32,
    /// Entries copied over every table.
    pub entries: u64,
}

impl Store {
    /// Writes a consistent copy of every table, as of one moment, into `file` (a new, empty
    /// file, e.g. an unnamed temporary one); the host keeps reading and writing meanwhile.
    pub fn backup_into(&self, file: File, path: &Path) -> Result<CopySummary, BackupError> {
        let read = self.begin_read().map_err(BackupError::Copy)?;
        let format_version = format_version(&read, path)?;
        let entries = copy_into(&read, file, path)?;
        Ok(CopySummary {
            format_version,
            entries,
        })
    }

    /// Writes a consistent copy of the store to `target`: into a new file beside it, renamed
    /// over `target` once complete, so `target` is never a half-written backup.
    pub fn backup_to(&self, target: &Path) -> Result<CopySummary, BackupError> {
        let read = self.begin_read().map_err(BackupError::Copy)?;
        let format_version = format_version(&read, self.path())?;
        let entries = copy_to(&read, target)?;
        Ok(CopySummary {
            format_version,
            entries,
        })
    }
}

/// Checks that `path` is a Conduit store this build can restore: a redb file with a format
/// version no newer than this build's and only known tables. Returns its format version.
pub fn check_backup(path: &Path) -> Result<u32, BackupError> {
    let database = open_backup(path)?;
    let read = database
        .begin_read()
        .map_err(|error| BackupError::Copy(error.into()))?;
    format_version(&read, path)
}

/// Restores the backup `backup` as the store file `store`. Refused while a host holds
/// `store`, and when a store exists there unless `force`; the backup is checked first, and
/// the new store replaces the old one only once completely written.
pub fn restore(backup: &Path, store: &Path, force: bool) -> Result<CopySummary, BackupError> {
    let database = open_backup(backup)?;
    let read = database
        .begin_read()
        .map_err(|error| BackupError::Copy(error.into()))?;
    let format_version = format_version(&read, backup)?;
    if let Some(parent) = store.parent() {
        conduit_base::private::create_dir(parent).map_err(|source| BackupError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    // Held until the new file is in place, so no host opens the old store meanwhile.
    let _held = match std::fs::metadata(store) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(BackupError::Write {
                path: store.to_path_buf(),
                source,
            });
        }
        Ok(_) => {
            let held = match Database::builder().set_cache_size(CACHE_BYTES).open(store) {
                Ok(held) => Some(held),
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(BackupError::InUse {
                        path: store.to_path_buf(),
                    });
                }
                // A damaged store is what a restore is for: replaced when forced.
                Err(_) => None,
            };
            if !force {
                return Err(BackupError::Exists {
                    path: store.to_path_buf(),
                });
            }
            held
        }
    };
    let entries = copy_to(&read, store)?;
    Ok(CopySummary {
        format_version,
        entries,
    })
}

/// Opens a backup file without writing to it.
fn open_backup(path: &Path) -> Result<ReadOnlyDatabase, BackupError> {
    ReadOnlyDatabase::open(path).map_err(|source| BackupError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

/// The format version of a store being copied, refusing a file that is not a Conduit store,
/// comes from a newer build, or holds a table this build would not copy.
fn format_version(read: &ReadTransaction, path: &Path) -> Result<u32, BackupError> {
    let not_a_store = || BackupError::NotAStore {
        path: path.to_path_buf(),
    };
    let version = match read.open_table(META) {
        Ok(meta) => meta
            .get(META_FORMAT_VERSION)
            .map_err(|error| BackupError::Copy(error.into()))?
            .and_then(|bytes| decode_u32(bytes.value()))
            .ok_or_else(not_a_store)?,
        Err(redb::TableError::TableDoesNotExist(_)) => return Err(not_a_store()),
        Err(error) => return Err(BackupError::Copy(error.into())),
    };
    if version > FORMAT_VERSION {
        return Err(BackupError::NewerFormat {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let names = read
        .list_tables()
        .map_err(|error| BackupError::Copy(error.into()))?;
    for handle in names {
        let name = redb::TableHandle::name(&handle);
        if !tables::ALL.contains(&name) && !tables::RETIRED.contains(&name) {
            return Err(BackupError::UnknownTable {
                path: path.to_path_buf(),
                table: name.to_string(),
            });
        }
    }
    Ok(version)
}

/// Copies every table into a new file beside `target`, then renames it over `target`.
fn copy_to(read: &ReadTransaction, target: &Path) -> Result<u64, BackupError> {
    let dir = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let write_error = |source| BackupError::Write {
        path: target.to_path_buf(),
        source,
    };
    // Private (0600) like the store itself: it holds contacts' personal data.
    let temp = tempfile::Builder::new()
        .prefix(".conduit-copy-")
        .tempfile_in(dir)
        .map_err(write_error)?;
    let file = temp.as_file().try_clone().map_err(write_error)?;
    let entries = copy_into(read, file, temp.path())?;
    temp.as_file().sync_all().map_err(write_error)?;
    temp.persist(target)
        .map_err(|error| write_error(error.error))?;
    // The rename itself is durable once the folder is synced.
    File::open(dir)
        .and_then(|folder| folder.sync_all())
        .map_err(write_error)?;
    Ok(entries)
}

/// Copies every table of `read` into a new database in `file`, committed once.
fn copy_into(read: &ReadTransaction, file: File, path: &Path) -> Result<u64, BackupError> {
    let create_error = |source| BackupError::Create {
        path: path.to_path_buf(),
        source,
    };
    let backend = redb::backends::FileBackend::new(file).map_err(create_error)?;
    let database = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create_with_backend(backend)
        .map_err(create_error)?;
    let write = database
        .begin_write()
        .map_err(|error| BackupError::Copy(error.into()))?;
    let entries = tables::copy_all(read, &write).map_err(BackupError::Copy)?;
    write
        .commit()
        .map_err(|error| BackupError::Copy(error.into()))?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CursorState, DesiredState};
    use conduit_model::{Phase, WorkflowId};

    fn seeded(dir: &Path) -> Store {
        let store = Store::open(&dir.join("data").join("conduit.redb")).unwrap();
        store
            .update_workflow(WorkflowId::Ingress, |record| {
                record.desired = DesiredState::Running;
            })
            .unwrap();
        store
            .set_cursor(
                WorkflowId::Ingress,
                "contact",
                &CursorState::new(Some("delta-1".into()), Phase::Incremental),
            )
            .unwrap();
        store
    }

    fn table_names(path: &Path) -> Vec<String> {
        let database = ReadOnlyDatabase::open(path).unwrap();
        let read = database.begin_read().unwrap();
        let mut names: Vec<String> = read
            .list_tables()
            .unwrap()
            .map(|handle| redb::TableHandle::name(&handle).to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_backup_of_an_open_store_holds_every_table_and_restores_into_a_working_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = seeded(dir.path());
        let backup = dir.path().join("backup.redb");
        let summary = store.backup_to(&backup).unwrap();
        assert_eq!(summary.format_version, FORMAT_VERSION);
        assert!(summary.entries > 0);
        assert_eq!(table_names(&backup), table_names_of_open(&store));
        assert_eq!(check_backup(&backup).unwrap(), FORMAT_VERSION);

        // The running store is in use: a restore over it is refused, even when forced.
        let error = restore(&backup, store.path(), true).unwrap_err();
        assert!(matches!(error, BackupError::InUse { .. }), "{error}");

        let fresh = dir.path().join("fresh").join("conduit.redb");
        restore(&backup, &fresh, false).unwrap();
        let restored = Store::open(&fresh).unwrap();
        assert_eq!(
            restored.workflow(WorkflowId::Ingress).unwrap().desired,
            DesiredState::Running
        );
        assert_eq!(
            restored
                .cursor(WorkflowId::Ingress, "contact")
                .unwrap()
                .and_then(|cursor| cursor.cursor),
            Some("delta-1".to_string())
        );
        drop(restored);
        let error = restore(&backup, &fresh, false).unwrap_err();
        assert!(matches!(error, BackupError::Exists { .. }), "{error}");
        restore(&backup, &fresh, true).unwrap();
    }

    fn table_names_of_open(store: &Store) -> Vec<String> {
        let read = store.begin_read().unwrap();
        let mut names: Vec<String> = read
            .list_tables()
            .unwrap()
            .map(|handle| redb::TableHandle::name(&handle).to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_file_that_is_not_a_conduit_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.redb");
        std::fs::write(&junk, b"not a database at all").unwrap();
        let target = dir.path().join("data").join("conduit.redb");
        let error = restore(&junk, &target, false).unwrap_err();
        assert!(matches!(error, BackupError::Unreadable { .. }), "{error}");
        assert!(std::error::Error::source(&error).is_some());

        let other = dir.path().join("other.redb");
        drop(Database::create(&other).unwrap());
        let error = restore(&other, &target, false).unwrap_err();
        assert!(matches!(error, BackupError::NotAStore { .. }), "{error}");
        assert!(!target.exists(), "nothing was written");
    }

    /// A file as format 3 left it: its addresses in the retired string-keyed table.
    fn format_3_file(path: &Path) {
        let database = Database::create(path).unwrap();
        let write = database.begin_write().unwrap();
        {
            let mut meta = write.open_table(META).unwrap();
            meta.insert(META_FORMAT_VERSION, 3u32.to_le_bytes().as_slice())
                .unwrap();
            tables::create_all(&write).unwrap();
            write.delete_table(tables::LOCATIONS).unwrap();
            let mut old = write.open_table(tables::RETIRED_LOCATIONS).unwrap();
            old.insert(
                ("campaign https://one/\u{1f}profile\u{1f}externalId", "c-1"),
                "https://one/p/@1",
            )
            .unwrap();
            // Not a destination this build ever wrote: dropped, not moved.
            old.insert(("no separators", "c-2"), "https://one/p/@2")
                .unwrap();
        }
        write.commit().unwrap();
    }

    #[test]
    fn a_format_3_file_restores_and_upgrades_with_its_addresses_moved_over() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.redb");
        format_3_file(&old);
        assert_eq!(check_backup(&old).unwrap(), 3);
        let restored = dir.path().join("data").join("conduit.redb");
        restore(&old, &restored, false).unwrap();
        let key = |scope: &str, key: &str| {
            crate::LocationKey::new(
                scope,
                &conduit_model::WriteRecord {
                    target: conduit_model::Target {
                        system: conduit_model::System::Campaign,
                        table: "profile".into(),
                        key_field: "externalId".into(),
                    },
                    key: key.into(),
                    op: conduit_model::Operation::Upsert,
                    fields: vec![],
                },
            )
        };
        let moved = [key("campaign https://one/", "c-1")];
        let store = Store::open(&restored).unwrap();
        assert_eq!(store.location_count().unwrap(), 1);
        assert_eq!(
            store.locations(&moved).unwrap(),
            [Some("https://one/p/@1".to_string())]
        );
        assert_eq!(
            store
                .locations(&[key("campaign https://two/", "c-1")])
                .unwrap(),
            [None]
        );
        drop(store);
        let names = table_names(&restored);
        assert!(!names.contains(&"locations".to_string()), "{names:?}");
        assert!(names.contains(&"location_by_key".to_string()), "{names:?}");

        // Opened in place, the file is upgraded the same way.
        let store = Store::open(&old).unwrap();
        assert_eq!(
            store.locations(&moved).unwrap(),
            [Some("https://one/p/@1".to_string())]
        );
        drop(store);
        assert!(!table_names(&old).contains(&"locations".to_string()));
        assert_eq!(check_backup(&old).unwrap(), FORMAT_VERSION);
    }

    #[test]
    fn a_backup_from_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let newer = dir.path().join("newer.redb");
        {
            let database = Database::create(&newer).unwrap();
            let write = database.begin_write().unwrap();
            {
                let mut meta = write.open_table(META).unwrap();
                meta.insert(META_FORMAT_VERSION, 99u32.to_le_bytes().as_slice())
                    .unwrap();
            }
            write.commit().unwrap();
        }
        let error = check_backup(&newer).unwrap_err();
        assert!(
            matches!(error, BackupError::NewerFormat { found: 99, .. }),
            "{error}"
        );
    }
}
