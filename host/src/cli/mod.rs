//! Command-line definitions (clap) and the dispatch to each subcommand's handler.

mod sim;

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
    /// Run a simulator of Dynamics 365 or Campaign Standard.
    Sim(sim::Args),
}

/// Runs the chosen subcommand and maps its result to an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Sim(args) => runtime.block_on(sim::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
