//! The Dynamics 365 (Dataverse Web API v9.2) connector: a [`ChangeSource`] reading tables
//! through change tracking, a [`RecordSink`] writing through `$batch`, and a
//! [`RecordReader`](crate::RecordReader) reading written records back.
//!
//! Files: `settings.rs` (what the config module fills in), `metadata.rs` (tables, attributes,
//! picklists), `read.rs` (the read path's requests), `page.rs` (change-tracking page bodies read
//! in one pass), `rows.rs` (Dataverse rows into model rows), `write.rs` (batched
//! writes with per-record outcomes), `stored.rs` (records read back for `conduit verify`),
//! `multipart.rs` (the `$batch` framing). Authentication,
//! retries and pacing come from [`crate::http`].

#[cfg(any(test, feature = "fuzzing"))]
pub mod fixtures;
pub mod metadata;
pub mod multipart;
pub(crate) mod page;
#[cfg(test)]
mod proptests;
mod read;
mod rows;
pub mod settings;
mod stored;
pub(crate) mod write;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use reqwest::header::ACCEPT;
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;

use self::metadata::{PicklistOption, TableMeta};
pub use self::settings::Dynamics365Settings;
use super::http::{ApiClient, ClientCredentials, HttpResponse, Pacer, TokenCache, build_client};
use super::{
    ChangePage, ChangeRequest, ChangeSource, ConnectorError, FieldInfo, RecordSink, WriteOutcome,
};
use conduit_model::WriteRecord;

/// The Web API path under the organization URL.
const API_PATH: &str = "api/data/v9.2/";

/// The connector of one Dataverse organization (cheap to clone; clones share caches).
#[derive(Debug, Clone)]
pub struct Dynamics365Connector {
    shared: Arc<Shared>,
}

/// What every request needs: the client, the API root and the metadata cache.
#[derive(Debug)]
struct Shared {
    api: ApiClient,
    /// The absolute API root, ending in `/api/data/v9.2/`.
    root: String,
    /// The API root's path, for request lines inside `$batch`.
    root_path: String,
    batch_size: usize,
    /// Tables by logical name and by entity set.
    metadata: Mutex<HashMap<String, Arc<TableMeta>>>,
}

/// Adds the headers every Web API request carries.
fn odata_headers(request: RequestBuilder) -> RequestBuilder {
    request
        .header(ACCEPT, "application/json")
        .header("OData-MaxVersion", "4.0")
        .header("OData-Version", "4.0")
}

impl Shared {
    fn url(&self, relative: &str) -> String {
        format!("{}{relative}", self.root)
    }

    /// GETs `url` (with an optional `Prefer`) and returns the response, whatever its status.
    async fn get(&self, url: &str, prefer: Option<&str>) -> Result<HttpResponse, ConnectorError> {
        self.api
            .execute(Method::GET, url, |request| {
                let request = odata_headers(request).header("If-None-Match", "null");
                match prefer {
                    Some(prefer) => request.header("Prefer", prefer),
                    None => request,
                }
            })
            .await
    }

    /// GETs `url` and parses a successful JSON body.
    async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        expected: &str,
    ) -> Result<T, ConnectorError> {
        self.get(url, None)
            .await?
            .into_success(format_args!("GET {url}"))?
            .json(url, expected)
    }
}

impl Dynamics365Connector {
    /// A connector for `settings` (validated here; nothing is sent until first use).
    pub fn new(settings: Dynamics365Settings) -> Result<Dynamics365Connector, ConnectorError> {
        settings.validate()?;
        let base = settings.normalized_base()?;
        let root = base
            .join(API_PATH)
            .map_err(|error| ConnectorError::Permanent {
                message: format!(
                    "cannot build the API URL from '{}': {error}",
                    settings.base_url
                ),
            })?;
        let client = build_client(
            settings.request_timeout,
            settings.extra_ca_pem.as_deref(),
            settings.max_concurrency,
        )?;
        let tokens = TokenCache::new(
            client.reqwest().clone(),
            ClientCredentials {
                token_url: settings.token_url.clone(),
                client_id: settings.client_id.clone(),
                client_secret: settings.client_secret.clone(),
                scope: settings.effective_scope()?,
            },
            settings.token_refresh_margin,
        );
        let api = ApiClient::new(
            client,
            tokens,
            Pacer::new(settings.max_concurrency),
            settings.retry.clone(),
        )
        .named("dynamics");
        Ok(Dynamics365Connector {
            shared: Arc::new(Shared {
                api,
                root_path: root.path().to_string(),
                root: root.to_string(),
                batch_size: settings.batch_size,
                metadata: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The absolute API root, e.g. `https://org.api.crm.dynamics.com/api/data/v9.2/`.
    pub fn api_root(&self) -> &str {
        &self.shared.root
    }

    /// The metadata of table `name` (logical name or entity set), cached after the first read.
    pub async fn table(&self, name: &str) -> Result<Arc<TableMeta>, ConnectorError> {
        self.shared.table(name).await
    }

    /// The options (value and label) of a picklist, state or status attribute.
    pub async fn picklist_options(
        &self,
        table: &str,
        attribute: &str,
    ) -> Result<Vec<PicklistOption>, ConnectorError> {
        self.shared.picklist_options(table, attribute).await
    }
}

#[async_trait]
impl ChangeSource for Dynamics365Connector {
    async fn read_changes(
        &self,
        request: &ChangeRequest,
        cursor: Option<&str>,
    ) -> Result<ChangePage, ConnectorError> {
        self.shared.read_changes(request, cursor).await
    }

    async fn read_rows(
        &self,
        request: &ChangeRequest,
        keys: &[String],
    ) -> Result<conduit_model::RecordBatch, ConnectorError> {
        self.shared.read_rows(request, keys).await
    }

    async fn count_rows(&self, table: &str) -> Result<u64, ConnectorError> {
        self.shared.count_rows(table).await
    }

    async fn describe(&self, table: &str) -> Result<Vec<FieldInfo>, ConnectorError> {
        self.shared.describe(table).await
    }
}

#[async_trait]
impl RecordSink for Dynamics365Connector {
    async fn write(&self, records: &[WriteRecord]) -> Vec<WriteOutcome> {
        self.shared.write(records).await
    }

    async fn describe(&self, table: &str) -> Result<Vec<FieldInfo>, ConnectorError> {
        self.shared.describe(table).await
    }

    async fn check(&self) -> Result<(), ConnectorError> {
        let url = self.shared.url("WhoAmI");
        let body: serde_json::Value = self.shared.get_json(&url, "a WhoAmI response").await?;
        if body
            .get("UserId")
            .and_then(serde_json::Value::as_str)
            .is_none()
        {
            return Err(ConnectorError::Permanent {
                message: format!(
                    "the response of {url} has no UserId: is this a Dataverse Web API?"
                ),
            });
        }
        Ok(())
    }
}
