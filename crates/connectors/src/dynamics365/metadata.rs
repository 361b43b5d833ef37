//! Dataverse metadata: resolving a table by logical name or entity set, its attributes and
//! their types, lookup targets, date-only formats and picklist options; cached per table.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value as Json;

use super::Shared;
use crate::http::parse_json;
use crate::{ConnectorError, FieldInfo, FieldKind};

/// What the connector knows about one table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableMeta {
    /// The logical name, e.g. `contact`.
    pub logical_name: String,
    /// The entity set, e.g. `contacts`.
    pub entity_set: String,
    /// The primary key attribute, e.g. `contactid`.
    pub primary_id: String,
    /// Whether change tracking is on.
    pub change_tracking: bool,
    /// The attributes by logical name.
    pub attributes: HashMap<String, AttributeMeta>,
}

impl TableMeta {
    /// The attribute a column names: its logical name or its `_x_value` wire name.
    pub fn column(&self, column: &str) -> Option<&AttributeMeta> {
        self.attributes.get(column).or_else(|| {
            column
                .strip_prefix('_')
                .and_then(|rest| rest.strip_suffix("_value"))
                .and_then(|logical| self.attributes.get(logical))
                .filter(|attribute| attribute.is_lookup())
        })
    }
}

/// One attribute's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeMeta {
    /// The logical name.
    pub logical_name: String,
    /// The service's `AttributeType` (`String`, `Picklist`, `Lookup`...).
    pub attribute_type: String,
    /// The maximum length of strings.
    pub max_length: Option<u64>,
    /// The tables a lookup may reference.
    pub targets: Vec<String>,
    /// True for a DateTime with the `DateOnly` format.
    pub date_only: bool,
}

impl AttributeMeta {
    /// True for lookups (including customer and owner lookups).
    pub fn is_lookup(&self) -> bool {
        matches!(
            self.attribute_type.as_str(),
            "Lookup" | "Customer" | "Owner"
        )
    }

    /// The key of the attribute's value in entity bodies (`_x_value` for lookups).
    pub fn wire_name(&self) -> String {
        if self.is_lookup() {
            format!("_{}_value", self.logical_name)
        } else {
            self.logical_name.clone()
        }
    }

    /// The host's field kind of this attribute.
    pub fn field_kind(&self) -> FieldKind {
        match self.attribute_type.as_str() {
            "String" | "Memo" => FieldKind::Text,
            "Integer" | "BigInt" => FieldKind::Integer,
            "Decimal" | "Double" | "Money" => FieldKind::Decimal,
            "Boolean" => FieldKind::Boolean,
            "DateTime" if self.date_only => FieldKind::Date,
            "DateTime" => FieldKind::Datetime,
            "Picklist" | "State" | "Status" => FieldKind::Picklist,
            "Uniqueidentifier" => FieldKind::Guid,
            "Lookup" | "Customer" | "Owner" => FieldKind::Lookup,
            other => FieldKind::Other(other.to_string()),
        }
    }
}

/// One picklist choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PicklistOption {
    /// The option's value.
    pub value: i64,
    /// The user's label.
    pub label: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EntityDefinition {
    logical_name: String,
    entity_set_name: String,
    primary_id_attribute: String,
    #[serde(default)]
    change_tracking_enabled: Option<bool>,
}

#[derive(Deserialize)]
struct Listing<T> {
    value: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttributeDefinition {
    logical_name: String,
    attribute_type: Option<String>,
    #[serde(default)]
    max_length: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LookupDefinition {
    logical_name: String,
    #[serde(default)]
    targets: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DateTimeDefinition {
    logical_name: String,
    #[serde(default)]
    format: Option<String>,
}

/// Refuses names that could change the meaning of a metadata URL.
pub fn check_identifier(name: &str, what: &str) -> Result<(), ConnectorError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || character == '_');
    if valid {
        Ok(())
    } else {
        Err(ConnectorError::Permanent {
            message: format!(
                "'{name}' is not a valid Dynamics 365 {what} name (letters, digits and '_' only)"
            ),
        })
    }
}

const TABLE_SELECT: &str =
    "$select=LogicalName,EntitySetName,PrimaryIdAttribute,ChangeTrackingEnabled";

impl Shared {
    /// The table `name` (logical name or entity set), from the cache or the service.
    pub(super) async fn table(&self, name: &str) -> Result<Arc<TableMeta>, ConnectorError> {
        if let Some(cached) = self.cached_table(name) {
            return Ok(cached);
        }
        self.refresh_table(name).await
    }

    fn cached_table(&self, name: &str) -> Option<Arc<TableMeta>> {
        let cache = self
            .metadata
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.get(name).cloned()
    }

    /// Forgets what is cached about table `name`, so the next use re-reads the metadata.
    pub(super) fn forget_table(&self, name: &str) {
        let mut cache = self
            .metadata
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(meta) = cache.remove(name) {
            cache.remove(&meta.logical_name);
            cache.remove(&meta.entity_set);
        }
    }

    /// Reads table `name` from the service and caches it under both of its names.
    pub(super) async fn refresh_table(&self, name: &str) -> Result<Arc<TableMeta>, ConnectorError> {
        check_identifier(name, "table")?;
        let definition = self.entity_definition(name).await?;
        let logical = definition.logical_name.clone();
        let attributes_root = format!("EntityDefinitions(LogicalName='{logical}')/Attributes");
        let attributes_url = self.url(&format!(
            "{attributes_root}?$select=LogicalName,AttributeType,MaxLength"
        ));
        let lookups_url = self.url(&format!(
            "{attributes_root}/Microsoft.Dynamics.CRM.LookupAttributeMetadata?$select=LogicalName,Targets"
        ));
        let dates_url = self.url(&format!(
            "{attributes_root}/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata?$select=LogicalName,Format"
        ));
        let (attributes, lookups, dates) = tokio::join!(
            self.get_json::<Listing<AttributeDefinition>>(
                &attributes_url,
                "a list of attribute definitions"
            ),
            self.get_json::<Listing<LookupDefinition>>(
                &lookups_url,
                "a list of lookup attribute definitions"
            ),
            self.get_json::<Listing<DateTimeDefinition>>(
                &dates_url,
                "a list of date-time attribute definitions"
            ),
        );
        let mut targets: HashMap<String, Vec<String>> = lookups?
            .value
            .into_iter()
            .map(|lookup| (lookup.logical_name, lookup.targets))
            .collect();
        let date_only: Vec<String> = dates?
            .value
            .into_iter()
            .filter(|date| date.format.as_deref() == Some("DateOnly"))
            .map(|date| date.logical_name)
            .collect();
        let attributes = attributes?
            .value
            .into_iter()
            .map(|attribute| {
                let meta = AttributeMeta {
                    targets: targets.remove(&attribute.logical_name).unwrap_or_default(),
                    date_only: date_only.contains(&attribute.logical_name),
                    logical_name: attribute.logical_name.clone(),
                    attribute_type: attribute.attribute_type.unwrap_or_default(),
                    max_length: attribute.max_length,
                };
                (attribute.logical_name, meta)
            })
            .collect();
        let meta = Arc::new(TableMeta {
            logical_name: logical.clone(),
            entity_set: definition.entity_set_name.clone(),
            primary_id: definition.primary_id_attribute,
            change_tracking: definition.change_tracking_enabled.unwrap_or(false),
            attributes,
        });
        let mut cache = self
            .metadata
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.insert(logical, Arc::clone(&meta));
        cache.insert(definition.entity_set_name, Arc::clone(&meta));
        Ok(meta)
    }

    async fn entity_definition(&self, name: &str) -> Result<EntityDefinition, ConnectorError> {
        let by_logical = self.url(&format!(
            "EntityDefinitions(LogicalName='{name}')?{TABLE_SELECT}"
        ));
        let response = self.get(&by_logical, None).await?;
        if response.status.is_success() {
            return response.json(&by_logical, "an entity definition");
        }
        if response.status != reqwest::StatusCode::NOT_FOUND {
            return Err(response
                .into_success(format_args!("GET {by_logical}"))
                .err()
                .unwrap_or_else(|| ConnectorError::Permanent {
                    message: format!("GET {by_logical} failed"),
                }));
        }
        // Not a logical name: perhaps an entity set name (as write targets are given).
        let by_set = self.url(&format!(
            "EntityDefinitions?{TABLE_SELECT}&$filter=EntitySetName%20eq%20'{name}'"
        ));
        let listing: Listing<EntityDefinition> = self
            .get_json(&by_set, "a list of entity definitions")
            .await?;
        listing
            .value
            .into_iter()
            .next()
            .ok_or_else(|| ConnectorError::Permanent {
                message: format!(
                    "Dynamics 365 has no table with the logical name or entity set name '{name}'"
                ),
            })
    }

    /// The options of a picklist, state or status attribute, with their user labels.
    pub(super) async fn picklist_options(
        &self,
        table: &str,
        attribute: &str,
    ) -> Result<Vec<PicklistOption>, ConnectorError> {
        let meta = self.table(table).await?;
        check_identifier(attribute, "attribute")?;
        let kind = meta
            .attributes
            .get(attribute)
            .map(|attribute| attribute.attribute_type.clone())
            .ok_or_else(|| ConnectorError::Permanent {
                message: format!(
                    "the table '{}' has no attribute '{attribute}'",
                    meta.logical_name
                ),
            })?;
        let class = match kind.as_str() {
            "Picklist" => "PicklistAttributeMetadata",
            "State" => "StateAttributeMetadata",
            "Status" => "StatusAttributeMetadata",
            other => {
                return Err(ConnectorError::Permanent {
                    message: format!(
                        "'{attribute}' of '{}' is a {other}, not a picklist",
                        meta.logical_name
                    ),
                });
            }
        };
        let url = self.url(&format!(
            "EntityDefinitions(LogicalName='{}')/Attributes(LogicalName='{attribute}')/Microsoft.Dynamics.CRM.{class}?$select=LogicalName&$expand=OptionSet",
            meta.logical_name
        ));
        let response = self.get(&url, None).await?;
        let response = response.into_success(format_args!("GET {url}"))?;
        read_option_set(&response.body, &url)
    }

    /// The fields of `table`, read fresh from the service (for drift checks).
    pub(super) async fn describe(&self, table: &str) -> Result<Vec<FieldInfo>, ConnectorError> {
        self.forget_table(table);
        let meta = self.refresh_table(table).await?;
        let mut fields: Vec<FieldInfo> = meta
            .attributes
            .values()
            .map(|attribute| FieldInfo {
                name: attribute.logical_name.clone(),
                kind: attribute.field_kind(),
            })
            .collect();
        fields.sort_by(|left, right| left.name.cmp(&right.name));
        Ok(fields)
    }
}

/// Reads a picklist attribute's `OptionSet.Options` body into its values and user labels.
pub(crate) fn read_option_set(
    body: &[u8],
    url: &str,
) -> Result<Vec<PicklistOption>, ConnectorError> {
    let body: Json = parse_json(body, url, "a picklist attribute with its option set")?;
    let options = body
        .pointer("/OptionSet/Options")
        .and_then(Json::as_array)
        .ok_or_else(|| ConnectorError::Permanent {
            message: format!("the response of {url} has no OptionSet.Options list"),
        })?;
    options
        .iter()
        .map(|option| {
            let value = option.get("Value").and_then(Json::as_i64);
            let label = option
                .pointer("/Label/UserLocalizedLabel/Label")
                .and_then(Json::as_str);
            match (value, label) {
                (Some(value), Some(label)) => Ok(PicklistOption {
                    value,
                    label: label.to_string(),
                }),
                _ => Err(ConnectorError::Permanent {
                    message: format!(
                        "an option in the response of {url} lacks Value or Label.UserLocalizedLabel.Label: {option}"
                    ),
                }),
            }
        })
        .collect()
}
