//! Workflow semantics end to end: the real `conduit run` against both simulators over
//! loopback, driven through its admin API. Each test names the behaviour it pins.

use conduit_e2e::{HostProcess, SimPair, fields, wait_for};
use conduit_model::{BounceDetail, EmailEvent, EmailEventKind};
use conduit_sim::campaign::FieldChange;
use conduit_sim::faults::FaultConfig;
use serde_json::{Map, Value, json};

const CONTACTS: &str = r#"
[ingress]
pacing = { page_size = 100, write_batch = 100, poll_interval_ms = 100 }
[[ingress.mappings]]
name = "contacts"
source = "contact"
destination = "profile"
key = { source = "contactid", destination = "externalId" }
fields = [
  { source = "firstname", destination = "firstName" },
  { source = "lastname", destination = "lastName", apply_updates = false },
  { source = "emailaddress1", destination = "email" },
]
filters = { rules = [{ field = "emailaddress1", op = "notnull" }], delete_filtered_out = true }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_load_includes_inactive_records_and_apply_updates_off_waits_for_replay() {
    let sims = SimPair::start(60, 0).await;
    let host = sims.host_with_ingress_caught_up(CONTACTS).await;
    let contacts = sims.dynamics.rows("contact");
    let inactive = contacts.iter().filter(|c| c["statecode"] == 1).count();
    assert!(inactive > 0, "the seed has inactive contacts");
    assert_eq!(
        sims.profiles().len(),
        contacts.len(),
        "inactive contacts are loaded too"
    );

    let id = sims.ids("contact", "contactid")[3].clone();
    sims.dynamics
        .upsert(
            "contact",
            &id,
            fields(&[("firstname", json!("Zoe")), ("lastname", json!("Changed"))]),
        )
        .unwrap();
    wait_for("the incremental change", 30, || {
        sims.profiles()[&id]["firstName"] == "Zoe"
    })
    .await;
    assert_ne!(
        sims.profiles()[&id]["lastName"],
        "Changed",
        "a field with apply_updates = false ignores incremental changes"
    );

    let (status, body) = host.post("/api/workflows/ingress/replay/contacts").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = host.post("/api/workflows/ingress/replay/contacts").await;
    assert_eq!(
        status, 409,
        "a second replay while one is pending is refused: {body}"
    );
    assert_eq!(
        host.workflow("ingress").await["pending_replays"],
        json!(["contacts"])
    );
    host.stop("ingress").await;
    host.start("ingress").await;
    wait_for("the replay", 30, || {
        sims.profiles()[&id]["lastName"] == "Changed"
    })
    .await;
    assert_eq!(host.workflow("ingress").await["pending_replays"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_filtered_out_are_deleted_when_asked_and_deletes_propagate() {
    let sims = SimPair::start(30, 0).await;
    let _host = sims.host_with_ingress_caught_up(CONTACTS).await;
    let ids = sims.ids("contact", "contactid");
    sims.dynamics
        .upsert(
            "contact",
            &ids[1],
            fields(&[("emailaddress1", Value::Null)]),
        )
        .unwrap();
    sims.dynamics.delete("contact", &ids[2]).unwrap();
    wait_for("the filtered-out profile to be deleted", 30, || {
        !sims.profiles().contains_key(&ids[1])
    })
    .await;
    wait_for("the deleted contact's profile to go", 30, || {
        !sims.profiles().contains_key(&ids[2])
    })
    .await;
    assert!(sims.profiles().contains_key(&ids[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_are_ignored_when_apply_deletes_is_off() {
    let sims = SimPair::start(10, 8).await;
    let _host = sims
        .host_with_ingress_caught_up(
            r#"
[ingress]
pacing = { poll_interval_ms = 100 }
[[ingress.mappings]]
name = "vehicles"
source = "new_vehicle"
destination = "cusVehicle"
key = { source = "new_vehicleid", destination = "cusCrmId" }
fields = [{ source = "new_name", destination = "cusName" }]
apply_deletes = false
"#,
        )
        .await;
    assert_eq!(sims.campaign.records("cusVehicle").len(), 8);
    let ids = sims.ids("new_vehicle", "new_vehicleid");
    sims.dynamics.delete("new_vehicle", &ids[0]).unwrap();
    let mut name = Map::new();
    name.insert("new_name".into(), json!("after the delete"));
    sims.dynamics.upsert("new_vehicle", &ids[1], name).unwrap();
    wait_for("the later update", 30, || {
        sims.campaign
            .find("cusVehicle", &ids[1])
            .is_some_and(|v| v["cusName"] == "after the delete")
    })
    .await;
    assert!(
        sims.campaign.find("cusVehicle", &ids[0]).is_some(),
        "the delete was not propagated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_keeps_the_backlog_and_start_resumes_it() {
    let sims = SimPair::start(0, 0).await;
    let mut host = sims.host_with_ingress_caught_up(CONTACTS).await;
    // Campaign goes down; new contacts are read and queued, not lost.
    sims.campaign
        .faults()
        .set(FaultConfig {
            error_rate: 1.0,
            ..FaultConfig::default()
        })
        .unwrap();
    for n in 0..40 {
        let id = format!("00000000-0000-4000-8000-{n:012}");
        sims.dynamics
            .upsert(
                "contact",
                &id,
                fields(&[
                    ("firstname", json!(format!("New{n}"))),
                    ("lastname", json!("Queued")),
                    ("emailaddress1", json!(format!("new{n}@example.com"))),
                ]),
            )
            .unwrap();
    }
    let view = host
        .wait_workflow("ingress", "the backlog to hold the new contacts", |v| {
            v["backlog"] == 40
        })
        .await;
    assert_eq!(
        view["status"], "RUNNING",
        "a destination that is down is retried, not fatal"
    );
    host.stop("ingress").await;
    let view = host.workflow("ingress").await;
    assert_eq!(view["status"], "STOPPED");
    assert_eq!(view["backlog"], 40, "stop keeps the backlog");
    assert!(sims.profiles().is_empty());
    sims.campaign.faults().clear();
    host.start("ingress").await;
    host.wait_caught_up("ingress").await;
    assert_eq!(sims.profiles().len(), 40);
    assert_eq!(
        host.workflow("ingress").await["counters"]["dead_letters"],
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_at_start_delays_starting_and_loses_nothing() {
    let sims = SimPair::start(50, 0).await;
    sims.write_config(CONTACTS);
    sims.campaign
        .faults()
        .set(FaultConfig {
            error_rate: 1.0,
            ..FaultConfig::default()
        })
        .unwrap();
    sims.dynamics
        .faults()
        .set(FaultConfig {
            error_rate: 0.3,
            seed: 3,
            ..FaultConfig::default()
        })
        .unwrap();
    let mut host = sims.spawn_host().await;
    host.start("ingress").await;
    let view = host
        .wait_workflow("ingress", "a start delayed by Campaign", |v| {
            v["status"] == "STARTING"
                && v["warning"]
                    .as_str()
                    .is_some_and(|w| w.contains("Campaign"))
        })
        .await;
    assert!(view["reason"].is_null(), "{view}");
    sims.campaign.faults().clear();
    host.wait_caught_up("ingress").await;
    sims.dynamics.faults().clear();
    assert_eq!(sims.profiles().len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_destination_field_is_schema_drift_that_names_it() {
    let sims = SimPair::start(20, 0).await;
    let mut host = sims.host_with_ingress_caught_up(CONTACTS).await;
    // Drift while running: the writer stops before writing anything wrong.
    sims.campaign
        .change_field("profile", "firstName", FieldChange::Remove)
        .unwrap();
    let id = sims.ids("contact", "contactid")[0].clone();
    sims.dynamics
        .upsert("contact", &id, fields(&[("firstname", json!("Drifted"))]))
        .unwrap();
    let view = host
        .wait_workflow("ingress", "ERROR", |v| v["status"] == "ERROR")
        .await;
    let reason = view["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("firstName"), "{reason}");
    assert_eq!(view["backlog"], 1, "the change stays queued");
    assert_eq!(
        view["counters"]["dead_letters"], 0,
        "nothing is dead-lettered"
    );
    // A start with the field still missing fails at STARTING, naming it.
    host.start("ingress").await;
    let view = host
        .wait_workflow("ingress", "ERROR at start", |v| v["status"] == "ERROR")
        .await;
    assert!(
        view["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("firstName"),
        "{view}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_enabled_email_events_become_activities_and_soft_bounces_are_skipped() {
    let sims = SimPair::start(5, 0).await;
    let contact = sims.ids("contact", "contactid")[0].clone();
    let kinds = [
        (EmailEventKind::Send, None),
        (EmailEventKind::Open, None),
        (EmailEventKind::Click, None),
        (EmailEventKind::Bounce, Some(true)),
        (EmailEventKind::Bounce, Some(false)),
    ];
    for (n, (kind, hard)) in kinds.into_iter().enumerate() {
        sims.campaign.emit_event(&EmailEvent {
            id: format!("00000000-0000-4000-8000-00000000000{n}"),
            kind,
            contact_key: contact.clone(),
            campaign_id: "C1".into(),
            campaign_name: "Spring".into(),
            delivery_id: "D1".into(),
            delivery_name: "Launch".into(),
            timestamp: "2026-11-01T10:00:00Z".into(),
            url: (kind == EmailEventKind::Click).then(|| "https://example.com/x".to_string()),
            mirror_page_url: None,
            bounce: hard.map(|hard| BounceDetail {
                hard,
                reason: "x".into(),
            }),
        });
    }
    sims.write_config(
        "[egress]\npacing = { poll_interval_ms = 100 }\nsend = true\nclick = true\nbounce = true\n",
    );
    let mut host = sims.spawn_host().await;
    host.start("egress").await;
    host.wait_workflow("egress", "all events read", |v| {
        v["counters"]["read"] == 5 && v["backlog"] == 0
    })
    .await;
    assert_eq!(sims.dynamics.count("adobe_emailsend"), 1);
    assert_eq!(
        sims.dynamics.count("adobe_emailopen"),
        0,
        "opens are switched off"
    );
    assert_eq!(sims.dynamics.count("adobe_emailclick"), 1);
    assert_eq!(
        sims.dynamics.count("adobe_emailbounce"),
        1,
        "only the hard bounce"
    );
    let send = &sims.dynamics.rows("adobe_emailsend")[0];
    assert_eq!(
        send["subject"],
        "Campaign Name: Spring; Delivery Name: Launch"
    );
    assert_eq!(send["_regardingobjectid_value"], json!(contact));
}

/// A send event for `contact`, numbered `n`.
fn send_event(n: u32, contact: &str) -> EmailEvent {
    EmailEvent {
        id: format!("00000000-0000-4000-8000-{n:012}"),
        kind: EmailEventKind::Send,
        contact_key: contact.to_string(),
        campaign_id: "C1".into(),
        campaign_name: "Spring".into(),
        delivery_id: "D1".into(),
        delivery_name: "Launch".into(),
        timestamp: "2026-11-01T10:00:00Z".into(),
        url: None,
        mirror_page_url: None,
        bounce: None,
    }
}

/// Egress after one send activity is written; `[egress]` writes sends only.
async fn egress_host_with_one_send(sims: &SimPair, contact: &str) -> HostProcess {
    sims.campaign.emit_event(&send_event(1, contact));
    sims.write_config("[egress]\npacing = { poll_interval_ms = 100 }\nsend = true\n");
    let mut host = sims.spawn_host().await;
    host.start("egress").await;
    host.wait_workflow("egress", "the first send written", |v| {
        v["counters"]["written"] == 1 && v["backlog"] == 0
    })
    .await;
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_activity_field_stops_egress_naming_it_and_dead_letters_nothing() {
    let sims = SimPair::start(3, 0).await;
    let contact = sims.ids("contact", "contactid")[0].clone();
    let mut host = egress_host_with_one_send(&sims, &contact).await;
    sims.dynamics
        .change_attribute(
            "adobe_emailsend",
            "adobe_campaignname",
            conduit_sim::dynamics::AttributeChange::Remove,
        )
        .unwrap();
    sims.campaign.emit_event(&send_event(2, &contact));
    let view = host
        .wait_workflow("egress", "ERROR", |v| v["status"] == "ERROR")
        .await;
    let reason = view["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("'adobe_campaignname'"), "{reason}");
    assert_eq!(view["backlog"], 1, "the activity stays queued");
    assert_eq!(
        view["counters"]["dead_letters"], 0,
        "nothing is dead-lettered"
    );
    assert_eq!(sims.dynamics.count("adobe_emailsend"), 1);
    // Started again with the field still missing: stopped before writing, naming it.
    host.start("egress").await;
    let view = host
        .wait_workflow("egress", "ERROR after a restart", |v| {
            v["status"] == "ERROR"
        })
        .await;
    let reason = view["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("'adobe_campaignname'"), "{reason}");
    assert_eq!(
        view["counters"]["dead_letters"], 0,
        "nothing is dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retyped_activity_field_stops_egress_naming_it_and_dead_letters_nothing() {
    let sims = SimPair::start(3, 0).await;
    let contact = sims.ids("contact", "contactid")[0].clone();
    let mut host = egress_host_with_one_send(&sims, &contact).await;
    sims.dynamics
        .change_attribute(
            "adobe_emailsend",
            "adobe_deliveryname",
            conduit_sim::dynamics::AttributeChange::Retype(
                conduit_sim::dynamics::AttributeType::Integer,
            ),
        )
        .unwrap();
    sims.campaign.emit_event(&send_event(2, &contact));
    let view = host
        .wait_workflow("egress", "ERROR", |v| v["status"] == "ERROR")
        .await;
    let reason = view["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("'adobe_deliveryname'"), "{reason}");
    assert!(reason.contains("changed type"), "{reason}");
    assert_eq!(view["backlog"], 1, "the activity stays queued");
    assert_eq!(
        view["counters"]["dead_letters"], 0,
        "nothing is dead-lettered"
    );
}

async fn opt_out_host(sims: &SimPair, direction: &str) -> HostProcess {
    let mut host = sims
        .host_with_ingress_caught_up(&format!(
            r#"
[ingress]
pacing = {{ poll_interval_ms = 100 }}
[[ingress.mappings]]
name = "contacts"
source = "contact"
destination = "profile"
key = {{ source = "contactid", destination = "externalId" }}
fields = [{{ source = "lastname", destination = "lastName" }}]

[optinout]
pacing = {{ poll_interval_ms = 100 }}
direction = "{direction}"
pairs = [{{ dynamics = "donotbulkemail", campaign = "blackListEmail" }}]
"#
        ))
        .await;
    host.start("optinout").await;
    host.wait_caught_up("optinout").await;
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_to_dynamics_moves_campaign_opt_outs_only() {
    let sims = SimPair::start(20, 0).await;
    let mut host = opt_out_host(&sims, "campaign-to-dynamics").await;
    let ids = sims.ids("contact", "contactid");
    let (from_campaign, from_dynamics) = (&ids[0], &ids[1]);
    assert_eq!(sims.donotbulkemail(from_campaign), Some(false));
    sims.campaign
        .set_opt_out(from_campaign, "blackListEmail", true)
        .unwrap();
    sims.campaign.drop_opt_out_export().unwrap();
    sims.set_donotbulkemail(from_dynamics, true);
    wait_for("Campaign's opt-out in Dynamics 365", 30, || {
        sims.donotbulkemail(from_campaign) == Some(true)
    })
    .await;
    host.wait_caught_up("optinout").await;
    assert_ne!(
        sims.profiles()[from_dynamics.as_str()]["blackListEmail"],
        true,
        "Dynamics 365 changes do not flow to Campaign in this direction"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamics_to_campaign_moves_dynamics_opt_outs_only() {
    let sims = SimPair::start(20, 0).await;
    let mut host = opt_out_host(&sims, "dynamics-to-campaign").await;
    let ids = sims.ids("contact", "contactid");
    let (from_campaign, from_dynamics) = (&ids[0], &ids[1]);
    sims.set_donotbulkemail(from_dynamics, true);
    sims.campaign
        .set_opt_out(from_campaign, "blackListEmail", true)
        .unwrap();
    sims.campaign.drop_opt_out_export().unwrap();
    wait_for("Dynamics 365's opt-out in Campaign", 30, || {
        sims.profiles()[from_dynamics.as_str()]["blackListEmail"] == true
    })
    .await;
    host.wait_caught_up("optinout").await;
    assert_eq!(
        sims.donotbulkemail(from_campaign),
        Some(false),
        "Campaign changes do not flow to Dynamics 365 in this direction"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_opt_out_lets_the_newer_value_win_on_both_sides() {
    let sims = SimPair::start(20, 0).await;
    let _host = opt_out_host(&sims, "bidirectional").await;
    let ids = sims.ids("contact", "contactid");
    // Campaign opts out: its newer value reaches Dynamics 365.
    sims.campaign
        .set_opt_out(&ids[0], "blackListEmail", true)
        .unwrap();
    sims.campaign.drop_opt_out_export().unwrap();
    wait_for("Campaign's opt-out in Dynamics 365", 30, || {
        sims.donotbulkemail(&ids[0]) == Some(true)
    })
    .await;
    // Campaign opts back in later: the newer Campaign value wins, even though it is false.
    sims.campaign
        .set_opt_out(&ids[0], "blackListEmail", false)
        .unwrap();
    sims.campaign.drop_opt_out_export().unwrap();
    wait_for("Campaign's opt-in in Dynamics 365", 30, || {
        sims.donotbulkemail(&ids[0]) == Some(false)
    })
    .await;
    // Dynamics 365 opts out another contact: its newer value reaches Campaign.
    sims.set_donotbulkemail(&ids[1], true);
    wait_for("Dynamics 365's opt-out in Campaign", 30, || {
        sims.profiles()[ids[1].as_str()]["blackListEmail"] == true
    })
    .await;
}
