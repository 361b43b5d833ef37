//! The plugin kit end to end, in Rust, JavaScript and Python, through the `conduit` binary.
//!
//! For each language, every world is scaffolded with `conduit plugin new` and built with
//! `conduit plugin build`; nothing generated names this checkout (the SDK is written into the
//! project); `conduit plugin test` on the project's sample prints exactly its
//! `sample/expected.json`, and a typo in the sample's own settings is refused by name; a Rust
//! project's own unit test passes as its author runs it. Then the same three components run
//! unmodified as the Ingress, Egress and Opt-in/out plugins of one `conduit run` against the
//! simulators, each with its own `settings` table in `conduit.toml`:
//!
//! - Ingress (record-mapper): the contacts arrive in Campaign as the mapping's `fields` say,
//!   and the contact the plugin's own setting excludes does not;
//! - Egress (event-mapper): email events injected into Campaign arrive as the scaffold maps
//!   them, activities on the contact in Dynamics 365 with exactly the fields it writes;
//! - Opt-in/out (opt-out-resolver, `bidirectional`): a Dynamics 365 opt-out reaches Campaign, a
//!   Campaign opt-out reaches Dynamics 365, and a later Campaign opt-in wins over it.
//!
//! This pins the `configure` contract (the host's keys plus the plugin's own `settings`,
//! docs/plugins.md) and the scaffolds' outputs against what the writers and the simulated
//! services accept. Each project is built once and serves both halves, which is why the kit's
//! own checks live here rather than beside the binary.
//!
//! The componentize tools install once into `<target>/tmp/conduit-tools` (shared with
//! `host/tests/plugin_polyglot.rs` and kept between runs), under the tools folder's own lock;
//! the scaffolded Rust crates share one target folder there too, so the SDK's dependencies
//! compile once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use conduit_e2e::{HostProcess, SimPair, conduit_binary, fields, wait_for};
use conduit_model::{BounceDetail, EmailEvent, EmailEventKind};
use serde_json::{Value, json};

/// The worlds, in the order of the workflows they run in.
const WORLDS: [&str; 3] = ["record-mapper", "event-mapper", "opt-out-resolver"];

/// The folder shared by every test run: scaffolded Rust crates' target folder and the tools.
fn shared(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Runs `conduit` with the shared Rust target folder and tools folder.
fn conduit(args: &[&str]) -> Output {
    Command::new(conduit_binary())
        .args(args)
        .env("CARGO_TARGET_DIR", shared("plugin-kit"))
        .env("CONDUIT_TOOLS_DIR", shared("conduit-tools"))
        .output()
        .expect("conduit runs")
}

/// Runs `conduit`, which must succeed; returns its standard output.
fn succeed(args: &[&str]) -> String {
    let output = conduit(args);
    assert!(
        output.status.success(),
        "conduit {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("conduit prints UTF-8")
}

/// Every file under `dir`, recursively, skipping build output.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name != "target") {
                found.extend(files(&path));
            }
        } else {
            found.push(path);
        }
    }
    found
}

/// Scaffolds, builds and tests one project of `world` in `lang` under `work`, as a new
/// author would; returns the built component.
fn new_build_test(work: &Path, lang: &str, world: &str) -> PathBuf {
    let name = format!("kit-{lang}-{world}");
    let dir = work.to_str().unwrap();
    let created = succeed(&[
        "plugin", "new", &name, "--world", world, "--lang", lang, "--dir", dir,
    ]);
    assert!(created.contains("conduit plugin build"), "{created}");
    assert!(
        created.contains("--expect"),
        "plugin new prints the checking command: {created}"
    );
    let root = work.join(&name);
    // Nothing in the project points into this checkout: it builds on a machine without one.
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for file in files(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains(checkout.to_str().unwrap()),
            "{} names the checkout",
            file.display()
        );
    }
    let built = succeed(&["plugin", "build", root.to_str().unwrap()]);
    let component = root.join(format!("{name}.wasm"));
    assert!(built.contains(&format!("{name}.wasm")), "{built}");
    // The command `plugin new` printed (the world detected, the output checked by --expect),
    // with --json to compare the outcomes here too.
    let printed = succeed(&[
        "plugin",
        "test",
        component.to_str().unwrap(),
        "--settings",
        root.join("sample/settings.toml").to_str().unwrap(),
        "--input",
        root.join("sample/input.json").to_str().unwrap(),
        "--expect",
        root.join("sample/expected.json").to_str().unwrap(),
        "--json",
    ]);
    let expected = std::fs::read_to_string(root.join("sample/expected.json")).unwrap();
    let printed: Value = serde_json::from_str(&printed).unwrap();
    let expected: Value = serde_json::from_str(&expected).unwrap();
    assert_eq!(printed, expected, "{lang} {world}");
    a_typo_in_the_own_settings_is_refused_by_name(&root, &component, world);
    if lang == "rust" {
        the_crates_own_unit_test_passes(&root, world);
    }
    component
}

/// `plugin test` with a typo in the sample's own `[settings]` fails, naming the setting.
fn a_typo_in_the_own_settings_is_refused_by_name(root: &Path, component: &Path, world: &str) {
    let settings = std::fs::read_to_string(root.join("sample/settings.toml")).unwrap();
    let (own_key, _) = settings
        .split("[settings]\n")
        .nth(1)
        .and_then(|own| own.split_once(" = "))
        .expect("the sample has an own setting");
    let typo = root.join("sample/typo.toml");
    std::fs::write(&typo, format!("{settings}{own_key}x = 1\n")).unwrap();
    let output = conduit(&[
        "plugin",
        "test",
        component.to_str().unwrap(),
        "--world",
        world,
        "--settings",
        typo.to_str().unwrap(),
        "--input",
        root.join("sample/input.json").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{}: {stderr}", root.display());
    assert!(
        stderr.contains(&format!("`settings.{own_key}x`")),
        "{}: {stderr}",
        root.display()
    );
}

/// The Rust crate's own unit test, natively, as its author runs it.
fn the_crates_own_unit_test_passes(root: &Path, world: &str) {
    let tested = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", shared("plugin-kit"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&tested.stdout);
    assert!(
        tested.status.success() && report.contains("1 passed"),
        "{world}: cargo test failed:\n{report}\n{}",
        String::from_utf8_lossy(&tested.stderr)
    );
}

/// The three workflows, each with its scaffolded plugin and the plugin's own settings as the
/// scaffold's sample has them.
fn workflows([record_mapper, event_mapper, resolver]: &[PathBuf; 3]) -> String {
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

[egress]
plugin = "{}"
pacing = {{ poll_interval_ms = 200 }}
send = false
open = true
click = true
bounce = true
settings = {{ subject_prefix = "Campaign" }}

[optinout]
plugin = "{}"
pacing = {{ poll_interval_ms = 200 }}
direction = "bidirectional"
pairs = [{{ dynamics = "donotbulkemail", campaign = "blackListEmail" }}]
settings = {{ key_field = "externalId" }}
"#,
        record_mapper.display(),
        event_mapper.display(),
        resolver.display()
    )
}

/// A contact with no e-mail address: the record-mapper's own setting keeps it out of Campaign.
const NO_MAIL: &str = "00000000-0000-4000-9000-000000000001";

/// One language's kit, end to end: every world scaffolded, built and tested, then the three
/// components running as the workflows' plugins.
async fn scaffolds_build_test_and_run_unmodified_in_every_workflow(lang: &str) {
    let work = tempfile::tempdir().unwrap();
    let components = WORLDS.map(|world| new_build_test(work.path(), lang, world));
    let sims = SimPair::start(12, 0).await;
    sims.dynamics
        .upsert(
            "contact",
            NO_MAIL,
            fields(&[
                ("firstname", Value::from("No")),
                ("lastname", Value::from("Mail")),
                ("emailaddress1", Value::Null),
            ]),
        )
        .unwrap();
    let mut host = sims
        .host_with_ingress_caught_up(&workflows(&components))
        .await;
    contacts_arrive_as_mapped(&sims, lang);
    events_arrive_as_activities(&sims, &mut host, lang).await;
    opt_outs_flow_both_ways(&sims, &mut host, lang).await;
    host.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_scaffolds_build_test_and_run_unmodified_in_every_workflow() {
    scaffolds_build_test_and_run_unmodified_in_every_workflow("rust").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_scaffolds_build_test_and_run_unmodified_in_every_workflow() {
    scaffolds_build_test_and_run_unmodified_in_every_workflow("js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_scaffolds_build_test_and_run_unmodified_in_every_workflow() {
    scaffolds_build_test_and_run_unmodified_in_every_workflow("python").await;
}

/// Ingress: every contact with an e-mail address is a profile with the mapped fields.
fn contacts_arrive_as_mapped(sims: &SimPair, lang: &str) {
    let profiles = sims.profiles();
    let contacts = sims.dynamics.rows("contact");
    assert_eq!(contacts.len(), 13, "{lang}");
    for contact in &contacts {
        let id = contact["contactid"].as_str().unwrap();
        if id == NO_MAIL {
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
}

/// An email event of `kind` for `contact`, numbered `n`.
fn event(n: u32, kind: EmailEventKind, contact: &str) -> EmailEvent {
    EmailEvent {
        id: format!("00000000-0000-4000-8000-{n:012}"),
        kind,
        contact_key: contact.to_string(),
        campaign_id: "C1".into(),
        campaign_name: "Spring".into(),
        delivery_id: "D1".into(),
        delivery_name: "Launch".into(),
        timestamp: format!("2026-11-01T10:0{n}:00Z"),
        url: (kind == EmailEventKind::Click).then(|| "https://example.com/offer".to_string()),
        mirror_page_url: None,
        bounce: (kind == EmailEventKind::Bounce).then(|| BounceDetail {
            hard: true,
            reason: "User unknown".into(),
        }),
    }
}

/// The fields of an activity that hold a value, without the service's own timestamps and
/// annotations (`@odata.etag`).
fn written(activity: &Value) -> BTreeMap<String, Value> {
    activity
        .as_object()
        .expect("a row is an object")
        .iter()
        .filter(|(name, value)| {
            !value.is_null()
                && !name.starts_with('@')
                && !matches!(name.as_str(), "createdon" | "modifiedon")
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Egress: the switched-on kinds become activities on the contact, with exactly the
/// scaffold's fields; the switched-off kind is skipped. (An event without a contact never
/// reaches the plugin: the journal reader refuses it; the sample covers the plugin's reject.)
async fn events_arrive_as_activities(sims: &SimPair, host: &mut HostProcess, lang: &str) {
    let contact = sims.ids("contact", "contactid")[0].clone();
    let events = [
        event(1, EmailEventKind::Send, &contact),
        event(2, EmailEventKind::Open, &contact),
        event(3, EmailEventKind::Click, &contact),
        event(4, EmailEventKind::Bounce, &contact),
    ];
    for event in &events {
        sims.campaign.emit_event(event);
    }
    host.start("egress").await;
    let view = host
        .wait_workflow("egress", "every event read and written", |v| {
            v["counters"]["read"] == 4 && v["backlog"] == 0
        })
        .await;
    assert_eq!(view["counters"]["written"], 3, "{lang}: {view}");
    assert_eq!(view["counters"]["skipped"], 1, "{lang}: sends are off");
    assert_eq!(view["counters"]["dead_letters"], 0, "{lang}: {view}");
    assert_eq!(sims.dynamics.count("adobe_emailsend"), 0, "{lang}");
    for (table, kind, event, date_field, extra) in [
        (
            "adobe_emailopen",
            "open",
            &events[1],
            "adobe_dateopened",
            None,
        ),
        (
            "adobe_emailclick",
            "click",
            &events[2],
            "adobe_dateclicked",
            Some(("adobe_trackingurl", "https://example.com/offer")),
        ),
        (
            "adobe_emailbounce",
            "bounce",
            &events[3],
            "adobe_datebounced",
            Some(("adobe_bouncereason", "User unknown")),
        ),
    ] {
        let rows = sims.dynamics.rows(table);
        assert_eq!(rows.len(), 1, "{lang}: {table}: {rows:?}");
        let mut expected = BTreeMap::from([
            ("activityid".to_string(), json!(event.id)),
            (
                "subject".to_string(),
                json!(format!("Campaign {kind}: Launch")),
            ),
            (date_field.to_string(), json!(event.timestamp)),
            ("_regardingobjectid_value".to_string(), json!(contact)),
        ]);
        if let Some((field, value)) = extra {
            expected.insert(field.to_string(), json!(value));
        }
        assert_eq!(written(&rows[0]), expected, "{lang}: {table}");
    }
}

/// Opt-in/out, bidirectional: a Dynamics 365 opt-out reaches Campaign, a Campaign opt-out
/// reaches Dynamics 365, and Campaign opting back in later wins (the conflict rule).
async fn opt_outs_flow_both_ways(sims: &SimPair, host: &mut HostProcess, lang: &str) {
    host.start("optinout").await;
    host.wait_caught_up("optinout").await;
    let blacklisted = |id: &str| sims.profiles()[id]["blackListEmail"].as_bool();
    // Two contacts opted out on neither side after the first reconciliation.
    let clear: Vec<String> = sims
        .ids("contact", "contactid")
        .into_iter()
        .filter(|id| {
            id != NO_MAIL && sims.donotbulkemail(id) != Some(true) && blacklisted(id) != Some(true)
        })
        .take(2)
        .collect();
    let [from_dynamics, from_campaign] = clear.as_slice() else {
        panic!("{lang}: two contacts without opt-outs: {clear:?}");
    };
    sims.set_donotbulkemail(from_dynamics, true);
    wait_for(
        &format!("{lang}: Dynamics 365's opt-out in Campaign"),
        60,
        || blacklisted(from_dynamics) == Some(true),
    )
    .await;
    sims.campaign
        .set_opt_out(from_campaign, "blackListEmail", true)
        .unwrap();
    sims.campaign.drop_opt_out_export().unwrap();
    wait_for(
        &format!("{lang}: Campaign's opt-out in Dynamics 365"),
        60,
        || sims.donotbulkemail(from_campaign) == Some(true),
    )
    .await;
    sims.campaign
        .set_opt_out(from_campaign, "blackListEmail", false)
        .unwrap();
    sims.campaign.drop_opt_out_export().unwrap();
    wait_for(
        &format!("{lang}: Campaign's later opt-in in Dynamics 365"),
        60,
        || sims.donotbulkemail(from_campaign) == Some(false),
    )
    .await;
    let view = host.wait_caught_up("optinout").await;
    assert_eq!(view["counters"]["dead_letters"], 0, "{lang}: {view}");
    assert_eq!(blacklisted(from_dynamics), Some(true), "{lang}");
    assert_eq!(sims.donotbulkemail(from_dynamics), Some(true), "{lang}");
}

#[test]
fn new_refuses_a_bad_name_a_bad_language_and_an_existing_folder() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_str().unwrap();
    let bad = conduit(&["plugin", "new", "Bad_Name", "--dir", dir]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid plugin name `Bad_Name`"));
    let bad = conduit(&["plugin", "new", "ok", "--lang", "cobol", "--dir", dir]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown language `cobol`"));
    succeed(&["plugin", "new", "twice", "--dir", dir]);
    let again = conduit(&["plugin", "new", "twice", "--dir", dir]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn build_outside_a_plugin_project_says_so() {
    let work = tempfile::tempdir().unwrap();
    let output = conduit(&["plugin", "build", work.path().to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a plugin project"));
}

#[test]
fn the_tools_pins_are_the_polyglot_scripts() {
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/examples/build-polyglot.sh"),
    )
    .unwrap();
    let tools = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src/cli/plugin_kit/tools.rs"),
    )
    .unwrap();
    for pin in ["COMPONENTIZE_JS", "COMPONENTIZE_PY"] {
        let in_script = script
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{pin}=")))
            .unwrap();
        assert!(
            tools.contains(&format!("pub const {pin}: &str = \"{in_script}\";")),
            "{pin}: build-polyglot.sh pins {in_script}"
        );
    }
}
