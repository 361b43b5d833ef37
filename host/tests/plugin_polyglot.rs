//! The JavaScript (componentize-js) and Python (componentize-py) example plugins: builds
//! them with `plugins/examples/build-polyglot.sh` (pinned tools from npm and PyPI, cached under
//! the target folder) and checks that through the host they map the sample contacts exactly
//! as the Rust example plugin does.

use std::path::{Path, PathBuf};
use std::process::Command;

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

#[test]
fn javascript_and_python_plugins_map_contacts_exactly_like_the_rust_one() {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("polyglot-tools");
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
    let rust = run_plugin(&Path::new(env!("CONDUIT_PLUGIN_FIXTURES")).join("contact_mapper.wasm"));
    let kinds: Vec<&str> = rust
        .as_array()
        .unwrap()
        .iter()
        .map(|outcome| outcome["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["write", "skip", "reject", "write"]);
    for component in ["contact_mapper_js.wasm", "contact_mapper_py.wasm"] {
        assert_eq!(run_plugin(&out.path().join(component)), rust, "{component}");
    }
}
