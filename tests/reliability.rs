//! Faults and security through the real `conduit run` binary: garbage pages from the source,
//! a destination down for a long while, a failing token endpoint, a full disk during commits,
//! a second host on the same data directory, the admin API off loopback without a token, a
//! world-readable config, secrets that must never show up in any output of a full run,
//! poison records that trap the plugin while the workflow runs, the hostile catalogue's
//! floods, giant errors and amplified outputs, and plugins failing in `configure`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use conduit_e2e::{
    HostProcess, INGRESS_CONTACTS, SECRETS, SimPair, conduit_binary, hostile_fixture_file, wait_for,
};
use conduit_model::{EmailEvent, EmailEventKind};
use conduit_sim::faults::FaultConfig;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `conduit run` to completion (it is expected to refuse to start) with `env` added
/// and `removed` taken out of the environment.
fn run_to_exit(config: &Path, env: &[(&str, &str)], removed: &[&str]) -> Output {
    let mut command = Command::new(conduit_binary());
    command
        .args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    for key in removed {
        command.env_remove(key);
    }
    let mut child = command.spawn().expect("conduit starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("child status").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("conduit run kept running where it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("child output")
}

fn combined(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn contact_fields(n: usize) -> Map<String, Value> {
    [
        ("firstname", json!(format!("Added{n}"))),
        ("lastname", json!("Later")),
        ("emailaddress1", json!(format!("added{n}@example.com"))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_pages_from_the_source_are_retried_and_nothing_is_lost() {
    let sims = SimPair::start(300, 0).await;
    sims.write_config(INGRESS_CONTACTS);
    let mut host = sims.spawn_host().await;
    // Garbage arrives once the workflow runs: a garbage metadata answer at STARTING is
    // reported as a start failure (see RELIABILITY.md), which another test would pin.
    host.start("ingress").await;
    host.wait_workflow("ingress", "RUNNING", |v| v["status"] == "RUNNING")
        .await;
    sims.dynamics
        .faults()
        .set(FaultConfig {
            malformed_rate: 0.5,
            seed: 7,
            ..FaultConfig::default()
        })
        .unwrap();
    // Changes made while every third answer is garbage still arrive.
    let added: Vec<String> = (0..50)
        .map(|n| format!("00000000-0000-4000-8000-{n:012}"))
        .collect();
    for (n, id) in added.iter().enumerate() {
        sims.dynamics
            .upsert("contact", id, contact_fields(n))
            .unwrap();
    }
    wait_for("every contact despite garbage pages", 120, || {
        sims.profiles().len() == 350
    })
    .await;
    let garbage = sims.dynamics.faults().stats().malformed;
    sims.dynamics.faults().clear();
    let view = host.wait_caught_up("ingress").await;
    println!("{garbage} garbage answers served; {view:#}");
    assert_eq!(sims.profiles().len(), 350, "{view:#}");
    assert_eq!(view["counters"]["dead_letters"], 0, "{view:#}");
    assert!(garbage > 0, "garbage pages were served");
}

/// A destination outage: every Campaign request (token, lookups, writes) has its connection
/// dropped for `CONDUIT_OUTAGE_SECONDS` (default 15; RELIABILITY.md records a longer run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_for_a_long_while_grows_the_backlog_and_drains_it_afterwards() {
    let outage = std::env::var("CONDUIT_OUTAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15u64);
    let sims = SimPair::start(100, 0).await;
    let mut host = sims.host_with_ingress_caught_up(INGRESS_CONTACTS).await;
    sims.campaign
        .faults()
        .set(FaultConfig {
            reset_rate: 1.0,
            ..FaultConfig::default()
        })
        .unwrap();

    let end = std::time::Instant::now() + Duration::from_secs(outage);
    let mut added = Vec::new();
    let mut peak_backlog = 0;
    while std::time::Instant::now() < end {
        for _ in 0..20 {
            let n = added.len();
            let id = format!("00000000-0000-4000-8000-{n:012}");
            sims.dynamics
                .upsert("contact", &id, contact_fields(n))
                .unwrap();
            added.push(id);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let view = host.workflow("ingress").await;
        assert_eq!(
            view["status"], "RUNNING",
            "an outage is not an error: {view:#}"
        );
        peak_backlog = peak_backlog.max(view["backlog"].as_u64().unwrap_or(0));
    }
    let refused = sims.campaign.faults().stats().resets;
    let view = host.workflow("ingress").await;
    println!("after {outage}s down: {refused} requests dropped; {view:#}");
    assert!(
        peak_backlog as usize >= added.len() - 20,
        "the backlog held what could not be written: {peak_backlog} of {}",
        added.len()
    );
    assert!(
        sims.profiles().len() <= 100,
        "nothing was written while Campaign was down"
    );

    sims.campaign.faults().clear();
    wait_for("the backlog to drain once Campaign is back", 120, || {
        sims.profiles().len() == 100 + added.len()
    })
    .await;
    let view = host.wait_caught_up("ingress").await;
    assert_eq!(view["backlog"], 0, "{view:#}");
    assert_eq!(view["counters"]["dead_letters"], 0, "{view:#}");
    let profiles = sims.profiles();
    assert!(added.iter().all(|id| profiles.contains_key(id)));
    host.terminate();
}

/// A loopback TCP endpoint standing in front of the Dynamics 365 token endpoint: while
/// `failing` it answers every request with a 503, then it forwards bytes to the real one.
struct FlakyTokenEndpoint {
    port: u16,
    failing: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
}

impl FlakyTokenEndpoint {
    async fn start(upstream: std::net::SocketAddr) -> FlakyTokenEndpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let failing = Arc::new(AtomicBool::new(true));
        let refused = Arc::new(AtomicU64::new(0));
        let (failing_flag, refused_count) = (failing.clone(), refused.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let failing = failing_flag.load(Ordering::SeqCst);
                let refused = refused_count.clone();
                tokio::spawn(async move {
                    if failing {
                        let mut buffer = [0u8; 4096];
                        let _ = inbound.read(&mut buffer).await;
                        refused.fetch_add(1, Ordering::SeqCst);
                        let _ = inbound
                            .write_all(
                                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                            )
                            .await;
                        return;
                    }
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        FlakyTokenEndpoint {
            port,
            failing,
            refused,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_endpoint_delays_the_workflow_and_it_recovers() {
    let sims = SimPair::start(40, 0).await;
    let proxy = FlakyTokenEndpoint::start(sims.dynamics_server.local_addr()).await;
    let real_token_url = sims.dynamics_server.token_url("e2e-tenant");
    let flaky_token_url = real_token_url.replace(
        &sims.dynamics_server.local_addr().to_string(),
        &format!("127.0.0.1:{}", proxy.port),
    );
    assert_ne!(real_token_url, flaky_token_url);
    std::fs::write(
        sims.config_path(),
        format!(
            "{}\n{INGRESS_CONTACTS}",
            sims.connection_sections()
                .replace(&real_token_url, &flaky_token_url)
        ),
    )
    .unwrap();
    let mut host = sims.spawn_host().await;
    host.start("ingress").await;
    wait_for("the host to ask the failing token endpoint", 60, || {
        proxy.refused.load(Ordering::SeqCst) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let view = host.workflow("ingress").await;
    assert!(sims.profiles().is_empty(), "nothing moves without a token");
    println!("while the token endpoint fails: {view:#}");
    let problem = format!("{} {}", view["warning"], view["reason"]);
    assert!(
        problem.contains("token") || problem.contains("503"),
        "the view says what is wrong: {view:#}"
    );
    proxy.failing.store(false, Ordering::SeqCst);
    if host.workflow("ingress").await["status"] == "ERROR" {
        host.start("ingress").await;
    }
    host.wait_caught_up("ingress").await;
    assert_eq!(sims.profiles().len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_on_the_same_data_dir_refuses_with_a_clear_message() {
    let sims = SimPair::start(5, 0).await;
    sims.write_config(INGRESS_CONTACTS);
    let _first = sims.spawn_host().await;
    let output = run_to_exit(&sims.config_path(), &SECRETS, &[]);
    let text = combined(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("in use by another Conduit host") && text.contains("conduit.redb"),
        "the refusal names the data file and why: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_an_admin_api_off_loopback_without_a_token() {
    let sims = SimPair::start(0, 0).await;
    let config = sims
        .connection_sections()
        .replace("admin_listen = \"127.0.0.1:", "admin_listen = \"0.0.0.0:");
    std::fs::write(sims.config_path(), format!("{config}\n{INGRESS_CONTACTS}")).unwrap();
    let output = run_to_exit(&sims.config_path(), &SECRETS, &["CONDUIT_ADMIN_TOKEN"]);
    let text = combined(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("not loopback") && text.contains("CONDUIT_ADMIN_TOKEN"),
        "{text}"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_readable_config_draws_a_warning_and_a_private_one_does_not() {
    use std::os::unix::fs::PermissionsExt;
    let sims = SimPair::start(0, 0).await;
    let config = sims.write_config(INGRESS_CONTACTS);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut host = sims.spawn_host().await;
    host.terminate();
    let output = host.output();
    assert!(
        output.contains("readable by every user") && output.contains("chmod 600"),
        "{output}"
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut host = sims.spawn_host().await;
    host.terminate();
    assert!(!host.output().contains("readable by every user"));
}

/// Every admin API response a full run can produce, as text.
async fn every_admin_output(admin: &str) -> String {
    let http = reqwest::Client::new();
    let mut text = String::new();
    let mut paths: Vec<String> = vec![
        "/".into(),
        "/assets/app.js".into(),
        "/healthz".into(),
        "/metrics".into(),
        "/api/workflows".into(),
        "/api/config/problems".into(),
    ];
    for workflow in ["ingress", "egress", "optinout"] {
        for suffix in ["", "/config", "/dead-letters"] {
            paths.push(format!("/api/workflows/{workflow}{suffix}"));
        }
    }
    for path in paths {
        let response = http
            .get(format!("{admin}{path}"))
            .send()
            .await
            .expect("admin API reachable");
        text.push_str(&response.text().await.unwrap_or_default());
    }
    text
}

/// The files under `dir`, as raw bytes, by path.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files.push((path, bytes));
            }
        }
    }
    files
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_api_cli_page_metrics_or_data_files() {
    let sims = SimPair::start(30, 0).await;
    let contact = sims.ids("contact", "contactid")[0].clone();
    sims.campaign.emit_event(&EmailEvent {
        id: "00000000-0000-4000-8000-000000000001".into(),
        kind: EmailEventKind::Send,
        contact_key: contact.clone(),
        campaign_id: "C1".into(),
        campaign_name: "Spring".into(),
        delivery_id: "D1".into(),
        delivery_name: "Launch".into(),
        timestamp: "2026-11-01T10:00:00Z".into(),
        url: None,
        mirror_page_url: None,
        bounce: None,
    });
    sims.write_config(&format!(
        r#"{INGRESS_CONTACTS}
[egress]
pacing = {{ poll_interval_ms = 100 }}
send = true

[optinout]
pacing = {{ poll_interval_ms = 100 }}
direction = "bidirectional"
pairs = [{{ dynamics = "donotbulkemail", campaign = "blackListEmail" }}]
"#
    ));
    let mut host = sims.spawn_host().await;
    for workflow in ["ingress", "egress", "optinout"] {
        host.start(workflow).await;
    }
    host.wait_caught_up("ingress").await;
    host.wait_caught_up("optinout").await;
    host.wait_workflow("egress", "the event moved", |v| {
        v["counters"]["read"] == 1 && v["backlog"] == 0
    })
    .await;
    sims.campaign
        .set_opt_out(&contact, "blackListEmail", true)
        .unwrap();
    sims.campaign.drop_opt_out_export().unwrap();
    wait_for("the opt-out in Dynamics 365", 60, || {
        sims.dynamics
            .rows("contact")
            .iter()
            .any(|c| c["contactid"] == contact.as_str() && c["donotbulkemail"] == true)
    })
    .await;
    // Force the authentication error path too: tokens revoked mid-run are renewed.
    sims.dynamics.revoke_tokens();
    sims.campaign.revoke_tokens();
    let mut everything = every_admin_output(&host.admin).await;
    for args in [
        &["status", "--json"][..],
        &["status"],
        &["config", "check"],
        &["dlq", "list", "ingress"],
    ] {
        let output = sims.cli(args);
        assert_eq!(output.code, 0, "{output}");
        everything.push_str(&output.to_string());
    }
    host.terminate();
    everything.push_str(&host.output());

    // A host with a wrong secret: its errors must not echo the secret it sent either.
    let wrong = [
        (SECRETS[0].0, "wrong-d365-secret-Zq81"),
        (SECRETS[1].0, "wrong-acs-secret-Kp27"),
    ];
    // This one writes JSON logs, so that format is searched for the secrets too.
    let mut rejected = HostProcess::spawn(
        &sims.config_path(),
        sims.admin_port,
        &[wrong[0], wrong[1], ("CONDUIT_LOG_FORMAT", "json")],
    );
    rejected.wait_healthy().await;
    rejected.start("ingress").await;
    rejected
        .wait_workflow("ingress", "the credentials to be refused", |v| {
            !v["reason"].is_null() || !v["warning"].is_null()
        })
        .await;
    everything.push_str(&every_admin_output(&rejected.admin).await);
    rejected.terminate();
    let json_logs = rejected.output();
    let lines: Vec<Value> = json_logs
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not one JSON object per line ({error}): {line}"))
        })
        .collect();
    assert!(
        lines
            .iter()
            .all(|line| line["level"].is_string() && line["timestamp"].is_string()),
        "{json_logs}"
    );
    assert!(
        lines.iter().any(|line| line["workflow"] == "ingress"),
        "the workflow is a field of its log lines: {json_logs}"
    );
    everything.push_str(&json_logs);

    let secrets: Vec<&str> = SECRETS
        .iter()
        .chain(wrong.iter())
        .map(|(_, value)| *value)
        .collect();
    for secret in &secrets {
        assert!(
            !everything.contains(secret),
            "the secret {secret} leaked into the host's output or admin API"
        );
    }
    for (path, bytes) in files_under(&sims.dir.path().join("data")) {
        for secret in &secrets {
            assert!(
                !contains_bytes(&bytes, secret.as_bytes()),
                "the secret {secret} is stored in {}",
                path.display()
            );
        }
    }
    assert!(
        everything.contains("conduit_"),
        "the metrics were part of what was searched"
    );
}

/// A tmpfs mounted on a folder for the test's life; unmounted on drop.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| SmallDisk {
            path: path.to_path_buf(),
        })
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // Whatever still fits in smaller writes goes too, so the next commit has no room.
        let byte = [0u8; 1];
        while file.write_all(&byte).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_during_commits_is_a_clear_error_and_the_host_resumes_with_no_corruption() {
    let sims = SimPair::start(200, 0).await;
    let Some(disk) = SmallDisk::mount(&sims.dir.path().join("data"), "48m") else {
        eprintln!(
            "SKIPPED: mounting a tmpfs was refused (not root?); the full-disk test did not run"
        );
        return;
    };
    let mut host = sims.host_with_ingress_caught_up(INGRESS_CONTACTS).await;
    assert_eq!(sims.profiles().len(), 200);

    let filler = disk.fill();
    // redb reuses the pages its file already holds, so a draining queue never needs new space.
    // With Campaign refusing every write the backlog only grows, until a commit needs pages
    // the full disk cannot give.
    sims.campaign
        .faults()
        .set(FaultConfig {
            error_rate: 1.0,
            ..FaultConfig::default()
        })
        .unwrap();
    let mut ids: Vec<String> = Vec::new();
    let mut full_disk_view = None;
    for round in 0..40 {
        for n in 0..50 {
            let number = round * 50 + n;
            let id = format!("00000000-0000-4000-8000-{number:012}");
            sims.dynamics
                .upsert("contact", &id, contact_fields(number))
                .unwrap();
            ids.push(id);
        }
        for _ in 0..20 {
            let view = host.workflow("ingress").await;
            let text = format!("{} {}", view["reason"], view["warning"]);
            if text.contains("could not commit") || text.contains("No space") {
                full_disk_view = Some(view);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if full_disk_view.is_some() {
            break;
        }
    }
    let view = full_disk_view.expect("a commit on the full disk reported the error");
    println!("with the disk full: {view:#}");
    let problem = format!("{} {}", view["reason"], view["warning"]);
    assert!(
        problem.contains("No space left") || problem.contains("space"),
        "the error says the disk is full: {problem}"
    );

    std::fs::remove_file(&filler).unwrap();
    sims.campaign.faults().clear();
    if host.workflow("ingress").await["status"] == "ERROR" {
        host.start("ingress").await;
    }
    wait_for("the contacts added while the disk was full", 120, || {
        let profiles = sims.profiles();
        ids.iter().all(|id| profiles.contains_key(id))
    })
    .await;
    let view = host.wait_caught_up("ingress").await;
    assert_eq!(view["counters"]["dead_letters"], 0, "{view:#}");

    // No corruption: a hard kill, then the store opens and the cursor still follows changes.
    host.kill_hard();
    let mut host = sims.spawn_host().await;
    host.wait_caught_up("ingress").await;
    sims.dynamics
        .upsert("contact", &ids[0], {
            let mut f = contact_fields(0);
            f.insert("lastname".into(), json!("AfterTheFullDisk"));
            f
        })
        .unwrap();
    wait_for("a change after the full disk", 60, || {
        sims.campaign
            .find("profile", &ids[0])
            .is_some_and(|p| p["lastName"] == "AfterTheFullDisk")
    })
    .await;
    assert_eq!(sims.profiles().len(), 200 + ids.len());
    host.terminate();
    drop(disk);
}

/// Dead letters of a workflow through the admin API.
async fn dead_letters(host: &HostProcess, workflow: &str) -> Vec<Value> {
    let (status, body) = host
        .get_status(&format!("/api/workflows/{workflow}/dead-letters"))
        .await;
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_that_trap_the_plugin_are_dead_lettered_while_the_workflow_keeps_running() {
    let sims = SimPair::start(100, 0).await;
    let poison_fields = |n: usize| {
        let mut fields = contact_fields(n);
        fields.insert("lastname".into(), json!("POISON"));
        fields
    };
    let mut poison: Vec<String> = (0..5)
        .map(|n| format!("00000000-0000-4000-9000-{n:012}"))
        .collect();
    for (n, id) in poison.iter().enumerate() {
        sims.dynamics
            .upsert("contact", id, poison_fields(n))
            .unwrap();
    }
    let plugin = hostile_fixture_file();
    let workflows = format!(
        r#"[ingress]
plugin = "{}"
pacing = {{ page_size = 200, write_batch = 100, poll_interval_ms = 200 }}

[[ingress.mappings]]
name = "contacts"
source = "contact"
destination = "profile"
key = {{ source = "contactid", destination = "externalId" }}
fields = [
  {{ source = "firstname", destination = "firstName" }},
  {{ source = "lastname", destination = "lastName" }},
  {{ source = "emailaddress1", destination = "email" }},
]
settings = {{ mode = "trap-on-value", trap_value = "POISON", copy_columns = "firstname:firstName,lastname:lastName,emailaddress1:email" }}
"#,
        plugin.display()
    );
    sims.write_config(&workflows);
    let mut host = sims.spawn_host().await;
    host.start("ingress").await;
    let view = host.wait_caught_up("ingress").await;
    assert_eq!(view["status"], "RUNNING", "{view:#}");
    assert_eq!(view["counters"]["dead_letters"], 5, "{view:#}");

    // Changes while RUNNING: good and poison records in the same pages.
    let good: Vec<String> = (0..20)
        .map(|n| format!("00000000-0000-4000-8000-{n:012}"))
        .collect();
    for (n, id) in good.iter().enumerate() {
        sims.dynamics
            .upsert("contact", id, contact_fields(n))
            .unwrap();
        if n % 10 == 5 {
            let id = format!("00000000-0000-4000-9000-{:012}", 100 + n);
            sims.dynamics
                .upsert("contact", &id, poison_fields(n))
                .unwrap();
            poison.push(id);
        }
    }
    wait_for("the good contacts added while running", 120, || {
        let profiles = sims.profiles();
        good.iter().all(|id| profiles.contains_key(id))
    })
    .await;
    let view = host
        .wait_workflow("ingress", "every poison record dead-lettered", |view| {
            view["counters"]["dead_letters"] == poison.len() && view["backlog"] == 0
        })
        .await;
    assert_eq!(view["status"], "RUNNING", "{view:#}");

    let profiles = sims.profiles();
    assert_eq!(
        profiles.len(),
        100 + good.len(),
        "every good contact arrived"
    );
    for id in &good {
        let profile = &profiles[id];
        assert_eq!(profile["lastName"], "Later", "{profile:#}");
        assert!(
            profile["email"]
                .as_str()
                .is_some_and(|e| e.ends_with("@example.com"))
        );
    }
    let letters = dead_letters(&host, "ingress").await;
    assert_eq!(letters.len(), poison.len(), "{letters:#?}");
    for id in &poison {
        assert!(!profiles.contains_key(id), "poison record {id} was written");
        let letter = letters
            .iter()
            .find(|letter| letter["payload"].to_string().contains(id.as_str()))
            .unwrap_or_else(|| panic!("no dead letter for {id}: {letters:#?}"));
        assert_eq!(letter["stage"], "read", "{letter:#}");
        let reason = letter["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("trapped"), "{reason}");
        assert!(reason.contains(&format!("poison record {id}")), "{reason}");
    }
    println!("a dead letter's reason: {}", letters[0]["reason"]);
    host.terminate();
}

/// A `[[ingress.mappings]]` section running the hostile fixture in `trap-on-value` mode (copy
/// the contact onto the profile; a batch holding `POISON` does `poison_action`).
fn hostile_mapping(name: &str, poison_action: &str) -> String {
    format!(
        r#"
[[ingress.mappings]]
name = "{name}"
source = "contact"
destination = "profile"
key = {{ source = "contactid", destination = "externalId" }}
fields = [
  {{ source = "firstname", destination = "firstName" }},
  {{ source = "lastname", destination = "lastName" }},
  {{ source = "emailaddress1", destination = "email" }},
]
settings = {{ mode = "trap-on-value", trap_value = "POISON", copy_columns = "firstname:firstName,lastname:lastName,emailaddress1:email", poison_action = "{poison_action}" }}
"#
    )
}

/// An Ingress section running the hostile fixture with room for its giant cases: 256 MiB of
/// plugin memory (a 100 MB error must fit) and a 10 s deadline (a 64 MiB flood must finish).
fn hostile_ingress(mappings: &str) -> String {
    format!(
        r#"[ingress]
plugin = "{}"
pacing = {{ page_size = 50, write_batch = 100, poll_interval_ms = 200 }}
limits = {{ plugin_memory_mb = 256, plugin_deadline_ms = 10000 }}
{mappings}"#,
        hostile_fixture_file().display()
    )
}

/// Adds `count` contacts whose last name is `POISON`; returns their ids.
fn add_poison(sims: &SimPair, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            let id = format!("00000000-0000-4000-9000-{n:012}");
            let mut fields = contact_fields(n);
            fields.insert("lastname".into(), json!("POISON"));
            sims.dynamics.upsert("contact", &id, fields).unwrap();
            id
        })
        .collect()
}

/// The hostile fixture's poison actions and what the reason of each one's dead letters says.
const POISON_ACTIONS: [(&str, &str); 8] = [
    ("panic", "poison record"),
    ("stdout-flood", "after a stdout flood"),
    ("stderr-flood", "after a stderr flood"),
    ("giant-error", "bytes in all]"),
    ("giant-reject", "bytes in all]"),
    ("amplify-columns", "counting every copy"),
    ("amplify-targets", "counting every copy"),
    ("alloc-fail", "memory cap"),
];

/// The most a dead letter's reason may hold: the engine's and the host's words around one
/// capped plugin message.
const MAX_REASON_BYTES: usize = conduit_plugin_host::MAX_MESSAGE_BYTES + 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_only_their_poison_records_with_capped_reasons_in_bounded_memory() {
    let sims = SimPair::start(40, 0).await;
    let poison = add_poison(&sims, 3);
    // A table is the source of one mapping only: each action runs in turn, as a new mapping
    // (so from the start of the table) on the same host.
    sims.write_config(&hostile_ingress(&hostile_mapping("panic", "panic")));
    let mut host = sims.spawn_host().await;
    for (action, says) in POISON_ACTIONS {
        sims.write_config(&hostile_ingress(&hostile_mapping(action, action)));
        let written_before = host.workflow("ingress").await["counters"]["written"]
            .as_u64()
            .unwrap_or(0);
        let started = std::time::Instant::now();
        host.start("ingress").await;
        let view = host
            .wait_workflow("ingress", &format!("{action} caught up"), |view| {
                view["backlog"] == 0
                    && view["cursors"].as_array().is_some_and(|cursors| {
                        cursors
                            .iter()
                            .any(|c| c["source"] == action && c["phase"] == "incremental")
                    })
            })
            .await;
        let elapsed = started.elapsed();
        assert_eq!(view["status"], "RUNNING", "{action}: {view:#}");
        let written = view["counters"]["written"].as_u64().unwrap_or(0) - written_before;
        assert_eq!(written, 40, "{action}: every good contact arrived");
        let letters = dead_letters(&host, "ingress").await;
        let own: Vec<&Value> = letters
            .iter()
            .filter(|letter| letter["origin"] == action)
            .collect();
        assert_eq!(own.len(), poison.len(), "{action}: {own:#?}");
        for letter in own {
            let reason = letter["reason"].as_str().unwrap_or_default();
            assert!(reason.contains(says), "{action}: {reason:.300}");
            assert!(
                reason.len() <= MAX_REASON_BYTES,
                "{action}: a reason of {} bytes",
                reason.len()
            );
        }
        let peak = host.peak_rss_bytes();
        println!(
            "| {action} | RUNNING | {} dead letters | caught up in {:.1} s | host peak RSS so far {} MiB |",
            poison.len(),
            elapsed.as_secs_f64(),
            peak >> 20
        );
        assert!(peak < 512 << 20, "{action}: peak RSS {} MiB", peak >> 20);
        host.stop("ingress").await;
    }
    let profiles = sims.profiles();
    assert_eq!(
        profiles.len(),
        40,
        "every good contact arrived, no poison one"
    );
    for id in &poison {
        assert!(!profiles.contains_key(id), "poison record {id} was written");
    }
    // The CLI shows the same capped reasons.
    let expected_letters = POISON_ACTIONS.len() * poison.len();
    let listed = sims.cli(&["dlq", "list", "ingress", "--json"]);
    assert_eq!(listed.code, 0, "{listed}");
    assert!(
        listed.stdout.len() < expected_letters * (MAX_REASON_BYTES + 4096),
        "dlq list printed {} bytes",
        listed.stdout.len()
    );
    assert_eq!(dead_letters(&host, "ingress").await.len(), expected_letters);
    host.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_failing_in_configure_is_an_error_with_its_reason_and_a_fixed_plugin_starts_again()
{
    let sims = SimPair::start(20, 0).await;
    let poison = add_poison(&sims, 1);
    let good = hostile_ingress(&hostile_mapping("contacts", "panic"));
    sims.write_config(&good);
    let mut host = sims.spawn_host().await;
    host.start("ingress").await;
    host.wait_caught_up("ingress").await;
    let letters = dead_letters(&host, "ingress").await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let letter = letters[0]["id"].to_string();
    host.stop("ingress").await;

    let failing = [
        ("panic-in-configure", "", "panics in configure on purpose"),
        ("trap-in-configure", "", "unreachable"),
        (
            "fail-in-configure",
            r#", error_bytes = "60000000""#,
            "[truncated, 60000000 bytes in all]",
        ),
    ];
    for (mode, extra, says) in failing {
        let broken = good.replace(
            "mode = \"trap-on-value\"",
            &format!("mode = \"{mode}\"{extra}"),
        );
        assert_ne!(broken, good);
        sims.write_config(&broken);
        // A dead-letter retry configures the plugin as configured now: refused with the reason.
        let retry = sims.cli(&["dlq", "retry", "ingress", &letter]);
        assert!(retry.code != 0 && retry.code != 101, "{mode}: {retry}");
        assert!(retry.stderr.contains(says), "{mode}: {retry}");
        assert!(
            retry.stderr.len() < MAX_REASON_BYTES + 1024,
            "{mode}: {retry}"
        );

        let started = std::time::Instant::now();
        host.start("ingress").await;
        let view = host
            .wait_workflow("ingress", "ERROR", |view| view["status"] == "ERROR")
            .await;
        let reason = view["reason"].as_str().unwrap_or_default();
        println!(
            "{mode}: ERROR after {:.1}s: {reason:.200}",
            started.elapsed().as_secs_f64()
        );
        assert!(reason.contains(says), "{mode}: {reason:.300}");
        assert!(reason.len() <= MAX_REASON_BYTES, "{mode}: {}", reason.len());
        let status = sims.cli(&["status"]);
        assert!(status.stdout.len() < 64 << 10, "{mode}: {status}");
    }

    // The plugin is fixed: the next start runs, and new contacts arrive.
    sims.write_config(&good);
    host.start("ingress").await;
    let id = "00000000-0000-4000-8000-000000000777";
    sims.dynamics
        .upsert("contact", id, contact_fields(777))
        .unwrap();
    wait_for("the contact added after the fix", 120, || {
        sims.profiles().contains_key(id)
    })
    .await;
    assert_eq!(host.workflow("ingress").await["status"], "RUNNING");
    assert!(!sims.profiles().contains_key(&poison[0]));
    host.terminate();
}

/// Builds the JavaScript and Python plugins (`plugins/examples/build-polyglot.sh`, tools from
/// npm and PyPI cached under the target folder) into `out`.
fn build_polyglot(out: &Path) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/examples/build-polyglot.sh");
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conduit-tools");
    // The script installs its tools from npm and PyPI on first use: one installer at a time.
    let lock = conduit_e2e::install::lock();
    let built = Command::new("bash")
        .arg(script)
        .arg(cache)
        .arg(out)
        .output()
        .expect("bash runs");
    drop(lock);
    assert!(
        built.status.success(),
        "build-polyglot.sh failed (needs node/npm and python3):\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thrown_javascript_error_or_python_exception_dead_letters_the_record_with_its_message() {
    let components = tempfile::tempdir().unwrap();
    build_polyglot(components.path());
    let sims = SimPair::start(20, 0).await;
    let poison = add_poison(&sims, 2);
    let cases = [
        (
            "hostile_js.wasm",
            "javascript",
            "throw-on-value",
            "Error: poison record",
        ),
        (
            "hostile_py.wasm",
            "python",
            "raise-on-value",
            "ValueError: poison record",
        ),
    ];
    let mut host: Option<HostProcess> = None;
    for (component, mapping, mode, says) in cases {
        sims.write_config(&format!(
            r#"[ingress]
plugin = "{}"
pacing = {{ page_size = 50, write_batch = 100, poll_interval_ms = 200 }}

[[ingress.mappings]]
name = "{mapping}"
source = "contact"
destination = "profile"
key = {{ source = "contactid", destination = "externalId" }}
fields = [
  {{ source = "firstname", destination = "firstName" }},
  {{ source = "lastname", destination = "lastName" }},
  {{ source = "emailaddress1", destination = "email" }},
]
settings = {{ mode = "{mode}", trap_value = "POISON" }}
"#,
            components.path().join(component).display()
        ));
        let running = match host.as_mut() {
            Some(running) => running,
            None => host.insert(sims.spawn_host().await),
        };
        running.start("ingress").await;
        let view = running
            .wait_workflow("ingress", &format!("{mapping} caught up"), |view| {
                view["backlog"] == 0
                    && view["cursors"].as_array().is_some_and(|cursors| {
                        cursors
                            .iter()
                            .any(|c| c["source"] == mapping && c["phase"] == "incremental")
                    })
            })
            .await;
        assert_eq!(view["status"], "RUNNING", "{mapping}: {view:#}");
        let letters = dead_letters(running, "ingress").await;
        let own: Vec<&Value> = letters
            .iter()
            .filter(|letter| letter["origin"] == mapping)
            .collect();
        assert_eq!(own.len(), poison.len(), "{mapping}: {own:#?}");
        for id in &poison {
            let letter = own
                .iter()
                .find(|letter| letter["payload"].to_string().contains(id.as_str()))
                .unwrap_or_else(|| panic!("{mapping}: no dead letter for {id}"));
            let reason = letter["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains(&format!("{says} {id}")),
                "{mapping}: {reason}"
            );
        }
        running.stop("ingress").await;
    }
    let profiles = sims.profiles();
    assert_eq!(profiles.len(), 20, "every good contact arrived");
    if let Some(mut running) = host {
        running.terminate();
    }
}
