//! `conduit plugin`: the plugin author's commands. `new` scaffolds a plugin crate, `build`
//! builds it into a component, and `test` (in `plugin_test`) runs a plugin on sample input as
//! a workflow would.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use conduit_plugin_host::World;

use super::plugin_kit::{self, Lang};
use super::plugin_test;

/// Work with mapping plugins.
#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Run a plugin on sample input as a workflow would: a table of outcomes (or --json),
    /// compared with --expect; settings from a file or from the config (--mapping/--workflow).
    Test(plugin_test::TestArgs),
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

fn parse_world(text: &str) -> Result<World, String> {
    text.parse()
}

fn parse_lang(text: &str) -> Result<Lang, String> {
    text.parse()
}

/// Runs the chosen `plugin` subcommand; `config` is the global `--config`.
pub fn run(args: PluginArgs, config: &Path) -> anyhow::Result<()> {
    match args.command {
        PluginCommand::Test(test) => plugin_test::run(test, config),
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
        "  conduit plugin test {root}/{name}.wasm --settings {root}/sample/settings.toml --input {root}/sample/input.json --expect {root}/sample/expected.json",
        name = args.name,
    );
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
