//! Conversions between the host data model and the WIT types, and the validation of
//! everything a plugin returns before the host trusts it: outcome count, index ranges, key
//! presence, string sizes and output record counts, and the output budget, which counts
//! what the host materialises (a column name or target shared by many records is counted
//! once per copy), so that sharing strings cannot amplify one call's output.

use std::mem::size_of;

use conduit_model as model;

use super::Limits;
use super::bindings::wit;
use super::untrusted::cap;

/// What the host holds per output field besides its strings (name and value, inline).
const FIELD_BYTES: usize = size_of::<(String, model::Value)>();

/// What the host holds per output record besides its strings.
const RECORD_BYTES: usize = size_of::<model::WriteRecord>();

/// The WIT form of a model value.
pub(super) fn value_to_wit(value: &model::Value) -> wit::Value {
    match value {
        model::Value::Null => wit::Value::Null,
        model::Value::Boolean(flag) => wit::Value::Boolean(*flag),
        model::Value::Integer(number) => wit::Value::Integer(*number),
        model::Value::Decimal(number) => wit::Value::Decimal(*number),
        model::Value::Text(text) => wit::Value::Text(text.clone()),
        model::Value::Datetime(text) => wit::Value::Datetime(text.clone()),
        model::Value::Picklist { value, label } => wit::Value::Picklist(wit::Picklist {
            value: *value,
            label: label.clone(),
        }),
        model::Value::Guid(text) => wit::Value::Guid(text.clone()),
        model::Value::Lookup { table, id } => wit::Value::Lookup(wit::Lookup {
            table: table.clone(),
            id: id.clone(),
        }),
    }
}

fn value_from_wit(value: wit::Value) -> model::Value {
    match value {
        wit::Value::Null => model::Value::Null,
        wit::Value::Boolean(flag) => model::Value::Boolean(flag),
        wit::Value::Integer(number) => model::Value::Integer(number),
        wit::Value::Decimal(number) => model::Value::Decimal(number),
        wit::Value::Text(text) => model::Value::Text(text),
        wit::Value::Datetime(text) => model::Value::Datetime(text),
        wit::Value::Picklist(picklist) => model::Value::Picklist {
            value: picklist.value,
            label: picklist.label,
        },
        wit::Value::Guid(text) => model::Value::Guid(text),
        wit::Value::Lookup(lookup) => model::Value::Lookup {
            table: lookup.table,
            id: lookup.id,
        },
    }
}

pub(super) fn operation_to_wit(op: model::Operation) -> wit::Operation {
    match op {
        model::Operation::Upsert => wit::Operation::Upsert,
        model::Operation::Update => wit::Operation::Update,
        model::Operation::Delete => wit::Operation::Delete,
    }
}

pub(super) fn operation_from_wit(op: wit::Operation) -> model::Operation {
    match op {
        wit::Operation::Upsert => model::Operation::Upsert,
        wit::Operation::Update => model::Operation::Update,
        wit::Operation::Delete => model::Operation::Delete,
    }
}

/// The WIT form of a phase.
pub(super) fn phase_to_wit(phase: model::Phase) -> wit::Phase {
    match phase {
        model::Phase::Initial => wit::Phase::Initial,
        model::Phase::Incremental => wit::Phase::Incremental,
        model::Phase::Replay => wit::Phase::Replay,
    }
}

/// The WIT form of a record batch.
pub(super) fn batch_to_wit(batch: &model::RecordBatch) -> wit::RecordBatch {
    wit::RecordBatch {
        table: batch.table.clone(),
        columns: batch.columns.clone(),
        rows: batch
            .rows
            .iter()
            .map(|row| wit::Row {
                key: row.key.clone(),
                op: operation_to_wit(row.op),
                values: row.values.iter().map(value_to_wit).collect(),
                modified_at: row.modified_at.clone(),
            })
            .collect(),
    }
}

/// The WIT form of an email event.
pub(super) fn event_to_wit(event: &model::EmailEvent) -> wit::EmailEvent {
    wit::EmailEvent {
        id: event.id.clone(),
        kind: match event.kind {
            model::EmailEventKind::Send => wit::EmailEventKind::Send,
            model::EmailEventKind::Open => wit::EmailEventKind::Open,
            model::EmailEventKind::Click => wit::EmailEventKind::Click,
            model::EmailEventKind::Bounce => wit::EmailEventKind::Bounce,
        },
        contact_key: event.contact_key.clone(),
        campaign_id: event.campaign_id.clone(),
        campaign_name: event.campaign_name.clone(),
        delivery_id: event.delivery_id.clone(),
        delivery_name: event.delivery_name.clone(),
        timestamp: event.timestamp.clone(),
        url: event.url.clone(),
        mirror_page_url: event.mirror_page_url.clone(),
        bounce: event.bounce.as_ref().map(|bounce| wit::BounceDetail {
            hard: bounce.hard,
            reason: bounce.reason.clone(),
        }),
    }
}

/// The WIT form of one contact's opt-out states.
pub(super) fn contact_to_wit(contact: &model::ContactOptOut) -> wit::ContactOptOut {
    let side = |values: &[model::OptOutValue]| {
        values
            .iter()
            .map(|value| wit::OptOutValue {
                attribute: value.attribute.clone(),
                value: value.value,
                changed_at: value.changed_at.clone(),
            })
            .collect()
    };
    wit::ContactOptOut {
        contact_key: contact.contact_key.clone(),
        dynamics: side(&contact.dynamics),
        campaign: side(&contact.campaign),
    }
}

/// Counts the bytes the host materialises from one call's output (every string copy, and a
/// fixed size per record and per field) against `max_output_bytes`, so that a plugin cannot
/// hand the host (and its queue) an output far larger than its input.
pub(super) struct OutputBudget {
    used: usize,
    limit: usize,
}

impl OutputBudget {
    /// A budget of `limits.max_output_bytes` for one call.
    pub(super) fn new(limits: &Limits) -> OutputBudget {
        OutputBudget {
            used: 0,
            limit: limits.max_output_bytes,
        }
    }

    fn spend(&mut self, bytes: usize, what: impl FnOnce() -> String) -> Result<(), String> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(format!(
                "the output holds more than {} bytes in total (the limit of one call, counting every copy of a shared name or target), reached at {}",
                self.limit,
                what()
            ));
        }
        Ok(())
    }
}

/// Checks one string against the per-string cap and spends it from the budget.
fn check_text(
    what: &str,
    text: &str,
    limits: &Limits,
    budget: &mut OutputBudget,
) -> Result<(), String> {
    if text.len() > limits.max_string_bytes {
        return Err(format!(
            "{what} is {} bytes long, above the limit of {} bytes",
            text.len(),
            limits.max_string_bytes
        ));
    }
    budget.spend(text.len(), || what.to_owned())
}

/// The start of a possibly huge key, for error messages.
pub(super) fn key_excerpt(key: &str) -> String {
    const SHOWN: usize = 40;
    match key.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &key[..cut]),
        None => key.to_owned(),
    }
}

/// Checks that a result holds exactly one outcome per input.
pub(super) fn check_outcome_count(outcomes: usize, inputs: usize) -> Result<(), String> {
    if outcomes != inputs {
        return Err(format!(
            "{outcomes} outcomes for {inputs} inputs; exactly one per input is required"
        ));
    }
    Ok(())
}

/// Checks a result's targets and resolves them into model targets.
pub(super) fn targets_from_wit(
    targets: Vec<wit::Target>,
    limits: &Limits,
    budget: &mut OutputBudget,
) -> Result<Vec<model::Target>, String> {
    let mut resolved = Vec::with_capacity(targets.len());
    for (index, target) in targets.into_iter().enumerate() {
        if target.table.is_empty() || target.key_field.is_empty() {
            return Err(format!("target {index} has an empty table or key field"));
        }
        check_text(
            &format!("target {index}'s table"),
            &target.table,
            limits,
            budget,
        )?;
        check_text(
            &format!("target {index}'s key field"),
            &target.key_field,
            limits,
            budget,
        )?;
        resolved.push(model::Target {
            system: match target.system {
                wit::System::Dynamics => model::System::Dynamics,
                wit::System::Campaign => model::System::Campaign,
            },
            table: target.table,
            key_field: target.key_field,
        });
    }
    Ok(resolved)
}

/// Checks a result's destination column names.
pub(super) fn check_columns(
    columns: &[String],
    limits: &Limits,
    budget: &mut OutputBudget,
) -> Result<(), String> {
    for (index, column) in columns.iter().enumerate() {
        if column.is_empty() {
            return Err(format!("column {index} has an empty name"));
        }
        check_text(&format!("column {index}'s name"), column, limits, budget)?;
    }
    Ok(())
}

/// Checks the reason of a skip (`kind` "skip") or reject outcome and returns it capped.
pub(super) fn checked_reason(
    kind: &str,
    input: usize,
    reason: &str,
    limits: &Limits,
    budget: &mut OutputBudget,
) -> Result<String, String> {
    check_text(
        &format!("the {kind} reason of input {input}"),
        reason,
        limits,
        budget,
    )?;
    Ok(cap(reason))
}

/// Checks how many records one input writes.
pub(super) fn check_record_count(
    input: usize,
    records: usize,
    limits: &Limits,
) -> Result<(), String> {
    if records > limits.max_output_records_per_input {
        return Err(format!(
            "input {input} produced {records} output records, above the limit of {} per input",
            limits.max_output_records_per_input
        ));
    }
    Ok(())
}

/// Resolves an output record's target index.
pub(super) fn target_of(
    input: usize,
    target: u32,
    targets: &[model::Target],
) -> Result<&model::Target, String> {
    targets.get(target as usize).ok_or_else(|| {
        format!(
            "input {input} writes to target {target}, but there are only {} targets",
            targets.len()
        )
    })
}

/// Checks an output record's key and spends what the record materialises besides its fields.
pub(super) fn check_record(
    input: usize,
    key: &str,
    target: &model::Target,
    limits: &Limits,
    budget: &mut OutputBudget,
) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!("input {input} writes a record with an empty key"));
    }
    if key.len() > limits.max_string_bytes {
        return Err(format!(
            "input {input} writes a record whose key (`{}`) is {} bytes long, above the limit of {} bytes",
            key_excerpt(key),
            key.len(),
            limits.max_string_bytes
        ));
    }
    // The record holds its own copy of the target's names.
    let materialised = RECORD_BYTES + key.len() + target.table.len() + target.key_field.len();
    budget.spend(materialised, || {
        format!("input {input}'s record `{}`", key_excerpt(key))
    })
}

/// The text one field value holds: its longest string and all its strings' bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ValueText {
    /// Bytes of the value's longest string.
    pub(super) longest: usize,
    /// Bytes of all its strings.
    pub(super) total: usize,
}

/// Resolves a field's column index, checks its value's size and spends what the field
/// materialises; returns the column's name.
pub(super) fn check_field<'c>(
    input: usize,
    key: &str,
    column: u32,
    columns: &'c [String],
    text: ValueText,
    limits: &Limits,
    budget: &mut OutputBudget,
) -> Result<&'c String, String> {
    let column_name = columns.get(column as usize).ok_or_else(|| {
        format!(
            "input {input} sets column {column}, but there are only {} columns",
            columns.len()
        )
    })?;
    let name = || key_excerpt(column_name);
    if text.longest > limits.max_string_bytes {
        return Err(format!(
            "input {input} sets `{}` of the record `{}` to a value of {} bytes, above the limit of {} bytes",
            name(),
            key_excerpt(key),
            text.longest,
            limits.max_string_bytes
        ));
    }
    // The field holds its own copy of the column name.
    budget.spend(FIELD_BYTES + column_name.len() + text.total, || {
        format!(
            "`{}` of input {input}'s record `{}`",
            name(),
            key_excerpt(key)
        )
    })?;
    Ok(column_name)
}

/// Checks a plugin's result against `inputs` and `limits` and resolves its index tables into
/// self-contained outcomes; the error says what was wrong.
pub(crate) fn outcomes_from_wit(
    batch: wit::MappedBatch,
    inputs: usize,
    limits: &Limits,
) -> Result<Vec<model::Outcome>, String> {
    check_outcome_count(batch.outcomes.len(), inputs)?;
    let mut budget = OutputBudget::new(limits);
    let targets = targets_from_wit(batch.targets, limits, &mut budget)?;
    check_columns(&batch.columns, limits, &mut budget)?;
    let mut outcomes = Vec::with_capacity(inputs);
    for (input, outcome) in batch.outcomes.into_iter().enumerate() {
        outcomes.push(match outcome {
            wit::Outcome::Skip(reason) => model::Outcome::Skip {
                reason: checked_reason("skip", input, &reason, limits, &mut budget)?,
            },
            wit::Outcome::Reject(reason) => model::Outcome::Reject {
                reason: checked_reason("reject", input, &reason, limits, &mut budget)?,
            },
            wit::Outcome::Write(records) => {
                check_record_count(input, records.len(), limits)?;
                let records = records
                    .into_iter()
                    .map(|record| {
                        write_record(record, input, &targets, &batch.columns, limits, &mut budget)
                    })
                    .collect::<Result<_, _>>()?;
                model::Outcome::Write { records }
            }
        });
    }
    Ok(outcomes)
}

fn write_record(
    record: wit::OutputRecord,
    input: usize,
    targets: &[model::Target],
    columns: &[String],
    limits: &Limits,
    budget: &mut OutputBudget,
) -> Result<model::WriteRecord, String> {
    let target = target_of(input, record.target, targets)?;
    check_record(input, &record.key, target, limits, budget)?;
    let mut fields = Vec::with_capacity(record.fields.len());
    for (column, value) in record.fields {
        let text = match &value {
            wit::Value::Text(text) | wit::Value::Datetime(text) | wit::Value::Guid(text) => {
                ValueText {
                    longest: text.len(),
                    total: text.len(),
                }
            }
            wit::Value::Picklist(picklist) => {
                let label = picklist.label.as_ref().map_or(0, String::len);
                ValueText {
                    longest: label,
                    total: label,
                }
            }
            wit::Value::Lookup(lookup) => ValueText {
                longest: lookup.table.len().max(lookup.id.len()),
                total: lookup.table.len() + lookup.id.len(),
            },
            _ => ValueText::default(),
        };
        let column_name = check_field(input, &record.key, column, columns, text, limits, budget)?;
        fields.push((column_name.clone(), value_from_wit(value)));
    }
    Ok(model::WriteRecord {
        target: target.clone(),
        key: record.key,
        op: operation_from_wit(record.op),
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(outcomes: Vec<wit::Outcome>) -> wit::MappedBatch {
        wit::MappedBatch {
            targets: vec![wit::Target {
                system: wit::System::Campaign,
                table: "profile".into(),
                key_field: "externalId".into(),
            }],
            columns: vec!["email".into()],
            outcomes,
        }
    }

    fn record(target: u32, key: &str, column: u32) -> wit::OutputRecord {
        wit::OutputRecord {
            target,
            key: key.into(),
            op: wit::Operation::Upsert,
            fields: vec![(column, wit::Value::Text("a@b.c".into()))],
        }
    }

    #[test]
    fn valid_output_resolves_targets_and_column_names() {
        let outcomes = outcomes_from_wit(
            mapped(vec![wit::Outcome::Write(vec![record(0, "c1", 0)])]),
            1,
            &Limits::default(),
        )
        .unwrap();
        let model::Outcome::Write { records } = &outcomes[0] else {
            panic!("{outcomes:?}")
        };
        assert_eq!(records[0].target.table, "profile");
        assert_eq!(records[0].fields[0].0, "email");
    }

    #[test]
    fn invalid_output_is_refused_with_the_reason() {
        let limits = Limits {
            max_string_bytes: 10,
            max_output_records_per_input: 1,
            ..Limits::default()
        };
        let cases = [
            (mapped(vec![]), "0 outcomes for 1 inputs"),
            (
                mapped(vec![wit::Outcome::Write(vec![record(3, "c1", 0)])]),
                "target 3",
            ),
            (
                mapped(vec![wit::Outcome::Write(vec![record(0, "c1", 9)])]),
                "column 9",
            ),
            (
                mapped(vec![wit::Outcome::Write(vec![record(0, "", 0)])]),
                "empty key",
            ),
            (
                mapped(vec![wit::Outcome::Write(vec![
                    record(0, "c1", 0),
                    record(0, "c2", 0),
                ])]),
                "2 output records",
            ),
            (
                mapped(vec![wit::Outcome::Skip("far too long".into())]),
                "skip reason",
            ),
        ];
        for (batch, expected) in cases {
            let problem = outcomes_from_wit(batch, 1, &limits).unwrap_err();
            assert!(problem.contains(expected), "{problem} lacks {expected}");
        }
    }

    #[test]
    fn output_over_the_total_byte_cap_is_refused_naming_where_it_tipped_over() {
        // The target and column names cost 22 bytes up front; each record then costs its
        // bookkeeping, its 2-byte key, its copy of the target's names (17 bytes) and one
        // field: its bookkeeping, its copy of the column name (5) and its value (5).
        let per_record = RECORD_BYTES + 2 + 17 + FIELD_BYTES + 5 + 5;
        let limits = Limits {
            max_string_bytes: 10,
            max_output_bytes: 22 + 2 * per_record,
            ..Limits::default()
        };
        let records: Vec<_> = (0..4).map(|i| record(0, &format!("c{i}"), 0)).collect();
        let fits = outcomes_from_wit(
            mapped(vec![wit::Outcome::Write(records[..2].to_vec())]),
            1,
            &limits,
        );
        assert!(fits.is_ok(), "{fits:?}");
        let problem =
            outcomes_from_wit(mapped(vec![wit::Outcome::Write(records)]), 1, &limits).unwrap_err();
        assert!(
            problem.contains(&format!("more than {} bytes", limits.max_output_bytes)),
            "{problem}"
        );
        assert!(problem.contains("record `c2`"), "{problem}");
    }

    #[test]
    fn a_column_name_shared_by_many_fields_is_counted_once_per_copy() {
        // One 1 MiB name referenced by 64 fields: the host would hold 64 MiB of copies.
        let mut batch = mapped(vec![wit::Outcome::Write(vec![wit::OutputRecord {
            target: 0,
            key: "c1".into(),
            op: wit::Operation::Upsert,
            fields: (0..64).map(|_| (0, wit::Value::Null)).collect(),
        }])]);
        batch.columns = vec!["n".repeat(1 << 20)];
        let problem = outcomes_from_wit(batch, 1, &Limits::default()).unwrap_err();
        assert!(problem.contains("more than 16777216 bytes"), "{problem}");
        assert!(problem.contains("counting every copy"), "{problem}");
        assert!(
            problem.len() < 1024,
            "the name is quoted in short: {problem}"
        );
    }

    #[test]
    fn a_target_shared_by_many_records_is_counted_once_per_copy() {
        let limits = Limits::default();
        let records = |input: usize| {
            wit::Outcome::Write(
                (0..limits.max_output_records_per_input)
                    .map(|i| record(0, &format!("c{input}-{i}"), 0))
                    .collect(),
            )
        };
        // A 1 MiB table name shared by 2 x 16 records: 32 MiB of copies.
        let mut batch = mapped(vec![records(0), records(1)]);
        batch.targets[0].table = "t".repeat(1 << 20);
        let problem = outcomes_from_wit(batch, 2, &limits).unwrap_err();
        assert!(problem.contains("more than 16777216 bytes"), "{problem}");
    }

    #[test]
    fn reasons_are_kept_capped() {
        let reason = "r".repeat(100_000);
        let outcomes = outcomes_from_wit(
            mapped(vec![wit::Outcome::Reject(reason)]),
            1,
            &Limits::default(),
        )
        .unwrap();
        let model::Outcome::Reject { reason } = &outcomes[0] else {
            panic!("{outcomes:?}")
        };
        assert!(reason.len() < 5000, "{}", reason.len());
        assert!(
            reason.ends_with("[truncated, 100000 bytes in all]"),
            "{reason}"
        );
    }

    #[test]
    fn an_oversized_key_or_value_names_the_record() {
        let limits = Limits {
            max_string_bytes: 10,
            ..Limits::default()
        };
        let long_key = record(0, "k-is-far-too-long", 0);
        let problem = outcomes_from_wit(
            mapped(vec![wit::Outcome::Write(vec![long_key])]),
            1,
            &limits,
        )
        .unwrap_err();
        assert!(
            problem.contains("key (`k-is-far-too-long`) is 17 bytes"),
            "{problem}"
        );
        let mut long_value = record(0, "c9", 0);
        long_value.fields = vec![(0, wit::Value::Text("x".repeat(11)))];
        let problem = outcomes_from_wit(
            mapped(vec![wit::Outcome::Write(vec![long_value])]),
            1,
            &limits,
        )
        .unwrap_err();
        assert!(problem.contains("`email` of the record `c9`"), "{problem}");
        assert!(problem.contains("11 bytes"), "{problem}");
    }
}
