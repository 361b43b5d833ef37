//! `conduit run`: the host in the foreground until SIGINT or SIGTERM, then a graceful stop
//! (workflows finish their page and batch; what should run is kept for the next start).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use conduit::runtime::{self, HostOptions, ServiceConnect};

/// Runs the host on a config file.
pub async fn run(config: &Path) -> Result<(), super::CallError> {
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
    eprintln!(
        "conduit is running; admin API on http://{} (Ctrl-C stops)",
        host.admin.address
    );
    wait_for_shutdown_signal().await.map_err(super::failure)?;
    eprintln!("stopping: workflows finish their current page and batch");
    host.shutdown().await;
    Ok(())
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
