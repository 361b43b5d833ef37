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
    /// Queue it.
    Queue,
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

/// Decides about one record and updates its ledger entry to match.
pub(super) fn decide(
    ledger: &mut Table<(&str, &str), &[u8]>,
    record: &WriteRecord,
    policy: LedgerPolicy,
    deletes_need_ownership: bool,
) -> Result<Decision, StoreError> {
    if policy == LedgerPolicy::Off {
        return Ok(Decision::Queue);
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
        return Ok(Decision::Queue);
    }
    let mut entry = stored.unwrap_or_default();
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
    ledger.insert(
        (destination.as_str(), record.key.as_str()),
        encode(&entry).as_slice(),
    )?;
    Ok(Decision::Queue)
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
    if ledger.get(key)?.is_some() {
        ledger.insert(key, encode(&[UNKNOWN_VALUES]).as_slice())?;
    }
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

/// Entries are sorted `(name hash, value hash)` pairs, 16 bytes each, little-endian.
fn encode(entry: &[(u64, u64)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(entry.len() * 16);
    for (name, value) in entry {
        bytes.extend_from_slice(&name.to_le_bytes());
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

/// A malformed entry decodes as far as it is whole: at worst one record is written again.
fn decode(bytes: &[u8]) -> Vec<(u64, u64)> {
    let mut entry: Vec<(u64, u64)> = bytes
        .chunks_exact(16)
        .filter_map(|chunk| {
            let name = u64::from_le_bytes(chunk[..8].try_into().ok()?);
            let value = u64::from_le_bytes(chunk[8..].try_into().ok()?);
            Some((name, value))
        })
        .collect();
    entry.sort_unstable();
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_values_of_different_types_hash_apart() {
        let entry = vec![(1, 2), (3, 4)];
        assert_eq!(decode(&encode(&entry)), entry);
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
