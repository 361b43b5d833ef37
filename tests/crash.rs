//! Crash safety of Ingress: the real `conduit run` process is killed with SIGKILL at random
//! moments during the initial load (and while contacts keep changing), restarted each time,
//! and at the end Campaign must hold every contact at its latest version and the cursor must
//! still follow changes. Once on a clean run, once with 10% 5xx and bursts of 429 injected.
//!
//! CI runs a short version. The full one (100k contacts, 20 kills):
//! `CONDUIT_CRASH_RECORDS=100000 CONDUIT_CRASH_KILLS=20 cargo test --release -p conduit-e2e --test crash -- --nocapture`

use std::time::{Duration, Instant};

use conduit_e2e::{INGRESS_CONTACTS, SimPair, wait_for};
use conduit_sim::faults::FaultConfig;
use serde_json::{Map, json};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Contacts that Campaign does not hold at their latest Dynamics 365 version.
fn differences(sims: &SimPair) -> Vec<String> {
    let profiles = sims.profiles();
    let contacts = sims.dynamics.rows("contact");
    let mut differences: Vec<String> = contacts
        .iter()
        .filter_map(|contact| {
            let id = contact["contactid"].as_str()?;
            match profiles.get(id) {
                None => Some(format!("{id}: missing")),
                Some(p)
                    if p["lastName"] != contact["lastname"]
                        || p["firstName"] != contact["firstname"] =>
                {
                    Some(format!(
                        "{id}: Campaign has {} {}, Dynamics 365 has {} {}",
                        p["firstName"], p["lastName"], contact["firstname"], contact["lastname"]
                    ))
                }
                Some(_) => None,
            }
        })
        .collect();
    if profiles.len() != contacts.len() {
        differences.push(format!(
            "{} profiles for {} contacts",
            profiles.len(),
            contacts.len()
        ));
    }
    differences
}

async fn run_crash_scenario(with_faults: bool) {
    let records = env_number("CONDUIT_CRASH_RECORDS", 10_000);
    let kills = env_number("CONDUIT_CRASH_KILLS", 5);
    let sims = SimPair::start(records, 0).await;
    sims.write_config(INGRESS_CONTACTS);
    if with_faults {
        sims.dynamics
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
        sims.campaign
            .faults()
            .set(FaultConfig {
                throttle_rate: 0.03,
                retry_after_secs: 1,
                error_rate: 0.10,
                seed: 12,
                ..FaultConfig::default()
            })
            .unwrap();
    }
    let ids = sims.ids("contact", "contactid");
    let mut host = sims.spawn_host().await;
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
            sims.dynamics.upsert("contact", id, fields).unwrap();
        }
        let view = host.workflow("ingress").await;
        println!(
            "kill {kill}: read {} written {} backlog {}",
            view["counters"]["read"], view["counters"]["written"], view["backlog"]
        );
        host.kill_hard();
        host = sims.spawn_host().await;
    }
    sims.dynamics.faults().clear();
    sims.campaign.faults().clear();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let view = host.workflow("ingress").await;
        let caught_up = view["status"] == "RUNNING"
            && view["backlog"] == 0
            && view["cursors"][0]["phase"] == "incremental";
        if caught_up && differences(&sims).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Campaign did not converge: {:?}\nlast view: {view:#}\n{}",
            differences(&sims).into_iter().take(10).collect::<Vec<_>>(),
            host.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The stored cursor still follows Dataverse: one more change arrives.
    let mut fields = Map::new();
    fields.insert("lastname".into(), json!("AfterTheCrashes"));
    sims.dynamics.upsert("contact", &ids[0], fields).unwrap();
    wait_for("a change made after the crashes", 60, || {
        sims.campaign
            .find("profile", &ids[0])
            .map(|p| p["lastName"].clone())
            == Some(json!("AfterTheCrashes"))
    })
    .await;
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
