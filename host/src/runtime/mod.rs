//! Assembles a running host from a config file: the store in the data directory, the Wasm
//! plugin runtime with its on-disk cache, the connectors, the workflow supervisor (restoring
//! the workflows that were running), the config watcher and the admin API (whose workflow
//! editor checks the edited workflow's plugin through the same plugin runtime). Everything it
//! creates on disk is private to the host's user; existing paths others can read are warned
//! about at start.

mod connectors;
mod plugin_check;
mod plugins;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use conduit_admin::{self as admin, AdminServer};
use conduit_config::{Config, ConfigError};
use conduit_engine::{Connect, Environment, Supervisor};
use conduit_plugin_host::PluginHost;
use conduit_store::Store;

pub use connectors::{ConnectError, ServiceConnect};
pub use plugin_check::{check_plugins, check_workflow_plugin, workflow_world};
pub use plugins::{
    WasmEventMapper, WasmOptOutResolver, WasmPlugins, WasmRecordMapper, resolve_reference,
    sandbox_limits,
};

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The config is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] conduit_store::StoreError),
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
    /// Warnings found at start (e.g. a data directory other users can read); each is logged.
    pub warnings: Vec<String>,
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
    // Looked at before anything is created: what Conduit creates is private already.
    let warnings = private_data_warnings(&config);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let store = Store::open(&store_path(&data_dir))?;
    let plugin_host = PluginHost::new(Some(&data_dir.join("plugin-cache")))
        .map_err(|error| HostError::Plugins(error.to_string()))?;
    // The editor's check loads the edited workflow's plugin in the same engine and cache.
    let checking_host = plugin_host.clone();
    let plugin_check = admin::PluginCheck::new(move |config, workflow| {
        check_workflow_plugin(config, &checking_host, workflow)
    });
    let supervisor = Supervisor::new(Environment {
        store,
        connect,
        plugins: Arc::new(WasmPlugins::new(plugin_host, config.base_dir())),
        config_path: config_path.to_path_buf(),
    });
    let host = config.host();
    let admin_options = admin::AdminOptions {
        listen: options
            .admin_listen
            .unwrap_or_else(|| host.admin_listen.clone()),
        token: std::env::var(admin::TOKEN_ENV).ok(),
        hosts: host.admin_hosts.clone(),
        tls: host.admin_tls.as_ref().map(|tls| admin::TlsFiles {
            cert: tls.cert.clone(),
            key: tls.key.clone(),
        }),
        allow_plain_http: host.admin_allow_plain_http,
        plugin_check: Some(plugin_check),
    };
    let admin = admin::serve(supervisor.clone(), admin_options).await?;
    tracing::info!(url = %admin.url(), "admin API listening");
    let watcher = supervisor.watch_config(options.watch_interval.unwrap_or(Duration::from_secs(1)));
    for (workflow, error) in supervisor.restore().await {
        tracing::error!(%workflow, %error, "could not restart the workflow");
    }
    Ok(RunningHost {
        supervisor,
        admin,
        warnings,
        watcher,
    })
}

/// Warnings for the existing paths holding personal data or keys that other users can read:
/// the data directory, the store, the plugin cache, the opt-out export folder and the admin
/// TLS key. Each names the path and the `chmod` that fixes it.
pub fn private_data_warnings(config: &Config) -> Vec<String> {
    let data_dir = config.data_dir();
    let mut checks = vec![
        (
            data_dir.clone(),
            "the store with contacts' personal data (host.data_dir)",
        ),
        (store_path(&data_dir), "contacts' personal data"),
        (data_dir.join("plugin-cache"), "compiled mapping plugins"),
    ];
    if let Some(folder) = config
        .campaign()
        .and_then(|campaign| campaign.opt_out_exports.as_ref())
    {
        checks.push((
            folder.clone(),
            "Campaign's opt-out exports (campaign.opt_out_exports)",
        ));
    }
    if let Some(tls) = &config.host().admin_tls {
        checks.push((
            tls.key.clone(),
            "the admin API's TLS private key (host.admin_tls_key)",
        ));
    }
    checks
        .iter()
        .filter_map(|(path, holds)| conduit_base::private::looser_than_private(path, holds))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn loose_data_export_and_key_paths_are_warned_about_and_private_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("conduit.toml");
        let text = r#"
[host]
data_dir = "data"
admin_tls_cert = "cert.pem"
admin_tls_key = "key.pem"
[campaign]
url = "https://mc.adobe.io/acme/campaign"
client_id = "key"
client_secret_env = "ACS_SECRET"
opt_out_exports = "exports"
"#;
        std::fs::write(&config_path, text).unwrap();
        let config = Config::load(&config_path).unwrap();
        assert_eq!(private_data_warnings(&config), Vec::<String>::new());

        let loose = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        for folder in ["data", "data/plugin-cache", "exports"] {
            std::fs::create_dir(dir.path().join(folder)).unwrap();
            loose(&dir.path().join(folder), 0o755);
        }
        for file in ["data/conduit.redb", "key.pem"] {
            std::fs::write(dir.path().join(file), "x").unwrap();
            loose(&dir.path().join(file), 0o644);
        }
        let warnings = private_data_warnings(&config);
        assert_eq!(warnings.len(), 5, "{warnings:#?}");
        for (needle, fix) in [
            ("host.data_dir", "chmod 700"),
            ("conduit.redb", "chmod 600"),
            ("plugin-cache", "chmod 700"),
            ("campaign.opt_out_exports", "chmod 700"),
            ("host.admin_tls_key", "chmod 600"),
        ] {
            assert!(
                warnings
                    .iter()
                    .any(|w| w.contains(needle) && w.contains(fix)),
                "{needle}: {warnings:#?}"
            );
        }
        for folder in ["data", "data/plugin-cache", "exports"] {
            loose(&dir.path().join(folder), 0o700);
        }
        for file in ["data/conduit.redb", "key.pem"] {
            loose(&dir.path().join(file), 0o600);
        }
        assert_eq!(private_data_warnings(&config), Vec::<String>::new());
    }
}
