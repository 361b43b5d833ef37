//! Dataverse rows into model [`Row`]s: which of a row's fields are read ([`RowPlan`], made
//! once per page from the table's metadata and the requested columns) and how each is
//! converted by its attribute type.
//!
//! A row's fields come from either of two places ([`RowFields`]): a parsed JSON object (rows
//! re-read by key) or the slots the single-pass page reader (`page.rs`) fills while it parses
//! a change-tracking page. Both are converted by the same code here, so a page and a re-read
//! row can never disagree about what a value means.

use rustc_hash::FxHashMap;
use serde_json::{Map, Value as Json};

use super::metadata::{AttributeMeta, TableMeta};
use crate::ConnectorError;
use conduit_model::{Operation, Row, Value};

const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";
const LOOKUP_TABLE: &str = "@Microsoft.Dynamics.CRM.lookuplogicalname";

/// One field name a row is read for, and its slot in the page reader's row.
#[derive(Debug)]
pub(super) struct Field {
    name: String,
    slot: usize,
    /// True when this field is the only one of the plan's text readers of its slot, so the
    /// page reader may move the text out of the slot instead of copying it.
    sole_reader: bool,
}

/// One requested column and the fields it is read from.
pub(super) struct Column<'a> {
    /// The attribute's metadata.
    attribute: &'a AttributeMeta,
    /// The key of the value in entity bodies (`_x_value` for lookups).
    value: Field,
    /// The formatted-value annotation (picklists, states, statuses).
    label: Option<Field>,
    /// The lookup's table annotation (lookups).
    lookup_table: Option<Field>,
}

impl Column<'_> {
    /// The key of the column's value in entity bodies.
    pub(super) fn wire_name(&self) -> &str {
        &self.value.name
    }
}

/// What to read from each row of one table for some columns: every field name that matters,
/// numbered, so the page reader keeps only those and skips the rest unparsed.
pub(super) struct RowPlan<'a> {
    table: &'a TableMeta,
    names: &'a [String],
    columns: Vec<Column<'a>>,
    context: Field,
    reason: Field,
    id: Field,
    primary_key: Field,
    modified_on: Field,
    /// Field name to slot. Fx hashing: the page reader looks up every field name of every
    /// row here, and nothing a page sends is ever inserted, so a cheap hash is safe.
    slots: FxHashMap<String, usize>,
}

impl<'a> RowPlan<'a> {
    /// The plan for `names` of `table`; a column the table does not have is refused, naming it.
    pub(super) fn new(table: &'a TableMeta, names: &'a [String]) -> Result<Self, ConnectorError> {
        let mut slots = FxHashMap::default();
        let mut field = |name: String| {
            let next = slots.len();
            let slot = *slots.entry(name.clone()).or_insert(next);
            Field {
                name,
                slot,
                sole_reader: false,
            }
        };
        let context = field("@odata.context".to_string());
        let reason = field("reason".to_string());
        let id = field("id".to_string());
        let primary_key = field(table.primary_id.clone());
        let modified_on = field("modifiedon".to_string());
        let mut columns = Vec::with_capacity(names.len());
        for name in names {
            let attribute = table
                .column(name)
                .ok_or_else(|| ConnectorError::Permanent {
                    message: format!(
                        "the table '{}' has no column '{name}' (check the mapping's source fields)",
                        table.logical_name
                    ),
                })?;
            let wire_name = attribute.wire_name();
            let label = matches!(
                attribute.attribute_type.as_str(),
                "Picklist" | "State" | "Status"
            )
            .then(|| field(format!("{wire_name}{FORMATTED}")));
            let lookup_table = attribute
                .is_lookup()
                .then(|| field(format!("{wire_name}{LOOKUP_TABLE}")));
            columns.push(Column {
                attribute,
                value: field(wire_name),
                label,
                lookup_table,
            });
        }
        let mut plan = RowPlan {
            table,
            names,
            columns,
            context,
            reason,
            id,
            primary_key,
            modified_on,
            slots,
        };
        let mut readers = vec![0_usize; plan.slots.len()];
        for field in plan.text_fields() {
            readers[field.slot] += 1;
        }
        for field in plan.text_fields() {
            field.sole_reader = readers[field.slot] == 1;
        }
        Ok(plan)
    }

    /// The fields an upsert's conversion reads text from (after the delete markers, which are
    /// only ever looked at): the key, every column's value and annotations, the change time.
    fn text_fields(&mut self) -> impl Iterator<Item = &mut Field> {
        let columns = self.columns.iter_mut().flat_map(|column| {
            std::iter::once(&mut column.value)
                .chain(column.label.as_mut())
                .chain(column.lookup_table.as_mut())
        });
        [&mut self.primary_key, &mut self.modified_on]
            .into_iter()
            .chain(columns)
    }

    /// The requested columns, in order.
    pub(super) fn columns(&self) -> &[Column<'a>] {
        &self.columns
    }

    /// How many distinct field names a row is read for.
    pub(super) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The slot of a field name, if rows are read for it.
    pub(super) fn slot_of(&self, name: &str) -> Option<usize> {
        self.slots.get(name).copied()
    }

    /// Converts one row; `url` names the response in errors.
    pub(super) fn convert(
        &self,
        fields: &mut (impl RowFields + ?Sized),
        url: &str,
    ) -> Result<Row, ConnectorError> {
        if self.is_deleted_entity(fields) {
            let key = fields
                .field(&self.id)
                .and_then(Json::as_str)
                .ok_or_else(|| ConnectorError::Permanent {
                    message: format!("a $deletedEntity row in the response of {url} has no 'id'"),
                })?;
            return Ok(Row {
                key: key.to_string(),
                op: Operation::Delete,
                values: vec![Value::Null; self.columns.len()],
                modified_at: None,
            });
        }
        let key = fields
            .text(&self.primary_key)
            .ok_or_else(|| ConnectorError::Permanent {
                message: format!(
                    "a row in the response of {url} has no primary key '{}'",
                    self.table.primary_id
                ),
            })?;
        let mut values = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            values.push(convert_value(fields, column, url)?);
        }
        let modified_at = fields.text(&self.modified_on);
        Ok(Row {
            key,
            op: Operation::Upsert,
            values,
            modified_at,
        })
    }

    /// Converts parsed JSON rows into a batch, upserts first.
    pub(super) fn convert_all(
        &self,
        entries: Vec<Map<String, Json>>,
        url: &str,
    ) -> Result<conduit_model::RecordBatch, ConnectorError> {
        let mut rows = PageRows::with_capacity(entries.len());
        for mut entry in entries {
            rows.push(self.convert(&mut entry, url)?);
        }
        Ok(rows.into_batch(self))
    }

    fn is_deleted_entity(&self, fields: &(impl RowFields + ?Sized)) -> bool {
        fields
            .field(&self.context)
            .and_then(Json::as_str)
            .is_some_and(|context| context.ends_with("$deletedEntity"))
            || (fields.field(&self.reason).and_then(Json::as_str) == Some("deleted")
                && fields.field(&self.id).is_some())
    }
}

/// The converted rows of one page, kept in the order the service lists them: upserts, then
/// deletes (even if a page mixes them).
pub(super) struct PageRows {
    upserts: Vec<Row>,
    deletes: Vec<Row>,
}

impl PageRows {
    /// Room for `rows` upserts.
    pub(super) fn with_capacity(rows: usize) -> Self {
        PageRows {
            upserts: Vec::with_capacity(rows),
            deletes: Vec::new(),
        }
    }

    /// Adds one converted row.
    pub(super) fn push(&mut self, row: Row) {
        if row.op == Operation::Delete {
            self.deletes.push(row);
        } else {
            self.upserts.push(row);
        }
    }

    /// The batch of `plan`'s table and columns.
    pub(super) fn into_batch(mut self, plan: &RowPlan<'_>) -> conduit_model::RecordBatch {
        self.upserts.append(&mut self.deletes);
        conduit_model::RecordBatch {
            table: plan.table.logical_name.clone(),
            columns: plan.names.to_vec(),
            rows: self.upserts,
        }
    }
}

/// Where one row's fields are read from.
pub(super) trait RowFields {
    /// The field's JSON value, if the row has the field (`null` included).
    fn field(&self, field: &Field) -> Option<&Json>;

    /// The field's text, if it is a string.
    fn text(&mut self, field: &Field) -> Option<String> {
        self.field(field).and_then(Json::as_str).map(str::to_string)
    }
}

/// A row parsed as a JSON object.
impl RowFields for Map<String, Json> {
    fn field(&self, field: &Field) -> Option<&Json> {
        self.get(&field.name)
    }
}

/// A row as the page reader keeps it: the value of each planned field, by slot.
impl RowFields for [Option<Json>] {
    fn field(&self, field: &Field) -> Option<&Json> {
        self.get(field.slot).and_then(Option::as_ref)
    }

    /// Moves the text out when nothing else reads the slot (the slot keeps an empty string
    /// until the next row): a page's strings are not copied again.
    fn text(&mut self, field: &Field) -> Option<String> {
        match self.get_mut(field.slot) {
            Some(Some(Json::String(text))) if field.sole_reader => Some(std::mem::take(text)),
            Some(Some(Json::String(text))) => Some(text.clone()),
            _ => None,
        }
    }
}

fn convert_value(
    fields: &mut (impl RowFields + ?Sized),
    column: &Column<'_>,
    url: &str,
) -> Result<Value, ConnectorError> {
    let raw = fields.field(&column.value).unwrap_or(&Json::Null);
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let attribute = column.attribute;
    let mismatch = |raw: &Json| ConnectorError::Permanent {
        message: format!(
            "the column '{}' is declared {} but the response of {url} holds {raw}",
            attribute.logical_name, attribute.attribute_type
        ),
    };
    let kind = attribute.attribute_type.as_str();
    // Numbers and booleans are read from the value; text is taken from the row afterwards
    // (moved, not copied, where the plan allows), once the value is known to be a string.
    let value = match kind {
        "Picklist" | "State" | "Status" => {
            let value = raw.as_i64().ok_or_else(|| mismatch(raw))?;
            let label = column.label.as_ref().and_then(|field| fields.text(field));
            return Ok(Value::Picklist { value, label });
        }
        "Boolean" => Value::Boolean(raw.as_bool().ok_or_else(|| mismatch(raw))?),
        "Money" | "Decimal" | "Double" => {
            Value::Decimal(raw.as_f64().ok_or_else(|| mismatch(raw))?)
        }
        "Integer" | "BigInt" => Value::Integer(raw.as_i64().ok_or_else(|| mismatch(raw))?),
        // Other types travel as text, as the Adobe integration syncs them "as is".
        _ if !raw.is_string() => match kind {
            "Uniqueidentifier" | "Lookup" | "Customer" | "Owner" | "DateTime" | "String"
            | "Memo" => return Err(mismatch(raw)),
            _ => Value::Text(raw.to_string()),
        },
        _ => {
            let text = fields.text(&column.value).unwrap_or_default();
            match kind {
                "Uniqueidentifier" => Value::Guid(text),
                "Lookup" | "Customer" | "Owner" => {
                    let table = column
                        .lookup_table
                        .as_ref()
                        .and_then(|field| fields.text(field))
                        .or_else(|| attribute.targets.first().cloned())
                        .unwrap_or_default();
                    Value::Lookup { table, id: text }
                }
                "DateTime" => Value::Datetime(text),
                _ => Value::Text(text),
            }
        }
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamics365::page::read_change_page;
    use conduit_model::RecordBatch;
    use serde_json::json;
    use std::collections::HashMap;

    fn meta() -> TableMeta {
        let attribute = |name: &str, kind: &str, targets: &[&str]| {
            (
                name.to_string(),
                AttributeMeta {
                    logical_name: name.to_string(),
                    attribute_type: kind.to_string(),
                    max_length: None,
                    targets: targets
                        .iter()
                        .map(std::string::ToString::to_string)
                        .collect(),
                    date_only: false,
                },
            )
        };
        TableMeta {
            logical_name: "new_vehicle".to_string(),
            entity_set: "new_vehicles".to_string(),
            primary_id: "new_vehicleid".to_string(),
            change_tracking: true,
            attributes: HashMap::from([
                attribute("new_vehicleid", "Uniqueidentifier", &[]),
                attribute("new_year", "Integer", &[]),
                attribute("statecode", "State", &[]),
                attribute("new_contactid", "Lookup", &["contact"]),
                attribute("modifiedon", "DateTime", &[]),
            ]),
        }
    }

    /// `rows` converted both ways: as parsed objects, and by the page reader from a page body
    /// holding them. The two must agree.
    fn convert_both(
        meta: &TableMeta,
        names: &[String],
        rows: Json,
    ) -> Result<RecordBatch, ConnectorError> {
        let entries: Vec<Map<String, Json>> =
            serde_json::from_value(rows.clone()).expect("a list of objects");
        let parsed = RowPlan::new(meta, names)?.convert_all(entries, "u");
        let body = json!({"value": rows, "@odata.deltaLink": "d"}).to_string();
        let read = read_change_page(meta, names, body.as_bytes(), "u").map(|page| page.batch);
        assert_eq!(
            format!("{parsed:?}"),
            format!("{read:?}"),
            "the page reader and the parsed rows disagree"
        );
        read
    }

    #[test]
    fn rows_convert_by_attribute_type_and_deletes_come_last() {
        let names = vec![
            "new_year".to_string(),
            "statecode".to_string(),
            "new_contactid".to_string(),
        ];
        let rows = json!([
            {"@odata.context": "x/$metadata#new_vehicles/$deletedEntity", "id": "gone", "reason": "deleted"},
            {"new_vehicleid": "v1", "new_year": 2020, "statecode": 1,
             "statecode@OData.Community.Display.V1.FormattedValue": "Inactive",
             "_new_contactid_value": "c1", "modifiedon": "2026-01-01T00:00:00Z",
             "unplanned": {"nested": [1, 2, {"deep": null}]}},
        ]);
        let batch = convert_both(&meta(), &names, rows).expect("convertible");
        assert_eq!(batch.table, "new_vehicle");
        assert_eq!(batch.columns, names);
        assert_eq!(batch.rows.len(), 2);
        assert_eq!(
            batch.rows[0].values,
            vec![
                Value::Integer(2020),
                Value::Picklist {
                    value: 1,
                    label: Some("Inactive".to_string())
                },
                Value::Lookup {
                    table: "contact".to_string(),
                    id: "c1".to_string()
                },
            ]
        );
        assert_eq!(
            batch.rows[0].modified_at.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(batch.rows[1].op, Operation::Delete);
        assert_eq!(batch.rows[1].key, "gone");
    }

    #[test]
    fn a_field_read_for_two_purposes_gives_its_text_to_both() {
        // The key is also a column, the change time too, and one column is asked for twice:
        // the page reader must not move any of these texts out for the first reader.
        let names = vec![
            "new_vehicleid".to_string(),
            "modifiedon".to_string(),
            "new_contactid".to_string(),
            "new_contactid".to_string(),
        ];
        let rows = json!([{
            "new_vehicleid": "v1", "modifiedon": "2026-01-01T00:00:00Z",
            "_new_contactid_value": "c1",
            "_new_contactid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "account",
        }]);
        let batch = convert_both(&meta(), &names, rows).expect("convertible");
        let lookup = Value::Lookup {
            table: "account".to_string(),
            id: "c1".to_string(),
        };
        assert_eq!(batch.rows[0].key, "v1");
        assert_eq!(
            batch.rows[0].values,
            vec![
                Value::Guid("v1".to_string()),
                Value::Datetime("2026-01-01T00:00:00Z".to_string()),
                lookup.clone(),
                lookup,
            ]
        );
        assert_eq!(
            batch.rows[0].modified_at.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
    }

    #[test]
    fn a_field_given_twice_in_a_row_counts_by_its_last_value() {
        let names = vec!["new_year".to_string()];
        let body = br#"{"value":[{"new_vehicleid":"v1","new_year":"twenty","new_year":2021}],"@odata.nextLink":"n"}"#;
        let page = read_change_page(&meta(), &names, body, "u").expect("readable");
        assert_eq!(page.batch.rows[0].values, vec![Value::Integer(2021)]);
        assert!(!page.caught_up);
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_column() {
        let names = vec!["new_year".to_string()];
        let rows = json!([{"new_vehicleid": "v1", "new_year": "twenty"}]);
        let error = convert_both(&meta(), &names, rows).expect_err("mismatch");
        assert!(!error.is_transient(), "{error}");
        assert!(error.to_string().contains("new_year"), "{error}");
    }

    #[test]
    fn a_body_broken_after_a_bad_row_is_refused_as_unreadable() {
        // The conversion of the first row fails, but the page is not even JSON: that is what
        // is reported (a transient glitch, retried), as a parse of the whole body would.
        let names = vec!["new_year".to_string()];
        let body = br#"{"value":[{"new_vehicleid":"v1","new_year":"twenty"},{"new_vehicleid":"#;
        let error = read_change_page(&meta(), &names, body, "u").expect_err("broken");
        assert!(error.is_transient(), "{error}");
        assert!(
            error.to_string().contains("expected a JSON page"),
            "{error}"
        );
    }

    #[test]
    fn unknown_columns_are_refused_before_any_request() {
        let error = RowPlan::new(&meta(), &["nosuch".to_string()])
            .err()
            .expect("unknown");
        assert!(error.to_string().contains("nosuch"));
    }

    /// Found by `a_generated_page_of_n_changes_reads_back_as_n_rows_upserts_first`: without
    /// serde_json's `float_roundtrip` this money value came back one ulp off.
    #[test]
    fn a_decimal_reads_back_as_the_exact_number_sent() {
        let meta = crate::dynamics365::fixtures::contact_table();
        let names = vec!["creditlimit".to_string()];
        let body = br#"{"value":[{"contactid":"a","creditlimit":-58258277.154228084}],"@odata.deltaLink":"d"}"#;
        let page = read_change_page(&meta, &names, body, "u").expect("readable");
        assert_eq!(
            page.batch.rows[0].values,
            vec![Value::Decimal(-58_258_277.154_228_084)]
        );
    }
}
