//! `conduit plugin test`: runs a plugin (`builtin:<name>` or a `.wasm` component) on sample
//! input, outside any workflow, and prints its outcomes as JSON on stdout; the plugin's `log`
//! lines and what it wrote to stdout and stderr go to stderr (unless `--quiet`). For plugin
//! authors and for checking a settings section before starting a workflow.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use conduit::model::{ContactOptOut, EmailEvent, Phase, RecordBatch};
use conduit::plugin::{Limits, PluginHost, PluginRef, World};
use serde::Deserialize;

use super::plugin_kit::{self, Lang};

/// Work with mapping plugins.
#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Run a plugin on sample input and print the outcomes as JSON.
    Test(TestArgs),
    /// Create a ready-to-build plugin project (Rust, JavaScript or Python) with its SDK and a
    /// sample input, settings and expected output.
    New(NewArgs),
    /// Build a plugin project into a component (`<dir>/<name>.wasm`), by its language.
    Build(BuildArgs),
}

#[derive(Debug, Args)]
struct NewArgs {
    /// The plugin's name (and folder): lowercase letters, digits and `-`.
    name: String,
    /// The world the plugin implements: record-mapper, event-mapper or opt-out-resolver.
    #[arg(long, default_value = "record-mapper", value_parser = parse_world)]
    world: World,
    /// The language: rust, js or python.
    #[arg(long, default_value = "rust", value_parser = parse_lang)]
    lang: Lang,
    /// The folder to create the project in (default: the current folder).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// The plugin project's folder (default: the current folder).
    #[arg(default_value = ".")]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct TestArgs {
    /// The plugin: `builtin:table-mapper`, `builtin:email-events`, `builtin:opt-out` or a path
    /// to a .wasm component.
    plugin: String,
    /// A TOML file holding the plugin's settings (e.g. one mapping's section).
    #[arg(long)]
    settings: PathBuf,
    /// A dotted path to the settings table inside the file, e.g. `ingress.contacts`
    /// (default: the whole file).
    #[arg(long)]
    section: Option<String>,
    /// A JSON file with the input: for record-mapper `{"phase": "initial", "table": ...,
    /// "columns": [...], "rows": [...]}`; for event-mapper a list of email events; for
    /// opt-out-resolver a list of contacts' opt-out states.
    #[arg(long)]
    input: PathBuf,
    /// The world to run the plugin as: record-mapper, event-mapper or opt-out-resolver.
    #[arg(long, default_value = "record-mapper", value_parser = parse_world)]
    world: World,
    /// A directory to cache compiled components in.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// The plugin's memory cap in MiB, as a workflow's `limits.plugin_memory_mb`.
    #[arg(long, default_value_t = 64)]
    memory_mb: usize,
    /// The deadline of each call in milliseconds, as a workflow's `limits.plugin_deadline_ms`.
    #[arg(long, default_value_t = 2000)]
    deadline_ms: u64,
    /// Hide the plugin's log lines and what it wrote to stdout and stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_world(text: &str) -> Result<World, String> {
    text.parse()
}

fn parse_lang(text: &str) -> Result<Lang, String> {
    text.parse()
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

/// Runs the chosen `plugin` subcommand.
pub fn run(args: PluginArgs) -> anyhow::Result<()> {
    match args.command {
        PluginCommand::Test(test) => run_test(test),
        PluginCommand::New(new) => run_new(new),
        PluginCommand::Build(build) => run_build(build),
    }
}

fn run_new(args: NewArgs) -> anyhow::Result<()> {
    let root = plugin_kit::create(&args.name, args.world, args.lang, &args.dir)?;
    let root = root.display();
    outln!(
        "created {root} ({} {}, SDK {}); next:",
        args.lang,
        args.world,
        plugin_kit::SDK_VERSION
    );
    outln!("  conduit plugin build {root}");
    outln!(
        "  conduit plugin test {root}/{name}.wasm --world {world} --settings {root}/sample/settings.toml --input {root}/sample/input.json",
        name = args.name,
        world = args.world
    );
    outln!("  (its output must equal {root}/sample/expected.json)");
    Ok(())
}

fn run_build(args: BuildArgs) -> anyhow::Result<()> {
    let (component, lang) = plugin_kit::build(&args.dir)?;
    let size = fs::metadata(&component)
        .with_context(|| format!("cannot read {}", component.display()))?
        .len();
    outln!("built {} ({lang}, {size} bytes)", component.display());
    Ok(())
}

/// Shows the plugin's `log` lines and captured stdout/stderr (all logged by the plugin
/// runtime, tagged with the plugin) on stderr; other host messages only from warnings up.
fn show_plugin_output() {
    let filter = tracing_subscriber::EnvFilter::new("warn,conduit::plugin=debug");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}

fn run_test(args: TestArgs) -> anyhow::Result<()> {
    if !args.quiet {
        show_plugin_output();
    }
    let reference: PluginRef = args.plugin.parse()?;
    let settings = read_settings(&args.settings, args.section.as_deref())?;
    let input = fs::read_to_string(&args.input)
        .with_context(|| format!("cannot read the input file {}", args.input.display()))?;
    let host = PluginHost::new(args.cache_dir.as_deref())?;
    let plugin = host.load(&reference, args.world)?;
    let limits = Limits {
        memory_bytes: args.memory_mb.saturating_mul(1 << 20),
        deadline: std::time::Duration::from_millis(args.deadline_ms),
        ..Limits::default()
    };
    let input_path = args.input.display().to_string();
    let world = args.world;
    let bad_input = |expected: &'static str| {
        let input_path = input_path.clone();
        move |error: serde_json::Error| {
            anyhow!("{input_path} is not valid {world} input ({expected}): {error}")
        }
    };
    let outcomes = match args.world {
        World::RecordMapper => {
            let input: RecordInput = serde_json::from_str(&input)
                .map_err(bad_input("an object with phase, table, columns and rows"))?;
            plugin
                .record_mapper(&settings, limits)?
                .map(input.phase, &input.batch)?
        }
        World::EventMapper => {
            let events: Vec<EmailEvent> =
                serde_json::from_str(&input).map_err(bad_input("a list of email events"))?;
            plugin.event_mapper(&settings, limits)?.map(&events)?
        }
        World::OptOutResolver => {
            let contacts: Vec<ContactOptOut> = serde_json::from_str(&input)
                .map_err(bad_input("a list of contacts' opt-out states"))?;
            plugin
                .opt_out_resolver(&settings, limits)?
                .resolve(&contacts)?
        }
    };
    outln!("{}", serde_json::to_string_pretty(&outcomes)?);
    Ok(())
}

/// The settings table (the whole file or its `section`) as JSON, the form plugins receive.
fn read_settings(path: &Path, section: Option<&str>) -> anyhow::Result<serde_json::Value> {
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
