//! Command-line definitions (clap) and the dispatch to each subcommand's handler. Exit codes:
//! 0 success, 1 failure, 2 usage error, 3 refused by the host, 4 invalid config, 5 host
//! unreachable, 6 not found, 7 out of sync (`verify`).

#[macro_use]
mod output;

mod backup;
mod client;
mod demo;
mod logging;
mod ops;
mod plugin;
mod plugin_kit;
mod plugin_test;
mod preview;
mod progress;
mod run;
mod sim;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use client::{AdminClient, CallError, exit};
use conduit_admin::views;

/// Conduit: syncs Dynamics 365 and Adobe Campaign Standard through sandboxed Wasm plugins.
#[derive(Debug, Parser)]
#[command(name = "conduit", version, about)]
pub struct Cli {
    /// The config file.
    #[arg(
        long,
        global = true,
        env = "CONDUIT_CONFIG",
        default_value = "conduit.toml"
    )]
    config: PathBuf,
    /// The admin API of the running host (default: host.admin_listen from the config, over
    /// https when host.admin_tls_cert is set).
    #[arg(long, global = true, env = "CONDUIT_ADMIN_URL")]
    admin_url: Option<String>,
    /// A PEM file of CA certificates to trust for an HTTPS admin API (its private CA, or its
    /// self-signed certificate).
    #[arg(long, global = true, env = "CONDUIT_ADMIN_CA_FILE")]
    admin_ca_file: Option<PathBuf>,
    /// How `run` and `sim` write their log lines on stderr: `text` for people, `json` for log
    /// aggregators (one object per line; the workflow, stage and plugin are fields).
    #[arg(
        long,
        global = true,
        env = "CONDUIT_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host: workflows, config watcher and admin API, until Ctrl-C or SIGTERM.
    Run(run::RunArgs),
    /// Run all three workflows against in-process simulators and verify the result.
    Demo(demo::DemoArgs),
    /// Show the workflows: status, backlog, dead letters, rates, pending changes.
    Status(ops::StatusArgs),
    /// Start a workflow (ingress, egress or optinout).
    Start {
        /// The workflow.
        workflow: String,
    },
    /// Stop a workflow gracefully; its backlog stays queued.
    Stop {
        /// The workflow.
        workflow: String,
    },
    /// Ask for a replay of an Ingress table mapping (taken at the next start).
    Replay {
        /// The workflow (ingress).
        workflow: String,
        /// The table mapping's name.
        mapping: String,
    },
    /// Compare a workflow's destination with its source (missing, stale, orphaned records);
    /// exit 0 when in sync, 7 when not. `--repair` queues what differs for the writer.
    Verify(verify::VerifyArgs),
    /// Show what restarting a workflow with the edited config would change, per record, on a
    /// sample of source records; writes nothing.
    Preview(preview::PreviewArgs),
    /// Dead letters: list, show, retry, drop.
    #[command(subcommand)]
    Dlq(ops::DlqCommand),
    /// The audit trail: who started, stopped, replayed, retried or dropped what, and when.
    Audit(ops::AuditArgs),
    /// Config tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write a consistent copy of the store (queues, cursors, dead letters, desired states)
    /// to a file: taken by the running host while it runs, or directly when none runs.
    Backup(backup::BackupArgs),
    /// Restore a backup into the data directory; refused while a host uses the store there,
    /// and over an existing store without --force.
    Restore(backup::RestoreArgs),
    /// Run a simulator of Dynamics 365 or Campaign Standard.
    Sim(sim::Args),
    /// Work with mapping plugins (e.g. `conduit plugin test`).
    Plugin(plugin::PluginArgs),
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the config file, load every configured plugin and run its `configure` with
    /// its settings; report every problem with its position.
    Check {
        /// How to show problems: `excerpts` (the file's lines with the place underlined and
        /// the hint) or `lines` (one `file:line:column: message (hint: ...)` line each).
        /// Default: excerpts when stdout is a terminal, lines otherwise.
        #[arg(long, value_enum)]
        format: Option<ProblemFormat>,
    },
}

/// How `config check` shows problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProblemFormat {
    /// An excerpt of the file per problem, underlined, with its hint.
    Excerpts,
    /// One line per problem, for scripts and logs.
    Lines,
}

/// Runs the chosen subcommand and maps its result to an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            errln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let logs = matches!(cli.command, Command::Run(_) | Command::Sim(_));
    if logs {
        logging::init(cli.log_format);
    }
    // With JSON logs, the host's closing error is a log line too (one JSON object per line).
    let json = logs && cli.log_format == logging::LogFormat::Json;
    let report = |message: &str| {
        if json {
            tracing::error!("{message}");
        } else {
            errln!("error: {message}");
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // A blocking task still running (a plugin call near its deadline) must not hold the exit
    // past a bounded shutdown: dropping the runtime would wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => match output::take_failure() {
            None => ExitCode::SUCCESS,
            Some(message) => {
                report(&message);
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            report(&error.message);
            ExitCode::from(error.code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), CallError> {
    match &cli.command {
        Command::Run(args) => run::run(&cli.config, args, cli.log_format).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Config(ConfigCommand::Check { format }) => {
            check_config(&cli.config, *format).await
        }
        Command::Completions { shell } => {
            // Generated in memory: clap_complete panics when its writer fails (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "conduit", &mut script);
            output::write_bytes(&script);
            Ok(())
        }
        Command::Status(args) => ops::status(&admin(&cli)?, args).await,
        Command::Start { workflow } => {
            let answer: views::StatusAnswer = admin(&cli)?
                .post(&format!("/api/workflows/{workflow}/start"))
                .await?;
            outln!("{workflow}: {}", answer.status.name());
            Ok(())
        }
        Command::Stop { workflow } => {
            let answer: views::StatusAnswer = admin(&cli)?
                .post(&format!("/api/workflows/{workflow}/stop"))
                .await?;
            outln!("{workflow}: {}", answer.status.name());
            Ok(())
        }
        Command::Replay { workflow, mapping } => {
            let answer: views::MessageAnswer = admin(&cli)?
                .post(&format!("/api/workflows/{workflow}/replay/{mapping}"))
                .await?;
            outln!("{}", answer.message);
            Ok(())
        }
        Command::Dlq(command) => ops::dlq(&admin(&cli)?, command).await,
        Command::Verify(args) => verify::verify(&admin(&cli)?, args).await,
        Command::Preview(args) => preview::preview(&admin(&cli)?, args).await,
        Command::Backup(args) => backup::backup(args, &cli.config, || admin(&cli)).await,
        Command::Restore(args) => backup::restore(args, &cli.config).await,
        Command::Audit(args) => ops::audit(&admin(&cli)?, args).await,
        Command::Sim(_) | Command::Plugin(_) => match cli.command {
            Command::Sim(args) => sim::run(args).await.map_err(failure),
            Command::Plugin(args) => plugin::run(args, &cli.config).map_err(failure),
            _ => Ok(()),
        },
    }
}

/// A plain failure (exit 1) with the whole error chain.
fn failure(error: anyhow::Error) -> CallError {
    CallError {
        code: 1,
        message: format!("{error:#}"),
    }
}

/// The admin client: `--admin-url`, else the config's `host.admin_listen` (https when the
/// config sets `host.admin_tls_cert`), else the default.
fn admin(cli: &Cli) -> Result<AdminClient, CallError> {
    let base = match &cli.admin_url {
        Some(url) => url.clone(),
        None => {
            let listen = admin_listen(&cli.config).unwrap_or_else(|| "127.0.0.1:7878".into());
            let scheme = if admin_tls(&cli.config) {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", client_address(&listen))
        }
    };
    AdminClient::new(&base, cli.admin_ca_file.as_deref()).map_err(|error| CallError {
        code: 1,
        message: format!("{error:#}"),
    })
}

/// A key of the config's `[host]` section, read without validating the rest: operators run
/// `conduit status` precisely when an edit elsewhere in the file is invalid.
fn host_setting(path: &std::path::Path, key: &str) -> Option<toml::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    table.get("host")?.get(key).cloned()
}

/// `host.admin_listen` of the config file.
fn admin_listen(path: &std::path::Path) -> Option<String> {
    host_setting(path, "admin_listen")?
        .as_str()
        .map(str::to_string)
}

/// Whether the config serves the admin API over HTTPS (`host.admin_tls_cert` is set).
fn admin_tls(path: &std::path::Path) -> bool {
    host_setting(path, "admin_tls_cert").is_some()
}

/// Where a client reaches a host listening on `listen`: every interface (0.0.0.0, [::]) is
/// reached on loopback.
fn client_address(listen: &str) -> String {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(address) if address.ip().is_unspecified() => {
            let loopback = if address.is_ipv4() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
            };
            std::net::SocketAddr::new(loopback, address.port()).to_string()
        }
        _ => listen.to_string(),
    }
}

/// Validates the config, then loads every configured plugin and runs its `configure` with
/// the settings the workflow would give it (on a blocking thread, under the workflow's
/// deadline and memory cap); every problem is printed with its place in the file.
async fn check_config(
    path: &std::path::Path,
    format: Option<ProblemFormat>,
) -> Result<(), CallError> {
    let format = format.unwrap_or_else(|| {
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            ProblemFormat::Excerpts
        } else {
            ProblemFormat::Lines
        }
    });
    let config = match conduit_config::Config::load(path) {
        Ok(config) => config,
        Err(conduit_config::ConfigError::Invalid(problems)) => {
            return invalid(path, &problems, format);
        }
        Err(other) => {
            return Err(CallError {
                code: exit::INVALID_CONFIG,
                message: other.to_string(),
            });
        }
    };
    // The host's compiled-component cache, when it has one, spares compiling again.
    let cache = config.data_dir().join("plugin-cache");
    let cache = cache.is_dir().then_some(cache);
    let problems = tokio::task::spawn_blocking(move || {
        // A cache this user cannot open is no reason to fail the check: compile instead.
        conduit_plugin_host::PluginHost::new(cache.as_deref())
            .or_else(|_| conduit_plugin_host::PluginHost::new(None))
            .map(|host| conduit::runtime::check_plugins(&config, &host))
            .map_err(|error| error.to_string())
    })
    .await
    .map_err(|error| CallError {
        code: 1,
        message: format!("checking the plugins failed: {error}"),
    })?
    .map_err(|message| CallError { code: 1, message })?;
    if !problems.is_empty() {
        return invalid(path, &problems, format);
    }
    outln!(
        "{}: the config is valid; every plugin loads and accepts its settings",
        path.display()
    );
    Ok(())
}

/// Prints each problem and fails with the invalid-config exit code.
fn invalid(
    path: &std::path::Path,
    problems: &[conduit_config::Problem],
    format: ProblemFormat,
) -> Result<(), CallError> {
    // The file as it is now: the problems' spans point into it (an unreadable file leaves
    // every problem without an excerpt, shown by its position).
    let source = match format {
        ProblemFormat::Excerpts => std::fs::read_to_string(path).unwrap_or_default(),
        ProblemFormat::Lines => String::new(),
    };
    match format {
        ProblemFormat::Lines => {
            for problem in problems {
                outln!("{problem}");
            }
        }
        ProblemFormat::Excerpts => {
            let style = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                conduit_config::Style::Styled
            } else {
                conduit_config::Style::Plain
            };
            outln!(
                "{}",
                conduit_config::render(problems, &source, style).trim_end()
            );
        }
    }
    Err(CallError {
        code: exit::INVALID_CONFIG,
        message: format!("{} problem(s) in {}", problems.len(), path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_address_is_read_from_an_otherwise_invalid_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conduit.toml");
        std::fs::write(
            &path,
            "[host]\nadmin_listen = \"127.0.0.1:9123\"\nbogus = 1\n[egress]\nclick = \"yes\"\n",
        )
        .unwrap();
        assert!(conduit_config::Config::load(&path).is_err());
        assert_eq!(admin_listen(&path).as_deref(), Some("127.0.0.1:9123"));
        assert_eq!(admin_listen(&dir.path().join("missing.toml")), None);
        assert!(!admin_tls(&path));
        std::fs::write(&path, "[host]\nadmin_tls_cert = \"cert.pem\"\nbogus = 1\n").unwrap();
        assert!(admin_tls(&path));
    }

    #[test]
    fn a_host_on_every_interface_is_called_on_loopback() {
        assert_eq!(client_address("0.0.0.0:7878"), "127.0.0.1:7878");
        assert_eq!(client_address("[::]:7878"), "[::1]:7878");
        assert_eq!(client_address("127.0.0.1:7878"), "127.0.0.1:7878");
        assert_eq!(client_address("10.0.0.5:7878"), "10.0.0.5:7878");
    }
}
