//! `conduit plugin test`: runs a plugin on sample input and prints outcomes as a table or JSON,
//! with clear errors for a file that is not a component, a wrong world and a bad settings
//! section; detects the world; takes settings from a config's mapping or workflow; compares
//! with an expected file; maps a batch the plugin fails on record by record; shows the
//! plugin's log lines and stdout/stderr on stderr (unless `--quiet`); and runs the whole
//! hostile catalogue with a clean exit, a capped message and a bounded peak RSS. Also
//! `conduit config check` loading every plugin, and `dlq show --as-input` files.

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
        "--json",
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
fn plugins_run_where_the_address_space_is_capped() {
    // The pooling allocator reserves hundreds of GiB of address space up front; under a cap
    // (`ulimit -v`, as some containers and valgrind impose) the engine allocates on demand.
    let dir = tempfile::tempdir().unwrap();
    let settings = write(dir.path(), "settings.toml", SETTINGS);
    let input = write(dir.path(), "input.json", INPUT);
    let output = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 8388608 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_conduit"))
        .args(["plugin", "test", "builtin:table-mapper", "--settings"])
        .arg(&settings)
        .args(["--section", "ingress.contacts", "--input"])
        .arg(&input)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let outcomes: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcomes[0]["records"][0]["key"], "c-1");
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
                "--world",
                "record-mapper",
                "--settings",
                &settings,
                "--section",
                "ingress.contacts",
                "--input",
                &input,
            ],
            "does not implement the record-mapper world: it is an opt-out-resolver component",
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
        .args(["--input", &input, "--json"])
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

/// A config with an Ingress mapping (deletes not applied) and Egress (opens switched off),
/// plus `extra` appended; the plugins are the builtins unless `extra` says otherwise.
fn config_text(ingress_plugin: &str, extra: &str) -> String {
    format!(
        r#"[host]
data_dir = "data"

[dynamics]
url = "https://org.api.crm.dynamics.com/"
token_url = "https://login.microsoftonline.com/t/oauth2/v2.0/token"
client_id = "app"
client_secret_env = "D365_SECRET"

[campaign]
url = "https://mc.adobe.io/acme/campaign"
client_id = "key"
client_secret_env = "ACS_SECRET"
journal_url = "https://events.adobe.io/journal"

[ingress]
plugin = "{ingress_plugin}"

[[ingress.mappings]]
name = "contacts"
source = "contact"
destination = "profile"
key = {{ source = "contactid", destination = "externalId" }}
fields = [{{ source = "firstname", destination = "firstName" }}]
apply_deletes = false
{extra}"#
    )
}

const EGRESS: &str = r#"
[egress]
send = true
open = false
"#;

/// Two rows: an upsert of Ada and a delete.
const ROWS: &str = r#"{"phase": "incremental", "table": "contact", "columns": ["firstname"],
  "rows": [{"key": "c-1", "op": "upsert", "values": [{"type": "text", "value": "Ada"}], "modified_at": null},
           {"key": "c-2", "op": "delete", "values": [{"type": "null"}], "modified_at": null}]}"#;

fn event(id: &str, kind: &str) -> String {
    format!(
        r#"{{"id": "{id}", "kind": "{kind}", "contact_key": "c-1", "campaign_id": "cmp", "campaign_name": "Spring",
            "delivery_id": "d", "delivery_name": "D", "timestamp": "2026-01-01T00:00:00Z",
            "url": null, "mirror_page_url": null, "bounce": null}}"#
    )
}

fn json_of(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{error}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn plugin_test_detects_the_world_and_names_it_when_another_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let settings = write(dir.path(), "settings.toml", "mode = \"chatty\"");
    let input = write(dir.path(), "input.json", &contacts(1));
    let fixture = hostile_fixture();
    let run = |world: &[&str]| {
        let mut args = vec![
            "plugin",
            "test",
            fixture.as_str(),
            "--settings",
            &settings,
            "--input",
            &input,
            "--json",
            "--quiet",
        ];
        args.extend_from_slice(world);
        conduit(&args)
    };
    // No --world: the component is a record-mapper, which maps the record input.
    let detected = run(&[]);
    assert!(detected.status.success(), "{}", stderr_of(&detected));
    assert_eq!(json_of(&detected).as_array().unwrap().len(), 1);
    let right = run(&["--world", "record-mapper"]);
    assert!(right.status.success(), "{}", stderr_of(&right));
    let wrong = run(&["--world", "event-mapper"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr_of(&wrong)
            .contains("does not implement the event-mapper world: it is a record-mapper component"),
        "{}",
        stderr_of(&wrong)
    );
}

#[test]
fn plugin_test_takes_the_settings_the_engine_gives_from_a_mapping_or_a_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "conduit.toml",
        &config_text("builtin:table-mapper", EGRESS),
    );
    let rows = write(dir.path(), "rows.json", ROWS);
    // The plugin comes from the config too; the mapping's fields and apply_deletes apply.
    let mapped = conduit(&[
        "plugin",
        "test",
        "--config",
        &config,
        "--mapping",
        "contacts",
        "--input",
        &rows,
        "--json",
    ]);
    assert!(mapped.status.success(), "{}", stderr_of(&mapped));
    let outcomes = json_of(&mapped);
    assert_eq!(outcomes[0]["records"][0]["fields"][0][0], "firstName");
    assert_eq!(outcomes[0]["records"][0]["target"]["table"], "profile");
    assert_eq!(outcomes[1]["outcome"], "skip", "{outcomes}");
    // The same plugin with apply_deletes at its default deletes: the config's value counted.
    let settings = write(
        dir.path(),
        "settings.toml",
        &SETTINGS.replace("[ingress.contacts]", "[contacts]"),
    );
    let defaults = json_of(&conduit(&[
        "plugin",
        "test",
        "builtin:table-mapper",
        "--settings",
        &settings,
        "--section",
        "contacts",
        "--input",
        &rows,
        "--json",
    ]));
    assert_eq!(defaults[1]["records"][0]["op"], "delete", "{defaults}");

    let events = write(
        dir.path(),
        "events.json",
        &format!("[{}, {}]", event("e-1", "send"), event("e-2", "open")),
    );
    let egress = conduit(&[
        "plugin",
        "test",
        "--config",
        &config,
        "--workflow",
        "egress",
        "--input",
        &events,
        "--json",
    ]);
    assert!(egress.status.success(), "{}", stderr_of(&egress));
    let outcomes = json_of(&egress);
    assert_eq!(outcomes[0]["outcome"], "write", "{outcomes}");
    assert_eq!(outcomes[1]["outcome"], "skip", "{outcomes}");
    assert!(
        outcomes[1]["reason"]
            .as_str()
            .unwrap()
            .contains("switched off")
    );

    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec!["--mapping", "leads", "--input", &rows],
            "no Ingress table mapping named 'leads' (it has: contacts)",
        ),
        (
            vec![
                "builtin:table-mapper",
                "--workflow",
                "egress",
                "--input",
                &events,
            ],
            "is a record-mapper component, but the egress workflow needs an event-mapper plugin",
        ),
        (
            vec!["--workflow", "optinout", "--input", &events],
            "the optinout workflow is not configured",
        ),
    ];
    for (extra, says) in cases {
        let mut args = vec!["plugin", "test", "--config", &config];
        args.extend(extra);
        let output = conduit(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr_of(&output).contains(says),
            "{args:?}: {}",
            stderr_of(&output)
        );
    }
}

#[test]
fn plugin_test_prints_a_table_by_default_and_checks_an_expected_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "conduit.toml",
        &config_text("builtin:table-mapper", ""),
    );
    let rows = write(dir.path(), "rows.json", ROWS);
    let base = [
        "plugin",
        "test",
        "--config",
        &config,
        "--mapping",
        "contacts",
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(&["--input", &rows]);
        args.extend_from_slice(extra);
        conduit(&args)
    };
    let table = with(&[]);
    assert!(table.status.success(), "{}", stderr_of(&table));
    let text = stdout_of(&table);
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_err(),
        "{text}"
    );
    assert!(text.contains("OUTCOME"), "{text}");
    let first = text.lines().find(|l| l.contains("c-1")).unwrap();
    assert!(
        first.contains("write") && first.contains("profile") && first.contains("firstName=\"Ada\""),
        "{first}"
    );
    let second = text.lines().find(|l| l.contains("c-2")).unwrap();
    assert!(second.contains("skip"), "{second}");
    assert!(
        text.contains("2 inputs: 1 write (1 record), 1 skip, 0 rejects, 0 failed"),
        "{text}"
    );

    let expected = stdout_of(&with(&["--json"]));
    let expected_path = write(dir.path(), "expected.json", &expected);
    let matches = with(&["--expect", &expected_path]);
    assert!(matches.status.success(), "{}", stderr_of(&matches));
    assert!(
        stdout_of(&matches).contains("matches"),
        "{}",
        stdout_of(&matches)
    );

    let wrong = expected.replace("\"Ada\"", "\"Bob\"");
    assert_ne!(wrong, expected);
    let wrong_path = write(dir.path(), "wrong.json", &wrong);
    let differs = with(&["--expect", &wrong_path, "--quiet"]);
    assert_eq!(differs.status.code(), Some(1));
    let report = stderr_of(&differs);
    assert!(report.contains("record 1 (key c-1):"), "{report}");
    assert!(
        report.contains("records[0].fields.firstName.value: expected \"Bob\", got \"Ada\""),
        "{report}"
    );
    assert!(!report.contains("record 2"), "{report}");
}

#[test]
fn plugin_test_maps_a_failing_batch_record_by_record_as_the_engine_does() {
    let dir = tempfile::tempdir().unwrap();
    let settings = write(
        dir.path(),
        "settings.toml",
        "mode = \"trap-on-value\"\ntrap_value = \"POISON\"\ncopy_columns = \"firstname:firstName\"\npoison_action = \"panic\"\n",
    );
    let input = contacts(3).replace("name 1", "POISON");
    let input = write(dir.path(), "input.json", &input);
    let fixture = hostile_fixture();
    let args = [
        "plugin",
        "test",
        fixture.as_str(),
        "--settings",
        &settings,
        "--input",
        &input,
    ];
    let table = conduit(&args);
    assert_eq!(table.status.code(), Some(1), "{}", stderr_of(&table));
    let text = stdout_of(&table);
    for (key, outcome) in [("c-0", "write"), ("c-1", "FAILED"), ("c-2", "write")] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!(" {key} ")))
            .unwrap_or_else(|| panic!("no line for {key}:\n{text}"));
        assert!(line.contains(outcome), "{line}");
    }
    assert!(
        text.contains("#2 c-1: the plugin failed on this record"),
        "{text}"
    );
    let stderr = stderr_of(&table);
    assert!(stderr.contains("each record was mapped alone"), "{stderr}");
    assert!(stderr.contains("failed on 1 of 3 records"), "{stderr}");

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let outcomes = json_of(&conduit(&json_args));
    assert_eq!(outcomes[0]["outcome"], "write");
    assert_eq!(outcomes[1]["outcome"], "failed");
    assert!(
        outcomes[1]["error"]
            .as_str()
            .unwrap()
            .contains("poison record c-1"),
        "{outcomes}"
    );
    assert_eq!(outcomes[2]["records"][0]["key"], "c-2");
}

/// Where `needle` starts in `text`, as `line:column` (1-based).
fn position(text: &str, needle: &str) -> String {
    let offset = text.find(needle).unwrap();
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map_or(0, |n| n + 1) + 1;
    format!("{line}:{column}")
}

#[test]
fn config_check_loads_and_configures_every_plugin_and_locates_each_failure() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = hostile_fixture();
    let check = |text: &str| {
        let config = write(dir.path(), "conduit.toml", text);
        let output = conduit(&["--config", &config, "config", "check"]);
        (config, output)
    };
    let (_, valid) = check(&config_text("builtin:table-mapper", EGRESS));
    assert!(valid.status.success(), "{}", stdout_of(&valid));
    assert!(stdout_of(&valid).contains("every plugin loads"));

    // A record-mapper component as the Egress plugin: the wrong world, at its `plugin` key.
    let text = config_text(
        "builtin:table-mapper",
        &format!("{EGRESS}plugin = \"{fixture}\"\n"),
    );
    let (config, wrong_world) = check(&text);
    assert_eq!(wrong_world.status.code(), Some(4));
    let at = position(&text, &format!("\"{fixture}\""));
    let report = stdout_of(&wrong_world);
    assert!(
        report.contains(&format!(
            "{config}:{at}: plugin {fixture} does not implement the event-mapper world"
        )) && report.contains("it is a record-mapper component"),
        "{report}"
    );

    // An opt-out-resolver component as the Ingress plugin: caught here, not at start.
    let opt_out = Path::new(env!("CONDUIT_PLUGIN_FIXTURES"))
        .join("../builtins/opt_out.wasm")
        .to_string_lossy()
        .into_owned();
    let text = config_text(&opt_out, "");
    let (config, wrong_world) = check(&text);
    assert_eq!(wrong_world.status.code(), Some(4));
    let at = position(&text, &format!("\"{opt_out}\""));
    let report = stdout_of(&wrong_world);
    assert!(
        report.contains(&format!(
            "{config}:{at}: plugin {opt_out} does not implement the record-mapper world"
        )) && report.contains("opt-out-resolver component"),
        "{report}"
    );

    // A missing component, at its `plugin` key.
    let text = config_text("missing.wasm", "");
    let (config, missing) = check(&text);
    assert_eq!(missing.status.code(), Some(4));
    let at = position(&text, "\"missing.wasm\"");
    assert!(
        stdout_of(&missing).contains(&format!(
            "{config}:{at}: the plugin file 'missing.wasm' does not exist"
        )),
        "{}",
        stdout_of(&missing)
    );

    // A plugin whose configure refuses the mapping's settings, at the mapping's name.
    let text = config_text(&fixture, "settings = { mode = \"no-such-mode\" }\n");
    let (config, refused) = check(&text);
    assert_eq!(refused.status.code(), Some(4));
    let at = position(&text, "\"contacts\"");
    let report = stdout_of(&refused);
    assert!(
        report.contains(&format!("{config}:{at}: mapping 'contacts': plugin {fixture} rejected its settings: invalid setting `mode`")),
        "{report}"
    );
}
