//! The product's documented behaviour where a first version got it wrong, end to end: the real
//! `conduit run` against both simulators. Edits take effect at the restart (new columns, removed
//! columns, records still queued, limits), writes happen only where something changed, and
//! records Conduit did not create are left alone.

use conduit_e2e::{HostProcess, SimPair, fields, wait_for};
use conduit_sim::campaign::FieldChange;
use conduit_sim::dynamics::AttributeChange;
use conduit_sim::faults::FaultConfig;
use serde_json::{Value, json};

/// An Ingress contacts mapping with these field pairs and extra mapping lines.
fn contacts_mapping(pairs: &[(&str, &str)], extra: &str) -> String {
    let fields: Vec<String> = pairs
        .iter()
        .map(|(source, destination)| {
            format!("  {{ source = \"{source}\", destination = \"{destination}\" }},")
        })
        .collect();
    format!(
        r#"
[ingress]
pacing = {{ page_size = 100, write_batch = 100, poll_interval_ms = 100 }}
[[ingress.mappings]]
name = "contacts"
source = "contact"
destination = "profile"
key = {{ source = "contactid", destination = "externalId" }}
fields = [
{}
]
{extra}
"#,
        fields.join("\n")
    )
}

async fn restart(host: &mut HostProcess, workflow: &str) {
    host.stop(workflow).await;
    host.start(workflow).await;
    host.wait_workflow(workflow, "RUNNING again", |v| v["status"] == "RUNNING")
        .await;
}

fn profile(sims: &SimPair, id: &str) -> Value {
    sims.profiles().get(id).cloned().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_added_to_a_mapping_flows_after_the_restart_and_a_removed_column_no_longer_breaks_it()
 {
    let sims = SimPair::start(20, 0).await;
    let before = contacts_mapping(
        &[("firstname", "firstName"), ("emailaddress1", "email")],
        "",
    );
    let mut host = sims.host_with_ingress_caught_up(&before).await;
    let id = sims.ids("contact", "contactid")[2].clone();

    sims.write_config(&contacts_mapping(
        &[
            ("firstname", "firstName"),
            ("emailaddress1", "email"),
            ("telephone1", "phone"),
        ],
        "",
    ));
    let view = host
        .wait_workflow("ingress", "the pending summary", |v| {
            v["pending_changes"] == true
        })
        .await;
    let summary = view["pending_summary"].to_string();
    assert!(
        summary.contains("new field telephone1: following changes carry it; replay to backfill"),
        "{summary}"
    );
    restart(&mut host, "ingress").await;
    assert_eq!(host.workflow("ingress").await["pending_changes"], false);

    sims.dynamics
        .upsert(
            "contact",
            &id,
            fields(&[
                ("telephone1", json!("+1 555 0199")),
                ("emailaddress1", json!("new@example.com")),
            ]),
        )
        .unwrap();
    wait_for("the new email", 30, || {
        profile(&sims, &id)["email"] == "new@example.com"
    })
    .await;
    wait_for("the newly mapped phone", 30, || {
        profile(&sims, &id)["phone"] == "+1 555 0199"
    })
    .await;

    // The column goes away in Dynamics 365 and from the mapping: the restart works.
    sims.dynamics
        .change_attribute("contact", "firstname", AttributeChange::Remove)
        .unwrap();
    sims.write_config(&contacts_mapping(
        &[("emailaddress1", "email"), ("telephone1", "phone")],
        "",
    ));
    restart(&mut host, "ingress").await;
    sims.dynamics
        .upsert(
            "contact",
            &id,
            fields(&[("emailaddress1", json!("after@example.com"))]),
        )
        .unwrap();
    wait_for("a change after the column went", 30, || {
        profile(&sims, &id)["email"] == "after@example.com"
    })
    .await;
    let view = host.workflow("ingress").await;
    assert_eq!(view["status"], "RUNNING", "{view}");
    assert_eq!(view["counters"]["dead_letters"], 0, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_skips_writes_that_change_nothing_it_maps() {
    let sims = SimPair::start(10, 0).await;
    let mapping = contacts_mapping(&[("firstname", "firstName")], "").replace(
        "\n]\n",
        "\n  { source = \"lastname\", destination = \"lastName\", apply_updates = false },\n]\n",
    );
    let mut host = sims.host_with_ingress_caught_up(&mapping).await;
    let ids = sims.ids("contact", "contactid");
    let before = host.workflow("ingress").await["counters"].clone();
    let requests = sims.campaign.requests_served();

    // An unmapped column, then an apply-updates-off field: nothing to write.
    sims.dynamics
        .upsert(
            "contact",
            &ids[0],
            fields(&[("telephone1", json!("+1 555 0001"))]),
        )
        .unwrap();
    sims.dynamics
        .upsert(
            "contact",
            &ids[1],
            fields(&[("lastname", json!("Ignored"))]),
        )
        .unwrap();
    let view = host
        .wait_workflow("ingress", "both changes read", |v| {
            v["counters"]["read"].as_u64() >= before["read"].as_u64().map(|r| r + 2)
                && v["backlog"] == 0
        })
        .await;
    let counters = &view["counters"];
    assert_eq!(counters["written"], before["written"], "{view}");
    assert_eq!(
        counters["skipped_unchanged"].as_u64().unwrap()
            - before["skipped_unchanged"].as_u64().unwrap(),
        2,
        "{view}"
    );
    assert_eq!(
        sims.campaign.requests_served(),
        requests,
        "no Campaign call for a change that writes nothing"
    );

    // A mapped field that changed is written, and only that record.
    sims.dynamics
        .upsert(
            "contact",
            &ids[2],
            fields(&[("firstname", json!("Changed"))]),
        )
        .unwrap();
    wait_for("the mapped change", 30, || {
        profile(&sims, &ids[2])["firstName"] == "Changed"
    })
    .await;
    let view = host
        .wait_workflow("ingress", "the write counted", |v| {
            v["counters"]["written"].as_u64() == before["written"].as_u64().map(|w| w + 1)
        })
        .await;
    assert_eq!(view["backlog"], 0);
    assert_ne!(profile(&sims, &ids[1])["lastName"], "Ignored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_made_in_campaign_by_someone_else_are_never_deleted() {
    let sims = SimPair::start(12, 0).await;
    let ids = sims.ids("contact", "contactid");
    // A contact without an email is filtered out; someone made its profile in Campaign.
    sims.dynamics
        .upsert(
            "contact",
            &ids[0],
            fields(&[("emailaddress1", Value::Null)]),
        )
        .unwrap();
    sims.campaign
        .insert(
            "profile",
            &json!({ "externalId": ids[0], "email": "made.in@campaign.example", "lastName": "Manual" }),
        )
        .unwrap();
    let mapping = contacts_mapping(
        &[("emailaddress1", "email"), ("firstname", "firstName")],
        r#"filters = { rules = [{ field = "emailaddress1", op = "notnull" }], delete_filtered_out = true }"#,
    );
    let mut host = sims.host_with_ingress_caught_up(&mapping).await;
    assert_eq!(
        profile(&sims, &ids[0])["lastName"],
        "Manual",
        "a profile Conduit did not create is left alone"
    );
    let view = host.workflow("ingress").await;
    assert!(
        view["counters"]["skipped_not_owned"].as_u64() >= Some(1),
        "{view}"
    );
    let status = sims.cli(&["status"]);
    assert!(
        status
            .stdout
            .contains("deletes of records Conduit did not create"),
        "the reason is shown: {}",
        status.stdout
    );

    // A profile Conduit created and that is then filtered out is deleted, as asked.
    sims.dynamics
        .upsert(
            "contact",
            &ids[1],
            fields(&[("emailaddress1", Value::Null)]),
        )
        .unwrap();
    wait_for("the filtered-out profile Conduit made to go", 30, || {
        !sims.profiles().contains_key(&ids[1])
    })
    .await;
    // And deleting the manual profile's contact in Dynamics 365 still leaves it alone.
    sims.dynamics.delete("contact", &ids[0]).unwrap();
    sims.dynamics
        .upsert("contact", &ids[2], fields(&[("firstname", json!("Later"))]))
        .unwrap();
    wait_for("a later change", 30, || {
        profile(&sims, &ids[2])["firstName"] == "Later"
    })
    .await;
    host.wait_caught_up("ingress").await;
    assert_eq!(profile(&sims, &ids[0])["lastName"], "Manual");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn technical_picklist_values_go_into_text_fields_as_text() {
    let sims = SimPair::start(6, 0).await;
    let mapping = contacts_mapping(
        &[("gendercode", "phone"), ("firstname", "firstName")],
        "technical_picklist_values = true",
    );
    let host = sims.host_with_ingress_caught_up(&mapping).await;
    let contacts = sims.dynamics.rows("contact");
    let mut checked = 0;
    for contact in &contacts {
        let id = contact["contactid"].as_str().unwrap();
        if let Some(code) = contact["gendercode"].as_i64() {
            assert_eq!(profile(&sims, id)["phone"], json!(code.to_string()), "{id}");
            checked += 1;
        }
    }
    assert!(checked > 0, "the seed has gender codes");
    assert_eq!(
        host.workflow("ingress").await["counters"]["dead_letters"],
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_still_queued_are_mapped_again_when_the_mapping_changes() {
    let sims = SimPair::start(10, 0).await;
    let mapping = contacts_mapping(&[("firstname", "firstName"), ("lastname", "lastName")], "");
    let mut host = sims.host_with_ingress_caught_up(&mapping).await;
    let ids = sims.ids("contact", "contactid");

    // Campaign is down: changes queue up, mapped with firstName.
    sims.campaign
        .faults()
        .set(FaultConfig {
            error_rate: 1.0,
            ..FaultConfig::default()
        })
        .unwrap();
    for (n, id) in ids.iter().take(4).enumerate() {
        sims.dynamics
            .upsert(
                "contact",
                id,
                fields(&[
                    ("firstname", json!(format!("Queued{n}"))),
                    ("lastname", json!(format!("Last{n}"))),
                ]),
            )
            .unwrap();
    }
    host.wait_workflow("ingress", "the queued changes", |v| v["backlog"] == 4)
        .await;
    host.stop("ingress").await;

    // The operator follows the procedure: Campaign drops firstName, the mapping drops it too.
    sims.campaign
        .change_field("profile", "firstName", FieldChange::Remove)
        .unwrap();
    sims.write_config(&contacts_mapping(&[("lastname", "lastName")], ""));
    sims.campaign.faults().clear();
    host.start("ingress").await;
    host.wait_caught_up("ingress").await;
    for (n, id) in ids.iter().take(4).enumerate() {
        assert_eq!(
            profile(&sims, id)["lastName"],
            json!(format!("Last{n}")),
            "{id}"
        );
    }
    let view = host.workflow("ingress").await;
    assert_eq!(view["counters"]["dead_letters"], 0, "{view}");
    assert_eq!(view["status"], "RUNNING", "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_replay_limit_applies_when_its_pending_badge_clears() {
    let sims = SimPair::start(5, 0).await;
    let limited = |rows: u64| {
        contacts_mapping(&[("firstname", "firstName")], "").replace(
            "[ingress]\n",
            &format!("[ingress]\nlimits = {{ replay_max_rows = {rows} }}\n"),
        )
    };
    let mut host = sims.host_with_ingress_caught_up(&limited(3)).await;
    let (status, body) = host.post("/api/workflows/ingress/replay/contacts").await;
    assert_eq!(status, 409, "5 rows are over the limit of 3: {body}");

    sims.write_config(&limited(1000));
    host.wait_workflow("ingress", "the pending limit", |v| {
        v["pending_changes"] == true
    })
    .await;
    let (status, body) = host.post("/api/workflows/ingress/replay/contacts").await;
    assert_eq!(
        status, 409,
        "the edited limit is pending, so the running one still applies: {body}"
    );

    restart(&mut host, "ingress").await;
    let (status, body) = host.post("/api/workflows/ingress/replay/contacts").await;
    assert_eq!(
        status, 200,
        "the new limit applies after the restart: {body}"
    );
}

/// Ingress (contacts without opt-out fields) and Opt-in/out in `direction`.
fn with_opt_out(direction: &str) -> String {
    format!(
        r#"{}
[optinout]
pacing = {{ poll_interval_ms = 100 }}
direction = "{direction}"
pairs = [{{ dynamics = "donotbulkemail", campaign = "blackListEmail" }}]
"#,
        contacts_mapping(&[("lastname", "lastName")], "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_opt_in_out_start_reconciles_both_sides_and_then_writes_only_disagreements() {
    let sims = SimPair::start(22, 0).await;
    let mut host = sims
        .host_with_ingress_caught_up(&with_opt_out("bidirectional"))
        .await;
    let ids = sims.ids("contact", "contactid");
    // Seeded: contacts 5 and 16 are opted out in Dynamics 365 only. Campaign opts out
    // contact 0 on its side only (no export yet), and contact 16 on both sides.
    assert_eq!(sims.donotbulkemail(&ids[5]), Some(true));
    assert_eq!(sims.donotbulkemail(&ids[16]), Some(true));
    sims.campaign
        .set_opt_out(&ids[0], "blackListEmail", true)
        .unwrap();
    sims.campaign
        .set_opt_out(&ids[16], "blackListEmail", true)
        .unwrap();

    host.start("optinout").await;
    host.wait_caught_up("optinout").await;
    wait_for("both sides in line", 30, || {
        profile(&sims, &ids[5])["blackListEmail"] == true
            && sims.donotbulkemail(&ids[0]) == Some(true)
    })
    .await;
    let view = host.wait_caught_up("optinout").await;
    assert_eq!(
        view["counters"]["written"], 2,
        "only the two disagreements were written: {view}"
    );
    for (n, id) in ids.iter().enumerate() {
        let campaign = profile(&sims, id)["blackListEmail"] == true;
        let dynamics = sims.donotbulkemail(id) == Some(true);
        assert_eq!(campaign, dynamics, "contact {n} agrees on both sides");
    }

    // A change to another column writes nothing: both sides agree.
    let requests = sims.campaign.requests_served();
    for id in ids.iter().take(6) {
        sims.dynamics
            .upsert("contact", id, fields(&[("firstname", json!("Renamed"))]))
            .unwrap();
    }
    host.wait_workflow("optinout", "the renames read", |v| {
        v["counters"]["read"].as_u64() >= view["counters"]["read"].as_u64().map(|r| r + 6)
    })
    .await;
    let after = host.wait_caught_up("optinout").await;
    assert_eq!(after["counters"]["written"], 2, "{after}");
    assert_eq!(after["counters"]["dead_letters"], 0, "{after}");
    // Ingress reads the renames too, but maps only lastName: no Campaign call at all.
    host.wait_caught_up("ingress").await;
    assert_eq!(sims.campaign.requests_served(), requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamics_to_campaign_reconciles_at_the_first_start_without_touching_agreeing_profiles() {
    let sims = SimPair::start(12, 0).await;
    let mut host = sims
        .host_with_ingress_caught_up(&with_opt_out("dynamics-to-campaign"))
        .await;
    let ids = sims.ids("contact", "contactid");
    // Contact 5 is opted out in Dynamics 365 (seed); contact 1 is opted out on both sides.
    sims.set_donotbulkemail(&ids[1], true);
    host.wait_caught_up("ingress").await;
    sims.campaign
        .set_opt_out(&ids[1], "blackListEmail", true)
        .unwrap();
    host.start("optinout").await;
    wait_for("contact 5's opt-out in Campaign", 30, || {
        profile(&sims, &ids[5])["blackListEmail"] == true
    })
    .await;
    let view = host.wait_caught_up("optinout").await;
    assert_eq!(view["counters"]["written"], 1, "{view}");
    assert_eq!(view["counters"]["dead_letters"], 0, "{view}");
}

/// Starts Ingress and Opt-in/out together on a fresh host, with opted-out contacts seeded on
/// both sides: some only in Dynamics 365 (the seed), some only in profiles that already exist
/// in Campaign. Returns the sims and the contact ids.
async fn both_sides_opted_out(contacts: usize) -> (SimPair, Vec<String>) {
    let sims = SimPair::start(contacts, 0).await;
    let ids = sims.ids("contact", "contactid");
    for id in ids.iter().take(4) {
        sims.campaign
            .insert(
                "profile",
                &json!({ "externalId": id, "lastName": "Existing", "blackListEmail": true }),
            )
            .unwrap();
    }
    sims.write_config(&with_opt_out("bidirectional"));
    (sims, ids)
}

/// True when every contact's flag agrees on both sides and every contact has its profile.
fn every_flag_agrees(sims: &SimPair, ids: &[String]) -> bool {
    let profiles = sims.profiles();
    let contacts: std::collections::HashMap<String, bool> = sims
        .dynamics
        .rows("contact")
        .into_iter()
        .filter_map(|c| {
            Some((
                c["contactid"].as_str()?.to_string(),
                c["donotbulkemail"].as_bool().unwrap_or(false),
            ))
        })
        .collect();
    ids.iter().all(|id| {
        profiles.get(id).is_some_and(|profile| {
            (profile["blackListEmail"] == true) == contacts.get(id).copied().unwrap_or(false)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_outs_wait_for_the_profiles_ingress_creates_and_none_is_dead_lettered() {
    let (sims, ids) = both_sides_opted_out(300).await;
    let seeded_dynamics = ids
        .iter()
        .filter(|id| sims.donotbulkemail(id) == Some(true))
        .count();
    assert!(
        seeded_dynamics > 10,
        "the seed opts contacts out in Dynamics 365"
    );
    let mut host = sims.spawn_host().await;
    host.start("optinout").await;
    // Before Ingress runs, the opt-outs for profiles not created yet wait, and status says so.
    let view = host
        .wait_workflow("optinout", "writes waiting for their profile", |v| {
            v["waiting"]
                .as_str()
                .is_some_and(|w| w.contains("wait for their record to be created"))
        })
        .await;
    assert_eq!(view["counters"]["dead_letters"], 0, "{view}");
    let status = sims.cli(&["status"]);
    assert!(status.stdout.contains("waiting:"), "{}", status.stdout);
    host.start("ingress").await;
    host.wait_caught_up("ingress").await;
    wait_for("every flag right on both sides", 120, || {
        every_flag_agrees(&sims, &ids)
    })
    .await;
    let view = host.wait_caught_up("optinout").await;
    assert_eq!(view["counters"]["dead_letters"], 0, "{view}");
    for id in ids.iter().take(4) {
        assert_eq!(
            sims.donotbulkemail(id),
            Some(true),
            "Campaign's opt-out reached Dynamics 365"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_outs_and_profiles_converge_under_faults_and_kills() {
    let (sims, ids) = both_sides_opted_out(400).await;
    let faults = FaultConfig {
        error_rate: 0.05,
        seed: 11,
        ..FaultConfig::default()
    };
    sims.campaign.faults().set(faults.clone()).unwrap();
    sims.dynamics.faults().set(faults).unwrap();
    let mut host = sims.spawn_host().await;
    host.start("optinout").await;
    host.start("ingress").await;
    for round in 0..3u64 {
        tokio::time::sleep(std::time::Duration::from_millis(700 + 400 * round)).await;
        host.kill_hard();
        host = sims.spawn_host().await;
    }
    sims.campaign.faults().clear();
    sims.dynamics.faults().clear();
    host.wait_caught_up("ingress").await;
    wait_for("every flag right on both sides", 180, || {
        every_flag_agrees(&sims, &ids)
    })
    .await;
    let view = host.wait_caught_up("optinout").await;
    assert_eq!(view["counters"]["dead_letters"], 0, "{view}");
    assert_eq!(
        host.workflow("ingress").await["counters"]["dead_letters"],
        0
    );
}
