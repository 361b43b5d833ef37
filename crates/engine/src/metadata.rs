//! The services' metadata for the page's workflow editor: the fields of a Dynamics 365 table or
//! a Campaign resource with their types, asked of the connectors built from the current valid
//! config (as a replay's row count is), so that the editor offers real field names.

use serde::{Deserialize, Serialize};

use conduit_connectors::FieldKind;

use super::{ConnectFailed, EngineError, Supervisor};

/// Which service's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataSystem {
    /// Dynamics 365 tables (Dataverse entity attributes).
    Dynamics,
    /// Campaign resources.
    Campaign,
}

/// One field as the service describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataField {
    /// The field's API (logical) name.
    pub name: String,
    /// Its type in a word (`text`, `integer`, `picklist`, ... or the service's own name).
    pub kind: String,
}

/// Why the fields could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// There is no valid config to build connectors from.
    #[error(transparent)]
    Config(#[from] EngineError),
    /// The connectors could not be built.
    #[error(transparent)]
    Connect(#[from] ConnectFailed),
    /// The service did not describe the table.
    #[error("cannot describe {table}: {source}")]
    Describe {
        /// The table or resource.
        table: String,
        /// The connector's error.
        #[source]
        source: conduit_connectors::ConnectorError,
    },
}

fn kind_name(kind: &FieldKind) -> String {
    match kind {
        FieldKind::Text => "text".into(),
        FieldKind::Integer => "integer".into(),
        FieldKind::Decimal => "decimal".into(),
        FieldKind::Boolean => "boolean".into(),
        FieldKind::Datetime => "datetime".into(),
        FieldKind::Date => "date".into(),
        FieldKind::Picklist => "picklist".into(),
        FieldKind::Guid => "guid".into(),
        FieldKind::Lookup => "lookup".into(),
        FieldKind::Other(name) => name.clone(),
    }
}

impl Supervisor {
    /// The fields of a Dynamics 365 table or a Campaign resource, sorted by name.
    pub async fn describe_fields(
        &self,
        system: MetadataSystem,
        table: &str,
    ) -> Result<Vec<MetadataField>, MetadataError> {
        let config = self.load_config()?;
        let services = self.inner.env.connect.connect(&config)?;
        let described = match system {
            MetadataSystem::Dynamics => services.dynamics_source.describe(table).await,
            MetadataSystem::Campaign => services.campaign_sink.describe(table).await,
        }
        .map_err(|source| MetadataError::Describe {
            table: table.to_string(),
            source,
        })?;
        let mut fields: Vec<MetadataField> = described
            .iter()
            .map(|field| MetadataField {
                name: field.name.clone(),
                kind: kind_name(&field.kind),
            })
            .collect();
        fields.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(fields)
    }
}
