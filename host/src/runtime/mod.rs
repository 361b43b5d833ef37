//! Assembles a running host from a config file: the store in the data directory, the Wasm
//! plugin runtime with its on-disk cache, the connectors, the workflow supervisor (restoring
//! the workflows that were running), the config watcher and the admin API.

mod connectors;
mod plugins;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::admin::{self, AdminServer};
use crate::config::{Config, ConfigError};
use crate::plugin::PluginHost;
use crate::store::Store;
use crate::workflow::{Connect, Environment, Supervisor};

pub use connectors::ServiceConnect;
pub use plugins::{WasmPlugins, sandbox_limits};

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The config is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The plugin runtime could not start.
    #[error("the plugin runtime could not start: {0}")]
    Plugins(String),
    /// The admin API could not start.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
}

/// What can be changed when starting a host.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Listen here instead of the config's `host.admin_listen` (e.g. `127.0.0.1:0` in tests).
    pub admin_listen: Option<String>,
    /// How often the config file is checked for edits.
    pub watch_interval: Option<Duration>,
}

/// A running host.
pub struct RunningHost {
    /// The workflows.
    pub supervisor: Supervisor,
    /// The admin API.
    pub admin: AdminServer,
    watcher: tokio::task::JoinHandle<()>,
}

impl RunningHost {
    /// Stops the workflows gracefully (their desired state is kept for the next start) and
    /// the admin API.
    pub async fn shutdown(self) {
        self.watcher.abort();
        self.supervisor.shutdown().await;
        self.admin.shutdown();
    }
}

/// The store file inside a data directory.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("conduit.redb")
}

/// Starts a host on a config file with the given connectors.
pub async fn start(
    config_path: &Path,
    connect: Arc<dyn Connect>,
    options: HostOptions,
) -> Result<RunningHost, HostError> {
    let config = Config::load(config_path)?;
    let data_dir = config.data_dir();
    let store = Store::open(&store_path(&data_dir))?;
    let plugin_host = PluginHost::new(Some(&data_dir.join("plugin-cache")))
        .map_err(|error| HostError::Plugins(error.to_string()))?;
    let supervisor = Supervisor::new(Environment {
        store,
        connect,
        plugins: Arc::new(WasmPlugins::new(plugin_host, config.base_dir())),
        config_path: config_path.to_path_buf(),
    });
    let listen = options
        .admin_listen
        .unwrap_or_else(|| config.file.host.admin_listen.clone());
    let token = std::env::var(admin::TOKEN_ENV).ok();
    let admin = admin::serve(supervisor.clone(), &listen, token).await?;
    tracing::info!(address = %admin.address, "admin API listening");
    let watcher = supervisor.watch_config(options.watch_interval.unwrap_or(Duration::from_secs(1)));
    for (workflow, error) in supervisor.restore().await {
        tracing::error!(%workflow, %error, "could not restart the workflow");
    }
    Ok(RunningHost {
        supervisor,
        admin,
        watcher,
    })
}
