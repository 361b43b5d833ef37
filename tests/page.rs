//! The Workflows page in a real headless Chromium against the real host and the simulators:
//! it lists the workflows, Start takes one to RUNNING, the backlog moves while a load runs,
//! an edit of the TOML shows the pending badge (and, from it, the restart's preview of the
//! records it changes) until stop/start, and a dead letter is retried
//! from the page and shows in its audit table. Screenshots of the key states go to
//! `target/ui-screenshots/`.

use conduit_e2e::browser::Browser;
use conduit_e2e::{SimPair, wait_for};
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
    // A slow Campaign keeps a backlog visible for a while.
    sims.campaign
        .faults()
        .set(FaultConfig {
            latency_ms: 15,
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
            "the config dialog",
            "return document.getElementById('config-dialog').open",
        )
        .await;
    let pending = browser
        .eval("return document.getElementById('config-pending').textContent")
        .await;
    assert!(
        pending.as_str().unwrap_or_default().contains("page_size"),
        "{pending}"
    );
    browser.screenshot("config-view").await;
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
    browser.click("#config-close").await;

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
