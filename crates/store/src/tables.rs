//! The redb table definitions: the one place that names the store's tables and key shapes.

use redb::{ReadTransaction, TableDefinition, WriteTransaction};

/// Store-wide metadata, e.g. the format version.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The key of the format version in [`META`].
pub(super) const META_FORMAT_VERSION: &str = "format_version";

/// Queued writes: (workflow, sequence) -> JSON of a `QueuedRecord` body.
pub(super) const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");

/// Dead letters: (workflow, id) -> JSON of a `DeadLetter` body.
pub(super) const DEAD_LETTERS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("dead_letters");

/// Cursors: (workflow, source) -> JSON of a `CursorState`.
pub(super) const CURSORS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("cursors");

/// Counters: (workflow, counter name) -> value.
pub(super) const COUNTERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("counters");

/// Workflow state: workflow -> JSON of a `WorkflowRecord`.
pub(super) const WORKFLOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("workflows");

/// Last known opt-out values per contact: contact key -> JSON of an `OptOutSnapshot`.
pub(super) const OPT_OUT_STATE: TableDefinition<&str, &[u8]> =
    TableDefinition::new("opt_out_state");

/// What Ingress last sent to each destination record: ("<system>/<table>", key) -> field
/// hashes (see `ledger.rs`).
pub(super) const LEDGER: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("ledger");

/// Ingress records to read again under a changed mapping: (mapping, key) -> phase byte
/// (see `reread.rs`).
pub(super) const REREAD: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("reread");

/// The key in [`META`] set when the ledger started on a store that already held synced data:
/// records written before it are not in it, so deletes cannot be checked against it.
pub(super) const META_LEDGER_PARTIAL: &str = "ledger_partial";

/// The audit trail: id -> JSON of an `AuditEntry`.
pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Where destination records live, as their sinks last said: digest of (sink scope, table,
/// key field, key) -> address (see `locations.rs`).
pub(super) const LOCATIONS: TableDefinition<u128, &str> = TableDefinition::new("location_by_key");

/// Addresses of the records whose key has an address slot (Ingress, through its ledger): slot
/// -> the 16-byte digest of [`LOCATIONS`]' key (checked on every read), then the address (see
/// `locations.rs`). Slots grow in reading order, so new entries land at the table's end.
pub(super) const SLOT_LOCATIONS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("location_by_slot");

/// The key in [`META`] of the next address slot to give (8 bytes, little-endian).
pub(super) const META_NEXT_ADDRESS_SLOT: &str = "next_address_slot";

/// The address table of format 3, keyed by the scope and key strings themselves: moved into
/// [`LOCATIONS`] and deleted when a file is upgraded.
pub(super) const RETIRED_LOCATIONS: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("locations");

/// Tables of older formats: a backup may hold them, a copy keeps them only where its source
/// has them, and an upgrade moves their entries over and deletes them.
pub(super) const RETIRED: [&str; 1] = ["locations"];

/// Counter names.
pub(super) mod counter {
    /// Records in the queue (the backlog).
    pub const QUEUED: &str = "queued";
    /// The next queue sequence number.
    pub const NEXT_SEQ: &str = "next_seq";
    /// Source records read, all time.
    pub const READ: &str = "read";
    /// Records written to the destination, all time.
    pub const WRITTEN: &str = "written";
    /// Records skipped by the plugin (filtered out, switched off), all time.
    pub const SKIPPED: &str = "skipped";
    /// Of the skipped, incremental changes that would have written nothing new, all time.
    pub const SKIPPED_UNCHANGED: &str = "skipped_unchanged";
    /// Of the skipped, deletes of destination records Conduit never wrote, all time.
    pub const SKIPPED_NOT_OWNED: &str = "skipped_not_owned";
    /// Records dead-lettered, all time.
    pub const DEAD_LETTERED: &str = "dead_lettered";
    /// Dead letters currently held.
    pub const DEAD_LETTERS: &str = "dead_letters";
    /// The next dead-letter id.
    pub const NEXT_DEAD_LETTER: &str = "next_dead_letter";
}

/// Creates every table so that read transactions never meet a missing one.
pub(super) fn create_all(write: &WriteTransaction) -> Result<(), redb::TableError> {
    write.open_table(QUEUE)?;
    write.open_table(DEAD_LETTERS)?;
    write.open_table(CURSORS)?;
    write.open_table(COUNTERS)?;
    write.open_table(WORKFLOWS)?;
    write.open_table(OPT_OUT_STATE)?;
    write.open_table(LEDGER)?;
    write.open_table(REREAD)?;
    write.open_table(AUDIT)?;
    write.open_table(LOCATIONS)?;
    write.open_table(SLOT_LOCATIONS)?;
    Ok(())
}

/// The name of every table, [`META`] included: a backup holding any other is refused.
pub(super) const ALL: [&str; 12] = [
    "meta",
    "queue",
    "dead_letters",
    "cursors",
    "counters",
    "workflows",
    "opt_out_state",
    "ledger",
    "reread",
    "audit",
    "location_by_key",
    "location_by_slot",
];

/// Copies every table of `read` into `write` (for backups and restores); returns the
/// number of entries copied.
pub(super) fn copy_all(
    read: &ReadTransaction,
    write: &WriteTransaction,
) -> Result<u64, crate::StoreError> {
    Ok(copy(read, write, META)?
        + copy(read, write, QUEUE)?
        + copy(read, write, DEAD_LETTERS)?
        + copy(read, write, CURSORS)?
        + copy(read, write, COUNTERS)?
        + copy(read, write, WORKFLOWS)?
        + copy(read, write, OPT_OUT_STATE)?
        + copy(read, write, LEDGER)?
        + copy(read, write, REREAD)?
        + copy(read, write, AUDIT)?
        + copy(read, write, LOCATIONS)?
        + copy(read, write, SLOT_LOCATIONS)?
        + copy_retired(read, write, RETIRED_LOCATIONS)?)
}

/// Copies a table of an older format when `read` holds it (a backup of an older store), so that
/// opening the copy upgrades it as it would have upgraded the original.
fn copy_retired<K: redb::Key + 'static, V: redb::Value + 'static>(
    read: &ReadTransaction,
    write: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<u64, crate::StoreError> {
    match read.open_table(table) {
        Ok(_) => copy(read, write, table),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(error) => Err(error.into()),
    }
}

/// Copies one table, entry by entry in key order; a table missing from `read` (an older
/// format) is created empty.
fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
    read: &ReadTransaction,
    write: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<u64, crate::StoreError> {
    let mut target = write.open_table(table)?;
    let source = match read.open_table(table) {
        Ok(source) => source,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    let mut copied = 0;
    for entry in redb::ReadableTable::iter(&source)? {
        let (key, value) = entry?;
        target.insert(key.value(), value.value())?;
        copied += 1;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_the_store_creates_is_named_in_all_and_copied() {
        let dir = tempfile::tempdir().unwrap();
        let database = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let write = database.begin_write().unwrap();
        write.open_table(META).unwrap();
        create_all(&write).unwrap();
        let mut created: Vec<String> = write
            .list_tables()
            .unwrap()
            .map(|handle| redb::TableHandle::name(&handle).to_string())
            .collect();
        created.sort();
        let mut all: Vec<String> = ALL.iter().map(ToString::to_string).collect();
        all.sort();
        assert_eq!(created, all);
        write.commit().unwrap();
        // A copy creates every table too, so a backup of any store lists them all.
        let copy_db = redb::Database::create(dir.path().join("copy.redb")).unwrap();
        let read = redb::ReadableDatabase::begin_read(&database).unwrap();
        let target = copy_db.begin_write().unwrap();
        copy_all(&read, &target).unwrap();
        let copied = target.list_tables().unwrap().count();
        assert_eq!(copied, ALL.len());
    }
}
