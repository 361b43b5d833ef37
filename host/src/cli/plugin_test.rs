//! `conduit plugin test`: an author's loop. Runs a plugin (`builtin:<name>` or a `.wasm`
//! component) on sample input outside any workflow, exactly as a workflow would: the world is
//! detected from the component, the settings can be taken from a real config (the same JSON
//! the engine passes to `configure`), and a batch the plugin fails on is mapped record by
//! record with the engine's own isolation. Prints a table of outcomes (or `--json`, the list
//! of outcomes), compares them with an expected file (`--expect`) and shows the plugin's `log`
//! lines and what it wrote to stdout and stderr on stderr (unless `--quiet`). Also turns a
//! dead letter into an input file (`conduit dlq show --as-input`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use conduit::runtime::{
    WasmEventMapper, WasmOptOutResolver, WasmRecordMapper, resolve_reference, sandbox_limits,
    workflow_world,
};
use conduit_config::Config;
use conduit_engine::offline::{Isolated, isolate_items, map_rows_isolated, plugin_settings};
use conduit_engine::services::{EventMapping, OptOutResolution};
use conduit_model::{ContactOptOut, EmailEvent, Outcome, Phase, RecordBatch, WorkflowId};
use conduit_plugin_host::{Limits, PluginHost, PluginRef, World};
use serde::Deserialize;
use serde_json::Value as Json;

/// How many characters of a reason, a value or an input's name the table shows.
const PREVIEW_CHARS: usize = 100;
/// How many differences are listed per record, and how many records' differences in all.
const MAX_DIFFS_PER_RECORD: usize = 20;
const MAX_DIFFERING_RECORDS: usize = 50;
/// How many failed records' whole reasons are printed under the table.
const MAX_FAILURES_SHOWN: usize = 10;

/// `conduit plugin test`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  conduit plugin test my-mapper/my-mapper.wasm --settings my-mapper/sample/settings.toml \\
      --input my-mapper/sample/input.json --expect my-mapper/sample/expected.json
  conduit plugin test --config conduit.toml --mapping contacts --input rows.json
  conduit plugin test my-mapper.wasm --config conduit.toml --mapping contacts --input rows.json
  conduit plugin test --config conduit.toml --workflow egress --input events.json --json")]
pub struct TestArgs {
    /// The plugin: `builtin:table-mapper`, `builtin:email-events`, `builtin:opt-out` or a path
    /// to a .wasm component (default with --mapping or --workflow: the plugin the config sets).
    plugin: Option<String>,
    /// A TOML file holding the plugin's settings: the JSON `configure` receives, written as
    /// TOML (e.g. a scaffold's `sample/settings.toml`).
    #[arg(long, conflicts_with_all = ["mapping", "workflow"])]
    settings: Option<PathBuf>,
    /// A dotted path to the settings table inside the --settings file, e.g. `contacts` for a
    /// file of `[contacts]` tables; a number picks an element of an array of tables
    /// (`ingress.mappings.0`). Default: the whole file.
    #[arg(long, requires = "settings")]
    section: Option<String>,
    /// Take the settings from this Ingress table mapping of the config (`--config`, default
    /// conduit.toml), exactly as the engine passes them to `configure`.
    #[arg(long)]
    mapping: Option<String>,
    /// Take the settings from this workflow's section of the config (`--config`): egress or
    /// optinout (ingress needs --mapping).
    #[arg(long, value_parser = parse_workflow)]
    workflow: Option<WorkflowId>,
    /// A JSON file with the input: for record-mapper `{"phase": "initial", "table": ...,
    /// "columns": [...], "rows": [...]}`; for event-mapper a list of email events; for
    /// opt-out-resolver a list of contacts' opt-out states.
    #[arg(long)]
    input: PathBuf,
    /// Compare the outcomes with this file (the JSON `--json` prints): print a diff per
    /// differing record and exit 1 when they differ.
    #[arg(long)]
    expect: Option<PathBuf>,
    /// Print the outcomes as JSON (one entry per input, in order; a record the plugin failed
    /// on is `{"outcome": "failed", "error": ...}`) instead of a table.
    #[arg(long)]
    json: bool,
    /// Check that the plugin implements this world: record-mapper, event-mapper or
    /// opt-out-resolver (default: the world the component implements).
    #[arg(long, value_parser = parse_world)]
    world: Option<World>,
    /// A directory to cache compiled components in.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// The plugin's memory cap in MiB, as a workflow's `limits.plugin_memory_mb` (default:
    /// the config's with --mapping/--workflow, else 64).
    #[arg(long)]
    memory_mb: Option<u64>,
    /// The deadline of each call in milliseconds, as a workflow's `limits.plugin_deadline_ms`
    /// (default: the config's with --mapping/--workflow, else 2000).
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// Hide the plugin's log lines and what it wrote to stdout and stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_world(text: &str) -> Result<World, String> {
    text.parse()
}

fn parse_workflow(text: &str) -> Result<WorkflowId, String> {
    WorkflowId::ALL
        .into_iter()
        .find(|id| id.to_string() == text)
        .ok_or_else(|| format!("unknown workflow `{text}`; expected ingress, egress or optinout"))
}

/// Record-mapper input: a batch and the phase it belongs to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordInput {
    #[serde(default = "initial")]
    phase: Phase,
    #[serde(flatten)]
    batch: RecordBatch,
}

fn initial() -> Phase {
    Phase::Initial
}

/// "a" or "an" before a world's name.
fn article(world: World) -> &'static str {
    match world {
        World::RecordMapper => "a",
        World::EventMapper | World::OptOutResolver => "an",
    }
}

/// Shows the plugin's `log` lines and captured stdout/stderr (all logged by the plugin
/// runtime, tagged with the plugin) on stderr; other host messages only from warnings up.
fn show_plugin_output() {
    let filter = tracing_subscriber::EnvFilter::new("warn,conduit_plugin_host=debug");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}

/// The config entry the settings (and perhaps the plugin) come from.
struct ConfigEntry {
    config: Config,
    workflow: WorkflowId,
    mapping: Option<String>,
}

impl ConfigEntry {
    /// The entry named by --mapping / --workflow, from the validated config.
    fn from_args(args: &TestArgs, config_path: &Path) -> anyhow::Result<Option<ConfigEntry>> {
        let workflow = match (&args.mapping, args.workflow) {
            (None, None) => return Ok(None),
            (Some(_), None | Some(WorkflowId::Ingress)) => WorkflowId::Ingress,
            (Some(_), Some(other)) => {
                bail!("--mapping names an Ingress table mapping; the {other} workflow has none")
            }
            (None, Some(workflow)) => workflow,
        };
        let config = Config::load(config_path).map_err(|error| anyhow!("{error}"))?;
        Ok(Some(ConfigEntry {
            config,
            workflow,
            mapping: args.mapping.clone(),
        }))
    }

    fn describe(&self) -> String {
        match &self.mapping {
            Some(name) => format!("the Ingress mapping '{name}'"),
            None => format!("the {} workflow", self.workflow),
        }
    }
}

/// Runs `conduit plugin test`; `config_path` is the global `--config`.
pub fn run(args: TestArgs, config_path: &Path) -> anyhow::Result<()> {
    if !args.quiet {
        show_plugin_output();
    }
    let entry = ConfigEntry::from_args(&args, config_path)?;
    let reference: PluginRef = match (&args.plugin, &entry) {
        (Some(plugin), _) => plugin.parse()?,
        (None, Some(entry)) => {
            let written = entry
                .config
                .plugin(entry.workflow)
                .ok_or_else(|| anyhow!("the {} workflow is not configured", entry.workflow))?;
            resolve_reference(&entry.config.base_dir(), written).map_err(|error| anyhow!(error))?
        }
        (None, None) => bail!(
            "name the plugin to test (`builtin:...` or a .wasm path), or take it from the config with --mapping NAME or --workflow egress|optinout"
        ),
    };
    let settings = match (&args.settings, &entry) {
        (Some(path), _) => read_settings(path, args.section.as_deref())?,
        (None, Some(entry)) => {
            plugin_settings(&entry.config, entry.workflow, entry.mapping.as_deref())
                .with_context(|| format!("{}", entry.config.path.display()))?
        }
        (None, None) => bail!(
            "give the plugin's settings: --settings FILE (TOML), or --mapping NAME / --workflow egress|optinout to take them from the config"
        ),
    };
    let limits = limits(&args, entry.as_ref());
    // Detecting the world compiles the component; the cache makes the load that follows
    // take the compiled code instead of compiling it again.
    let scratch = tempfile::tempdir().context("cannot create a temporary folder")?;
    let cache_dir = args.cache_dir.as_deref().unwrap_or(scratch.path());
    let host = PluginHost::new(Some(cache_dir))?;
    let world = host.world_of(&reference)?;
    if let Some(asked) = args.world
        && asked != world
    {
        bail!(
            "plugin {reference} does not implement the {asked} world: it is {} {world} component (drop --world: the world is detected)",
            article(world)
        );
    }
    if let Some(entry) = &entry {
        let needed = workflow_world(entry.workflow);
        if needed != world {
            bail!(
                "plugin {reference} is {} {world} component, but {} needs {} {needed} plugin",
                article(world),
                entry.describe(),
                article(needed)
            );
        }
    }
    let plugin = host.load(&reference, world)?;
    let input_text = fs::read_to_string(&args.input)
        .with_context(|| format!("cannot read the input file {}", args.input.display()))?;
    let input_path = args.input.display().to_string();
    let bad_input = |expected: &'static str| {
        let input_path = input_path.clone();
        move |error: serde_json::Error| {
            anyhow!("{input_path} is not valid {world} input ({expected}): {error}")
        }
    };
    let (labels, isolated): (Vec<String>, Isolated) = match world {
        World::RecordMapper => {
            let input: RecordInput = serde_json::from_str(&input_text)
                .map_err(bad_input("an object with phase, table, columns and rows"))?;
            let mut mapper = WasmRecordMapper(plugin.record_mapper(&settings, limits)?);
            let labels = input.batch.rows.iter().map(|r| r.key.clone()).collect();
            (
                labels,
                map_rows_isolated(&mut mapper, input.phase, &input.batch),
            )
        }
        World::EventMapper => {
            let events: Vec<EmailEvent> =
                serde_json::from_str(&input_text).map_err(bad_input("a list of email events"))?;
            let mut mapper = WasmEventMapper(plugin.event_mapper(&settings, limits)?);
            let labels = events.iter().map(|e| e.id.clone()).collect();
            (
                labels,
                isolate_items(&events, |items| EventMapping::map(&mut mapper, items)),
            )
        }
        World::OptOutResolver => {
            let contacts: Vec<ContactOptOut> = serde_json::from_str(&input_text)
                .map_err(bad_input("a list of contacts' opt-out states"))?;
            let mut resolver = WasmOptOutResolver(plugin.opt_out_resolver(&settings, limits)?);
            let labels = contacts.iter().map(|c| c.contact_key.clone()).collect();
            (
                labels,
                isolate_items(&contacts, |items| {
                    OptOutResolution::resolve(&mut resolver, items)
                }),
            )
        }
    };
    report(&args, &labels, &isolated)
}

/// The sandbox limits: the flags, else the config entry's workflow limits, else the defaults.
fn limits(args: &TestArgs, entry: Option<&ConfigEntry>) -> Limits {
    let base = entry.map_or_else(
        || Limits {
            memory_bytes: 64 << 20,
            deadline: std::time::Duration::from_millis(2000),
            ..Limits::default()
        },
        |entry| sandbox_limits(&entry.config.limits(entry.workflow)),
    );
    Limits {
        memory_bytes: args.memory_mb.map_or(base.memory_bytes, |mb| {
            usize::try_from(mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
        }),
        deadline: args
            .deadline_ms
            .map_or(base.deadline, std::time::Duration::from_millis),
        ..base
    }
}

/// One result as `--json` prints it: the outcome, or the failure of a record.
fn result_json(result: &Result<Outcome, String>) -> Json {
    match result {
        Ok(outcome) => serde_json::to_value(outcome).unwrap_or(Json::Null),
        Err(error) => serde_json::json!({ "outcome": "failed", "error": error }),
    }
}

/// Prints the outcomes (table or JSON), compares them with `--expect`, and fails when records
/// failed (without `--expect`) or differ from the expected ones.
fn report(args: &TestArgs, labels: &[String], isolated: &Isolated) -> anyhow::Result<()> {
    let got: Vec<Json> = isolated.results.iter().map(result_json).collect();
    if let Some(failure) = &isolated.batch_failure {
        errln!(
            "the call on the whole batch failed, so each record was mapped alone, as a workflow does: {failure}"
        );
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&got)?);
    } else {
        outln!("{}", render_table(labels, &isolated.results).trim_end());
    }
    let failed = isolated.results.iter().filter(|r| r.is_err()).count();
    if let Some(path) = &args.expect {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read the expected outcomes {}", path.display()))?;
        let expected: Vec<Json> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a list of outcomes (the JSON `plugin test --json` prints)",
                path.display()
            )
        })?;
        let differences = compare(labels, &expected, &got);
        if differences.is_empty() {
            let matches = format!(
                "matches {} ({} record{})",
                path.display(),
                got.len(),
                if got.len() == 1 { "" } else { "s" }
            );
            // With --json, stdout stays one JSON document.
            if args.json {
                errln!("{matches}");
            } else {
                outln!("{matches}");
            }
            return Ok(());
        }
        errln!("the outcomes differ from {}:", path.display());
        for line in &differences {
            errln!("{line}");
        }
        bail!("the outcomes differ from {}", path.display());
    }
    if failed > 0 {
        bail!(
            "the plugin failed on {failed} of {} records (a workflow dead-letters them)",
            got.len()
        );
    }
    Ok(())
}

/// The first `max` characters of `text` on one line, with `…` when cut.
fn preview(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max + 1)
        .collect();
    if flat.chars().count() > max {
        let mut cut: String = flat.chars().take(max).collect();
        cut.push('…');
        cut
    } else {
        flat
    }
}

/// The human summary: one line per input (and per extra write), the failed records' reasons,
/// and the counts.
fn render_table(labels: &[String], results: &[Result<Outcome, String>]) -> String {
    let width = labels
        .iter()
        .map(|l| preview(l, 24).chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:>4}  {:<width$}  {:<7}  DETAIL\n",
        "#", "INPUT", "OUTCOME"
    );
    let (mut writes, mut records, mut skips, mut rejects, mut failures) = (0, 0, 0, 0, 0);
    let mut failed_reasons = Vec::new();
    for (index, result) in results.iter().enumerate() {
        let number = index + 1;
        let label = labels
            .get(index)
            .map_or_else(String::new, |l| preview(l, 24));
        let line = |outcome: &str, detail: &str| {
            format!("{number:>4}  {label:<width$}  {outcome:<7}  {detail}\n")
        };
        match result {
            Ok(Outcome::Write { records: written }) => {
                writes += 1;
                records += written.len();
                if written.is_empty() {
                    out.push_str(&line("write", "nothing to write"));
                }
                for (n, record) in written.iter().enumerate() {
                    let fields: Vec<String> = record
                        .fields
                        .iter()
                        .map(|(name, value)| {
                            let value = serde_json::to_value(value)
                                .map(|v| v.get("value").cloned().unwrap_or(Json::Null).to_string())
                                .unwrap_or_default();
                            format!("{name}={value}")
                        })
                        .collect();
                    let detail = preview(
                        &format!(
                            "{} {}.{} {}={} ({}): {}",
                            name_of(&record.op),
                            name_of(&record.target.system),
                            record.target.table,
                            record.target.key_field,
                            record.key,
                            match record.fields.len() {
                                1 => "1 field".to_owned(),
                                n => format!("{n} fields"),
                            },
                            fields.join(", ")
                        ),
                        PREVIEW_CHARS,
                    );
                    if n == 0 {
                        out.push_str(&line("write", &detail));
                    } else {
                        out.push_str(&format!("{:>4}  {:<width$}  {:<7}  {detail}\n", "", "", ""));
                    }
                }
            }
            Ok(Outcome::Skip { reason }) => {
                skips += 1;
                out.push_str(&line("skip", &preview(reason, PREVIEW_CHARS)));
            }
            Ok(Outcome::Reject { reason }) => {
                rejects += 1;
                out.push_str(&line("reject", &preview(reason, PREVIEW_CHARS)));
            }
            Err(reason) => {
                failures += 1;
                out.push_str(&line("FAILED", &preview(reason, PREVIEW_CHARS)));
                if failed_reasons.len() < MAX_FAILURES_SHOWN {
                    // Indented as a block: a trap's reason carries the plugin's stderr lines.
                    let reason = reason.trim_end().replace('\n', "\n      ");
                    failed_reasons.push(format!("  #{number} {label}: {reason}\n"));
                }
            }
        }
    }
    if !failed_reasons.is_empty() {
        out.push_str("failed records (a workflow dead-letters them):\n");
        for reason in failed_reasons {
            out.push_str(&reason);
        }
        if failures > MAX_FAILURES_SHOWN {
            out.push_str(&format!(
                "  ... and {} more\n",
                failures - MAX_FAILURES_SHOWN
            ));
        }
    }
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    out.push_str(&format!(
        "{}: {} ({}), {}, {}, {}\n",
        plural(results.len(), "input", "inputs"),
        plural(writes, "write", "writes"),
        plural(records, "record", "records"),
        plural(skips, "skip", "skips"),
        plural(rejects, "reject", "rejects"),
        plural(failures, "failed", "failed"),
    ));
    out
}

/// The name a value has in JSON (`upsert`, `campaign`).
fn name_of(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The differences between the expected and the actual outcomes, one block per differing
/// record naming it (its number and input key) and each differing field.
fn compare(labels: &[String], expected: &[Json], got: &[Json]) -> Vec<String> {
    let mut lines = Vec::new();
    if expected.len() != got.len() {
        lines.push(format!(
            "expected {} outcomes, got {} (one per input)",
            expected.len(),
            got.len()
        ));
    }
    let mut differing = 0;
    for index in 0..expected.len().max(got.len()) {
        let mut found = Vec::new();
        match (expected.get(index), got.get(index)) {
            (Some(expected), Some(got)) => diff("", expected, got, &mut found),
            (Some(expected), None) => found.push(format!(
                "expected {}, got no outcome",
                preview(&expected.to_string(), PREVIEW_CHARS)
            )),
            (None, Some(got)) => found.push(format!(
                "not expected, got {}",
                preview(&got.to_string(), PREVIEW_CHARS)
            )),
            (None, None) => {}
        }
        if found.is_empty() {
            continue;
        }
        differing += 1;
        if differing > MAX_DIFFERING_RECORDS {
            continue;
        }
        let label = labels
            .get(index)
            .map_or_else(String::new, |l| format!(" (key {})", preview(l, 40)));
        lines.push(format!("record {}{label}:", index + 1));
        let total = found.len();
        lines.extend(
            found
                .into_iter()
                .take(MAX_DIFFS_PER_RECORD)
                .map(|line| format!("  {line}")),
        );
        if total > MAX_DIFFS_PER_RECORD {
            lines.push(format!(
                "  ... and {} more differences",
                total - MAX_DIFFS_PER_RECORD
            ));
        }
    }
    if differing > MAX_DIFFERING_RECORDS {
        lines.push(format!(
            "... and {} more differing records",
            differing - MAX_DIFFERING_RECORDS
        ));
    }
    lines
}

/// A list of `[name, value]` pairs (a write's fields), as a name-to-value list.
fn as_pairs(value: &Json) -> Option<Vec<(&str, &Json)>> {
    value
        .as_array()?
        .iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([Json::String(name), value]) => Some((name.as_str(), value)),
            _ => None,
        })
        .collect()
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Compares two JSON values, one line per difference with its path (`outcome`,
/// `records[0].fields.firstName`): fields are compared by name, other lists by position.
fn diff(path: &str, expected: &Json, got: &Json, out: &mut Vec<String>) {
    if expected == got {
        return;
    }
    let show = |value: &Json| preview(&value.to_string(), PREVIEW_CHARS);
    let at = if path.is_empty() { "the outcome" } else { path };
    match (expected, got) {
        (Json::Object(want), Json::Object(have)) => {
            for (key, want_value) in want {
                match have.get(key) {
                    Some(have_value) => diff(&join(path, key), want_value, have_value, out),
                    None => out.push(format!(
                        "{}: expected {}, got nothing",
                        join(path, key),
                        show(want_value)
                    )),
                }
            }
            for (key, have_value) in have {
                if !want.contains_key(key) {
                    out.push(format!(
                        "{}: not expected, got {}",
                        join(path, key),
                        show(have_value)
                    ));
                }
            }
        }
        (Json::Array(want), Json::Array(have)) => {
            if let (Some(want), Some(have)) = (as_pairs(expected), as_pairs(got)) {
                for (name, want_value) in &want {
                    match have.iter().find(|(other, _)| other == name) {
                        Some((_, have_value)) => {
                            diff(&join(path, name), want_value, have_value, out);
                        }
                        None => out.push(format!(
                            "{}: expected {}, got no such field",
                            join(path, name),
                            show(want_value)
                        )),
                    }
                }
                for (name, have_value) in &have {
                    if !want.iter().any(|(other, _)| other == name) {
                        out.push(format!(
                            "{}: not expected, got {}",
                            join(path, name),
                            show(have_value)
                        ));
                    }
                }
                return;
            }
            if want.len() != have.len() {
                out.push(format!(
                    "{at}: expected {} items, got {}",
                    want.len(),
                    have.len()
                ));
            }
            for (index, (want_value, have_value)) in want.iter().zip(have).enumerate() {
                diff(&format!("{path}[{index}]"), want_value, have_value, out);
            }
        }
        _ => out.push(format!(
            "{at}: expected {}, got {}",
            show(expected),
            show(got)
        )),
    }
}

/// The settings table (the whole file or its `section`) as JSON, the form plugins receive.
fn read_settings(path: &Path, section: Option<&str>) -> anyhow::Result<Json> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read the settings file {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let mut value = toml::Value::Table(table);
    if let Some(section) = section {
        for part in section.split('.') {
            value = match value {
                toml::Value::Table(mut table) => table.remove(part).ok_or_else(|| {
                    anyhow!(
                        "{} has no section `{section}` (no `{part}` there)",
                        path.display()
                    )
                })?,
                toml::Value::Array(mut items) => {
                    let index: usize = part.parse().map_err(|_| {
                        anyhow!(
                            "{}: `{section}`: `{part}` is inside an array of tables; pick an element by number (0 is the first)",
                            path.display()
                        )
                    })?;
                    if index >= items.len() {
                        bail!(
                            "{} has no section `{section}` (the array has {} elements)",
                            path.display(),
                            items.len()
                        );
                    }
                    items.swap_remove(index)
                }
                _ => bail!(
                    "{}: `{section}` does not name a table (`{part}` is inside a value)",
                    path.display()
                ),
            };
        }
        if !value.is_table() {
            bail!(
                "{}: `{section}` is a value, not a settings table",
                path.display()
            );
        }
    }
    serde_json::to_value(value).context("the settings cannot be expressed as JSON")
}

/// A dead letter (as `conduit dlq show` receives it) as a `plugin test` input file, with the
/// command that runs it; refused when the dead letter holds no plugin input (a write the
/// destination refused).
pub fn dead_letter_input(
    letter: &conduit_store::DeadLetter,
    workflow: &str,
) -> anyhow::Result<(Json, String)> {
    let payload = letter.payload.clone();
    let origin = &letter.origin;
    let from_config = |workflow: &str| format!("--workflow {workflow}");
    Ok(match payload {
        conduit_store::DeadLetterPayload::SourceRecord { batch, phase } => {
            let mut input = serde_json::to_value(&batch)?;
            if let Some(object) = input.as_object_mut() {
                object.insert("phase".into(), serde_json::to_value(phase)?);
            }
            (input, format!("--mapping {origin}"))
        }
        conduit_store::DeadLetterPayload::Event { event } => {
            (serde_json::to_value([event])?, from_config(workflow))
        }
        conduit_store::DeadLetterPayload::OptOut { contact } => {
            (serde_json::to_value([contact])?, from_config(workflow))
        }
        conduit_store::DeadLetterPayload::Write { .. } => bail!(
            "this dead letter is a write the destination refused (stage write): it holds the mapped record, not plugin input, so there is nothing to run `plugin test` on; `conduit dlq retry` queues the write again"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_names_the_field_by_name_and_other_values_by_path() {
        let expected = serde_json::json!({"outcome": "write", "records": [{"key": "c-1",
            "fields": [["firstName", {"type": "text", "value": "Ada"}], ["lastName", {"type": "null"}]]}]});
        let got = serde_json::json!({"outcome": "write", "records": [{"key": "c-2",
            "fields": [["firstName", {"type": "text", "value": "Bob"}], ["email", {"type": "null"}]]}]});
        let mut out = Vec::new();
        diff("", &expected, &got, &mut out);
        assert_eq!(
            out,
            [
                "records[0].fields.firstName.value: expected \"Ada\", got \"Bob\"",
                "records[0].fields.lastName: expected {\"type\":\"null\"}, got no such field",
                "records[0].fields.email: not expected, got {\"type\":\"null\"}",
                "records[0].key: expected \"c-1\", got \"c-2\"",
            ]
        );
        let mut out = Vec::new();
        diff(
            "",
            &serde_json::json!({"outcome": "skip", "reason": "x"}),
            &serde_json::json!({"outcome": "write", "records": []}),
            &mut out,
        );
        assert!(
            out.contains(&"outcome: expected \"skip\", got \"write\"".to_owned()),
            "{out:?}"
        );
    }

    #[test]
    fn sections_reach_into_arrays_of_tables_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conduit.toml");
        fs::write(
            &path,
            "[[ingress.mappings]]\nname = \"a\"\n[[ingress.mappings]]\nname = \"b\"\n",
        )
        .unwrap();
        let second = read_settings(&path, Some("ingress.mappings.1")).unwrap();
        assert_eq!(second, serde_json::json!({"name": "b"}));
        let error = read_settings(&path, Some("ingress.mappings.contacts")).unwrap_err();
        assert!(
            error.to_string().contains("pick an element by number"),
            "{error}"
        );
    }
}
