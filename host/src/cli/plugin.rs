//! `conduit plugin`: the plugin author's commands. `new` scaffolds a plugin crate, `build`
//! builds it into a component, and `test` (in `plugin_test`) runs a plugin on sample input as
//! a workflow would.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use conduit::plugin::World;

use super::{plugin_scaffold, plugin_test};

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
    /// Create a ready-to-build plugin crate on the conduit-plugin SDK.
    New(NewArgs),
    /// Build a plugin crate into a stripped wasm32-wasip2 component (`<dir>/<name>.wasm`).
    Build(BuildArgs),
}

#[derive(Debug, Args)]
struct NewArgs {
    /// The plugin's crate name: lowercase letters, digits and `-`.
    name: String,
    /// The world the plugin implements: record-mapper, event-mapper or opt-out-resolver.
    #[arg(long, default_value = "record-mapper", value_parser = parse_world)]
    world: World,
    /// The folder to create the crate in (default: the current folder).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The conduit-plugin SDK folder to depend on by path (default: `CONDUIT_PLUGIN_SDK`, else
    /// the SDK this binary was built from).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// The plugin crate's folder (default: the current folder).
    #[arg(default_value = ".")]
    dir: PathBuf,
}

fn parse_world(text: &str) -> Result<World, String> {
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
    let root = plugin_scaffold::create(&args.name, args.world, &args.dir, args.sdk.as_deref())?;
    let root = root.display();
    outln!("created {root}; next:");
    outln!("  conduit plugin build {root}");
    outln!(
        "  conduit plugin test {root}/{name}.wasm --world {world} --settings {root}/sample/settings.toml --input {root}/sample/input.json",
        name = args.name,
        world = args.world
    );
    Ok(())
}

fn run_build(args: BuildArgs) -> anyhow::Result<()> {
    let component = plugin_scaffold::build(&args.dir)?;
    let size = fs::metadata(&component)
        .with_context(|| format!("cannot read {}", component.display()))?
        .len();
    outln!("built {} ({size} bytes)", component.display());
    Ok(())
}
