//! The packed forms of the Ingress contract (`conduit:plugin/packed`, since 1.1): a model
//! batch written into one text arena and binary value cells ([`conduit_plugin::cells`]), and
//! a packed result checked and resolved into self-contained outcomes.
//!
//! Why: lowering a `list<string>` through the canonical ABI calls the guest's allocator once
//! per string, and each of those calls is a host-to-guest transition; a contact batch of 1000
//! holds ~11,000 strings. In the packed form a batch crosses in a handful of copies, and the
//! host writes the model's strings straight into the arena instead of cloning each one into a
//! WIT value first.
//!
//! A packed result is checked exactly as [`convert::outcomes_from_wit`] checks the 1.0 form
//! (the same limits, the same budget, the same messages), plus what only the packed form can
//! get wrong: a `span` outside the text or splitting a character, a `slice` outside its
//! list, and a cell that breaks the layout. Every span is resolved and measured before anything is allocated for it, so spans
//! that share one long run of text are counted once per copy, as shared strings are.

use conduit_model as model;

use conduit_plugin::cells::{self, Cell, Span};

use super::Limits;
use super::bindings::packed as wit_packed;
use super::convert::{self, OutputBudget, ValueText};

/// Bytes of text a packed batch reserves per row (a contact's key, a few names, an address
/// and a date take about 150).
const TEXT_PER_ROW: usize = 192;

/// Why a batch could not be written in the packed form.
#[derive(Debug)]
pub(super) struct TooLarge {
    /// What grew past the form's 32-bit offsets.
    pub(super) what: &'static str,
}

/// The text arena and value cells a packed batch is written into.
struct Writer {
    text: String,
    values: Vec<u8>,
}

impl Writer {
    /// Appends `text` to the arena and names it.
    fn span(&mut self, text: &str) -> Result<Span, TooLarge> {
        let too_large = || TooLarge {
            what: "the batch's text",
        };
        let start = u32::try_from(self.text.len()).map_err(|_| too_large())?;
        let len = u32::try_from(text.len()).map_err(|_| too_large())?;
        start.checked_add(len).ok_or_else(too_large)?;
        self.text.push_str(text);
        Ok(Span { start, len })
    }

    /// The cell of `value`, its strings appended to the arena.
    fn cell(&mut self, value: &model::Value) -> Result<Cell, TooLarge> {
        Ok(match value {
            model::Value::Null => Cell::Null,
            model::Value::Boolean(flag) => Cell::Boolean(*flag),
            model::Value::Integer(number) => Cell::Integer(*number),
            model::Value::Decimal(number) => Cell::Decimal(*number),
            model::Value::Text(text) => Cell::Text(self.span(text)?),
            model::Value::Datetime(text) => Cell::Datetime(self.span(text)?),
            model::Value::Picklist { value, label } => Cell::Picklist(
                *value,
                label.as_deref().map(|label| self.span(label)).transpose()?,
            ),
            model::Value::Guid(text) => Cell::Guid(self.span(text)?),
            model::Value::Lookup { table, id } => Cell::Lookup(self.span(table)?, self.span(id)?),
        })
    }
}

impl From<wit_packed::Span> for Span {
    fn from(span: wit_packed::Span) -> Span {
        Span {
            start: span.start,
            len: span.len,
        }
    }
}

/// The WIT form of a span.
fn wit_span(span: Span) -> wit_packed::Span {
    wit_packed::Span {
        start: span.start,
        len: span.len,
    }
}

/// The packed form of a record batch.
pub(super) fn batch_to_packed(
    batch: &model::RecordBatch,
) -> Result<wit_packed::PackedBatch, TooLarge> {
    // Sized from the batch's shape, not by measuring every string: the text grows by
    // doubling if a page's strings are longer than this.
    let value_count = batch.rows.len() * batch.columns.len();
    let mut writer = Writer {
        text: String::with_capacity(batch.rows.len() * TEXT_PER_ROW),
        values: Vec::with_capacity(value_count * cells::VALUE_CELL),
    };
    let too_many = || TooLarge {
        what: "the batch's values",
    };
    let mut rows = Vec::with_capacity(batch.rows.len());
    let mut next_value = 0u32;
    for row in &batch.rows {
        let key = wit_span(writer.span(&row.key)?);
        let modified_at = row
            .modified_at
            .as_deref()
            .map(|at| writer.span(at).map(wit_span))
            .transpose()?;
        for value in &row.values {
            let cell = writer.cell(value)?;
            cell.write(&mut writer.values);
        }
        let len = u32::try_from(row.values.len()).map_err(|_| too_many())?;
        rows.push(wit_packed::PackedRow {
            key,
            op: convert::operation_to_wit(row.op),
            values: wit_packed::Slice {
                start: next_value,
                len,
            },
            modified_at,
        });
        next_value = next_value.checked_add(len).ok_or_else(too_many)?;
    }
    Ok(wit_packed::PackedBatch {
        table: batch.table.clone(),
        columns: batch.columns.clone(),
        rows,
        values: writer.values,
        text: writer.text,
    })
}

/// A packed result's text, resolving spans with the check a plugin's span needs.
#[derive(Clone, Copy)]
struct Text<'t>(&'t str);

impl<'t> Text<'t> {
    /// The text `span` names; the error names `what` it was and how it is wrong.
    fn get(self, span: impl Into<Span>, what: impl FnOnce() -> String) -> Result<&'t str, String> {
        let span = span.into();
        let start = span.start as usize;
        let end = start.saturating_add(span.len as usize);
        self.0.get(start..end).ok_or_else(|| {
            let problem = if end > self.0.len() {
                format!("ends past the result's text of {} bytes", self.0.len())
            } else {
                "starts or ends inside a character".to_owned()
            };
            format!("{} (bytes {start}..{end}) {problem}", what())
        })
    }
}

/// The elements `slice` names in `list`; the error names `what` the list is.
fn elements<T>(
    list: &[T],
    slice: wit_packed::Slice,
    what: impl FnOnce() -> String,
) -> Result<&[T], String> {
    let start = slice.start as usize;
    let end = start.saturating_add(slice.len as usize);
    list.get(start..end).ok_or_else(|| {
        format!(
            "{} (elements {start}..{end}) ends past the {} there are",
            what(),
            list.len()
        )
    })
}

/// A packed value with its spans resolved to borrowed text.
enum Resolved<'t> {
    Null,
    Boolean(bool),
    Integer(i64),
    Decimal(f64),
    Text(&'t str),
    Datetime(&'t str),
    Picklist { value: i64, label: Option<&'t str> },
    Guid(&'t str),
    Lookup { table: &'t str, id: &'t str },
}

impl Resolved<'_> {
    fn text(&self) -> ValueText {
        let one = |text: &str| ValueText {
            longest: text.len(),
            total: text.len(),
        };
        match self {
            Resolved::Text(text) | Resolved::Datetime(text) | Resolved::Guid(text) => one(text),
            Resolved::Picklist { label, .. } => label.map(one).unwrap_or_default(),
            Resolved::Lookup { table, id } => ValueText {
                longest: table.len().max(id.len()),
                total: table.len() + id.len(),
            },
            Resolved::Null | Resolved::Boolean(_) | Resolved::Integer(_) | Resolved::Decimal(_) => {
                ValueText::default()
            }
        }
    }

    fn to_model(&self) -> model::Value {
        match *self {
            Resolved::Null => model::Value::Null,
            Resolved::Boolean(flag) => model::Value::Boolean(flag),
            Resolved::Integer(number) => model::Value::Integer(number),
            Resolved::Decimal(number) => model::Value::Decimal(number),
            Resolved::Text(text) => model::Value::Text(text.to_owned()),
            Resolved::Datetime(text) => model::Value::Datetime(text.to_owned()),
            Resolved::Picklist { value, label } => model::Value::Picklist {
                value,
                label: label.map(str::to_owned),
            },
            Resolved::Guid(text) => model::Value::Guid(text.to_owned()),
            Resolved::Lookup { table, id } => model::Value::Lookup {
                table: table.to_owned(),
                id: id.to_owned(),
            },
        }
    }
}

fn resolve<'t>(
    cell: Cell,
    text: Text<'t>,
    what: &dyn Fn() -> String,
) -> Result<Resolved<'t>, String> {
    Ok(match cell {
        Cell::Null => Resolved::Null,
        Cell::Boolean(flag) => Resolved::Boolean(flag),
        Cell::Integer(number) => Resolved::Integer(number),
        Cell::Decimal(number) => Resolved::Decimal(number),
        Cell::Text(span) => Resolved::Text(text.get(span, what)?),
        Cell::Datetime(span) => Resolved::Datetime(text.get(span, what)?),
        Cell::Picklist(value, label) => Resolved::Picklist {
            value,
            label: label
                .map(|span| text.get(span, || format!("{}'s label", what())))
                .transpose()?,
        },
        Cell::Guid(span) => Resolved::Guid(text.get(span, what)?),
        Cell::Lookup(table, id) => Resolved::Lookup {
            table: text.get(table, || format!("{}'s table", what()))?,
            id: text.get(id, || format!("{}'s id", what()))?,
        },
    })
}

/// Checks a plugin's packed result against `inputs` and `limits` and resolves it into
/// self-contained outcomes; the error says what was wrong.
pub(super) fn outcomes_from_packed(
    batch: wit_packed::PackedMappedBatch,
    inputs: usize,
    limits: &Limits,
) -> Result<Vec<model::Outcome>, String> {
    convert::check_outcome_count(batch.outcomes.len(), inputs)?;
    let mut budget = OutputBudget::new(limits);
    let targets = convert::targets_from_wit(batch.targets, limits, &mut budget)?;
    convert::check_columns(&batch.columns, limits, &mut budget)?;
    let text = Text(&batch.text);
    let fields: Vec<&[u8]> = cells::cells(&batch.fields, cells::FIELD_CELL)
        .map_err(|problem| format!("the result's field cells {problem}"))?
        .collect();
    let mut outcomes = Vec::with_capacity(inputs);
    for (input, outcome) in batch.outcomes.iter().enumerate() {
        outcomes.push(match outcome {
            wit_packed::PackedOutcome::Skip(span) => {
                let reason = text.get(*span, || format!("the skip reason of input {input}"))?;
                model::Outcome::Skip {
                    reason: convert::checked_reason("skip", input, reason, limits, &mut budget)?,
                }
            }
            wit_packed::PackedOutcome::Reject(span) => {
                let reason = text.get(*span, || format!("the reject reason of input {input}"))?;
                model::Outcome::Reject {
                    reason: convert::checked_reason("reject", input, reason, limits, &mut budget)?,
                }
            }
            wit_packed::PackedOutcome::Write(slice) => {
                let records = elements(&batch.records, *slice, || {
                    format!("the records of input {input}")
                })?;
                convert::check_record_count(input, records.len(), limits)?;
                // Sized up front: collecting through `Result` would start the list at 4.
                let mut written = Vec::with_capacity(records.len());
                for record in records {
                    written.push(write_record(
                        record,
                        input,
                        &targets,
                        &batch.columns,
                        &fields,
                        text,
                        limits,
                        &mut budget,
                    )?);
                }
                model::Outcome::Write { records: written }
            }
        });
    }
    Ok(outcomes)
}

#[allow(clippy::too_many_arguments)] // the result's parts, each borrowed separately
fn write_record(
    record: &wit_packed::PackedOutputRecord,
    input: usize,
    targets: &[model::Target],
    columns: &[String],
    all_fields: &[&[u8]],
    text: Text<'_>,
    limits: &Limits,
    budget: &mut OutputBudget,
) -> Result<model::WriteRecord, String> {
    let target = convert::target_of(input, record.target, targets)?;
    let key = text.get(record.key, || {
        format!("the key of a record of input {input}")
    })?;
    convert::check_record(input, key, target, limits, budget)?;
    let packed_fields = elements(all_fields, record.fields, || {
        format!(
            "the fields of input {input}'s record `{}`",
            convert::key_excerpt(key)
        )
    })?;
    let mut fields = Vec::with_capacity(packed_fields.len());
    for field in packed_fields {
        let what = || {
            format!(
                "a value of input {input}'s record `{}`",
                convert::key_excerpt(key)
            )
        };
        let (column, cell) =
            cells::read_field(field).map_err(|problem| format!("{} {problem}", what()))?;
        let value = resolve(cell, text, &what)?;
        let column_name =
            convert::check_field(input, key, column, columns, value.text(), limits, budget)?;
        fields.push((column_name.clone(), value.to_model()));
    }
    Ok(model::WriteRecord {
        target: target.clone(),
        key: key.to_owned(),
        op: convert::operation_from_wit(record.op),
        fields,
    })
}

/// The packed form of a 1.0 result, as a plugin that packs it faithfully would send it (for
/// tests that hold the two forms' checks equal).
#[cfg(test)]
pub(super) fn pack_result(
    batch: &super::bindings::wit::MappedBatch,
) -> wit_packed::PackedMappedBatch {
    use super::bindings::wit;
    let mut writer = Writer {
        text: String::new(),
        values: Vec::new(),
    };
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut outcomes = Vec::new();
    let to_model = |value: &wit::Value| -> model::Value {
        match value {
            wit::Value::Null => model::Value::Null,
            wit::Value::Boolean(flag) => model::Value::Boolean(*flag),
            wit::Value::Integer(number) => model::Value::Integer(*number),
            wit::Value::Decimal(number) => model::Value::Decimal(*number),
            wit::Value::Text(text) => model::Value::Text(text.clone()),
            wit::Value::Datetime(text) => model::Value::Datetime(text.clone()),
            wit::Value::Picklist(picklist) => model::Value::Picklist {
                value: picklist.value,
                label: picklist.label.clone(),
            },
            wit::Value::Guid(text) => model::Value::Guid(text.clone()),
            wit::Value::Lookup(lookup) => model::Value::Lookup {
                table: lookup.table.clone(),
                id: lookup.id.clone(),
            },
        }
    };
    for outcome in &batch.outcomes {
        outcomes.push(match outcome {
            wit::Outcome::Skip(reason) => {
                wit_packed::PackedOutcome::Skip(wit_span(writer.span(reason).unwrap()))
            }
            wit::Outcome::Reject(reason) => {
                wit_packed::PackedOutcome::Reject(wit_span(writer.span(reason).unwrap()))
            }
            wit::Outcome::Write(written) => {
                let start = records.len() as u32;
                for record in written {
                    let key = wit_span(writer.span(&record.key).unwrap());
                    let first = (fields.len() / cells::FIELD_CELL) as u32;
                    for (column, value) in &record.fields {
                        let cell = writer.cell(&to_model(value)).unwrap();
                        cells::write_field(*column, &cell, &mut fields);
                    }
                    records.push(wit_packed::PackedOutputRecord {
                        target: record.target,
                        key,
                        op: record.op,
                        fields: wit_packed::Slice {
                            start: first,
                            len: record.fields.len() as u32,
                        },
                    });
                }
                wit_packed::PackedOutcome::Write(wit_packed::Slice {
                    start,
                    len: written.len() as u32,
                })
            }
        });
    }
    wit_packed::PackedMappedBatch {
        targets: batch.targets.clone(),
        columns: batch.columns.clone(),
        outcomes,
        records,
        fields,
        text: writer.text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::wit;

    /// The model batch a packed batch describes, read as a guest reads it.
    fn unpack(batch: &wit_packed::PackedBatch) -> model::RecordBatch {
        let text = |span: wit_packed::Span| {
            batch.text[span.start as usize..(span.start + span.len) as usize].to_owned()
        };
        let value = |cell: &[u8]| match Cell::read(cell).unwrap() {
            Cell::Null => model::Value::Null,
            Cell::Boolean(flag) => model::Value::Boolean(flag),
            Cell::Integer(number) => model::Value::Integer(number),
            Cell::Decimal(number) => model::Value::Decimal(number),
            Cell::Text(span) => model::Value::Text(text(wit_span(span))),
            Cell::Datetime(span) => model::Value::Datetime(text(wit_span(span))),
            Cell::Picklist(value, label) => model::Value::Picklist {
                value,
                label: label.map(|span| text(wit_span(span))),
            },
            Cell::Guid(span) => model::Value::Guid(text(wit_span(span))),
            Cell::Lookup(table, id) => model::Value::Lookup {
                table: text(wit_span(table)),
                id: text(wit_span(id)),
            },
        };
        let cells: Vec<&[u8]> = batch.values.chunks_exact(cells::VALUE_CELL).collect();
        model::RecordBatch {
            table: batch.table.clone(),
            columns: batch.columns.clone(),
            rows: batch
                .rows
                .iter()
                .map(|row| model::Row {
                    key: text(row.key),
                    op: match row.op {
                        wit::Operation::Upsert => model::Operation::Upsert,
                        wit::Operation::Update => model::Operation::Update,
                        wit::Operation::Delete => model::Operation::Delete,
                    },
                    values: cells
                        [row.values.start as usize..(row.values.start + row.values.len) as usize]
                        .iter()
                        .map(|cell| value(cell))
                        .collect(),
                    modified_at: row.modified_at.map(text),
                })
                .collect(),
        }
    }

    #[test]
    fn a_packed_batch_holds_every_row_value_and_key_of_the_model_batch() {
        let batch = model::RecordBatch {
            table: "contact".into(),
            columns: vec!["a".into(), "b".into(), "c".into()],
            rows: vec![
                model::Row {
                    key: "k-é1".into(),
                    op: model::Operation::Upsert,
                    values: vec![
                        model::Value::Text("Zoë".into()),
                        model::Value::Picklist {
                            value: 2,
                            label: Some("Female".into()),
                        },
                        model::Value::Lookup {
                            table: "account".into(),
                            id: "a-1".into(),
                        },
                    ],
                    modified_at: Some("2026-12-01T10:00:00Z".into()),
                },
                model::Row {
                    key: "k2".into(),
                    op: model::Operation::Delete,
                    values: vec![],
                    modified_at: None,
                },
                model::Row {
                    key: String::new(),
                    op: model::Operation::Update,
                    values: vec![
                        model::Value::Null,
                        model::Value::Decimal(1.5),
                        model::Value::Guid(String::new()),
                    ],
                    modified_at: None,
                },
            ],
        };
        let packed = batch_to_packed(&batch).unwrap();
        assert_eq!(packed.values.len(), 6 * cells::VALUE_CELL);
        assert_eq!(unpack(&packed), batch);
    }

    /// A result writing one record `c1` (the text's first two bytes) with `fields`.
    fn result(text: &str, fields: Vec<(u32, Cell)>) -> wit_packed::PackedMappedBatch {
        let count = fields.len() as u32;
        let mut cells = Vec::new();
        for (column, cell) in &fields {
            cells::write_field(*column, cell, &mut cells);
        }
        wit_packed::PackedMappedBatch {
            targets: vec![wit::Target {
                system: wit::System::Campaign,
                table: "profile".into(),
                key_field: "externalId".into(),
            }],
            columns: vec!["email".into()],
            outcomes: vec![wit_packed::PackedOutcome::Write(wit_packed::Slice {
                start: 0,
                len: 1,
            })],
            records: vec![wit_packed::PackedOutputRecord {
                target: 0,
                key: wit_packed::Span { start: 0, len: 2 },
                op: wit::Operation::Upsert,
                fields: wit_packed::Slice {
                    start: 0,
                    len: count,
                },
            }],
            fields: cells,
            text: text.into(),
        }
    }

    fn text_field(start: u32, len: u32) -> (u32, Cell) {
        (0, Cell::Text(Span { start, len }))
    }

    #[test]
    fn a_valid_packed_result_resolves_into_the_records_it_names() {
        let outcomes = outcomes_from_packed(
            result("c1a@b.c", vec![text_field(2, 5)]),
            1,
            &Limits::default(),
        )
        .unwrap();
        let model::Outcome::Write { records } = &outcomes[0] else {
            panic!("{outcomes:?}")
        };
        assert_eq!(records[0].key, "c1");
        assert_eq!(records[0].target.table, "profile");
        assert_eq!(
            records[0].fields,
            vec![("email".to_owned(), model::Value::Text("a@b.c".into()))]
        );
    }

    #[test]
    fn spans_and_slices_that_a_plugin_gets_wrong_are_refused_naming_them() {
        let limits = Limits::default();
        // Past the end of the text.
        let problem = outcomes_from_packed(result("c1a@b.c", vec![text_field(2, 50)]), 1, &limits)
            .unwrap_err();
        assert!(problem.contains("record `c1`"), "{problem}");
        assert!(problem.contains("bytes 2..52"), "{problem}");
        assert!(
            problem.contains("past the result's text of 7 bytes"),
            "{problem}"
        );
        // Inside the two bytes of `é`.
        let problem =
            outcomes_from_packed(result("c1é", vec![text_field(3, 1)]), 1, &limits).unwrap_err();
        assert!(problem.contains("inside a character"), "{problem}");
        // A cell of an unknown case, and cells cut short.
        let mut bad = result("c1", vec![text_field(0, 2)]);
        bad.fields[4] = 42;
        let problem = outcomes_from_packed(bad, 1, &limits).unwrap_err();
        assert!(
            problem.contains("record `c1` has the unknown case 42"),
            "{problem}"
        );
        let mut bad = result("c1", vec![text_field(0, 2)]);
        bad.fields.pop();
        let problem = outcomes_from_packed(bad, 1, &limits).unwrap_err();
        assert!(problem.contains("field cells are 23 bytes"), "{problem}");
        // A start so large that start + len overflows 32 bits.
        let problem = outcomes_from_packed(
            result("c1", vec![text_field(u32::MAX, u32::MAX)]),
            1,
            &limits,
        )
        .unwrap_err();
        assert!(problem.contains("past the result's text"), "{problem}");
        // A record's fields past the fields there are.
        let mut bad = result("c1", vec![]);
        bad.records[0].fields = wit_packed::Slice { start: 1, len: 3 };
        let problem = outcomes_from_packed(bad, 1, &limits).unwrap_err();
        assert!(
            problem.contains("the fields of input 0's record `c1`"),
            "{problem}"
        );
        assert!(problem.contains("elements 1..4"), "{problem}");
        // An outcome's records past the records there are.
        let mut bad = result("c1", vec![]);
        bad.outcomes[0] = wit_packed::PackedOutcome::Write(wit_packed::Slice { start: 0, len: 2 });
        let problem = outcomes_from_packed(bad, 1, &limits).unwrap_err();
        assert!(problem.contains("the records of input 0"), "{problem}");
        // A reason outside the text.
        let mut bad = result("c1", vec![]);
        bad.outcomes[0] = wit_packed::PackedOutcome::Reject(wit_packed::Span { start: 1, len: 9 });
        let problem = outcomes_from_packed(bad, 1, &limits).unwrap_err();
        assert!(
            problem.contains("the reject reason of input 0"),
            "{problem}"
        );
    }

    #[test]
    fn one_long_run_of_text_named_by_many_spans_is_counted_once_per_copy() {
        // 1 MiB of text named by 64 fields: the host would hold 64 MiB of copies.
        let text = format!("c1{}", "x".repeat(1 << 20));
        let limits = Limits {
            max_string_bytes: 2 << 20,
            ..Limits::default()
        };
        let fields = (0..64).map(|_| text_field(2, 1 << 20)).collect();
        let problem = outcomes_from_packed(result(&text, fields), 1, &limits).unwrap_err();
        assert!(problem.contains("more than 16777216 bytes"), "{problem}");
        assert!(problem.len() < 1024, "{problem}");
    }

    #[test]
    fn the_records_of_one_slice_named_by_many_outcomes_are_counted_once_per_copy() {
        let limits = Limits::default();
        let text = format!("c1{}", "x".repeat(1 << 20));
        let mut shared = result(&text, vec![text_field(2, 1 << 20)]);
        shared.outcomes = (0..32)
            .map(|_| wit_packed::PackedOutcome::Write(wit_packed::Slice { start: 0, len: 1 }))
            .collect();
        let problem = outcomes_from_packed(shared, 32, &limits).unwrap_err();
        assert!(problem.contains("more than 16777216 bytes"), "{problem}");
    }
}
