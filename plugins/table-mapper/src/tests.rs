//! Native unit tests of the table mapping (the host's `plugin_table_mapper` tests run the same
//! rules through the Wasm component).

use super::*;

fn contacts(extra: &str) -> String {
    format!(
        r#"{{"name": "contacts", "source": "contact", "destination": "profile",
            "key": {{"source": "contactid", "destination": "externalId"}},
            "fields": [
                {{"source": "firstname", "destination": "firstName"}},
                {{"source": "gendercode", "destination": "gender", "apply_updates": false}}
            ]{extra}}}"#
    )
}

fn batch(rows: Vec<Row>) -> RecordBatch {
    RecordBatch {
        table: "contact".into(),
        columns: vec!["firstname".into(), "gendercode".into(), "statecode".into()],
        rows,
    }
}

fn upsert(key: &str, first: &str, gender: i64, state: i64) -> Row {
    Row {
        key: key.into(),
        op: Operation::Upsert,
        values: vec![
            Value::Text(first.into()),
            Value::Picklist {
                value: gender,
                label: Some(if gender == 1 { "Male" } else { "Female" }.into()),
            },
            Value::Integer(state),
        ],
        modified_at: None,
    }
}

#[test]
fn maps_fields_with_picklist_labels_to_the_campaign_target() {
    let mapper = TableMapper::configure(&contacts("")).unwrap();
    let mapped = mapper
        .map(Phase::Initial, batch(vec![upsert("c1", "Ada", 2, 0)]))
        .unwrap();
    assert_eq!(mapped.targets[0].table, "profile");
    assert_eq!(mapped.targets[0].key_field, "externalId");
    assert_eq!(mapped.columns, vec!["firstName", "gender"]);
    let Outcome::Write(records) = &mapped.outcomes[0] else {
        panic!("{:?}", mapped.outcomes[0])
    };
    assert_eq!(records[0].key, "c1");
    assert_eq!(
        records[0].fields,
        vec![
            (0, Value::Text("Ada".into())),
            (1, Value::Text("Female".into()))
        ]
    );
}

#[test]
fn incremental_phase_omits_fields_without_apply_updates() {
    let mapper = TableMapper::configure(&contacts("")).unwrap();
    let mapped = mapper
        .map(Phase::Incremental, batch(vec![upsert("c1", "Ada", 2, 0)]))
        .unwrap();
    let Outcome::Write(records) = &mapped.outcomes[0] else {
        panic!()
    };
    assert_eq!(records[0].fields, vec![(0, Value::Text("Ada".into()))]);
}

#[test]
fn or_filter_names_every_rule_when_a_row_is_filtered_out() {
    let mapper = TableMapper::configure(&contacts(
        r#", "filters": {"combine": "or", "rules": [
            {"field": "statecode", "op": "eq", "value": 0},
            {"field": "firstname", "op": "startswith", "value": "z"}]}"#,
    ))
    .unwrap();
    let mapped = mapper
        .map(
            Phase::Initial,
            batch(vec![upsert("c1", "Ada", 1, 1), upsert("c2", "Zoe", 1, 1)]),
        )
        .unwrap();
    assert_eq!(
        mapped.outcomes[0],
        Outcome::Skip("filtered out by statecode eq 0 or firstname startswith z".into())
    );
    assert!(matches!(mapped.outcomes[1], Outcome::Write(_)));
}

#[test]
fn a_batch_of_another_table_fails_as_a_whole() {
    let mapper = TableMapper::configure(&contacts("")).unwrap();
    let mut other = batch(vec![]);
    other.table = "account".into();
    let error = mapper.map(Phase::Initial, other).unwrap_err();
    assert!(error.contains("`account`"), "{error}");
}
