//! The engine's connector factory over the real HTTP connectors: builds the Dynamics 365 and
//! Campaign Standard clients from a config, reading each secret from the environment variable
//! the config names, at the moment a workflow starts.

use std::collections::HashMap;
use std::sync::Arc;

use conduit_config::Config;
use conduit_connectors::ConnectorError;
use conduit_connectors::campaign::{CampaignConnector, CampaignSettings, CampaignSetupError};
use conduit_connectors::dynamics365::{Dynamics365Connector, Dynamics365Settings};
use conduit_connectors::http;
use conduit_engine::{Connect, ConnectFailed, Services};

type SecretLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Why the connectors cannot be built from a config; the engine shows the message as the
/// reason a start failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A service's section is missing.
    #[error("the config has no [{0}] section")]
    MissingSection(&'static str),
    /// The environment variable holding a secret is not set.
    #[error(
        "the environment variable {variable} (named by {key}) is not set; export the secret in it"
    )]
    MissingSecret {
        /// The variable.
        variable: String,
        /// The config key naming it.
        key: &'static str,
    },
    /// `dynamics.ca_file` cannot be read or holds no certificate.
    #[error("dynamics.ca_file: {0}")]
    DynamicsCaFile(#[source] ConnectorError),
    /// The Dynamics 365 connector refused its settings.
    #[error("Dynamics 365 settings: {0}")]
    Dynamics(#[source] ConnectorError),
    /// The Campaign connector refused its settings.
    #[error("Campaign settings: {0}")]
    Campaign(#[source] CampaignSetupError),
}

/// Builds connectors; secrets come from the environment (or, for the demo and tests, from a map).
pub struct ServiceConnect {
    secrets: Arc<SecretLookup>,
}

impl ServiceConnect {
    /// Secrets from environment variables.
    pub fn from_env() -> ServiceConnect {
        ServiceConnect {
            secrets: Arc::new(|name| std::env::var(name).ok().filter(|v| !v.is_empty())),
        }
    }

    /// Secrets from a map of variable names to values (in-process demo and tests).
    pub fn with_secrets(secrets: HashMap<String, String>) -> ServiceConnect {
        ServiceConnect {
            secrets: Arc::new(move |name| secrets.get(name).cloned()),
        }
    }

    fn secret(&self, variable: &str, key: &'static str) -> Result<String, ConnectError> {
        (self.secrets)(variable).ok_or_else(|| ConnectError::MissingSecret {
            variable: variable.to_string(),
            key,
        })
    }
}

impl Connect for ServiceConnect {
    fn connect(&self, config: &Config) -> Result<Services, ConnectFailed> {
        self.build(config).map_err(ConnectFailed::new)
    }
}

impl ServiceConnect {
    /// The connectors of `config`.
    fn build(&self, config: &Config) -> Result<Services, ConnectError> {
        let dynamics = config
            .dynamics()
            .ok_or(ConnectError::MissingSection("dynamics"))?;
        let campaign = config
            .campaign()
            .ok_or(ConnectError::MissingSection("campaign"))?;

        let dynamics_secret =
            self.secret(&dynamics.client_secret_env, "dynamics.client_secret_env")?;
        let mut dynamics_settings = Dynamics365Settings::new(
            dynamics.url.clone(),
            dynamics.token_url.clone(),
            dynamics.client_id.clone(),
            http::Secret::new(dynamics_secret),
        );
        dynamics_settings.scope = dynamics.scope.clone();
        dynamics_settings.max_concurrency = dynamics.max_concurrency;
        dynamics_settings.batch_size = dynamics.batch_size;
        if let Some(ca) = &dynamics.ca_file {
            let pem = http::read_ca_file(ca).map_err(ConnectError::DynamicsCaFile)?;
            dynamics_settings.extra_ca_pem = Some(pem);
        }
        let dynamics_connector =
            Arc::new(Dynamics365Connector::new(dynamics_settings).map_err(ConnectError::Dynamics)?);

        let campaign_secret =
            self.secret(&campaign.client_secret_env, "campaign.client_secret_env")?;
        // Without egress there is no journal to read; config validation requires it for egress.
        let journal = campaign
            .journal_url
            .clone()
            .unwrap_or_else(|| campaign.url.clone());
        let drop_root = campaign.opt_out_exports.clone();
        let campaign_settings = CampaignSettings {
            api_base: campaign.url.clone(),
            ims_token_url: campaign.ims_url.clone(),
            client_id: campaign.client_id.clone(),
            client_secret: http::Secret::new(campaign_secret),
            scopes: campaign.scopes.clone(),
            max_concurrency: campaign.max_concurrency,
            events_journal_url: journal,
            opt_out_drop_root: drop_root.clone().unwrap_or_else(|| config.data_dir()),
            extra_ca_pem: campaign.ca_file.clone(),
            retry: http::RetryPolicy::default(),
            request_timeout: std::time::Duration::from_secs(120),
        };
        let campaign_connector =
            Arc::new(CampaignConnector::new(campaign_settings).map_err(ConnectError::Campaign)?);
        Ok(Services {
            dynamics_source: dynamics_connector.clone(),
            dynamics_records: Some(dynamics_connector.clone()),
            dynamics_sink: dynamics_connector,
            campaign_sink: campaign_connector.clone(),
            events: campaign_connector.clone(),
            profile_opt_outs: Some(campaign_connector.clone()),
            campaign_records: Some(campaign_connector.clone()),
            opt_out_exports: drop_root
                .map(|_| campaign_connector as Arc<dyn conduit_connectors::OptOutExportSource>),
        })
    }
}
