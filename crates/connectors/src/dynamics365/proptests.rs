//! Property tests (fixed seeds, run in CI) of the Dataverse wire readers: change-tracking pages
//! (rows, `$deletedEntity`, formatted values, links) and `$batch` multipart responses. Arbitrary
//! input never panics; generated pages and multipart bodies read back to what was generated;
//! the single-pass page reader reads every page as a parse into JSON objects and their
//! conversion would.
//! `fuzz/` drives the same entry points (`dataverse_page`, `dataverse_batch`).

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::{Value as Json, json};

use super::fixtures::{contact_columns, contact_table};
use super::metadata::{PicklistOption, read_option_set};
use super::multipart::{
    HttpMessage, boundary_of, parse_http_message, split_parts, write_end, write_http_part,
};
use super::page::read_change_page;
use super::rows::RowPlan;
use super::write::read_batch_response;
use crate::http::parse_json;
use crate::{ChangePage, ConnectorError};
use conduit_model::{Operation, Value};

const URL: &str = "https://org.api.crm.dynamics.com/api/data/v9.2/contacts";

/// Any JSON value, a few levels deep, with the page's own key names mixed in.
fn any_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(|number| json!(number)),
        "\\PC{0,12}".prop_map(Json::from),
        Just(Json::from("x/$metadata#contacts/$deletedEntity")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Json::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("value".to_owned()),
                    Just("@odata.nextLink".to_owned()),
                    Just("@odata.deltaLink".to_owned()),
                    Just("@odata.context".to_owned()),
                    Just("contactid".to_owned()),
                    Just("id".to_owned()),
                    Just("reason".to_owned()),
                    Just("gendercode".to_owned()),
                    Just("numberofchildren".to_owned()),
                    Just("_parentcustomerid_value".to_owned()),
                    "[a-z@._]{1,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|map| Json::Object(map.into_iter().collect())),
        ]
    })
}

/// One generated change: an upsert with a value for every column, or a delete.
#[derive(Debug, Clone)]
enum Change {
    Upsert { key: String, values: Vec<Value> },
    Delete { key: String, as_reason: bool },
}

fn upsert_values() -> impl Strategy<Value = Vec<Value>> {
    let text = || proptest::option::of("\\PC{0,10}");
    (
        text(),
        text(),
        proptest::option::of("20[0-9]{2}-0[1-9]-1[0-9]T0[0-9]:00:00Z"),
        proptest::option::of((0..10i64, proptest::option::of("[A-Za-z]{1,8}"))),
        proptest::option::of((0..3i64, proptest::option::of("Active|Inactive"))),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<i64>()),
        proptest::option::of(-1.0e9..1.0e9f64),
        proptest::option::of((
            prop::sample::select(vec!["account", "contact"]),
            "[0-9a-f]{8}",
        )),
        text(),
    )
        .prop_map(
            |(first, description, birth, gender, state, donot, children, credit, parent, yomi)| {
                let text = |value: Option<String>| value.map_or(Value::Null, Value::Text);
                let picklist = |value: Option<(i64, Option<String>)>| {
                    value.map_or(Value::Null, |(value, label)| Value::Picklist {
                        value,
                        label,
                    })
                };
                vec![
                    text(first),
                    text(description),
                    birth.map_or(Value::Null, Value::Datetime),
                    picklist(gender),
                    picklist(state),
                    donot.map_or(Value::Null, Value::Boolean),
                    children.map_or(Value::Null, Value::Integer),
                    credit.map_or(Value::Null, Value::Decimal),
                    parent.map_or(Value::Null, |(table, id)| Value::Lookup {
                        table: table.to_owned(),
                        id,
                    }),
                    text(yomi),
                ]
            },
        )
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => ("[0-9a-f-]{1,36}", upsert_values())
            .prop_map(|(key, values)| Change::Upsert { key, values }),
        1 => ("[0-9a-f-]{1,36}", any::<bool>())
            .prop_map(|(key, as_reason)| Change::Delete { key, as_reason }),
    ]
}

/// The JSON entry Dataverse sends for a change, with formatted values and lookup annotations.
fn entry(change: &Change) -> Json {
    match change {
        Change::Delete { key, as_reason } => {
            if *as_reason {
                json!({"id": key, "reason": "deleted"})
            } else {
                json!({"@odata.context": format!("{URL}/$metadata#contacts/$deletedEntity"), "id": key})
            }
        }
        Change::Upsert { key, values } => {
            let mut object = serde_json::Map::new();
            object.insert("@odata.etag".into(), json!("W/\"1\""));
            object.insert("contactid".into(), json!(key));
            let table = contact_table();
            for (column, value) in contact_columns().iter().zip(values) {
                let wire = table
                    .column(column)
                    .map_or(column.clone(), super::metadata::AttributeMeta::wire_name);
                let raw = match value {
                    Value::Null => Json::Null,
                    Value::Text(text) | Value::Datetime(text) | Value::Guid(text) => json!(text),
                    Value::Boolean(flag) => json!(flag),
                    Value::Integer(number) => json!(number),
                    Value::Decimal(number) => json!(number),
                    Value::Picklist { value, label } => {
                        if let Some(label) = label {
                            object.insert(
                                format!("{wire}@OData.Community.Display.V1.FormattedValue"),
                                json!(label),
                            );
                        }
                        json!(value)
                    }
                    Value::Lookup { table, id } => {
                        object.insert(
                            format!("{wire}@Microsoft.Dynamics.CRM.lookuplogicalname"),
                            json!(table),
                        );
                        json!(id)
                    }
                };
                object.insert(wire, raw);
            }
            Json::Object(object)
        }
    }
}

/// The reading the single-pass page reader must equal: the whole body parsed into JSON
/// objects first, then each object converted.
fn read_as_parsed_objects(body: &[u8], names: &[String]) -> Result<ChangePage, ConnectorError> {
    #[derive(serde::Deserialize)]
    struct Page {
        value: Vec<serde_json::Map<String, Json>>,
        #[serde(rename = "@odata.nextLink")]
        next_link: Option<String>,
        #[serde(rename = "@odata.deltaLink")]
        delta_link: Option<String>,
    }
    let table = contact_table();
    let plan = RowPlan::new(&table, names)?;
    let page: Page = parse_json(body, URL, "a page")?;
    let batch = plan.convert_all(page.value, URL)?;
    match (page.next_link, page.delta_link) {
        (Some(cursor), _) => Ok(ChangePage {
            batch,
            cursor,
            caught_up: false,
        }),
        (None, Some(cursor)) => Ok(ChangePage {
            batch,
            cursor,
            caught_up: true,
        }),
        (None, None) => Err(ConnectorError::Permanent {
            message: "no link".to_owned(),
        }),
    }
}

/// Holds the page reader's verdict on `body` equal to [`read_as_parsed_objects`]': the same
/// page, or errors of the same kind (a permanent one with the same message, unless it is the
/// missing links, which the two word differently).
fn assert_read_as_parsed_objects(body: &[u8], names: &[String]) -> Result<(), TestCaseError> {
    let read = read_change_page(&contact_table(), names, body, URL);
    let parsed = read_as_parsed_objects(body, names);
    match (&read, &parsed) {
        (Ok(read), Ok(parsed)) => {
            prop_assert_eq!(&read.batch, &parsed.batch);
            prop_assert_eq!(&read.cursor, &parsed.cursor);
            prop_assert_eq!(read.caught_up, parsed.caught_up);
        }
        (Err(read), Err(parsed)) => {
            prop_assert_eq!(
                read.is_transient(),
                parsed.is_transient(),
                "{} vs {}",
                read,
                parsed
            );
            if !read.is_transient() && parsed.to_string() != "no link" {
                prop_assert_eq!(read.to_string(), parsed.to_string());
            }
        }
        _ => prop_assert!(
            false,
            "the page reader gave {:?}, the parsed objects {:?}",
            read,
            parsed
        ),
    }
    Ok(())
}

/// The columns a page is read for: every column, or some read twice and the key among them
/// (fields with more than one reader).
fn requested_columns() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        Just(contact_columns()),
        Just(
            [
                "contactid",
                "gendercode",
                "gendercode",
                "parentcustomerid",
                "firstname",
                "parentcustomerid"
            ]
            .map(str::to_owned)
            .to_vec()
        ),
    ]
}

/// A field name a contact row may hold: planned ones (values, annotations, keys, delete
/// markers) and others.
fn row_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "contactid",
        "id",
        "reason",
        "@odata.context",
        "@odata.etag",
        "modifiedon",
        "firstname",
        "birthdate",
        "gendercode",
        "gendercode@OData.Community.Display.V1.FormattedValue",
        "statecode",
        "donotbulkemail",
        "numberofchildren",
        "creditlimit",
        "_parentcustomerid_value",
        "_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname",
        "parentcustomerid",
        "yomifullname",
        "unplanned",
    ])
    .prop_map(str::to_owned)
}

/// A generated change's entry with a few fields set (again, or for the first time) to any
/// value: rows that convert, rows that do not, deletes, repeated fields.
fn row_fields() -> impl Strategy<Value = Vec<(String, Json)>> {
    let value = prop_oneof![
        4 => any_json(),
        1 => Just(json!("deleted")),
        1 => Just(json!("x/$metadata#contacts/$deletedEntity")),
    ];
    (
        change(),
        proptest::collection::vec((row_key(), value), 0..3),
    )
        .prop_map(|(change, extra)| {
            let mut fields: Vec<(String, Json)> = match entry(&change) {
                Json::Object(object) => object.into_iter().collect(),
                _ => Vec::new(),
            };
            fields.extend(extra);
            fields
        })
}

/// A JSON object written field by field, so a field may appear twice.
fn object_text(fields: &[(String, Json)]) -> String {
    let fields: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("{}:{value}", Json::from(name.as_str())))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// A message the writer can frame: one-line start line and headers, a body that neither ends
/// in a line break (the framing's own) nor holds the boundary.
fn message() -> impl Strategy<Value = HttpMessage> {
    (
        prop::sample::select(vec![200u16, 201, 204, 400, 404, 412, 429, 500, 503]),
        proptest::collection::vec(
            ("[A-Za-z][A-Za-z0-9-]{0,12}", "[!-~]([ -~]{0,20}[!-~])?"),
            0..4,
        ),
        "([ -~]|\r\n|\n){0,60}[!-~]|",
    )
        .prop_map(|(status, headers, body)| HttpMessage {
            start_line: format!("HTTP/1.1 {status} Reason"),
            headers,
            body,
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        rng_seed: RngSeed::Fixed(0xD365),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_page_bytes_are_read_or_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = read_change_page(&contact_table(), &contact_columns(), &bytes, URL);
    }

    #[test]
    fn any_page_json_is_read_or_refused_naming_the_url(page in any_json()) {
        let body = page.to_string();
        match read_change_page(&contact_table(), &contact_columns(), body.as_bytes(), URL) {
            Ok(read) => {
                for row in &read.batch.rows {
                    prop_assert_eq!(row.values.len(), contact_columns().len());
                }
            }
            Err(error) => prop_assert!(error.to_string().contains(URL), "{}", error),
        }
    }

    #[test]
    fn a_generated_page_of_n_changes_reads_back_as_n_rows_upserts_first(
        changes in proptest::collection::vec(change(), 0..12),
        delta in any::<bool>(),
    ) {
        let link = if delta { "@odata.deltaLink" } else { "@odata.nextLink" };
        let body = json!({
            "@odata.context": format!("{URL}/$metadata#contacts"),
            "value": changes.iter().map(entry).collect::<Vec<_>>(),
            link: format!("{URL}?token=1"),
        })
        .to_string();
        let page = read_change_page(&contact_table(), &contact_columns(), body.as_bytes(), URL);
        prop_assert!(page.is_ok(), "{:?}", page.err());
        let page = page.expect("checked above");
        prop_assert_eq!(page.caught_up, delta);
        prop_assert_eq!(page.batch.rows.len(), changes.len());
        let upserts = changes.iter().filter_map(|change| match change {
            Change::Upsert { key, values } => Some((key.clone(), Operation::Upsert, values.clone())),
            Change::Delete { .. } => None,
        });
        let deletes = changes.iter().filter_map(|change| match change {
            Change::Delete { key, .. } => Some((key.clone(), Operation::Delete, vec![Value::Null; contact_columns().len()])),
            Change::Upsert { .. } => None,
        });
        let expected: Vec<_> = upserts.chain(deletes).collect();
        let read: Vec<_> = page
            .batch
            .rows
            .into_iter()
            .map(|row| (row.key, row.op, row.values))
            .collect();
        prop_assert_eq!(read, expected);
    }

    #[test]
    fn a_page_reads_as_its_parsed_objects_convert(
        rows in proptest::collection::vec(row_fields(), 0..6),
        page_fields in proptest::collection::vec(
            (
                prop::sample::select(vec!["@odata.nextLink", "@odata.deltaLink", "@odata.context", "value"]),
                prop_oneof![Just(json!(null)), Just(json!("link")), any_json()],
            ),
            0..3,
        ),
        rows_first in any::<bool>(),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        names in requested_columns(),
    ) {
        let rows: Vec<String> = rows.iter().map(|row| object_text(row)).collect();
        let mut fields: Vec<(String, String)> = page_fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.to_string()))
            .collect();
        let position = if rows_first { 0 } else { fields.len() };
        fields.insert(position, ("value".to_owned(), format!("[{}]", rows.join(","))));
        let fields: Vec<String> = fields
            .iter()
            .map(|(name, value)| format!("{}:{value}", Json::from(name.as_str())))
            .collect();
        let body = format!("{{{}}}", fields.join(","));
        // A cut anywhere makes a body that is not JSON at all (or, at the very end, the same).
        let body = match cut {
            Some(cut) => &body.as_bytes()[..cut.index(body.len() + 1)],
            None => body.as_bytes(),
        };
        assert_read_as_parsed_objects(body, &names)?;
    }

    #[test]
    fn any_json_object_page_reads_as_its_parsed_objects_convert(page in any_json()) {
        // A JSON list is no page for the reader; a struct parse would take one for a tuple.
        if page.is_object() {
            assert_read_as_parsed_objects(page.to_string().as_bytes(), &contact_columns())?;
        } else {
            prop_assert!(read_change_page(&contact_table(), &contact_columns(), page.to_string().as_bytes(), URL).is_err());
        }
    }

    #[test]
    fn any_option_set_json_is_read_or_refused_naming_the_url(body in any_json()) {
        if let Err(error) = read_option_set(body.to_string().as_bytes(), URL) {
            prop_assert!(error.to_string().contains(URL), "{}", error);
        }
    }

    #[test]
    fn a_generated_option_set_reads_back_as_its_values_and_labels(
        options in proptest::collection::vec((any::<i64>(), "\\PC{0,12}"), 0..8),
    ) {
        let listed: Vec<Json> = options
            .iter()
            .map(|(value, label)| json!({"Value": value, "Label": {"UserLocalizedLabel": {"Label": label}, "LocalizedLabels": []}}))
            .collect();
        let body = json!({"LogicalName": "gendercode", "OptionSet": {"Options": listed}}).to_string();
        let read = read_option_set(body.as_bytes(), URL);
        let expected: Vec<PicklistOption> = options
            .into_iter()
            .map(|(value, label)| PicklistOption { value, label })
            .collect();
        prop_assert_eq!(read, Ok(expected));
    }

    #[test]
    fn any_multipart_text_is_split_or_refused_without_panic(
        content_type in "(multipart/mixed|text/plain)(; ?boundary=\"?[a-z_0-9]{0,6}\"?)?",
        body in "(--b|\r\n|\n|:| |HTTP/1.1 204|[a-z]|Content-Type: multipart/mixed; boundary=c|--c){0,40}",
    ) {
        if let Some(boundary) = boundary_of(&content_type) {
            prop_assert!(!boundary.is_empty());
            if let Ok(parts) = split_parts(&body, &boundary) {
                for part in parts {
                    let _ = parse_http_message(&part.content);
                }
            }
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&content_type) {
            headers.insert(reqwest::header::CONTENT_TYPE, value);
        }
        if let Err(error) = read_batch_response(&headers, body.as_bytes(), URL) {
            prop_assert!(error.is_transient() && error.to_string().contains(URL), "{}", error);
        }
    }

    #[test]
    fn written_http_parts_read_back_with_the_same_status_headers_and_body(
        messages in proptest::collection::vec(message(), 0..6),
    ) {
        let mut body = String::new();
        for (index, message) in messages.iter().enumerate() {
            write_http_part(&mut body, "batchresponse_p", &[("Content-ID", &index.to_string())], message);
        }
        write_end(&mut body, "batchresponse_p");
        let parts = split_parts(&body, "batchresponse_p");
        prop_assert!(parts.is_ok(), "{:?}", parts.err());
        let parts = parts.expect("checked above");
        prop_assert_eq!(parts.len(), messages.len());
        for (index, (part, message)) in parts.iter().zip(&messages).enumerate() {
            let content_id = index.to_string();
            prop_assert_eq!(part.header("Content-ID"), Some(content_id.as_str()));
            let read = parse_http_message(&part.content);
            prop_assert!(read.is_ok(), "{:?}", read.err());
            let read = read.expect("checked above");
            prop_assert_eq!(read.status(), message.status());
            prop_assert_eq!(&read, message);
        }
    }

    #[test]
    fn a_batch_response_with_change_sets_reads_every_message_in_order(
        outer in proptest::collection::vec(message(), 0..3),
        changeset in proptest::collection::vec(message(), 0..4),
    ) {
        let mut inner = String::new();
        for message in &changeset {
            write_http_part(&mut inner, "changesetresponse_q", &[], message);
        }
        write_end(&mut inner, "changesetresponse_q");
        let mut body = format!(
            "--batchresponse_p\r\nContent-Type: multipart/mixed; boundary=changesetresponse_q\r\n\r\n{inner}\r\n"
        );
        for message in &outer {
            write_http_part(&mut body, "batchresponse_p", &[], message);
        }
        write_end(&mut body, "batchresponse_p");
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("multipart/mixed; boundary=\"batchresponse_p\""),
        );
        let read = read_batch_response(&headers, body.as_bytes(), URL);
        prop_assert!(read.is_ok(), "{}\n{:?}", body, read.err());
        let expected: Vec<HttpMessage> = changeset.into_iter().chain(outer).collect();
        prop_assert_eq!(read.expect("checked above"), expected);
    }
}
