//! `conduit run`: the host in the foreground until SIGINT or SIGTERM, then a graceful stop
//! (workflows finish their page and batch; what should run is kept for the next start).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use conduit::runtime::{self, HostOptions, ServiceConnect};

/// Runs the host on a config file.
pub async fn run(config: &Path) -> Result<(), super::CallError> {
    if let Some(warning) = world_readable_warning(config) {
        errln!("{warning}");
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
    errln!(
        "conduit is running; admin API on {} (Ctrl-C stops)",
        host.admin.url()
    );
    wait_for_shutdown_signal().await.map_err(super::failure)?;
    errln!("stopping: workflows finish their current page and batch");
    host.shutdown().await;
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
