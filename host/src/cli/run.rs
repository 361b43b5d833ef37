//! `conduit run`: the host in the foreground until SIGINT or SIGTERM, then a graceful stop
//! (workflows finish their page and batch; what should run is kept for the next start).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use conduit::runtime::{self, HostOptions, ServiceConnect};

use super::logging::LogFormat;

/// The arguments of `conduit run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// After SIGTERM or Ctrl-C, how many seconds the workflows get to finish their current
    /// page and batch before the host exits anyway (nothing is lost either way: what was not
    /// committed is read or written again at the next start). Keep it below Kubernetes'
    /// terminationGracePeriodSeconds.
    #[arg(long, env = "CONDUIT_SHUTDOWN_TIMEOUT", default_value_t = 25)]
    pub shutdown_timeout: u64,
}

/// Runs the host on a config file. With JSON logs, the host's own messages are log lines
/// too, so that every line of its output is one JSON object.
pub async fn run(config: &Path, args: &RunArgs, format: LogFormat) -> Result<(), super::CallError> {
    let say = |message: &str| match format {
        LogFormat::Text => errln!("{message}"),
        LogFormat::Json => tracing::info!("{message}"),
    };
    if let Some(warning) = world_readable_warning(config) {
        match format {
            LogFormat::Text => errln!("{warning}"),
            LogFormat::Json => tracing::warn!("{warning}"),
        }
    }
    let host = runtime::start(
        config,
        Arc::new(ServiceConnect::from_env()),
        HostOptions::default(),
    )
    .await
    .map_err(|error| super::CallError {
        code: match error {
            runtime::HostError::Config(_) => super::exit::INVALID_CONFIG,
            _ => 1,
        },
        message: error.to_string(),
    })?;
    say(&format!(
        "conduit is running; admin API on {} (Ctrl-C stops)",
        host.admin.url()
    ));
    wait_for_shutdown_signal().await.map_err(super::failure)?;
    say(&format!(
        "stopping: workflows finish their current page and batch (at most {}s)",
        args.shutdown_timeout
    ));
    let limit = std::time::Duration::from_secs(args.shutdown_timeout);
    if tokio::time::timeout(limit, host.shutdown()).await.is_err() {
        // Exiting mid-step is safe: each step commits in one transaction or not at all.
        let message = format!(
            "the workflows did not stop within {}s; exiting anyway (uncommitted work is redone at the next start)",
            args.shutdown_timeout
        );
        match format {
            LogFormat::Text => errln!("warning: {message}"),
            LogFormat::Json => tracing::warn!("{message}"),
        }
    }
    Ok(())
}

/// A warning when every user on the machine may read the config: it names the credentials'
/// variables, the services and the data directory, so it should be private to the host's user.
fn world_readable_warning(config: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(config).ok()?.permissions().mode();
    (mode & 0o004 != 0).then(|| {
        format!(
            "warning: the config {} is readable by every user (mode {:o}); it describes the host's credentials, restrict it with chmod 600",
            config.display(),
            mode & 0o777
        )
    })
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn world_readable_config_is_warned_about_and_a_private_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("conduit.toml");
        std::fs::write(&config, "").unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warning = world_readable_warning(&config).unwrap();
        assert!(
            warning.contains("mode 644") && warning.contains("chmod 600"),
            "{warning}"
        );
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(world_readable_warning(&config), None);
    }
}
