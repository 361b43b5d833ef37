//! Fidelity of the Campaign simulator against Adobe's own client, `@adobe/aio-lib-campaign-standard`:
//! runs `tests/node/campaign/fidelity.mjs` (create a profile, get it by key, update it, list a
//! custom resource, read metadata, see an RST refusal) against a simulator on loopback.
//!
//! Needs Node 20 and npm; installs the locked packages with `npm ci` when `node_modules` is missing.

use std::path::PathBuf;
use std::process::Command;

use conduit_sim::campaign::{CampaignSim, CampaignSimOptions};

// The machine-wide install lock shared with every test binary (this test uses part of it).
#[allow(dead_code)]
#[path = "../../../tests/support/install.rs"]
mod install;

fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/node/campaign")
}

/// `npm ci` once, under the install lock: two runs never install into one folder together.
fn ensure_node_modules() {
    let dir = script_dir();
    let installed = || {
        dir.join("node_modules/@adobe/aio-lib-campaign-standard")
            .exists()
            // npm writes its hidden lockfile last: an interrupted install lacks it.
            && dir.join("node_modules/.package-lock.json").exists()
    };
    if let Some(status) = install::once(installed, || {
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm must be installed to run the fidelity test")
    }) {
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adobe_client_library_works_against_the_simulator() {
    ensure_node_modules();
    let sim = CampaignSim::new(CampaignSimOptions::default());
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let origin = server.origin();
    let org = sim.org().to_owned();
    let client_id = sim.client_id().to_owned();
    let secret = sim.client_secret().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("fidelity.mjs")
            .args([&origin, &org, &client_id, &secret])
            .current_dir(script_dir())
            .output()
            .expect("node must be installed to run the fidelity test")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "fidelity.mjs failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("\"ok\":true"), "{stdout}");
    let profile = sim.find("profile", &first_fidelity_key(&sim)).unwrap();
    assert_eq!(profile["lastName"], "Lovelace");
    assert_eq!(sim.records("cusVehicle").len(), 3);
    server.shutdown().await;
}

fn first_fidelity_key(sim: &CampaignSim) -> String {
    sim.records("profile")
        .first()
        .and_then(|record| record["externalId"].as_str().map(str::to_owned))
        .unwrap_or_default()
}
