//! Reading back what Dataverse holds ([`RecordReader`]), for `conduit verify` of Egress: a
//! table's records page by page, the records of given keys (addressed as the writer addresses
//! them: by primary key, or by alternate key), and the form a mapped value takes once stored.
//!
//! Both sides are put in one form so that they compare: fields by attribute logical name (a
//! lookup's `_x_value` and a navigation property such as `regardingobjectid_contact` both become
//! `regardingobjectid`), GUIDs in lower case, date-times in UTC to the second (Dataverse keeps no
//! fractions), date-only values as the date, picklists as their number. This module only reads.

use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::{Map, Value as Json};

use super::Dynamics365Connector;
use super::metadata::{AttributeMeta, TableMeta};
use super::write::address;
use crate::http::parse_json;
use crate::{ConnectorError, RecordReader, StoredPage, StoredRecord};
use conduit_model::Value;

/// Records read at once while looking keys up (the pacer caps the total too).
const LOOKUP_CONCURRENCY: usize = 8;

#[derive(serde::Deserialize)]
struct Page {
    value: Vec<Map<String, Json>>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

#[async_trait]
impl RecordReader for Dynamics365Connector {
    async fn read_stored(
        &self,
        table: &str,
        key_field: &str,
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<StoredPage, ConnectorError> {
        let shared = &self.shared;
        let meta = shared.table(table).await?;
        let url = match cursor {
            // The bearer token goes with the link: it must point into this organization.
            Some(link) if link.starts_with(&shared.root) => link.to_owned(),
            Some(link) => {
                return Err(ConnectorError::Permanent {
                    message: format!(
                        "the page link '{link}' is not under {}: start the read again",
                        shared.root
                    ),
                });
            }
            None => shared.url(&meta.entity_set),
        };
        let prefer = format!("odata.maxpagesize={}", page_size.clamp(1, 5000));
        let response = shared
            .get(&url, Some(&prefer))
            .await?
            .into_success(format_args!("GET {url}"))?;
        let page: Page = parse_json(&response.body, &url, "a JSON page with a 'value' list")?;
        let mut records = Vec::with_capacity(page.value.len());
        let mut without_key = 0;
        for entry in page.value {
            let fields = stored_fields(&meta, entry);
            match fields.get(key_field).and_then(Json::as_str) {
                Some(key) if !key.is_empty() => records.push(StoredRecord {
                    key: key.to_owned(),
                    fields,
                }),
                _ => without_key += 1,
            }
        }
        Ok(StoredPage {
            records,
            without_key,
            next: page.next_link,
        })
    }

    async fn read_stored_keys(
        &self,
        table: &str,
        key_field: &str,
        keys: &[String],
    ) -> Result<Vec<StoredRecord>, ConnectorError> {
        let shared = &self.shared;
        let meta = shared.table(table).await?;
        let mut urls = Vec::with_capacity(keys.len());
        for key in keys {
            match address(&meta, key_field, key) {
                Ok(address) => urls.push((key.clone(), shared.url(&address))),
                // A primary key that is not a GUID names no record (the writer could not
                // write it either): it is simply not there.
                Err(_) if key_field == meta.primary_id => {}
                Err(error) => return Err(error),
            }
        }
        let found: Vec<Result<Option<StoredRecord>, ConnectorError>> =
            futures_util::stream::iter(urls)
                .map(|(key, url)| {
                    let meta = &meta;
                    async move {
                        let response = shared.get(&url, None).await?;
                        if response.status == reqwest::StatusCode::NOT_FOUND {
                            return Ok(None);
                        }
                        let response = response.into_success(format_args!("GET {url}"))?;
                        let entry: Map<String, Json> =
                            parse_json(&response.body, &url, "a JSON record")?;
                        // Found by the key asked for: it is the record's key here.
                        Ok(Some(StoredRecord {
                            key,
                            fields: stored_fields(meta, entry),
                        }))
                    }
                })
                .buffered(LOOKUP_CONCURRENCY)
                .collect()
                .await;
        let mut records = Vec::new();
        for record in found {
            records.extend(record?);
        }
        Ok(records)
    }

    async fn stored_forms(
        &self,
        table: &str,
        records: &[Vec<(String, Value)>],
    ) -> Result<Vec<Result<Vec<(String, Json)>, String>>, ConnectorError> {
        let meta = self.shared.table(table).await?;
        Ok(records
            .iter()
            .map(|fields| {
                fields
                    .iter()
                    .map(|(field, value)| {
                        let attribute =
                            attribute_written(&meta, field, value).ok_or_else(|| {
                                format!("the table '{}' has no field '{field}'", meta.logical_name)
                            })?;
                        Ok((
                            attribute.logical_name.clone(),
                            normal_form(attribute, &written_json(value)),
                        ))
                    })
                    .collect()
            })
            .collect())
    }
}

/// A record body as read, by attribute logical name, in the compared form; annotations and
/// properties the metadata does not know are left out.
fn stored_fields(meta: &TableMeta, entry: Map<String, Json>) -> Map<String, Json> {
    entry
        .into_iter()
        .filter(|(name, _)| !name.contains('@'))
        .filter_map(|(name, value)| {
            let attribute = meta.column(&name)?;
            Some((
                attribute.logical_name.clone(),
                normal_form(attribute, &value),
            ))
        })
        .collect()
}

/// The attribute a written field sets: its own, or for a lookup the attribute behind the
/// navigation property it is bound through (named after the attribute, with the target table
/// after an underscore for a polymorphic one, `regardingobjectid_contact`; case aside).
fn attribute_written<'a>(
    meta: &'a TableMeta,
    field: &str,
    value: &Value,
) -> Option<&'a AttributeMeta> {
    if let Some(attribute) = meta.attributes.get(field) {
        return Some(attribute);
    }
    if !matches!(value, Value::Lookup { .. }) {
        return None;
    }
    let field = field.to_ascii_lowercase();
    meta.attributes
        .values()
        .filter(|attribute| {
            attribute.is_lookup()
                && field
                    .strip_prefix(attribute.logical_name.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
        })
        .max_by_key(|attribute| attribute.logical_name.len())
}

/// A mapped value as JSON, as the writer sends it (a lookup as the id it binds).
fn written_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(flag) => Json::Bool(*flag),
        Value::Integer(number) => Json::from(*number),
        Value::Decimal(number) => {
            serde_json::Number::from_f64(*number).map_or(Json::Null, Json::Number)
        }
        Value::Text(text) | Value::Datetime(text) | Value::Guid(text) => Json::String(text.clone()),
        Value::Picklist { value, .. } => Json::from(*value),
        Value::Lookup { id, .. } => Json::String(id.clone()),
    }
}

/// A value in the form both sides are compared in (see the module doc).
fn normal_form(attribute: &AttributeMeta, value: &Json) -> Json {
    let Some(text) = value.as_str() else {
        return value.clone();
    };
    match attribute.attribute_type.as_str() {
        "Uniqueidentifier" | "Lookup" | "Customer" | "Owner" => {
            Json::String(text.to_ascii_lowercase())
        }
        "DateTime" if attribute.date_only => {
            Json::String(text.get(..10).unwrap_or(text).to_owned())
        }
        "DateTime" => match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(time) => Json::String(
                time.with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            Err(_) => value.clone(),
        },
        _ => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn activity() -> TableMeta {
        let attribute = |name: &str, kind: &str| {
            (
                name.to_owned(),
                AttributeMeta {
                    logical_name: name.to_owned(),
                    attribute_type: kind.to_owned(),
                    max_length: None,
                    targets: if kind == "Lookup" {
                        vec!["contact".to_owned()]
                    } else {
                        Vec::new()
                    },
                    date_only: false,
                },
            )
        };
        TableMeta {
            logical_name: "adobe_emailsend".to_owned(),
            entity_set: "adobe_emailsends".to_owned(),
            primary_id: "activityid".to_owned(),
            change_tracking: false,
            attributes: HashMap::from([
                attribute("activityid", "Uniqueidentifier"),
                attribute("subject", "String"),
                attribute("regardingobjectid", "Lookup"),
                attribute("adobe_datesent", "DateTime"),
            ]),
        }
    }

    #[test]
    fn a_written_record_and_the_stored_one_take_the_same_form() {
        let meta = activity();
        let stored = stored_fields(
            &meta,
            serde_json::from_value(json!({
                "@odata.etag": "W/\"1\"",
                "activityid": "0DD00000-0000-4000-8000-000000000001",
                "subject": "Hello",
                "_regardingobjectid_value": "AB000000-0000-4000-8000-000000000001",
                "_regardingobjectid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "contact",
                "adobe_datesent": "2026-11-01T10:00:00Z",
                "createdon": "2026-11-01T10:00:00Z"
            }))
            .unwrap(),
        );
        assert_eq!(
            Json::Object(stored),
            json!({
                "activityid": "0dd00000-0000-4000-8000-000000000001",
                "subject": "Hello",
                "regardingobjectid": "ab000000-0000-4000-8000-000000000001",
                "adobe_datesent": "2026-11-01T10:00:00Z"
            })
        );
        let written = [
            (
                "regardingobjectid_contact",
                Value::Lookup {
                    table: "contacts".into(),
                    id: "AB000000-0000-4000-8000-000000000001".into(),
                },
            ),
            (
                "adobe_datesent",
                Value::Datetime("2026-11-01T11:00:00.250+01:00".into()),
            ),
        ];
        let forms: Vec<(String, Json)> = written
            .iter()
            .map(|(field, value)| {
                let attribute = attribute_written(&meta, field, value).expect("known");
                (
                    attribute.logical_name.clone(),
                    normal_form(attribute, &written_json(value)),
                )
            })
            .collect();
        assert_eq!(
            forms,
            [
                (
                    "regardingobjectid".to_owned(),
                    json!("ab000000-0000-4000-8000-000000000001")
                ),
                ("adobe_datesent".to_owned(), json!("2026-11-01T10:00:00Z")),
            ]
        );
        assert!(attribute_written(&meta, "nosuch", &Value::Text("x".into())).is_none());
        assert!(
            attribute_written(&meta, "subject_contact", &Value::Text("x".into())).is_none(),
            "only a lookup is bound through a navigation property"
        );
    }
}
