//! `conduit verify` end to end: the real binary against both simulators. One host serves the
//! whole file (CI time is short): after an ingress the two sides agree; an opt-out set in
//! Campaign behind Conduit's back is named with the write the rule would make, and `--repair`
//! has it resolved again from both sides as they are when the reader gets to it; changes made behind
//! Conduit's back through Campaign's own API (a renamed profile, a deleted one, an extra one)
//! and a contact deleted while Ingress was stopped are named exactly; `--repair` queues them
//! (visible in the backlog, where verify reports them as such rather than as differences);
//! once Ingress has written them the two sides agree again. `conduit preview` names the exact
//! records a pending edit changes: an Opt-in/out direction (the flags), an Egress event switch
//! (the events newly skipped), an Ingress mapping (a replacement, a filter) and a replaced
//! plugin file; after the restart the data is what it said.

use std::collections::BTreeSet;

use conduit_e2e::{
    CliOutput, EGRESS, INGRESS_CONTACTS, INGRESS_VEHICLES, SECRETS, SimPair, builtin_plugin_file,
    contact_mapper_file,
};
use conduit_model::{BounceDetail, EmailEvent, EmailEventKind};
use serde_json::{Value, json};

/// Opt-in/out both ways on one pair, polling quickly.
const OPT_IN_OUT: &str = r#"
[optinout]
pacing = { poll_interval_ms = 200 }
direction = "bidirectional"
pairs = [{ dynamics = "donotbulkemail", campaign = "blackListEmail" }]
"#;

/// Ingress's contacts mapping with its plugin a .wasm file beside the config (`mapper.wasm`),
/// so that the test can replace the file under the running workflow.
fn ingress_contacts() -> String {
    INGRESS_CONTACTS.replace("[ingress]\n", "[ingress]\nplugin = \"mapper.wasm\"\n")
}

/// Email events for the first contacts: each kind, a soft bounce (skipped by the mapper), and
/// two events of the same kind for one contact.
fn email_events(contacts: &[String]) -> Vec<EmailEvent> {
    let kinds = [
        (EmailEventKind::Send, None),
        (EmailEventKind::Open, None),
        (EmailEventKind::Click, None),
        (EmailEventKind::Bounce, Some(true)),
        (EmailEventKind::Bounce, Some(false)),
        (EmailEventKind::Send, None),
    ];
    (0..18)
        .map(|n| {
            let (kind, hard) = kinds[n % kinds.len()];
            EmailEvent {
                id: format!("e0e0e0e0-0000-4000-8000-{n:012}"),
                kind,
                contact_key: contacts[n % 4].clone(),
                campaign_id: format!("C{}", n % 2),
                campaign_name: format!("Spring {}", n % 2),
                delivery_id: format!("D{}", n % 3),
                delivery_name: format!("Launch {}", n % 3),
                timestamp: format!("2026-11-{:02}T10:{:02}:07.250Z", 1 + n, n),
                url: (kind == EmailEventKind::Click).then(|| format!("https://example.com/{n}")),
                mirror_page_url: (n % 2 == 0).then(|| format!("https://m.example.com/{n}")),
                bounce: hard.map(|hard| BounceDetail {
                    hard,
                    reason: "User unknown".into(),
                }),
            }
        })
        .collect()
}

/// A client of the Campaign simulator's REST API, as someone working in Campaign would be.
struct CampaignApi {
    http: reqwest::Client,
    base: String,
    token: String,
    client_id: String,
}

impl CampaignApi {
    async fn new(sims: &SimPair) -> CampaignApi {
        let http = reqwest::Client::new();
        let token: Value = http
            .post(sims.campaign_server.ims_url())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", sims.campaign.client_id()),
                ("client_secret", SECRETS[1].1),
                ("scope", "openid,AdobeID,campaign_sdk"),
            ])
            .send()
            .await
            .expect("IMS answers")
            .json()
            .await
            .expect("a token");
        CampaignApi {
            http,
            base: sims.campaign_server.api_base(),
            token: token["access_token"].as_str().expect("a token").to_owned(),
            client_id: sims.campaign.client_id().to_owned(),
        }
    }

    async fn call(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.token)
            .header("X-Api-Key", &self.client_id)
            .header("Content-Type", "application/json;charset=utf-8");
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.expect("Campaign answers");
        assert!(
            response.status().is_success(),
            "{method} {url}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    /// The href of the profile with this CRM ID.
    async fn href(&self, crm_id: &str) -> String {
        let found = self
            .call(
                reqwest::Method::GET,
                &format!(
                    "{}/profileAndServicesExt/profile/byExternalId?externalId_parameter={crm_id}",
                    self.base
                ),
                None,
            )
            .await;
        found["content"][0]["href"]
            .as_str()
            .expect("the profile exists")
            .to_owned()
    }
}

/// Runs `conduit verify ingress --json` with `extra` arguments; returns the output and the report.
fn verify(sims: &SimPair, extra: &[&str]) -> (CliOutput, Value) {
    verify_workflow(sims, "ingress", extra)
}

/// Runs `conduit verify <workflow> --json` with `extra` arguments.
fn verify_workflow(sims: &SimPair, workflow: &str, extra: &[&str]) -> (CliOutput, Value) {
    let mut args = vec!["verify", workflow, "--json"];
    args.extend_from_slice(extra);
    let output = sims.cli(&args);
    let report: Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("verify printed no JSON report ({error}):\n{output}"));
    (output, report)
}

/// Runs `conduit preview <workflow> --json` with `extra` arguments; the preview, once it exited 0.
fn preview_json(sims: &SimPair, workflow: &str, extra: &[&str]) -> Value {
    let mut args = vec!["preview", workflow, "--json"];
    args.extend_from_slice(extra);
    let output = sims.cli(&args);
    assert_eq!(output.code, 0, "{output}");
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("preview printed no JSON ({error}):\n{output}"))
}

/// The keys of one kind of difference of one mapping.
fn keys(report: &Value, mapping: &str, kind: &str) -> BTreeSet<String> {
    let check = report["mappings"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["mapping"] == mapping))
        .unwrap_or_else(|| panic!("no mapping {mapping} in {report:#}"));
    let list = match kind {
        "stale" => &check["stale"],
        other => &check[other]["keys"],
    };
    list.as_array()
        .unwrap_or_else(|| panic!("no {kind} in {check:#}"))
        .iter()
        .map(|entry| {
            entry
                .as_str()
                .or_else(|| entry["key"].as_str())
                .expect("a key")
                .to_owned()
        })
        .collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|key| (*key).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_what_changed_behind_conduits_back_and_repair_fixes_it() {
    let sims = SimPair::start(240, 40).await;
    let mapper = sims.dir.path().join("mapper.wasm");
    std::fs::copy(builtin_plugin_file("table_mapper.wasm"), &mapper).unwrap();
    let events = email_events(&sims.ids("contact", "contactid"));
    for event in &events {
        sims.campaign.emit_event(event);
    }
    let mut host = sims
        .host_with_ingress_caught_up(&format!(
            "{}{INGRESS_VEHICLES}{OPT_IN_OUT}{EGRESS}",
            ingress_contacts()
        ))
        .await;
    host.start("egress").await;

    // After an ingress the two sides agree, record for record and field for field.
    let (output, report) = verify(&sims, &[]);
    assert_eq!(output.code, 0, "{output}");
    assert_eq!(report["in_sync"], true, "{report:#}");
    for (mapping, rows) in [("contacts", 240), ("vehicles", 40)] {
        let check = report["mappings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["mapping"] == mapping)
            .unwrap();
        assert_eq!(check["source_records"], rows, "{check:#}");
        assert_eq!(check["destination_records"], rows, "{check:#}");
        assert_eq!(check["matching"], rows, "{check:#}");
    }
    // The table for people says so too.
    let output = sims.cli(&["verify", "ingress", "--mapping", "contacts"]);
    assert_eq!(output.code, 0, "{output}");
    assert!(output.stdout.contains("IN SYNC"), "{output}");
    assert!(
        output
            .stdout
            .contains("contacts (contact -> profile): 240 source, 240 destination, 240 matching"),
        "{output}"
    );

    // Opt-in/out: the flags agree; an opt-out set in Campaign behind Conduit's back (no
    // export) is named with the write the bidirectional rule would make (opted-out wins).
    host.start("optinout").await;
    host.wait_caught_up("optinout").await;
    let (output, report) = verify_workflow(&sims, "optinout", &[]);
    assert_eq!(output.code, 0, "{output}");
    assert_eq!(report["mappings"][0]["matching"], 240, "{report:#}");
    let opted_out = sims.ids("contact", "contactid")[40].clone();
    let campaign = CampaignApi::new(&sims).await;
    let href = campaign.href(&opted_out).await;
    campaign
        .call(
            reqwest::Method::PATCH,
            &href,
            Some(json!({"blackListEmail": true})),
        )
        .await;
    let (output, report) = verify_workflow(&sims, "optinout", &[]);
    assert_eq!(output.code, 7, "{output}");
    assert_eq!(report["differences"], 1, "{report:#}");
    assert_eq!(
        report["mappings"][0]["stale"],
        json!([{"key": opted_out, "fields": [
            {"field": "dynamics donotbulkemail", "expected": true, "actual": false}
        ]}])
    );
    // A pending edit makes Opt-in/out one way, Dynamics 365 to Campaign. The preview names
    // exactly the flags that changes, on the one contact whose two sides disagree: the rule in
    // force copies Campaign's opt-out to Dynamics 365, the pending one would write Dynamics
    // 365's value to Campaign. It writes nothing.
    let config = |optinout: &str, egress: &str| {
        format!("{}{INGRESS_VEHICLES}{optinout}{egress}", ingress_contacts())
    };
    let one_way = OPT_IN_OUT.replace("\"bidirectional\"", "\"dynamics-to-campaign\"");
    assert_ne!(one_way, OPT_IN_OUT);
    sims.write_config(&config(&one_way, EGRESS));
    host.wait_workflow("optinout", "the pending edit", |view| {
        view["pending_changes"] == true
    })
    .await;
    let (profiles_before, contacts_before) = (sims.profiles(), sims.dynamics.rows("contact"));
    let preview = preview_json(&sims, "optinout", &["--limit", "1000"]);
    assert_eq!(preview["pending"], true, "{preview:#}");
    let part = &preview["mappings"][0];
    assert_eq!(part["mapping"], "opt-out pairs", "{part:#}");
    assert_eq!(part["status"], "changed", "{part:#}");
    assert_eq!(part["records_read"], contacts_before.len(), "{part:#}");
    assert_eq!(
        part["records"],
        json!([{"key": opted_out, "change": "fields", "reason": null, "fields": [
            {"field": "campaign blackListEmail", "before": null, "after": false},
            {"field": "dynamics donotbulkemail", "before": true, "after": null}
        ]}]),
        "{part:#}"
    );
    assert_eq!(part["unchanged"], contacts_before.len() - 1, "{part:#}");
    let output = sims.cli(&["preview", "optinout", "--limit", "1000"]);
    assert_eq!(output.code, 0, "{output}");
    assert!(
        output.stdout.contains(&format!(
            "{opted_out} flags written: campaign blackListEmail: (not written) -> false"
        )),
        "{output}"
    );
    assert_eq!(sims.profiles(), profiles_before, "a preview writes nothing");
    assert_eq!(sims.dynamics.rows("contact"), contacts_before);
    sims.write_config(&config(OPT_IN_OUT, EGRESS));
    host.wait_workflow("optinout", "no change pending", |view| {
        view["pending_changes"] == false
    })
    .await;
    // --repair writes no flag itself: it queues the contacts to be resolved again, both sides
    // read afresh when the reader gets to them. A second opt-out set in Campaign behind
    // Conduit's back is undone there between the repair and the reader's turn: it must end as
    // it is then, not as the comparison saw it (no blind write of a compared value).
    let undone = sims.ids("contact", "contactid")[41].clone();
    let undone_href = campaign.href(&undone).await;
    let set_flag = |href: String, flag: bool| {
        let campaign = &campaign;
        async move {
            campaign
                .call(
                    reqwest::Method::PATCH,
                    &href,
                    Some(json!({"blackListEmail": flag})),
                )
                .await;
        }
    };
    set_flag(undone_href.clone(), true).await;
    host.stop("optinout").await;
    let (output, report) = verify_workflow(&sims, "optinout", &["--repair"]);
    assert_eq!(output.code, 7, "{output}");
    assert_eq!(report["repaired"], 2, "{report:#}");
    let both = set(&[&opted_out, &undone]);
    assert_eq!(keys(&report, "opt-out pairs", "stale"), both);
    let view = host.workflow("optinout").await;
    assert_eq!(view["backlog"], 2, "durable and in the backlog: {view:#}");
    let view = host.workflow("ingress").await;
    assert_eq!(
        view["backlog"], 0,
        "Opt-in/out's keys are not Ingress's: {view:#}"
    );
    let audit = host.get("/api/audit?limit=5").await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["action"] == "verify-repair" && entry["target"] == "optinout"),
        "{audit:#}"
    );
    // Waiting in the backlog is reported as such, not as a difference.
    let (output, report) = verify_workflow(&sims, "optinout", &[]);
    assert_eq!(output.code, 0, "{output}");
    assert_eq!(keys(&report, "opt-out pairs", "in_backlog"), both);
    set_flag(undone_href, false).await;
    host.start("optinout").await;
    host.wait_caught_up("optinout").await;
    assert_eq!(sims.donotbulkemail(&opted_out), Some(true));
    assert_eq!(sims.profiles()[opted_out.as_str()]["blackListEmail"], true);
    assert_ne!(
        sims.donotbulkemail(&undone),
        Some(true),
        "the opt-out undone since the comparison is not written to Dynamics 365"
    );
    assert_eq!(sims.profiles()[undone.as_str()]["blackListEmail"], false);
    let (output, report) = verify_workflow(&sims, "optinout", &[]);
    assert_eq!(output.code, 0, "{output}");
    assert_eq!(report["differences"], 0, "{report:#}");
    assert_eq!(
        report["mappings"][0]["in_backlog"]["count"], 0,
        "{report:#}"
    );
    host.stop("optinout").await;

    // Egress: every email event Conduit has written is an activity with the mapped fields.
    host.wait_workflow("egress", "every event written", |view| {
        view["counters"]["read"] == events.len() && view["backlog"] == 0
    })
    .await;
    let skipped = events
        .iter()
        .filter(|e| e.bounce.as_ref().is_some_and(|b| !b.hard))
        .count();
    let activities = events.len() - skipped;
    let (output, report) = verify_workflow(&sims, "egress", &[]);
    assert_eq!(output.code, 0, "{output}");
    let check = &report["mappings"][0];
    assert_eq!(check["source_records"], events.len(), "{report:#}");
    assert_eq!(check["matching"], activities, "{report:#}");
    assert_eq!(check["filtered"], skipped, "{report:#}");
    // Behind Conduit's back, in Dynamics 365: a click activity deleted, a send's subject and
    // an open's regarding contact changed.
    let click = events
        .iter()
        .find(|e| e.kind == EmailEventKind::Click)
        .unwrap();
    let send = events
        .iter()
        .find(|e| e.kind == EmailEventKind::Send)
        .unwrap();
    let open = events
        .iter()
        .find(|e| e.kind == EmailEventKind::Open)
        .unwrap();
    sims.dynamics.delete("adobe_emailclick", &click.id).unwrap();
    sims.dynamics
        .upsert(
            "adobe_emailsend",
            &send.id,
            conduit_e2e::fields(&[("subject", json!("Edited in Dynamics"))]),
        )
        .unwrap();
    let other_contact = sims.ids("contact", "contactid")[100].clone();
    sims.dynamics
        .upsert(
            "adobe_emailopen",
            &open.id,
            conduit_e2e::fields(&[(
                "regardingobjectid_contact@odata.bind",
                json!(format!("/contacts({other_contact})")),
            )]),
        )
        .unwrap();
    let (output, report) = verify_workflow(&sims, "egress", &[]);
    assert_eq!(output.code, 7, "{output}");
    assert_eq!(report["differences"], 3, "{report:#}");
    assert_eq!(keys(&report, "events", "missing"), set(&[&click.id]));
    assert_eq!(keys(&report, "events", "stale"), set(&[&send.id, &open.id]));
    let stale = report["mappings"][0]["stale"].as_array().unwrap();
    let fields_of = |id: &str| {
        stale
            .iter()
            .find(|s| s["key"] == id)
            .map(|s| s["fields"].clone())
            .unwrap()
    };
    assert_eq!(
        fields_of(&send.id),
        json!([{"field": "subject", "actual": "Edited in Dynamics", "expected": format!(
            "Campaign Name: {}; Delivery Name: {}", send.campaign_name, send.delivery_name)}])
    );
    assert_eq!(
        fields_of(&open.id),
        json!([{"field": "regardingobjectid", "actual": other_contact, "expected": open.contact_key}])
    );
    let output = sims.cli(&["verify", "egress"]);
    assert_eq!(output.code, 7, "{output}");
    assert!(
        output.stdout.contains(&format!("missing 1: {}", click.id)),
        "{output}"
    );
    // A sample maps the oldest events only: the send and the open, not the click (the third).
    let (output, report) = verify_workflow(&sims, "egress", &["--sample", "2"]);
    assert_eq!(output.code, 7, "{output}");
    assert_eq!(report["mappings"][0]["source_records"], 2, "{report:#}");
    assert_eq!(keys(&report, "events", "missing"), set(&[]));
    assert_eq!(keys(&report, "events", "stale"), set(&[&send.id, &open.id]));
    // Events Egress has not read yet are work in progress, not differences.
    host.stop("egress").await;
    let late = EmailEvent {
        id: "e0e0e0e0-0000-4000-8000-0000000000ff".into(),
        ..send.clone()
    };
    sims.campaign.emit_event(&late);
    let (output, report) = verify_workflow(&sims, "egress", &[]);
    assert_eq!(output.code, 7, "{output}");
    assert_eq!(keys(&report, "events", "in_backlog"), set(&[&late.id]));
    assert_eq!(report["differences"], 3, "{report:#}");
    // --repair queues the three activities for the writer, mapped from their events.
    let (output, report) = verify_workflow(&sims, "egress", &["--repair"]);
    assert_eq!(output.code, 7, "{output}");
    assert_eq!(report["repaired"], 3, "{report:#}");
    assert_eq!(host.workflow("egress").await["backlog"], 3);
    let (output, report) = verify_workflow(&sims, "egress", &[]);
    assert_eq!(output.code, 0, "{output}");
    assert_eq!(
        keys(&report, "events", "in_backlog"),
        set(&[&click.id, &send.id, &open.id, &late.id])
    );
    host.start("egress").await;
    host.wait_workflow("egress", "the repairs and the late event written", |view| {
        view["status"] == "RUNNING"
            && view["counters"]["read"] == events.len() + 1
            && view["backlog"] == 0
    })
    .await;
    let (output, report) = verify_workflow(&sims, "egress", &[]);
    assert_eq!(output.code, 0, "{output}");
    assert_eq!(
        report["mappings"][0]["matching"],
        activities + 1,
        "{report:#}"
    );
    assert_eq!(sims.dynamics.count("adobe_emailclick"), 3);

    // A pending edit of Egress switches clicks off. The preview maps the journal with the
    // switches in force and with the pending ones: exactly the click events are newly
    // skipped, nothing else changes, and nothing is written.
    let journal: Vec<&EmailEvent> = events.iter().chain([&late]).collect();
    let clicks_off = EGRESS.replace("click = true", "click = false");
    assert_ne!(clicks_off, EGRESS);
    sims.write_config(&config(OPT_IN_OUT, &clicks_off));
    host.wait_workflow("egress", "the pending edit", |view| {
        view["pending_changes"] == true
    })
    .await;
    let activity_tables = ["adobe_emailsend", "adobe_emailopen", "adobe_emailclick"];
    let activities_of = || activity_tables.map(|table| sims.dynamics.rows(table));
    let activities_before = activities_of();
    let preview = preview_json(&sims, "egress", &["--limit", "1000"]);
    assert_eq!(preview["pending"], true, "{preview:#}");
    let part = &preview["mappings"][0];
    assert_eq!(part["mapping"], "events", "{part:#}");
    assert_eq!(part["status"], "changed", "{part:#}");
    assert_eq!(part["records_read"], journal.len(), "{part:#}");
    let newly_skipped: Vec<Value> = journal
        .iter()
        .filter(|e| e.kind == EmailEventKind::Click)
        .map(|e| {
            json!({"key": e.id, "change": "filtered", "fields": [],
                "reason": "click events are switched off"})
        })
        .collect();
    assert!(!newly_skipped.is_empty());
    assert_eq!(part["records"], json!(newly_skipped), "{part:#}");
    assert_eq!(
        part["unchanged"],
        journal.len() - newly_skipped.len(),
        "{part:#}"
    );
    // --limit reads the oldest events only: the third is the first click.
    let preview = preview_json(&sims, "egress", &["--limit", "3"]);
    assert_eq!(preview["mappings"][0]["records_read"], 3, "{preview:#}");
    assert_eq!(
        preview["mappings"][0]["records"],
        json!([newly_skipped[0]]),
        "{preview:#}"
    );
    let output = sims.cli(&["preview", "egress"]);
    assert_eq!(output.code, 0, "{output}");
    assert!(
        output.stdout.contains(&format!(
            "{} newly filtered out: click events are switched off",
            click.id
        )),
        "{output}"
    );
    assert_eq!(
        activities_of(),
        activities_before,
        "a preview writes nothing"
    );
    // After the restart the data is what the preview said: the click activities are left as
    // they were, a new click is not written while a new send is, and verify with the edit in
    // force counts every click as filtered.
    host.stop("egress").await;
    host.start("egress").await;
    let new_click = EmailEvent {
        id: "e0e0e0e0-0000-4000-8000-0000000000fe".into(),
        ..click.clone()
    };
    let new_send = EmailEvent {
        id: "e0e0e0e0-0000-4000-8000-0000000000fd".into(),
        ..send.clone()
    };
    sims.campaign.emit_event(&new_click);
    sims.campaign.emit_event(&new_send);
    let sends = sims.dynamics.count("adobe_emailsend");
    conduit_e2e::wait_for("the new send written", 60, || {
        sims.dynamics.count("adobe_emailsend") == sends + 1
    })
    .await;
    host.wait_workflow("egress", "the new events read", |view| view["backlog"] == 0)
        .await;
    assert_eq!(sims.dynamics.rows("adobe_emailclick"), activities_before[2]);
    let (output, report) = verify_workflow(&sims, "egress", &[]);
    assert_eq!(output.code, 0, "{output}");
    assert_eq!(
        report["mappings"][0]["filtered"],
        skipped + newly_skipped.len() + 1,
        "{report:#}"
    );
    let preview = preview_json(&sims, "egress", &[]);
    assert_eq!(preview["pending"], false, "{preview:#}");
    assert_eq!(preview["mappings"][0]["records"], json!([]), "{preview:#}");
    host.stop("egress").await;

    // Behind Conduit's back, through Campaign's API: a renamed profile, a deleted one, an
    // extra one. And a contact deleted in Dynamics 365 while Ingress is stopped.
    host.stop("ingress").await;
    let ids = sims.ids("contact", "contactid");
    let (renamed, deleted, gone_at_source) = (&ids[5], &ids[17], &ids[30]);
    let href = campaign.href(renamed).await;
    campaign
        .call(
            reqwest::Method::PATCH,
            &href,
            Some(json!({"lastName": "Edited In Campaign"})),
        )
        .await;
    let href = campaign.href(deleted).await;
    campaign.call(reqwest::Method::DELETE, &href, None).await;
    campaign
        .call(
            reqwest::Method::POST,
            &format!("{}/profileAndServicesExt/profile", campaign.base),
            Some(json!({"externalId": "made-in-campaign", "lastName": "Nobody"})),
        )
        .await;
    sims.dynamics
        .delete("contact", gone_at_source)
        .expect("the simulator deletes the contact");

    let (output, report) = verify(&sims, &[]);
    assert_eq!(output.code, 7, "out of sync exits 7: {output}");
    assert_eq!(report["in_sync"], false);
    assert_eq!(report["differences"], 3, "{report:#}");
    assert_eq!(keys(&report, "contacts", "stale"), set(&[renamed]));
    assert_eq!(keys(&report, "contacts", "missing"), set(&[deleted]));
    assert_eq!(
        keys(&report, "contacts", "orphaned"),
        set(&[gone_at_source])
    );
    assert_eq!(
        keys(&report, "contacts", "foreign"),
        set(&["made-in-campaign"]),
        "a profile Conduit did not write is named, and left alone"
    );
    let stale = &report["mappings"][0]["stale"][0];
    assert_eq!(
        stale["fields"],
        json!([{"field": "lastName", "expected": sims.dynamics.rows("contact").iter()
            .find(|c| c["contactid"] == renamed.as_str()).unwrap()["lastname"],
            "actual": "Edited In Campaign"}]),
        "{stale:#}"
    );
    assert_eq!(keys(&report, "vehicles", "missing"), set(&[]));
    let output = sims.cli(&["verify", "ingress", "--mapping", "contacts"]);
    assert_eq!(output.code, 7, "{output}");
    assert!(
        output.stdout.contains(&format!("missing 1: {deleted}")),
        "{output}"
    );
    assert!(
        output
            .stdout
            .contains("not written by Conduit (left alone) 1: made-in-campaign"),
        "{output}"
    );

    // A sample looks the first records up by key: the deleted profile is among them.
    let (output, report) = verify(&sims, &["--sample", "20", "--mapping", "contacts"]);
    assert_eq!(output.code, 7, "{output}");
    assert_eq!(report["mappings"][0]["source_records"], 20, "{report:#}");
    assert_eq!(keys(&report, "contacts", "missing"), set(&[deleted]));
    assert_eq!(keys(&report, "contacts", "stale"), set(&[renamed]));

    // --repair queues the three for the normal writer: durable, and in the backlog.
    let (output, report) = verify(&sims, &["--repair"]);
    assert_eq!(output.code, 7, "{output}");
    assert_eq!(report["repaired"], 3, "{report:#}");
    let view = host.workflow("ingress").await;
    assert_eq!(view["backlog"], 3, "{view:#}");
    let audit = host.get("/api/audit?limit=5").await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["action"] == "verify-repair" && entry["target"] == "ingress"),
        "{audit:#}"
    );
    // What waits in the backlog is reported as such, not as a difference.
    let (output, report) = verify(&sims, &[]);
    assert_eq!(output.code, 0, "{output}");
    assert_eq!(
        keys(&report, "contacts", "in_backlog"),
        set(&[renamed, deleted, gone_at_source])
    );

    // Ingress writes them; the two sides agree again, and the extra profile is still there.
    host.start("ingress").await;
    host.wait_caught_up("ingress").await;
    let (output, report) = verify(&sims, &[]);
    assert_eq!(output.code, 0, "{output}");
    assert_eq!(report["differences"], 0, "{report:#}");
    assert_eq!(keys(&report, "contacts", "in_backlog"), set(&[]));
    let profiles = sims.profiles();
    assert_ne!(profiles[renamed.as_str()]["lastName"], "Edited In Campaign");
    assert!(profiles.contains_key(deleted.as_str()));
    assert!(!profiles.contains_key(gone_at_source.as_str()));
    assert!(profiles.contains_key("made-in-campaign"));

    // A new build of Ingress's plugin replaces the .wasm under the running workflow: the
    // preview maps the mapping in force with the build the workflow started with and the
    // pending one with the file, naming the records the new build writes differently (it
    // lowercases e-mail addresses and skips contacts without one).
    let (shouting, silent) = (&ids[60], &ids[61]);
    sims.dynamics
        .upsert(
            "contact",
            shouting,
            conduit_e2e::fields(&[("emailaddress1", json!("Loud.Person@Example.COM"))]),
        )
        .unwrap();
    sims.dynamics
        .upsert(
            "contact",
            silent,
            conduit_e2e::fields(&[("emailaddress1", Value::Null)]),
        )
        .unwrap();
    conduit_e2e::wait_for("Ingress to write both contacts", 60, || {
        let profiles = sims.profiles();
        profiles[shouting.as_str()]["email"] == "Loud.Person@Example.COM"
            && profiles[silent.as_str()]["email"]
                .as_str()
                .is_none_or(str::is_empty)
    })
    .await;
    std::fs::copy(contact_mapper_file(), &mapper).unwrap();
    host.wait_workflow("ingress", "the plugin change pending", |view| {
        view["pending_changes"] == true
    })
    .await;
    let before = sims.profiles();
    let output = sims.cli(&[
        "preview",
        "ingress",
        "--mapping",
        "contacts",
        "--limit",
        "1000",
        "--json",
    ]);
    assert_eq!(output.code, 0, "{output}");
    let preview: Value = serde_json::from_str(&output.stdout).expect("a JSON preview");
    assert_eq!(preview["pending"], true, "{preview:#}");
    let mapping = &preview["mappings"][0];
    assert_eq!(mapping["status"], "changed", "{mapping:#}");
    let mut records = mapping["records"].as_array().unwrap().clone();
    records.sort_by_key(|record| record["key"].as_str().unwrap_or_default().to_owned());
    let mut expected = vec![
        json!({"key": shouting, "change": "fields", "reason": null, "fields": [
            {"field": "email", "before": "Loud.Person@Example.COM", "after": "loud.person@example.com"}
        ]}),
        json!({"key": silent, "change": "filtered", "reason": "no emailaddress1", "fields": []}),
    ];
    expected.sort_by_key(|record| record["key"].as_str().unwrap_or_default().to_owned());
    assert_eq!(records, expected, "{mapping:#}");
    assert!(
        preview["notes"].as_array().unwrap().iter().any(|note| note
            .as_str()
            .unwrap_or_default()
            .contains("replaced on disk")),
        "{preview:#}"
    );
    assert_eq!(sims.profiles(), before, "a preview writes nothing");
    // The build in force is back on disk: nothing is pending any more.
    std::fs::copy(builtin_plugin_file("table_mapper.wasm"), &mapper).unwrap();
    host.wait_workflow("ingress", "no change pending", |view| {
        view["pending_changes"] == false
    })
    .await;

    // A pending edit of the mapping: a new replacement and a filter. The preview names
    // exactly the records they change, and writes nothing.
    let contacts = sims.dynamics.rows("contact");
    let text = |row: &Value, column: &str| row[column].as_str().unwrap_or_default().to_owned();
    let replaced = text(&contacts[3], "lastname");
    let excluded = text(&contacts[8], "firstname");
    assert!(
        !replaced.is_empty() && !excluded.is_empty(),
        "the seed names its contacts"
    );
    let edit = format!(
        "  {{ source = \"emailaddress1\", destination = \"email\" }},\n]\nreplacements = [{{ field = \"lastname\", from = \"{replaced}\", to = \"Replaced\" }}]\nfilters = {{ rules = [{{ field = \"firstname\", op = \"ne\", value = \"{excluded}\" }}] }}\n"
    );
    let edited = INGRESS_CONTACTS.replace(
        "  { source = \"emailaddress1\", destination = \"email\" },\n]\n",
        &edit,
    );
    assert_ne!(edited, INGRESS_CONTACTS);
    sims.write_config(&format!(
        "{}{INGRESS_VEHICLES}{OPT_IN_OUT}{EGRESS}",
        edited.replace("[ingress]\n", "[ingress]\nplugin = \"mapper.wasm\"\n")
    ));
    host.wait_workflow("ingress", "the pending edit", |view| {
        view["pending_changes"] == true
    })
    .await;
    let expected_filtered: BTreeSet<String> = contacts
        .iter()
        .filter(|c| text(c, "firstname") == excluded)
        .map(|c| text(c, "contactid"))
        .collect();
    let expected_renamed: BTreeSet<String> = contacts
        .iter()
        .filter(|c| text(c, "lastname") == replaced && text(c, "firstname") != excluded)
        .map(|c| text(c, "contactid"))
        .collect();
    assert!(!expected_filtered.is_empty() && !expected_renamed.is_empty());
    let before = sims.profiles();
    let output = sims.cli(&[
        "preview",
        "ingress",
        "--mapping",
        "contacts",
        "--limit",
        "1000",
        "--json",
    ]);
    assert_eq!(output.code, 0, "{output}");
    let preview: Value = serde_json::from_str(&output.stdout).expect("a JSON preview");
    assert_eq!(preview["pending"], true, "{preview:#}");
    let mapping = &preview["mappings"][0];
    assert_eq!(mapping["records_read"], contacts.len(), "{mapping:#}");
    let changed = |kind: &str| -> BTreeSet<String> {
        mapping["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["change"] == kind)
            .map(|r| r["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(changed("filtered"), expected_filtered, "{mapping:#}");
    assert_eq!(changed("fields"), expected_renamed, "{mapping:#}");
    assert_eq!(
        mapping["records"].as_array().unwrap().len(),
        expected_filtered.len() + expected_renamed.len(),
        "nothing else changes: {mapping:#}"
    );
    for record in mapping["records"].as_array().unwrap() {
        if record["change"] == "fields" {
            assert_eq!(
                record["fields"],
                json!([{"field": "lastName", "before": replaced, "after": "Replaced"}]),
                "{record:#}"
            );
        }
    }
    assert_eq!(sims.profiles(), before, "a preview writes nothing");
    let output = sims.cli(&[
        "preview",
        "ingress",
        "--mapping",
        "contacts",
        "--limit",
        "1000",
    ]);
    assert_eq!(output.code, 0, "{output}");
    assert!(output.stdout.contains("written as: lastName: "), "{output}");
    assert!(
        output
            .stdout
            .contains("newly filtered out: filtered out by"),
        "{output}"
    );

    // After the restart (and a replay, which writes every record again) the data is what the
    // preview said; verify agrees with the new mapping.
    let (status, body) = host.post("/api/workflows/ingress/replay/contacts").await;
    assert_eq!(status, 200, "{body}");
    host.stop("ingress").await;
    host.start("ingress").await;
    host.wait_caught_up("ingress").await;
    let after = sims.profiles();
    for key in &expected_renamed {
        assert_eq!(after[key.as_str()]["lastName"], "Replaced", "{key}");
    }
    for key in &expected_filtered {
        assert_eq!(
            after[key.as_str()],
            before[key.as_str()],
            "a record newly filtered out is left as it was"
        );
    }
    let (output, report) = verify(&sims, &[]);
    assert_eq!(output.code, 0, "{output}");
    assert_eq!(
        report["mappings"][0]["filtered"],
        expected_filtered.len(),
        "{report:#}"
    );

    // Asking for what cannot be verified is refused with the documented codes.
    let output = sims.cli(&["verify", "ingress", "--mapping", "nope"]);
    assert_eq!(output.code, 3, "{output}");
    assert!(
        output.stderr.contains("no table mapping named 'nope'"),
        "{output}"
    );
    let output = sims.cli(&["verify", "nothing"]);
    assert_eq!(output.code, 6, "{output}");
}
