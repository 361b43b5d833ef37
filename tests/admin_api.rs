//! The admin HTTP API of the real `conduit run` process against both simulators: workflow
//! endpoints (list, show, start, stop, replay and its guards, config view), dead letters
//! (filters, paging, show, drop, retry), `/metrics` through a real Prometheus parser, the
//! token and cross-site guards, and the refusal to listen off loopback without a token.
//! Every answer is also read into the type the CLI reads it into (`conduit_admin::views`), so
//! the API and the CLI cannot drift apart.

use std::time::Duration;

use conduit_admin::views;
use conduit_e2e::{EGRESS, HostProcess, INGRESS_CONTACTS, INGRESS_VEHICLES, SimPair, free_port};
use conduit_sim::campaign::FieldChange;
use conduit_sim::campaign::FieldType;
use conduit_sim::faults::{Fault, FaultConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// Reads an answer of the API into the CLI's type for it and serialises it again: a field the
/// type lacks, names or types differently fails here, as would a field the type drops.
fn reads_as<T: DeserializeOwned + Serialize>(endpoint: &str, body: &Value) {
    let read: T = serde_json::from_value(body.clone())
        .unwrap_or_else(|error| panic!("{endpoint}: the CLI cannot read {body:#}: {error}"));
    assert_eq!(
        &serde_json::to_value(&read).unwrap(),
        body,
        "{endpoint}: the CLI's type does not hold the whole answer"
    );
}

/// A config whose admin API listens on `listen` instead of loopback.
fn config_text(sims: &SimPair, listen: &str, workflows: &str) -> String {
    let loopback = format!("admin_listen = \"127.0.0.1:{}\"", sims.admin_port);
    let sections = sims.connection_sections();
    assert!(sections.contains(&loopback), "{sections}");
    format!(
        "{}\n{workflows}",
        sections.replace(&loopback, &format!("admin_listen = \"{listen}\""))
    )
}

/// A contact id the simulator accepts, distinct from the seeded ones.
fn contact_id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// Starts ingress over the API and waits until it is RUNNING with an empty backlog and
/// `written` records written.
async fn run_ingress_until_written(host: &mut HostProcess, written: u64) -> Value {
    let (status, body) = host.post("/api/workflows/ingress/start").await;
    assert_eq!(status, 200, "{body}");
    host.wait_workflow("ingress", "the initial load", |view| {
        view["status"] == "RUNNING"
            && view["backlog"] == 0
            && view["counters"]["written"].as_u64() == Some(written)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_endpoints_list_show_start_replay_stop_and_view_config() {
    let sims = SimPair::start(20, 3).await;
    sims.write_config(&format!(
        "[limits]\nreplay_max_rows = 15\n\n{INGRESS_CONTACTS}{INGRESS_VEHICLES}{EGRESS}"
    ));
    let mut host = sims.spawn(&[]);
    host.wait_healthy().await;

    let (status, problems) = host.get_status("/api/config/problems").await;
    reads_as::<views::ProblemsView>("config problems", &problems);
    assert_eq!((status, problems), (200, json!({ "problems": [] })));

    let health = reqwest::get(format!("{}/healthz", host.admin))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    let all = host.get("/api/workflows").await;
    reads_as::<views::HostView>("workflows", &all);
    let ids: Vec<_> = all["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["id"].as_str().unwrap(), w["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ids,
        [
            ("ingress", "STOPPED"),
            ("egress", "STOPPED"),
            ("optinout", "STOPPED")
        ]
    );
    assert_eq!(all["config_problems"], json!([]));
    assert_eq!(all["workflows"][2]["configured"], false, "{all:#}");

    let ingress = host.workflow("ingress").await;
    reads_as::<views::WorkflowView>("one workflow", &ingress);
    assert_eq!(ingress["configured"], true, "{ingress:#}");
    assert_eq!(ingress["plugin"], "builtin:table-mapper", "{ingress:#}");
    let (status, body) = host.get_status("/api/workflows/sideways").await;
    assert_eq!(status, 404, "{body}");
    reads_as::<views::ErrorBody>("an unknown workflow", &body);
    assert!(
        body["error"].as_str().unwrap().contains("sideways"),
        "{body}"
    );

    let config = host.get("/api/workflows/ingress/config").await;
    reads_as::<views::ConfigSectionView>("config section", &config);
    assert_eq!(
        config["section"]["mappings"][0]["name"], "contacts",
        "{config:#}"
    );
    assert_eq!(
        config["section"]["mappings"][1]["name"], "vehicles",
        "{config:#}"
    );
    assert_eq!(config["pending_changes"], false, "{config:#}");
    assert_eq!(config["pending_summary"], json!([]), "{config:#}");

    // Replay: accepted under the guard, refused when pending, over the guard, unknown, or
    // on a workflow without table mappings.
    let (status, body) = host.post("/api/workflows/ingress/replay/vehicles").await;
    assert_eq!(status, 200, "{body}");
    reads_as::<views::MessageAnswer>("replay", &body);
    let mappings = host.get("/api/workflows/ingress/mappings").await;
    assert_eq!(mappings[1]["replay_pending"], true, "{mappings:#}");
    reads_as::<Vec<views::MappingView>>("mappings", &mappings);
    assert!(
        body["message"].as_str().unwrap().contains("accepted"),
        "{body}"
    );
    assert_eq!(
        host.workflow("ingress").await["pending_replays"],
        json!(["vehicles"])
    );
    let (status, body) = host.post("/api/workflows/ingress/replay/vehicles").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already pending"),
        "{body}"
    );
    let (status, body) = host.post("/api/workflows/ingress/replay/contacts").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("20 rows (the limit is 15)"),
        "{body}"
    );
    let (status, body) = host.post("/api/workflows/ingress/replay/accounts").await;
    assert_eq!(status, 409, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("no table mapping named 'accounts'"),
        "{body}"
    );
    assert!(message.contains("contacts, vehicles"), "{body}");
    let (status, body) = host.post("/api/workflows/egress/replay/contacts").await;
    assert_eq!(status, 409, "{body}");

    // Start: an unconfigured workflow is refused; ingress runs and loads everything.
    let (status, body) = host.post("/api/workflows/optinout/start").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("[optinout]"),
        "{body}"
    );
    let view = run_ingress_until_written(&mut host, 23).await;
    assert_eq!(view["counters"]["read"], 23, "{view:#}");
    reads_as::<views::WorkflowView>("a running workflow", &view);
    assert_eq!(sims.campaign.records("profile").len(), 20);
    assert_eq!(sims.campaign.records("cusVehicle").len(), 3);
    let (status, body) = host.post("/api/workflows/ingress/start").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("RUNNING")));
    reads_as::<views::StatusAnswer>("start", &body);

    let (status, body) = host.post("/api/workflows/ingress/stop").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "STOPPED");
    assert_eq!(host.workflow("ingress").await["status"], "STOPPED");
    let audit = host.get("/api/audit?limit=100").await;
    assert!(audit.as_array().is_some_and(|a| a.len() >= 5), "{audit:#}");
    reads_as::<Vec<views::AuditEntry>>("audit", &audit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_need_the_request_header_and_our_own_origin() {
    let sims = SimPair::start(0, 0).await;
    sims.write_config(INGRESS_CONTACTS);
    let mut host = sims.spawn(&[]);
    host.wait_healthy().await;
    let http = reqwest::Client::new();
    let stop = format!("{}/api/workflows/ingress/stop", host.admin);

    let bare = http.post(&stop).send().await.unwrap();
    assert_eq!(bare.status(), 403);
    let body: Value = bare.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("X-Conduit-Request"),
        "{body}"
    );
    let foreign = http
        .post(&stop)
        .header("x-conduit-request", "1")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let own = http
        .post(&stop)
        .header("x-conduit-request", "1")
        .header("origin", host.admin.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    // Reading is not a state change: no header needed.
    let read = http
        .get(format!("{}/api/workflows", host.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_admin_address_without_a_token_refuses_to_start() {
    let sims = SimPair::start(0, 0).await;
    let text = config_text(&sims, &format!("0.0.0.0:{}", free_port()), INGRESS_CONTACTS);
    std::fs::write(sims.config_path(), text).unwrap();
    let mut host = sims.spawn(&[]);
    let status = host
        .wait_exit(Duration::from_secs(30))
        .expect("the host refuses to start");
    assert!(!status.success());
    let output = host.output();
    assert!(output.contains("not loopback"), "{output}");
    assert!(output.contains("CONDUIT_ADMIN_TOKEN"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_call_but_healthz_and_readyz_needs_it() {
    let sims = SimPair::start(0, 0).await;
    // Plain HTTP off loopback needs the explicit opt-out (tests/admin_security.rs covers TLS).
    let text = config_text(
        &sims,
        &format!("0.0.0.0:{}", sims.admin_port),
        INGRESS_CONTACTS,
    )
    .replace("[host]\n", "[host]\nadmin_allow_plain_http = true\n");
    std::fs::write(sims.config_path(), text).unwrap();
    let mut host = sims.spawn(&[("CONDUIT_ADMIN_TOKEN", "the-right-token")]);
    // Only loopback traffic: the host listens on every interface, we call 127.0.0.1.
    host.wait_healthy().await;
    let http = reqwest::Client::new();
    let list = format!("{}/api/workflows", host.admin);

    let without = http.get(&list).send().await.unwrap();
    assert_eq!(without.status(), 401);
    let body: Value = without.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let wrong = http
        .get(&list)
        .bearer_auth("the-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let longer = http
        .get(&list)
        .bearer_auth("the-right-token-and-more")
        .send()
        .await
        .unwrap();
    assert_eq!(longer.status(), 401);
    let right = http
        .get(&list)
        .bearer_auth("the-right-token")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let metrics = http
        .get(format!("{}/metrics", host.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 401);
    // Readiness is for the kubelet's probes, like /healthz: no token.
    let ready = http
        .get(format!("{}/readyz", host.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // A backup holds every contact's data: the token, like any state change.
    let backup = http
        .post(format!("{}/api/backup", host.admin))
        .header("x-conduit-request", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(backup.status(), 401);

    let stop = format!("{}/api/workflows/ingress/stop", host.admin);
    let unauthorized_post = http
        .post(&stop)
        .header("x-conduit-request", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized_post.status(), 401);
    // With the token, the header is not needed (a cross-site form cannot send the token)...
    let authorized_post = http
        .post(&stop)
        .bearer_auth("the-right-token")
        .send()
        .await
        .unwrap();
    assert_eq!(authorized_post.status(), 200);
    // ... but a foreign Origin is still refused.
    let foreign = http
        .post(&stop)
        .bearer_auth("the-right-token")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_filter_page_show_drop_and_a_retry_delivers_once_the_cause_is_fixed() {
    let sims = SimPair::start(10, 0).await;
    let long_name = "Bartholomew-Maximilian-Alexander-Ferdinand";
    let ids: Vec<String> = (1..=3).map(contact_id).collect();
    for (n, id) in ids.iter().enumerate() {
        let mut fields = Map::new();
        fields.insert("firstname".into(), json!(format!("{long_name}{n}")));
        fields.insert("lastname".into(), json!("Long"));
        fields.insert(
            "emailaddress1".into(),
            json!(format!("long{n}@example.com")),
        );
        sims.dynamics.upsert("contact", id, fields).unwrap();
    }
    sims.write_config(INGRESS_CONTACTS);
    let mut host = sims.spawn(&[]);
    host.wait_healthy().await;
    let (status, body) = host.post("/api/workflows/ingress/start").await;
    assert_eq!(status, 200, "{body}");
    host.wait_workflow("ingress", "three refused writes", |view| {
        view["counters"]["dead_letters"] == 3 && view["backlog"] == 0
    })
    .await;

    let list = |query: &str| {
        let path = format!("/api/workflows/ingress/dead-letters{query}");
        let host = &host;
        async move {
            let (status, body) = host.get_status(&path).await;
            assert_eq!(status, 200, "{path}: {body}");
            body.as_array().unwrap().clone()
        }
    };
    let all = list("").await;
    assert_eq!(all.len(), 3, "{all:#?}");
    reads_as::<Vec<views::DeadLetter>>("dead letters", &Value::Array(all.clone()));
    for letter in &all {
        assert_eq!(letter["stage"], "write", "{letter:#}");
        assert_eq!(letter["origin"], "contacts", "{letter:#}");
        assert!(
            letter["reason"].as_str().unwrap().contains("too long"),
            "{letter:#}"
        );
    }
    let letter_ids: Vec<u64> = all.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert_eq!(list("?stage=write").await.len(), 3);
    assert_eq!(list("?stage=read").await.len(), 0);
    assert_eq!(list("?origin=contacts").await.len(), 3);
    assert_eq!(list("?origin=vehicles").await.len(), 0);
    assert_eq!(list("?reason=TOO%20LONG").await.len(), 3);
    assert_eq!(list("?reason=timeout").await.len(), 0);
    let first_page = list("?limit=2").await;
    assert_eq!(first_page.len(), 2);
    let second_page = list(&format!("?limit=2&after={}", letter_ids[1])).await;
    assert_eq!(second_page.len(), 1);
    assert_eq!(second_page[0]["id"], letter_ids[2]);
    let (status, body) = host
        .get_status("/api/workflows/ingress/dead-letters?stage=sideways")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("read or write"),
        "{body}"
    );

    let (status, shown) = host
        .get_status(&format!(
            "/api/workflows/ingress/dead-letters/{}",
            letter_ids[0]
        ))
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["id"], letter_ids[0]);
    reads_as::<views::DeadLetter>("one dead letter", &shown);
    assert!(
        shown["payload"].to_string().contains(long_name),
        "{shown:#}"
    );
    let (status, body) = host
        .get_status("/api/workflows/ingress/dead-letters/9999")
        .await;
    assert_eq!(status, 404, "{body}");

    let (status, body) = host
        .post(&format!(
            "/api/workflows/ingress/dead-letters/{}/drop",
            letter_ids[0]
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(list("").await.len(), 2);
    let (status, _) = host
        .get_status(&format!(
            "/api/workflows/ingress/dead-letters/{}",
            letter_ids[0]
        ))
        .await;
    assert_eq!(status, 404);
    let (status, body) = host
        .post(&format!(
            "/api/workflows/ingress/dead-letters/{}/drop",
            letter_ids[0]
        ))
        .await;
    assert_eq!(status, 404, "{body}");

    // The cause is fixed on the Campaign side (the field is widened); the retry delivers.
    sims.campaign
        .change_field(
            "profile",
            "firstName",
            FieldChange::Retype(FieldType::String),
        )
        .unwrap();
    let retried = &all[1];
    let retried_id = letter_ids[1];
    let (status, body) = host
        .post(&format!(
            "/api/workflows/ingress/dead-letters/{retried_id}/retry"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("queued again"),
        "{body}"
    );
    let key = retried["payload"].to_string();
    let delivered = ids
        .iter()
        .find(|id| key.contains(id.as_str()))
        .expect("the dead letter names its contact")
        .clone();
    conduit_e2e::wait_for("the retried record in Campaign", 60, || {
        sims.campaign
            .find("profile", &delivered)
            .is_some_and(|p| p["firstName"].as_str().unwrap_or("").starts_with(long_name))
    })
    .await;
    let remaining = list("").await;
    assert_eq!(remaining.len(), 1, "{remaining:#?}");
    assert_eq!(remaining[0]["id"], letter_ids[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_with_every_family() {
    let sims = SimPair::start(30, 0).await;
    let mut fields = Map::new();
    fields.insert(
        "firstname".into(),
        json!("A-first-name-far-too-long-for-Campaign"),
    );
    sims.dynamics
        .upsert("contact", &contact_id(1), fields)
        .unwrap();
    // One 503 from Campaign: retried, and counted by status.
    sims.campaign
        .faults()
        .inject([Fault::ServerError { status: 503 }]);
    sims.write_config(INGRESS_CONTACTS);
    let mut host = sims.spawn(&[]);
    host.wait_healthy().await;
    run_ingress_until_written(&mut host, 30).await;
    host.wait_workflow("ingress", "the refused write", |view| {
        view["counters"]["dead_letters"] == 1
    })
    .await;

    let response = reqwest::get(format!("{}/metrics", host.admin))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    let text = response.text().await.unwrap();
    let scrape = openmetrics_parser::openmetrics::parse_openmetrics(&text)
        .unwrap_or_else(|error| panic!("the metrics parse as OpenMetrics: {error:?}\n{text}"));
    use openmetrics_parser::{OpenMetricsType as T, OpenMetricsValue as V};
    let family = |name: &str, kind: T| {
        let family = scrape
            .families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name} in:\n{text}"));
        assert_eq!(family.family_type, kind, "{name}");
        family
    };
    let value = |name: &str, kind: T, labels: &[(&str, &str)]| {
        family(name, kind)
            .iter_samples()
            .find(|sample| {
                let set = sample
                    .get_labelset()
                    .expect("a sample of a family has labels");
                labels
                    .iter()
                    .all(|(key, wanted)| set.get_label_value(key) == Some(*wanted))
            })
            .map(|sample| sample.value.clone())
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{text}"))
    };
    let number = |value: V| match value {
        V::Gauge(number) => number.as_f64(),
        V::Counter(counter) => counter.value.as_f64(),
        other => panic!("not a number: {other:?}"),
    };
    let ingress = [("workflow", "ingress")];
    assert_eq!(number(value("conduit_backlog", T::Gauge, &ingress)), 0.0);
    assert_eq!(
        number(value("conduit_records_read", T::Counter, &ingress)),
        31.0
    );
    assert_eq!(
        number(value("conduit_records_written", T::Counter, &ingress)),
        30.0
    );
    assert_eq!(
        number(value("conduit_records_dead_lettered", T::Counter, &ingress)),
        1.0
    );
    assert_eq!(
        number(value("conduit_dead_letters", T::Gauge, &ingress)),
        1.0
    );
    assert_eq!(
        number(value("conduit_workflow_running", T::Gauge, &ingress)),
        1.0
    );
    assert_eq!(
        number(value(
            "conduit_workflow_running",
            T::Gauge,
            &[("workflow", "egress")]
        )),
        0.0
    );
    let plugin_seconds = number(value("conduit_plugin_seconds", T::Counter, &ingress));
    assert!(plugin_seconds > 0.0, "{text}");
    for status in ["503", "400"] {
        // One 503 (retried) and the refused write (too long) are error responses.
        let errors = number(value(
            "conduit_http_errors",
            T::Counter,
            &[("service", "campaign"), ("status", status)],
        ));
        assert!(errors >= 1.0, "{status}: {text}");
    }
    assert_eq!(
        number(value(
            "conduit_admin_refusals",
            T::Counter,
            &[("reason", "foreign_host")]
        )),
        0.0,
        "every refusal reason is declared at 0"
    );
    let transactions = number(value("conduit_queue_transactions", T::Counter, &[]));
    let steps = number(value("conduit_queue_steps", T::Counter, &[]));
    assert!(
        transactions >= 2.0,
        "a read and a write were committed: {text}"
    );
    assert!(
        steps >= transactions,
        "every transaction holds at least one step: {text}"
    );
    for stage in ["read", "write"] {
        match value(
            "conduit_queue_commit_seconds",
            T::Histogram,
            &[("workflow", "ingress"), ("stage", stage)],
        ) {
            V::Histogram(histogram) => {
                assert!(!histogram.buckets.is_empty(), "{text}");
                let last = histogram.buckets.last().unwrap();
                assert!(last.upper_bound.is_infinite(), "{text}");
                assert!(last.count.as_f64() >= 1.0, "{text}");
                assert!(
                    histogram
                        .buckets
                        .windows(2)
                        .all(|w| w[0].count.as_f64() <= w[1].count.as_f64()),
                    "buckets are cumulative: {text}"
                );
            }
            other => panic!("commit latency of {stage} is {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_record_retried_after_the_mapping_is_fixed_is_mapped_again_and_delivered() {
    let sims = SimPair::start(2, 0).await;
    // `gt` cannot compare a boolean column: the plugin rejects every contact.
    let broken = format!(
        "{INGRESS_CONTACTS}filters = {{ combine = \"and\", rules = [{{ field = \"donotbulkemail\", op = \"gt\", value = \"false\" }}] }}\n"
    );
    let text = std::fs::read_to_string(sims.write_config(&broken)).unwrap();
    let mut host = sims.spawn(&[]);
    host.wait_healthy().await;
    let (status, body) = host.post("/api/workflows/ingress/start").await;
    assert_eq!(status, 200, "{body}");
    host.wait_workflow("ingress", "two rejected records", |view| {
        view["counters"]["dead_letters"] == 2
    })
    .await;
    let (_, letters) = host
        .get_status("/api/workflows/ingress/dead-letters?stage=read")
        .await;
    let letters = letters.as_array().unwrap().clone();
    assert_eq!(letters.len(), 2, "{letters:#?}");
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("eq and ne"),
        "{letters:#?}"
    );
    let letter = letters[0]["id"].as_u64().unwrap();

    // Still broken: the retry is refused and the letter stays.
    let (status, body) = host
        .post(&format!(
            "/api/workflows/ingress/dead-letters/{letter}/retry"
        ))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("still rejects"),
        "{body}"
    );

    // Fixed in the config (no filter): the retry maps the record with the mapping as it is now.
    let filter_line = text.lines().find(|l| l.starts_with("filters")).unwrap();
    let fixed = text.replace(filter_line, "");
    assert_ne!(fixed, text);
    std::fs::write(sims.config_path(), &fixed).unwrap();
    let (status, body) = host
        .post(&format!(
            "/api/workflows/ingress/dead-letters/{letter}/retry"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("1 write(s) queued"),
        "{body}"
    );
    conduit_e2e::wait_for("the remapped record in Campaign", 60, || {
        sims.campaign.records("profile").len() == 1
    })
    .await;
    let (_, remaining) = host.get_status("/api/workflows/ingress/dead-letters").await;
    assert_eq!(remaining.as_array().unwrap().len(), 1, "{remaining:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_ready_only_when_every_workflow_is_where_its_desired_state_says() {
    let sims = SimPair::start(20, 0).await;
    sims.write_config(INGRESS_CONTACTS);
    let mut host = sims.spawn(&[]);
    host.wait_healthy().await;
    // Nothing is desired running and nothing runs: ready.
    let (status, body) = host.get_status("/readyz").await;
    assert_eq!(status, 200, "{body}");
    reads_as::<views::ReadinessView>("GET /readyz", &body);
    assert_eq!(body["store_open"], true, "{body}");
    assert!(
        body["workflows"]
            .as_array()
            .is_some_and(|w| w.len() == 3 && w.iter().all(|w| w["ready"] == true)),
        "{body}"
    );

    // Dynamics 365 down: Ingress is desired running but stays STARTING, so not ready.
    sims.dynamics
        .faults()
        .set(FaultConfig {
            error_rate: 1.0,
            ..FaultConfig::default()
        })
        .unwrap();
    host.start("ingress").await;
    let (status, body) = host.get_status("/readyz").await;
    assert_eq!(status, 503, "{body}");
    reads_as::<views::ReadinessView>("GET /readyz", &body);
    assert_eq!(body["ready"], false);
    let reasons = body["not_ready"].to_string();
    assert!(
        reasons.contains("ingress should be RUNNING but is STARTING"),
        "{body}"
    );
    let ingress = body["workflows"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["id"] == "ingress"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&ingress["desired"], &ingress["status"], &ingress["ready"]),
        (&json!("running"), &json!("STARTING"), &json!(false)),
        "{body}"
    );

    // The service is back: RUNNING as desired, ready again.
    sims.dynamics.faults().clear();
    host.wait_workflow("ingress", "RUNNING", |v| v["status"] == "RUNNING")
        .await;
    let (status, body) = host.get_status("/readyz").await;
    assert_eq!(status, 200, "{body}");

    // Stopped while desired stopped is ready; the desired state follows the operator.
    host.stop("ingress").await;
    let (status, body) = host.get_status("/readyz").await;
    assert_eq!(status, 200, "{body}");
}

/// Ingress with comments the editor must keep.
const COMMENTED_INGRESS: &str = r#"# Contacts go to profiles.
[ingress]
pacing = { page_size = 200, write_batch = 100, poll_interval_ms = 200 }

[[ingress.mappings]]
name = "contacts"   # the one mapping
source = "contact"
destination = "profile"
key = { source = "contactid", destination = "externalId" }
fields = [
  { source = "firstname", destination = "firstName" },
  # the family name
  { source = "lastname", destination = "lastName" },
]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_editor_api_saves_a_section_in_place_and_refuses_invalid_stale_and_cross_site_saves() {
    let sims = SimPair::start(3, 0).await;
    let config = sims.write_config(COMMENTED_INGRESS);
    let mut host = sims.spawn(&[]);
    host.wait_healthy().await;
    host.start("ingress").await;
    host.wait_workflow("ingress", "RUNNING", |v| v["status"] == "RUNNING")
        .await;

    let loaded = host.get("/api/workflows/ingress/edit").await;
    reads_as::<views::EditableSection>("edit", &loaded);
    let version = loaded["version"].as_str().unwrap().to_string();
    assert_eq!(loaded["section"]["mappings"][0]["name"], "contacts");
    assert!(
        loaded["choices"]["filter_ops"]
            .as_array()
            .unwrap()
            .contains(&json!("startswith"))
    );
    let before = std::fs::read_to_string(&config).unwrap();

    // The services' fields with their types, for the editor's pickers; the host calls the
    // services for it, so a request a cross-site page could make is refused.
    let (status, _) = host.get_status("/api/metadata/dynamics/contact").await;
    assert_eq!(status, 403);
    let metadata = |path: &str| {
        let request = reqwest::Client::new()
            .get(format!("{}/api/metadata/{path}", host.admin))
            .header("x-conduit-request", "page");
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (_, fields) = metadata("dynamics/contact").await;
    reads_as::<Vec<views::MetadataField>>("metadata", &fields);
    assert!(
        fields
            .as_array()
            .unwrap()
            .contains(&json!({ "name": "emailaddress1", "kind": "text" })),
        "{fields}"
    );
    let (_, fields) = metadata("campaign/profile").await;
    assert!(
        fields
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "email"),
        "{fields}"
    );
    let (status, body) = metadata("dynamics/nosuchtable").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("nosuchtable"),
        "{body}"
    );

    // A replacement on a field the mapping does not map: checked, then refused at its field.
    let mut invalid = loaded["section"].clone();
    invalid["mappings"][0]["replacements"] =
        json!([{ "field": "jobtitle", "from": "a", "to": "b" }]);
    let edit = json!({ "version": version, "section": invalid });
    let (status, checked) = host
        .post_json("/api/workflows/ingress/edit/check", &edit)
        .await;
    assert_eq!(status, 200, "{checked}");
    reads_as::<views::EditChecked>("edit check", &checked);
    assert_eq!(
        checked["field_problems"][0]["path"],
        "mappings[0].replacements[0].field"
    );
    let (status, refused) = host.post_json("/api/workflows/ingress/edit", &edit).await;
    assert_eq!(status, 422, "{refused}");
    reads_as::<views::EditRefused>("edit refused", &refused);
    assert_eq!(refused["refusal"], "invalid");
    assert_eq!(
        refused["field_problems"][0]["path"],
        "mappings[0].replacements[0].field"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);

    // The plugin's own check, as `conduit config check` runs it: the builtin table mapper takes
    // no settings of its own, so its `configure` refuses a key there (the config validator
    // passes settings through). Shown at the mapping's settings; the save writes nothing.
    let mut unknown_setting = loaded["section"].clone();
    unknown_setting["mappings"][0]["settings"] = json!({ "colour": "blue" });
    let edit = json!({ "version": version, "section": unknown_setting });
    let (status, checked) = host
        .post_json("/api/workflows/ingress/edit/check", &edit)
        .await;
    assert_eq!(status, 200, "{checked}");
    reads_as::<views::EditChecked>("edit check", &checked);
    let problems = checked["field_problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{checked}");
    assert_eq!(problems[0]["path"], "mappings[0].settings", "{checked}");
    let message = problems[0]["message"].as_str().unwrap();
    assert!(
        message.contains("contacts") && message.contains("colour"),
        "{checked}"
    );
    let (status, refused) = host.post_json("/api/workflows/ingress/edit", &edit).await;
    assert_eq!(status, 422, "{refused}");
    reads_as::<views::EditRefused>("edit refused", &refused);
    assert_eq!(refused["refusal"], "invalid");
    assert_eq!(refused["field_problems"], checked["field_problems"]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);

    // A plugin that cannot be loaded: a path to a file that is not there, at `plugin`.
    let mut missing = loaded["section"].clone();
    missing["plugin"] = json!("plugins/missing.wasm");
    let (status, checked) = host
        .post_json(
            "/api/workflows/ingress/edit/check",
            &json!({ "version": version, "section": missing }),
        )
        .await;
    assert_eq!(status, 200, "{checked}");
    let problems = checked["field_problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{checked}");
    assert_eq!(problems[0]["path"], "plugin", "{checked}");
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap()
            .contains("missing.wasm"),
        "{checked}"
    );

    // A valid edit is written in place, and the running workflow shows it pending.
    let mut valid = loaded["section"].clone();
    valid["mappings"][0]["replacements"] =
        json!([{ "field": "firstname", "from": "Ann", "to": "ANNE" }]);
    let (status, saved) = host
        .post_json(
            "/api/workflows/ingress/edit",
            &json!({ "version": version, "section": valid }),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    reads_as::<views::EditSaved>("edit saved", &saved);
    assert_eq!(saved["changed"], true);
    assert_eq!(saved["pending_changes"], true, "{saved}");
    assert!(
        saved["diff"].as_str().unwrap().contains(
            "+replacements = [\n+  { field = \"firstname\", from = \"Ann\", to = \"ANNE\" },\n+]\n"
        ),
        "{saved}"
    );
    let after = std::fs::read_to_string(&config).unwrap();
    for comment in [
        "# Contacts go to profiles.",
        "# the one mapping",
        "# the family name",
    ] {
        assert!(after.contains(comment), "{comment} was lost:\n{after}");
    }
    let view = host.workflow("ingress").await;
    assert_eq!(view["pending_changes"], true);

    // The same version again is stale now: refused with the other change, nothing written.
    let mut late = loaded["section"].clone();
    late["mappings"][0]["apply_deletes"] = json!(false);
    let (status, conflict) = host
        .post_json(
            "/api/workflows/ingress/edit",
            &json!({ "version": version, "section": late }),
        )
        .await;
    assert_eq!(status, 409, "{conflict}");
    reads_as::<views::EditRefused>("edit conflict", &conflict);
    assert_eq!(conflict["refusal"], "changed");
    assert_eq!(conflict["current_text"], after.as_str());
    assert!(
        conflict["other_change"]
            .as_str()
            .unwrap()
            .contains("+replacements"),
        "{conflict}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), after);

    // A save is a state change: cross-site and header-less calls are refused.
    let client = reqwest::Client::new();
    let url = format!("{}/api/workflows/ingress/edit", host.admin);
    let body = json!({ "version": saved["version"], "section": late });
    let cross = client
        .post(&url)
        .header("x-conduit-request", "page")
        .header("origin", "http://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let bare = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(bare.status(), 403);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), after);

    // The audit trail has the save and the refusals.
    let audit = host.get("/api/audit?limit=10").await;
    let edits: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "config-edit")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(edits, ["refused", "ok", "refused", "refused"], "{audit:#}");
}

/// A folder bind-mounted read-only onto itself for as long as it lives, as a Kubernetes
/// ConfigMap volume is: even root cannot write into it.
struct ReadOnlyMount(std::path::PathBuf);

impl ReadOnlyMount {
    /// `None` where this process may not mount (no CAP_SYS_ADMIN).
    fn new(folder: &std::path::Path) -> Option<ReadOnlyMount> {
        let run = |args: &[&str]| {
            std::process::Command::new("mount")
                .args(args)
                .status()
                .is_ok_and(|status| status.success())
        };
        let path = folder.to_str()?;
        if !run(&["--bind", path, path]) {
            return None;
        }
        let mounted = ReadOnlyMount(folder.to_path_buf());
        run(&["-o", "remount,bind,ro", path]).then_some(mounted)
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_to_a_read_only_config_is_answered_with_the_patch() {
    let sims = SimPair::start(1, 0).await;
    // As in a ConfigMap volume, the config is a link to a file on a read-only mount.
    let folder = sims.dir.path().join("configmap");
    std::fs::create_dir(&folder).unwrap();
    let text = format!("{}\n{EGRESS}", sims.connection_sections());
    std::fs::write(folder.join("conduit.toml"), &text).unwrap();
    let config = sims.config_path();
    std::os::unix::fs::symlink(folder.join("conduit.toml"), &config).unwrap();
    let Some(_mount) = ReadOnlyMount::new(&folder) else {
        eprintln!("skipped: this process may not mount a read-only folder (needs CAP_SYS_ADMIN)");
        return;
    };
    assert!(
        std::fs::write(folder.join("probe"), "x").is_err(),
        "the mount is read-only"
    );
    let mut host = HostProcess::spawn(&config, sims.admin_port, &[]);
    host.wait_healthy().await;

    let loaded = host.get("/api/workflows/egress/edit").await;
    let mut section = loaded["section"].clone();
    section["open"] = json!(false);
    let (status, refused) = host
        .post_json(
            "/api/workflows/egress/edit",
            &json!({ "version": loaded["version"], "section": section }),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    reads_as::<views::EditRefused>("edit read-only", &refused);
    assert_eq!(refused["refusal"], "read_only");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("cannot be written"),
        "{refused}"
    );
    let patch = refused["patch"].as_str().unwrap();
    assert!(
        patch.starts_with("--- a/conduit.toml\n+++ b/conduit.toml\n")
            && patch.contains("-open = true\n+open = false\n"),
        "{patch}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
}
