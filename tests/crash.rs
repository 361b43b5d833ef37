//! Crash safety of Ingress: the real `conduit run` process is killed with SIGKILL at random
//! moments during the initial load (and while contacts keep changing), restarted each time,
//! and at the end Campaign must hold every contact at its latest version and the cursor must
//! still follow changes. Once on a clean run, once with 10% 5xx and bursts of 429 injected.
//!
//! CI runs a short version. The full one (100k contacts, 20 kills):
//! `CONDUIT_CRASH_RECORDS=100000 CONDUIT_CRASH_KILLS=20 cargo test --release -p conduit-e2e --test crash -- --nocapture`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conduit::connector::http::Secret;
use conduit::sim::campaign::{CampaignSim, CampaignSimOptions};
use conduit::sim::dynamics::{DynamicsSim, DynamicsSimOptions};
use conduit::sim::faults::FaultConfig;
use conduit_e2e::{HostProcess, free_port};
use serde_json::{Map, json};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Scenario {
    dynamics: DynamicsSim,
    campaign: CampaignSim,
    config: std::path::PathBuf,
    admin_port: u16,
    _dir: tempfile::TempDir,
    _servers: (
        conduit::sim::dynamics::SimServer,
        conduit::sim::campaign::CampaignSimServer,
    ),
}

const SECRETS: [(&str, &str); 2] = [
    ("CRASH_D365_SECRET", "d365-secret"),
    ("CRASH_ACS_SECRET", "acs-secret"),
];

async fn scenario(records: usize) -> Scenario {
    let dir = tempfile::tempdir().unwrap();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let dynamics = DynamicsSim::new(DynamicsSimOptions {
        client_id: "crash-client".into(),
        client_secret: SECRETS[0].1.into(),
        seed_contacts: records,
        seed_vehicles: 0,
        ..DynamicsSimOptions::default()
    });
    let dynamics_server = dynamics.serve(loopback).await.unwrap();
    let campaign = CampaignSim::new(CampaignSimOptions {
        client_id: "crash-acs".into(),
        client_secret: Secret::new(SECRETS[1].1),
        drop_root: Some(dir.path().join("sftp")),
        ..CampaignSimOptions::default()
    });
    let campaign_server = campaign.serve(loopback).await.unwrap();
    let admin_port = free_port();
    let config = dir.path().join("conduit.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[host]
data_dir = "data"
admin_listen = "127.0.0.1:{admin_port}"
[dynamics]
url = "{}"
token_url = "{}"
client_id = "crash-client"
client_secret_env = "{}"
[campaign]
url = "{}"
ims_url = "{}"
client_id = "crash-acs"
client_secret_env = "{}"
max_concurrency = 16
[ingress]
pacing = {{ page_size = 500, write_batch = 500, poll_interval_ms = 200 }}
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
"#,
            dynamics_server.base_url(),
            dynamics_server.token_url("crash-tenant"),
            SECRETS[0].0,
            campaign_server.api_base(),
            campaign_server.ims_url(),
            SECRETS[1].0,
        ),
    )
    .unwrap();
    Scenario {
        dynamics,
        campaign,
        config,
        admin_port,
        _dir: dir,
        _servers: (dynamics_server, campaign_server),
    }
}

impl Scenario {
    fn spawn(&self) -> HostProcess {
        HostProcess::spawn(&self.config, self.admin_port, &SECRETS)
    }

    /// Names of contacts in Dynamics 365 that Campaign does not hold at the same version.
    fn differences(&self) -> Vec<String> {
        let profiles: std::collections::HashMap<String, serde_json::Value> = self
            .campaign
            .records("profile")
            .into_iter()
            .filter_map(|p| Some((p["externalId"].as_str()?.to_string(), p)))
            .collect();
        let mut differences = Vec::new();
        let contacts = self.dynamics.rows("contact");
        for contact in &contacts {
            let id = contact["contactid"].as_str().unwrap_or_default();
            match profiles.get(id) {
                None => differences.push(format!("{id}: missing")),
                Some(profile) => {
                    if profile["lastName"] != contact["lastname"]
                        || profile["firstName"] != contact["firstname"]
                    {
                        differences.push(format!(
                            "{id}: Campaign has {} {}, Dynamics 365 has {} {}",
                            profile["firstName"],
                            profile["lastName"],
                            contact["firstname"],
                            contact["lastname"]
                        ));
                    }
                }
            }
        }
        if profiles.len() != contacts.len() {
            differences.push(format!(
                "{} profiles for {} contacts",
                profiles.len(),
                contacts.len()
            ));
        }
        differences
    }
}

async fn run_crash_scenario(with_faults: bool) {
    let records = env_number("CONDUIT_CRASH_RECORDS", 10_000);
    let kills = env_number("CONDUIT_CRASH_KILLS", 5);
    let s = scenario(records).await;
    if with_faults {
        s.dynamics
            .faults()
            .set(FaultConfig {
                error_rate: 0.10,
                throttle_rate: 0.02,
                throttle_burst: 3,
                retry_after_secs: 1,
                seed: 11,
                ..FaultConfig::default()
            })
            .unwrap();
        s.campaign
            .faults()
            .set(FaultConfig {
                throttle_rate: 0.03,
                retry_after_secs: 1,
                error_rate: 0.10,
                ..FaultConfig::default()
            })
            .unwrap();
    }
    let ids: Vec<String> = s
        .dynamics
        .rows("contact")
        .iter()
        .filter_map(|c| c["contactid"].as_str().map(str::to_string))
        .collect();
    let mut host = s.spawn();
    host.wait_healthy().await;
    let (status, body) = host.post("/api/workflows/ingress/start").await;
    assert_eq!(status, 200, "{body}");
    let mut rng = fastrand::Rng::with_seed(2026);
    for kill in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.u64(300..1500))).await;
        // Keep changing contacts so that "latest version" is tested, not only presence.
        for n in 0..20 {
            let id = &ids[rng.usize(0..ids.len())];
            let mut fields = Map::new();
            fields.insert("lastname".into(), json!(format!("Kill{kill}-{n}")));
            s.dynamics.upsert("contact", id, fields).unwrap();
        }
        let view = host.workflow("ingress").await;
        println!(
            "kill {kill}: read {} written {} backlog {}",
            view["counters"]["read"], view["counters"]["written"], view["backlog"]
        );
        host.kill_hard();
        host = s.spawn();
        host.wait_healthy().await;
    }
    s.dynamics.faults().clear();
    s.campaign.faults().clear();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let view = host.workflow("ingress").await;
        let caught_up = view["status"] == "RUNNING"
            && view["backlog"] == 0
            && view["cursors"][0]["phase"] == "incremental";
        if caught_up && s.differences().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Campaign did not converge: {:?}\nlast view: {view:#}\n{}",
            s.differences().into_iter().take(10).collect::<Vec<_>>(),
            host.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The stored cursor still follows Dataverse: one more change arrives.
    let mut fields = Map::new();
    fields.insert("lastname".into(), json!("AfterTheCrashes"));
    s.dynamics.upsert("contact", &ids[0], fields).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s
        .campaign
        .find("profile", &ids[0])
        .map(|p| p["lastName"].clone())
        != Some(json!("AfterTheCrashes"))
    {
        assert!(
            Instant::now() < deadline,
            "a change after the crashes was not delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{records} contacts, {kills} kills, faults {with_faults}: destination equals source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_survives_kill_9_at_random_moments() {
    run_crash_scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_survives_kill_9_with_5xx_and_429_bursts() {
    run_crash_scenario(true).await;
}
