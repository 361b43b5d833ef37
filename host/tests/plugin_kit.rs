//! The plugin kit end to end through the binary, in Rust, JavaScript and Python: `conduit
//! plugin new` for each world, `conduit plugin build`, and `conduit plugin test` on the
//! project's sample, whose output must equal the project's `sample/expected.json`; the Rust
//! crate's own unit test; own settings the plugin does not know are refused by name; and no
//! generated file depends on this checkout (the SDK is written into the project).
//!
//! The componentize tools install once into `<target>/tmp/conduit-tools` (shared with
//! `plugin_polyglot.rs` and kept between runs), under the tools folder's own lock.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WORLDS: [&str; 3] = ["record-mapper", "event-mapper", "opt-out-resolver"];

/// The folder shared by every test run: scaffolded Rust crates' target folder and the tools.
fn shared(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn conduit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conduit"))
        .args(args)
        // One target folder for every scaffolded crate, kept between runs, so the SDK's
        // dependencies compile once.
        .env("CARGO_TARGET_DIR", shared("plugin-kit"))
        .env("CONDUIT_TOOLS_DIR", shared("conduit-tools"))
        .output()
        .unwrap()
}

fn succeed(args: &[&str]) -> String {
    let output = conduit(args);
    assert!(
        output.status.success(),
        "conduit {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
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

/// Scaffolds, builds and tests one project; returns its folder and component.
fn new_build_test(work: &Path, lang: &str, world: &str) -> (PathBuf, PathBuf) {
    let name = format!("my-{lang}-{world}");
    let dir = work.to_str().unwrap();
    let created = succeed(&[
        "plugin", "new", &name, "--world", world, "--lang", lang, "--dir", dir,
    ]);
    assert!(created.contains("conduit plugin build"), "{created}");
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
    assert!(
        created.contains("--expect"),
        "plugin new prints the checking command: {created}"
    );
    let expected = std::fs::read_to_string(root.join("sample/expected.json")).unwrap();
    let printed: serde_json::Value = serde_json::from_str(&printed).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&expected).unwrap();
    assert_eq!(printed, expected, "{lang} {world}");
    (root, component)
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

#[test]
fn rust_projects_of_every_world_build_and_print_their_expected_output() {
    let work = tempfile::tempdir().unwrap();
    for world in WORLDS {
        let (root, component) = new_build_test(work.path(), "rust", world);
        a_typo_in_the_own_settings_is_refused_by_name(&root, &component, world);
        // The crate's own unit test, natively, as its author runs it.
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
}

#[test]
fn javascript_projects_of_every_world_build_and_print_their_expected_output() {
    let work = tempfile::tempdir().unwrap();
    for world in WORLDS {
        let (root, component) = new_build_test(work.path(), "js", world);
        a_typo_in_the_own_settings_is_refused_by_name(&root, &component, world);
    }
}

#[test]
fn python_projects_of_every_world_build_and_print_their_expected_output() {
    let work = tempfile::tempdir().unwrap();
    for world in WORLDS {
        let (root, component) = new_build_test(work.path(), "python", world);
        a_typo_in_the_own_settings_is_refused_by_name(&root, &component, world);
    }
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
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli/plugin_kit/tools.rs"),
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
