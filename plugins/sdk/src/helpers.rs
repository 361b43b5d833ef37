//! Small conveniences that keep plugins short: typed [`Value`] accessors, column lookup,
//! and builders for targets, output records and outcomes.

use crate::{Operation, Outcome, OutputRecord, RecordBatch, Row, System, Target, Value};

/// The value a missing column or out-of-range index reads as.
static NULL: Value = Value::Null;

impl Value {
    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The text of a `text`, `datetime` or `guid` value.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(text) | Value::Datetime(text) | Value::Guid(text) => Some(text),
            _ => None,
        }
    }

    /// A `boolean` value.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(flag) => Some(*flag),
            _ => None,
        }
    }

    /// An `integer` value, or a picklist's technical value.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(number) | Value::Picklist { value: number, .. } => Some(*number),
            _ => None,
        }
    }

    /// A `decimal` value, or an `integer` widened to a decimal.
    pub fn as_decimal(&self) -> Option<f64> {
        match self {
            Value::Decimal(number) => Some(*number),
            // Whole numbers beyond 2^53 lose precision, as they would in Campaign anyway.
            Value::Integer(number) => Some(*number as f64),
            _ => None,
        }
    }

    /// A picklist's label, when the source sent one.
    pub fn picklist_label(&self) -> Option<&str> {
        match self {
            Value::Picklist { label, .. } => label.as_deref(),
            _ => None,
        }
    }

    /// The referenced row's key of a `lookup` value.
    pub fn lookup_id(&self) -> Option<&str> {
        match self {
            Value::Lookup { id, .. } => Some(id),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Text(text)
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Self {
        Value::Boolean(flag)
    }
}

impl From<i64> for Value {
    fn from(number: i64) -> Self {
        Value::Integer(number)
    }
}

impl From<f64> for Value {
    fn from(number: f64) -> Self {
        Value::Decimal(number)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

impl RecordBatch {
    /// The index of the column named `name`, if the batch carries it.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column == name)
    }
}

impl Row {
    /// A created or updated row with these values.
    pub fn upsert(key: &str, values: Vec<Value>) -> Row {
        Row {
            key: key.to_owned(),
            op: Operation::Upsert,
            values,
            modified_at: None,
        }
    }

    /// The value at `column` (from [`RecordBatch::column`]); `null` when the batch lacks the
    /// column or the row is short.
    pub fn get(&self, column: Option<usize>) -> &Value {
        column
            .and_then(|index| self.values.get(index))
            .unwrap_or(&NULL)
    }
}

impl Target {
    /// A Campaign resource keyed by `key_field`, e.g. `("profile", "externalId")`.
    pub fn campaign(table: &str, key_field: &str) -> Target {
        Target {
            system: System::Campaign,
            table: table.to_owned(),
            key_field: key_field.to_owned(),
        }
    }

    /// A Dataverse entity set keyed by `key_field`, e.g. `("contacts", "contactid")`.
    pub fn dynamics(table: &str, key_field: &str) -> Target {
        Target {
            system: System::Dynamics,
            table: table.to_owned(),
            key_field: key_field.to_owned(),
        }
    }
}

impl OutputRecord {
    /// An upsert of `key` into the target with index `target`, with no fields yet.
    pub fn upsert(target: u32, key: &str) -> OutputRecord {
        OutputRecord::new(target, key, Operation::Upsert)
    }

    /// An update-only write (never creates the record), e.g. for opt-out flags.
    pub fn update(target: u32, key: &str) -> OutputRecord {
        OutputRecord::new(target, key, Operation::Update)
    }

    /// A delete of `key` in the target with index `target`.
    pub fn delete(target: u32, key: &str) -> OutputRecord {
        OutputRecord::new(target, key, Operation::Delete)
    }

    fn new(target: u32, key: &str, op: Operation) -> OutputRecord {
        OutputRecord {
            target,
            key: key.to_owned(),
            op,
            fields: Vec::new(),
        }
    }

    /// Adds a field: a destination column index (from `MappedBatchBuilder::column`) and its
    /// value.
    pub fn field(mut self, column: u32, value: impl Into<Value>) -> OutputRecord {
        self.fields.push((column, value.into()));
        self
    }
}

impl Outcome {
    /// Writes one record.
    pub fn write(record: OutputRecord) -> Outcome {
        Outcome::Write(vec![record])
    }

    /// Writes nothing on purpose, e.g. a change to fields the mapping ignores.
    pub fn nothing() -> Outcome {
        Outcome::Write(Vec::new())
    }

    /// Deliberately not propagated; the reason is logged and counted, not dead-lettered.
    pub fn skip(reason: impl Into<String>) -> Outcome {
        Outcome::Skip(reason.into())
    }

    /// Cannot be mapped: the host dead-letters the input with this reason.
    pub fn reject(reason: impl Into<String>) -> Outcome {
        Outcome::Reject(reason.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_get_reads_null_for_a_column_the_batch_lacks() {
        let batch = RecordBatch {
            table: "contact".into(),
            columns: vec!["firstname".into()],
            rows: vec![Row::upsert("c1", vec!["Ada".into()])],
        };
        let row = &batch.rows[0];
        assert_eq!(row.get(batch.column("firstname")).as_text(), Some("Ada"));
        assert!(row.get(batch.column("lastname")).is_null());
    }

    #[test]
    fn accessors_refuse_values_of_another_kind() {
        assert_eq!(Value::Integer(3).as_text(), None);
        assert_eq!(Value::Text("x".into()).as_bool(), None);
        assert_eq!(Value::Integer(3).as_decimal(), Some(3.0));
        let picklist = Value::Picklist {
            value: 2,
            label: Some("Gold".into()),
        };
        assert_eq!(picklist.as_integer(), Some(2));
        assert_eq!(picklist.picklist_label(), Some("Gold"));
    }

    #[test]
    fn output_record_builder_collects_fields_in_order() {
        let record = OutputRecord::upsert(0, "c1")
            .field(1, "a@example.com")
            .field(0, None::<bool>);
        assert_eq!(record.op, Operation::Upsert);
        assert_eq!(
            record.fields,
            vec![(1, Value::Text("a@example.com".into())), (0, Value::Null)]
        );
        assert_eq!(Outcome::write(record.clone()), Outcome::Write(vec![record]));
    }
}
