//! `{name}`: copies the mapping's fields (`fields` in its `[[ingress.mappings]]` entry) from
//! Dynamics 365 rows onto Campaign records (a record-mapper plugin). Rows without the column
//! named by its own setting `required` are skipped; deletes follow `apply_deletes`.

use conduit_plugin::{
    MappedBatch, MappedBatchBuilder, Operation, Outcome, OutputRecord, Phase, RecordBatch,
    RecordMapper, Target, settings,
};

/// The host's keys this plugin reads from its mapping entry (others are ignored).
#[derive(serde::Deserialize)]
struct Mapping {
    /// The Campaign resource, e.g. `profile`.
    destination: String,
    /// The key pair; `key.destination` is the Campaign field holding the source key.
    key: KeyPair,
    /// The mapped fields: a batch carries exactly these source columns (plus the key).
    fields: Vec<Field>,
    /// Whether a Dynamics 365 delete deletes the Campaign record.
    apply_deletes: bool,
}

#[derive(serde::Deserialize)]
struct KeyPair {
    destination: String,
}

#[derive(serde::Deserialize)]
struct Field {
    source: String,
    destination: String,
}

/// The plugin's own settings: the mapping's `settings` table, parsed strictly.
#[derive(serde::Deserialize)]
struct Own {
    /// A source column a row must have to be written, e.g. `emailaddress1`.
    required: String,
}

/// The configured mapping.
pub struct Plugin {
    target: Target,
    fields: Vec<Field>,
    apply_deletes: bool,
    required: String,
}

impl RecordMapper for Plugin {
    fn configure(json: &str) -> Result<Self, String> {
        let Own { required } = settings::own(json)?;
        let mapping: Mapping = settings::host(json)?;
        Ok(Plugin {
            target: Target::campaign(&mapping.destination, &mapping.key.destination),
            fields: mapping.fields,
            apply_deletes: mapping.apply_deletes,
            required,
        })
    }

    fn map(&self, _phase: Phase, batch: RecordBatch) -> Result<MappedBatch, String> {
        let mut out = MappedBatchBuilder::with_capacity(batch.rows.len());
        let target = out.target(&self.target);
        let required = batch.column(&self.required);
        let fields: Vec<_> = self
            .fields
            .iter()
            .map(|field| (batch.column(&field.source), out.column(&field.destination)))
            .collect();
        for row in &batch.rows {
            out.push(if row.op == Operation::Delete {
                if self.apply_deletes {
                    Outcome::write(OutputRecord::delete(target, &row.key))
                } else {
                    Outcome::skip("deletes are not applied")
                }
            } else if row.get(required).is_null() {
                Outcome::skip(format!("no {}", self.required))
            } else {
                let mut record = OutputRecord::upsert(target, &row.key);
                for &(source, destination) in &fields {
                    record = record.field(destination, row.get(source).clone());
                }
                Outcome::write(record)
            });
        }
        Ok(out.finish())
    }
}

conduit_plugin::export_record_mapper!(Plugin);

#[cfg(test)]
mod tests {
    use conduit_plugin::{Row, Value};

    use super::*;

    const SETTINGS: &str = r#"{"name": "contacts", "destination": "profile",
        "key": {"source": "contactid", "destination": "externalId"},
        "fields": [{"source": "emailaddress1", "destination": "email"}],
        "apply_deletes": true, "settings": {"required": "emailaddress1"}}"#;

    #[test]
    fn rows_with_the_required_column_are_written_and_others_skipped() {
        let plugin = Plugin::configure(SETTINGS).unwrap();
        let batch = RecordBatch {
            table: "contact".into(),
            columns: vec!["emailaddress1".into()],
            rows: vec![
                Row::upsert("c1", vec!["ada@example.com".into()]),
                Row::upsert("c2", vec![Value::Null]),
            ],
        };
        let mapped = plugin.map(Phase::Initial, batch).unwrap();
        assert!(matches!(&mapped.outcomes[0], Outcome::Write(records) if records[0].key == "c1"));
        assert!(matches!(mapped.outcomes[1], Outcome::Skip(_)));
        let typo = SETTINGS.replace("\"required\"", "\"requird\"");
        assert!(Plugin::configure(&typo).err().unwrap().contains("settings.requird"));
    }
}
