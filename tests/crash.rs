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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_after_kill_9_and_every_record_arrives_once() {
    let sims = SimPair::start(3_000, 0).await;
    // Small pages and batches: the backup is taken while records are read and written.
    let workflows = INGRESS_CONTACTS.replace(
        "page_size = 200, write_batch = 100",
        "page_size = 50, write_batch = 25",
    );
    sims.write_config(&workflows);
    let ids = sims.ids("contact", "contactid");
    let mut host = sims.spawn_host().await;
    host.start("ingress").await;
    let flowing = host
        .wait_workflow("ingress", "records flowing", |v| {
            v["counters"]["written"].as_u64().unwrap_or(0) > 0
        })
        .await;
    assert!(
        flowing["counters"]["written"].as_u64().unwrap_or(0) < ids.len() as u64,
        "the backup is meant to be taken mid-load: {flowing}"
    );
    // Changes keep arriving while the backup is taken.
    let changing = {
        let dynamics = sims.dynamics.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            for n in 0..200 {
                let mut fields = Map::new();
                fields.insert("lastname".into(), json!(format!("During{n}")));
                dynamics
                    .upsert("contact", &ids[n * 7 % ids.len()], fields)
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let backup = sims.dir.path().join("backups").join("tenant.redb");
    std::fs::create_dir_all(backup.parent().unwrap()).unwrap();
    let taken = sims.cli(&["backup", backup.to_str().unwrap()]);
    assert_eq!(taken.code, 0, "{taken}");
    assert!(taken.stdout.contains("running host's store"), "{taken}");
    changing.await.unwrap();
    // The store in use cannot be restored over, even forced.
    let refused = sims.cli(&[
        "restore",
        backup.to_str().unwrap(),
        "--data-dir",
        sims.dir.path().join("data").to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(refused.code, 3, "{refused}");
    assert!(refused.stderr.contains("in use"), "{refused}");
    // Changes after the backup: the restored cursor is older, so they are read again.
    for n in 0..20 {
        let mut fields = Map::new();
        fields.insert("lastname".into(), json!(format!("After{n}")));
        sims.dynamics
            .upsert("contact", &ids[n * 11 % ids.len()], fields)
            .unwrap();
    }
    host.kill_hard();

    // A fresh data directory, restored from the backup; the config points at it.
    let fresh = sims.dir.path().join("restored");
    let restored = sims.cli(&[
        "restore",
        backup.to_str().unwrap(),
        "--data-dir",
        fresh.to_str().unwrap(),
    ]);
    assert_eq!(restored.code, 0, "{restored}");
    let again = sims.cli(&[
        "restore",
        backup.to_str().unwrap(),
        "--data-dir",
        fresh.to_str().unwrap(),
    ]);
    assert_eq!(again.code, 3, "an existing store needs --force: {again}");
    let config = std::fs::read_to_string(sims.config_path()).unwrap();
    std::fs::write(
        sims.config_path(),
        config.replace("data_dir = \"data\"", "data_dir = \"restored\""),
    )
    .unwrap();
    // Ingress was desired running in the backup: the host starts it by itself.
    let host = sims.spawn_host().await;
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
            "Campaign did not converge after the restore: {:?}\nlast view: {view:#}\n{}",
            differences(&sims).into_iter().take(10).collect::<Vec<_>>(),
            host.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Exactly once: one profile per contact, none twice.
    let mut seen = std::collections::HashMap::new();
    for profile in sims.campaign.records("profile") {
        *seen
            .entry(
                profile["externalId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), ids.len());
    assert!(
        seen.values().all(|count| *count == 1),
        "a contact arrived twice"
    );
}
