//! `conduit demo`: both simulators in process (seeded contacts, a custom entity, email events
//! and opt-out changes), a generated config, the real host running all three workflows with
//! live progress, then incremental changes, `verify` of each workflow (the same comparisons
//! as `conduit verify <workflow> --full`) and a summary. Exits 0 only when every verify is in
//! sync.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Map, json};

use conduit::runtime::{self, HostOptions, RunningHost, ServiceConnect};
use conduit_engine::StatusKind;
use conduit_model::{BounceDetail, EmailEvent, EmailEventKind, WorkflowId};
use conduit_sim::campaign::{CampaignSim, CampaignSimOptions};
use conduit_sim::dynamics::{DynamicsSim, DynamicsSimOptions};

const D365_SECRET_ENV: &str = "CONDUIT_DEMO_D365_SECRET";
const ACS_SECRET_ENV: &str = "CONDUIT_DEMO_ACS_SECRET";
const D365_SECRET: &str = "demo-d365-secret";
const ACS_SECRET: &str = "demo-acs-secret";
const D365_CLIENT: &str = "demo-d365-client";
const ACS_CLIENT: &str = "demo-acs-client";

/// `conduit demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Contacts to seed in the Dynamics 365 simulator.
    #[arg(long, default_value_t = 10_000)]
    contacts: usize,
    /// Email events to put in Campaign's journal.
    #[arg(long, default_value_t = 400)]
    events: usize,
    /// Leave the host and simulators up after the summary (until Ctrl-C).
    #[arg(long)]
    keep_running: bool,
    /// Working folder for the config and data (default: a temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Give up waiting for the workflows after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

/// Runs the demo; fails (exit 1) when the destination does not match the source.
pub async fn run(args: &DemoArgs) -> Result<(), super::CallError> {
    match demo(args).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(super::CallError {
            code: 1,
            message: "the destination does not match the source (see the summary above)".into(),
        }),
        Err(error) => Err(super::failure(error)),
    }
}

struct Demo {
    dynamics: DynamicsSim,
    campaign: CampaignSim,
    host: RunningHost,
    deadline: Instant,
    events: Vec<EmailEvent>,
    deleted: Vec<String>,
    renamed: Vec<String>,
    opted_out_in_campaign: Vec<String>,
    opted_out_in_dynamics: Vec<String>,
    /// The workflows' progress lines, redrawn in place on a terminal.
    progress: super::progress::LiveLines,
}

async fn demo(args: &DemoArgs) -> anyhow::Result<bool> {
    let temporary = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("cannot create a temporary folder")?),
    };
    let dir = match (&args.dir, &temporary) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temp)) => temp.path().to_path_buf(),
        (None, None) => unreachable!("one of the two is set"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    outln!("Conduit demo in {}", dir.display());

    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let dynamics = DynamicsSim::new(DynamicsSimOptions {
        client_id: D365_CLIENT.into(),
        client_secret: D365_SECRET.into(),
        seed_contacts: args.contacts,
        seed_vehicles: args.contacts / 4,
        ..DynamicsSimOptions::default()
    });
    let dynamics_server = dynamics
        .serve(loopback)
        .await
        .context("cannot start the Dynamics 365 simulator")?;
    let contact_ids: Vec<String> = dynamics.ids("contact");
    let events = email_events(&contact_ids, args.events);
    let campaign = CampaignSim::new(CampaignSimOptions {
        client_id: ACS_CLIENT.into(),
        client_secret: ACS_SECRET.into(),
        drop_root: Some(dir.join("campaign-sftp")),
        seed_events: events.clone(),
        ..CampaignSimOptions::default()
    });
    let campaign_server = campaign
        .serve(loopback)
        .await
        .context("cannot start the Campaign simulator")?;
    outln!(
        "Simulators: Dynamics 365 at {} ({} contacts, {} vehicles), Campaign at {} ({} email events)",
        dynamics_server.base_url(),
        dynamics.count("contact"),
        dynamics.count("new_vehicle"),
        campaign_server.api_base(),
        events.len()
    );

    let config_path = dir.join("conduit.toml");
    let config = demo_config(
        &dynamics_server.base_url(),
        &dynamics_server.token_url("demo-tenant"),
        &campaign_server.api_base(),
        &campaign_server.ims_url(),
        &campaign_server.journal_url(),
        &campaign.drop_root(),
    );
    std::fs::write(&config_path, config)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let secrets = HashMap::from([
        (D365_SECRET_ENV.to_string(), D365_SECRET.to_string()),
        (ACS_SECRET_ENV.to_string(), ACS_SECRET.to_string()),
    ]);
    let host = runtime::start(
        &config_path,
        Arc::new(ServiceConnect::with_secrets(secrets)),
        HostOptions {
            admin_listen: Some("127.0.0.1:0".into()),
            watch_interval: None,
        },
    )
    .await
    .context("the host did not start")?;
    outln!("Host: admin API on {}\n", host.admin.url());

    let mut demo = Demo {
        dynamics,
        campaign,
        host,
        deadline: Instant::now() + Duration::from_secs(args.timeout_secs),
        events,
        deleted: Vec::new(),
        renamed: Vec::new(),
        opted_out_in_campaign: Vec::new(),
        opted_out_in_dynamics: Vec::new(),
        progress: super::progress::LiveLines::new(),
    };
    for id in WorkflowId::ALL {
        demo.host
            .supervisor
            .start(id)
            .await
            .with_context(|| format!("cannot start {id}"))?;
    }

    outln!("Initial load:");
    demo.wait_until("the initial load", Demo::caught_up).await?;
    demo.progress.finish();
    outln!("\nIncremental changes: renames, deletes and opt-outs on both sides");
    demo.make_changes(&contact_ids)?;
    let started = Instant::now();
    let caught_up = loop {
        demo.print_progress()?;
        if demo.caught_up() {
            break true;
        }
        if Instant::now() > demo.deadline || started.elapsed() > Duration::from_secs(120) {
            demo.progress.finish();
            outln!("\nThe workflows did not catch up with the changes in time.");
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    demo.progress.finish();
    // Every workflow is verified (and each one's report shown), even after a failed one.
    let mut verified = caught_up;
    if caught_up {
        for id in [
            WorkflowId::Ingress,
            WorkflowId::OptInOut,
            WorkflowId::Egress,
        ] {
            verified &= demo.verify(id).await?;
        }
    }
    demo.print_summary(verified)?;

    if args.keep_running {
        outln!(
            "\nStill running (--keep-running). Try: conduit status --admin-url http://{}   Ctrl-C stops.",
            demo.host.admin.address
        );
        super::run::wait_for_shutdown_signal().await?;
    }
    demo.host.shutdown().await;
    dynamics_server.shutdown().await;
    campaign_server.shutdown().await;
    Ok(verified)
}

impl Demo {
    async fn wait_until(&self, what: &str, done: impl Fn(&Demo) -> bool) -> anyhow::Result<()> {
        loop {
            self.print_progress()?;
            if done(self) {
                return Ok(());
            }
            for workflow in self.host.supervisor.view()?.workflows {
                if workflow.status == StatusKind::Error {
                    bail!(
                        "{} failed: {}",
                        workflow.id,
                        workflow.reason.unwrap_or_default()
                    );
                }
            }
            if Instant::now() > self.deadline {
                bail!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    }

    /// True when every workflow is running, has read everything and has an empty backlog.
    fn caught_up(&self) -> bool {
        let Ok(view) = self.host.supervisor.view() else {
            return false;
        };
        view.workflows.iter().all(|w| {
            w.status == StatusKind::Running
                && w.backlog == 0
                && !w.cursors.is_empty()
                && w.cursors
                    .iter()
                    .all(|c| c.phase == conduit_model::Phase::Incremental)
        }) && view
            .workflows
            .iter()
            .find(|w| w.id == WorkflowId::Egress)
            .is_some_and(|w| w.counters.read as usize >= self.events.len())
    }

    fn print_progress(&self) -> anyhow::Result<()> {
        let view = self.host.supervisor.view()?;
        let lines: Vec<String> = view
            .workflows
            .iter()
            .map(|w| {
                let eta = w
                    .eta_seconds
                    .map_or_else(|| "-".to_string(), |s| format!("{s:.0}s"));
                format!(
                    "  {:<9} {:<8} read {:>7}  queued {:>6}  written {:>7}  dead {:>4}  {:>7.0}/s  ETA {:>5}",
                    w.id.as_str(),
                    w.status.name(),
                    w.counters.read,
                    w.backlog,
                    w.counters.written,
                    w.counters.dead_letters,
                    w.write_rate,
                    eta
                )
            })
            .collect();
        self.progress.show(&lines);
        Ok(())
    }

    fn make_changes(&mut self, contacts: &[String]) -> anyhow::Result<()> {
        let step = (contacts.len() / 40).max(1);
        let picked: Vec<&String> = contacts.iter().step_by(step).collect();
        for (n, id) in picked.iter().enumerate() {
            let id = (*id).clone();
            match n % 4 {
                0 => {
                    let mut fields = Map::new();
                    fields.insert("lastname".into(), json!(format!("Renamed{n}")));
                    self.dynamics.upsert("contact", &id, fields)?;
                    self.renamed.push(id);
                }
                1 => {
                    self.dynamics.delete("contact", &id)?;
                    self.deleted.push(id);
                }
                2 => {
                    self.campaign.set_opt_out(&id, "blackListEmail", true)?;
                    self.opted_out_in_campaign.push(id);
                }
                _ => {
                    let mut fields = Map::new();
                    fields.insert("donotbulkemail".into(), json!(true));
                    self.dynamics.upsert("contact", &id, fields)?;
                    self.opted_out_in_dynamics.push(id);
                }
            }
        }
        let export = self.campaign.drop_opt_out_export()?;
        outln!(
            "  {} renamed, {} deleted, {} opted out in Campaign (export {}), {} opted out in Dynamics 365",
            self.renamed.len(),
            self.deleted.len(),
            self.opted_out_in_campaign.len(),
            export
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            self.opted_out_in_dynamics.len()
        );
        Ok(())
    }

    /// Runs `conduit verify <id> --full` in the host: Ingress maps every contact and vehicle
    /// with the mapping in force and compares them with Campaign field by field; Opt-in/out
    /// compares every contact's paired flags under the direction and rule in force; Egress
    /// maps every email event and looks its activity up in Dynamics 365, field by field. The
    /// workflows have caught up by now; a record still moving is given a few more seconds.
    async fn verify(&self, id: WorkflowId) -> anyhow::Result<bool> {
        outln!("\nconduit verify {id} --full:");
        let mut attempts = 0;
        loop {
            attempts += 1;
            let report = self
                .host
                .supervisor
                .verify(id, &conduit_engine::VerifyOptions::default(), &|_| {})
                .await
                .with_context(|| format!("verify {id} failed"))?;
            if report.in_sync || attempts >= 10 || Instant::now() > self.deadline {
                outln!("{}", super::verify::render(&report).trim_end());
                return Ok(report.in_sync);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn print_summary(&self, verified: bool) -> anyhow::Result<()> {
        let view = self.host.supervisor.view()?;
        outln!("\nSummary");
        outln!(
            "  contacts in Dynamics 365: {:>7}   profiles in Campaign: {:>7}",
            self.dynamics.count("contact"),
            self.campaign.records("profile").len()
        );
        outln!(
            "  vehicles in Dynamics 365: {:>7}   cusVehicle in Campaign: {:>5}",
            self.dynamics.count("new_vehicle"),
            self.campaign.records("cusVehicle").len()
        );
        let activities: usize = [
            "adobe_emailsend",
            "adobe_emailopen",
            "adobe_emailclick",
            "adobe_emailbounce",
        ]
        .iter()
        .map(|t| self.dynamics.count(t))
        .sum();
        outln!(
            "  email events in Campaign: {:>7}   activities in Dynamics 365: {:>3} (soft bounces are skipped)",
            self.events.len(),
            activities
        );
        outln!(
            "  opt-outs: {} from Campaign to Dynamics 365, {} from Dynamics 365 to Campaign",
            self.opted_out_in_campaign.len(),
            self.opted_out_in_dynamics.len()
        );
        for w in &view.workflows {
            outln!(
                "  {:<9} read {:>7}  written {:>7}  skipped {:>5}  dead letters {:>3}",
                w.id.as_str(),
                w.counters.read,
                w.counters.written,
                w.counters.skipped,
                w.counters.dead_letters
            );
        }
        if verified {
            outln!("\nVERIFIED: the destinations match the sources.");
        } else {
            outln!("\nNOT VERIFIED: the destinations do not match the sources.");
        }
        Ok(())
    }
}

/// Email events over the first contacts: sends, opens, clicks, hard and soft bounces.
pub(super) fn email_events(contacts: &[String], count: usize) -> Vec<EmailEvent> {
    if contacts.is_empty() {
        return Vec::new();
    }
    (0..count)
        .map(|n| {
            let kind = match n % 5 {
                0 => EmailEventKind::Send,
                1 => EmailEventKind::Open,
                2 => EmailEventKind::Click,
                _ => EmailEventKind::Bounce,
            };
            let bounce = (kind == EmailEventKind::Bounce).then(|| BounceDetail {
                hard: n % 5 == 3,
                reason: if n % 5 == 3 {
                    "User unknown"
                } else {
                    "Mailbox full"
                }
                .into(),
            });
            EmailEvent {
                id: uuid::Uuid::from_u128(0x0dd0_0000_0000_4000_8000_0000_0000_0000 + n as u128)
                    .to_string(),
                kind,
                contact_key: contacts[n % contacts.len().min(50)].clone(),
                campaign_id: format!("CAMP{}", n % 3),
                campaign_name: format!("Loyalty {}", 2026 + n % 3),
                delivery_id: format!("DM{}", n % 7),
                delivery_name: format!("Newsletter {}", n % 7),
                timestamp: format!("2026-11-{:02}T10:{:02}:00Z", 1 + n % 28, n % 60),
                url: (kind == EmailEventKind::Click)
                    .then(|| format!("https://example.com/offer/{n}")),
                mirror_page_url: Some(format!("https://mirror.example.com/m/{n}")),
                bounce,
            }
        })
        .collect()
}

fn demo_config(
    dynamics_url: &str,
    token_url: &str,
    campaign_url: &str,
    ims_url: &str,
    journal_url: &str,
    drop_root: &Path,
) -> String {
    format!(
        r#"# Written by `conduit demo` for its in-process simulators.
[host]
data_dir = "data"
admin_listen = "127.0.0.1:0"

[dynamics]
url = "{dynamics_url}"
token_url = "{token_url}"
client_id = "{D365_CLIENT}"
client_secret_env = "{D365_SECRET_ENV}"
batch_size = 500

[campaign]
url = "{campaign_url}"
ims_url = "{ims_url}"
client_id = "{ACS_CLIENT}"
client_secret_env = "{ACS_SECRET_ENV}"
journal_url = "{journal_url}"
opt_out_exports = "{drop_root}"
max_concurrency = 16

[ingress]
pacing = {{ page_size = 2000, write_batch = 1000, poll_interval_ms = 500 }}

{contacts_mapping}
[[ingress.mappings]]
name = "vehicles"
source = "new_vehicle"
destination = "cusVehicle"
key = {{ source = "new_vehicleid", destination = "cusCrmId" }}
fields = [
  {{ source = "new_name", destination = "cusName" }},
  {{ source = "new_model", destination = "cusModel" }},
  {{ source = "new_year", destination = "cusYear" }},
  {{ source = "new_contactid", destination = "cusProfileCrmId" }},
]

[egress]
pacing = {{ page_size = 200, poll_interval_ms = 500 }}
send = true
open = true
click = true
bounce = true

[optinout]
pacing = {{ poll_interval_ms = 500 }}
direction = "bidirectional"
pairs = [{{ dynamics = "donotbulkemail", campaign = "blackListEmail" }}]
"#,
        drop_root = drop_root.display(),
        contacts_mapping = conduit_sim::SEEDED_CONTACTS_MAPPING,
    )
}
