//! The JavaScript (componentize-js) and Python (componentize-py) example plugins: builds
//! them with `plugins/examples/build-polyglot.sh` (pinned tools from npm and PyPI, cached under
//! the target folder) and checks that through the host they map the sample contacts exactly
//! as the Rust example plugin does; and that a thrown JavaScript `Error` and a raised Python
//! exception reach `conduit plugin test` as their message (the hostile JS/Python fixtures).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

// The machine-wide install lock shared with every test binary (this test uses part of it).
#[allow(dead_code)]
#[path = "../../tests/support/install.rs"]
mod install;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/examples")
}

fn run_plugin(component: &Path) -> serde_json::Value {
    let sample = examples().join("contact-mapper/sample");
    let output = Command::new(env!("CARGO_BIN_EXE_conduit"))
        .arg("plugin")
        .arg("test")
        .arg(component)
        .arg("--settings")
        .arg(sample.join("settings.toml"))
        .arg("--input")
        .arg(sample.join("input.json"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        component.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The folder holding the built JavaScript and Python components (built once per run).
fn built() -> &'static Path {
    static BUILT: OnceLock<tempfile::TempDir> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conduit-tools");
            let out = tempfile::tempdir().unwrap();
            // The script installs its tools from npm and PyPI on first use: one run at a time.
            let lock = install::lock();
            let built = Command::new("bash")
                .arg(examples().join("build-polyglot.sh"))
                .arg(&cache)
                .arg(out.path())
                .output()
                .unwrap();
            drop(lock);
            assert!(
                built.status.success(),
                "build-polyglot.sh failed (needs node/npm and python3):\n{}",
                String::from_utf8_lossy(&built.stderr)
            );
            out
        })
        .path()
}

#[test]
fn javascript_and_python_plugins_map_contacts_exactly_like_the_rust_one() {
    let out = built();
    let rust = run_plugin(&Path::new(env!("CONDUIT_PLUGIN_FIXTURES")).join("contact_mapper.wasm"));
    let kinds: Vec<&str> = rust
        .as_array()
        .unwrap()
        .iter()
        .map(|outcome| outcome["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["write", "skip", "reject", "write"]);
    for component in ["contact_mapper_js.wasm", "contact_mapper_py.wasm"] {
        assert_eq!(run_plugin(&out.join(component)), rust, "{component}");
    }
}

#[test]
fn a_thrown_javascript_error_and_a_python_exception_reach_plugin_test_as_their_message() {
    let out = built();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        r#"{"phase": "initial", "table": "contact", "columns": ["firstname"],
  "rows": [{"key": "c-1", "op": "upsert", "values": [{"type": "text", "value": "Ada"}], "modified_at": null}]}"#,
    )
    .unwrap();
    let cases = [
        (
            "hostile_js.wasm",
            "throw-in-map",
            "failed the batch: TypeError: the hostile JS fixture throws on purpose (1 rows)",
        ),
        (
            "hostile_js.wasm",
            "throw-in-configure",
            "rejected its settings: RangeError: the hostile JS fixture throws in configure on purpose",
        ),
        (
            "hostile_py.wasm",
            "raise-in-map",
            "KeyError: 'the hostile Python fixture raises on purpose (1 rows)'",
        ),
        (
            "hostile_py.wasm",
            "raise-in-configure",
            "ValueError: the hostile Python fixture raises in configure on purpose",
        ),
    ];
    for (component, mode, says) in cases {
        let settings = dir.path().join("settings.toml");
        std::fs::write(&settings, format!("mode = \"{mode}\"\n")).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_conduit"))
            .args(["plugin", "test", "--quiet"])
            .arg(out.join(component))
            .arg("--settings")
            .arg(&settings)
            .arg("--input")
            .arg(&input)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{component} {mode}: {stderr}"
        );
        let error = stderr
            .lines()
            .find(|line| line.starts_with("error:"))
            .unwrap_or_default();
        // The message is in the error itself (the trap reason), not only in the log.
        assert!(stderr.contains(says), "{component} {mode}: {stderr}");
        assert!(!error.is_empty(), "{component} {mode}: {stderr}");
    }
}
