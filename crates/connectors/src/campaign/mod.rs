//! The Adobe Campaign Standard connector: writes profiles and `cus*` custom resources
//! ([`RecordSink`](crate::RecordSink)), reads email events from the event journal
//! ([`EventSource`](crate::EventSource)) and opt-out changes from the export drop folder
//! ([`OptOutExportSource`](crate::OptOutExportSource)).
//!
//! One [`CampaignConnector`] serves one Campaign instance. It owns the HTTP details of the service;
//! it keeps no record addresses itself (a write returns the href it learnt and the engine keeps
//! it, scoped to this instance's API base) and knows nothing of queues or plugins.

pub(crate) mod events;
mod exports;
#[cfg(test)]
mod proptests;
mod records;
pub(crate) mod sink;
mod transport;
mod values;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use url::Url;

pub use events::parse_journal_event;
pub use exports::{EXPORTS_SUBFOLDER, export_file_name, is_opt_out_attribute, parse_export};
pub use sink::{field_kind, filter_name as key_filter_name};
pub use values::{
    campaign_date_text, campaign_datetime_text, parse_instant as parse_campaign_instant,
    rfc3339_from_campaign, to_campaign_json,
};

use crate::http::{RetryPolicy, Secret, build_client};
use transport::Transport;

/// Everything needed to talk to one Campaign Standard instance.
#[derive(Debug, Clone)]
pub struct CampaignSettings {
    /// The API base, `https://mc.adobe.io/<ORG>/campaign`.
    pub api_base: Url,
    /// The IMS token endpoint, `https://ims-na1.adobelogin.com/ims/token/v3`.
    pub ims_token_url: Url,
    /// The client id, also sent as `X-Api-Key`.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// The IMS scopes.
    pub scopes: Vec<String>,
    /// How many writes may be in flight at once.
    pub max_concurrency: usize,
    /// The email event journal endpoint.
    pub events_journal_url: Url,
    /// The root of the opt-out drop folder; exports sit in `d365_loads/exports` under it.
    pub opt_out_drop_root: PathBuf,
    /// An extra CA certificate (PEM file) to trust, e.g. for a TLS-inspecting proxy.
    pub extra_ca_pem: Option<PathBuf>,
    /// Retries of transient failures inside one call.
    pub retry: RetryPolicy,
    /// The timeout of one HTTP request.
    pub request_timeout: Duration,
}

/// Why a connector could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum CampaignSetupError {
    /// The extra CA file could not be read.
    #[error("cannot read the extra CA file {path}: {source}")]
    CaFile {
        /// The configured path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The extra CA file is not a PEM certificate.
    #[error("the extra CA file {path} is not a PEM certificate: {reason}")]
    CaPem {
        /// The configured path.
        path: PathBuf,
        /// What the TLS library said.
        reason: String,
    },
    /// A settings value is unusable.
    #[error("invalid Campaign setting {setting}: {reason}")]
    Invalid {
        /// The setting's name.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the Campaign HTTP client: {0}")]
    Client(String),
}

/// The Campaign Standard connector.
pub struct CampaignConnector {
    settings: CampaignSettings,
    transport: Transport,
    // What the writes of each resource share; refreshed by every `describe`.
    metadata: Mutex<HashMap<String, Arc<ResourceWrites>>>,
}

/// A resource's fields by name, as its metadata declares them.
pub(crate) type FieldKinds = HashMap<String, crate::FieldKind>;

/// What every write of one resource shares, built once per `describe`: its field kinds (to
/// format dates) and the URL of its collection, where new records are POSTed (built once: its
/// path's percent-encoding cost as much as a tenth of a write's host CPU when built per record).
pub(crate) struct ResourceWrites {
    /// The resource's fields by name.
    pub(crate) kinds: FieldKinds,
    /// `<api_base>/profileAndServicesExt/<resource>`.
    pub(crate) collection: Url,
}

impl CampaignConnector {
    /// Builds a connector; nothing is sent until the first call.
    pub fn new(settings: CampaignSettings) -> Result<CampaignConnector, CampaignSetupError> {
        if settings.max_concurrency == 0 {
            return Err(CampaignSetupError::Invalid {
                setting: "max_concurrency",
                reason: "must be at least 1".into(),
            });
        }
        if settings.client_id.trim().is_empty() {
            return Err(CampaignSetupError::Invalid {
                setting: "client_id",
                reason: "is empty".into(),
            });
        }
        if settings.api_base.cannot_be_a_base() {
            return Err(CampaignSetupError::Invalid {
                setting: "api_base",
                reason: format!("{} cannot hold paths", settings.api_base),
            });
        }
        let client = match &settings.extra_ca_pem {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| CampaignSetupError::CaFile {
                    path: path.clone(),
                    source,
                })?;
                // Building a client only fails on what we add to it: here, the CA.
                build_client(
                    settings.request_timeout,
                    Some(&pem),
                    settings.max_concurrency,
                )
                .map_err(|error| CampaignSetupError::CaPem {
                    path: path.clone(),
                    reason: error.to_string(),
                })?
            }
            None => build_client(settings.request_timeout, None, settings.max_concurrency)
                .map_err(|error| CampaignSetupError::Client(error.to_string()))?,
        };
        let transport =
            Transport::new(client, &settings).ok_or_else(|| CampaignSetupError::Invalid {
                setting: "client_id",
                reason: "holds characters an HTTP header cannot carry (control characters)".into(),
            })?;
        Ok(CampaignConnector {
            transport,
            settings,
            metadata: Mutex::new(HashMap::new()),
        })
    }

    /// The settings the connector was built with.
    pub fn settings(&self) -> &CampaignSettings {
        &self.settings
    }

    /// `<api_base>/<segments...>`, each segment percent-encoded.
    fn api_url(&self, segments: &[&str]) -> Url {
        let mut url = self.settings.api_base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }
}
