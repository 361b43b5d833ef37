//! The plugin kit end to end through the binary: `conduit plugin new` for each world, then
//! `conduit plugin build`, `conduit plugin test` on the sample input, and the crate's own
//! unit test.

use std::path::Path;
use std::process::{Command, Output};

fn conduit(args: &[&str], target_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conduit"))
        .args(args)
        // One target folder for every scaffolded crate, kept between runs, so the SDK's
        // dependencies compile once.
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .unwrap()
}

fn succeed(args: &[&str], target_dir: &Path) -> String {
    let output = conduit(args, target_dir);
    assert!(
        output.status.success(),
        "conduit {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn new_then_build_then_test_passes_for_every_world() {
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-kit");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_str().unwrap();
    for (world, expected) in [
        ("record-mapper", ["write", "skip"].as_slice()),
        ("event-mapper", ["write"].as_slice()),
        ("opt-out-resolver", ["write"].as_slice()),
    ] {
        let name = format!("my-{world}");
        let created = succeed(
            &["plugin", "new", &name, "--world", world, "--dir", dir],
            &target_dir,
        );
        assert!(created.contains("conduit plugin build"), "{created}");
        let root = work.path().join(&name);
        let root = root.to_str().unwrap();
        let built = succeed(&["plugin", "build", root], &target_dir);
        assert!(built.contains(&format!("{name}.wasm")), "{built}");
        let outcomes = succeed(
            &[
                "plugin",
                "test",
                &format!("{root}/{name}.wasm"),
                "--world",
                world,
                "--settings",
                &format!("{root}/sample/settings.toml"),
                "--input",
                &format!("{root}/sample/input.json"),
                "--json",
            ],
            &target_dir,
        );
        let outcomes: serde_json::Value = serde_json::from_str(&outcomes).unwrap();
        let kinds: Vec<&str> = outcomes
            .as_array()
            .unwrap()
            .iter()
            .map(|outcome| outcome["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, expected, "{world}: {outcomes}");
        // The crate's own unit test, natively, as its author runs it.
        let tested = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["test", "--manifest-path"])
            .arg(format!("{root}/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target_dir)
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
fn new_refuses_a_bad_name_and_an_existing_folder() {
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-kit");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_str().unwrap();
    let bad = conduit(&["plugin", "new", "Bad_Name", "--dir", dir], &target_dir);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid plugin name `Bad_Name`"));
    succeed(&["plugin", "new", "twice", "--dir", dir], &target_dir);
    let again = conduit(&["plugin", "new", "twice", "--dir", dir], &target_dir);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn build_outside_a_plugin_crate_says_so() {
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-kit");
    let work = tempfile::tempdir().unwrap();
    let output = conduit(
        &["plugin", "build", work.path().to_str().unwrap()],
        &target_dir,
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a plugin crate"));
}
