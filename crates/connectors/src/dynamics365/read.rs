//! The ingress read path: change-tracked pages (`Prefer: odata.track-changes`, next and delta
//! links), the conversion of Dataverse rows into [`RecordBatch`]es using attribute metadata,
//! and row counts (`RetrieveTotalRecordCount`).

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::Shared;
use super::metadata::{AttributeMeta, TableMeta};
use super::settings::MAX_PAGE_SIZE;
use crate::http::parse_json;
use crate::{ChangePage, ChangeRequest, ConnectorError};
use conduit_model::{Operation, RecordBatch, Row, Value};

const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";
const LOOKUP_TABLE: &str = "@Microsoft.Dynamics.CRM.lookuplogicalname";

/// The service's code for an expired change-tracking token (the simulator's too).
const EXPIRED_TOKEN_CODE: &str = "0x80044352";

#[derive(Deserialize)]
struct Page {
    value: Vec<Map<String, Json>>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

/// One requested column and how to read it.
struct Column<'a> {
    wire_name: String,
    attribute: &'a AttributeMeta,
}

impl Shared {
    pub(super) async fn read_changes(
        &self,
        request: &ChangeRequest,
        cursor: Option<&str>,
    ) -> Result<ChangePage, ConnectorError> {
        let meta = self.table(&request.table).await?;
        let columns = resolve_columns(&meta, &request.columns)?;
        let url = match cursor {
            // A stored link carries the `$select` it was made with; the columns asked for now
            // replace it, so a field added to (or removed from) the mapping takes effect at the
            // next page without a new baseline: the token only says where the changes start.
            Some(cursor) => with_select(&self.check_cursor(cursor)?, &select_list(&meta, &columns)),
            None => self.initial_url(&meta, &columns),
        };
        let page_size = request.page_size.clamp(1, MAX_PAGE_SIZE);
        let prefer = format!(
            "odata.track-changes,odata.maxpagesize={page_size},odata.include-annotations=\"OData.Community.Display.V1.FormattedValue\""
        );
        let response = self.get(&url, Some(&prefer)).await?;
        let what = format!("GET {url}");
        if !response.status.is_success() && cursor.is_some_and(|c| c.contains("$deltatoken=")) {
            let error = ServiceError::read(&response.body);
            if error.means_expired_token() {
                return Err(ConnectorError::CursorExpired {
                    message: format!("{what} failed with {}: {}", response.status, error.message),
                });
            }
        }
        let response = response.into_success(&what)?;
        read_change_page(&meta, &request.columns, &response.body, &url).inspect_err(|error| {
            // A page the metadata cannot explain: the table may have changed under us, so
            // read its metadata afresh next time. An unreadable body is a transient glitch.
            if !error.is_transient() {
                self.forget_table(&request.table);
            }
        })
    }

    /// Reads rows by primary key, a few requests at a time; a key the table no longer holds
    /// (404) is left out.
    pub(super) async fn read_rows(
        &self,
        request: &ChangeRequest,
        keys: &[String],
    ) -> Result<RecordBatch, ConnectorError> {
        use futures_util::StreamExt;
        let meta = self.table(&request.table).await?;
        let columns = resolve_columns(&meta, &request.columns)?;
        let select = select_list(&meta, &columns);
        let urls: Vec<String> = keys
            .iter()
            .map(|key| {
                self.url(&format!(
                    "{}({})?$select={select}",
                    meta.entity_set,
                    guid_literal(key)
                ))
            })
            .collect();
        let results: Vec<Result<Option<Map<String, Json>>, ConnectorError>> =
            futures_util::stream::iter(urls)
                .map(|url| self.read_row(url))
                .buffered(READ_ROWS_CONCURRENCY)
                .collect()
                .await;
        let mut entries = Vec::with_capacity(results.len());
        for result in results {
            if let Some(entry) = result? {
                entries.push(entry);
            }
        }
        let url = self.url(&meta.entity_set);
        convert_page(&meta, &request.columns, &columns, entries, &url)
    }

    /// One row by its URL, with formatted values; `None` when the table no longer holds it.
    async fn read_row(&self, url: String) -> Result<Option<Map<String, Json>>, ConnectorError> {
        let prefer = "odata.include-annotations=\"OData.Community.Display.V1.FormattedValue\"";
        let response = self.get(&url, Some(prefer)).await?;
        if response.status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = response.into_success(&format!("GET {url}"))?;
        parse_json::<Map<String, Json>>(&response.body, &url, "a JSON row").map(Some)
    }

    /// A stored cursor is a full URL; it must point into this organization's API, because the
    /// bearer token goes with it.
    fn check_cursor(&self, cursor: &str) -> Result<String, ConnectorError> {
        if cursor.starts_with(&self.root) {
            Ok(cursor.to_string())
        } else {
            Err(ConnectorError::Permanent {
                message: format!(
                    "the stored cursor '{cursor}' is not a link under {}: was the organization URL changed? Replay the mapping to start over",
                    self.root
                ),
            })
        }
    }

    fn initial_url(&self, meta: &TableMeta, columns: &[Column<'_>]) -> String {
        self.url(&format!(
            "{}?$select={}",
            meta.entity_set,
            select_list(meta, columns)
        ))
    }

    pub(super) async fn count_rows(&self, table: &str) -> Result<u64, ConnectorError> {
        let meta = self.table(table).await?;
        let url = self.url(&format!(
            "RetrieveTotalRecordCount(EntityNames=@p1)?@p1=%5B%22{}%22%5D",
            meta.logical_name
        ));
        let body: Json = self
            .get_json(&url, "a RetrieveTotalRecordCount response")
            .await?;
        body.pointer("/EntityRecordCountCollection/Values/0")
            .and_then(Json::as_u64)
            .ok_or_else(|| ConnectorError::Permanent {
                message: format!(
                    "the response of {url} has no EntityRecordCountCollection.Values[0] count"
                ),
            })
    }
}

/// Requests in flight at once while re-reading rows by key (the pacer caps the total too).
const READ_ROWS_CONCURRENCY: usize = 8;

/// A key as it goes between parentheses in a URL: a GUID as it is, anything else quoted
/// and percent-encoded, so that a key can never change the request's path or query.
fn guid_literal(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        key.to_string()
    } else {
        let quoted = format!("'{}'", key.replace('\'', "''"));
        url::form_urlencoded::byte_serialize(quoted.as_bytes()).collect()
    }
}

/// The `$select` value for the requested columns: their wire names, plus `modifiedon` when
/// the table has it (the opt-out rule needs the record's change time).
fn select_list(meta: &TableMeta, columns: &[Column<'_>]) -> String {
    let mut select: Vec<&str> = columns
        .iter()
        .map(|column| column.wire_name.as_str())
        .collect();
    if meta.attributes.contains_key("modifiedon") && !select.contains(&"modifiedon") {
        select.push("modifiedon");
    }
    if select.is_empty() {
        select.push(&meta.primary_id);
    }
    select.join(",")
}

/// Replaces the `$select` of a next or delta link, keeping every other option (the tokens
/// among them) byte for byte.
pub(crate) fn with_select(link: &str, select: &str) -> String {
    let (base, query) = link.split_once('?').unwrap_or((link, ""));
    let mut options: Vec<String> = query
        .split('&')
        .filter(|option| {
            let lower = option.to_ascii_lowercase();
            !option.is_empty() && !lower.starts_with("$select=") && !lower.starts_with("%24select=")
        })
        .map(str::to_string)
        .collect();
    options.insert(0, format!("$select={select}"));
    format!("{base}?{}", options.join("&"))
}

/// The service's error envelope, as far as it could be read.
struct ServiceError {
    code: String,
    message: String,
}

impl ServiceError {
    fn read(body: &[u8]) -> ServiceError {
        let json: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
        let text = |pointer: &str| {
            json.pointer(pointer)
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string()
        };
        ServiceError {
            code: text("/error/code"),
            message: text("/error/message"),
        }
    }

    fn means_expired_token(&self) -> bool {
        let message = self.message.to_ascii_lowercase();
        self.code.eq_ignore_ascii_case(EXPIRED_TOKEN_CODE)
            || (message.contains("expired")
                && (message.contains("token") || message.contains("version")))
    }
}

fn resolve_columns<'a>(
    meta: &'a TableMeta,
    columns: &[String],
) -> Result<Vec<Column<'a>>, ConnectorError> {
    columns
        .iter()
        .map(|column| {
            let attribute = meta.column(column).ok_or_else(|| ConnectorError::Permanent {
                message: format!(
                    "the table '{}' has no column '{column}' (check the mapping's source fields)",
                    meta.logical_name
                ),
            })?;
            Ok(Column {
                wire_name: attribute.wire_name(),
                attribute,
            })
        })
        .collect()
}

/// Reads one change-tracking page body (`value`, `@odata.nextLink`, `@odata.deltaLink`) of
/// `meta`'s table into its rows, converted for the `names` columns, and the cursor after it.
pub(crate) fn read_change_page(
    meta: &TableMeta,
    names: &[String],
    body: &[u8],
    url: &str,
) -> Result<ChangePage, ConnectorError> {
    let columns = resolve_columns(meta, names)?;
    let page: Page = parse_json(body, url, "a JSON page with a 'value' list")?;
    let batch = convert_page(meta, names, &columns, page.value, url)?;
    match (page.next_link, page.delta_link) {
        (Some(next), _) => Ok(ChangePage {
            batch,
            cursor: next,
            caught_up: false,
        }),
        (None, Some(delta)) => Ok(ChangePage {
            batch,
            cursor: delta,
            caught_up: true,
        }),
        (None, None) => Err(ConnectorError::Permanent {
            message: format!(
                "the response of {url} has neither @odata.nextLink nor @odata.deltaLink: is change tracking enabled on '{}'?",
                meta.logical_name
            ),
        }),
    }
}

fn convert_page(
    meta: &TableMeta,
    names: &[String],
    columns: &[Column<'_>],
    entries: Vec<Map<String, Json>>,
    url: &str,
) -> Result<RecordBatch, ConnectorError> {
    let mut rows = Vec::with_capacity(entries.len());
    let mut deletes = Vec::new();
    for entry in entries {
        if is_deleted_entity(&entry) {
            let key = entry.get("id").and_then(Json::as_str).ok_or_else(|| {
                ConnectorError::Permanent {
                    message: format!("a $deletedEntity row in the response of {url} has no 'id'"),
                }
            })?;
            deletes.push(Row {
                key: key.to_string(),
                op: Operation::Delete,
                values: vec![Value::Null; columns.len()],
                modified_at: None,
            });
            continue;
        }
        let key = entry
            .get(&meta.primary_id)
            .and_then(Json::as_str)
            .ok_or_else(|| ConnectorError::Permanent {
                message: format!(
                    "a row in the response of {url} has no primary key '{}'",
                    meta.primary_id
                ),
            })?
            .to_string();
        let values = columns
            .iter()
            .map(|column| convert_value(&entry, column, url))
            .collect::<Result<Vec<_>, _>>()?;
        let modified_at = entry
            .get("modifiedon")
            .and_then(Json::as_str)
            .map(str::to_string);
        rows.push(Row {
            key,
            op: Operation::Upsert,
            values,
            modified_at,
        });
    }
    // The service lists upserts before deletes; keep that order even if a page mixes them.
    rows.extend(deletes);
    Ok(RecordBatch {
        table: meta.logical_name.clone(),
        columns: names.to_vec(),
        rows,
    })
}

fn is_deleted_entity(entry: &Map<String, Json>) -> bool {
    entry
        .get("@odata.context")
        .and_then(Json::as_str)
        .is_some_and(|context| context.ends_with("$deletedEntity"))
        || (entry.get("reason").and_then(Json::as_str) == Some("deleted")
            && entry.contains_key("id"))
}

fn convert_value(
    entry: &Map<String, Json>,
    column: &Column<'_>,
    url: &str,
) -> Result<Value, ConnectorError> {
    let raw = entry.get(&column.wire_name).unwrap_or(&Json::Null);
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let attribute = column.attribute;
    let mismatch = || ConnectorError::Permanent {
        message: format!(
            "the column '{}' is declared {} but the response of {url} holds {raw}",
            attribute.logical_name, attribute.attribute_type
        ),
    };
    let text = || raw.as_str().map(str::to_string).ok_or_else(mismatch);
    let value = match attribute.attribute_type.as_str() {
        "Picklist" | "State" | "Status" => Value::Picklist {
            value: raw.as_i64().ok_or_else(mismatch)?,
            label: entry
                .get(&format!("{}{FORMATTED}", column.wire_name))
                .and_then(Json::as_str)
                .map(str::to_string),
        },
        "Boolean" => Value::Boolean(raw.as_bool().ok_or_else(mismatch)?),
        "Uniqueidentifier" => Value::Guid(text()?),
        "Lookup" | "Customer" | "Owner" => {
            let table = entry
                .get(&format!("{}{LOOKUP_TABLE}", column.wire_name))
                .and_then(Json::as_str)
                .or_else(|| attribute.targets.first().map(String::as_str))
                .unwrap_or_default()
                .to_string();
            Value::Lookup { table, id: text()? }
        }
        "DateTime" => Value::Datetime(text()?),
        "Money" | "Decimal" | "Double" => Value::Decimal(raw.as_f64().ok_or_else(mismatch)?),
        "Integer" | "BigInt" => Value::Integer(raw.as_i64().ok_or_else(mismatch)?),
        "String" | "Memo" => Value::Text(text()?),
        // Other types travel as text, as the Adobe integration syncs them "as is".
        _ => Value::Text(raw.as_str().map_or_else(|| raw.to_string(), str::to_string)),
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    #[test]
    fn a_stored_link_is_read_with_the_columns_asked_for_now() {
        let delta = "https://org/api/data/v9.2/contacts?$select=firstname,modifiedon&$deltatoken=919042%2108%2f22%2f2017";
        assert_eq!(
            with_select(delta, "emailaddress1,telephone1,modifiedon"),
            "https://org/api/data/v9.2/contacts?$select=emailaddress1,telephone1,modifiedon&$deltatoken=919042%2108%2f22%2f2017"
        );
        let encoded = "https://org/api/data/v9.2/contacts?%24SELECT=a&%24skiptoken=x%3D1";
        assert_eq!(
            with_select(encoded, "b"),
            "https://org/api/data/v9.2/contacts?$select=b&%24skiptoken=x%3D1"
        );
    }

    fn meta() -> TableMeta {
        let attribute = |name: &str, kind: &str, targets: &[&str]| {
            (
                name.to_string(),
                AttributeMeta {
                    logical_name: name.to_string(),
                    attribute_type: kind.to_string(),
                    max_length: None,
                    targets: targets
                        .iter()
                        .map(std::string::ToString::to_string)
                        .collect(),
                    date_only: false,
                },
            )
        };
        TableMeta {
            logical_name: "new_vehicle".to_string(),
            entity_set: "new_vehicles".to_string(),
            primary_id: "new_vehicleid".to_string(),
            change_tracking: true,
            attributes: HashMap::from([
                attribute("new_vehicleid", "Uniqueidentifier", &[]),
                attribute("new_year", "Integer", &[]),
                attribute("statecode", "State", &[]),
                attribute("new_contactid", "Lookup", &["contact"]),
                attribute("modifiedon", "DateTime", &[]),
            ]),
        }
    }

    fn page(value: Json) -> Vec<Map<String, Json>> {
        serde_json::from_value(value).expect("a list of objects")
    }

    #[test]
    fn rows_convert_by_attribute_type_and_deletes_come_last() {
        let meta = meta();
        let names = vec![
            "new_year".to_string(),
            "statecode".to_string(),
            "new_contactid".to_string(),
        ];
        let columns = resolve_columns(&meta, &names).expect("known columns");
        let entries = page(json!([
            {"@odata.context": "x/$metadata#new_vehicles/$deletedEntity", "id": "gone", "reason": "deleted"},
            {"new_vehicleid": "v1", "new_year": 2020, "statecode": 1,
             "statecode@OData.Community.Display.V1.FormattedValue": "Inactive",
             "_new_contactid_value": "c1", "modifiedon": "2026-01-01T00:00:00Z"},
        ]));
        let batch = convert_page(&meta, &names, &columns, entries, "u").expect("convertible");
        assert_eq!(batch.rows.len(), 2);
        assert_eq!(
            batch.rows[0].values,
            vec![
                Value::Integer(2020),
                Value::Picklist {
                    value: 1,
                    label: Some("Inactive".to_string())
                },
                Value::Lookup {
                    table: "contact".to_string(),
                    id: "c1".to_string()
                },
            ]
        );
        assert_eq!(
            batch.rows[0].modified_at.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(batch.rows[1].op, Operation::Delete);
        assert_eq!(batch.rows[1].key, "gone");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_column() {
        let meta = meta();
        let names = vec!["new_year".to_string()];
        let columns = resolve_columns(&meta, &names).expect("known columns");
        let entries = page(json!([{"new_vehicleid": "v1", "new_year": "twenty"}]));
        let error = convert_page(&meta, &names, &columns, entries, "u").expect_err("mismatch");
        assert!(error.to_string().contains("new_year"), "{error}");
    }

    #[test]
    fn unknown_columns_are_refused_before_any_request() {
        let meta = meta();
        let error = resolve_columns(&meta, &["nosuch".to_string()])
            .err()
            .expect("unknown");
        assert!(error.to_string().contains("nosuch"));
    }

    /// Found by `a_generated_page_of_n_changes_reads_back_as_n_rows_upserts_first`: without
    /// serde_json's `float_roundtrip` this money value came back one ulp off.
    #[test]
    fn a_decimal_reads_back_as_the_exact_number_sent() {
        let meta = crate::dynamics365::fixtures::contact_table();
        let names = vec!["creditlimit".to_string()];
        let body = br#"{"value":[{"contactid":"a","creditlimit":-58258277.154228084}],"@odata.deltaLink":"d"}"#;
        let page = read_change_page(&meta, &names, body, "u").expect("readable");
        assert_eq!(
            page.batch.rows[0].values,
            vec![Value::Decimal(-58_258_277.154_228_084)]
        );
    }

    #[test]
    fn expired_token_errors_are_recognised() {
        let error = ServiceError::read(br#"{"error":{"code":"0x80044352","message":"x"}}"#);
        assert!(error.means_expired_token());
        let other = ServiceError::read(br#"{"error":{"code":"0x1","message":"bad select"}}"#);
        assert!(!other.means_expired_token());
    }
}
