//! `builtin:table-mapper`: maps the rows of one Dynamics 365 table to records of one Campaign
//! resource (Ingress), following the product's table-mapping rules: key, mapped fields with
//! "apply updates", replacements, filters, deletes and picklist labels.
//!
//! The logic here is plain Rust (tested and benchmarked natively); `guest` is the
//! wit-bindgen glue compiled only for Wasm.

mod filter;
mod settings;

use conduit_plugin::{
    MappedBatch, MappedBatchBuilder, Operation, Outcome, OutputRecord, Phase, RecordBatch, Row,
    System, Target, Value, datetime,
};

use crate::settings::{Combine, Rule, Validated};

#[cfg(target_arch = "wasm32")]
mod guest;

/// A configured table mapping.
#[derive(Debug, Clone)]
pub struct TableMapper {
    validated: Validated,
    target: Target,
}

/// A mapped field resolved against one batch's columns.
struct BoundField<'a> {
    column: Option<usize>,
    destination: u32,
    apply_updates: bool,
    replacements: &'a [(String, String)],
}

impl TableMapper {
    /// Validates the settings JSON; the error names the offending setting.
    pub fn configure(settings_json: &str) -> Result<TableMapper, String> {
        let validated = settings::parse(settings_json)?;
        let target = Target {
            system: System::Campaign,
            table: validated.settings.destination.clone(),
            key_field: validated.settings.key.destination.clone(),
        };
        Ok(TableMapper { validated, target })
    }

    /// Maps one page of source rows: one outcome per row. Fails the whole batch only when it
    /// comes from another table than the mapping's source.
    pub fn map(&self, phase: Phase, batch: RecordBatch) -> Result<MappedBatch, String> {
        let settings = &self.validated.settings;
        if batch.table != settings.source {
            return Err(format!(
                "mapping `{}` reads table `{}` but was given a batch of `{}`",
                settings.name, settings.source, batch.table
            ));
        }
        let position = |name: &str| batch.columns.iter().position(|column| column == name);
        let mut builder = MappedBatchBuilder::with_capacity(batch.rows.len());
        let target = builder.target(&self.target);
        let empty: &[(String, String)] = &[];
        let fields: Vec<BoundField<'_>> = settings
            .fields
            .iter()
            .map(|field| BoundField {
                column: position(&field.source),
                destination: builder.column(&field.destination),
                apply_updates: field.apply_updates,
                replacements: self
                    .validated
                    .replacements
                    .get(&field.source)
                    .map_or(empty, Vec::as_slice),
            })
            .collect();
        let rule_columns: Vec<Option<usize>> = self
            .validated
            .rules
            .iter()
            .map(|rule| position(&rule.field))
            .collect();
        for row in batch.rows {
            let outcome = self.map_row(phase, row, target, &fields, &rule_columns);
            builder.push(outcome);
        }
        Ok(builder.finish())
    }

    fn map_row(
        &self,
        phase: Phase,
        mut row: Row,
        target: u32,
        fields: &[BoundField<'_>],
        rule_columns: &[Option<usize>],
    ) -> Outcome {
        let settings = &self.validated.settings;
        if row.key.is_empty() {
            return Outcome::Reject("the row has an empty key".to_owned());
        }
        let delete = |key: String| {
            Outcome::Write(vec![OutputRecord {
                target,
                key,
                op: Operation::Delete,
                fields: Vec::new(),
            }])
        };
        if row.op == Operation::Delete {
            return if settings.apply_deletes {
                delete(row.key)
            } else {
                Outcome::Skip("source deletes are not applied (apply_deletes = false)".to_owned())
            };
        }
        match self.passes_filters(&row, rule_columns) {
            Ok(None) => {}
            Ok(Some(failed)) => {
                let delete_filtered_out = settings
                    .filters
                    .as_ref()
                    .is_some_and(|filters| filters.delete_filtered_out);
                return if delete_filtered_out {
                    delete(row.key)
                } else {
                    Outcome::Skip(format!("filtered out by {failed}"))
                };
            }
            Err(reason) => return Outcome::Reject(reason),
        }
        let mut written = Vec::with_capacity(fields.len());
        for (field, settings_field) in fields.iter().zip(&settings.fields) {
            if phase == Phase::Incremental && !field.apply_updates {
                continue;
            }
            // A column the batch does not carry is unknown, not empty: leave the field alone.
            let Some(column) = field.column else { continue };
            let Some(slot) = row.values.get_mut(column) else {
                return Outcome::Reject(format!(
                    "the row has {} values for {} columns",
                    row.values.len(),
                    column + 1
                ));
            };
            let value = std::mem::replace(slot, Value::Null);
            match self.convert(value, field.replacements) {
                Ok(value) => written.push((field.destination, value)),
                Err(problem) => {
                    return Outcome::Reject(format!(
                        "field `{}`: {problem}",
                        settings_field.source
                    ));
                }
            }
        }
        Outcome::Write(vec![OutputRecord {
            target,
            key: row.key,
            op: Operation::Upsert,
            fields: written,
        }])
    }

    /// `Ok(None)` when the row passes, `Ok(Some(description))` naming what filtered it out.
    fn passes_filters(
        &self,
        row: &Row,
        rule_columns: &[Option<usize>],
    ) -> Result<Option<String>, String> {
        let rules = &self.validated.rules;
        if rules.is_empty() {
            return Ok(None);
        }
        let combine = self
            .validated
            .settings
            .filters
            .as_ref()
            .map_or(Combine::And, |filters| filters.combine);
        let value_of = |column: Option<usize>| {
            column
                .and_then(|index| row.values.get(index))
                .unwrap_or(&Value::Null)
        };
        let check = |(rule, column): (&Rule, &Option<usize>)| -> Result<bool, String> {
            filter::matches(rule, value_of(*column))
        };
        match combine {
            Combine::And => {
                for pair in rules.iter().zip(rule_columns) {
                    if !check(pair)? {
                        return Ok(Some(pair.0.description.clone()));
                    }
                }
                Ok(None)
            }
            Combine::Or => {
                for pair in rules.iter().zip(rule_columns) {
                    if check(pair)? {
                        return Ok(None);
                    }
                }
                let all: Vec<&str> = rules.iter().map(|r| r.description.as_str()).collect();
                Ok(Some(all.join(" or ")))
            }
        }
    }

    /// The value Campaign receives: replacements first (matching the source's text form),
    /// then picklists as labels or technical values; Campaign stores scalars only, so ids of
    /// guids and lookups travel as text.
    fn convert(&self, value: Value, replacements: &[(String, String)]) -> Result<Value, String> {
        if !replacements.is_empty() {
            let replaced = replacements.iter().find(|(from, _)| match &value {
                Value::Picklist { value, label } => {
                    filter::is_number(*value, from) || label.as_deref() == Some(from.as_str())
                }
                Value::Null => false,
                other => filter::text_form_is(other, from),
            });
            if let Some((_, to)) = replaced {
                return Ok(Value::Text(to.clone()));
            }
        }
        Ok(match value {
            Value::Decimal(number) if !number.is_finite() => {
                return Err(format!("{number} is not a finite number"));
            }
            Value::Datetime(text) => {
                datetime::parse(&text).map_err(|error| error.to_string())?;
                Value::Datetime(text)
            }
            Value::Picklist { value, label } => {
                match (self.validated.settings.technical_picklist_values, label) {
                    (false, Some(label)) => Value::Text(label),
                    _ => Value::Integer(value),
                }
            }
            Value::Guid(id) | Value::Lookup { id, .. } => Value::Text(id),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests;
