//! The scaffolded plugins run unmodified in a real workflow: `conduit plugin new` (Rust,
//! JavaScript, Python; record-mapper), `conduit plugin build`, then the component as an Ingress
//! mapping's plugin with a `settings` table in `conduit.toml`, under `conduit run` against the
//! simulators: the contacts arrive in Campaign as the mapping's `fields` say, and the contact
//! the plugin's own setting excludes does not. This pins the `configure` contract (the host's
//! keys plus the plugin's own `settings`, docs/plugins.md) from both sides.

use std::path::{Path, PathBuf};
use std::process::Command;

use conduit_e2e::{SimPair, conduit_binary, fields};
use serde_json::Value;

/// Scaffolds and builds a record-mapper in `lang` under `work`; returns the component.
fn scaffold(work: &Path, lang: &str) -> PathBuf {
    let name = format!("kit-{lang}");
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let (dir, root) = (
        work.display().to_string(),
        work.join(&name).display().to_string(),
    );
    for args in [
        vec!["plugin", "new", &name, "--lang", lang, "--dir", &dir],
        vec!["plugin", "build", &root],
    ] {
        let output = Command::new(conduit_binary())
            .args(&args)
            // Shared with host/tests/plugin_kit.rs: the Rust dependencies and the tools.
            .env("CARGO_TARGET_DIR", shared.join("plugin-kit"))
            .env("CONDUIT_TOOLS_DIR", shared.join("conduit-tools"))
            .output()
            .expect("conduit runs");
        assert!(
            output.status.success(),
            "conduit {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    work.join(&name).join(format!("{name}.wasm"))
}

fn workflows(component: &Path) -> String {
    format!(
        r#"[ingress]
plugin = "{}"
pacing = {{ page_size = 50, write_batch = 100, poll_interval_ms = 200 }}

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
settings = {{ required = "emailaddress1" }}
"#,
        component.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scaffolded_record_mapper_of_each_language_maps_contacts_in_a_real_workflow() {
    let work = tempfile::tempdir().unwrap();
    for lang in ["rust", "js", "python"] {
        let component = scaffold(work.path(), lang);
        let sims = SimPair::start(12, 0).await;
        let no_mail = "00000000-0000-4000-9000-000000000001";
        sims.dynamics
            .upsert(
                "contact",
                no_mail,
                fields(&[
                    ("firstname", Value::from("No")),
                    ("lastname", Value::from("Mail")),
                    ("emailaddress1", Value::Null),
                ]),
            )
            .unwrap();
        let mut host = sims
            .host_with_ingress_caught_up(&workflows(&component))
            .await;
        let profiles = sims.profiles();
        let contacts = sims.dynamics.rows("contact");
        assert_eq!(contacts.len(), 13, "{lang}");
        for contact in &contacts {
            let id = contact["contactid"].as_str().unwrap();
            if id == no_mail {
                assert!(!profiles.contains_key(id), "{lang}: {id} has no e-mail");
                continue;
            }
            let profile = profiles
                .get(id)
                .unwrap_or_else(|| panic!("{lang}: no profile for {id}"));
            for (source, destination) in [
                ("firstname", "firstName"),
                ("lastname", "lastName"),
                ("emailaddress1", "email"),
            ] {
                assert_eq!(
                    profile[destination], contact[source],
                    "{lang}: {id} {destination}"
                );
            }
        }
        assert_eq!(profiles.len(), 12, "{lang}");
        host.terminate();
    }
}
