//! The ledger of what Ingress has sent to each destination record: one hash per field it set,
//! keyed by destination table and record key. It answers two questions at queue time, in the
//! reader's own transaction:
//!
//! - *Would this write change anything?* An incremental change whose every field hashes as
//!   last sent is skipped (counted as skipped, reason "unchanged"): a change to an unmapped
//!   column, or to an apply-updates-off field, costs no Campaign call.
//! - *Is this record ours?* Conduit deletes only destination records it has written. A delete
//!   (a Dynamics 365 delete, or a record newly filtered out) for a key it never wrote is
//!   skipped (reason "not created by Conduit"): a profile made directly in Campaign is left
//!   alone.
//!
//! Hashes, not values, are kept: the ledger must not hold a second copy of personal data, and
//! a hash that changes meaning after an upgrade only costs one extra write, never a lost one.
//!
//! Each entry also holds the record's *address slot*: a number the reader gives a key the first
//! time it queues it, from a counter that only grows. The queued record carries it to the
//! writer, which keeps the record's destination address under it (`locations.rs`). Keys come
//! from the source in no useful order, so an address table keyed by them takes every new
//! record at a random place; slots are handed out in reading order, so the writer's new
//! addresses land at the end of their table.

use std::hash::{DefaultHasher, Hash, Hasher};

use redb::{ReadableTable, Table};

use super::StoreError;
use conduit_model::{Operation, System, Value, WriteRecord};

/// How a reader step's records are checked against the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LedgerPolicy {
    /// Not at all (Egress, Opt-in/out).
    #[default]
    Off,
    /// Every upsert is queued and recorded; deletes of records never written are skipped.
    /// Used while a table is first read or replayed, when every value must be written.
    Record,
    /// As `Record`, and an upsert that changes no field since it was last sent is skipped.
    SkipUnchanged,
}

/// What the ledger decided about one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Queue it, with the address slot of its key (none when the ledger is off, or for a
    /// delete of a key the ledger never knew).
    Queue(Option<u64>),
    /// Every field is as last sent.
    Unchanged,
    /// A delete of a record Conduit never wrote.
    NotOwned,
}

/// The ledger's key for a record's destination: `"<system>/<table>"`.
pub(super) fn destination(record: &WriteRecord) -> String {
    destination_name(record.target.system, &record.target.table)
}

/// The ledger's key for `system`'s `table`.
pub(super) fn destination_name(system: System, table: &str) -> String {
    let system = match system {
        System::Campaign => "campaign",
        System::Dynamics => "dynamics",
    };
    format!("{system}/{table}")
}

/// The address slot the ledger holds for `record`'s destination record, if any: how a write
/// queued without one (Opt-in/out updating a profile Ingress created) still finds the
/// address Ingress's writes taught.
pub(super) fn slot_of(
    ledger: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    record: &WriteRecord,
) -> Result<Option<u64>, StoreError> {
    let destination = destination(record);
    Ok(ledger
        .get((destination.as_str(), record.key.as_str()))?
        .and_then(|bytes| decode(bytes.value()).slot))
}

/// Decides about one record and updates its ledger entry to match. A key queued for the
/// first time (or whose entry predates slots) takes `next_slot`, which then moves on.
pub(super) fn decide(
    ledger: &mut Table<(&str, &str), &[u8]>,
    record: &WriteRecord,
    policy: LedgerPolicy,
    deletes_need_ownership: bool,
    next_slot: &mut u64,
) -> Result<Decision, StoreError> {
    if policy == LedgerPolicy::Off {
        return Ok(Decision::Queue(None));
    }
    let destination = destination(record);
    let stored = ledger
        .get((destination.as_str(), record.key.as_str()))?
        .map(|bytes| decode(bytes.value()));
    if record.op == Operation::Delete {
        if stored.is_none() && deletes_need_ownership {
            return Ok(Decision::NotOwned);
        }
        ledger.remove((destination.as_str(), record.key.as_str()))?;
        // The writer forgets the address kept under the slot; the key's next life takes a new one.
        return Ok(Decision::Queue(stored.and_then(|entry| entry.slot)));
    }
    let Entry {
        slot,
        fields: mut entry,
    } = stored.unwrap_or_default();
    let fields: Vec<(u64, u64)> = record
        .fields
        .iter()
        .map(|(name, value)| (hash_name(name), hash_value(value)))
        .collect();
    let known = !entry.is_empty();
    let unchanged = known
        && fields
            .iter()
            .all(|field| entry.binary_search(field).is_ok());
    if unchanged && policy == LedgerPolicy::SkipUnchanged {
        return Ok(Decision::Unchanged);
    }
    for (name, value) in fields {
        match entry.binary_search_by_key(&name, |(n, _)| *n) {
            Ok(at) => entry[at].1 = value,
            Err(at) => entry.insert(at, (name, value)),
        }
    }
    let slot = slot.unwrap_or_else(|| {
        let given = *next_slot;
        *next_slot = next_slot.saturating_add(1);
        given
    });
    ledger.insert(
        (destination.as_str(), record.key.as_str()),
        encode(Some(slot), &entry).as_slice(),
    )?;
    Ok(Decision::Queue(Some(slot)))
}

/// Forgets the field values sent for a record whose write was refused, so that its next
/// change goes out whatever it holds, while the record stays known as Conduit's (an earlier
/// write may have created it, and a later delete must still reach it).
pub(super) fn forget_values(
    ledger: &mut Table<(&str, &str), &[u8]>,
    record: &WriteRecord,
) -> Result<(), StoreError> {
    let destination = destination(record);
    let key = (destination.as_str(), record.key.as_str());
    let slot = match ledger.get(key)? {
        Some(bytes) => decode(bytes.value()).slot,
        None => return Ok(()),
    };
    ledger.insert(key, encode(slot, &[UNKNOWN_VALUES]).as_slice())?;
    Ok(())
}

/// An entry that owns the record but matches no field: no hash of a real field is `(0, 0)`
/// in practice, and a mismatch only costs one write.
const UNKNOWN_VALUES: (u64, u64) = (0, 0);

fn hash_name(name: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish()
}

/// A value's hash; each variant is tagged so that `Text("1")` and `Integer(1)` differ.
fn hash_value(value: &Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    match value {
        Value::Null => 0u8.hash(&mut hasher),
        Value::Boolean(flag) => (1u8, flag).hash(&mut hasher),
        Value::Integer(number) => (2u8, number).hash(&mut hasher),
        Value::Decimal(number) => (3u8, number.to_bits()).hash(&mut hasher),
        Value::Text(text) => (4u8, text).hash(&mut hasher),
        Value::Datetime(text) => (5u8, text).hash(&mut hasher),
        Value::Picklist { value, label } => (6u8, value, label).hash(&mut hasher),
        Value::Guid(text) => (7u8, text).hash(&mut hasher),
        Value::Lookup { table, id } => (8u8, table, id).hash(&mut hasher),
    }
    hasher.finish()
}

/// One ledger entry as decoded.
#[derive(Debug, Default, PartialEq, Eq)]
struct Entry {
    /// The key's address slot (none in an entry written before format 5).
    slot: Option<u64>,
    /// Sorted `(name hash, value hash)` pairs.
    fields: Vec<(u64, u64)>,
}

/// An entry is its slot (8 bytes, little-endian), then sorted `(name hash, value hash)` pairs,
/// 16 bytes each. Entries of format 4 and older hold the pairs alone: their length is a
/// multiple of 16, where a slot makes it 8 more.
fn encode(slot: Option<u64>, fields: &[(u64, u64)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + fields.len() * 16);
    if let Some(slot) = slot {
        bytes.extend_from_slice(&slot.to_le_bytes());
    }
    for (name, value) in fields {
        bytes.extend_from_slice(&name.to_le_bytes());
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

/// A malformed entry decodes as far as it is whole: at worst one record is written again.
fn decode(bytes: &[u8]) -> Entry {
    let (slot, pairs) = match bytes.len() % 16 {
        8 => {
            let (slot, pairs) = bytes.split_at(8);
            (slot.try_into().ok().map(u64::from_le_bytes), pairs)
        }
        _ => (None, bytes),
    };
    let mut fields: Vec<(u64, u64)> = pairs
        .chunks_exact(16)
        .filter_map(|chunk| {
            let name = u64::from_le_bytes(chunk[..8].try_into().ok()?);
            let value = u64::from_le_bytes(chunk[8..].try_into().ok()?);
            Some((name, value))
        })
        .collect();
    fields.sort_unstable();
    Entry { slot, fields }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_values_of_different_types_hash_apart() {
        let fields = vec![(1, 2), (3, 4)];
        for slot in [None, Some(0), Some(u64::MAX)] {
            let entry = decode(&encode(slot, &fields));
            assert_eq!(
                entry,
                Entry {
                    slot,
                    fields: fields.clone()
                }
            );
        }
        // An entry of format 4 (pairs only) reads without a slot.
        let mut old = Vec::new();
        for (name, value) in &fields {
            old.extend_from_slice(&name.to_le_bytes());
            old.extend_from_slice(&value.to_le_bytes());
        }
        assert_eq!(
            decode(&old),
            Entry {
                slot: None,
                fields: fields.clone()
            }
        );
        assert_ne!(
            hash_value(&Value::Text("1".into())),
            hash_value(&Value::Integer(1))
        );
        assert_ne!(
            hash_value(&Value::Null),
            hash_value(&Value::Text(String::new()))
        );
    }
}
