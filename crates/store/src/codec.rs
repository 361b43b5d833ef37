//! The binary encoding of queued records: the queue holds one per pending write, and every
//! record is encoded once by the reader and decoded at least once by the writer, so its cost
//! is paid per record on the hot path.
//!
//! A record is a version byte (`2`) then its fields in `postcard` (varints, length-prefixed
//! strings, no field names), through a mirror of the model's types whose variant order is part
//! of the format: new variants go last, and a change of shape takes a new version byte. The
//! mirror borrows the record's strings when encoding, so nothing is copied twice. Version 2 is
//! version 1 followed by the record's address slot (an optional varint); records of version 1
//! read without one.
//!
//! Records queued by an older build are JSON; they start with `{`, which is never a version
//! byte, and are decoded as before, so an upgrade with a backlog loses nothing.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::record::QueuedRecord;
use conduit_model::{Operation, Phase, System, Target, Value, WriteRecord};

/// The version byte of the first binary form (format 3 and 4 stores).
const BINARY_V1: u8 = 1;
/// The version byte of the current binary form: version 1's fields, then the address slot.
const BINARY_V2: u8 = 2;

/// A queued record as decoded (`WireOut` writes the same bytes; the tests encode this too, to
/// hold the two to one form).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct Wire<'a> {
    system: System,
    table: Cow<'a, str>,
    key_field: Cow<'a, str>,
    key: Cow<'a, str>,
    op: Operation,
    fields: Vec<(Cow<'a, str>, WireValue<'a>)>,
    origin: Cow<'a, str>,
    attempts: u32,
    queued_at_ms: i64,
    phase: Option<Phase>,
    not_before_ms: i64,
    last_reason: Option<Cow<'a, str>>,
    deferred_since_ms: Option<i64>,
}

/// A field value as encoded (the model's `Value` is tagged for JSON, which `postcard` cannot
/// read back).
#[derive(Serialize, Deserialize)]
enum WireValue<'a> {
    Null,
    Boolean(bool),
    Integer(i64),
    Decimal(f64),
    Text(Cow<'a, str>),
    Datetime(Cow<'a, str>),
    Picklist(i64, Option<Cow<'a, str>>),
    Guid(Cow<'a, str>),
    Lookup(Cow<'a, str>, Cow<'a, str>),
}

impl<'a> WireValue<'a> {
    fn borrowed(value: &'a Value) -> WireValue<'a> {
        match value {
            Value::Null => WireValue::Null,
            Value::Boolean(flag) => WireValue::Boolean(*flag),
            Value::Integer(number) => WireValue::Integer(*number),
            Value::Decimal(number) => WireValue::Decimal(*number),
            Value::Text(text) => WireValue::Text(Cow::Borrowed(text)),
            Value::Datetime(text) => WireValue::Datetime(Cow::Borrowed(text)),
            Value::Picklist { value, label } => {
                WireValue::Picklist(*value, label.as_deref().map(Cow::Borrowed))
            }
            Value::Guid(text) => WireValue::Guid(Cow::Borrowed(text)),
            Value::Lookup { table, id } => {
                WireValue::Lookup(Cow::Borrowed(table), Cow::Borrowed(id))
            }
        }
    }

    fn into_value(self) -> Value {
        match self {
            WireValue::Null => Value::Null,
            WireValue::Boolean(flag) => Value::Boolean(flag),
            WireValue::Integer(number) => Value::Integer(number),
            WireValue::Decimal(number) => Value::Decimal(number),
            WireValue::Text(text) => Value::Text(text.into_owned()),
            WireValue::Datetime(text) => Value::Datetime(text.into_owned()),
            WireValue::Picklist(value, label) => Value::Picklist {
                value,
                label: label.map(Cow::into_owned),
            },
            WireValue::Guid(text) => Value::Guid(text.into_owned()),
            WireValue::Lookup(table, id) => Value::Lookup {
                table: table.into_owned(),
                id: id.into_owned(),
            },
        }
    }
}

/// A record's fields as encoded: the same bytes as `Wire::fields`, written straight from the
/// record (a length, then each pair) without collecting them first.
struct WireFields<'a>(&'a [(String, Value)]);

impl Serialize for WireFields<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.0
                .iter()
                .map(|(name, value)| (name.as_str(), WireValue::borrowed(value))),
        )
    }
}

/// `Wire` as it is written: the same fields in the same order (postcard names none), borrowing
/// everything from the record.
#[derive(Serialize)]
struct WireOut<'a> {
    system: System,
    table: &'a str,
    key_field: &'a str,
    key: &'a str,
    op: Operation,
    fields: WireFields<'a>,
    origin: &'a str,
    attempts: u32,
    queued_at_ms: i64,
    phase: Option<Phase>,
    not_before_ms: i64,
    last_reason: Option<&'a str>,
    deferred_since_ms: Option<i64>,
}

/// Bytes reserved for an encoded record before encoding: most records fit, so the buffer
/// rarely grows.
const ENCODED_GUESS: usize = 256;

/// Encodes a queued record for the queue table.
pub(super) fn encode_queued(queued: &QueuedRecord) -> Vec<u8> {
    let record = &queued.record;
    let wire = WireOut {
        system: record.target.system,
        table: &record.target.table,
        key_field: &record.target.key_field,
        key: &record.key,
        op: record.op,
        fields: WireFields(&record.fields),
        origin: &queued.origin,
        attempts: queued.attempts,
        queued_at_ms: queued.queued_at_ms,
        phase: queued.phase,
        not_before_ms: queued.not_before_ms,
        last_reason: queued.last_reason.as_deref(),
        deferred_since_ms: queued.deferred_since_ms,
    };
    let mut bytes = Vec::with_capacity(ENCODED_GUESS);
    bytes.push(BINARY_V2);
    // Encoding plain data into a growing Vec cannot fail (postcard fails only on a full
    // fixed-size buffer or a sequence of unknown length, neither of which occurs here).
    postcard::to_extend(&wire, bytes)
        .and_then(|bytes| postcard::to_extend(&queued.address_slot, bytes))
        .unwrap_or_default()
}

impl QueuedRecord {
    /// The bytes the queue stores for this record (for benches and tools that compare with
    /// raw redb).
    pub fn to_queue_bytes(&self) -> Vec<u8> {
        encode_queued(self)
    }

    /// Reads bytes the queue stores (binary, or JSON from an older build); `seq` is its key.
    pub fn from_queue_bytes(seq: u64, bytes: &[u8]) -> Result<QueuedRecord, StoreError> {
        decode_queued(seq, bytes)
    }
}

/// Decodes a queue entry: the binary form, or the JSON of a record queued by an older build.
/// `seq` is the entry's key (not stored in the value).
pub(super) fn decode_queued(seq: u64, bytes: &[u8]) -> Result<QueuedRecord, StoreError> {
    let damaged = |source| StoreError::DecodeBinary {
        what: "queued record",
        source,
    };
    let mut queued = match bytes.split_first() {
        Some((&BINARY_V1, rest)) => from_wire(postcard::from_bytes(rest).map_err(damaged)?),
        Some((&BINARY_V2, rest)) => {
            let (wire, slot) = postcard::take_from_bytes::<Wire<'_>>(rest).map_err(damaged)?;
            let mut queued = from_wire(wire);
            queued.address_slot = postcard::from_bytes(slot).map_err(damaged)?;
            queued
        }
        _ => super::decode_json::<QueuedRecord>("queued record", bytes)?,
    };
    queued.seq = seq;
    Ok(queued)
}

fn from_wire(wire: Wire<'_>) -> QueuedRecord {
    QueuedRecord {
        seq: 0,
        record: WriteRecord {
            target: Target {
                system: wire.system,
                table: wire.table.into_owned(),
                key_field: wire.key_field.into_owned(),
            },
            key: wire.key.into_owned(),
            op: wire.op,
            fields: wire
                .fields
                .into_iter()
                .map(|(name, value)| (name.into_owned(), value.into_value()))
                .collect(),
        },
        origin: wire.origin.into_owned(),
        attempts: wire.attempts,
        queued_at_ms: wire.queued_at_ms,
        phase: wire.phase,
        not_before_ms: wire.not_before_ms,
        last_reason: wire.last_reason.map(Cow::into_owned),
        deferred_since_ms: wire.deferred_since_ms,
        address_slot: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Boolean),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>()
                .prop_filter("NaN never equals itself", |n| !n.is_nan())
                .prop_map(Value::Decimal),
            ".*".prop_map(Value::Text),
            ".*".prop_map(Value::Datetime),
            (any::<i64>(), proptest::option::of(".*"))
                .prop_map(|(value, label)| Value::Picklist { value, label }),
            ".*".prop_map(Value::Guid),
            (".*", ".*").prop_map(|(table, id)| Value::Lookup { table, id }),
        ]
    }

    fn queued() -> impl Strategy<Value = QueuedRecord> {
        (
            (
                prop_oneof![Just(System::Campaign), Just(System::Dynamics)],
                "[a-zA-Z]{1,12}",
                ".*",
                prop_oneof![
                    Just(Operation::Upsert),
                    Just(Operation::Update),
                    Just(Operation::Delete)
                ],
                proptest::collection::vec((".*", value()), 0..6),
            ),
            (
                ".*",
                any::<u32>(),
                any::<i64>(),
                proptest::option::of(prop_oneof![
                    Just(Phase::Initial),
                    Just(Phase::Incremental),
                    Just(Phase::Replay)
                ]),
                any::<i64>(),
                proptest::option::of(".*"),
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<u64>()),
            ),
        )
            .prop_map(
                |(
                    (system, table, key, op, fields),
                    (
                        origin,
                        attempts,
                        queued_at_ms,
                        phase,
                        not_before_ms,
                        last_reason,
                        since,
                        slot,
                    ),
                )| QueuedRecord {
                    seq: 0,
                    record: WriteRecord {
                        target: Target {
                            system,
                            table,
                            key_field: "externalId".into(),
                        },
                        key,
                        op,
                        fields,
                    },
                    origin,
                    attempts,
                    queued_at_ms,
                    phase,
                    not_before_ms,
                    last_reason,
                    deferred_since_ms: since,
                    address_slot: slot,
                },
            )
    }

    /// The record encoded through `Wire`, the decoder's own mirror, as version 2.
    fn mirror_bytes(queued: &QueuedRecord) -> Vec<u8> {
        let mut bytes = mirror_v1_bytes(queued);
        bytes[0] = BINARY_V2;
        postcard::to_extend(&queued.address_slot, bytes).unwrap()
    }

    /// The record as a format 3 or 4 store queued it (version 1, no slot).
    fn mirror_v1_bytes(queued: &QueuedRecord) -> Vec<u8> {
        let record = &queued.record;
        let wire = Wire {
            system: record.target.system,
            table: Cow::Borrowed(&record.target.table),
            key_field: Cow::Borrowed(&record.target.key_field),
            key: Cow::Borrowed(&record.key),
            op: record.op,
            fields: record
                .fields
                .iter()
                .map(|(name, value)| (Cow::Borrowed(name.as_str()), WireValue::borrowed(value)))
                .collect(),
            origin: Cow::Borrowed(&queued.origin),
            attempts: queued.attempts,
            queued_at_ms: queued.queued_at_ms,
            phase: queued.phase,
            not_before_ms: queued.not_before_ms,
            last_reason: queued.last_reason.as_deref().map(Cow::Borrowed),
            deferred_since_ms: queued.deferred_since_ms,
        };
        postcard::to_extend(&wire, vec![BINARY_V1]).unwrap()
    }

    proptest! {
        #[test]
        fn every_record_decodes_to_itself_and_json_from_older_builds_still_reads(
            record in queued(),
            seq in any::<u64>(),
        ) {
            let mut expected = record.clone();
            expected.seq = seq;
            prop_assert_eq!(&decode_queued(seq, &encode_queued(&record)).unwrap(), &expected);
            // The writer's borrowed form is byte for byte the decoder's mirror, so entries
            // queued by either read back.
            prop_assert_eq!(encode_queued(&record), mirror_bytes(&record));
            let json = serde_json::to_vec(&record).unwrap();
            prop_assert_eq!(&decode_queued(seq, &json).unwrap(), &expected);
            // A record queued by a format 3 or 4 store reads as itself without a slot.
            expected.address_slot = None;
            prop_assert_eq!(&decode_queued(seq, &mirror_v1_bytes(&record)).unwrap(), &expected);
        }

        #[test]
        fn damaged_entries_are_errors_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            for version in [BINARY_V1, BINARY_V2] {
                let mut damaged = vec![version];
                damaged.extend(&bytes);
                let _ = decode_queued(1, &damaged);
            }
        }
    }

    #[test]
    fn the_binary_form_is_much_smaller_than_json() {
        let record = QueuedRecord::new(
            1,
            WriteRecord {
                target: Target {
                    system: System::Campaign,
                    table: "profile".into(),
                    key_field: "externalId".into(),
                },
                key: "7d3b7c5e-0000-4000-8000-000000000001".into(),
                op: Operation::Upsert,
                fields: vec![
                    ("firstName".into(), Value::Text("Ada".into())),
                    ("email".into(), Value::Text("ada@example.com".into())),
                    (
                        "birthDate".into(),
                        Value::Datetime("1815-12-10T00:00:00Z".into()),
                    ),
                ],
            },
            "contacts".into(),
            1_796_000_000_000,
        );
        let binary = encode_queued(&record).len();
        let json = serde_json::to_vec(&record).unwrap().len();
        assert!(binary * 2 < json, "binary {binary} bytes, JSON {json}");
        assert!(decode_queued(1, b"").is_err());
        assert!(decode_queued(1, &[9, 1, 2]).is_err());
    }
}
