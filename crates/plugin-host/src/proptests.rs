//! Property tests (fixed seeds, run in CI) of the host's check of a plugin's mapped batch:
//! whatever a plugin returns (indices out of range, wrong outcome counts, empty keys, strings
//! over the cap) is either accepted and consistent or refused with a reason, never a panic,
//! and it is accepted exactly when an independent statement of the rules says it should be.
//! The packed form of a result (1.1) is checked exactly as its unpacked form, and packed
//! results with arbitrary spans and slices are refused, never a panic. `fuzz/` drives the same
//! check through `plugin_output`.

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::bindings::wit;
use super::convert::outcomes_from_wit;
use super::fuzz_input::{FUZZ_LIMITS, check_output_bytes};
use super::packed::{outcomes_from_packed, pack_result};
use conduit_model as model;

const CAP: usize = FUZZ_LIMITS.max_string_bytes;

/// Strings around the cap: empty, short, exactly at it and just over it.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => "[a-zé]{1,8}",
        1 => Just(String::new()),
        1 => Just("c".repeat(CAP)),
        1 => Just("é".repeat(CAP / 2 + 1)),
    ]
}

fn value() -> impl Strategy<Value = wit::Value> {
    prop_oneof![
        Just(wit::Value::Null),
        any::<bool>().prop_map(wit::Value::Boolean),
        any::<i64>().prop_map(wit::Value::Integer),
        any::<f64>().prop_map(wit::Value::Decimal),
        text().prop_map(wit::Value::Text),
        text().prop_map(wit::Value::Datetime),
        text().prop_map(wit::Value::Guid),
        (any::<i64>(), proptest::option::of(text()))
            .prop_map(|(value, label)| wit::Value::Picklist(wit::Picklist { value, label })),
        (text(), text()).prop_map(|(table, id)| wit::Value::Lookup(wit::Lookup { table, id })),
    ]
}

fn record() -> impl Strategy<Value = wit::OutputRecord> {
    (
        0u32..4,
        text(),
        prop_oneof![
            Just(wit::Operation::Upsert),
            Just(wit::Operation::Update),
            Just(wit::Operation::Delete)
        ],
        proptest::collection::vec((0u32..4, value()), 0..3),
    )
        .prop_map(|(target, key, op, fields)| wit::OutputRecord {
            target,
            key,
            op,
            fields,
        })
}

fn outcome() -> impl Strategy<Value = wit::Outcome> {
    prop_oneof![
        1 => text().prop_map(wit::Outcome::Skip),
        1 => text().prop_map(wit::Outcome::Reject),
        3 => proptest::collection::vec(record(), 0..6).prop_map(wit::Outcome::Write),
    ]
}

fn mapped_batch() -> impl Strategy<Value = wit::MappedBatch> {
    (
        proptest::collection::vec(
            (any::<bool>(), text(), text()).prop_map(|(dynamics, table, key_field)| wit::Target {
                system: if dynamics {
                    wit::System::Dynamics
                } else {
                    wit::System::Campaign
                },
                table,
                key_field,
            }),
            0..3,
        ),
        proptest::collection::vec(text(), 0..4),
        proptest::collection::vec(outcome(), 0..5),
    )
        .prop_map(|(targets, columns, outcomes)| wit::MappedBatch {
            targets,
            columns,
            outcomes,
        })
}

fn longest(value: &wit::Value) -> usize {
    match value {
        wit::Value::Text(text) | wit::Value::Datetime(text) | wit::Value::Guid(text) => text.len(),
        wit::Value::Picklist(picklist) => picklist.label.as_ref().map_or(0, String::len),
        wit::Value::Lookup(lookup) => lookup.table.len().max(lookup.id.len()),
        _ => 0,
    }
}

/// The rules of the plugin contract, stated on their own: is this output acceptable?
fn acceptable(batch: &wit::MappedBatch, inputs: usize) -> bool {
    let fits = |text: &str| text.len() <= CAP;
    batch.outcomes.len() == inputs
        && batch.targets.iter().all(|target| {
            !target.table.is_empty()
                && !target.key_field.is_empty()
                && fits(&target.table)
                && fits(&target.key_field)
        })
        && batch
            .columns
            .iter()
            .all(|column| !column.is_empty() && fits(column))
        && batch.outcomes.iter().all(|outcome| match outcome {
            wit::Outcome::Skip(reason) | wit::Outcome::Reject(reason) => fits(reason),
            wit::Outcome::Write(records) => {
                records.len() <= FUZZ_LIMITS.max_output_records_per_input
                    && records.iter().all(|record| {
                        (record.target as usize) < batch.targets.len()
                            && !record.key.is_empty()
                            && fits(&record.key)
                            && record.fields.iter().all(|(column, value)| {
                                (*column as usize) < batch.columns.len() && longest(value) <= CAP
                            })
                    })
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        rng_seed: RngSeed::Fixed(0x91_0617),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_mapped_batch_is_accepted_exactly_when_it_keeps_the_contract(
        batch in mapped_batch(),
        miscount in prop_oneof![4 => Just(0usize), 1 => 1usize..3],
    ) {
        // Mostly the right count, so that the other rules are reached too.
        let inputs = (batch.outcomes.len() + miscount) % 5;
        let expected = acceptable(&batch, inputs);
        let checked = outcomes_from_wit(batch.clone(), inputs, &FUZZ_LIMITS);
        match checked {
            Ok(outcomes) => {
                prop_assert!(expected, "accepted a batch that breaks the contract: {:?}", batch);
                prop_assert_eq!(outcomes.len(), inputs);
                for (outcome, original) in outcomes.iter().zip(&batch.outcomes) {
                    let (model::Outcome::Write { records }, wit::Outcome::Write(originals)) = (outcome, original) else {
                        continue;
                    };
                    prop_assert_eq!(records.len(), originals.len());
                    for (record, original) in records.iter().zip(originals) {
                        prop_assert_eq!(&record.key, &original.key);
                        prop_assert_eq!(&record.target.table, &batch.targets[original.target as usize].table);
                        let names: Vec<&str> = record.fields.iter().map(|(name, _)| name.as_str()).collect();
                        let expected_names: Vec<&str> = original.fields.iter().map(|(column, _)| batch.columns[*column as usize].as_str()).collect();
                        prop_assert_eq!(names, expected_names);
                    }
                }
            }
            Err(reason) => {
                prop_assert!(!expected, "refused a batch that keeps the contract: {}", reason);
                prop_assert!(!reason.is_empty());
                prop_assert!(reason.len() < 300, "the reason is not short: {}", reason);
            }
        }
    }

    #[test]
    fn a_packed_result_is_checked_and_resolved_exactly_as_its_unpacked_form(
        batch in mapped_batch(),
        miscount in prop_oneof![4 => Just(0usize), 1 => 1usize..3],
    ) {
        let inputs = (batch.outcomes.len() + miscount) % 5;
        let packed = outcomes_from_packed(pack_result(&batch), inputs, &FUZZ_LIMITS);
        prop_assert_eq!(packed, outcomes_from_wit(batch, inputs, &FUZZ_LIMITS));
    }

    #[test]
    fn a_packed_result_with_arbitrary_spans_and_slices_is_refused_or_consistent(
        batch in mapped_batch(),
        breaks in proptest::collection::vec((any::<u16>(), any::<u32>(), 0u32..12), 1..4),
    ) {
        let inputs = batch.outcomes.len();
        let mut packed = pack_result(&batch);
        // Move some span or slice anywhere (inside `é`, past every end), or break a cell byte.
        for (which, start, len) in breaks {
            let span = super::bindings::packed::Span { start: start % 64, len };
            let slice = super::bindings::packed::Slice { start: start % 8, len };
            match usize::from(which) % 4 {
                3 => if !packed.fields.is_empty() {
                    let at = start as usize % packed.fields.len();
                    packed.fields[at] = len as u8;
                },
                0 => if let Some(record) = packed.records.get_mut(usize::from(which) % 4) {
                    record.key = span;
                },
                1 => if let Some(record) = packed.records.get_mut(usize::from(which) % 4) {
                    record.fields = slice;
                },
                _ => if let Some(outcome) = packed.outcomes.get_mut(usize::from(which) % 4) {
                    *outcome = match outcome {
                        super::bindings::packed::PackedOutcome::Write(_) => super::bindings::packed::PackedOutcome::Write(slice),
                        super::bindings::packed::PackedOutcome::Skip(_) => super::bindings::packed::PackedOutcome::Skip(span),
                        super::bindings::packed::PackedOutcome::Reject(_) => super::bindings::packed::PackedOutcome::Reject(span),
                    };
                },
            }
        }
        match outcomes_from_packed(packed, inputs, &FUZZ_LIMITS) {
            Ok(outcomes) => prop_assert_eq!(outcomes.len(), inputs),
            Err(reason) => prop_assert!(reason.len() < 300, "the reason is not short: {}", reason),
        }
    }

    #[test]
    fn any_decoded_output_bytes_are_accepted_or_refused_without_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..160),
    ) {
        let inputs = usize::from(bytes.first().copied().unwrap_or(0) % 8);
        if let Ok(outcomes) = check_output_bytes(&bytes) {
            prop_assert_eq!(outcomes.len(), inputs);
        }
    }
}
