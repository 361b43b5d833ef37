//! Reading back what Campaign holds ([`RecordReader`]): a resource's records page by page, the
//! records of given keys (one identification-key lookup each, as the sink makes them), and the
//! form a mapped value takes once Campaign stores it. `conduit verify` compares the two; this
//! module only reads.

use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::Method;

use super::CampaignConnector;
use super::sink::{filter_name, read_list_page};
use super::values::to_campaign_json;
use crate::{ConnectorError, RecordReader, StoredPage, StoredRecord};
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

    async fn stored_form(
        &self,
        table: &str,
        fields: &[(String, Value)],
    ) -> Result<Vec<(String, serde_json::Value)>, ConnectorError> {
        let kinds = self.field_kinds(table).await?;
        fields
            .iter()
            .map(|(field, value)| {
                to_campaign_json(field, value, kinds.get(field))
                    .map(|json| (field.clone(), json))
                    .map_err(|message| ConnectorError::Permanent { message })
            })
            .collect()
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
}
