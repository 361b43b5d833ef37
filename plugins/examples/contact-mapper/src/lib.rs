//! Example plugin: maps Dynamics 365 contacts to Campaign profiles (name and e-mail), the
//! mapping the JavaScript and Python examples implement too. Rows without an e-mail address
//! are skipped; rows with a malformed one are rejected (dead-lettered).

use conduit_plugin::{
    MappedBatch, MappedBatchBuilder, Outcome, OutputRecord, Phase, RecordBatch, RecordMapper,
    Target, settings,
};

/// The host's keys this plugin reads (the mapping's own `destination`); the others are
/// ignored, and its own `settings` table must be empty.
#[derive(serde::Deserialize)]
struct Mapping {
    /// The Campaign resource to write, e.g. `profile`.
    destination: String,
}

/// The configured mapping.
pub struct ContactMapper {
    target: Target,
}

impl RecordMapper for ContactMapper {
    fn configure(json: &str) -> Result<Self, String> {
        settings::own::<settings::NoSettings>(json)?;
        let Mapping { destination } = settings::host(json)?;
        Ok(ContactMapper {
            target: Target::campaign(&destination, "externalId"),
        })
    }

    fn map(&self, _phase: Phase, batch: RecordBatch) -> Result<MappedBatch, String> {
        let mut out = MappedBatchBuilder::with_capacity(batch.rows.len());
        let target = out.target(&self.target);
        let [first, last, email] =
            ["firstname", "lastname", "emailaddress1"].map(|c| batch.column(c));
        let [first_out, last_out, email_out] =
            ["firstName", "lastName", "email"].map(|c| out.column(c));
        for row in &batch.rows {
            out.push(match row.get(email).as_text() {
                None => Outcome::skip("no emailaddress1"),
                Some(address) if !address.contains('@') => Outcome::reject(format!(
                    "emailaddress1 `{address}` is not an e-mail address"
                )),
                Some(address) => Outcome::write(
                    OutputRecord::upsert(target, &row.key)
                        .field(first_out, row.get(first).as_text())
                        .field(last_out, row.get(last).as_text())
                        .field(email_out, address.to_lowercase()),
                ),
            });
        }
        Ok(out.finish())
    }
}

conduit_plugin::export_record_mapper!(ContactMapper);

#[cfg(test)]
mod tests {
    use conduit_plugin::{Row, Value};

    use super::*;

    #[test]
    fn contacts_without_email_are_skipped_and_bad_ones_rejected() {
        let mapper = ContactMapper::configure(r#"{"destination": "profile"}"#).unwrap();
        let batch = RecordBatch {
            table: "contact".into(),
            columns: vec!["firstname".into(), "emailaddress1".into()],
            rows: vec![
                Row::upsert("c1", vec!["Ada".into(), "Ada@Example.com".into()]),
                Row::upsert("c2", vec!["Bob".into(), Value::Null]),
                Row::upsert("c3", vec!["Cy".into(), "nope".into()]),
            ],
        };
        let mapped = mapper.map(Phase::Initial, batch).unwrap();
        assert_eq!(mapped.columns, ["firstName", "lastName", "email"]);
        let Outcome::Write(records) = &mapped.outcomes[0] else {
            panic!("{:?}", mapped.outcomes[0])
        };
        assert_eq!(records[0].fields[0], (0, Value::Text("Ada".into())));
        assert_eq!(records[0].fields[1], (1, Value::Null));
        assert_eq!(
            records[0].fields[2],
            (2, Value::Text("ada@example.com".into()))
        );
        assert!(matches!(mapped.outcomes[1], Outcome::Skip(_)));
        assert!(matches!(mapped.outcomes[2], Outcome::Reject(_)));
    }

    #[test]
    fn host_keys_are_ignored_and_unknown_own_settings_refused_by_name() {
        let mapping = r#"{"destination": "profile", "apply_deletes": true, "settings": {}}"#;
        assert!(ContactMapper::configure(mapping).is_ok());
        let error = ContactMapper::configure(r#"{"destination": "profile", "settings": {"x": 1}}"#)
            .err()
            .unwrap();
        assert!(error.contains("`settings.x`"), "{error}");
    }
}
