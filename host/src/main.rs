//! The `conduit` command line: the binary edge, where errors become messages and exit codes.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    cli::run(args)
}
