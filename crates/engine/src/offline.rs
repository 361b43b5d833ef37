//! What the engine does with a plugin, made available outside a running workflow (to
//! `conduit plugin test` and `conduit config check`): the exact settings `configure` receives
//! for a workflow or one of its table mappings, and the engine's record-by-record isolation of
//! a batch the plugin fails on. Both are the engine's own functions, so what an author tests
//! is what a workflow does.

use conduit_config::Config;
use conduit_model::WorkflowId;

pub use super::reader::{Isolated, isolate_items};
pub use super::workflows::map_rows_isolated;

/// Why the settings of a workflow's plugin could not be taken from a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The workflow has no section in the config.
    #[error("the {0} workflow is not configured: the config has no [{0}] section")]
    NotConfigured(WorkflowId),
    /// Ingress has one plugin configuration per table mapping: a mapping must be named.
    #[error(
        "Ingress configures its plugin once per table mapping: name one ({known}); \
         in `conduit plugin test` use --mapping NAME"
    )]
    MappingRequired {
        /// The mappings the config has, comma-separated.
        known: String,
    },
    /// No table mapping has that name.
    #[error("the config has no Ingress table mapping named '{name}' (it has: {known})")]
    UnknownMapping {
        /// The name asked for.
        name: String,
        /// The mappings the config has, comma-separated.
        known: String,
    },
    /// Only Ingress has table mappings.
    #[error("the {0} workflow has no table mappings; name the workflow alone")]
    NoMappings(WorkflowId),
}

/// The settings a workflow's plugin receives in `configure`, as the engine builds them at
/// start: for Ingress those of the table mapping named `mapping`, for Egress and Opt-in/out
/// those of the workflow's section.
pub fn plugin_settings(
    config: &Config,
    workflow: WorkflowId,
    mapping: Option<&str>,
) -> Result<serde_json::Value, SettingsError> {
    match workflow {
        WorkflowId::Ingress => {
            let section = config
                .ingress()
                .ok_or(SettingsError::NotConfigured(workflow))?;
            let name = mapping.ok_or_else(|| SettingsError::MappingRequired {
                known: section.mapping_names(),
            })?;
            let found = section
                .mapping(name)
                .ok_or_else(|| SettingsError::UnknownMapping {
                    name: name.to_owned(),
                    known: section.mapping_names(),
                })?;
            Ok(found.plugin_settings())
        }
        WorkflowId::Egress | WorkflowId::OptInOut if mapping.is_some() => {
            Err(SettingsError::NoMappings(workflow))
        }
        WorkflowId::Egress => config
            .egress()
            .map(conduit_config::EgressSpec::plugin_settings)
            .ok_or(SettingsError::NotConfigured(workflow)),
        WorkflowId::OptInOut => config
            .optinout()
            .map(conduit_config::OptInOutSpec::plugin_settings)
            .ok_or(SettingsError::NotConfigured(workflow)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[dynamics]
url = "https://org.api.crm.dynamics.com/"
token_url = "https://login.microsoftonline.com/t/oauth2/v2.0/token"
client_id = "app"
client_secret_env = "D365_SECRET"

[campaign]
url = "https://mc.adobe.io/acme/campaign"
client_id = "key"
client_secret_env = "ACS_SECRET"

[ingress]
[[ingress.mappings]]
name = "contacts"
source = "contact"
destination = "profile"
key = { source = "contactid", destination = "externalId" }
fields = [{ source = "firstname", destination = "firstName" }]
"#;

    #[test]
    fn ingress_settings_are_a_named_mappings_and_other_names_are_listed() {
        let config = Config::parse(std::path::Path::new("conduit.toml"), CONFIG).unwrap();
        let mapping = &config.ingress().unwrap().mappings[0];
        assert_eq!(
            plugin_settings(&config, WorkflowId::Ingress, Some("contacts")).unwrap(),
            mapping.plugin_settings()
        );
        let unknown = plugin_settings(&config, WorkflowId::Ingress, Some("leads"))
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("'leads'") && unknown.contains("contacts"),
            "{unknown}"
        );
        let unnamed = plugin_settings(&config, WorkflowId::Ingress, None).unwrap_err();
        assert!(unnamed.to_string().contains("--mapping"), "{unnamed}");
        assert_eq!(
            plugin_settings(&config, WorkflowId::Egress, None),
            Err(SettingsError::NotConfigured(WorkflowId::Egress))
        );
    }
}
