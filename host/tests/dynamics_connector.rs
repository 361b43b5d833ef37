//! The Dynamics 365 connector against the simulator over loopback HTTP: paging, deletes,
//! expired cursors, retries, pacing under service-protection limits, token refresh,
//! malformed responses and per-record `$batch` outcomes.

use std::time::Duration;

use conduit_connectors::dynamics365::{Dynamics365Connector, Dynamics365Settings};
use conduit_connectors::http::{RetryPolicy, Secret};
use conduit_connectors::{
    ChangeRequest, ChangeSource, ConnectorError, FieldKind, RecordSink, WriteOutcome,
};
use conduit_model::{Operation, System, Target, Value, WriteRecord};
use conduit_sim::dynamics::{DynamicsSim, DynamicsSimOptions, SimServer, seeded_id};
use conduit_sim::faults::{FaultConfig, RequestWindowLimit};
use serde_json::json;

async fn start(contacts: usize) -> (DynamicsSim, SimServer) {
    let sim = DynamicsSim::new(DynamicsSimOptions {
        seed_contacts: contacts,
        seed_vehicles: 4,
        ..Default::default()
    });
    let server = sim
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serves");
    (sim, server)
}

fn settings(server: &SimServer) -> Dynamics365Settings {
    let mut settings = Dynamics365Settings::new(
        server.base_url(),
        server.token_url("contoso-tenant"),
        "conduit-sim-client",
        Secret::new("conduit-sim-secret"),
    );
    settings.retry = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(3),
    };
    settings
}

fn connector(server: &SimServer) -> Dynamics365Connector {
    Dynamics365Connector::new(settings(server)).expect("valid settings")
}

fn contacts(columns: &[&str], page_size: u32) -> ChangeRequest {
    ChangeRequest {
        table: "contact".to_string(),
        columns: columns
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
        page_size,
    }
}

async fn read_to_end(
    connector: &Dynamics365Connector,
    request: &ChangeRequest,
    mut cursor: Option<String>,
) -> (Vec<conduit_model::Row>, String, usize) {
    let mut rows = Vec::new();
    let mut pages = 0;
    loop {
        let page = connector
            .read_changes(request, cursor.as_deref())
            .await
            .expect("page reads");
        pages += 1;
        rows.extend(page.batch.rows);
        cursor = Some(page.cursor.clone());
        if page.caught_up {
            return (rows, page.cursor, pages);
        }
    }
}

fn object(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    value.as_object().cloned().expect("an object")
}

#[tokio::test]
async fn full_read_pages_through_every_row_and_converts_types() {
    let (_sim, server) = start(1_050).await;
    let connector = connector(&server);
    let request = contacts(
        &[
            "firstname",
            "gendercode",
            "statecode",
            "donotemail",
            "creditlimit",
            "numberofchildren",
            "birthdate",
        ],
        100,
    );
    let (rows, cursor, pages) = read_to_end(&connector, &request, None).await;
    assert_eq!(pages, 11);
    assert_eq!(rows.len(), 1_050);
    assert!(cursor.contains("$deltatoken="), "{cursor}");
    let keys: std::collections::HashSet<&str> = rows.iter().map(|row| row.key.as_str()).collect();
    assert_eq!(keys.len(), 1_050);
    let inactive = rows
        .iter()
        .find(|row| row.key == seeded_id("contact", 9))
        .expect("seeded row");
    assert_eq!(
        inactive.values[2],
        Value::Picklist {
            value: 1,
            label: Some("Inactive".to_string())
        }
    );
    assert!(matches!(inactive.values[3], Value::Boolean(_)));
    assert!(matches!(inactive.values[4], Value::Decimal(_)));
    assert!(matches!(inactive.values[5], Value::Integer(_)));
    assert!(matches!(&inactive.values[6], Value::Datetime(date) if date.len() == 10));
    assert!(inactive.modified_at.is_some());
    let male = rows
        .iter()
        .find(|row| row.key == seeded_id("contact", 1))
        .expect("seeded row");
    assert_eq!(
        male.values[1],
        Value::Picklist {
            value: 1,
            label: Some("Male".to_string())
        }
    );
}

#[tokio::test]
async fn deletes_arrive_through_change_tracking_after_the_upserts() {
    let (sim, server) = start(20).await;
    let connector = connector(&server);
    let request = contacts(&["lastname"], 5000);
    let (_, delta, _) = read_to_end(&connector, &request, None).await;
    sim.delete("contact", &seeded_id("contact", 3))
        .expect("exists");
    sim.upsert(
        "contact",
        &seeded_id("contact", 4),
        object(json!({"lastname": "Renamed"})),
    )
    .expect("valid");
    let page = connector
        .read_changes(&request, Some(&delta))
        .await
        .expect("delta reads");
    assert!(page.caught_up);
    let rows = page.batch.rows;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].op, rows[0].key.as_str()),
        (Operation::Upsert, seeded_id("contact", 4).as_str())
    );
    assert_eq!(rows[0].values, vec![Value::Text("Renamed".to_string())]);
    assert_eq!(
        (rows[1].op, rows[1].key.as_str()),
        (Operation::Delete, seeded_id("contact", 3).as_str())
    );
    assert_eq!(rows[1].values, vec![Value::Null]);
}

#[tokio::test]
async fn expired_delta_token_triggers_cursor_expired() {
    let (sim, server) = start(3).await;
    let connector = connector(&server);
    let request = contacts(&["lastname"], 5000);
    let (_, delta, _) = read_to_end(&connector, &request, None).await;
    sim.advance_clock(Duration::from_secs(8 * 24 * 3600));
    let error = connector
        .read_changes(&request, Some(&delta))
        .await
        .expect_err("expired");
    assert!(
        matches!(error, ConnectorError::CursorExpired { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_until_the_read_succeeds() {
    let (sim, server) = start(3).await;
    let connector = connector(&server);
    connector.table("contact").await.expect("metadata");
    sim.faults()
        .update(|faults| faults.error_burst = 3)
        .expect("valid");
    let page = connector
        .read_changes(&contacts(&["lastname"], 5000), None)
        .await
        .expect("retried");
    assert_eq!(page.batch.rows.len(), 3);
    assert_eq!(sim.faults().stats().server_errors, 3);
}

#[tokio::test]
async fn dropped_connections_are_transient_and_retried() {
    let (sim, server) = start(2).await;
    let connector = connector(&server);
    connector.table("contact").await.expect("metadata");
    sim.faults()
        .update(|faults| faults.reset_burst = 2)
        .expect("valid");
    let page = connector
        .read_changes(&contacts(&["lastname"], 5000), None)
        .await
        .expect("retried");
    assert_eq!(page.batch.rows.len(), 2);
    assert_eq!(sim.faults().stats().resets, 2);
}

#[tokio::test]
async fn throttled_writer_paces_itself_and_finishes_without_a_retry_storm() {
    let (sim, server) = start(0).await;
    let mut settings = settings(&server);
    settings.batch_size = 25;
    settings.max_concurrency = 4;
    let connector = Dynamics365Connector::new(settings).expect("valid");
    connector.table("contact").await.expect("metadata");
    sim.faults()
        .set(FaultConfig {
            request_limit: Some(RequestWindowLimit {
                max_requests: 10,
                window_ms: 1_000,
            }),
            concurrency_limit: Some(4),
            ..FaultConfig::default()
        })
        .expect("valid");
    let records: Vec<WriteRecord> = (0..600)
        .map(|n| WriteRecord {
            target: Target {
                system: System::Dynamics,
                table: "contacts".to_string(),
                key_field: "contactid".to_string(),
            },
            key: format!("00000000-0000-4000-8000-{n:012}"),
            op: Operation::Upsert,
            fields: vec![("lastname".to_string(), Value::Text(format!("Paced {n}")))],
        })
        .collect();
    let outcomes = connector.write(&records).await;
    assert!(
        outcomes
            .iter()
            .all(|outcome| *outcome == WriteOutcome::Written),
        "{outcomes:?}"
    );
    assert_eq!(sim.count("contact"), 600);
    let stats = sim.faults().stats();
    // 24 batches at 10 per second: the shared pause keeps 429s to a few per window.
    assert!(stats.throttled <= 24, "{stats:?}");
    assert!(stats.max_in_flight <= 4, "{stats:?}");
    assert_eq!(stats.limit_hits, stats.throttled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_never_exceeds_the_configured_limit() {
    let (sim, server) = start(10).await;
    let mut settings = settings(&server);
    settings.max_concurrency = 3;
    let connector = Dynamics365Connector::new(settings).expect("valid");
    connector.table("contact").await.expect("metadata");
    sim.faults()
        .set(FaultConfig {
            concurrency_limit: Some(3),
            latency_ms: 20,
            ..FaultConfig::default()
        })
        .expect("valid");
    let request = contacts(&["lastname"], 5000);
    let reads = (0..12).map(|_| connector.read_changes(&request, None));
    for result in futures_join(reads).await {
        result.expect("every read succeeds");
    }
    let stats = sim.faults().stats();
    assert_eq!(stats.limit_hits, 0, "{stats:?}");
    assert!(
        (2..=3).contains(&stats.max_in_flight),
        "requests did overlap, within the limit: {stats:?}"
    );
}

/// Runs futures concurrently on this task (the connector is borrowed, not 'static).
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut pending = false;
        for (index, future) in pinned.iter_mut().enumerate() {
            if outputs[index].is_none() {
                match future.as_mut().poll(context) {
                    std::task::Poll::Ready(output) => outputs[index] = Some(output),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test]
async fn revoked_token_is_refreshed_once_and_the_call_succeeds() {
    let (sim, server) = start(2).await;
    let connector = connector(&server);
    connector.check().await.expect("credentials work");
    sim.revoke_tokens();
    connector.check().await.expect("refreshed after a 401");
    sim.advance_clock(Duration::from_secs(2 * 3600));
    assert_eq!(
        connector
            .count_rows("contact")
            .await
            .expect("refreshed after expiry"),
        2
    );
}

#[tokio::test]
async fn wrong_secret_is_an_auth_error_that_never_shows_the_secret() {
    let (_sim, server) = start(0).await;
    let mut settings = settings(&server);
    settings.client_secret = Secret::new("very-wrong-secret");
    let connector = Dynamics365Connector::new(settings).expect("valid");
    let error = connector.check().await.expect_err("refused");
    assert!(matches!(error, ConnectorError::Auth { .. }), "{error:?}");
    assert!(error.to_string().contains("AADSTS7000215"), "{error}");
    assert!(!error.to_string().contains("very-wrong-secret"));
}

#[tokio::test]
async fn batch_with_failing_parts_gives_one_outcome_per_record() {
    let (sim, server) = start(2).await;
    let connector = connector(&server);
    let contact = seeded_id("contact", 0);
    let target = |table: &str, key_field: &str| Target {
        system: System::Dynamics,
        table: table.to_string(),
        key_field: key_field.to_string(),
    };
    let missing = "55555555-5555-4555-8555-555555555555";
    let records = vec![
        WriteRecord {
            target: target("contacts", "contactid"),
            key: contact.clone(),
            op: Operation::Upsert,
            fields: vec![("firstname".to_string(), Value::Text("First".to_string()))],
        },
        WriteRecord {
            target: target("contacts", "contactid"),
            key: missing.to_string(),
            op: Operation::Upsert,
            fields: vec![(
                "gendercode".to_string(),
                Value::Picklist {
                    value: 9,
                    label: None,
                },
            )],
        },
        WriteRecord {
            target: target("contacts", "contactid"),
            key: missing.to_string(),
            op: Operation::Update,
            fields: vec![("firstname".to_string(), Value::Text("Never".to_string()))],
        },
        WriteRecord {
            target: target("contacts", "contactid"),
            key: "66666666-6666-4666-8666-666666666666".to_string(),
            op: Operation::Update,
            fields: vec![("firstname".to_string(), Value::Text("Never".to_string()))],
        },
        WriteRecord {
            target: target("contacts", "contactid"),
            key: "77777777-7777-4777-8777-777777777777".to_string(),
            op: Operation::Delete,
            fields: vec![],
        },
        WriteRecord {
            target: target("contacts", "contactid"),
            key: contact.clone(),
            op: Operation::Upsert,
            fields: vec![("firstname".to_string(), Value::Text("Second".to_string()))],
        },
        WriteRecord {
            target: target("contacts", "emailaddress1"),
            key: "alt@example.com".to_string(),
            op: Operation::Upsert,
            fields: vec![("lastname".to_string(), Value::Text("ByAltKey".to_string()))],
        },
        WriteRecord {
            target: target("adobe_emailsends", "activityid"),
            key: "88888888-8888-4888-8888-888888888888".to_string(),
            op: Operation::Upsert,
            fields: vec![
                (
                    "subject".to_string(),
                    Value::Text("Campaign Name: C1; Delivery Name: D1".to_string()),
                ),
                (
                    "regardingobjectid_contact".to_string(),
                    Value::Lookup {
                        table: "contact".to_string(),
                        id: contact.clone(),
                    },
                ),
                (
                    "adobe_datesent".to_string(),
                    Value::Datetime("2026-01-02T03:04:05Z".to_string()),
                ),
            ],
        },
    ];
    let outcomes = connector.write(&records).await;
    assert_eq!(outcomes.len(), records.len());
    assert_eq!(outcomes[0], WriteOutcome::Written);
    assert!(
        matches!(&outcomes[1], WriteOutcome::Failed(ConnectorError::Permanent { message }) if message.contains("outside the valid range")),
        "{:?}",
        outcomes[1]
    );
    // Same key as the failed record 1: held back so that order is kept, and retryable.
    assert!(
        matches!(&outcomes[2], WriteOutcome::Failed(error) if error.is_transient()),
        "{:?}",
        outcomes[2]
    );
    assert!(
        matches!(&outcomes[3], WriteOutcome::Failed(ConnectorError::Missing { message }) if message.contains("does not exist")),
        "{:?}",
        outcomes[3]
    );
    assert_eq!(
        outcomes[4],
        WriteOutcome::Written,
        "deleting a missing row is success"
    );
    assert_eq!(outcomes[5], WriteOutcome::Written);
    assert_eq!(outcomes[6], WriteOutcome::Written);
    assert_eq!(outcomes[7], WriteOutcome::Written);
    let rows = sim.rows("contact");
    let first = rows
        .iter()
        .find(|row| row["contactid"] == contact.as_str())
        .expect("exists");
    assert_eq!(
        first["firstname"], "Second",
        "writes of one key land in order"
    );
    assert!(
        rows.iter()
            .any(|row| row["emailaddress1"] == "alt@example.com" && row["lastname"] == "ByAltKey")
    );
    let activity = &sim.rows("adobe_emailsend")[0];
    assert_eq!(activity["_regardingobjectid_value"], contact.as_str());
    assert_eq!(activity["adobe_datesent"], "2026-01-02T03:04:05Z");
}

#[tokio::test]
async fn metadata_describes_fields_counts_rows_and_lists_picklist_options() {
    let (_sim, server) = start(7).await;
    let connector = connector(&server);
    let fields = ChangeSource::describe(&connector, "contact")
        .await
        .expect("described");
    let kind = |name: &str| {
        fields
            .iter()
            .find(|field| field.name == name)
            .map(|field| field.kind.clone())
    };
    assert_eq!(kind("birthdate"), Some(FieldKind::Date));
    assert_eq!(kind("modifiedon"), Some(FieldKind::Datetime));
    assert_eq!(kind("gendercode"), Some(FieldKind::Picklist));
    assert_eq!(kind("statecode"), Some(FieldKind::Picklist));
    assert_eq!(kind("creditlimit"), Some(FieldKind::Decimal));
    assert_eq!(kind("contactid"), Some(FieldKind::Guid));
    let vehicle = RecordSink::describe(&connector, "new_vehicles")
        .await
        .expect("by entity set too");
    assert!(
        vehicle
            .iter()
            .any(|field| field.name == "new_contactid" && field.kind == FieldKind::Lookup)
    );
    assert_eq!(connector.count_rows("contact").await.expect("counted"), 7);
    let options = connector
        .picklist_options("contact", "gendercode")
        .await
        .expect("options");
    let labels: Vec<(i64, &str)> = options
        .iter()
        .map(|o| (o.value, o.label.as_str()))
        .collect();
    assert_eq!(labels, vec![(1, "Male"), (2, "Female")]);
    let error = connector.describe_unknown().await;
    assert!(error.contains("nosuchtable"), "{error}");
}

trait DescribeUnknown {
    async fn describe_unknown(&self) -> String;
}

impl DescribeUnknown for Dynamics365Connector {
    async fn describe_unknown(&self) -> String {
        ChangeSource::describe(self, "nosuchtable")
            .await
            .expect_err("unknown")
            .to_string()
    }
}

#[tokio::test]
async fn schema_drift_is_visible_and_reads_name_the_missing_column() {
    let (sim, server) = start(3).await;
    let connector = connector(&server);
    let request = contacts(&["telephone1"], 5000);
    connector
        .read_changes(&request, None)
        .await
        .expect("column exists");
    sim.change_attribute(
        "contact",
        "telephone1",
        conduit_sim::dynamics::AttributeChange::Remove,
    )
    .expect("removable");
    let fields = RecordSink::describe(&connector, "contact")
        .await
        .expect("described");
    assert!(fields.iter().all(|field| field.name != "telephone1"));
    let error = connector
        .read_changes(&request, None)
        .await
        .expect_err("column gone");
    assert!(error.to_string().contains("telephone1"), "{error}");
}

/// A fake service answering the token endpoint properly and everything else with junk.
async fn junk_server(body: &'static str, content_type: &'static str) -> String {
    use axum::routing::{any, post};
    let router = axum::Router::new()
        .route(
            "/{tenant}/oauth2/v2.0/token",
            post(|| async {
                axum::Json(json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "t"}))
            }),
        )
        .fallback(any(move || async move {
            ([("content-type", content_type)], body)
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}/")
}

#[tokio::test]
async fn malformed_responses_become_clear_retryable_errors() {
    let base = junk_server("<html>login page</html>", "text/html").await;
    let mut settings = Dynamics365Settings::new(
        &base,
        format!("{base}t/oauth2/v2.0/token"),
        "id",
        Secret::new("s"),
    );
    settings.retry.max_attempts = 1;
    let connector = Dynamics365Connector::new(settings.clone()).expect("valid");
    let error = connector
        .read_changes(&contacts(&["lastname"], 10), None)
        .await
        .expect_err("junk");
    // A gateway's HTML page is a glitch to retry, not a verdict on the request.
    let ConnectorError::Transient { message, .. } = &error else {
        panic!("expected transient, got {error:?}")
    };
    assert!(message.contains("EntityDefinitions"), "{message}");
    assert!(message.contains("<html>"), "{message}");

    let base = junk_server(r#"{"LogicalName":"contact","EntitySetName":"contacts","PrimaryIdAttribute":"contactid","value":[]}"#, "application/json").await;
    let settings = Dynamics365Settings {
        base_url: base.clone(),
        token_url: format!("{base}t/oauth2/v2.0/token"),
        ..settings
    };
    let connector = Dynamics365Connector::new(settings).expect("valid");
    let record = WriteRecord {
        target: Target {
            system: System::Dynamics,
            table: "contacts".to_string(),
            key_field: "contactid".to_string(),
        },
        key: "99999999-9999-4999-8999-999999999999".to_string(),
        op: Operation::Delete,
        fields: vec![],
    };
    let outcomes = connector.write(&[record]).await;
    let WriteOutcome::Failed(ConnectorError::Transient { message, .. }) = &outcomes[0] else {
        panic!("expected a transient failure, got {outcomes:?}")
    };
    assert!(message.contains("$batch"), "{message}");
    let error = connector
        .read_changes(&contacts(&[], 10), None)
        .await
        .expect_err("no links");
    assert!(
        error
            .to_string()
            .contains("neither @odata.nextLink nor @odata.deltaLink"),
        "{error}"
    );
}

#[tokio::test]
async fn cursor_pointing_elsewhere_is_refused_so_the_token_never_leaves() {
    let (_sim, server) = start(1).await;
    let connector = connector(&server);
    let error = connector
        .read_changes(
            &contacts(&["lastname"], 10),
            Some("https://evil.example.com/api/data/v9.2/contacts?$deltatoken=1"),
        )
        .await
        .expect_err("foreign cursor");
    assert!(error.to_string().contains("evil.example.com"), "{error}");
}
