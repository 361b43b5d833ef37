//! The config resolved into typed specs: what the engine, the admin API and the binary's wiring
//! read. Plain Rust values (strings, enums, numbers, durations, resolved paths, parsed URLs),
//! defaults and limit overrides applied, no TOML and no spans. Built once per parse by
//! [`resolve`], which reports the values that cannot be converted (a word outside its set, a
//! URL that does not parse) as located problems beside the validator's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conduit_model::WorkflowId;
use toml::Spanned;

use super::choice::{Choice, ClosedSet, Combine, Direction, FilterOp};
use super::schema::{ConfigFile, LimitsSection, Pacing, TableMapping};
use super::{Locator, Problem};

/// Every spec of a config.
#[derive(Debug, Clone, PartialEq)]
pub struct Specs {
    /// Host-wide settings.
    pub host: HostSpec,
    /// The Dynamics 365 connection, when configured.
    pub dynamics: Option<DynamicsSpec>,
    /// The Campaign Standard connection, when configured.
    pub campaign: Option<CampaignSpec>,
    /// Dynamics 365 to Campaign, when configured.
    pub ingress: Option<IngressSpec>,
    /// Campaign to Dynamics 365, when configured.
    pub egress: Option<EgressSpec>,
    /// Opt-in/out, when configured.
    pub optinout: Option<OptInOutSpec>,
}

/// Host-wide settings, paths resolved against the config file's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// The folder of the store and the plugin cache.
    pub data_dir: PathBuf,
    /// The admin API's listen address.
    pub admin_listen: String,
    /// Host names the admin API answers to besides loopback and the listen address.
    pub admin_hosts: Vec<String>,
    /// The certificate and key the admin API serves HTTPS with.
    pub admin_tls: Option<TlsFiles>,
    /// Plain HTTP allowed off loopback.
    pub admin_allow_plain_http: bool,
}

/// A PEM certificate (chain) and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate (chain).
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// The Dynamics 365 (Dataverse) connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicsSpec {
    /// The organisation URL, as written (checked to be a URL).
    pub url: String,
    /// The OAuth2 token endpoint, as written (checked to be a URL).
    pub token_url: String,
    /// The app registration's client id.
    pub client_id: String,
    /// The environment variable holding the client secret.
    pub client_secret_env: String,
    /// The OAuth scope, when not `<url>/.default`.
    pub scope: Option<String>,
    /// Requests in flight at once (at least 1).
    pub max_concurrency: usize,
    /// Operations per `$batch` (1 to 1000).
    pub batch_size: usize,
    /// An extra CA certificate to trust.
    pub ca_file: Option<PathBuf>,
}

/// The Campaign Standard connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignSpec {
    /// The API base.
    pub url: url::Url,
    /// The IMS token endpoint.
    pub ims_url: url::Url,
    /// The Developer Console client id (also the API key).
    pub client_id: String,
    /// The environment variable holding the client secret.
    pub client_secret_env: String,
    /// The IMS scopes.
    pub scopes: Vec<String>,
    /// The email event journal (required by Egress).
    pub journal_url: Option<url::Url>,
    /// The folder Campaign drops opt-out exports into.
    pub opt_out_exports: Option<PathBuf>,
    /// Requests in flight at once (at least 1).
    pub max_concurrency: usize,
    /// An extra CA certificate to trust.
    pub ca_file: Option<PathBuf>,
}

/// The limits a workflow runs with: its overrides over the config's over the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLimits {
    /// Wall-clock budget of one plugin call.
    pub plugin_deadline: Duration,
    /// Memory cap of one plugin instance, in MiB.
    pub plugin_memory_mb: u64,
    /// Consecutive stage failures before ERROR.
    pub failure_threshold: u32,
    /// The replay guard: a replay is refused from this many rows (backlog or table).
    pub replay_max_rows: u64,
    /// How long an update-only write waits for its record to be created.
    pub missing_record_wait: Duration,
}

impl EffectiveLimits {
    /// The limits with every override of `specific`, then of `general`, over the defaults.
    fn resolve(specific: &LimitsSection, general: &LimitsSection) -> EffectiveLimits {
        EffectiveLimits {
            plugin_deadline: Duration::from_millis(
                specific
                    .plugin_deadline_ms
                    .or(general.plugin_deadline_ms)
                    .unwrap_or(2_000),
            ),
            plugin_memory_mb: specific
                .plugin_memory_mb
                .or(general.plugin_memory_mb)
                .unwrap_or(64),
            failure_threshold: specific
                .failure_threshold
                .or(general.failure_threshold)
                .unwrap_or(5),
            replay_max_rows: specific
                .replay_max_rows
                .or(general.replay_max_rows)
                .unwrap_or(2_000_000),
            missing_record_wait: Duration::from_secs(
                specific
                    .missing_record_wait_secs
                    .or(general.missing_record_wait_secs)
                    .unwrap_or(3_600),
            ),
        }
    }
}

/// The limits of a workflow without a section: the config's `[limits]` over the defaults.
pub(super) fn default_limits(general: &LimitsSection) -> EffectiveLimits {
    EffectiveLimits::resolve(&LimitsSection::default(), general)
}

/// Paging and batching of a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacingSpec {
    /// Records per source page.
    pub page_size: u32,
    /// Records per destination write batch.
    pub write_batch: usize,
    /// Pause between polls once caught up.
    pub poll_interval: Duration,
}

impl From<&Pacing> for PacingSpec {
    fn from(pacing: &Pacing) -> Self {
        PacingSpec {
            page_size: pacing.page_size,
            write_batch: pacing.write_batch,
            poll_interval: Duration::from_millis(pacing.poll_interval_ms),
        }
    }
}

impl Default for PacingSpec {
    fn default() -> Self {
        PacingSpec::from(&Pacing::default())
    }
}

/// What every workflow has: its plugin, pacing and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowSpec {
    /// The plugin, as written: `builtin:<name>` or a path relative to the config file.
    pub plugin: String,
    /// Paging and batching.
    pub pacing: PacingSpec,
    /// The limits in force.
    pub limits: EffectiveLimits,
}

/// A plugin's own settings table (`settings = { ... }`), as the JSON `configure` receives.
pub type OwnSettings = serde_json::Map<String, serde_json::Value>;

/// Dynamics 365 to Campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct IngressSpec {
    /// Plugin, pacing and limits.
    pub workflow: WorkflowSpec,
    /// The table mappings, in file order.
    pub mappings: Vec<MappingSpec>,
}

impl IngressSpec {
    /// The mapping named `name`.
    pub fn mapping(&self, name: &str) -> Option<&MappingSpec> {
        self.mappings.iter().find(|mapping| mapping.name == name)
    }

    /// The mappings' names, for messages: `a, b` (`none` when there are none).
    pub fn mapping_names(&self) -> String {
        if self.mappings.is_empty() {
            return "none".to_owned();
        }
        let names: Vec<&str> = self.mappings.iter().map(|m| m.name.as_str()).collect();
        names.join(", ")
    }
}

/// One Dynamics 365 table mapped onto one Campaign resource.
#[derive(Debug, Clone, PartialEq)]
pub struct MappingSpec {
    /// Unique within the workflow.
    pub name: String,
    /// The Dynamics 365 table's logical name.
    pub source: String,
    /// The Campaign resource.
    pub destination: String,
    /// The key mapping.
    pub key: KeySpec,
    /// The field mappings, in file order.
    pub fields: Vec<FieldSpec>,
    /// Value replacements, in file order.
    pub replacements: Vec<ReplacementSpec>,
    /// Filters, when the mapping has a `filters` table.
    pub filters: Option<FiltersSpec>,
    /// Propagate Dynamics 365 deletes.
    pub apply_deletes: bool,
    /// How picklists are written.
    pub picklists: PicklistMode,
    /// The plugin's own settings.
    pub settings: OwnSettings,
}

/// The key mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// The Dynamics 365 primary key.
    pub source: String,
    /// The Campaign identification key field.
    pub destination: String,
}

/// One field mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    /// The Dynamics 365 column.
    pub source: String,
    /// The Campaign field.
    pub destination: String,
    /// Incremental changes are propagated (off: only initial load and replay write it).
    pub apply_updates: bool,
}

/// One value replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacementSpec {
    /// The mapped Dynamics 365 column.
    pub field: String,
    /// The source value, matched exactly.
    pub from: String,
    /// The value written instead.
    pub to: String,
}

/// A mapping's filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiltersSpec {
    /// How the rules combine.
    pub combine: Combine,
    /// The rules.
    pub rules: Vec<FilterRuleSpec>,
    /// Records the filters exclude are deleted in Campaign.
    pub delete_filtered_out: bool,
}

/// One filter rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRuleSpec {
    /// The Dynamics 365 column.
    pub field: String,
    /// The comparison.
    pub op: FilterOp,
    /// The value compared with (none for `null`/`notnull`).
    pub value: Option<String>,
}

/// How a mapping writes picklist values (`technical_picklist_values`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PicklistMode {
    /// Their labels (the default).
    Labels,
    /// Their numeric values.
    TechnicalValues,
}

/// Campaign to Dynamics 365.
#[derive(Debug, Clone, PartialEq)]
pub struct EgressSpec {
    /// Plugin, pacing and limits.
    pub workflow: WorkflowSpec,
    /// Send events become activities.
    pub send: bool,
    /// Open events become activities.
    pub open: bool,
    /// Click events become activities.
    pub click: bool,
    /// Hard bounces become activities.
    pub bounce: bool,
    /// The plugin's own settings.
    pub settings: OwnSettings,
}

/// Opt-in/out.
#[derive(Debug, Clone, PartialEq)]
pub struct OptInOutSpec {
    /// Plugin, pacing and limits.
    pub workflow: WorkflowSpec,
    /// Which way flags flow.
    pub direction: Direction,
    /// The attribute pairs, in file order.
    pub pairs: Vec<OptOutPairSpec>,
    /// The plugin's own settings.
    pub settings: OwnSettings,
}

/// One opt-out attribute pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOutPairSpec {
    /// The Dynamics 365 boolean column.
    pub dynamics: String,
    /// The Campaign attribute (one of `conduit_model::OPT_OUT_ATTRIBUTES`).
    pub campaign: String,
}

impl MappingSpec {
    /// What the plugin's `configure` receives for this mapping (docs/plugins.md, "What
    /// configure receives"): the documented keys as the config writes them, plus `settings`,
    /// the plugin's own table (`{}` when absent). Its digest tells a changed mapping at start.
    pub fn plugin_settings(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        object.insert("name".into(), self.name.clone().into());
        object.insert("source".into(), self.source.clone().into());
        object.insert("destination".into(), self.destination.clone().into());
        object.insert(
            "key".into(),
            serde_json::json!({"source": self.key.source, "destination": self.key.destination}),
        );
        object.insert(
            "fields".into(),
            self.fields
                .iter()
                .map(|field| {
                    serde_json::json!({
                        "source": field.source,
                        "destination": field.destination,
                        "apply_updates": field.apply_updates,
                    })
                })
                .collect(),
        );
        if !self.replacements.is_empty() {
            object.insert(
                "replacements".into(),
                self.replacements
                    .iter()
                    .map(|r| serde_json::json!({"field": r.field, "from": r.from, "to": r.to}))
                    .collect(),
            );
        }
        if let Some(filters) = &self.filters {
            object.insert(
                "filters".into(),
                serde_json::json!({
                    "combine": filters.combine.as_str(),
                    "rules": filters.rules.iter().map(|rule| serde_json::json!({
                        "field": rule.field,
                        "op": rule.op.as_str(),
                        "value": rule.value,
                    })).collect::<Vec<_>>(),
                    "delete_filtered_out": filters.delete_filtered_out,
                }),
            );
        }
        object.insert("apply_deletes".into(), self.apply_deletes.into());
        object.insert(
            "technical_picklist_values".into(),
            (self.picklists == PicklistMode::TechnicalValues).into(),
        );
        object.insert(
            "settings".into(),
            serde_json::Value::Object(self.settings.clone()),
        );
        serde_json::Value::Object(object)
    }

    /// The columns this mapping reads: the key, the mapped fields, the filtered fields and the
    /// change time (`modifiedon`), each once, in that order.
    pub fn source_columns(&self) -> Vec<String> {
        let mut columns = vec![self.key.source.clone()];
        columns.extend(self.fields.iter().map(|f| f.source.clone()));
        if let Some(filters) = &self.filters {
            columns.extend(filters.rules.iter().map(|r| r.field.clone()));
        }
        columns.push("modifiedon".into());
        let mut seen = std::collections::HashSet::new();
        columns.retain(|c| seen.insert(c.clone()));
        columns
    }
}

impl EgressSpec {
    /// What the plugin's `configure` receives: `send`, `open`, `click`, `bounce`, `settings`.
    pub fn plugin_settings(&self) -> serde_json::Value {
        serde_json::json!({
            "send": self.send,
            "open": self.open,
            "click": self.click,
            "bounce": self.bounce,
            "settings": self.settings,
        })
    }
}

impl OptInOutSpec {
    /// What the plugin's `configure` receives: `direction`, `pairs` and `settings`.
    pub fn plugin_settings(&self) -> serde_json::Value {
        serde_json::json!({
            "direction": self.direction.as_str(),
            "pairs": self.pairs.iter().map(|p| serde_json::json!({
                "dynamics": p.dynamics,
                "campaign": p.campaign,
            })).collect::<Vec<_>>(),
            "settings": self.settings,
        })
    }
}

/// Builds the specs of a parsed file; every value that cannot be converted is a located
/// problem (the specs are then not built).
pub(super) fn resolve(
    file: &ConfigFile,
    base_dir: &Path,
    locate: &Locator<'_>,
) -> Result<Specs, Vec<Problem>> {
    let mut resolver = Resolver {
        base_dir,
        locate,
        problems: Vec::new(),
    };
    let specs = resolver.specs(file);
    if resolver.problems.is_empty() {
        Ok(specs)
    } else {
        Err(resolver.problems)
    }
}

struct Resolver<'a> {
    base_dir: &'a Path,
    locate: &'a Locator<'a>,
    problems: Vec<Problem>,
}

impl Resolver<'_> {
    fn path(&self, written: &str) -> PathBuf {
        super::resolve_against(self.base_dir, written)
    }

    /// A word of a closed set; anything else is reported at it, naming `key` and the set.
    fn choice<T: ClosedSet>(
        &mut self,
        value: &Spanned<Choice<T>>,
        message: impl FnOnce(&str) -> String,
        fallback: T,
    ) -> T {
        match value.get_ref() {
            Choice::Known(known) => *known,
            Choice::Unknown(written) => {
                let problem = self.locate.problem(
                    value.span(),
                    message(written),
                    Some(format!("use {}", T::one_of())),
                );
                self.problems.push(problem);
                fallback
            }
        }
    }

    /// A URL; one that does not parse is reported at it, naming `key`.
    fn url(&mut self, value: &Spanned<String>, key: &str) -> Option<url::Url> {
        match url::Url::parse(value.get_ref()) {
            Ok(url) => Some(url),
            Err(error) => {
                let problem = self.locate.problem(
                    value.span(),
                    format!("{key} = '{}' is not a URL: {error}", value.get_ref()),
                    Some("write a full URL such as https://host/path".to_owned()),
                );
                self.problems.push(problem);
                None
            }
        }
    }

    fn specs(&mut self, file: &ConfigFile) -> Specs {
        let host = &file.host;
        let general = &file.limits;
        let workflow =
            |plugin: &Spanned<String>, pacing: &Pacing, limits: &LimitsSection| WorkflowSpec {
                plugin: plugin.get_ref().clone(),
                pacing: PacingSpec::from(pacing),
                limits: EffectiveLimits::resolve(limits, general),
            };
        Specs {
            host: HostSpec {
                data_dir: self.path(&host.data_dir),
                admin_listen: host.admin_listen.clone(),
                admin_hosts: host.admin_hosts.clone(),
                admin_tls: match (&host.admin_tls_cert, &host.admin_tls_key) {
                    (Some(cert), Some(key)) => Some(TlsFiles {
                        cert: self.path(cert),
                        key: self.path(key),
                    }),
                    _ => None,
                },
                admin_allow_plain_http: host.admin_allow_plain_http,
            },
            dynamics: file.dynamics.as_ref().map(|dynamics| {
                self.url(&dynamics.url, "dynamics.url");
                self.url(&dynamics.token_url, "dynamics.token_url");
                DynamicsSpec {
                    url: dynamics.url.get_ref().clone(),
                    token_url: dynamics.token_url.get_ref().clone(),
                    client_id: dynamics.client_id.clone(),
                    client_secret_env: dynamics.client_secret_env.get_ref().clone(),
                    scope: dynamics.scope.clone(),
                    max_concurrency: dynamics.max_concurrency.max(1),
                    batch_size: *dynamics.batch_size.get_ref(),
                    ca_file: dynamics.ca_file.as_deref().map(|ca| self.path(ca)),
                }
            }),
            campaign: file.campaign.as_ref().and_then(|campaign| {
                let url = self.url(&campaign.url, "campaign.url");
                let ims_url = self.url(&campaign.ims_url, "campaign.ims_url");
                let journal_url = match &campaign.journal_url {
                    Some(journal) => Some(self.url(journal, "campaign.journal_url")?),
                    None => None,
                };
                Some(CampaignSpec {
                    url: url?,
                    ims_url: ims_url?,
                    client_id: campaign.client_id.clone(),
                    client_secret_env: campaign.client_secret_env.get_ref().clone(),
                    scopes: campaign.scopes.clone(),
                    journal_url,
                    opt_out_exports: campaign
                        .opt_out_exports
                        .as_ref()
                        .map(|folder| self.path(folder.get_ref())),
                    max_concurrency: campaign.max_concurrency.max(1),
                    ca_file: campaign.ca_file.as_deref().map(|ca| self.path(ca)),
                })
            }),
            ingress: file.ingress.as_ref().map(|ingress| IngressSpec {
                workflow: workflow(&ingress.plugin, &ingress.pacing, &ingress.limits),
                mappings: ingress
                    .mappings
                    .iter()
                    .map(|mapping| self.mapping(mapping))
                    .collect(),
            }),
            egress: file.egress.as_ref().map(|egress| EgressSpec {
                workflow: workflow(&egress.plugin, &egress.pacing, &egress.limits),
                send: egress.send,
                open: egress.open,
                click: egress.click,
                bounce: egress.bounce,
                settings: own_settings(&egress.settings),
            }),
            optinout: file.optinout.as_ref().map(|optinout| OptInOutSpec {
                workflow: workflow(&optinout.plugin, &optinout.pacing, &optinout.limits),
                direction: self.choice(
                    &optinout.direction,
                    |written| format!("optinout.direction is '{written}'"),
                    Direction::Disabled,
                ),
                pairs: optinout
                    .pairs
                    .iter()
                    .map(|pair| OptOutPairSpec {
                        dynamics: pair.dynamics.get_ref().clone(),
                        campaign: pair.campaign.get_ref().clone(),
                    })
                    .collect(),
                settings: own_settings(&optinout.settings),
            }),
        }
    }

    fn mapping(&mut self, mapping: &TableMapping) -> MappingSpec {
        let name = mapping.name.get_ref();
        MappingSpec {
            name: name.clone(),
            source: mapping.source.get_ref().clone(),
            destination: mapping.destination.get_ref().clone(),
            key: KeySpec {
                source: mapping.key.source.get_ref().clone(),
                destination: mapping.key.destination.get_ref().clone(),
            },
            fields: mapping
                .fields
                .iter()
                .map(|field| FieldSpec {
                    source: field.source.get_ref().clone(),
                    destination: field.destination.get_ref().clone(),
                    apply_updates: field.apply_updates,
                })
                .collect(),
            replacements: mapping
                .replacements
                .iter()
                .map(|replacement| ReplacementSpec {
                    field: replacement.field.get_ref().clone(),
                    from: replacement.from.clone(),
                    to: replacement.to.clone(),
                })
                .collect(),
            filters: mapping.filters.as_ref().map(|filters| FiltersSpec {
                combine: self.choice(
                    &filters.combine,
                    |written| format!("mapping '{name}': filters.combine is '{written}'"),
                    Combine::And,
                ),
                rules: filters
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(index, rule)| FilterRuleSpec {
                        field: rule.field.get_ref().clone(),
                        op: self.choice(
                            &rule.op,
                            |written| {
                                format!(
                                    "mapping '{name}': filters.rules[{index}].op: unknown filter operator '{written}'"
                                )
                            },
                            FilterOp::Eq,
                        ),
                        value: rule.value.clone(),
                    })
                    .collect(),
                delete_filtered_out: filters.delete_filtered_out,
            }),
            apply_deletes: mapping.apply_deletes,
            picklists: if mapping.technical_picklist_values {
                PicklistMode::TechnicalValues
            } else {
                PicklistMode::Labels
            },
            settings: own_settings(&mapping.settings),
        }
    }
}

/// A section's `settings` table as JSON, each value converted as serde converts TOML.
fn own_settings(table: &BTreeMap<String, toml::Value>) -> OwnSettings {
    table
        .iter()
        .filter_map(|(key, value)| Some((key.clone(), serde_json::to_value(value).ok()?)))
        .collect()
}

/// The spec of a workflow's common settings, for code that serves all three.
impl Specs {
    /// Plugin, pacing and limits of `workflow`, when it is configured.
    pub fn workflow(&self, workflow: WorkflowId) -> Option<&WorkflowSpec> {
        match workflow {
            WorkflowId::Ingress => self.ingress.as_ref().map(|s| &s.workflow),
            WorkflowId::Egress => self.egress.as_ref().map(|s| &s.workflow),
            WorkflowId::OptInOut => self.optinout.as_ref().map(|s| &s.workflow),
        }
    }
}
