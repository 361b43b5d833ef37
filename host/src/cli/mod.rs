//! Command-line definitions (clap) and the dispatch to each subcommand's handler.

mod plugin;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Conduit: syncs Dynamics 365 and Adobe Campaign Standard through sandboxed Wasm plugins.
#[derive(Debug, Parser)]
#[command(name = "conduit", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with mapping plugins (e.g. `conduit plugin test`).
    Plugin(plugin::PluginArgs),
}

/// Runs the chosen subcommand and maps its result to an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Plugin(args) => plugin::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
