//! `conduit plugin new` and `conduit plugin build`: creates a ready-to-build plugin crate on
//! the `conduit-plugin` SDK for one world, and builds a plugin crate into a stripped
//! wasm32-wasip2 component next to its Cargo.toml.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use conduit::plugin::World;

/// The SDK this binary was built with; a plugin crate depends on it by path, which works
/// offline. `--sdk` or `CONDUIT_PLUGIN_SDK` point elsewhere (e.g. an installed copy).
const BUILT_IN_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");

/// The target plugins are built for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// The files of a new plugin crate for `world`, as (relative path, contents).
pub fn scaffold_files(name: &str, world: World, sdk: &Path) -> Vec<(&'static str, String)> {
    let (feature, lib, input, settings) = match world {
        World::RecordMapper => (
            "record-mapper",
            RECORD_MAPPER_LIB,
            RECORD_MAPPER_INPUT,
            RECORD_MAPPER_SETTINGS,
        ),
        World::EventMapper => (
            "event-mapper",
            EVENT_MAPPER_LIB,
            EVENT_MAPPER_INPUT,
            EVENT_MAPPER_SETTINGS,
        ),
        World::OptOutResolver => (
            "opt-out-resolver",
            OPT_OUT_LIB,
            OPT_OUT_INPUT,
            OPT_OUT_SETTINGS,
        ),
    };
    let sdk = sdk.display().to_string().replace('\\', "/");
    let manifest = MANIFEST
        .replace("{name}", name)
        .replace("{sdk}", &sdk)
        .replace("{feature}", feature);
    vec![
        ("Cargo.toml", manifest),
        ("src/lib.rs", lib.replace("{name}", name)),
        ("sample/input.json", input.to_owned()),
        ("sample/settings.toml", settings.to_owned()),
        (".gitignore", "/target\n*.wasm\n".to_owned()),
    ]
}

/// Creates the plugin crate `name` under `parent`; refuses to overwrite an existing folder.
pub fn create(
    name: &str,
    world: World,
    parent: &Path,
    sdk: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let sdk = match sdk {
        Some(path) => path.to_path_buf(),
        None => std::env::var_os("CONDUIT_PLUGIN_SDK")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(BUILT_IN_SDK)),
    };
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "the plugin SDK is not at {} (pass --sdk or set CONDUIT_PLUGIN_SDK to the folder holding conduit-plugin's Cargo.toml)",
            sdk.display()
        )
    })?;
    if !sdk.join("Cargo.toml").is_file() {
        bail!("{} holds no Cargo.toml: not the plugin SDK", sdk.display());
    }
    let root = parent.join(name);
    if root.exists() {
        bail!(
            "{} already exists; choose another name or folder",
            root.display()
        );
    }
    for (relative, contents) in scaffold_files(name, world, &sdk) {
        let path = root.join(relative);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(root)
}

/// A crate name cargo accepts and that is also a file name: lowercase ASCII, digits and `-`.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "invalid plugin name `{name}`: use lowercase letters, digits and `-`, starting with a letter"
        );
    }
    Ok(())
}

/// Builds the plugin crate at `dir` for wasm32-wasip2 (release profile, stripped) and copies
/// the component to `<dir>/<name>.wasm`, which it returns.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let text = fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}: not a plugin crate", manifest.display()))?;
    let parsed: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", manifest.display()))?;
    let Some(name) = parsed
        .get("package")
        .and_then(|package| package.get("name"))
        .and_then(toml::Value::as_str)
    else {
        bail!("{} has no [package] name", manifest.display());
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--manifest-path",
        ])
        .arg(&manifest)
        .status()
        .with_context(|| format!("could not run `{cargo}`"))?;
    if !status.success() {
        bail!(
            "`cargo build --release --target {WASM_TARGET}` failed for {}",
            dir.display()
        );
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    let file = format!("{}.wasm", name.replace('-', "_"));
    let built = target_dir.join(WASM_TARGET).join("release").join(&file);
    let destination = dir.join(format!("{name}.wasm"));
    fs::copy(&built, &destination).with_context(|| {
        format!(
            "the build did not produce {} (is `crate-type = [\"cdylib\", \"rlib\"]` set?)",
            built.display()
        )
    })?;
    Ok(destination)
}

const MANIFEST: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# Its own workspace, so the crate builds wherever it is created.
[workspace]

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
# The SDK by path: works offline. The feature picks the plugin's world.
conduit-plugin = { path = "{sdk}", features = ["{feature}"] }
serde = { version = "1", features = ["derive"] }

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#;

const RECORD_MAPPER_LIB: &str = r##"//! `{name}`: maps Dynamics 365 contacts to Campaign profiles (a record-mapper plugin).

use conduit_plugin::{
    MappedBatch, MappedBatchBuilder, Outcome, OutputRecord, Phase, RecordBatch, RecordMapper,
    Target, settings,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The Campaign resource to write, e.g. `profile`.
    destination: String,
}

/// The configured mapping.
pub struct Plugin {
    target: Target,
}

impl RecordMapper for Plugin {
    fn configure(json: &str) -> Result<Self, String> {
        let Settings { destination } = settings::parse(json)?;
        Ok(Plugin { target: Target::campaign(&destination, "externalId") })
    }

    fn map(&self, _phase: Phase, batch: RecordBatch) -> Result<MappedBatch, String> {
        let mut out = MappedBatchBuilder::with_capacity(batch.rows.len());
        let target = out.target(&self.target);
        let (name_in, email_in) = (batch.column("fullname"), batch.column("emailaddress1"));
        let (name_out, email_out) = (out.column("lastName"), out.column("email"));
        for row in &batch.rows {
            out.push(match row.get(email_in).as_text() {
                None => Outcome::skip("no emailaddress1"),
                Some(email) if !email.contains('@') => Outcome::reject(format!("`{email}` is not an e-mail address")),
                Some(email) => Outcome::write(
                    OutputRecord::upsert(target, &row.key)
                        .field(name_out, row.get(name_in).as_text())
                        .field(email_out, email),
                ),
            });
        }
        Ok(out.finish())
    }
}

conduit_plugin::export_record_mapper!(Plugin);

#[cfg(test)]
mod tests {
    use conduit_plugin::{Row, Value};

    use super::*;

    #[test]
    fn contacts_with_an_email_become_profiles_and_others_are_skipped() {
        let plugin = Plugin::configure(r#"{"destination": "profile"}"#).unwrap();
        let batch = RecordBatch {
            table: "contact".into(),
            columns: vec!["fullname".into(), "emailaddress1".into()],
            rows: vec![
                Row::upsert("c1", vec!["Ada".into(), "ada@example.com".into()]),
                Row::upsert("c2", vec!["Bob".into(), Value::Null]),
            ],
        };
        let mapped = plugin.map(Phase::Initial, batch).unwrap();
        assert!(matches!(&mapped.outcomes[0], Outcome::Write(records) if records[0].key == "c1"));
        assert!(matches!(mapped.outcomes[1], Outcome::Skip(_)));
    }
}
"##;

const RECORD_MAPPER_INPUT: &str = r#"{
  "phase": "initial",
  "table": "contact",
  "columns": ["fullname", "emailaddress1"],
  "rows": [
    {"key": "c-1", "op": "upsert", "values": [{"type": "text", "value": "Ada Lovelace"}, {"type": "text", "value": "ada@example.com"}], "modified_at": null},
    {"key": "c-2", "op": "upsert", "values": [{"type": "text", "value": "No Mail"}, {"type": "null"}], "modified_at": null}
  ]
}
"#;

const RECORD_MAPPER_SETTINGS: &str = "destination = \"profile\"\n";

const EVENT_MAPPER_LIB: &str = r##"//! `{name}`: records Campaign email events as Dynamics 365 tasks (an event-mapper plugin).

use conduit_plugin::{
    EmailEvent, EventMapper, MappedBatch, MappedBatchBuilder, Outcome, OutputRecord, Target,
    settings,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The Dataverse entity set to write, e.g. `tasks`.
    entity_set: String,
}

/// The configured mapping.
pub struct Plugin {
    target: Target,
}

impl EventMapper for Plugin {
    fn configure(json: &str) -> Result<Self, String> {
        let Settings { entity_set } = settings::parse(json)?;
        Ok(Plugin { target: Target::dynamics(&entity_set, "activityid") })
    }

    fn map(&self, events: Vec<EmailEvent>) -> Result<MappedBatch, String> {
        let mut out = MappedBatchBuilder::with_capacity(events.len());
        let target = out.target(&self.target);
        let (subject, regarding) = (out.column("subject"), out.column("regardingobjectid"));
        for event in &events {
            out.push(if event.contact_key.is_empty() {
                Outcome::reject("the event names no contact")
            } else {
                Outcome::write(
                    OutputRecord::upsert(target, &event.id)
                        .field(subject, format!("{} {}", event.kind.name(), event.delivery_name))
                        .field(regarding, event.contact_key.as_str()),
                )
            });
        }
        Ok(out.finish())
    }
}

conduit_plugin::export_event_mapper!(Plugin);

#[cfg(test)]
mod tests {
    use conduit_plugin::EmailEventKind;

    use super::*;

    #[test]
    fn events_without_a_contact_are_rejected() {
        let plugin = Plugin::configure(r#"{"entity_set": "tasks"}"#).unwrap();
        let event = EmailEvent {
            id: "e-1".into(),
            kind: EmailEventKind::Open,
            contact_key: String::new(),
            campaign_id: "k".into(),
            campaign_name: "K".into(),
            delivery_id: "d".into(),
            delivery_name: "D".into(),
            timestamp: "2026-11-29T00:00:00Z".into(),
            url: None,
            mirror_page_url: None,
            bounce: None,
        };
        let mapped = plugin.map(vec![event]).unwrap();
        assert!(matches!(mapped.outcomes[0], Outcome::Reject(_)));
    }
}
"##;

const EVENT_MAPPER_INPUT: &str = r#"[
  {"id": "e-1", "kind": "open", "contact_key": "c-1", "campaign_id": "k-1", "campaign_name": "Spring",
   "delivery_id": "d-1", "delivery_name": "Spring newsletter", "timestamp": "2026-11-29T05:00:00Z",
   "url": null, "mirror_page_url": null, "bounce": null}
]
"#;

const EVENT_MAPPER_SETTINGS: &str = "entity_set = \"tasks\"\n";

const OPT_OUT_LIB: &str = r##"//! `{name}`: copies Dynamics 365 opt-outs to Campaign (an opt-out-resolver plugin).

use conduit_plugin::{
    ContactOptOut, MappedBatch, MappedBatchBuilder, OptOutResolver, Outcome, OutputRecord,
    Target, settings,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The Dynamics attribute to read, e.g. `donotbulkemail`.
    dynamics_attribute: String,
    /// The Campaign attribute to write, e.g. `blackListEmail`.
    campaign_attribute: String,
}

/// The configured resolver.
pub struct Plugin {
    settings: Settings,
}

impl OptOutResolver for Plugin {
    fn configure(json: &str) -> Result<Self, String> {
        Ok(Plugin { settings: settings::parse(json)? })
    }

    fn resolve(&self, contacts: Vec<ContactOptOut>) -> Result<MappedBatch, String> {
        let mut out = MappedBatchBuilder::with_capacity(contacts.len());
        let target = out.target(&Target::campaign("profile", "crmId"));
        let column = out.column(&self.settings.campaign_attribute);
        for contact in &contacts {
            let wanted = contact.dynamics.iter().find(|v| v.attribute == self.settings.dynamics_attribute);
            let current = contact.campaign.iter().find(|v| v.attribute == self.settings.campaign_attribute);
            out.push(match (wanted, current) {
                (None, _) => Outcome::skip("no Dynamics value"),
                (Some(w), Some(c)) if w.value == c.value => Outcome::skip("already equal"),
                (Some(w), _) => Outcome::write(OutputRecord::update(target, &contact.contact_key).field(column, w.value)),
            });
        }
        Ok(out.finish())
    }
}

conduit_plugin::export_opt_out_resolver!(Plugin);

#[cfg(test)]
mod tests {
    use conduit_plugin::OptOutValue;

    use super::*;

    #[test]
    fn equal_sides_are_skipped() {
        let plugin = Plugin::configure(
            r#"{"dynamics_attribute": "donotbulkemail", "campaign_attribute": "blackListEmail"}"#,
        )
        .unwrap();
        let value = |attribute: &str| OptOutValue { attribute: attribute.into(), value: true, changed_at: None };
        let contact = ContactOptOut {
            contact_key: "c-1".into(),
            dynamics: vec![value("donotbulkemail")],
            campaign: vec![value("blackListEmail")],
        };
        let mapped = plugin.resolve(vec![contact]).unwrap();
        assert!(matches!(mapped.outcomes[0], Outcome::Skip(_)));
    }
}
"##;

const OPT_OUT_INPUT: &str = r#"[
  {"contact_key": "c-1",
   "dynamics": [{"attribute": "donotbulkemail", "value": true, "changed_at": "2026-11-29T05:00:00Z"}],
   "campaign": [{"attribute": "blackListEmail", "value": false, "changed_at": null}]}
]
"#;

const OPT_OUT_SETTINGS: &str =
    "dynamics_attribute = \"donotbulkemail\"\ncampaign_attribute = \"blackListEmail\"\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_outside_lowercase_letters_digits_and_dashes_are_refused() {
        for bad in ["", "Upper", "1st", "has space", "under_score"] {
            let error = check_name(bad).unwrap_err().to_string();
            assert!(error.contains("invalid plugin name"), "{bad}: {error}");
        }
        assert!(check_name("my-mapper2").is_ok());
    }

    #[test]
    fn scaffold_enables_the_sdk_feature_of_the_chosen_world() {
        let files = scaffold_files("x", World::OptOutResolver, Path::new("/sdk"));
        let manifest = &files[0].1;
        assert!(
            manifest.contains(r#"path = "/sdk", features = ["opt-out-resolver"]"#),
            "{manifest}"
        );
        assert!(files[1].1.contains("export_opt_out_resolver!"));
    }
}
