//! The reference plugins' rules, run through the real Wasm components via `PluginHost`:
//! table-mapper (Ingress), email-events (Egress) and opt-out (Opt-in/out).

use std::sync::OnceLock;

use conduit_model::{
    BounceDetail, ContactOptOut, EmailEvent, EmailEventKind, Operation, OptOutValue, Outcome,
    Phase, RecordBatch, Row, System, Value, WriteRecord,
};
use conduit_plugin_host::{
    CALLS_PER_INSTANCE, EventMapper, Limits, LoadedPlugin, OptOutResolver, PluginError, PluginHost,
    PluginRef, RecordMapper, World,
};
use serde_json::{Value as Json, json};

fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| PluginHost::new(None).unwrap())
}

fn builtin(name: &str, world: World) -> LoadedPlugin {
    static LOADED: OnceLock<std::sync::Mutex<Vec<(String, LoadedPlugin)>>> = OnceLock::new();
    let loaded = LOADED.get_or_init(Default::default);
    let mut loaded = loaded.lock().unwrap();
    if let Some((_, plugin)) = loaded.iter().find(|(n, _)| n == name) {
        return plugin.clone();
    }
    let plugin = host()
        .load(&PluginRef::Builtin(name.to_owned()), world)
        .unwrap();
    loaded.push((name.to_owned(), plugin.clone()));
    plugin
}

// ---------------------------------------------------------------- table-mapper

fn contacts_settings() -> Json {
    json!({
        "name": "contacts", "source": "contact", "destination": "profile",
        "key": {"source": "contactid", "destination": "externalId"},
        "fields": [
            {"source": "firstname", "destination": "firstName"},
            {"source": "emailaddress1", "destination": "email"},
            {"source": "gendercode", "destination": "gender"},
            {"source": "birthdate", "destination": "birthDate", "apply_updates": false},
            {"source": "creditlimit", "destination": "creditLimit"},
            {"source": "donotemail", "destination": "noEmail"}
        ]
    })
}

fn with(mut settings: Json, key: &str, value: Json) -> Json {
    settings[key] = value;
    settings
}

fn table_mapper(settings: &Json) -> RecordMapper {
    builtin("table-mapper", World::RecordMapper)
        .record_mapper(settings, Limits::default())
        .unwrap()
}

const COLUMNS: [&str; 8] = [
    "firstname",
    "emailaddress1",
    "gendercode",
    "birthdate",
    "creditlimit",
    "donotemail",
    "statecode",
    "modifiedon",
];

fn contact_row(key: &str) -> Row {
    Row {
        key: key.to_owned(),
        op: Operation::Upsert,
        values: vec![
            Value::Text("Ada".into()),
            Value::Text("ada@example.com".into()),
            Value::Picklist {
                value: 2,
                label: Some("Female".into()),
            },
            Value::Datetime("1815-12-10".into()),
            Value::Decimal(1500.5),
            Value::Boolean(false),
            Value::Picklist {
                value: 0,
                label: Some("Active".into()),
            },
            Value::Datetime("2026-11-01T10:00:00Z".into()),
        ],
        modified_at: Some("2026-11-01T10:00:00Z".into()),
    }
}

fn set(mut row: Row, column: &str, value: Value) -> Row {
    let index = COLUMNS.iter().position(|c| *c == column).unwrap();
    row.values[index] = value;
    row
}

fn contacts(rows: Vec<Row>) -> RecordBatch {
    RecordBatch {
        table: "contact".into(),
        columns: COLUMNS
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
        rows,
    }
}

fn only_record(outcome: &Outcome) -> &WriteRecord {
    match outcome {
        Outcome::Write { records } if records.len() == 1 => &records[0],
        other => panic!("expected one write, got {other:?}"),
    }
}

fn field<'a>(record: &'a WriteRecord, name: &str) -> Option<&'a Value> {
    record
        .fields
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value)
}

fn map_one(settings: &Json, phase: Phase, row: Row) -> Outcome {
    let mut mapper = table_mapper(settings);
    let mut outcomes = mapper.map(phase, &contacts(vec![row])).unwrap();
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0)
}

#[test]
fn table_mapper_writes_mapped_fields_to_the_campaign_target_by_source_key() {
    let outcome = map_one(&contacts_settings(), Phase::Initial, contact_row("c-1"));
    let record = only_record(&outcome);
    assert_eq!(record.target.system, System::Campaign);
    assert_eq!(record.target.table, "profile");
    assert_eq!(record.target.key_field, "externalId");
    assert_eq!(record.key, "c-1");
    assert_eq!(record.op, Operation::Upsert);
    assert_eq!(field(record, "firstName"), Some(&Value::Text("Ada".into())));
    assert_eq!(field(record, "gender"), Some(&Value::Text("Female".into())));
    assert_eq!(field(record, "creditLimit"), Some(&Value::Decimal(1500.5)));
    assert_eq!(field(record, "noEmail"), Some(&Value::Boolean(false)));
    assert_eq!(
        field(record, "birthDate"),
        Some(&Value::Datetime("1815-12-10".into()))
    );
    // Only mapped fields travel: statecode is read (for filters) but not written.
    assert_eq!(record.fields.len(), 6);
}

#[test]
fn apply_updates_false_fields_are_omitted_in_the_incremental_phase_only() {
    for (phase, expect_birthdate) in [
        (Phase::Initial, true),
        (Phase::Incremental, false),
        (Phase::Replay, true),
    ] {
        let outcome = map_one(&contacts_settings(), phase, contact_row("c-1"));
        let record = only_record(&outcome);
        assert_eq!(
            field(record, "birthDate").is_some(),
            expect_birthdate,
            "{phase:?}"
        );
        assert!(field(record, "firstName").is_some(), "{phase:?}");
    }
}

#[test]
fn picklists_are_written_as_labels_or_technical_values() {
    let female = Value::Picklist {
        value: 2,
        label: Some("Female".into()),
    };
    let unlabelled = Value::Picklist {
        value: 7,
        label: None,
    };
    let cases = [
        (false, female.clone(), Value::Text("Female".into())),
        (true, female, Value::Integer(2)),
        (false, unlabelled.clone(), Value::Integer(7)),
        (true, unlabelled, Value::Integer(7)),
    ];
    for (technical, source, expected) in cases {
        let settings = with(
            contacts_settings(),
            "technical_picklist_values",
            json!(technical),
        );
        let row = set(contact_row("c-1"), "gendercode", source.clone());
        let outcome = map_one(&settings, Phase::Initial, row);
        assert_eq!(
            field(only_record(&outcome), "gender"),
            Some(&expected),
            "technical={technical} source={source:?}"
        );
    }
}

#[test]
fn replacements_match_the_exact_text_form_of_the_source_value() {
    let settings = with(
        contacts_settings(),
        "replacements",
        json!([
            {"field": "gendercode", "from": "2", "to": "F"},
            {"field": "gendercode", "from": "Male", "to": "M"},
            {"field": "donotemail", "from": "true", "to": "yes"},
            {"field": "creditlimit", "from": "1500.5", "to": "gold"},
            {"field": "firstname", "from": "Ada", "to": "Countess"}
        ]),
    );
    let male = Value::Picklist {
        value: 1,
        label: Some("Male".into()),
    };
    let cases: Vec<(&str, Value, &str, Value)> = vec![
        (
            "gendercode",
            Value::Picklist {
                value: 2,
                label: Some("Female".into()),
            },
            "gender",
            Value::Text("F".into()),
        ),
        ("gendercode", male, "gender", Value::Text("M".into())),
        (
            "gendercode",
            Value::Picklist {
                value: 3,
                label: Some("Other".into()),
            },
            "gender",
            Value::Text("Other".into()),
        ),
        (
            "donotemail",
            Value::Boolean(true),
            "noEmail",
            Value::Text("yes".into()),
        ),
        (
            "donotemail",
            Value::Boolean(false),
            "noEmail",
            Value::Boolean(false),
        ),
        (
            "creditlimit",
            Value::Decimal(1500.5),
            "creditLimit",
            Value::Text("gold".into()),
        ),
        (
            "firstname",
            Value::Text("Ada".into()),
            "firstName",
            Value::Text("Countess".into()),
        ),
        // Exact match: case and surrounding text matter.
        (
            "firstname",
            Value::Text("ada".into()),
            "firstName",
            Value::Text("ada".into()),
        ),
        (
            "firstname",
            Value::Text("Ada L".into()),
            "firstName",
            Value::Text("Ada L".into()),
        ),
    ];
    for (column, source, destination, expected) in cases {
        let row = set(contact_row("c-1"), column, source.clone());
        let outcome = map_one(&settings, Phase::Initial, row);
        assert_eq!(
            field(only_record(&outcome), destination),
            Some(&expected),
            "{column} = {source:?}"
        );
    }
}

#[test]
fn filters_compare_numbers_datetimes_and_text_like_dataverse() {
    let ada = contact_row("c-1");
    // (rule, passes for Ada?)
    let cases = [
        (json!({"field": "statecode", "op": "eq", "value": 0}), true),
        (
            json!({"field": "statecode", "op": "eq", "value": "Active"}),
            true,
        ),
        (
            json!({"field": "statecode", "op": "ne", "value": "0"}),
            false,
        ),
        (
            json!({"field": "creditlimit", "op": "gt", "value": 1000}),
            true,
        ),
        (
            json!({"field": "creditlimit", "op": "gt", "value": "1500.5"}),
            false,
        ),
        (
            json!({"field": "creditlimit", "op": "ge", "value": "1500.5"}),
            true,
        ),
        // Numbers compare as numbers, not as text ("900" > "1500.5" as text).
        (
            json!({"field": "creditlimit", "op": "lt", "value": 900}),
            false,
        ),
        (
            json!({"field": "creditlimit", "op": "le", "value": 99999}),
            true,
        ),
        // Datetimes compare as instants, whatever the offset.
        (
            json!({"field": "modifiedon", "op": "gt", "value": "2026-11-01T10:30:00+01:00"}),
            true,
        ),
        (
            json!({"field": "modifiedon", "op": "lt", "value": "2026-11-01T09:00:00Z"}),
            false,
        ),
        (
            json!({"field": "modifiedon", "op": "eq", "value": "2026-11-01T11:00:00+01:00"}),
            true,
        ),
        // Text ignores case.
        (
            json!({"field": "emailaddress1", "op": "endswith", "value": "@EXAMPLE.com"}),
            true,
        ),
        (
            json!({"field": "emailaddress1", "op": "startswith", "value": "bob"}),
            false,
        ),
        (
            json!({"field": "emailaddress1", "op": "contains", "value": "A@Ex"}),
            true,
        ),
        (
            json!({"field": "firstname", "op": "eq", "value": "ADA"}),
            true,
        ),
        (
            json!({"field": "donotemail", "op": "eq", "value": false}),
            true,
        ),
        (
            json!({"field": "donotemail", "op": "ne", "value": "false"}),
            false,
        ),
        // Null checks, also on columns the batch does not carry at all.
        (json!({"field": "firstname", "op": "null"}), false),
        (json!({"field": "firstname", "op": "notnull"}), true),
        (json!({"field": "fax", "op": "null"}), true),
        (json!({"field": "fax", "op": "eq", "value": "x"}), false),
    ];
    for (rule, passes) in cases {
        let settings = with(
            contacts_settings(),
            "filters",
            json!({"combine": "and", "rules": [rule.clone()]}),
        );
        let outcome = map_one(&settings, Phase::Initial, ada.clone());
        match (&outcome, passes) {
            (Outcome::Write { .. }, true) => {}
            (Outcome::Skip { reason }, false) => {
                assert!(reason.starts_with("filtered out by "), "{reason}");
                assert!(reason.contains(rule["field"].as_str().unwrap()), "{reason}");
            }
            _ => panic!("rule {rule} gave {outcome:?}"),
        }
    }
}

#[test]
fn filters_combine_with_and_or_or() {
    let rules = json!([
        {"field": "statecode", "op": "eq", "value": 1},
        {"field": "firstname", "op": "eq", "value": "ada"}
    ]);
    let and = with(
        contacts_settings(),
        "filters",
        json!({"combine": "and", "rules": rules.clone()}),
    );
    let or = with(
        contacts_settings(),
        "filters",
        json!({"combine": "or", "rules": rules}),
    );
    assert_eq!(
        map_one(&and, Phase::Initial, contact_row("c-1")),
        Outcome::Skip {
            reason: "filtered out by statecode eq 1".into()
        }
    );
    assert!(matches!(
        map_one(&or, Phase::Initial, contact_row("c-1")),
        Outcome::Write { .. }
    ));
    let bob = set(contact_row("c-2"), "firstname", Value::Text("Bob".into()));
    assert_eq!(
        map_one(&or, Phase::Initial, bob),
        Outcome::Skip {
            reason: "filtered out by statecode eq 1 or firstname eq ada".into()
        }
    );
}

#[test]
fn filtered_out_rows_become_deletes_when_delete_filtered_out() {
    let settings = with(
        contacts_settings(),
        "filters",
        json!({"rules": [{"field": "statecode", "op": "eq", "value": 1}], "delete_filtered_out": true}),
    );
    let outcome = map_one(&settings, Phase::Incremental, contact_row("c-1"));
    let record = only_record(&outcome);
    assert_eq!(record.op, Operation::Delete);
    assert_eq!(record.key, "c-1");
    assert!(record.fields.is_empty());
}

#[test]
fn source_deletes_are_applied_only_when_apply_deletes() {
    let delete = Row {
        key: "c-9".into(),
        op: Operation::Delete,
        values: Vec::new(),
        modified_at: None,
    };
    let applied = map_one(&contacts_settings(), Phase::Incremental, delete.clone());
    assert_eq!(only_record(&applied).op, Operation::Delete);
    assert_eq!(only_record(&applied).key, "c-9");
    let ignored = map_one(
        &with(contacts_settings(), "apply_deletes", json!(false)),
        Phase::Incremental,
        delete,
    );
    assert!(matches!(ignored, Outcome::Skip { .. }), "{ignored:?}");
}

#[test]
fn rows_whose_values_cannot_be_converted_are_rejected_with_the_field_named() {
    let cases = [
        (
            "birthdate",
            Value::Datetime("last tuesday".into()),
            "birthdate",
        ),
        ("creditlimit", Value::Decimal(f64::NAN), "creditlimit"),
    ];
    for (column, value, named) in cases {
        let outcome = map_one(
            &contacts_settings(),
            Phase::Initial,
            set(contact_row("c-1"), column, value),
        );
        match outcome {
            Outcome::Reject { reason } => assert!(reason.contains(named), "{reason}"),
            other => panic!("{column}: {other:?}"),
        }
    }
    let filter_on_text_as_number = with(
        contacts_settings(),
        "filters",
        json!({"rules": [{"field": "creditlimit", "op": "gt", "value": "lots"}]}),
    );
    assert!(matches!(
        map_one(
            &filter_on_text_as_number,
            Phase::Initial,
            contact_row("c-1")
        ),
        Outcome::Reject { .. }
    ));
}

#[test]
fn one_outcome_per_row_in_row_order() {
    let mut mapper = table_mapper(&with(
        contacts_settings(),
        "filters",
        json!({"rules": [{"field": "firstname", "op": "ne", "value": "skip me"}]}),
    ));
    let rows = (0..50)
        .map(|i| {
            let row = contact_row(&format!("c-{i}"));
            if i % 3 == 0 {
                set(row, "firstname", Value::Text("skip me".into()))
            } else {
                row
            }
        })
        .collect();
    let outcomes = mapper.map(Phase::Initial, &contacts(rows)).unwrap();
    assert_eq!(outcomes.len(), 50);
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Outcome::Skip { .. } => assert_eq!(i % 3, 0),
            Outcome::Write { records } => assert_eq!(records[0].key, format!("c-{i}")),
            other => panic!("{other:?}"),
        }
    }
}

/// The table-mapper brings its own allocator (talc): an instance kept for its whole run of
/// calls must give back what each page took, or the pages of text that follow would outgrow
/// a memory limit that one page fits in many times over.
#[test]
fn a_kept_table_mapper_instance_maps_its_whole_run_of_full_pages_within_a_small_memory_limit() {
    const MEMORY: usize = 16 << 20;
    let limits = Limits {
        memory_bytes: MEMORY,
        ..Limits::default()
    };
    let mut mapper = builtin("table-mapper", World::RecordMapper)
        .record_mapper(&contacts_settings(), limits)
        .unwrap();
    let mut kept_text = 0;
    for page in 0..CALLS_PER_INSTANCE as usize {
        // Names of a length that changes from page to page and row to row, so freed blocks
        // rarely fit the next page's strings exactly.
        let rows: Vec<Row> = (0..1000)
            .map(|i| {
                let name = "n".repeat(40 + (page * 7 + i * 13) % 400);
                kept_text += name.len();
                set(
                    contact_row(&format!("p{page}-{i}")),
                    "firstname",
                    Value::Text(name),
                )
            })
            .collect();
        let outcomes = mapper
            .map(Phase::Initial, &contacts(rows))
            .unwrap_or_else(|error| panic!("page {page}: {error}"));
        assert_eq!(outcomes.len(), 1000);
        let last = only_record(&outcomes[999]);
        assert_eq!(last.key, format!("p{page}-999"));
    }
    // The names alone (twice: the input and the output) would not fit if nothing were freed.
    assert!(2 * kept_text > MEMORY, "{kept_text} bytes of names");
}

#[test]
fn a_batch_of_another_table_is_a_batch_failure() {
    let mut mapper = table_mapper(&contacts_settings());
    let mut batch = contacts(vec![contact_row("a-1")]);
    batch.table = "account".into();
    let error = mapper.map(Phase::Initial, &batch).unwrap_err();
    assert!(matches!(error, PluginError::Batch { .. }), "{error}");
    assert!(error.is_batch_failure());
}

#[test]
fn invalid_table_mapper_settings_are_refused_naming_the_setting() {
    let field = |f: Json| {
        let mut settings = contacts_settings();
        settings["fields"].as_array_mut().unwrap().push(f);
        settings
    };
    let cases = [
        (with(contacts_settings(), "colour", json!("red")), "colour"),
        (
            with(
                contacts_settings(),
                "filters",
                json!({"rules": [{"field": "statecode", "op": "like", "value": "0"}]}),
            ),
            "filters.rules[0].op",
        ),
        (
            with(
                contacts_settings(),
                "filters",
                json!({"combine": "xor", "rules": []}),
            ),
            "filters.combine",
        ),
        (
            with(
                contacts_settings(),
                "filters",
                json!({"rules": [{"field": "statecode", "op": "eq"}]}),
            ),
            "filters.rules[0].value",
        ),
        (
            with(
                contacts_settings(),
                "filters",
                json!({"rules": [{"field": "statecode", "op": "null", "value": 1}]}),
            ),
            "filters.rules[0].value",
        ),
        (
            with(
                contacts_settings(),
                "replacements",
                json!([{"field": "telephone1", "from": "1", "to": "x"}]),
            ),
            "replacements[0].field",
        ),
        (
            field(json!({"source": "lastname", "destination": "firstName"})),
            "fields[6].destination",
        ),
        (
            field(json!({"source": "contactid", "destination": "crmId"})),
            "fields[6]",
        ),
        (
            field(json!({"source": "crmid", "destination": "externalId"})),
            "fields[6]",
        ),
        (
            field(json!({"source": "lastname", "destination": "lastName", "apply_update": true})),
            "apply_update",
        ),
        (
            with(contacts_settings(), "key", json!({"source": "contactid"})),
            "destination",
        ),
        (
            with(contacts_settings(), "apply_deletes", json!("yes")),
            "apply_deletes",
        ),
        (json!({"name": "x"}), "missing field"),
    ];
    let plugin = builtin("table-mapper", World::RecordMapper);
    for (settings, named) in cases {
        match plugin.record_mapper(&settings, Limits::default()) {
            Err(PluginError::Configure { message, .. }) => {
                assert!(message.contains(named), "`{named}` not in: {message}");
            }
            Err(other) => panic!("{settings}: {other}"),
            Ok(_) => panic!("{settings} was accepted"),
        }
    }
}

// ---------------------------------------------------------------- email-events

fn event(id: &str, kind: EmailEventKind) -> EmailEvent {
    EmailEvent {
        id: id.to_owned(),
        kind,
        contact_key: "c-1".into(),
        campaign_id: "CAM12".into(),
        campaign_name: "2019LoyaltyCamp".into(),
        delivery_id: "DM190".into(),
        delivery_name: "Welcome mail".into(),
        timestamp: "2026-11-29T04:57:52Z".into(),
        url: (kind == EmailEventKind::Click).then(|| "https://example.com/offer".into()),
        mirror_page_url: Some("https://mirror.example.com/m/1".into()),
        bounce: (kind == EmailEventKind::Bounce).then(|| BounceDetail {
            hard: true,
            reason: "User unknown".into(),
        }),
    }
}

fn event_mapper(settings: Json) -> EventMapper {
    builtin("email-events", World::EventMapper)
        .event_mapper(&settings, Limits::default())
        .unwrap()
}

#[test]
fn each_enabled_event_kind_becomes_its_activity_upserted_by_event_id() {
    let mut mapper =
        event_mapper(json!({"send": true, "open": true, "click": true, "bounce": true}));
    let cases = [
        (EmailEventKind::Send, "adobe_emailsends", "adobe_datesent"),
        (EmailEventKind::Open, "adobe_emailopens", "adobe_dateopened"),
        (
            EmailEventKind::Click,
            "adobe_emailclicks",
            "adobe_dateclicked",
        ),
        (
            EmailEventKind::Bounce,
            "adobe_emailbounces",
            "adobe_datebounced",
        ),
    ];
    let events: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, (kind, _, _))| event(&format!("e-{i}"), *kind))
        .collect();
    let outcomes = mapper.map(&events).unwrap();
    for (i, ((kind, entity_set, date_field), outcome)) in cases.iter().zip(&outcomes).enumerate() {
        let record = only_record(outcome);
        assert_eq!(record.target.system, System::Dynamics, "{kind:?}");
        assert_eq!(record.target.table, *entity_set);
        assert_eq!(record.target.key_field, "activityid");
        assert_eq!(record.key, format!("e-{i}"));
        assert_eq!(record.op, Operation::Upsert);
        assert_eq!(
            field(record, date_field),
            Some(&Value::Datetime("2026-11-29T04:57:52Z".into()))
        );
        assert_eq!(
            field(record, "subject"),
            Some(&Value::Text(
                "Campaign Name: 2019LoyaltyCamp; Delivery Name: Welcome mail".into()
            ))
        );
        assert_eq!(
            field(record, "adobe_campaignname"),
            Some(&Value::Text("CAM12".into()))
        );
        assert_eq!(
            field(record, "adobe_deliveryname"),
            Some(&Value::Text("DM190".into()))
        );
        assert_eq!(
            field(record, "adobe_mirrorpageurl"),
            Some(&Value::Text("https://mirror.example.com/m/1".into()))
        );
        assert_eq!(
            field(record, "regardingobjectid_contact"),
            Some(&Value::Lookup {
                table: "contacts".into(),
                id: "c-1".into()
            })
        );
    }
    assert_eq!(
        field(only_record(&outcomes[2]), "adobe_trackingurl"),
        Some(&Value::Text("https://example.com/offer".into()))
    );
    assert_eq!(
        field(only_record(&outcomes[3]), "adobe_bouncereason"),
        Some(&Value::Text("User unknown".into()))
    );
    assert_eq!(field(only_record(&outcomes[0]), "adobe_trackingurl"), None);
}

#[test]
fn mapping_the_same_event_twice_gives_the_same_write() {
    let mut mapper = event_mapper(json!({"open": true}));
    let first = mapper.map(&[event("e-1", EmailEventKind::Open)]).unwrap();
    let again = mapper.map(&[event("e-1", EmailEventKind::Open)]).unwrap();
    assert_eq!(first, again);
}

#[test]
fn switched_off_kinds_soft_bounces_and_missing_mirror_pages() {
    let mut mapper = event_mapper(json!({"bounce": true, "open": false}));
    let mut soft = event("e-2", EmailEventKind::Bounce);
    soft.bounce = Some(BounceDetail {
        hard: false,
        reason: "Mailbox full".into(),
    });
    let mut no_mirror = event("e-3", EmailEventKind::Bounce);
    no_mirror.mirror_page_url = None;
    let outcomes = mapper
        .map(&[
            event("e-0", EmailEventKind::Send),
            event("e-1", EmailEventKind::Open),
            soft,
            no_mirror,
        ])
        .unwrap();
    assert_eq!(
        outcomes[0],
        Outcome::Skip {
            reason: "send events are switched off".into()
        }
    );
    assert_eq!(
        outcomes[1],
        Outcome::Skip {
            reason: "open events are switched off".into()
        }
    );
    assert_eq!(
        outcomes[2],
        Outcome::Skip {
            reason: "soft bounce: Mailbox full".into()
        }
    );
    assert_eq!(
        field(only_record(&outcomes[3]), "adobe_mirrorpageurl"),
        None
    );
}

#[test]
fn events_that_cannot_become_activities_are_rejected() {
    let mut mapper = event_mapper(json!({"click": true, "bounce": true}));
    let mut no_url = event("e-1", EmailEventKind::Click);
    no_url.url = None;
    let mut no_detail = event("e-2", EmailEventKind::Bounce);
    no_detail.bounce = None;
    let mut no_contact = event("e-3", EmailEventKind::Click);
    no_contact.contact_key = String::new();
    let mut bad_time = event("e-4", EmailEventKind::Click);
    bad_time.timestamp = "soon".into();
    let outcomes = mapper
        .map(&[no_url, no_detail, no_contact, bad_time])
        .unwrap();
    for outcome in outcomes {
        assert!(matches!(outcome, Outcome::Reject { .. }), "{outcome:?}");
    }
}

#[test]
fn invalid_email_events_settings_are_refused_naming_the_setting() {
    let plugin = builtin("email-events", World::EventMapper);
    for (settings, named) in [
        (json!({"clicks": true}), "clicks"),
        (json!({"send": "yes"}), "send"),
    ] {
        match plugin.event_mapper(&settings, Limits::default()) {
            Err(PluginError::Configure { message, .. }) => {
                assert!(message.contains(named), "{message}");
            }
            other => panic!("{settings}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- opt-out

fn resolver(direction: &str) -> OptOutResolver {
    builtin("opt-out", World::OptOutResolver)
        .opt_out_resolver(
            &json!({"direction": direction, "pairs": [
                {"dynamics": "donotbulkemail", "campaign": "blackListEmail"},
                {"dynamics": "donotphone", "campaign": "blackListPhone"}
            ]}),
            Limits::default(),
        )
        .unwrap()
}

/// The opt-out plugin keeps its own copy of the attribute list (it is built for Wasm, outside
/// the host's workspace): it must accept exactly the attributes the config validator accepts,
/// `conduit_model::OPT_OUT_ATTRIBUTES`.
#[test]
fn the_opt_out_plugin_accepts_exactly_the_listed_attributes() {
    let configure = |campaign: &str| {
        builtin("opt-out", World::OptOutResolver)
            .opt_out_resolver(
                &json!({"direction": "bidirectional", "pairs": [
                    {"dynamics": "donotbulkemail", "campaign": campaign}
                ]}),
                Limits::default(),
            )
            .map(drop)
    };
    for attribute in conduit_model::OPT_OUT_ATTRIBUTES {
        assert!(configure(attribute).is_ok(), "{attribute} refused");
    }
    for other in ["blackListSms", "blacklistEmail", "email"] {
        assert!(configure(other).is_err(), "{other} accepted");
    }
}

fn side(attribute: &str, value: bool, at: &str) -> OptOutValue {
    OptOutValue {
        attribute: attribute.into(),
        value,
        changed_at: Some(at.into()),
    }
}

const EARLY: &str = "2026-01-01T00:00:00Z";
const LATE: &str = "2026-06-01T00:00:00Z";

/// One contact with only the email pair reported: (dynamics value, time), (campaign value, time).
fn email_pair(dynamics: Option<(bool, &str)>, campaign: Option<(bool, &str)>) -> ContactOptOut {
    ContactOptOut {
        contact_key: "c-1".into(),
        dynamics: dynamics
            .map(|(v, at)| side("donotbulkemail", v, at))
            .into_iter()
            .collect(),
        campaign: campaign
            .map(|(v, at)| side("blackListEmail", v, at))
            .into_iter()
            .collect(),
    }
}

/// The writes as (system, field, value), sorted.
fn writes(outcome: &Outcome) -> Vec<(System, String, Value)> {
    let Outcome::Write { records } = outcome else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for record in records {
        assert_eq!(
            record.op,
            Operation::Update,
            "opt-outs never create records"
        );
        assert_eq!(record.key, "c-1");
        let expected_target = match record.target.system {
            System::Dynamics => ("contacts", "contactid"),
            System::Campaign => ("profile", "externalId"),
        };
        assert_eq!(
            (
                record.target.table.as_str(),
                record.target.key_field.as_str()
            ),
            expected_target
        );
        for (name, value) in &record.fields {
            all.push((record.target.system, name.clone(), value.clone()));
        }
    }
    all.sort_by(|a, b| a.1.cmp(&b.1));
    all
}

#[test]
fn opt_out_directions_and_the_bidirectional_conflict_rule() {
    use System::{Campaign, Dynamics};
    let d = |v: bool| (Dynamics, "donotbulkemail".to_owned(), Value::Boolean(v));
    let c = |v: bool| (Campaign, "blackListEmail".to_owned(), Value::Boolean(v));
    let cases = [
        // Bidirectional: Campaign newer -> Campaign's value on both sides.
        (
            "bidirectional",
            Some((true, EARLY)),
            Some((false, LATE)),
            vec![d(false)],
        ),
        (
            "bidirectional",
            Some((false, EARLY)),
            Some((true, LATE)),
            vec![d(true)],
        ),
        // Dynamics newer or equal -> opted out wins if either is.
        (
            "bidirectional",
            Some((false, LATE)),
            Some((true, EARLY)),
            vec![d(true)],
        ),
        (
            "bidirectional",
            Some((true, LATE)),
            Some((false, EARLY)),
            vec![c(true)],
        ),
        (
            "bidirectional",
            Some((false, EARLY)),
            Some((true, EARLY)),
            vec![d(true)],
        ),
        (
            "bidirectional",
            Some((true, EARLY)),
            Some((false, EARLY)),
            vec![c(true)],
        ),
        (
            "bidirectional",
            Some((false, LATE)),
            Some((false, EARLY)),
            vec![],
        ),
        (
            "bidirectional",
            Some((true, LATE)),
            Some((true, EARLY)),
            vec![],
        ),
        // A side missing the attribute is unknown: it receives the known value.
        ("bidirectional", Some((true, EARLY)), None, vec![c(true)]),
        ("bidirectional", None, Some((false, EARLY)), vec![d(false)]),
        ("bidirectional", None, None, vec![]),
        // Unidirectional: copy the source side, whatever the times.
        (
            "dynamics-to-campaign",
            Some((false, EARLY)),
            Some((true, LATE)),
            vec![c(false)],
        ),
        (
            "dynamics-to-campaign",
            Some((true, EARLY)),
            None,
            vec![c(true)],
        ),
        ("dynamics-to-campaign", None, Some((true, LATE)), vec![]),
        (
            "campaign-to-dynamics",
            Some((true, LATE)),
            Some((false, EARLY)),
            vec![d(false)],
        ),
        (
            "campaign-to-dynamics",
            Some((true, LATE)),
            Some((true, EARLY)),
            vec![],
        ),
        ("campaign-to-dynamics", Some((false, LATE)), None, vec![]),
        // Disabled: nothing moves.
        ("disabled", Some((true, LATE)), Some((false, EARLY)), vec![]),
    ];
    for (direction, dynamics, campaign, expected) in cases {
        let mut resolver = if direction == "disabled" {
            builtin("opt-out", World::OptOutResolver)
                .opt_out_resolver(&json!({"direction": "disabled"}), Limits::default())
                .unwrap()
        } else {
            resolver(direction)
        };
        let outcomes = resolver.resolve(&[email_pair(dynamics, campaign)]).unwrap();
        assert_eq!(outcomes.len(), 1);
        let got = writes(&outcomes[0]);
        assert_eq!(
            got, expected,
            "{direction}: dynamics {dynamics:?} campaign {campaign:?}"
        );
        if expected.is_empty() {
            assert!(
                matches!(outcomes[0], Outcome::Skip { .. }),
                "{:?}",
                outcomes[0]
            );
        }
    }
}

#[test]
fn opt_out_writes_every_changed_pair_in_one_update_per_side() {
    let mut resolver = resolver("dynamics-to-campaign");
    let contact = ContactOptOut {
        contact_key: "c-1".into(),
        dynamics: vec![
            side("donotbulkemail", true, LATE),
            side("donotphone", true, LATE),
        ],
        campaign: vec![
            side("blackListEmail", false, EARLY),
            side("blackListPhone", false, EARLY),
        ],
    };
    let outcomes = resolver.resolve(&[contact]).unwrap();
    let Outcome::Write { records } = &outcomes[0] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].fields.len(), 2);
}

#[test]
fn opt_out_rejects_unreadable_change_times() {
    let mut resolver = resolver("bidirectional");
    let outcomes = resolver
        .resolve(&[email_pair(Some((true, "whenever")), Some((false, EARLY)))])
        .unwrap();
    assert!(
        matches!(outcomes[0], Outcome::Reject { .. }),
        "{outcomes:?}"
    );
}

#[test]
fn invalid_opt_out_settings_are_refused_naming_the_setting() {
    let plugin = builtin("opt-out", World::OptOutResolver);
    let pair = json!([{"dynamics": "donotemail", "campaign": "blackListEmail"}]);
    let cases = [
        (json!({"direction": "sideways", "pairs": pair}), "direction"),
        (json!({"direction": "bidirectional"}), "pairs"),
        (
            json!({"direction": "bidirectional", "pairs": [{"dynamics": "donotemail", "campaign": "optOut"}]}),
            "pairs[0].campaign",
        ),
        (
            json!({"direction": "bidirectional", "pairs": [
                {"dynamics": "donotemail", "campaign": "blackListEmail"},
                {"dynamics": "donotemail", "campaign": "blackListPhone"}]}),
            "pairs[1].dynamics",
        ),
        (json!({"direction": "disabled", "mode": 1}), "mode"),
    ];
    for (settings, named) in cases {
        match plugin.opt_out_resolver(&settings, Limits::default()) {
            Err(PluginError::Configure { message, .. }) => {
                assert!(message.contains(named), "`{named}` not in: {message}");
            }
            other => panic!("{settings}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- loading

#[test]
fn a_builtin_loaded_as_another_world_is_refused() {
    let error = host()
        .load(
            &PluginRef::Builtin("email-events".into()),
            World::RecordMapper,
        )
        .unwrap_err();
    assert!(matches!(error, PluginError::WrongWorld { .. }), "{error}");
    assert!(error.to_string().contains("record-mapper"), "{error}");
}

#[test]
fn fingerprints_are_the_sha256_of_the_component() {
    let plugin = builtin("opt-out", World::OptOutResolver);
    assert_eq!(plugin.fingerprint().len(), 64);
    assert!(plugin.fingerprint().chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(
        plugin.fingerprint(),
        builtin("table-mapper", World::RecordMapper).fingerprint()
    );
}

// ---------------------------------------------------------------- contract versions

/// A page the example contact mapper writes, skips and rejects from: every string kind, a
/// multi-byte name, a delete and a missing value.
fn example_contacts() -> RecordBatch {
    let text = |value: &str| Value::Text(value.into());
    RecordBatch {
        table: "contact".into(),
        columns: vec![
            "firstname".into(),
            "lastname".into(),
            "emailaddress1".into(),
        ],
        rows: vec![
            Row {
                key: "c-1".into(),
                op: Operation::Upsert,
                values: vec![text("Zoë"), text("Ångström"), text("Zoe@Example.com")],
                modified_at: Some("2026-12-01T10:00:00Z".into()),
            },
            Row {
                key: "c-2".into(),
                op: Operation::Upsert,
                values: vec![text("Bob"), Value::Null, Value::Null],
                modified_at: None,
            },
            Row {
                key: "c-3".into(),
                op: Operation::Upsert,
                values: vec![text("Cy"), text("Young"), text("not-an-address")],
                modified_at: None,
            },
            Row {
                key: "c-4".into(),
                op: Operation::Delete,
                values: vec![],
                modified_at: None,
            },
        ],
    }
}

#[test]
fn a_plugin_built_for_contract_1_0_still_loads_and_maps_like_its_1_1_build() {
    // The 1.0.0 build of plugins/examples/contact-mapper, checked in when 1.1.0 shipped: it
    // imports conduit:plugin/log@1.0.0 and exports `map` only.
    let old = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/fixtures/contact-mapper-1.0.0.wasm");
    let current = std::path::Path::new(env!("CONDUIT_PLUGIN_FIXTURES")).join("contact_mapper.wasm");
    let settings = json!({"destination": "profile", "settings": {}});
    let mut outcomes = Vec::new();
    for (component, packed) in [(old, false), (current, true)] {
        let plugin = host()
            .load(&PluginRef::Path(component.clone()), World::RecordMapper)
            .unwrap_or_else(|error| panic!("{}: {error}", component.display()));
        assert_eq!(
            plugin.takes_packed_batches(),
            packed,
            "{}",
            component.display()
        );
        let mut mapper = plugin.record_mapper(&settings, Limits::default()).unwrap();
        outcomes.push(mapper.map(Phase::Initial, &example_contacts()).unwrap());
    }
    let kinds: Vec<&str> = outcomes[0]
        .iter()
        .map(|outcome| match outcome {
            Outcome::Write { .. } => "write",
            Outcome::Skip { .. } => "skip",
            Outcome::Reject { .. } => "reject",
        })
        .collect();
    assert_eq!(kinds, ["write", "skip", "reject", "skip"]);
    let Outcome::Write { records } = &outcomes[0][0] else {
        unreachable!()
    };
    assert_eq!(
        records[0].fields,
        [
            ("firstName".to_owned(), Value::Text("Zoë".into())),
            ("lastName".to_owned(), Value::Text("Ångström".into())),
            ("email".to_owned(), Value::Text("zoe@example.com".into())),
        ]
    );
    assert_eq!(outcomes[0], outcomes[1]);
}

#[test]
fn the_builtin_table_mapper_takes_packed_batches_and_the_other_builtins_do_not() {
    assert!(builtin("table-mapper", World::RecordMapper).takes_packed_batches());
    assert!(!builtin("email-events", World::EventMapper).takes_packed_batches());
    assert!(!builtin("opt-out", World::OptOutResolver).takes_packed_batches());
}
