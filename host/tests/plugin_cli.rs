//! `conduit plugin test`: runs a plugin on sample input and prints outcomes as JSON, with clear
//! errors for a file that is not a component, a wrong world and a bad settings section; shows
//! the plugin's log lines and stdout/stderr on stderr (unless `--quiet`); and runs the whole
//! hostile catalogue with a clean exit, a capped message and a bounded peak RSS.

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

/// An input of `rows` contacts for the hostile fixture.
fn contacts(rows: usize) -> String {
    let rows: Vec<String> = (0..rows)
        .map(|i| {
            format!(
                r#"{{"key": "c-{i}", "op": "upsert", "values": [{{"type": "text", "value": "name {i}"}}], "modified_at": null}}"#
            )
        })
        .collect();
    format!(
        r#"{{"phase": "initial", "table": "contact", "columns": ["firstname"], "rows": [{}]}}"#,
        rows.join(",")
    )
}

fn hostile_fixture() -> String {
    Path::new(env!("CONDUIT_PLUGIN_FIXTURES"))
        .join("fixture_hostile.wasm")
        .to_string_lossy()
        .into_owned()
}

/// What one measured `plugin test` run gave.
struct Measured {
    output: Output,
    peak_rss_bytes: u64,
    seconds: f64,
}

/// Runs `conduit plugin test` on the hostile fixture with `settings` (TOML) on `rows` rows
/// under GNU time, for the peak RSS of the whole process.
fn plugin_test_measured(dir: &Path, settings: &str, rows: usize, extra: &[&str]) -> Measured {
    let settings = write(dir, "settings.toml", settings);
    let input = write(dir, "input.json", &contacts(rows));
    let rss_file = dir.join("rss");
    let started = std::time::Instant::now();
    let output = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(env!("CARGO_BIN_EXE_conduit"))
        .args([
            "plugin",
            "test",
            &hostile_fixture(),
            "--settings",
            &settings,
        ])
        .args(["--input", &input])
        .args(extra)
        .output()
        .expect("GNU time (/usr/bin/time) runs the conduit binary");
    let seconds = started.elapsed().as_secs_f64();
    let rss = std::fs::read_to_string(&rss_file).unwrap();
    let kib: u64 = rss
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {rss:?}"));
    Measured {
        output,
        peak_rss_bytes: kib << 10,
        seconds,
    }
}

#[test]
fn plugin_test_shows_log_lines_stdout_and_stderr_unless_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let shown = plugin_test_measured(dir.path(), "mode = \"chatty\"", 1, &[]).output;
    assert!(shown.status.success());
    let stderr = String::from_utf8_lossy(&shown.stderr);
    for line in [
        "chatty: a log line",
        "chatty: a stdout line",
        "chatty: a stderr line",
    ] {
        let found = stderr
            .lines()
            .find(|shown| shown.contains(line))
            .unwrap_or_else(|| panic!("{line} not on stderr:\n{stderr}"));
        assert!(found.contains("fixture_hostile"), "{found}");
    }
    // stdout holds the outcomes alone, as JSON.
    let outcomes: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(outcomes[0]["outcome"], "skip");
    let quiet = plugin_test_measured(dir.path(), "mode = \"chatty\"", 1, &["--quiet"]).output;
    assert!(quiet.status.success());
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("chatty"),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
}

/// A catalogue case: its name, the settings (TOML), the rows of input, extra arguments,
/// whether `plugin test` succeeds, and what its output says.
type Case<'a> = (&'a str, &'a str, usize, &'a [&'a str], bool, &'a str);

#[test]
fn the_hostile_catalogue_through_plugin_test_exits_cleanly_with_capped_messages_in_bounded_memory()
{
    let cases: [Case; 12] = [
        (
            "stdout flood (64 MiB)",
            r#"mode = "stdout-flood""#,
            3,
            &["--deadline-ms", "20000"],
            true,
            "were dropped (67108864 in all",
        ),
        (
            "stderr flood (64 MiB)",
            r#"mode = "stderr-flood""#,
            3,
            &["--deadline-ms", "20000"],
            true,
            "were dropped (67108864 in all",
        ),
        (
            "panic in map",
            r#"mode = "panic""#,
            3,
            &[],
            false,
            "panics on purpose",
        ),
        (
            "panic in configure",
            r#"mode = "panic-in-configure""#,
            3,
            &[],
            false,
            "panics in configure on purpose",
        ),
        (
            "trap in configure",
            r#"mode = "trap-in-configure""#,
            3,
            &[],
            false,
            "unreachable",
        ),
        (
            "allocation failure",
            r#"mode = "alloc-fail""#,
            3,
            &[],
            false,
            "memory cap",
        ),
        (
            "amplified column name",
            r#"mode = "amplify-columns""#,
            200,
            &[],
            false,
            "counting every copy",
        ),
        (
            "amplified target",
            r#"mode = "amplify-targets""#,
            200,
            &[],
            false,
            "counting every copy",
        ),
        (
            "60 MB configure error",
            r#"mode = "fail-in-configure"
error_bytes = "60000000""#,
            3,
            &["--memory-mb", "256"],
            false,
            "[truncated, 60000000 bytes in all]",
        ),
        (
            "100 MB map error",
            r#"mode = "giant-error"
error_bytes = "100000000""#,
            3,
            &["--memory-mb", "256"],
            false,
            "[truncated, 100000000 bytes in all]",
        ),
        (
            "1 MiB reject reasons",
            r#"mode = "giant-reject""#,
            3,
            &[],
            true,
            "[truncated, 1048575 bytes in all]",
        ),
        (
            "stdin read and UDP bind",
            r#"mode = "stdio-probe""#,
            1,
            &[],
            true,
            "stdin=read 0 bytes udp=denied",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (case, settings, rows, extra, succeeds, says) in cases {
        let measured = plugin_test_measured(dir.path(), settings, rows, extra);
        let output = &measured.output;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let code = output.status.code();
        println!(
            "| {case} | exit {} | peak RSS {} MiB | {:.1} s | stdout {} B, stderr {} B |",
            code.unwrap_or(-1),
            measured.peak_rss_bytes >> 20,
            measured.seconds,
            stdout.len(),
            stderr.len()
        );
        assert_eq!(
            code,
            Some(if succeeds { 0 } else { 1 }),
            "{case}: {stderr:.3000}"
        );
        assert!(
            stdout.contains(says) || stderr.contains(says),
            "{case}: neither output says {says}:\n{stdout:.2000}\n{stderr:.2000}"
        );
        assert!(
            stdout.len() + stderr.len() < 512 << 10,
            "{case}: printed {} bytes",
            stdout.len() + stderr.len()
        );
        assert!(
            measured.peak_rss_bytes < 512 << 20,
            "{case}: peak RSS {} MiB",
            measured.peak_rss_bytes >> 20
        );
    }
}
