//! Property tests (fixed seeds, run in CI) of the Campaign readers: list pages, key lookups
//! and resource metadata, date text, event-journal pages and opt-out export files. Arbitrary
//! input never panics; generated responses and files read back to what was generated. `fuzz/`
//! drives the same entry points (`campaign_json`, `journal_page`, `optout_csv`).

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::{Value as Json, json};

use super::events::read_journal_page;
use super::exports::parse_export;
use super::sink::{FoundAt, read_list_page, read_lookup, read_resource_fields};
use super::values::{
    campaign_date_text, campaign_datetime_text, parse_instant, rfc3339_from_campaign,
    to_campaign_json,
};
use super::{field_kind, is_opt_out_attribute};
use crate::{FieldKind, OptOutChange};
use conduit_model::{Operation, System, Target, Value, WriteRecord};

const URL: &str = "https://mc.adobe.io/acme/campaign/profileAndServicesExt/profile";

/// Any JSON value, a few levels deep, with the Campaign responses' own key names mixed in.
fn any_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        "\\PC{0,12}".prop_map(Json::from),
        Just(Json::from("2026-03-01 10:00:00.000Z")),
        Just(Json::from("click")),
        Just(Json::from("bounce")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Json::from),
            proptest::collection::btree_map(
                prop::sample::select(vec![
                    "content",
                    "next",
                    "href",
                    "PKey",
                    "type",
                    "apiName",
                    "events",
                    "_page",
                    "last",
                    "position",
                    "event",
                    "id",
                    "kind",
                    "profileCrmId",
                    "campaignId",
                    "campaignName",
                    "deliveryId",
                    "deliveryName",
                    "timestamp",
                    "url",
                    "bounceType",
                    "x",
                ])
                .prop_map(str::to_owned),
                inner,
                0..8,
            )
            .prop_map(|map| Json::Object(map.into_iter().collect())),
        ]
    })
}

/// Instants Campaign and RFC 3339 text can both carry, to the millisecond.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_102_444_800_000).prop_filter_map("representable", DateTime::from_timestamp_millis)
}

fn record() -> WriteRecord {
    WriteRecord {
        target: Target {
            system: System::Campaign,
            table: "profile".to_owned(),
            key_field: "externalId".to_owned(),
        },
        key: "c1".to_owned(),
        op: Operation::Upsert,
        fields: Vec::new(),
    }
}

#[derive(Debug, Clone)]
struct Event {
    id: String,
    kind: &'static str,
    contact: String,
    at: DateTime<Utc>,
    campaign_style: bool,
}

fn event() -> impl Strategy<Value = Event> {
    (
        "[0-9a-f]{1,12}",
        prop::sample::select(vec!["send", "open", "click", "bounce"]),
        "[0-9a-f-]{1,36}",
        instant(),
        any::<bool>(),
    )
        .prop_map(|(id, kind, contact, at, campaign_style)| Event {
            id,
            kind,
            contact,
            at,
            campaign_style,
        })
}

fn event_json(event: &Event) -> Json {
    let timestamp = if event.campaign_style {
        campaign_datetime_text(event.at)
    } else {
        event.at.to_rfc3339_opts(SecondsFormat::Millis, true)
    };
    let mut json = json!({
        "id": event.id, "kind": event.kind, "profileCrmId": event.contact,
        "campaignId": "CMP1", "campaignName": "Spring", "deliveryId": "DM1",
        "deliveryName": "News", "timestamp": timestamp,
    });
    match event.kind {
        "click" => json["url"] = json!("https://example.com/offer"),
        "bounce" => json["bounceType"] = json!("hard"),
        _ => {}
    }
    json
}

/// A CRM ID as a CSV cell may carry it: commas, quotes and line breaks inside, none of the
/// whitespace the reader trims at its ends.
fn crm_id() -> impl Strategy<Value = String> {
    "[!-~]([ -~,\"\n\r]{0,10}[!-~])?"
}

fn opt_out_change() -> impl Strategy<Value = (OptOutChange, String)> {
    (
        crm_id(),
        prop::sample::select(vec![
            "blackList",
            "blackListEmail",
            "blackListMobile",
            "blackListPostalMail",
            "ccpaOptOut",
        ]),
        any::<bool>(),
        instant(),
        any::<bool>(),
    )
        .prop_map(|(contact_key, attribute, value, at, campaign_style)| {
            let written = if campaign_style {
                campaign_datetime_text(at)
            } else {
                at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            };
            let change = OptOutChange {
                contact_key,
                attribute: attribute.to_owned(),
                value,
                changed_at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            };
            (change, written)
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        rng_seed: RngSeed::Fixed(0xAC5),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_campaign_json_is_read_or_refused_naming_the_url(body in any_json()) {
        let bytes = body.to_string().into_bytes();
        match read_list_page(&bytes, URL) {
            Ok((content, next)) => prop_assert!(next.is_none() || !content.is_empty()),
            Err(error) => prop_assert!(error.to_string().contains(URL), "{}", error),
        }
        if let Err(error) = read_lookup(&bytes, URL, &record()) {
            let message = error.to_string();
            prop_assert!(message.contains(URL) || message.contains("must be unique"), "{}", message);
        }
        if let Err(error) = read_resource_fields(&bytes, URL, "profile") {
            prop_assert!(error.to_string().contains(URL), "{}", error);
        }
        match read_journal_page(&bytes, URL, Some("p0")) {
            Ok(page) => prop_assert!(page.cursor.is_some()),
            Err(error) => prop_assert!(error.to_string().contains(URL), "{}", error),
        }
    }

    #[test]
    fn any_bytes_are_read_or_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = read_list_page(&bytes, URL);
        let _ = read_lookup(&bytes, URL, &record());
        let _ = read_resource_fields(&bytes, URL, "profile");
        let _ = read_journal_page(&bytes, URL, None);
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_instant(&text);
        let _ = to_campaign_json("f", &Value::Datetime(text.into_owned()), Some(&FieldKind::Date));
    }

    #[test]
    fn a_list_page_of_n_records_reads_n_and_links_on_only_when_not_empty(
        keys in proptest::collection::vec("[a-z0-9]{1,8}", 0..6),
        next in proptest::option::of("[a-z0-9=&?_/]{1,20}"),
    ) {
        let content: Vec<Json> = keys.iter().map(|key| json!({"PKey": format!("@{key}"), "externalId": key})).collect();
        let mut body = json!({"content": content, "count": {"href": "x"}});
        if let Some(next) = &next {
            body["next"] = json!({"href": next});
        }
        let (read, link) = read_list_page(body.to_string().as_bytes(), URL).expect("a well-formed page");
        prop_assert_eq!(read, content);
        prop_assert_eq!(link, next.filter(|_| !keys.is_empty()));
    }

    #[test]
    fn a_lookup_finds_nothing_one_record_or_refuses_a_duplicate_key(
        found in proptest::collection::vec((proptest::option::of("[a-z/]{1,10}"), proptest::option::of("@[a-z]{1,6}")), 0..4),
    ) {
        let content: Vec<Json> = found
            .iter()
            .map(|(href, pkey)| {
                let mut record = json!({"externalId": "c1"});
                if let Some(href) = href { record["href"] = json!(href); }
                if let Some(pkey) = pkey { record["PKey"] = json!(pkey); }
                record
            })
            .collect();
        let read = read_lookup(json!({"content": content}).to_string().as_bytes(), URL, &record());
        match found.as_slice() {
            [] => prop_assert_eq!(read, Ok(None)),
            [(Some(href), _)] => prop_assert_eq!(read, Ok(Some(FoundAt::Href(href.clone())))),
            [(None, Some(pkey))] => prop_assert_eq!(read, Ok(Some(FoundAt::PKey(pkey.clone())))),
            [(None, None)] => prop_assert!(read.is_err_and(|error| error.to_string().contains("href or PKey"))),
            many => {
                let read = read.expect_err("a duplicate key");
                prop_assert!(read.to_string().starts_with(&format!("{} profile records", many.len())), "{}", read);
            }
        }
    }

    #[test]
    fn resource_metadata_reads_one_field_per_entry_with_its_kind(
        fields in proptest::collection::btree_map("[a-z][a-zA-Z]{0,8}", prop::sample::select(vec!["string", "int64", "date", "datetime", "boolean", "enumeration", "link", "double"]), 0..8),
    ) {
        let content: serde_json::Map<String, Json> = fields
            .iter()
            .map(|(name, kind)| (name.clone(), json!({"apiName": name, "type": kind})))
            .collect();
        let read = read_resource_fields(json!({"content": content}).to_string().as_bytes(), URL, "profile")
            .expect("well-formed metadata");
        let read: Vec<(String, FieldKind)> = read.into_iter().map(|field| (field.name, field.kind)).collect();
        let expected: Vec<(String, FieldKind)> = fields.iter().map(|(name, kind)| (name.clone(), field_kind(kind))).collect();
        prop_assert_eq!(read, expected);
    }

    #[test]
    fn campaign_date_texts_are_written_as_chrono_writes_them(
        seconds in -8_000_000_000_000i64..8_000_000_000_000,
        nanos in 0u32..2_000_000_000,
    ) {
        // Any instant chrono can hold, signed years and leap seconds included.
        if let Some(at) = DateTime::from_timestamp(seconds, nanos) {
            prop_assert_eq!(campaign_datetime_text(at), at.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string());
            prop_assert_eq!(campaign_date_text(at), at.format("%Y-%m-%d").to_string());
        }
    }

    #[test]
    fn a_plain_date_reads_as_chrono_reads_it(year in 0u32..10_000, month in 0u32..14, day in 0u32..33) {
        let text = format!("{year:04}-{month:02}-{day:02}");
        let by_chrono = NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .ok()
            .and_then(|date| date.and_hms_opt(0, 0, 0))
            .map(|instant| instant.and_utc());
        prop_assert_eq!(parse_instant(&text), by_chrono);
    }

    #[test]
    fn campaign_date_text_reads_back_as_the_same_instant(at in instant()) {
        prop_assert_eq!(parse_instant(&campaign_datetime_text(at)), Some(at));
        let rfc3339 = rfc3339_from_campaign(&campaign_datetime_text(at));
        prop_assert_eq!(rfc3339, Some(at.to_rfc3339_opts(SecondsFormat::Millis, true)));
        let written = to_campaign_json("f", &Value::Datetime(at.to_rfc3339()), None).expect("a date-time");
        prop_assert_eq!(written, json!(campaign_datetime_text(at)));
        let day = to_campaign_json("f", &Value::Datetime(at.to_rfc3339()), Some(&FieldKind::Date)).expect("a date");
        prop_assert_eq!(day, json!(campaign_date_text(at)));
    }

    #[test]
    fn any_readable_date_text_writes_out_and_reads_back_as_the_same_instant(
        text in "[+-]?[0-9]{1,6}-[01][0-9]-[0-3][0-9]([ T][0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,9})?(Z|[+-][01][0-9]:[0-5][0-9])?)?",
    ) {
        let Some(instant) = parse_instant(&text) else {
            return Ok(());
        };
        let millis = instant.timestamp_millis();
        let rfc3339 = rfc3339_from_campaign(&text);
        prop_assert!(rfc3339.is_some(), "{}", text);
        let rfc3339 = rfc3339.expect("checked above");
        prop_assert_eq!(parse_instant(&rfc3339).map(|again| again.timestamp_millis()), Some(millis), "{} -> {}", text, rfc3339);
        let written = to_campaign_json("f", &Value::Datetime(text.clone()), None);
        prop_assert!(written.is_ok(), "{:?}", written);
        let written = written.expect("checked above");
        let written = written.as_str().unwrap_or_default();
        prop_assert_eq!(parse_instant(written).map(|again| again.timestamp_millis()), Some(millis), "{} -> {}", text, written);
    }

    #[test]
    fn a_journal_page_of_n_events_reads_n_events_and_the_last_position(
        events in proptest::collection::vec(event(), 0..8),
        last in proptest::option::of("pos-[0-9a-f]{8}"),
    ) {
        let entries: Vec<Json> = events
            .iter()
            .enumerate()
            .map(|(index, event)| json!({"position": format!("p{index}"), "event": event_json(event)}))
            .collect();
        let body = json!({"events": entries, "_page": {"last": last, "count": events.len()}});
        let page = read_journal_page(body.to_string().as_bytes(), URL, Some("since"));
        prop_assert!(page.is_ok(), "{:?}", page.err());
        let page = page.expect("checked above");
        let read: Vec<(String, String, String)> = page.events.iter().map(|event| (event.id.clone(), event.contact_key.clone(), event.timestamp.clone())).collect();
        let expected: Vec<(String, String, String)> = events.iter().map(|event| (event.id.clone(), event.contact.clone(), event.at.to_rfc3339_opts(SecondsFormat::Millis, true))).collect();
        prop_assert_eq!(read, expected);
        let expected_cursor = last.or_else(|| events.len().checked_sub(1).map(|index| format!("p{index}"))).unwrap_or_else(|| "since".to_owned());
        prop_assert_eq!(page.cursor, Some(expected_cursor));
    }

    #[test]
    fn a_written_export_file_reads_back_as_the_same_changes(
        rows in proptest::collection::vec(opt_out_change(), 0..8),
        crlf in any::<bool>(),
        bom in any::<bool>(),
    ) {
        let mut writer = csv::WriterBuilder::new()
            .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
            .from_writer(Vec::new());
        writer.write_record(["crmId", "attribute", "value", "changedAt"]).expect("in memory");
        for (change, written_at) in &rows {
            writer
                .write_record([&change.contact_key, &change.attribute, &change.value.to_string(), written_at])
                .expect("in memory");
        }
        let mut bytes = if bom { "\u{feff}".as_bytes().to_vec() } else { Vec::new() };
        bytes.extend(writer.into_inner().expect("in memory"));
        let read = parse_export("optout_x.csv", &bytes);
        prop_assert!(read.is_ok(), "{}\n{:?}", String::from_utf8_lossy(&bytes), read.err());
        let expected: Vec<OptOutChange> = rows.into_iter().map(|(change, _)| change).collect();
        prop_assert_eq!(read.expect("checked above"), expected);
    }

    #[test]
    fn only_black_list_names_and_ccpa_are_opt_out_attributes(name in "[a-zA-Z]{0,16}") {
        let expected = name == "ccpaOptOut" || name.starts_with("blackList");
        prop_assert_eq!(is_opt_out_attribute(&name), expected);
    }
}
