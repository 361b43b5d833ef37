//! Where destination records live, as the destination last said: one address per record key
//! (e.g. a Campaign profile's href), so that the next write of the key goes straight to its
//! record instead of looking the key up first.
//!
//! An address is a hint, never the truth: a sink handed a stale one (the record was deleted or
//! recreated behind our back) finds the record by its key and says so, and the entry is then
//! replaced or forgotten in the same write transaction that removes the record from the queue.
//! A crash between the write and that commit only loses the hint, never a record. Entries are
//! scoped by the sink's own scope (e.g. the Campaign instance's API base), so repointing a
//! workflow at another instance never reuses one instance's addresses on another.
//!
//! The table is keyed by a 16-byte digest (SHA-256, truncated) of the scope, the table, the key
//! field and the key, not by those strings: a key is written at a random place of the table for
//! every new record, and with ~120-byte string keys each branch page held ~30 of them, so a
//! write step of 1,000 records dirtied (by estimate) ~800 branch pages besides its leaves. A
//! collision would
//! hand one record another's address; at 128 bits it is not expected in the life of any store,
//! and SHA-256 keeps a crafted key from making one.

use redb::{ReadTransaction, ReadableTableMetadata, Table};
use sha2::{Digest, Sha256};

use super::tables::{LOCATIONS, RETIRED_LOCATIONS};
use super::{Store, StoreError};
use conduit_model::WriteRecord;

/// The longest address kept: anything longer is not an address we should trust or store.
const MAX_ADDRESS_BYTES: usize = 2048;

/// The store's key of one destination record: a digest of its sink's scope, its table and key
/// field, and its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocationKey {
    digest: u128,
}

impl LocationKey {
    /// The key of `record`'s destination record in the sink scope `scope`.
    pub fn new(scope: &str, record: &WriteRecord) -> LocationKey {
        LocationKey::from_parts([
            scope,
            record.target.table.as_str(),
            record.target.key_field.as_str(),
            record.key.as_str(),
        ])
    }

    /// The key of the record `key` of `table` (by `key_field`) in the sink scope `scope`, given
    /// in that order.
    fn from_parts(parts: [&str; 4]) -> LocationKey {
        let mut hasher = Sha256::new();
        // Each part is preceded by its length, so no two different sets of parts meet.
        for part in parts {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        let hash = hasher.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash[..16]);
        LocationKey {
            digest: u128::from_be_bytes(first),
        }
    }
}

/// Moves the addresses of format 3 (keyed by `"<scope>\u{1f}<table>\u{1f}<key field>"` and the
/// key) into the digest-keyed table and deletes the old table; returns how many moved. An
/// entry whose destination does not split into its three parts is dropped: it is only a hint.
pub(super) fn upgrade_from_format_3(write: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let mut moved = 0;
    {
        let old = match write.open_table(RETIRED_LOCATIONS) {
            Ok(old) => old,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(error) => return Err(error.into()),
        };
        let mut new = write.open_table(LOCATIONS)?;
        for entry in redb::ReadableTable::iter(&old)? {
            let (key, address) = entry?;
            let (destination, record_key) = key.value();
            let mut parts = destination.splitn(3, '\u{1f}');
            if let (Some(scope), Some(table), Some(field)) =
                (parts.next(), parts.next(), parts.next())
            {
                let digest = LocationKey::from_parts([scope, table, field, record_key]).digest;
                new.insert(digest, address.value())?;
                moved += 1;
            }
        }
    }
    write.delete_table(RETIRED_LOCATIONS)?;
    Ok(moved)
}

/// What a write changes in a record's known address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationChange {
    /// The record lives at this address now.
    Set(String),
    /// Nothing is known any more (the record is gone).
    Forget,
}

impl Store {
    /// The known address of each key, in order (`None` where nothing is known).
    pub fn locations(&self, keys: &[LocationKey]) -> Result<Vec<Option<String>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let read = self.begin_read()?;
        let keys: Vec<Option<&LocationKey>> = keys.iter().map(Some).collect();
        read_in(&read, &keys)
    }

    /// How many addresses are known (for checks and sizing).
    pub fn location_count(&self) -> Result<u64, StoreError> {
        let read = self.begin_read()?;
        Ok(read.open_table(LOCATIONS)?.len()?)
    }
}

/// The known address of each key in `read`, in order (`None` for no key or nothing known).
pub(super) fn read_in<K: std::borrow::Borrow<LocationKey>>(
    read: &ReadTransaction,
    keys: &[Option<K>],
) -> Result<Vec<Option<String>>, StoreError> {
    if keys.iter().all(Option::is_none) {
        return Ok(vec![None; keys.len()]);
    }
    let table = read.open_table(LOCATIONS)?;
    keys.iter()
        .map(|key| {
            let Some(key) = key else { return Ok(None) };
            Ok(table
                .get(key.borrow().digest)?
                .map(|address| address.value().to_owned()))
        })
        .collect()
}

/// Applies a write step's address changes inside its transaction.
pub(super) fn apply(
    table: &mut Table<u128, &str>,
    changes: &[(LocationKey, LocationChange)],
) -> Result<(), StoreError> {
    for (key, change) in changes {
        let entry = key.digest;
        match change {
            LocationChange::Set(address) if address.len() <= MAX_ADDRESS_BYTES => {
                // The writer sends only changed addresses: one traversal, no lookup first.
                table.insert(entry, address.as_str())?;
            }
            LocationChange::Set(_) | LocationChange::Forget => {
                table.remove(entry)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WriteCommit;
    use conduit_model::{Operation, System, Target, WorkflowId};

    fn record(table: &str, key: &str) -> WriteRecord {
        WriteRecord {
            target: Target {
                system: System::Campaign,
                table: table.into(),
                key_field: "externalId".into(),
            },
            key: key.into(),
            op: Operation::Upsert,
            fields: vec![],
        }
    }

    fn commit(store: &Store, locations: Vec<(LocationKey, LocationChange)>) {
        store
            .commit_write(
                WorkflowId::Ingress,
                WriteCommit {
                    locations,
                    ..WriteCommit::default()
                },
            )
            .unwrap();
    }

    #[test]
    fn addresses_are_kept_per_scope_and_key_replaced_and_forgotten_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conduit.redb");
        let store = Store::open(&path).unwrap();
        let a = LocationKey::new("campaign https://one/", &record("profile", "c-1"));
        let b = LocationKey::new("campaign https://one/", &record("profile", "c-2"));
        let other_instance = LocationKey::new("campaign https://two/", &record("profile", "c-1"));
        let other_table = LocationKey::new("campaign https://one/", &record("cusThing", "c-1"));
        commit(
            &store,
            vec![
                (a, LocationChange::Set("https://one/p/@1".into())),
                (b, LocationChange::Set("https://one/p/@2".into())),
            ],
        );
        let all = [a, b, other_instance, other_table];
        assert_eq!(
            store.locations(&all).unwrap(),
            [
                Some("https://one/p/@1".to_string()),
                Some("https://one/p/@2".to_string()),
                None,
                None
            ]
        );
        commit(
            &store,
            vec![
                (a, LocationChange::Set("https://one/p/@9".into())),
                (b, LocationChange::Forget),
            ],
        );
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.locations(&[a, b]).unwrap(),
            [Some("https://one/p/@9".to_string()), None]
        );
        assert_eq!(store.location_count().unwrap(), 1);
    }

    #[test]
    fn keys_differ_wherever_the_parts_differ_even_when_their_text_joins_the_same() {
        let key = |scope: &str, table: &str, field: &str, key: &str| {
            let mut record = record(table, key);
            record.target.key_field = field.into();
            LocationKey::new(scope, &record)
        };
        let base = key("s", "profile", "externalId", "c-1");
        assert_eq!(base, key("s", "profile", "externalId", "c-1"));
        for other in [
            key("sp", "rofile", "externalId", "c-1"),
            key("s", "profil", "eexternalId", "c-1"),
            key("s", "profile", "externalI", "dc-1"),
            key("s", "profile", "externalId", "c-2"),
            key("t", "profile", "externalId", "c-1"),
            key("s", "profile", "email", "c-1"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn an_address_too_long_to_be_one_is_not_kept_and_drops_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("conduit.redb")).unwrap();
        let key = LocationKey::new("campaign https://one/", &record("profile", "c-1"));
        commit(
            &store,
            vec![(key, LocationChange::Set("https://one/p/@1".into()))],
        );
        let huge = format!("https://one/{}", "x".repeat(MAX_ADDRESS_BYTES));
        commit(&store, vec![(key, LocationChange::Set(huge))]);
        assert_eq!(store.locations(&[key]).unwrap(), [None]);
    }
}
