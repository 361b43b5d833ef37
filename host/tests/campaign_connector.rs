//! The Campaign connector against the Campaign simulator over loopback HTTP: writes (one call at a
//! known href or for a new key, the lookup fallback, update-only, deletes, per-key order),
//! listing, metadata, retries, 429 pacing, token refresh, malformed responses, the event journal
//! and opt-out exports.

use std::time::{Duration, Instant};

use conduit_connectors::campaign::{CampaignConnector, CampaignSettings};
use conduit_connectors::http::RetryPolicy;
use conduit_connectors::{
    ConnectorError, EventSource, FieldKind, Learnt, OptOutExportSource, RecordSink, WriteOutcome,
};
use conduit_model::{
    BounceDetail, EmailEvent, EmailEventKind, Operation, System, Target, Value, WriteRecord,
};
use conduit_sim::campaign::{CampaignSim, CampaignSimOptions, CampaignSimServer, FieldChange};
use conduit_sim::faults::{Fault, FaultConfig};
use serde_json::json;

struct Harness {
    sim: CampaignSim,
    server: CampaignSimServer,
    connector: CampaignConnector,
}

async fn harness_with(options: CampaignSimOptions) -> Harness {
    let sim = CampaignSim::new(options);
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut settings = sim_settings(&sim, &server);
    settings.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_secs(5),
    };
    let connector = CampaignConnector::new(settings).unwrap();
    Harness {
        sim,
        server,
        connector,
    }
}

async fn harness() -> Harness {
    harness_with(CampaignSimOptions::default()).await
}

fn profile(key: &str, op: Operation, fields: &[(&str, Value)]) -> WriteRecord {
    WriteRecord {
        target: Target {
            system: System::Campaign,
            table: "profile".into(),
            key_field: "externalId".into(),
        },
        key: key.into(),
        op,
        fields: fields
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect(),
    }
}

fn text(value: &str) -> Value {
    Value::Text(value.into())
}

fn failure(outcome: &WriteOutcome) -> &ConnectorError {
    match outcome {
        WriteOutcome::Failed(error) => error,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn upsert_posts_when_absent_then_patches_the_found_record() {
    let h = harness().await;
    let first = profile(
        "c-1",
        Operation::Upsert,
        &[
            ("firstName", text("Ada")),
            (
                "gender",
                Value::Picklist {
                    value: 2,
                    label: Some("female".into()),
                },
            ),
            ("birthDate", Value::Datetime("1815-12-10T00:00:00Z".into())),
            ("blackListEmail", Value::Boolean(false)),
        ],
    );
    assert_eq!(
        h.connector.write(&[first]).await,
        vec![WriteOutcome::Written]
    );
    let created = h.sim.find("profile", "c-1").unwrap();
    assert_eq!(created["firstName"], "Ada");
    assert_eq!(created["gender"], "female");
    assert_eq!(created["birthDate"], "1815-12-10");
    let pkey = created["PKey"].clone();

    let second = profile("c-1", Operation::Upsert, &[("lastName", text("Lovelace"))]);
    assert_eq!(
        h.connector.write(&[second]).await,
        vec![WriteOutcome::Written]
    );
    let records = h.sim.records("profile");
    assert_eq!(records.len(), 1, "the second upsert must PATCH, not POST");
    assert_eq!(records[0]["PKey"], pkey);
    assert_eq!(records[0]["lastName"], "Lovelace");
    assert_eq!(records[0]["firstName"], "Ada");
}

#[tokio::test]
async fn a_body_holds_each_field_once_with_its_last_value_and_the_record_s_own_key() {
    let h = harness().await;
    // A key field among the fields never overrides the record's key; a field named twice
    // goes out once, with its last value; text needing escapes arrives as it was.
    let awkward = "quote \" backslash \\ newline \n tab \t é 😀 \u{1}";
    let record = profile(
        "c-body",
        Operation::Upsert,
        &[
            ("externalId", text("not-the-key")),
            ("firstName", text("first")),
            ("lastName", text(awkward)),
            ("firstName", text("last")),
            ("blackListEmail", Value::Boolean(true)),
        ],
    );
    assert_eq!(
        h.connector.write(std::slice::from_ref(&record)).await,
        vec![WriteOutcome::Written]
    );
    assert!(h.sim.find("profile", "not-the-key").is_none());
    let created = h.sim.find("profile", "c-body").expect("created by its key");
    assert_eq!(created["firstName"], "last");
    assert_eq!(created["lastName"], awkward);
    assert_eq!(created["blackListEmail"], true);
    // The same holds for a PATCH.
    let mut again = record;
    again.fields.push(("lastName".into(), text("patched")));
    assert_eq!(
        h.connector.write(&[again]).await,
        vec![WriteOutcome::Written]
    );
    let records = h.sim.records("profile");
    assert_eq!(records.len(), 1, "the second write PATCHes");
    assert_eq!(records[0]["lastName"], "patched");
    assert_eq!(records[0]["externalId"], "c-body");
}

#[tokio::test]
async fn update_only_on_a_missing_profile_is_missing_naming_the_key() {
    let h = harness().await;
    let outcomes = h
        .connector
        .write(&[profile(
            "ghost",
            Operation::Update,
            &[("firstName", text("X"))],
        )])
        .await;
    let error = failure(&outcomes[0]);
    assert!(
        matches!(error, ConnectorError::Missing { .. }),
        "the engine waits for a missing record: {error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("no profile with externalId \"ghost\""),
        "{error}"
    );
    assert!(h.sim.records("profile").is_empty());
}

#[tokio::test]
async fn update_only_patches_an_existing_profile() {
    let h = harness().await;
    h.sim
        .insert("profile", &json!({"externalId": "c-2", "firstName": "Old"}))
        .unwrap();
    let outcomes = h
        .connector
        .write(&[profile(
            "c-2",
            Operation::Update,
            &[("firstName", text("New"))],
        )])
        .await;
    assert_eq!(outcomes, vec![WriteOutcome::Written]);
    assert_eq!(h.sim.find("profile", "c-2").unwrap()["firstName"], "New");
}

#[tokio::test]
async fn delete_removes_the_record_and_an_absent_record_counts_as_deleted() {
    let h = harness().await;
    h.sim
        .insert("profile", &json!({"externalId": "c-3"}))
        .unwrap();
    let outcomes = h
        .connector
        .write(&[
            profile("c-3", Operation::Delete, &[]),
            profile("never-there", Operation::Delete, &[]),
        ])
        .await;
    assert_eq!(outcomes, vec![WriteOutcome::Written, WriteOutcome::Written]);
    assert!(h.sim.find("profile", "c-3").is_none());
}

#[tokio::test]
async fn same_key_writes_keep_their_order_under_concurrency() {
    let h = harness().await;
    let mut batch = Vec::new();
    for index in 0..40 {
        let key = format!("k-{}", index % 4);
        batch.push(profile(
            &key,
            Operation::Upsert,
            &[("firstName", text(&format!("v{index}")))],
        ));
    }
    batch.push(profile("k-0", Operation::Delete, &[]));
    let outcomes = h.connector.write(&batch).await;
    assert!(
        outcomes
            .iter()
            .all(|outcome| *outcome == WriteOutcome::Written)
    );
    assert!(h.sim.find("profile", "k-0").is_none());
    for (key, last) in [("k-1", "v37"), ("k-2", "v38"), ("k-3", "v39")] {
        assert_eq!(h.sim.find("profile", key).unwrap()["firstName"], last);
    }
    assert_eq!(h.sim.records("profile").len(), 3);
}

#[tokio::test]
async fn custom_resources_are_written_by_their_own_key() {
    let h = harness().await;
    let vehicle = WriteRecord {
        target: Target {
            system: System::Campaign,
            table: "cusVehicle".into(),
            key_field: "cusCrmId".into(),
        },
        key: "v-1".into(),
        op: Operation::Upsert,
        fields: vec![
            ("cusName".into(), text("Family car")),
            ("cusYear".into(), Value::Integer(2021)),
            (
                "cusProfileCrmId".into(),
                Value::Lookup {
                    table: "contact".into(),
                    id: "c-1".into(),
                },
            ),
        ],
    };
    assert_eq!(
        h.connector.write(&[vehicle]).await,
        vec![WriteOutcome::Written]
    );
    let stored = h.sim.find("cusVehicle", "v-1").unwrap();
    assert_eq!(stored["cusYear"], 2021);
    assert_eq!(stored["cusProfileCrmId"], "c-1");
}

#[tokio::test]
async fn service_refusals_are_permanent_with_campaigns_message() {
    let h = harness().await;
    let outcomes = h
        .connector
        .write(&[
            profile(
                "c-4",
                Operation::Upsert,
                &[("firstName", text(&"x".repeat(31)))],
            ),
            profile(
                "c-5",
                Operation::Upsert,
                &[("shoeSize", Value::Integer(44))],
            ),
        ])
        .await;
    let too_long = failure(&outcomes[0]);
    assert!(!too_long.is_transient());
    assert!(too_long.to_string().contains("maximum 30"), "{too_long}");
    let unknown = failure(&outcomes[1]);
    assert!(unknown.to_string().contains("RST-360011"), "{unknown}");
    assert!(unknown.to_string().contains("shoeSize"), "{unknown}");
}

#[tokio::test]
async fn writes_for_another_system_are_refused() {
    let h = harness().await;
    let mut record = profile("c-6", Operation::Upsert, &[]);
    record.target.system = System::Dynamics;
    let outcomes = h.connector.write(&[record]).await;
    assert!(
        failure(&outcomes[0])
            .to_string()
            .contains("reached the Campaign sink")
    );
}

#[tokio::test]
async fn listing_follows_next_href_across_many_pages() {
    let h = harness().await;
    for index in 0..137 {
        h.sim
            .insert(
                "cusVehicle",
                &json!({"cusCrmId": format!("v-{index}"), "cusYear": 2000 + index}),
            )
            .unwrap();
    }
    let served_before = h.sim.requests_served();
    let all = h.connector.list_all("cusVehicle", 10).await.unwrap();
    assert_eq!(all.len(), 137);
    assert_eq!(all[136]["cusCrmId"], "v-136");
    assert_eq!(h.sim.requests_served() - served_before, 14);
}

#[tokio::test]
async fn describe_reads_metadata_and_sees_schema_drift() {
    let h = harness().await;
    let fields = h.connector.describe("profile").await.unwrap();
    let kind = |name: &str| {
        fields
            .iter()
            .find(|field| field.name == name)
            .map(|field| field.kind.clone())
    };
    assert_eq!(kind("birthDate"), Some(FieldKind::Date));
    assert_eq!(kind("gender"), Some(FieldKind::Picklist));
    assert_eq!(kind("blackListEmail"), Some(FieldKind::Boolean));
    assert_eq!(kind("lastModified"), Some(FieldKind::Datetime));
    h.sim
        .change_field("profile", "phone", FieldChange::Remove)
        .unwrap();
    let fields = h.connector.describe("profile").await.unwrap();
    assert!(fields.iter().all(|field| field.name != "phone"));
    let error = h.connector.describe("cusNothing").await.unwrap_err();
    assert!(error.to_string().contains("cusNothing"), "{error}");
}

#[tokio::test]
async fn check_succeeds_with_good_credentials_and_fails_with_a_wrong_secret() {
    let h = harness().await;
    h.connector.check().await.unwrap();
    let mut settings = sim_settings(&h.sim, &h.server);
    settings.client_secret = conduit_connectors::http::Secret::new("wrong");
    let connector = CampaignConnector::new(settings).unwrap();
    let error = connector.check().await.unwrap_err();
    assert!(matches!(error, ConnectorError::Auth { .. }), "{error:?}");
    assert!(!format!("{error} {error:?}").contains("conduit-campaign-secret"));
}

#[tokio::test]
async fn server_errors_are_retried_until_they_pass() {
    let h = harness().await;
    h.sim.faults().inject([
        Fault::ServerError { status: 503 },
        Fault::ServerError { status: 502 },
    ]);
    let outcomes = h
        .connector
        .write(&[profile("c-7", Operation::Upsert, &[])])
        .await;
    assert_eq!(outcomes, vec![WriteOutcome::Written]);
    assert_eq!(h.sim.faults().stats().faults_injected(), 2);
}

#[tokio::test]
async fn persistent_server_errors_end_as_transient_failures() {
    let h = harness().await;
    h.sim
        .faults()
        .inject(std::iter::repeat_n(Fault::ServerError { status: 500 }, 3));
    let outcomes = h
        .connector
        .write(&[profile("c-8", Operation::Upsert, &[])])
        .await;
    let error = failure(&outcomes[0]);
    assert!(error.is_transient(), "{error:?}");
    assert!(error.to_string().contains("500"), "{error}");
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after_before_retrying() {
    let h = harness().await;
    h.connector.check().await.unwrap();
    h.sim.faults().inject([Fault::RateLimited {
        retry_after_secs: 1,
    }]);
    let started = Instant::now();
    let outcomes = h
        .connector
        .write(&[profile("c-9", Operation::Upsert, &[])])
        .await;
    assert_eq!(outcomes, vec![WriteOutcome::Written]);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After ignored"
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_we_wait_is_handed_to_the_engine() {
    let h = harness().await;
    h.sim.faults().inject([Fault::RateLimited {
        retry_after_secs: 120,
    }]);
    let outcomes = h
        .connector
        .write(&[profile("c-10", Operation::Upsert, &[])])
        .await;
    match failure(&outcomes[0]) {
        ConnectorError::Transient { retry_after, .. } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(120)));
        }
        other => panic!("expected Transient, got {other:?}"),
    }
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once_and_the_call_succeeds() {
    let h = harness().await;
    h.connector.check().await.unwrap();
    assert_eq!(h.sim.tokens_issued(), 1);
    h.sim.revoke_tokens();
    let outcomes = h
        .connector
        .write(&[profile("c-11", Operation::Upsert, &[])])
        .await;
    assert_eq!(outcomes, vec![WriteOutcome::Written]);
    assert_eq!(h.sim.tokens_issued(), 2);
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire() {
    let h = harness_with(CampaignSimOptions {
        token_ttl: Duration::from_secs(1),
        ..CampaignSimOptions::default()
    })
    .await;
    h.connector.check().await.unwrap();
    tokio::time::sleep(Duration::from_millis(950)).await;
    h.connector.check().await.unwrap();
    assert_eq!(h.sim.tokens_issued(), 2);
}

#[tokio::test]
async fn a_malformed_response_is_a_retryable_error_naming_the_url() {
    let h = harness().await;
    h.connector.describe("profile").await.unwrap();
    // The POST of the new key, then the lookup that follows an uncertain create, are answered
    // by a gateway's page.
    h.sim.faults().inject([Fault::Malformed, Fault::Malformed]);
    let outcomes = h
        .connector
        .write(&[profile("c-12", Operation::Upsert, &[])])
        .await;
    let error = failure(&outcomes[0]);
    // A gateway's garbage is retried, never a reason to dead-letter the record.
    assert!(error.is_transient());
    let message = error.to_string();
    assert!(message.contains("byExternalId"), "{message}");
    assert!(message.contains("expected a list"), "{message}");
}

#[tokio::test]
async fn a_gateway_page_answering_a_write_is_never_counted_as_written() {
    let h = harness().await;
    h.connector.describe("profile").await.unwrap();
    let write = |name: &str| profile("c-20", Operation::Upsert, &[("lastName", text(name))]);
    let results = h.connector.write_located(&[write("Old")], &[]).await;
    let href = vec![Some(taught_href(&results[0]))];

    // A gateway answers the PATCH at the known href `200` with a page: nothing is written.
    h.sim.faults().inject([Fault::Malformed]);
    let results = h.connector.write_located(&[write("New")], &href).await;
    let error = failure(&results[0].0);
    assert!(error.is_transient(), "{error:?}");
    assert!(error.to_string().contains("PKey"), "{error}");
    assert_eq!(h.sim.find("profile", "c-20").unwrap()["lastName"], "Old");
    let results = h.connector.write_located(&[write("New")], &href).await;
    assert_eq!(results[0].0, WriteOutcome::Written);
    assert_eq!(h.sim.find("profile", "c-20").unwrap()["lastName"], "New");

    // The same for a DELETE: the profile is still there, so the delete must be retried.
    h.sim.faults().inject([Fault::Malformed]);
    let delete = profile("c-20", Operation::Delete, &[]);
    let results = h
        .connector
        .write_located(std::slice::from_ref(&delete), &href)
        .await;
    assert!(failure(&results[0].0).is_transient());
    assert!(h.sim.find("profile", "c-20").is_some());
    assert_eq!(
        h.connector.write(&[delete]).await,
        vec![WriteOutcome::Written]
    );
    assert!(h.sim.find("profile", "c-20").is_none());

    // A create answered by a page is looked up again and made once.
    h.sim.faults().inject([Fault::Malformed]);
    let create = profile("c-21", Operation::Upsert, &[("lastName", text("Made"))]);
    assert_eq!(
        h.connector.write(&[create]).await,
        vec![WriteOutcome::Written]
    );
    assert_eq!(h.sim.find("profile", "c-21").unwrap()["lastName"], "Made");
    assert_eq!(h.sim.records("profile").len(), 1);
}

#[tokio::test]
async fn dropped_connections_are_retried() {
    let h = harness().await;
    h.connector.check().await.unwrap();
    h.sim.faults().inject([Fault::Reset]);
    let outcomes = h
        .connector
        .write(&[profile("c-13", Operation::Upsert, &[])])
        .await;
    assert_eq!(outcomes, vec![WriteOutcome::Written]);
    h.sim.faults().inject(std::iter::repeat_n(Fault::Reset, 3));
    let error = h.connector.list_all("profile", 5).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
}

#[tokio::test]
async fn a_create_whose_response_is_lost_is_found_and_not_duplicated() {
    let h = harness().await;
    h.connector.describe("profile").await.unwrap();
    // The POST of the new key creates the profile but its response never arrives: the key is
    // looked up, found and updated, never created twice.
    h.sim.faults().inject([Fault::LostResponse]);
    let outcomes = h
        .connector
        .write(&[profile(
            "c-14",
            Operation::Upsert,
            &[("firstName", text("Once"))],
        )])
        .await;
    assert_eq!(outcomes, vec![WriteOutcome::Written]);
    assert_eq!(h.sim.faults().stats().faults_injected(), 1);
    assert_eq!(h.sim.records("profile").len(), 1);
    assert_eq!(h.sim.find("profile", "c-14").unwrap()["firstName"], "Once");
}

#[tokio::test]
async fn random_faults_never_lose_or_duplicate_records_once_transients_are_retried() {
    let h = harness().await;
    h.connector.describe("profile").await.unwrap();
    h.sim
        .faults()
        .set(FaultConfig {
            error_rate: 0.15,
            reset_rate: 0.05,
            ..FaultConfig::default()
        })
        .unwrap();
    let mut pending: Vec<WriteRecord> = (0..150)
        .map(|index| {
            profile(
                &format!("chaos-{index}"),
                Operation::Upsert,
                &[("firstName", text(&format!("n{index}")))],
            )
        })
        .collect();
    // What the engine does: keep transient failures queued and write them again.
    for _round in 0..10 {
        if pending.is_empty() {
            break;
        }
        let outcomes = h.connector.write(&pending).await;
        let mut still_pending = Vec::new();
        for (record, outcome) in pending.into_iter().zip(outcomes) {
            match outcome {
                WriteOutcome::Written => {}
                WriteOutcome::Failed(error) if error.is_transient() => still_pending.push(record),
                WriteOutcome::Failed(error) => panic!("permanent failure under faults: {error}"),
                WriteOutcome::NotYet { reason, .. } => panic!("put off under faults: {reason}"),
            }
        }
        pending = still_pending;
    }
    assert!(
        pending.is_empty(),
        "{} records never written",
        pending.len()
    );
    assert!(h.sim.faults().stats().faults_injected() > 0);
    h.sim.faults().clear();
    let records = h.sim.records("profile");
    assert_eq!(records.len(), 150);
    for index in [0, 77, 149] {
        let stored = h.sim.find("profile", &format!("chaos-{index}")).unwrap();
        assert_eq!(stored["firstName"], format!("n{index}"));
    }
}

fn event(id: &str, kind: EmailEventKind) -> EmailEvent {
    EmailEvent {
        id: id.into(),
        kind,
        contact_key: "c-1".into(),
        campaign_id: "CMP1".into(),
        campaign_name: "Spring".into(),
        delivery_id: "DM1".into(),
        delivery_name: "Newsletter".into(),
        timestamp: "2026-03-01T10:00:00.000Z".into(),
        url: (kind == EmailEventKind::Click).then(|| "https://example.com/offer".into()),
        mirror_page_url: Some("https://mirror.example.com/DM1".into()),
        bounce: (kind == EmailEventKind::Bounce).then(|| BounceDetail {
            hard: true,
            reason: "User unknown".into(),
        }),
    }
}

#[tokio::test]
async fn journal_pages_continue_from_the_cursor_and_empty_reads_keep_it() {
    let h = harness_with(CampaignSimOptions {
        seed_events: vec![
            event("e-1", EmailEventKind::Send),
            event("e-2", EmailEventKind::Open),
        ],
        ..CampaignSimOptions::default()
    })
    .await;
    h.sim.emit_event(&event("e-3", EmailEventKind::Click));
    h.sim.emit_event(&event("e-4", EmailEventKind::Bounce));
    h.sim.emit_event(&event("e-5", EmailEventKind::Send));

    let first = h.connector.read_events(None, 2).await.unwrap();
    let ids: Vec<_> = first.events.iter().map(|event| event.id.as_str()).collect();
    assert_eq!(ids, ["e-1", "e-2"]);
    let second = h
        .connector
        .read_events(first.cursor.as_deref(), 2)
        .await
        .unwrap();
    assert_eq!(second.events[0], event("e-3", EmailEventKind::Click));
    assert_eq!(second.events[1], event("e-4", EmailEventKind::Bounce));
    let third = h
        .connector
        .read_events(second.cursor.as_deref(), 10)
        .await
        .unwrap();
    assert_eq!(third.events.len(), 1);
    let empty = h
        .connector
        .read_events(third.cursor.as_deref(), 10)
        .await
        .unwrap();
    assert!(empty.events.is_empty());
    assert_eq!(empty.cursor, third.cursor);
    h.sim.emit_event(&event("e-6", EmailEventKind::Open));
    let later = h
        .connector
        .read_events(empty.cursor.as_deref(), 10)
        .await
        .unwrap();
    assert_eq!(later.events[0].id, "e-6");
}

#[tokio::test]
async fn a_malformed_journal_event_is_a_clear_error_naming_its_position() {
    let h = harness().await;
    h.sim
        .emit_raw_event(json!({"id": "e-x", "kind": "forward"}));
    let error = h.connector.read_events(None, 10).await.unwrap_err();
    assert!(!error.is_transient());
    let message = error.to_string();
    assert!(message.contains("position"), "{message}");
    assert!(
        message.contains("profileCrmId") || message.contains("forward"),
        "{message}"
    );
}

#[tokio::test]
async fn opt_out_exports_are_read_in_order_with_the_file_name_as_cursor() {
    let h = harness().await;
    for key in ["c-1", "c-2"] {
        h.sim
            .insert("profile", &json!({"externalId": key}))
            .unwrap();
    }
    let nothing = h.connector.read_next_export(None).await.unwrap();
    assert_eq!(nothing.cursor, None);

    h.sim.set_opt_out("c-1", "blackListEmail", true).unwrap();
    h.sim.set_opt_out("c-2", "ccpaOptOut", true).unwrap();
    let first_file = h.sim.drop_opt_out_export().unwrap();
    h.sim.set_opt_out("c-1", "blackListEmail", false).unwrap();
    h.sim.drop_opt_out_export().unwrap();

    let first = h.connector.read_next_export(None).await.unwrap();
    assert_eq!(
        first.cursor.as_deref(),
        first_file.file_name().and_then(|name| name.to_str())
    );
    assert_eq!(first.changes.len(), 2);
    assert_eq!(first.changes[0].contact_key, "c-1");
    assert!(first.changes[0].value);
    assert_eq!(
        Some(first.changes[1].changed_at.clone()),
        h.sim.opt_out_changed_at("c-2", "ccpaOptOut"),
        "the export carries Campaign's attribute-level change time"
    );
    assert_eq!(h.sim.find("profile", "c-2").unwrap()["ccpaOptOut"], true);

    let second = h
        .connector
        .read_next_export(first.cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(second.changes.len(), 1);
    assert!(!second.changes[0].value);
    let done = h
        .connector
        .read_next_export(second.cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(done.cursor, None);
    assert!(done.changes.is_empty());
}

#[tokio::test]
async fn a_malformed_export_file_names_file_line_and_column() {
    let h = harness().await;
    let folder = h.sim.drop_root().join("d365_loads/exports");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("optout_20260101T000000Z.csv"),
        "crmId,attribute,value,changedAt\nc-1,blackListEmail,true,2026-01-01T00:00:00Z\nc-2,blackListFax,true,last tuesday\n",
    )
    .unwrap();
    std::fs::write(folder.join("notes.txt"), "not an export").unwrap();
    let error = h.connector.read_next_export(None).await.unwrap_err();
    assert!(!error.is_transient());
    assert!(
        error
            .to_string()
            .contains("optout_20260101T000000Z.csv line 3 column 4 (changedAt)"),
        "{error}"
    );
}

/// Connector settings that point at a running Campaign simulator.
fn sim_settings(sim: &CampaignSim, server: &CampaignSimServer) -> CampaignSettings {
    let url = |text: String| url::Url::parse(&text).expect("the simulator's URLs parse");
    CampaignSettings {
        api_base: url(server.api_base()),
        ims_token_url: url(server.ims_url()),
        client_id: sim.client_id().to_owned(),
        client_secret: conduit_connectors::http::Secret::new(sim.client_secret()),
        scopes: vec!["openid".into(), "AdobeID".into(), "campaign_sdk".into()],
        max_concurrency: 8,
        events_journal_url: url(server.journal_url()),
        opt_out_drop_root: sim.drop_root(),
        extra_ca_pem: None,
        retry: conduit_connectors::http::RetryPolicy::default(),
        request_timeout: Duration::from_secs(30),
    }
}

/// The href a write taught, or a failure naming what it taught instead.
fn taught_href(result: &(WriteOutcome, Learnt)) -> String {
    match result {
        (WriteOutcome::Written, Learnt::At(href)) => href.clone(),
        other => panic!("expected a write that taught an href, got {other:?}"),
    }
}

#[tokio::test]
async fn writes_with_known_hrefs_and_new_keys_cost_one_call_and_stale_hints_fall_back() {
    let h = harness().await;
    // The first write reads the resource's metadata once; count from after it.
    let warm_up = profile("warm", Operation::Upsert, &[("firstName", text("W"))]);
    assert_eq!(h.connector.write(&[warm_up]).await, [WriteOutcome::Written]);

    // New keys: one POST each, and each write says where its record now lives.
    let keys: Vec<String> = (0..12).map(|i| format!("new-{i}")).collect();
    let created: Vec<WriteRecord> = keys
        .iter()
        .map(|key| profile(key, Operation::Upsert, &[("firstName", text("Ann"))]))
        .collect();
    let before = h.sim.requests_served();
    let results = h.connector.write_located(&created, &[]).await;
    assert_eq!(h.sim.requests_served() - before, 12, "one call per new key");
    let hrefs: Vec<String> = results.iter().map(taught_href).collect();
    for (key, href) in keys.iter().zip(&hrefs) {
        let record = h.sim.find("profile", key).unwrap();
        assert_eq!(record["href"].as_str(), Some(href.as_str()));
    }

    // Known hrefs: one PATCH each, no lookup, and the record is updated in place.
    let updated: Vec<WriteRecord> = keys
        .iter()
        .map(|key| profile(key, Operation::Upsert, &[("lastName", text("Lee"))]))
        .collect();
    let known: Vec<Option<String>> = hrefs.iter().cloned().map(Some).collect();
    let before = h.sim.requests_served();
    let results = h.connector.write_located(&updated, &known).await;
    assert_eq!(
        h.sim.requests_served() - before,
        12,
        "one call per known key"
    );
    assert_eq!(results.iter().map(taught_href).collect::<Vec<_>>(), hrefs);
    assert_eq!(h.sim.records("profile").len(), 13);
    let first = h.sim.find("profile", "new-0").unwrap();
    assert_eq!(
        (&first["firstName"], &first["lastName"]),
        (&json!("Ann"), &json!("Lee"))
    );

    // A key that exists but is not known (made in Campaign, or its href lost in a crash): the
    // POST is refused as a duplicate, the key is looked up and PATCHed. Never a second record.
    h.sim
        .insert(
            "profile",
            &json!({"externalId": "theirs", "firstName": "Old"}),
        )
        .unwrap();
    let theirs = profile("theirs", Operation::Upsert, &[("firstName", text("New"))]);
    let before = h.sim.requests_served();
    let results = h
        .connector
        .write_located(std::slice::from_ref(&theirs), &[None])
        .await;
    assert_eq!(h.sim.requests_served() - before, 3, "POST, lookup, PATCH");
    let found = h.sim.find("profile", "theirs").unwrap();
    assert_eq!(taught_href(&results[0]), found["href"].as_str().unwrap());
    assert_eq!(found["firstName"], "New");
    let with_key = |key: &str| {
        h.sim
            .records("profile")
            .iter()
            .filter(|record| record["externalId"] == key)
            .count()
    };
    assert_eq!(with_key("theirs"), 1);

    // A stale href (the profile was deleted behind our back): found gone, the key is looked up
    // and the profile created again, with its new href taught.
    let stale = hrefs[1].clone();
    let delete = profile("new-1", Operation::Delete, &[]);
    let results = h.connector.write_located(&[delete], &[None]).await;
    assert_eq!(results[0], (WriteOutcome::Written, Learnt::Gone));
    assert!(h.sim.find("profile", "new-1").is_none());
    let again = profile("new-1", Operation::Upsert, &[("firstName", text("Back"))]);
    let results = h
        .connector
        .write_located(&[again], &[Some(stale.clone())])
        .await;
    let recreated = taught_href(&results[0]);
    assert_ne!(recreated, stale);
    assert_eq!(h.sim.find("profile", "new-1").unwrap()["firstName"], "Back");
    assert_eq!(with_key("new-1"), 1);

    // An update-only write with a stale href to a profile that is gone is still "missing".
    let gone = profile("new-2", Operation::Delete, &[]);
    h.connector
        .write_located(&[gone], &[Some(hrefs[2].clone())])
        .await;
    let update = profile("new-2", Operation::Update, &[("firstName", text("X"))]);
    let results = h
        .connector
        .write_located(&[update], &[Some(hrefs[2].clone())])
        .await;
    assert!(matches!(
        failure(&results[0].0),
        ConnectorError::Missing { .. }
    ));

    // A known delete is one call; an href of another origin is never followed (the write
    // falls back to the lookup on the configured instance).
    let before = h.sim.requests_served();
    let delete = profile("new-3", Operation::Delete, &[]);
    let results = h
        .connector
        .write_located(&[delete], &[Some(hrefs[3].clone())])
        .await;
    assert_eq!(results[0], (WriteOutcome::Written, Learnt::Gone));
    assert_eq!(h.sim.requests_served() - before, 1);
    let foreign = "https://elsewhere.example/profileAndServicesExt/profile/@x".to_string();
    let update = profile("new-4", Operation::Upsert, &[("firstName", text("Safe"))]);
    let results = h.connector.write_located(&[update], &[Some(foreign)]).await;
    assert_eq!(taught_href(&results[0]), hrefs[4]);
    assert_eq!(h.sim.find("profile", "new-4").unwrap()["firstName"], "Safe");
    // Hrefs are scoped to the instance they came from.
    let scope = h.connector.location_scope().unwrap();
    assert!(scope.contains(&h.server.api_base()), "{scope}");
}
