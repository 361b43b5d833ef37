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

use redb::{ReadTransaction, ReadableTableMetadata, Table};

use super::tables::LOCATIONS;
use super::{Store, StoreError};
use conduit_model::WriteRecord;

/// The longest address kept: anything longer is not an address we should trust or store.
const MAX_ADDRESS_BYTES: usize = 2048;

/// The store's key of one destination record: its sink's scope with its table and key field,
/// and its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocationKey {
    destination: String,
    key: String,
}

impl LocationKey {
    /// The key of `record`'s destination record in the sink scope `scope`.
    pub fn new(scope: &str, record: &WriteRecord) -> LocationKey {
        LocationKey {
            // The unit separator cannot occur in a URL, a table or a field name.
            destination: format!(
                "{scope}\u{1f}{}\u{1f}{}",
                record.target.table, record.target.key_field
            ),
            key: record.key.clone(),
        }
    }
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
            let key = key.borrow();
            Ok(table
                .get((key.destination.as_str(), key.key.as_str()))?
                .map(|address| address.value().to_owned()))
        })
        .collect()
}

/// Applies a write step's address changes inside its transaction.
pub(super) fn apply(
    table: &mut Table<(&str, &str), &str>,
    changes: &[(LocationKey, LocationChange)],
) -> Result<(), StoreError> {
    for (key, change) in changes {
        let entry = (key.destination.as_str(), key.key.as_str());
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
                (a.clone(), LocationChange::Set("https://one/p/@1".into())),
                (b.clone(), LocationChange::Set("https://one/p/@2".into())),
            ],
        );
        let all = [a.clone(), b.clone(), other_instance, other_table];
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
                (a.clone(), LocationChange::Set("https://one/p/@9".into())),
                (b.clone(), LocationChange::Forget),
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
    fn an_address_too_long_to_be_one_is_not_kept_and_drops_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("conduit.redb")).unwrap();
        let key = LocationKey::new("campaign https://one/", &record("profile", "c-1"));
        commit(
            &store,
            vec![(key.clone(), LocationChange::Set("https://one/p/@1".into()))],
        );
        let huge = format!("https://one/{}", "x".repeat(MAX_ADDRESS_BYTES));
        commit(&store, vec![(key.clone(), LocationChange::Set(huge))]);
        assert_eq!(store.locations(&[key]).unwrap(), [None]);
    }
}
