//! Reading back what Campaign holds ([`RecordReader`]): a resource's records page by page, the
//! records of given keys (one identification-key lookup each, as the sink makes them), and the
//! form a mapped value takes once Campaign stores it. `conduit verify` compares the two; this
//! module only reads.

use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::Method;

use super::CampaignConnector;
use std::collections::HashMap;

use super::sink::{filter_name, read_list_page, read_resource_fields};
use super::values::to_campaign_json;
use crate::http::parse_json;
use crate::{ConnectorError, FieldKind, RecordReader, StoredPage, StoredRecord};
use conduit_model::Value;

/// The key of a listed record, when it carries a non-empty one.
fn keyed(record: serde_json::Value, key_field: &str) -> Option<StoredRecord> {
    let serde_json::Value::Object(fields) = record else {
        return None;
    };
    let key = fields.get(key_field)?.as_str()?.trim().to_owned();
    if key.is_empty() {
        return None;
    }
    Some(StoredRecord { key, fields })
}

impl CampaignConnector {
    /// Looks one key up through the resource's identification-key filter.
    async fn lookup(
        &self,
        table: &str,
        key_field: &str,
        key: &str,
    ) -> Result<Option<StoredRecord>, ConnectorError> {
        let mut url = self.api_url(&["profileAndServicesExt", table, &filter_name(key_field)]);
        url.query_pairs_mut()
            .append_pair(&format!("{key_field}_parameter"), key);
        let reply = self.transport.send(Method::GET, &url, None).await?;
        let (content, _) = read_list_page(&reply.body, url.as_str())?;
        Ok(content
            .into_iter()
            .filter_map(|record| keyed(record, key_field))
            .find(|record| record.key == key))
    }
}

#[async_trait]
impl RecordReader for CampaignConnector {
    async fn read_stored(
        &self,
        table: &str,
        key_field: &str,
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<StoredPage, ConnectorError> {
        let (content, next) = self.list_page(table, cursor, page_size).await?;
        let total = content.len();
        let records: Vec<StoredRecord> = content
            .into_iter()
            .filter_map(|record| keyed(record, key_field))
            .collect();
        Ok(StoredPage {
            without_key: (total - records.len()) as u64,
            records,
            next,
        })
    }

    async fn read_stored_keys(
        &self,
        table: &str,
        key_field: &str,
        keys: &[String],
    ) -> Result<Vec<StoredRecord>, ConnectorError> {
        // As many lookups in flight as writes may be: the same pacing the sink keeps.
        let found: Vec<Result<Option<StoredRecord>, ConnectorError>> =
            futures_util::stream::iter(keys.iter().cloned())
                .map(|key| async move { self.lookup(table, key_field, &key).await })
                .buffered(self.settings.max_concurrency)
                .collect()
                .await;
        let mut records = Vec::with_capacity(found.len());
        for result in found {
            if let Some(record) = result? {
                records.push(record);
            }
        }
        Ok(records)
    }

    async fn stored_forms(
        &self,
        table: &str,
        records: &[Vec<(String, Value)>],
    ) -> Result<Vec<Result<Vec<(String, serde_json::Value)>, String>>, ConnectorError> {
        let url = self.api_url(&["profileAndServicesExt", "resourceType", table]);
        let reply = self.transport.send(Method::GET, &url, None).await?;
        let kinds: HashMap<String, FieldKind> =
            read_resource_fields(&reply.body, url.as_str(), table)?
                .into_iter()
                .map(|field| (field.name, field.kind))
                .collect();
        let metadata: serde_json::Value = parse_json(
            &reply.body,
            url.as_str(),
            "resourceType metadata with `content`",
        )?;
        let defaults = enumeration_defaults(&metadata);
        Ok(records
            .iter()
            .map(|fields| {
                fields
                    .iter()
                    .map(|(field, value)| {
                        let kind = kinds.get(field);
                        let json = match value {
                            Value::Null => empty_value(kind, defaults.get(field)),
                            value => to_campaign_json(field, value, kind)?,
                        };
                        Ok((field.clone(), json))
                    })
                    .collect()
            })
            .collect())
    }
}

/// The first value of each enumeration field: what a record shows when none was written.
fn enumeration_defaults(metadata: &serde_json::Value) -> HashMap<String, serde_json::Value> {
    let Some(content) = metadata.get("content").and_then(|c| c.as_object()) else {
        return HashMap::new();
    };
    content
        .iter()
        .filter_map(|(name, field)| {
            let first = field.get("values")?.as_array()?.first()?;
            let value = first.get("name").or_else(|| first.get("value"))?.clone();
            let api_name = field
                .get("apiName")
                .and_then(|n| n.as_str())
                .unwrap_or(name);
            Some((api_name.to_owned(), value))
        })
        .collect()
}

/// What Campaign shows for a field written empty: it keeps no nulls, but the empty value of
/// the field's type (an empty text, zero, false, the enumeration's first value).
fn empty_value(
    kind: Option<&FieldKind>,
    enumeration_default: Option<&serde_json::Value>,
) -> serde_json::Value {
    use serde_json::Value as Json;
    match kind {
        Some(FieldKind::Text | FieldKind::Date | FieldKind::Datetime) => {
            Json::String(String::new())
        }
        Some(FieldKind::Integer | FieldKind::Decimal) => Json::from(0),
        Some(FieldKind::Boolean) => Json::Bool(false),
        Some(FieldKind::Picklist) => enumeration_default
            .cloned()
            .unwrap_or_else(|| Json::String(String::new())),
        _ => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_records_with_a_key_are_kept() {
        let with = serde_json::json!({"externalId": " c-1 ", "firstName": "Ann"});
        let record = keyed(with, "externalId").expect("keyed");
        assert_eq!(record.key, "c-1");
        assert_eq!(record.fields["firstName"], "Ann");
        assert!(keyed(serde_json::json!({"externalId": ""}), "externalId").is_none());
        assert!(keyed(serde_json::json!({"firstName": "Bo"}), "externalId").is_none());
        assert!(keyed(serde_json::json!([1]), "externalId").is_none());
    }

    #[test]
    fn an_empty_value_reads_back_as_the_empty_value_of_its_type() {
        let metadata = serde_json::json!({"content": {
            "gender": {"apiName": "gender", "type": "enumeration",
                "values": [{"name": "unknown", "value": 0}, {"name": "male", "value": 1}]},
            "email": {"apiName": "email", "type": "string"}
        }});
        let defaults = enumeration_defaults(&metadata);
        assert_eq!(defaults["gender"], "unknown");
        assert!(!defaults.contains_key("email"));
        assert_eq!(
            empty_value(Some(&FieldKind::Picklist), defaults.get("gender")),
            "unknown"
        );
        assert_eq!(empty_value(Some(&FieldKind::Text), None), "");
        assert_eq!(empty_value(Some(&FieldKind::Integer), None), 0);
        assert_eq!(empty_value(Some(&FieldKind::Boolean), None), false);
        assert_eq!(empty_value(None, None), serde_json::Value::Null);
    }
}
