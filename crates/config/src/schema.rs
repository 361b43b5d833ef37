//! The TOML schema of `conduit.toml`: host settings, the two services' credentials (secrets
//! only as environment-variable names), limits, and the three workflows with their mappings.
//! Unknown keys are errors, so a typo never silently does nothing.

use std::collections::BTreeMap;

use conduit_model::{WorkflowId, default_builtin};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::choice::{Choice, Combine, Direction, FilterOp};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Host-wide settings.
    #[serde(default)]
    pub host: HostSection,
    /// The Dynamics 365 connection.
    pub dynamics: Option<DynamicsSection>,
    /// The Campaign Standard connection.
    pub campaign: Option<CampaignSection>,
    /// Default limits for every workflow.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Dynamics 365 to Campaign.
    pub ingress: Option<IngressSection>,
    /// Campaign to Dynamics 365.
    pub egress: Option<EgressSection>,
    /// Opt-in/out.
    pub optinout: Option<OptInOutSection>,
}

/// Host-wide settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// Where the redb store and the plugin cache live (relative to the config file).
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// The admin API's listen address; anything but loopback needs `CONDUIT_ADMIN_TOKEN` and
    /// TLS (or `admin_allow_plain_http`).
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// Host names (or addresses) the admin API answers to besides loopback and the listen
    /// address: any other `Host` header is refused, which defeats DNS rebinding.
    #[serde(default)]
    pub admin_hosts: Vec<String>,
    /// A PEM certificate (chain) the admin API serves HTTPS with; needs `admin_tls_key`.
    #[serde(default)]
    pub admin_tls_cert: Option<String>,
    /// The PEM private key of `admin_tls_cert`.
    #[serde(default)]
    pub admin_tls_key: Option<String>,
    /// Allows plain HTTP off loopback, for a listener whose network already provides TLS
    /// (e.g. a cluster-internal Service behind a TLS-terminating proxy or mesh).
    #[serde(default)]
    pub admin_allow_plain_http: bool,
}

impl Default for HostSection {
    fn default() -> Self {
        HostSection {
            data_dir: default_data_dir(),
            admin_listen: default_admin_listen(),
            admin_hosts: Vec::new(),
            admin_tls_cert: None,
            admin_tls_key: None,
            admin_allow_plain_http: false,
        }
    }
}

fn default_data_dir() -> String {
    "conduit-data".into()
}

fn default_admin_listen() -> String {
    "127.0.0.1:7878".into()
}

/// The Dynamics 365 (Dataverse) connection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicsSection {
    /// The organisation URL, e.g. `https://contoso.api.crm.dynamics.com/`.
    pub url: Spanned<String>,
    /// The OAuth2 token endpoint, e.g. `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`.
    pub token_url: Spanned<String>,
    /// The app registration's client id.
    pub client_id: String,
    /// The name of the environment variable holding the client secret.
    pub client_secret_env: Spanned<String>,
    /// The OAuth scope; defaults to `<url>/.default`.
    pub scope: Option<String>,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Operations per `$batch` (at most 1000).
    #[serde(default = "default_dynamics_batch")]
    pub batch_size: Spanned<usize>,
    /// A PEM file with an extra CA certificate to trust.
    pub ca_file: Option<String>,
}

/// The Campaign Standard connection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSection {
    /// The API base, e.g. `https://mc.adobe.io/<org>/campaign`.
    pub url: Spanned<String>,
    /// The IMS token endpoint.
    #[serde(default = "default_ims_url")]
    pub ims_url: Spanned<String>,
    /// The Developer Console client id (also the API key).
    pub client_id: String,
    /// The name of the environment variable holding the client secret.
    pub client_secret_env: Spanned<String>,
    /// The IMS scopes.
    #[serde(default = "default_campaign_scopes")]
    pub scopes: Vec<String>,
    /// The email event journal URL.
    pub journal_url: Option<Spanned<String>>,
    /// The folder where Campaign drops opt-out export files (an SFTP mount in production).
    pub opt_out_exports: Option<Spanned<String>>,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// A PEM file with an extra CA certificate to trust.
    pub ca_file: Option<String>,
}

fn default_concurrency() -> usize {
    8
}

fn default_dynamics_batch() -> Spanned<usize> {
    Spanned::new(0..0, 500)
}

fn default_ims_url() -> Spanned<String> {
    Spanned::new(0..0, "https://ims-na1.adobelogin.com/ims/token/v3".into())
}

fn default_campaign_scopes() -> Vec<String> {
    [
        "AdobeID",
        "openid",
        "read_organizations",
        "campaign_sdk",
        "event_receiver_api",
    ]
    .map(String::from)
    .to_vec()
}

/// Sandbox and failure limits; every field optional so a workflow can override a few.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Wall-clock budget of one plugin call, in milliseconds.
    pub plugin_deadline_ms: Option<u64>,
    /// Memory cap of one plugin instance, in MiB.
    pub plugin_memory_mb: Option<u64>,
    /// Consecutive stage failures before the workflow goes to ERROR.
    pub failure_threshold: Option<u32>,
    /// Replay is refused when the backlog or the table holds at least this many rows.
    pub replay_max_rows: Option<u64>,
    /// How long an update-only write waits for its record to be created, in seconds.
    pub missing_record_wait_secs: Option<u64>,
}

/// Settings every workflow has.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pacing {
    /// Records per source page.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Records per destination write batch.
    #[serde(default = "default_write_batch")]
    pub write_batch: usize,
    /// Pause between polls once caught up, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            page_size: default_page_size(),
            write_batch: default_write_batch(),
            poll_interval_ms: default_poll_ms(),
        }
    }
}

fn default_page_size() -> u32 {
    1000
}

fn default_write_batch() -> usize {
    500
}

fn default_poll_ms() -> u64 {
    2000
}

/// Dynamics 365 to Campaign.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngressSection {
    /// The record-mapper plugin (`builtin:table-mapper` or a `.wasm` path).
    #[serde(default = "default_table_mapper")]
    pub plugin: Spanned<String>,
    /// Paging and batching (`[<workflow>.pacing]`).
    #[serde(default)]
    pub pacing: Pacing,
    /// Limit overrides.
    #[serde(default)]
    pub limits: LimitsSection,
    /// The table mappings.
    #[serde(default)]
    pub mappings: Vec<TableMapping>,
}

fn default_table_mapper() -> Spanned<String> {
    Spanned::new(0..0, default_builtin(WorkflowId::Ingress).reference())
}

/// One Dynamics 365 table mapped onto one Campaign resource.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableMapping {
    /// The mapping's name, unique within the workflow.
    pub name: Spanned<String>,
    /// The Dynamics 365 table's logical name, e.g. `contact`.
    pub source: Spanned<String>,
    /// The Campaign resource, e.g. `profile` or `cusVehicle`.
    pub destination: Spanned<String>,
    /// The key mapping.
    pub key: KeyMapping,
    /// The field mappings.
    #[serde(default)]
    pub fields: Vec<FieldMapping>,
    /// Value replacements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replacements: Vec<Replacement>,
    /// Filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filters>,
    /// Propagate Dynamics 365 deletes.
    #[serde(default = "yes")]
    pub apply_deletes: bool,
    /// Write picklists' numeric values instead of their labels.
    #[serde(default)]
    pub technical_picklist_values: bool,
    /// Extra settings for a custom plugin, passed through untouched.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, toml::Value>,
}

fn yes() -> bool {
    true
}

/// The key mapping of a table mapping.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMapping {
    /// The Dynamics 365 primary key, e.g. `contactid`.
    pub source: Spanned<String>,
    /// The Campaign identification key field, e.g. `externalId`.
    pub destination: Spanned<String>,
}

/// One field mapping.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// The Dynamics 365 column.
    pub source: Spanned<String>,
    /// The Campaign field.
    pub destination: Spanned<String>,
    /// Propagate incremental changes of this field (off: written only on initial load and replay).
    #[serde(default = "yes")]
    pub apply_updates: bool,
}

/// One value replacement.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    /// The mapped Dynamics 365 column.
    pub field: Spanned<String>,
    /// The source value, matched exactly.
    pub from: String,
    /// The value written instead.
    pub to: String,
}

/// The filters of a table mapping.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// `and` (all rules) or `or` (any rule).
    #[serde(default = "default_combine")]
    pub combine: Spanned<Choice<Combine>>,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<FilterRule>,
    /// Delete records in Campaign that the filters exclude.
    #[serde(default)]
    pub delete_filtered_out: bool,
}

fn default_combine() -> Spanned<Choice<Combine>> {
    Spanned::new(0..0, Choice::Known(Combine::And))
}

/// One filter rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRule {
    /// Any Dynamics 365 column of the table.
    pub field: Spanned<String>,
    /// `eq ne gt ge lt le contains startswith endswith null notnull`.
    pub op: Spanned<Choice<FilterOp>>,
    /// The value compared with (absent for `null`/`notnull`).
    pub value: Option<String>,
}

/// Campaign to Dynamics 365.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSection {
    /// The event-mapper plugin.
    #[serde(default = "default_email_events")]
    pub plugin: Spanned<String>,
    /// Paging and batching (`[<workflow>.pacing]`).
    #[serde(default)]
    pub pacing: Pacing,
    /// Limit overrides.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Send events become activities.
    #[serde(default)]
    pub send: bool,
    /// Open events become activities.
    #[serde(default)]
    pub open: bool,
    /// Click events become activities.
    #[serde(default)]
    pub click: bool,
    /// Hard bounces become activities.
    #[serde(default)]
    pub bounce: bool,
    /// Extra settings for a custom plugin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, toml::Value>,
}

fn default_email_events() -> Spanned<String> {
    Spanned::new(0..0, default_builtin(WorkflowId::Egress).reference())
}

/// Opt-in/out.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OptInOutSection {
    /// The opt-out-resolver plugin.
    #[serde(default = "default_opt_out")]
    pub plugin: Spanned<String>,
    /// Paging and batching (`[<workflow>.pacing]`).
    #[serde(default)]
    pub pacing: Pacing,
    /// Limit overrides.
    #[serde(default)]
    pub limits: LimitsSection,
    /// `disabled`, `dynamics-to-campaign`, `campaign-to-dynamics` or `bidirectional`.
    #[serde(default = "default_direction")]
    pub direction: Spanned<Choice<Direction>>,
    /// The attribute pairs.
    #[serde(default)]
    pub pairs: Vec<OptOutPair>,
    /// Extra settings for a custom plugin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, toml::Value>,
}

fn default_opt_out() -> Spanned<String> {
    Spanned::new(0..0, default_builtin(WorkflowId::OptInOut).reference())
}

fn default_direction() -> Spanned<Choice<Direction>> {
    Spanned::new(0..0, Choice::Known(Direction::Disabled))
}

/// One opt-out attribute pair.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OptOutPair {
    /// The Dynamics 365 boolean column, e.g. `donotbulkemail`.
    pub dynamics: Spanned<String>,
    /// The Campaign attribute, e.g. `blackListEmail`.
    pub campaign: Spanned<String>,
}
