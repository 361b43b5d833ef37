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
//!
//! Even so, a random place per new record meant a 1,000-record write step rewrote ~1,000
//! leaves of a large table. So a record whose key has an *address slot* (Ingress: the ledger
//! gives each key a number in reading order, see `ledger.rs`) keeps its address in a second
//! table keyed by that slot, where new records land at the end. Its entry holds the digest too,
//! and an address is only handed out when the digest matches, so a slot never lends one
//! record's address to another (the same destination key written under another scope or key
//! field). A write queued without a slot (Opt-in/out's updates of profiles) takes its key's
//! slot from the ledger when the writer takes it, so it finds what Ingress's writes taught.
//! Keys the ledger does not know, and addresses kept before format 5, stay in the digest
//! table, which is read when the slot's entry has nothing.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, Table};
use sha2::{Digest, Sha256};

use super::tables::{LOCATIONS, RETIRED_LOCATIONS, SLOT_LOCATIONS};
use super::{Store, StoreError};
use conduit_model::WriteRecord;

/// The longest address kept: anything longer is not an address we should trust or store.
const MAX_ADDRESS_BYTES: usize = 2048;

/// The store's key of one destination record: a digest of its sink's scope, its table and key
/// field, and its key; and the key's address slot, when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocationKey {
    digest: u128,
    slot: Option<u64>,
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
            slot: None,
        }
    }

    /// The same key, kept under the address slot `slot` (see the module doc).
    pub(super) fn in_slot(self, slot: Option<u64>) -> LocationKey {
        LocationKey { slot, ..self }
    }
}

/// A slot table entry: the key's digest (big-endian), then the address.
fn slot_entry(digest: u128, address: &str) -> Vec<u8> {
    let mut entry = Vec::with_capacity(16 + address.len());
    entry.extend_from_slice(&digest.to_be_bytes());
    entry.extend_from_slice(address.as_bytes());
    entry
}

/// The address in a slot table entry, when the entry is whole and belongs to `digest`.
fn slot_address(entry: &[u8], digest: u128) -> Option<&str> {
    let (owner, address) = entry.split_at_checked(16)?;
    let owner = u128::from_be_bytes(owner.try_into().ok()?);
    (owner == digest).then(|| std::str::from_utf8(address).ok())?
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

    /// How many addresses are kept, in both tables (for checks and sizing).
    pub fn location_count(&self) -> Result<u64, StoreError> {
        let read = self.begin_read()?;
        Ok(read.open_table(LOCATIONS)?.len()? + read.open_table(SLOT_LOCATIONS)?.len()?)
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
    let by_digest = read.open_table(LOCATIONS)?;
    let by_slot = read.open_table(SLOT_LOCATIONS)?;
    keys.iter()
        .map(|key| {
            let Some(key) = key else { return Ok(None) };
            let key = key.borrow();
            if let Some(slot) = key.slot
                && let Some(entry) = by_slot.get(slot)?
                && let Some(address) = slot_address(entry.value(), key.digest)
            {
                return Ok(Some(address.to_owned()));
            }
            Ok(by_digest
                .get(key.digest)?
                .map(|address| address.value().to_owned()))
        })
        .collect()
}

/// Applies a write step's address changes inside its transaction. A key with a slot keeps its
/// address only under the slot: an entry of its digest (kept before it had one) is removed.
pub(super) fn apply(
    by_digest: &mut Table<u128, &str>,
    by_slot: &mut Table<u64, &[u8]>,
    changes: &[(LocationKey, LocationChange)],
) -> Result<(), StoreError> {
    // Only a store that kept addresses by digest for these keys has any to remove: a lookup
    // in an empty table is skipped altogether.
    let digest_entries = !by_digest.is_empty()?;
    for (key, change) in changes {
        let address = match change {
            LocationChange::Set(address) if address.len() <= MAX_ADDRESS_BYTES => {
                Some(address.as_str())
            }
            LocationChange::Set(_) | LocationChange::Forget => None,
        };
        let Some(slot) = key.slot else {
            match address {
                Some(address) => by_digest.insert(key.digest, address)?,
                None => by_digest.remove(key.digest)?,
            };
            continue;
        };
        match address {
            // The writer sends only changed addresses: one traversal, no lookup first.
            Some(address) => {
                by_slot.insert(slot, slot_entry(key.digest, address).as_slice())?;
            }
            // Only this key's own entry: another key's address under the slot stays.
            None => {
                let owned = by_slot
                    .get(slot)?
                    .is_some_and(|entry| slot_address(entry.value(), key.digest).is_some());
                if owned {
                    by_slot.remove(slot)?;
                }
            }
        }
        if digest_entries && by_digest.get(key.digest)?.is_some() {
            by_digest.remove(key.digest)?;
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

    /// Queues `records` as Ingress's reader does with its ledger on.
    fn queue_through_ledger(store: &Store, records: Vec<WriteRecord>) {
        store
            .commit_read(
                WorkflowId::Ingress,
                crate::ReadCommit {
                    source: "contacts".into(),
                    records: records
                        .into_iter()
                        .map(|r| ("contacts".into(), r))
                        .collect(),
                    ledger: crate::LedgerPolicy::Record,
                    ..crate::ReadCommit::default()
                },
            )
            .unwrap();
    }

    /// Takes Ingress's whole ready batch as the writer does.
    fn take(store: &Store, scope: &str) -> (Vec<crate::QueuedRecord>, crate::Located) {
        take_of(store, WorkflowId::Ingress, scope)
    }

    /// Takes `workflow`'s whole ready batch as the writer does: records with their keys and
    /// addresses.
    fn take_of(
        store: &Store,
        workflow: WorkflowId,
        scope: &str,
    ) -> (Vec<crate::QueuedRecord>, crate::Located) {
        let (ready, located) = store
            .ready_batch_located(
                workflow,
                100,
                crate::now_ms(),
                &crate::InFlight::default(),
                |record| Some(LocationKey::new(scope, record)),
            )
            .unwrap();
        (ready.records, located)
    }

    fn slots(records: &[crate::QueuedRecord]) -> Vec<Option<u64>> {
        records.iter().map(|queued| queued.address_slot).collect()
    }

    #[test]
    fn ledger_keys_get_slots_in_reading_order_and_their_addresses_are_kept_under_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conduit.redb");
        let store = Store::open(&path).unwrap();
        let scope = "campaign https://one/";
        // Keys in no order: slots follow the reading order, not the keys.
        queue_through_ledger(&store, vec![record("profile", "m"), record("profile", "c")]);
        let (records, located) = take(&store, scope);
        assert_eq!(slots(&records), [Some(0), Some(1)]);
        assert_eq!(located.known, [None, None]);
        let written = records.iter().map(|queued| queued.seq).collect();
        let learnt = located
            .keys
            .iter()
            .zip(["https://one/p/@m", "https://one/p/@c"])
            .map(|(key, address)| (key.unwrap(), LocationChange::Set(address.into())))
            .collect();
        store
            .commit_write(
                WorkflowId::Ingress,
                WriteCommit {
                    written,
                    locations: learnt,
                    ..WriteCommit::default()
                },
            )
            .unwrap();
        drop(store);

        // After a reopen: a known key keeps its slot and address, a new key takes the next slot.
        let store = Store::open(&path).unwrap();
        queue_through_ledger(&store, vec![record("profile", "c"), record("profile", "a")]);
        let (records, located) = take(&store, scope);
        assert_eq!(slots(&records), [Some(1), Some(2)]);
        assert_eq!(located.known, [Some("https://one/p/@c".to_string()), None]);
        // Nothing was kept by digest, and the slot's entry serves only its own key: the same
        // slot asked for with another scope (another Campaign instance) knows nothing.
        let read = store.begin_read().unwrap();
        assert_eq!(read.open_table(LOCATIONS).unwrap().len().unwrap(), 0);
        assert_eq!(read.open_table(SLOT_LOCATIONS).unwrap().len().unwrap(), 2);
        let elsewhere = LocationKey::new("campaign https://two/", &record("profile", "c"));
        assert_eq!(
            read_in(&read, &[Some(elsewhere.in_slot(Some(1)))]).unwrap(),
            [None]
        );
        drop(read);
        // Nor does forgetting under it remove the slot's entry of the other key.
        commit(
            &store,
            vec![(elsewhere.in_slot(Some(1)), LocationChange::Forget)],
        );
        assert_eq!(store.location_count().unwrap(), 2);

        // A delete carries the key's slot, so its address is forgotten; the key's next life
        // takes a new slot.
        // A refused write forgets what was sent, not the slot: the key keeps its place.
        store
            .commit_write(
                WorkflowId::Ingress,
                WriteCommit {
                    written: vec![records[0].seq],
                    refused: vec![(records[1].clone(), "refused".into())],
                    ..WriteCommit::default()
                },
            )
            .unwrap();
        let mut delete = record("profile", "m");
        delete.op = Operation::Delete;
        queue_through_ledger(&store, vec![record("profile", "a"), delete]);
        let (records, located) = take(&store, scope);
        assert_eq!(slots(&records), [Some(2), Some(0)]);
        assert_eq!(located.known, [None, Some("https://one/p/@m".to_string())]);
        commit(
            &store,
            vec![(located.keys[1].unwrap(), LocationChange::Forget)],
        );
        store
            .commit_write(
                WorkflowId::Ingress,
                WriteCommit {
                    written: records.iter().map(|queued| queued.seq).collect(),
                    ..WriteCommit::default()
                },
            )
            .unwrap();
        queue_through_ledger(&store, vec![record("profile", "m")]);
        let (records, located) = take(&store, scope);
        assert_eq!(slots(&records), [Some(3)]);
        assert_eq!(located.known, [None]);
        assert_eq!(store.location_count().unwrap(), 1);
    }

    #[test]
    fn a_write_queued_without_a_slot_finds_the_address_ingress_kept_under_its_keys_slot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("conduit.redb")).unwrap();
        let scope = "campaign https://one/";
        queue_through_ledger(&store, vec![record("profile", "c")]);
        let (records, located) = take(&store, scope);
        store
            .commit_write(
                WorkflowId::Ingress,
                WriteCommit {
                    written: vec![records[0].seq],
                    locations: vec![(
                        located.keys[0].unwrap(),
                        LocationChange::Set("https://one/p/@c".into()),
                    )],
                    ..WriteCommit::default()
                },
            )
            .unwrap();

        // Opt-in/out queues its update of the same profile without the ledger, so without a
        // slot; its take still finds the href, and what its write teaches goes under the slot.
        let mut update = record("profile", "c");
        update.op = Operation::Update;
        store
            .commit_read(
                WorkflowId::OptInOut,
                crate::ReadCommit {
                    source: "opt-outs".into(),
                    records: vec![("opt-out".into(), update)],
                    ..crate::ReadCommit::default()
                },
            )
            .unwrap();
        let (records, located) = take_of(&store, WorkflowId::OptInOut, scope);
        assert_eq!(records[0].address_slot, None);
        assert_eq!(located.known, [Some("https://one/p/@c".to_string())]);
        commit(
            &store,
            vec![(
                located.keys[0].unwrap(),
                LocationChange::Set("https://one/p/@c2".into()),
            )],
        );
        let read = store.begin_read().unwrap();
        assert_eq!(read.open_table(LOCATIONS).unwrap().len().unwrap(), 0);
        drop(read);
        let (_, located) = take(&store, scope);
        assert!(located.known.is_empty());
        queue_through_ledger(&store, vec![record("profile", "c")]);
        let (_, located) = take(&store, scope);
        assert_eq!(located.known, [Some("https://one/p/@c2".to_string())]);
    }

    /// A store keeping `https://one/p/@1` for profile `c-1` by digest, and that key.
    fn store_with_one_address() -> (tempfile::TempDir, Store, LocationKey) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("conduit.redb")).unwrap();
        let key = LocationKey::new("campaign https://one/", &record("profile", "c-1"));
        commit(
            &store,
            vec![(key, LocationChange::Set("https://one/p/@1".into()))],
        );
        (dir, store, key)
    }

    #[test]
    fn an_address_kept_by_digest_is_read_for_a_slotted_key_and_moves_to_its_slot_when_it_changes() {
        // As a format 4 store kept it.
        let (_dir, store, key) = store_with_one_address();
        let slotted = key.in_slot(Some(7));
        assert_eq!(
            store.locations(&[slotted]).unwrap(),
            [Some("https://one/p/@1".to_string())]
        );
        commit(
            &store,
            vec![(slotted, LocationChange::Set("https://one/p/@2".into()))],
        );
        let read = store.begin_read().unwrap();
        assert_eq!(read.open_table(LOCATIONS).unwrap().len().unwrap(), 0);
        drop(read);
        assert_eq!(
            store.locations(&[slotted, key]).unwrap(),
            [Some("https://one/p/@2".to_string()), None]
        );
        commit(&store, vec![(slotted, LocationChange::Forget)]);
        assert_eq!(store.location_count().unwrap(), 0);
    }

    #[test]
    fn an_address_too_long_to_be_one_is_not_kept_and_drops_the_old_one() {
        let (_dir, store, key) = store_with_one_address();
        let huge = format!("https://one/{}", "x".repeat(MAX_ADDRESS_BYTES));
        commit(&store, vec![(key, LocationChange::Set(huge))]);
        assert_eq!(store.locations(&[key]).unwrap(), [None]);
    }
}
