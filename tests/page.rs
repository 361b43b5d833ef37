//! The Workflows page in a real headless Chromium against the real host and the simulators:
//! it lists the workflows, Start takes one to RUNNING, the backlog moves while a load runs,
//! an edit of the TOML shows the pending badge (and, from it, the restart's preview of the
//! records it changes, for Ingress and for Egress) until stop/start, and a dead letter is retried
//! from the page and shows in its audit table. Screenshots of the key states go to
//! `target/ui-screenshots/`.

use conduit_e2e::browser::Browser;
use conduit_e2e::{SimPair, wait_for};
use conduit_model::{EmailEvent, EmailEventKind};
use conduit_sim::faults::FaultConfig;
use serde_json::json;

const WORKFLOWS: &str = r#"
[ingress]
pacing = { page_size = 50, write_batch = 25, poll_interval_ms = 200 }
[[ingress.mappings]]
name = "contacts"
source = "contact"
destination = "profile"
key = { source = "contactid", destination = "externalId" }
fields = [{ source = "lastname", destination = "lastName" }]

[egress]
send = true

[optinout]
pacing = { poll_interval_ms = 200 }
direction = "dynamics-to-campaign"
pairs = [{ dynamics = "donotbulkemail", campaign = "blackListEmail" }]
"#;

/// A script expression returning a workflow's status as the page shows it.
fn status_of(workflow: &str) -> String {
    format!(
        "return document.querySelector('tr[data-workflow=\"{workflow}\"] .status-name')?.textContent"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_workflows_starts_one_and_shows_the_backlog_moving() {
    let sims = SimPair::start(400, 0).await;
    sims.write_config(WORKFLOWS);
    // A slow Campaign keeps a backlog visible for a few of the page's one-second polls (a
    // write is one call, so 400 contacts at 16 in flight take ~25 rounds of this latency).
    sims.campaign
        .faults()
        .set(FaultConfig {
            latency_ms: 200,
            ..FaultConfig::default()
        })
        .unwrap();
    let host = sims.spawn_host().await;
    let browser = Browser::start(1280, 900).await;
    browser.goto(&format!("{}/", host.admin)).await;
    browser
        .wait_until(
            "three rows",
            "return document.querySelectorAll('tr[data-workflow]').length === 3",
        )
        .await;
    let names = browser
        .eval("return [...document.querySelectorAll('tr[data-workflow] a.name')].map(a => a.textContent)")
        .await;
    assert_eq!(
        names,
        json!([
            "Microsoft Dynamics 365 to Campaign",
            "Campaign to Microsoft Dynamics 365",
            "Opt In/Out"
        ])
    );
    browser
        .wait_until(
            "STOPPED",
            &format!("{} === 'STOPPED'", status_of("ingress")),
        )
        .await;
    browser.screenshot("workflows-stopped").await;

    browser.click("#toggle-ingress").await;
    browser
        .wait_until(
            "RUNNING",
            &format!("{} === 'RUNNING'", status_of("ingress")),
        )
        .await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..80 {
        let backlog = browser
            .eval("return document.querySelector('tr[data-workflow=\"ingress\"] .backlog').textContent")
            .await;
        seen.insert(backlog.as_str().unwrap_or_default().to_string());
        if seen.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    assert!(seen.len() >= 2, "the backlog shown never changed: {seen:?}");
    browser.screenshot("workflows-loading").await;
    assert_eq!(
        browser
            .eval("return document.getElementById('toggle-ingress').textContent")
            .await,
        "Stop"
    );

    // Detail: Replay Data is disabled once a replay is pending, with the reason shown.
    browser
        .goto(&format!("{}/#/workflow/ingress", host.admin))
        .await;
    browser
        .wait_until(
            "the replay button",
            "return document.getElementById('replay-contacts') !== null",
        )
        .await;
    browser.click("#replay-contacts").await;
    browser
        .wait_until(
            "the pending replay",
            "return document.getElementById('replay-contacts').disabled && document.getElementById('replay-reason-contacts').textContent.includes('Replay pending')",
        )
        .await;
    browser.screenshot("ingress-detail-replay-pending").await;
    // Egress shows its event switches; opt-in/out its direction.
    browser
        .goto(&format!("{}/#/workflow/egress", host.admin))
        .await;
    browser
        .wait_until(
            "the switches",
            "return document.querySelector('[data-switch=\"send\"]')?.textContent === 'Yes' && document.querySelector('[data-switch=\"open\"]')?.textContent === 'No'",
        )
        .await;
    browser
        .goto(&format!("{}/#/workflow/optinout", host.admin))
        .await;
    browser
        .wait_until(
            "the direction",
            "return document.querySelector('.direction')?.textContent === 'dynamics-to-campaign'",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_shows_the_pending_badge_until_stop_and_start() {
    let sims = SimPair::start(20, 0).await;
    let config = sims.write_config(WORKFLOWS);
    let mut host = sims.spawn_host().await;
    let (status, body) = host.post("/api/workflows/ingress/start").await;
    assert_eq!(status, 200, "{body}");
    host.wait_workflow("ingress", "RUNNING", |v| v["status"] == "RUNNING")
        .await;
    let browser = Browser::start(1280, 900).await;
    browser.goto(&format!("{}/", host.admin)).await;
    browser
        .wait_until("RUNNING", "return document.querySelector('tr[data-workflow=\"ingress\"] .status-name')?.textContent === 'RUNNING'")
        .await;
    assert_eq!(
        browser
            .eval("return document.querySelector('#toggle-ingress .badge') !== null")
            .await,
        false
    );
    // The edit: a pacing setting, and a replacement of the first contact's last name (which
    // the restart preview must show).
    let first = sims.dynamics.rows("contact")[0].clone();
    let (key, lastname) = (
        first["contactid"].as_str().unwrap().to_owned(),
        first["lastname"].as_str().unwrap().to_owned(),
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let replacement = format!(
        "fields = [{{ source = \"lastname\", destination = \"lastName\" }}]\nreplacements = [{{ field = \"lastname\", from = \"{lastname}\", to = \"Previewed\" }}]"
    );
    let edited = text.replace("page_size = 50", "page_size = 60").replace(
        "fields = [{ source = \"lastname\", destination = \"lastName\" }]",
        &replacement,
    );
    std::fs::write(&config, edited).unwrap();
    browser
        .wait_until(
            "the badge",
            "return document.querySelector('#toggle-ingress .badge') !== null",
        )
        .await;
    let tooltip = browser
        .eval("return document.getElementById('toggle-ingress').title")
        .await;
    assert!(
        tooltip
            .as_str()
            .unwrap_or_default()
            .contains("ingress.pacing.page_size: 50 -> 60"),
        "{tooltip}"
    );
    assert_eq!(
        browser
            .eval("return document.querySelector('#toggle-egress .badge') !== null")
            .await,
        false,
        "only the edited workflow is marked"
    );
    browser.screenshot("pending-badge").await;
    browser.click("#edit-ingress").await;
    browser
        .wait_until(
            "the editor with what waits for a restart",
            "return (document.getElementById('editor-pending')?.textContent || '').includes('page_size')",
        )
        .await;
    browser.screenshot("editor-pending").await;
    // From the pending changes, the restart's preview: the record whose written value changes.
    browser.click("#preview-restart").await;
    browser
        .wait_until(
            "the restart preview",
            "return (document.getElementById('preview-result')?.textContent || '').includes('would change')",
        )
        .await;
    let preview = browser
        .eval("return document.getElementById('preview-result').textContent")
        .await;
    let expected = format!("{key}: lastName: \"{lastname}\" → \"Previewed\"");
    assert!(
        preview.as_str().unwrap_or_default().contains(&expected),
        "{preview}"
    );
    browser.screenshot("restart-preview").await;
    browser.click("#editor-close").await;

    browser.click("#toggle-ingress").await;
    browser
        .wait_until("STOPPED", "return document.querySelector('tr[data-workflow=\"ingress\"] .status-name')?.textContent === 'STOPPED'")
        .await;
    browser.click("#toggle-ingress").await;
    browser
        .wait_until("RUNNING again", "return document.querySelector('tr[data-workflow=\"ingress\"] .status-name')?.textContent === 'RUNNING'")
        .await;
    browser
        .wait_until(
            "no badge",
            "return document.querySelector('#toggle-ingress .badge') === null",
        )
        .await;

    // The editor of Egress previews its restart too: with sends switched off in the file, the
    // journal's send event is newly skipped.
    let send = EmailEvent {
        id: "e0e0e0e0-0000-4000-8000-000000000001".into(),
        kind: EmailEventKind::Send,
        contact_key: key.clone(),
        campaign_id: "C1".into(),
        campaign_name: "Spring".into(),
        delivery_id: "D1".into(),
        delivery_name: "Launch".into(),
        timestamp: "2026-11-02T10:00:00Z".into(),
        url: None,
        mirror_page_url: None,
        bounce: None,
    };
    sims.campaign.emit_event(&send);
    let (status, body) = host.post("/api/workflows/egress/start").await;
    assert_eq!(status, 200, "{body}");
    host.wait_workflow("egress", "RUNNING", |v| v["status"] == "RUNNING")
        .await;
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[egress]\nsend = true", "[egress]\nsend = false"),
    )
    .unwrap();
    browser
        .wait_until(
            "the egress badge",
            "return document.querySelector('#toggle-egress .badge') !== null",
        )
        .await;
    browser.click("#edit-egress").await;
    browser
        .wait_until(
            "the egress editor with what waits for a restart",
            "return (document.getElementById('editor-pending')?.textContent || '').includes('send')",
        )
        .await;
    browser.click("#preview-restart").await;
    browser
        .wait_until(
            "the egress restart preview",
            "return (document.getElementById('preview-result')?.textContent || '').includes('would change')",
        )
        .await;
    let preview = browser
        .eval("return document.getElementById('preview-result').textContent")
        .await;
    let expected = format!(
        "{} newly filtered out (send events are switched off)",
        send.id
    );
    assert!(
        preview.as_str().unwrap_or_default().contains(&expected),
        "{preview}"
    );
    browser.screenshot("restart-preview-egress").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_retried_from_the_page() {
    let sims = SimPair::start(10, 0).await;
    // Opt-out runs before Ingress has created the profiles and gives up waiting for them at
    // once, so its update is dead-lettered.
    sims.write_config(&WORKFLOWS.replace(
        "[optinout]\n",
        "[optinout]\nlimits = { missing_record_wait_secs = 0 }\n",
    ));
    let mut host = sims.spawn_host().await;
    let (status, body) = host.post("/api/workflows/optinout/start").await;
    assert_eq!(status, 200, "{body}");
    host.wait_workflow("optinout", "caught up", |v| {
        v["status"] == "RUNNING" && v["cursors"][0]["phase"] == "incremental"
    })
    .await;
    // The seed opts contact 5 out in Dynamics 365: the first start's reconcile writes it.
    let id = sims.ids("contact", "contactid")[5].clone();
    assert_eq!(sims.donotbulkemail(&id), Some(true));
    host.wait_workflow("optinout", "a dead letter", |v| {
        v["counters"]["dead_letters"] == 1
    })
    .await;
    // The cause is fixed: Ingress creates the profiles.
    let (status, body) = host.post("/api/workflows/ingress/start").await;
    assert_eq!(status, 200, "{body}");
    wait_for("the profile", 30, || {
        sims.campaign.find("profile", &id).is_some()
    })
    .await;

    let browser = Browser::start(390, 860).await;
    browser
        .goto(&format!("{}/#/workflow/optinout", host.admin))
        .await;
    browser
        .wait_until(
            "the dead letter row",
            "return document.querySelectorAll('tr[data-letter]').length === 1",
        )
        .await;
    let reason = browser
        .eval("return document.querySelector('tr[data-letter] td:nth-child(4)').textContent")
        .await;
    assert!(
        reason.as_str().unwrap_or_default().contains(&id),
        "{reason}"
    );
    browser.screenshot("dead-letter-390px").await;
    browser.click("tr[data-letter] button[id^='retry-']").await;
    wait_for("the retried opt-out in Campaign", 30, || {
        sims.campaign
            .find("profile", &id)
            .is_some_and(|p| p["blackListEmail"] == true)
    })
    .await;
    browser
        .wait_until(
            "no dead letters",
            "return document.querySelectorAll('tr[data-letter]').length === 0",
        )
        .await;
    browser.screenshot("dead-letter-retried-390px").await;
    // The audit table shows the retry, made from the page, among the latest changes.
    browser
        .wait_until(
            "the retry in the page's audit table",
            "return [...document.querySelectorAll('#audit-rows tr')].some(r => r.textContent.includes('dead-letter-retry') && r.textContent.includes('optinout/') && r.textContent.includes('page') && r.textContent.includes('ok'))",
        )
        .await;
}

/// Ingress with a replacement and a filter, and comments the editor must keep.
const EDITABLE: &str = r#"
# Contacts go to profiles.
[ingress]
pacing = { page_size = 50, write_batch = 25, poll_interval_ms = 200 }

[[ingress.mappings]]
name = "contacts"
source = "contact"
destination = "profile"
key = { source = "contactid", destination = "externalId" }
fields = [
  { source = "firstname", destination = "firstName" },
  { source = "lastname", destination = "lastName" },
]
# First names written as Campaign wants them.
replacements = [{ field = "firstname", from = "Zed", to = "ZED" }]
filters = { combine = "and", rules = [{ field = "lastname", op = "notnull" }] }

[egress]
send = true   # sends only, for now

[optinout]
direction = "dynamics-to-campaign"
pairs = [{ dynamics = "donotbulkemail", campaign = "blackListEmail" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_editor_changes_a_replacement_and_a_filter_that_the_next_changes_follow() {
    let sims = SimPair::start(6, 0).await;
    let config = sims.write_config(EDITABLE);
    let mut host = sims.spawn_host().await;
    host.start("ingress").await;
    host.wait_caught_up("ingress").await;
    let ids = sims.ids("contact", "contactid");

    // A phone's width, driven by the keyboard where a user would type.
    let browser = Browser::start(390, 860).await;
    browser.goto(&format!("{}/", host.admin)).await;
    browser
        .wait_until(
            "the rows",
            "return document.getElementById('edit-ingress') !== null",
        )
        .await;
    browser.click("#edit-ingress").await;
    let replacement_to = "f-mappings-0-replacements-0-to";
    browser
        .wait_until(
            "the editor",
            &format!("return document.getElementById('{replacement_to}')?.value === 'ZED'"),
        )
        .await;
    // The pickers offer the services' fields with their types, beyond the names the config has.
    browser
        .wait_until(
            "the services' fields in the pickers",
            "return document.querySelector('#dl-d365-0 option[value=\"emailaddress1\"]')?.label === 'text' && document.querySelector('#dl-campaign-0 option[value=\"email\"]') !== null",
        )
        .await;
    let labelled = browser
        .eval("return [...document.querySelectorAll('#editor input, #editor select, #editor textarea')].filter(c => !document.querySelector(`label[for=\"${c.id}\"]`)).map(c => c.id)")
        .await;
    assert_eq!(labelled, json!([]), "every control has a label");
    let text = std::fs::read_to_string(&config).unwrap();

    // An invalid edit: the replacement names a field the mapping does not map.
    browser
        .fill("#f-mappings-0-replacements-0-field", "jobtitle")
        .await;
    // Checked as it is typed, before any save.
    browser
        .wait_until(
            "the problem while editing",
            "return (document.getElementById('err-f-mappings-0-replacements-0-field')?.textContent || '').includes('not a mapped field')",
        )
        .await;
    browser.press("#editor-save", "\u{E007}").await;
    browser
        .wait_until(
            "the refused save",
            "return document.getElementById('editor-state').textContent.startsWith('Not saved')",
        )
        .await;
    browser
        .wait_until(
            "the problem at its field",
            "return (document.getElementById('err-f-mappings-0-replacements-0-field')?.textContent || '').includes('not a mapped field') && document.getElementById('f-mappings-0-replacements-0-field').getAttribute('aria-invalid') === 'true'",
        )
        .await;
    browser.screenshot("editor-invalid-390px").await;
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        text,
        "nothing written"
    );

    // The replacement fixed and changed, and a filter rule added.
    browser
        .fill("#f-mappings-0-replacements-0-field", "firstname")
        .await;
    browser
        .fill("#f-mappings-0-replacements-0-from", "Ann")
        .await;
    browser.fill(&format!("#{replacement_to}"), "ANNE").await;
    browser
        .press("#add-f-mappings-0-filters-rules", "\u{E007}")
        .await;
    browser
        .wait_until(
            "the new rule",
            "return document.getElementById('f-mappings-0-filters-rules-1-field') !== null",
        )
        .await;
    browser
        .fill("#f-mappings-0-filters-rules-1-field", "lastname")
        .await;
    browser
        .eval("const op = document.getElementById('f-mappings-0-filters-rules-1-op'); op.value = 'ne'; op.dispatchEvent(new Event('change')); return true")
        .await;
    browser
        .fill("#f-mappings-0-filters-rules-1-value", "Skip")
        .await;
    let overflow = browser
        .eval("const e = document.getElementById('editor'); return e.scrollWidth - e.clientWidth")
        .await;
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "the editor fits 390 px: {overflow}"
    );
    browser.press("#editor-save", "\u{E007}").await;
    browser
        .wait_until(
            "the save and its diff",
            "return document.getElementById('editor-saved') !== null && (document.getElementById('editor-diff')?.textContent || '').includes('ANNE')",
        )
        .await;
    browser
        .wait_until(
            "the badge",
            "return document.querySelector('#toggle-ingress .badge') !== null",
        )
        .await;
    browser.screenshot("editor-saved-390px").await;
    let saved = std::fs::read_to_string(&config).unwrap();
    for comment in [
        "# Contacts go to profiles.",
        "# First names written as Campaign wants them.",
    ] {
        assert!(saved.contains(comment), "{comment} was lost:\n{saved}");
    }
    assert!(
        saved.contains(r#"replacements = [{ field = "firstname", from = "Ann", to = "ANNE" }]"#),
        "{saved}"
    );
    assert!(
        saved.contains(r#"{ field = "lastname", op = "ne", value = "Skip" }"#),
        "{saved}"
    );

    // A save from a page that loaded the file before someone else changed it is refused.
    let other = format!("{saved}\n# changed by someone else\n");
    std::fs::write(&config, &other).unwrap();
    browser.fill(&format!("#{replacement_to}"), "ANNIE").await;
    browser.press("#editor-save", "\u{E007}").await;
    browser
        .wait_until(
            "the refusal with the other change",
            "return (document.getElementById('editor-other-change')?.textContent || '').includes('+# changed by someone else')",
        )
        .await;
    assert_eq!(std::fs::read_to_string(&config).unwrap(), other);

    // Stop and Start: the next changes follow the new rules.
    browser.click("#toggle-ingress").await;
    browser
        .wait_until(
            "STOPPED",
            &format!("{} === 'STOPPED'", status_of("ingress")),
        )
        .await;
    browser.click("#toggle-ingress").await;
    browser
        .wait_until(
            "RUNNING",
            &format!("{} === 'RUNNING'", status_of("ingress")),
        )
        .await;
    browser
        .wait_until(
            "no badge",
            "return document.querySelector('#toggle-ingress .badge') === null",
        )
        .await;
    let skipped_before = sims.profiles()[&ids[1]]["lastName"].clone();
    sims.dynamics
        .upsert(
            "contact",
            &ids[1],
            conduit_e2e::fields(&[("lastname", json!("Skip"))]),
        )
        .unwrap();
    sims.dynamics
        .upsert(
            "contact",
            &ids[2],
            conduit_e2e::fields(&[("firstname", json!("Ann"))]),
        )
        .unwrap();
    wait_for("the replaced first name in Campaign", 60, || {
        sims.profiles()[&ids[2]]["firstName"] == "ANNE"
    })
    .await;
    assert_eq!(
        sims.profiles()[&ids[1]]["lastName"],
        skipped_before,
        "the filtered-out change was not written"
    );

    // Egress's switches and Opt-in/out's direction and pairs, by keyboard too.
    browser.goto(&format!("{}/#/edit/egress", host.admin)).await;
    browser
        .wait_until("the switches", "return document.getElementById('f-open')?.checked === false && document.getElementById('f-send').checked")
        .await;
    browser.press("#f-open", " ").await;
    browser.press("#editor-save", "\u{E007}").await;
    browser
        .wait_until(
            "the egress save",
            "return document.getElementById('editor-saved') !== null",
        )
        .await;
    let egress = std::fs::read_to_string(&config).unwrap();
    assert!(
        egress.contains("send = true   # sends only, for now\nopen = true\n"),
        "{egress}"
    );
    browser
        .goto(&format!("{}/#/edit/optinout", host.admin))
        .await;
    browser
        .wait_until(
            "the direction",
            "return document.getElementById('f-direction')?.value === 'dynamics-to-campaign'",
        )
        .await;
    browser
        .eval("const d = document.getElementById('f-direction'); d.value = 'bidirectional'; d.dispatchEvent(new Event('change')); return true")
        .await;
    browser.press("#add-f-pairs", "\u{E007}").await;
    browser.fill("#f-pairs-1-dynamics", "donotemail").await;
    browser.fill("#f-pairs-1-campaign", "blackList").await;
    browser.press("#editor-save", "\u{E007}").await;
    browser
        .wait_until(
            "the opt-out save",
            "return document.getElementById('editor-saved') !== null",
        )
        .await;
    let optinout = std::fs::read_to_string(&config).unwrap();
    assert!(
        optinout.contains("direction = \"bidirectional\"\n"),
        "{optinout}"
    );
    assert!(
        optinout.contains(r#"{ dynamics = "donotemail", campaign = "blackList" }"#),
        "{optinout}"
    );
}
