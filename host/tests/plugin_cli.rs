//! `conduit plugin test`: runs a plugin on sample input and prints outcomes as JSON, with clear
//! errors for a file that is not a component, a wrong world and a bad settings section.

use std::path::Path;
use std::process::{Command, Output};

fn conduit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conduit"))
        .args(args)
        .output()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

const SETTINGS: &str = r#"
[ingress.contacts]
name = "contacts"
source = "contact"
destination = "profile"
key = { source = "contactid", destination = "externalId" }
fields = [{ source = "firstname", destination = "firstName" }]
"#;

const INPUT: &str = r#"{"phase": "initial", "table": "contact", "columns": ["firstname"],
  "rows": [{"key": "c-1", "op": "upsert", "values": [{"type": "text", "value": "Ada"}], "modified_at": null}]}"#;

#[test]
fn plugin_test_prints_the_outcomes_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let settings = write(dir.path(), "settings.toml", SETTINGS);
    let input = write(dir.path(), "input.json", INPUT);
    let output = conduit(&[
        "plugin",
        "test",
        "builtin:table-mapper",
        "--settings",
        &settings,
        "--section",
        "ingress.contacts",
        "--input",
        &input,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let outcomes: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcomes[0]["outcome"], "write");
    assert_eq!(outcomes[0]["records"][0]["key"], "c-1");
    assert_eq!(outcomes[0]["records"][0]["target"]["table"], "profile");
    assert_eq!(outcomes[0]["records"][0]["fields"][0][0], "firstName");
}

#[test]
fn plugin_test_explains_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let settings = write(dir.path(), "settings.toml", SETTINGS);
    let bad_settings = write(
        dir.path(),
        "bad.toml",
        "[contacts]\nname = \"contacts\"\ncolour = 1\n",
    );
    let input = write(dir.path(), "input.json", INPUT);
    let not_component = write(dir.path(), "plugin.wasm", "definitely not wasm");
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec![
                "plugin",
                "test",
                &not_component,
                "--settings",
                &settings,
                "--input",
                &input,
            ],
            "not a WebAssembly file",
        ),
        (
            vec![
                "plugin",
                "test",
                "builtin:opt-out",
                "--settings",
                &settings,
                "--section",
                "ingress.contacts",
                "--input",
                &input,
            ],
            "does not implement the record-mapper world",
        ),
        (
            vec![
                "plugin",
                "test",
                "builtin:table-mapper",
                "--settings",
                &settings,
                "--section",
                "ingress.accounts",
                "--input",
                &input,
            ],
            "no section `ingress.accounts`",
        ),
        (
            vec![
                "plugin",
                "test",
                "builtin:table-mapper",
                "--settings",
                &bad_settings,
                "--section",
                "contacts",
                "--input",
                &input,
            ],
            "rejected its settings",
        ),
    ];
    for (args, expected) in cases {
        let output = conduit(&args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
