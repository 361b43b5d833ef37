//! The operator CLI through the real binary: `config check` on every kind of problem, the
//! commands that drive a running host (status, start, stop, replay, dlq), the admin token,
//! completions, exit codes, and hot edits of the config while workflows run.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use conduit_e2e::{
    CliOutput, EGRESS, INGRESS_CONTACTS, INGRESS_VEHICLES, SimPair, builtin_plugin_file, cli,
    conduit_binary, hostile_fixture_file,
};
use conduit_sim::campaign::{FieldChange, FieldType};
use serde_json::{Map, Value, json};

/// A contact id the simulator accepts, distinct from the seeded ones.
fn contact_id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// A config for `config check` only (nothing listens on these addresses).
fn offline_config(workflows: &str) -> String {
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
ims_url = "https://ims-na1.adobelogin.com/ims/token/v3"
client_id = "key"
client_secret_env = "ACS_SECRET"
journal_url = "https://events.adobe.io/journal"
opt_out_exports = "exports"

{workflows}"#
    )
}

fn check(dir: &Path, text: &str) -> CliOutput {
    let path = dir.join("conduit.toml");
    std::fs::write(&path, text).unwrap();
    cli(&path, &["config", "check"], &[])
}

/// Asserts that `config check` exits 4 and reports `message` at a position whose line holds
/// `at`, with a hint.
fn assert_problem(text: &str, message: &str, at: &str) {
    let dir = tempfile::tempdir().unwrap();
    let output = check(dir.path(), text);
    assert_eq!(output.code, 4, "{output}");
    let path = dir.path().join("conduit.toml");
    let prefix = format!("{}:", path.display());
    let line = output
        .stdout
        .lines()
        .find(|l| l.contains(message))
        .unwrap_or_else(|| panic!("no problem saying {message:?}:\n{output}"));
    let position = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("the problem does not start with the file: {line}"));
    let mut parts = position.splitn(3, ':');
    let row: usize = parts.next().unwrap().parse().expect("a line number");
    let column: usize = parts.next().unwrap().parse().expect("a column number");
    assert!(column >= 1, "{line}");
    let source_line = text.lines().nth(row - 1).unwrap_or("");
    assert!(
        source_line.contains(at),
        "{line} points at line {row}: {source_line:?}, expected one holding {at:?}"
    );
    assert!(line.contains(" (hint: "), "no hint: {line}");
    assert!(output.stderr.contains("problem(s) in"), "{output}");
}

#[test]
fn config_check_accepts_a_valid_config_and_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let output = check(dir.path(), &offline_config(INGRESS_CONTACTS));
    assert_eq!(output.code, 0, "{output}");
    assert!(output.stdout.contains("the config is valid"), "{output}");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conduit.example.toml");
    let output = cli(&example, &["config", "check"], &[]);
    assert_eq!(output.code, 0, "{output}");
}

#[test]
fn config_check_reports_an_unknown_key_with_its_position() {
    let text = offline_config(&EGRESS.replace("click = true", "clik = true"));
    assert_problem(&text, "clik", "clik = true");
}

#[test]
fn config_check_reports_a_wrong_type_with_its_position() {
    let text = offline_config(&EGRESS.replace("click = true", "click = \"yes\""));
    assert_problem(&text, "invalid type", "click = \"yes\"");
}

#[test]
fn config_check_shows_excerpts_with_the_place_underlined_and_lines_in_pipes() {
    let text = offline_config(&EGRESS.replace("click = true", "click = \"yes\""));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conduit.toml");
    std::fs::write(&path, &text).unwrap();
    // stdout is a pipe here: the default is one line per problem, the form scripts read.
    let lines = cli(&path, &["config", "check"], &[]);
    assert_eq!(lines.code, 4, "{lines}");
    assert!(!lines.stdout.contains("-->"), "{lines}");
    let excerpts = cli(&path, &["config", "check", "--format", "excerpts"], &[]);
    assert_eq!(excerpts.code, 4, "{excerpts}");
    let out = &excerpts.stdout;
    assert!(out.starts_with("error: "), "{excerpts}");
    assert!(out.contains("invalid type"), "{excerpts}");
    assert!(
        out.contains(&format!("--> {}:", path.display())),
        "{excerpts}"
    );
    let row = text
        .lines()
        .position(|l| l.contains("click = \"yes\""))
        .unwrap()
        + 1;
    let numbered = format!("{row} | click = \"yes\"");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with(&numbered)),
        "no numbered source line {numbered:?}:\n{excerpts}"
    );
    assert!(out.contains("^^^^^"), "{excerpts}");
    assert!(out.contains("help: "), "{excerpts}");
    assert!(
        !out.contains('\u{1b}'),
        "no colours into a pipe: {excerpts}"
    );
}

#[test]
fn config_check_reports_a_dynamics_table_mapped_twice() {
    let again = INGRESS_VEHICLES.replace("source = \"new_vehicle\"", "source = \"contact\"");
    let text = offline_config(&format!("{INGRESS_CONTACTS}{again}"));
    assert_problem(
        &text,
        "Dynamics 365 table 'contact' is mapped twice",
        "contact",
    );
}

#[test]
fn config_check_reports_a_campaign_resource_mapped_twice() {
    let again =
        INGRESS_VEHICLES.replace("destination = \"cusVehicle\"", "destination = \"profile\"");
    let text = offline_config(&format!("{INGRESS_CONTACTS}{again}"));
    assert_problem(
        &text,
        "Campaign resource 'profile' is mapped twice",
        "profile",
    );
}

#[test]
fn config_check_reports_two_source_fields_onto_one_destination_field() {
    let text = offline_config(&INGRESS_CONTACTS.replace(
        "{ source = \"lastname\", destination = \"lastName\" }",
        "{ source = \"lastname\", destination = \"firstName\" }",
    ));
    assert_problem(
        &text,
        "'firstname' and 'lastname' are both mapped onto the Campaign field 'firstName'",
        "firstName",
    );
}

#[test]
fn config_check_reports_a_plugin_of_the_wrong_world() {
    let text = offline_config(&EGRESS.replace(
        "[egress]\n",
        "[egress]\nplugin = \"builtin:table-mapper\"\n",
    ));
    assert_problem(
        &text,
        "needs a event-mapper plugin",
        "plugin = \"builtin:table-mapper\"",
    );
}

#[test]
fn config_check_reports_a_replacement_on_an_unmapped_field() {
    let text = offline_config(&format!(
        "{INGRESS_CONTACTS}replacements = [{{ field = \"telephone1\", from = \"a\", to = \"b\" }}]\n"
    ));
    assert_problem(
        &text,
        "'telephone1', which is not a mapped field",
        "telephone1",
    );
}

#[test]
fn config_check_of_a_missing_file_exits_4_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = cli(&dir.path().join("nowhere.toml"), &["config", "check"], &[]);
    assert_eq!(output.code, 4, "{output}");
    assert!(output.stderr.contains("nowhere.toml"), "{output}");
}

#[test]
fn run_with_an_invalid_config_exits_4_with_the_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conduit.toml");
    let text = offline_config(&EGRESS.replace("click = true", "clik = true"));
    std::fs::write(&path, &text).unwrap();
    let line = text.lines().position(|l| l == "clik = true").unwrap() + 1;
    let output = cli(&path, &["run"], &[]);
    assert_eq!(output.code, 4, "{output}");
    assert!(
        output
            .stderr
            .contains(&format!("{}:{line}:1:", path.display())),
        "{output}"
    );
    assert!(output.stderr.contains("clik"), "{output}");
}

#[test]
fn completions_for_bash_cover_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let output = cli(
        &dir.path().join("conduit.toml"),
        &["completions", "bash"],
        &[],
    );
    assert_eq!(output.code, 0, "{output}");
    assert!(output.stdout.contains("_conduit()"), "{output}");
    assert!(output.stdout.contains("complete -F _conduit"), "{output}");
    for command in ["status", "dlq", "replay", "completions"] {
        assert!(output.stdout.contains(command), "{command} missing");
    }
}

#[test]
fn a_usage_error_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = cli(&dir.path().join("conduit.toml"), &["stats"], &[]);
    assert_eq!(output.code, 2, "{output}");
    let output = cli(
        &dir.path().join("conduit.toml"),
        &["dlq", "show", "ingress", "one"],
        &[],
    );
    assert_eq!(output.code, 2, "{output}");
}

#[test]
fn an_unreachable_host_exits_5_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // A port this test holds bound but never listens on: no other process can take it, and a
    // connection to it is refused for as long as the socket lives.
    let held = conduit_e2e::unlistened_port();
    let url = format!("http://{}", held.address());
    for args in [
        vec!["status"],
        vec!["start", "ingress"],
        vec!["dlq", "list", "ingress"],
    ] {
        let mut all = vec!["--admin-url", url.as_str()];
        all.extend(args);
        let output = cli(&dir.path().join("conduit.toml"), &all, &[]);
        assert_eq!(output.code, 5, "{output}");
        assert!(
            output.stderr.contains("cannot reach the Conduit host"),
            "{output}"
        );
        assert!(output.stderr.contains("--admin-url"), "{output}");
    }
}

/// Every command keeps its documented exit code when its stdout is closed (`| head`), and none
/// panics: a closed stdout means the reader has seen enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_exits_quietly_with_its_own_code_on_a_closed_stdout() {
    let sims = SimPair::start(0, 0).await;
    sims.write_config(INGRESS_CONTACTS);
    let mut host = sims.spawn(&[]);
    host.wait_healthy().await;
    let config = sims.config_path();
    let invalid = sims.dir.path().join("invalid.toml");
    std::fs::write(&invalid, offline_config("[ingress]\nbogus = 1\n")).unwrap();
    let cases: [(&Path, &[&str], i32); 14] = [
        (&config, &["status"], 0),
        (&config, &["status", "--json"], 0),
        (&config, &["status", "--watch"], 0),
        (&config, &["dlq", "list", "ingress"], 0),
        (&config, &["dlq", "list", "ingress", "--json"], 0),
        (&config, &["dlq", "show", "ingress", "999"], 6),
        (&config, &["start", "ingress"], 0),
        (&config, &["stop", "ingress"], 0),
        (&config, &["config", "check"], 0),
        (&invalid, &["config", "check"], 4),
        (&config, &["completions", "bash"], 0),
        (&config, &["--help"], 0),
        (&config, &["--version"], 0),
        (&config, &["dlq", "list"], 2),
    ];
    for (config, args, code) in cases {
        let output = conduit_e2e::cli_into_closed_pipe(config, args, Duration::from_secs(60));
        assert_eq!(output.code, code, "{args:?}: {output}");
        for noise in ["panicked", "Broken pipe", "backtrace", "failed printing"] {
            assert!(!output.stderr.contains(noise), "{args:?}: {output}");
        }
    }
}

fn json_of(output: &CliOutput) -> Value {
    assert_eq!(output.code, 0, "{output}");
    serde_json::from_str(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_drive_a_running_host() {
    let sims = SimPair::start(5, 0).await;
    let long_name = "Bartholomew-Maximilian-Alexander-Ferdinand";
    let ids: Vec<String> = (1..=2).map(contact_id).collect();
    for id in &ids {
        let mut fields = Map::new();
        fields.insert("firstname".into(), json!(long_name));
        fields.insert("lastname".into(), json!(id));
        sims.dynamics.upsert("contact", id, fields).unwrap();
    }
    sims.write_config(INGRESS_CONTACTS);
    let mut host = sims.spawn(&[]);
    host.wait_healthy().await;

    let output = sims.cli(&["status"]);
    assert_eq!(output.code, 0, "{output}");
    assert!(output.stdout.starts_with("WORKFLOW"), "{output}");
    let row = |output: &CliOutput, id: &str| {
        output
            .stdout
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no {id} row:\n{output}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(row(&output, "ingress")[1], "STOPPED");

    let output = sims.cli(&["start", "ingress"]);
    assert_eq!(output.code, 0, "{output}");
    assert_eq!(output.stdout.trim(), "ingress: STARTING");
    host.wait_workflow("ingress", "two refused writes", |view| {
        view["status"] == "RUNNING"
            && view["counters"]["dead_letters"] == 2
            && view["counters"]["written"] == 5
            && view["backlog"] == 0
    })
    .await;

    let status = json_of(&sims.cli(&["status", "--json"]));
    assert_eq!(status["workflows"][0]["id"], "ingress");
    assert_eq!(status["workflows"][0]["status"], "RUNNING");
    assert_eq!(status["workflows"].as_array().unwrap().len(), 3);
    let output = sims.cli(&["status"]);
    let ingress = row(&output, "ingress");
    assert_eq!(
        (
            ingress[1].as_str(),
            ingress[2].as_str(),
            ingress[3].as_str()
        ),
        ("RUNNING", "0", "2")
    );
    assert_eq!(row(&output, "egress")[1], "STOPPED");

    let output = sims.cli(&["dlq", "list", "ingress"]);
    assert_eq!(output.code, 0, "{output}");
    let rows: Vec<_> = output.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{output}");
    for row in &rows {
        assert!(row.contains("write") && row.contains("contacts"), "{row}");
        assert!(row.contains("too long"), "{row}");
    }
    let letters = json_of(&sims.cli(&["dlq", "list", "ingress", "--json", "--stage", "write"]));
    assert_eq!(letters.as_array().unwrap().len(), 2);
    let letter_ids: Vec<String> = letters
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].to_string())
        .collect();
    let one = json_of(&sims.cli(&["dlq", "list", "ingress", "--json", "--limit", "1"]));
    assert_eq!(one.as_array().unwrap().len(), 1);
    let by_reason = json_of(&sims.cli(&[
        "dlq",
        "list",
        "ingress",
        "--json",
        "--reason",
        "value too long",
        "--origin",
        "contacts",
    ]));
    assert_eq!(by_reason.as_array().unwrap().len(), 2);
    let none = json_of(&sims.cli(&["dlq", "list", "ingress", "--json", "--stage", "read"]));
    assert_eq!(none, json!([]));
    let output = sims.cli(&["dlq", "list", "ingress", "--stage", "sideways"]);
    assert_eq!(output.code, 2, "{output}");
    assert!(
        output.stderr.contains("[possible values: read, write]"),
        "{output}"
    );

    let shown = json_of(&sims.cli(&["dlq", "show", "ingress", &letter_ids[0]]));
    assert_eq!(shown["id"].to_string(), letter_ids[0]);
    assert!(
        shown["reason"].as_str().unwrap().contains("too long"),
        "{shown:#}"
    );
    let output = sims.cli(&["dlq", "show", "ingress", "9999"]);
    assert_eq!(output.code, 6, "{output}");
    // A refused write holds no plugin input.
    let output = sims.cli(&["dlq", "show", "ingress", &letter_ids[0], "--as-input"]);
    assert_eq!(output.code, 1, "{output}");
    assert!(
        output.stderr.contains("nothing to run `plugin test` on"),
        "{output}"
    );

    let output = sims.cli(&["dlq", "drop", "ingress", &letter_ids[0]]);
    assert_eq!(output.code, 0, "{output}");
    assert!(output.stdout.contains("dropped"), "{output}");
    let output = sims.cli(&["dlq", "drop", "ingress", &letter_ids[0]]);
    assert_eq!(output.code, 6, "{output}");

    sims.campaign
        .change_field(
            "profile",
            "firstName",
            FieldChange::Retype(FieldType::String),
        )
        .unwrap();
    let retried = &letters[1];
    let output = sims.cli(&["dlq", "retry", "ingress", &letter_ids[1]]);
    assert_eq!(output.code, 0, "{output}");
    assert!(output.stdout.contains("queued again"), "{output}");
    let delivered = ids
        .iter()
        .find(|id| retried["payload"].to_string().contains(id.as_str()))
        .unwrap()
        .clone();
    conduit_e2e::wait_for("the retried record in Campaign", 60, || {
        sims.campaign
            .find("profile", &delivered)
            .is_some_and(|p| p["firstName"] == long_name)
    })
    .await;

    let output = sims.cli(&["replay", "ingress", "contacts"]);
    assert_eq!(output.code, 0, "{output}");
    assert!(output.stdout.contains("accepted"), "{output}");
    let output = sims.cli(&["replay", "ingress", "contacts"]);
    assert_eq!(output.code, 3, "{output}");
    assert!(output.stderr.contains("already pending"), "{output}");
    let output = sims.cli(&["replay", "ingress", "accounts"]);
    assert_eq!(output.code, 3, "{output}");
    assert!(
        output.stderr.contains("no table mapping named 'accounts'"),
        "{output}"
    );

    let output = sims.cli(&["start", "sideways"]);
    assert_eq!(output.code, 6, "{output}");
    let output = sims.cli(&["start", "optinout"]);
    assert_eq!(output.code, 3, "{output}");
    assert!(output.stderr.contains("[optinout]"), "{output}");

    // --watch redraws the table every second until interrupted.
    let mut watch = Command::new(conduit_binary())
        .arg("--config")
        .arg(sims.config_path())
        .args(["status", "--watch"])
        .env_remove("CONDUIT_ADMIN_URL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    watch.kill().unwrap();
    let mut screens = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut screens)
        .unwrap();
    let _ = watch.wait();
    assert!(screens.matches("\x1b[2J").count() >= 2, "{screens:?}");
    assert!(screens.matches("WORKFLOW").count() >= 2, "{screens:?}");

    let output = sims.cli(&["stop", "ingress"]);
    assert_eq!(output.code, 0, "{output}");
    assert_eq!(output.stdout.trim(), "ingress: STOPPED");
    assert_eq!(host.workflow("ingress").await["status"], "STOPPED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_the_admin_token_from_the_environment() {
    let sims = SimPair::start(0, 0).await;
    sims.write_config(INGRESS_CONTACTS);
    let mut host = sims.spawn(&[("CONDUIT_ADMIN_TOKEN", "cli-token")]);
    host.wait_healthy().await;
    let output = sims.cli(&["status"]);
    assert_eq!(output.code, 3, "{output}");
    assert!(
        output.stderr.contains("set CONDUIT_ADMIN_TOKEN"),
        "{output}"
    );
    let wrong = cli(
        &sims.config_path(),
        &["stop", "ingress"],
        &[("CONDUIT_ADMIN_TOKEN", "nope")],
    );
    assert_eq!(wrong.code, 3, "{wrong}");
    let right = cli(
        &sims.config_path(),
        &["status"],
        &[("CONDUIT_ADMIN_TOKEN", "cli-token")],
    );
    assert_eq!(right.code, 0, "{right}");
    let right = cli(
        &sims.config_path(),
        &["stop", "ingress"],
        &[("CONDUIT_ADMIN_TOKEN", "cli-token")],
    );
    assert_eq!(right.code, 0, "{right}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_edits_mark_only_the_edited_workflow_and_invalid_edits_disturb_nothing() {
    let sims = SimPair::start(5, 0).await;
    let valid =
        std::fs::read_to_string(sims.write_config(&format!("{INGRESS_CONTACTS}{EGRESS}"))).unwrap();
    let mut host = sims.spawn(&[]);
    host.wait_healthy().await;
    for id in ["ingress", "egress"] {
        let output = sims.cli(&["start", id]);
        assert_eq!(output.code, 0, "{output}");
    }
    for id in ["ingress", "egress"] {
        host.wait_workflow(id, "RUNNING", |view| view["status"] == "RUNNING")
            .await;
    }

    // A valid edit of egress: pending on egress only, with a summary.
    let edited = valid.replace("click = true", "click = false");
    std::fs::write(sims.config_path(), &edited).unwrap();
    let egress = host
        .wait_workflow("egress", "pending changes", |view| {
            view["pending_changes"] == true
        })
        .await;
    assert_eq!(
        egress["pending_summary"],
        json!(["egress.click: true -> false"]),
        "{egress:#}"
    );
    assert_eq!(egress["status"], "RUNNING");
    let ingress = host.workflow("ingress").await;
    assert_eq!(ingress["pending_changes"], false, "{ingress:#}");
    assert_eq!(ingress["pending_summary"], json!([]), "{ingress:#}");
    let config = host.get("/api/workflows/egress/config").await;
    assert_eq!(config["section"]["click"], false, "{config:#}");
    assert_eq!(config["pending_changes"], true, "{config:#}");
    assert_eq!(
        config["pending_summary"],
        json!(["egress.click: true -> false"])
    );
    let output = sims.cli(&["status"]);
    assert_eq!(output.code, 0, "{output}");
    let egress_row = output
        .stdout
        .lines()
        .find(|l| l.starts_with("egress"))
        .unwrap();
    let ingress_row = output
        .stdout
        .lines()
        .find(|l| l.starts_with("ingress"))
        .unwrap();
    assert!(egress_row.ends_with("changes pending restart"), "{output}");
    assert!(!ingress_row.contains("pending"), "{output}");
    assert_eq!(
        output
            .stdout
            .matches("changed: egress.click: true -> false")
            .count(),
        1,
        "{output}"
    );

    // An invalid edit: reported, and both workflows keep running (and delivering).
    let invalid = edited.replace("[egress]\n", "[egress]\nbogus = 1\n");
    std::fs::write(sims.config_path(), &invalid).unwrap();
    let bogus_line = invalid.lines().position(|l| l == "bogus = 1").unwrap() + 1;
    let (status, problems) = host.get_status("/api/config/problems").await;
    assert_eq!(status, 200);
    let problems = problems["problems"].as_array().unwrap().clone();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0]["line"], bogus_line, "{problems:#?}");
    assert!(
        problems[0]["message"].as_str().unwrap().contains("bogus"),
        "{problems:#?}"
    );
    let output = sims.cli(&["status"]);
    assert_eq!(output.code, 0, "{output}");
    assert!(
        output.stdout.contains(&format!(
            "config problem (running workflows are unaffected): {}:{bogus_line}:",
            sims.config_path().display()
        )),
        "{output}"
    );
    for id in ["ingress", "egress"] {
        assert_eq!(host.workflow(id).await["status"], "RUNNING", "{id}");
    }
    let contact = sims.dynamics.rows("contact")[0]["contactid"]
        .as_str()
        .unwrap()
        .to_string();
    let mut fields = Map::new();
    fields.insert("lastname".into(), json!("EditedWhileInvalid"));
    sims.dynamics.upsert("contact", &contact, fields).unwrap();
    conduit_e2e::wait_for("a change delivered during the invalid edit", 60, || {
        sims.campaign
            .find("profile", &contact)
            .is_some_and(|p| p["lastName"] == "EditedWhileInvalid")
    })
    .await;

    // Stopping works; starting on the invalid config is refused with the problems.
    let output = sims.cli(&["stop", "egress"]);
    assert_eq!(output.code, 0, "{output}");
    let output = sims.cli(&["start", "egress"]);
    assert_eq!(output.code, 4, "{output}");
    assert!(
        output
            .stderr
            .contains(&format!("{}:{bogus_line}:1:", sims.config_path().display())),
        "{output}"
    );
    assert!(output.stderr.contains("bogus"), "{output}");
    assert_eq!(host.workflow("egress").await["status"], "STOPPED");

    // Fixed: the start takes the edit and nothing is pending any more.
    std::fs::write(sims.config_path(), &edited).unwrap();
    let output = sims.cli(&["start", "egress"]);
    assert_eq!(output.code, 0, "{output}");
    host.wait_workflow("egress", "RUNNING", |view| view["status"] == "RUNNING")
        .await;
    let all = host.get("/api/workflows").await;
    for workflow in all["workflows"].as_array().unwrap() {
        assert_eq!(workflow["pending_changes"], false, "{workflow:#}");
    }
    assert_eq!(all["config_problems"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_plugin_file_marks_its_workflow_pending_until_restarted() {
    let sims = SimPair::start(3, 0).await;
    let plugin = sims.dir.path().join("mapper.wasm");
    std::fs::copy(builtin_plugin_file("table_mapper.wasm"), &plugin).unwrap();
    sims.write_config(&format!(
        "{}{EGRESS}",
        INGRESS_CONTACTS.replace("[ingress]\n", "[ingress]\nplugin = \"mapper.wasm\"\n")
    ));
    let mut host = sims.spawn(&[]);
    host.wait_healthy().await;
    for id in ["ingress", "egress"] {
        let (status, body) = host.post(&format!("/api/workflows/{id}/start")).await;
        assert_eq!(status, 200, "{body}");
        host.wait_workflow(id, "RUNNING", |view| view["status"] == "RUNNING")
            .await;
    }
    assert_eq!(host.workflow("ingress").await["pending_changes"], false);

    // A new build of the plugin: same code plus a custom section.
    let mut bytes = std::fs::read(&plugin).unwrap();
    bytes.extend_from_slice(&[0x00, 0x05, 0x04, b'n', b'e', b'w', b'!']);
    std::fs::write(&plugin, bytes).unwrap();
    let ingress = host
        .wait_workflow("ingress", "pending plugin change", |view| {
            view["pending_changes"] == true
        })
        .await;
    assert_eq!(
        ingress["pending_summary"],
        json!(["plugin mapper.wasm changed on disk"]),
        "{ingress:#}"
    );
    assert_eq!(host.workflow("egress").await["pending_changes"], false);

    for path in [
        "/api/workflows/ingress/stop",
        "/api/workflows/ingress/start",
    ] {
        let (status, body) = host.post(path).await;
        assert_eq!(status, 200, "{body}");
    }
    let ingress = host
        .wait_workflow("ingress", "RUNNING on the new plugin", |view| {
            view["status"] == "RUNNING"
        })
        .await;
    assert_eq!(ingress["pending_changes"], false, "{ingress:#}");
    assert_eq!(sims.campaign.records("profile").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_dead_letter_becomes_a_plugin_test_input_that_fails_the_same_way() {
    let sims = SimPair::start(0, 0).await;
    let poison = contact_id(7);
    let mut fields = Map::new();
    fields.insert("firstname".into(), json!("POISON"));
    fields.insert("lastname".into(), json!("Seven"));
    sims.dynamics.upsert("contact", &poison, fields).unwrap();
    sims.write_config(&format!(
        r#"[ingress]
plugin = "{}"
pacing = {{ page_size = 50, write_batch = 100, poll_interval_ms = 200 }}

[[ingress.mappings]]
name = "contacts"
source = "contact"
destination = "profile"
key = {{ source = "contactid", destination = "externalId" }}
fields = [{{ source = "firstname", destination = "firstName" }}, {{ source = "lastname", destination = "lastName" }}]
settings = {{ mode = "trap-on-value", trap_value = "POISON", copy_columns = "firstname:firstName,lastname:lastName" }}

[egress]
plugin = "{}"
send = true
"#,
        hostile_fixture_file().display(),
        builtin_plugin_file("opt_out.wasm").display()
    ));
    let mut host = sims.spawn_host().await;
    host.start("ingress").await;
    host.wait_workflow("ingress", "the poison contact dead-lettered", |view| {
        view["counters"]["dead_letters"] == 1 && view["backlog"] == 0
    })
    .await;
    let letters = json_of(&sims.cli(&["dlq", "list", "ingress", "--json", "--stage", "read"]));
    let id = letters[0]["id"].to_string();

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    let input = input.to_str().unwrap();
    let output = sims.cli(&["dlq", "show", "ingress", &id, "--as-input", input]);
    assert_eq!(output.code, 0, "{output}");
    assert!(
        output.stderr.contains(&format!(
            "conduit plugin test --mapping contacts --input {input}"
        )),
        "{output}"
    );
    // Without a file the input goes to stdout, the same.
    let printed = json_of(&sims.cli(&["dlq", "show", "ingress", &id, "--as-input"]));
    let written: Value = serde_json::from_str(&std::fs::read_to_string(input).unwrap()).unwrap();
    assert_eq!(printed, written);
    assert_eq!(written["rows"][0]["key"], poison.as_str(), "{written:#}");

    // The file runs through the plugin and settings of the config, and fails as it did.
    let tested = sims.cli(&[
        "plugin",
        "test",
        "--mapping",
        "contacts",
        "--input",
        input,
        "--json",
        "--quiet",
    ]);
    assert_eq!(tested.code, 1, "{tested}");
    let outcomes: Value = serde_json::from_str(&tested.stdout).unwrap();
    assert_eq!(outcomes[0]["outcome"], "failed", "{outcomes:#}");
    assert!(
        outcomes[0]["error"]
            .as_str()
            .unwrap()
            .contains(&format!("poison record {poison}")),
        "{outcomes:#}"
    );
    // An opt-out-resolver as the Egress plugin: `config check` and the start's ERROR reason
    // give the same located message.
    let checked = sims.cli(&["config", "check"]);
    assert_eq!(checked.code, 4, "{checked}");
    let problem = checked
        .stdout
        .lines()
        .find(|line| line.contains("does not implement the event-mapper world"))
        .unwrap_or_else(|| panic!("{checked}"));
    let located = problem.split(" (hint:").next().unwrap();
    let config = sims.config_path();
    assert!(
        located.starts_with(&format!("{}:", config.display())),
        "{problem}"
    );
    let output = sims.cli(&["start", "egress"]);
    assert_eq!(output.code, 0, "{output}");
    let view = host
        .wait_workflow(
            "egress",
            "the wrong-world plugin refused at start",
            |view| view["status"] == "ERROR",
        )
        .await;
    assert_eq!(view["reason"].as_str(), Some(located), "{view:#}");
    host.terminate();
}
