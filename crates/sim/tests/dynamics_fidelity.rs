//! Fidelity of the Dynamics 365 simulator against a real third-party client: the npm package
//! `dynamics-web-api` (pinned in `tests/node/dynamics/package-lock.json`) drives the simulator
//! through create, retrieve, paging, change tracking, upsert, delete, count, metadata and
//! `$batch`. Needs Node 20+ and npm (with access to the npm registry for `npm ci`).

use std::path::PathBuf;
use std::time::Duration;

use conduit_sim::dynamics::{DynamicsSim, DynamicsSimOptions};
use tokio::process::Command;

// The machine-wide install lock shared with every test binary (this test uses part of it).
#[allow(dead_code)]
#[path = "../../../tests/support/install.rs"]
mod install;

const SEEDED_CONTACTS: usize = 250;

fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/node/dynamics")
}

async fn run(command: &mut Command, what: &str) -> String {
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 5 minutes"))
        .unwrap_or_else(|error| {
            panic!("{what} could not start (is Node 20 with npm installed?): {error}")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamics_web_api_client_works_against_the_simulator() {
    let dir = script_dir();
    // `npm ci` once, under the install lock: two runs never install into one folder together.
    let installed = || {
        dir.join("node_modules/dynamics-web-api").exists()
            // npm writes its hidden lockfile last: an interrupted install lacks it.
            && dir.join("node_modules/.package-lock.json").exists()
    };
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        install::once(installed, || {
            handle.block_on(run(
                Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&dir),
                "npm ci in tests/node/dynamics",
            ))
        })
    });
    let sim = DynamicsSim::new(DynamicsSimOptions {
        seed_contacts: SEEDED_CONTACTS,
        seed_vehicles: 10,
        ..Default::default()
    });
    let server = sim
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serves");
    let stdout = run(
        Command::new("node")
            .arg("fidelity.mjs")
            .arg(server.base_url())
            .env("FIDELITY_SEEDED_CONTACTS", SEEDED_CONTACTS.to_string())
            .current_dir(&dir),
        "node fidelity.mjs",
    )
    .await;
    assert!(stdout.contains("fidelity: all steps passed"), "{stdout}");
    server.shutdown().await;
}
