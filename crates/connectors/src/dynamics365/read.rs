//! The ingress read path's requests: change-tracked pages (`Prefer: odata.track-changes`,
//! next and delta links; their bodies are read by `page.rs`), rows re-read by key, and row
//! counts (`RetrieveTotalRecordCount`).

use serde_json::{Map, Value as Json};

use super::Shared;
use super::metadata::TableMeta;
use super::page::read_change_page;
use super::rows::{Column, RowPlan};
use super::settings::MAX_PAGE_SIZE;
use crate::http::parse_json;
use crate::{ChangePage, ChangeRequest, ConnectorError};
use conduit_model::RecordBatch;

/// The service's code for an expired change-tracking token (the simulator's too).
const EXPIRED_TOKEN_CODE: &str = "0x80044352";

impl Shared {
    pub(super) async fn read_changes(
        &self,
        request: &ChangeRequest,
        cursor: Option<&str>,
    ) -> Result<ChangePage, ConnectorError> {
        let meta = self.table(&request.table).await?;
        let plan = RowPlan::new(&meta, &request.columns)?;
        let url = match cursor {
            // A stored link carries the `$select` it was made with; the columns asked for now
            // replace it, so a field added to (or removed from) the mapping takes effect at the
            // next page without a new baseline: the token only says where the changes start.
            Some(cursor) => with_select(
                &self.check_cursor(cursor)?,
                &select_list(&meta, plan.columns()),
            ),
            None => self.initial_url(&meta, plan.columns()),
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
        let plan = RowPlan::new(&meta, &request.columns)?;
        let select = select_list(&meta, plan.columns());
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
        plan.convert_all(entries, &url)
    }

    /// One row by its URL, with formatted values; `None` when the table no longer holds it.
    async fn read_row(&self, url: String) -> Result<Option<Map<String, Json>>, ConnectorError> {
        let prefer = "odata.include-annotations=\"OData.Community.Display.V1.FormattedValue\"";
        let response = self.get(&url, Some(prefer)).await?;
        if response.status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = response.into_success(format_args!("GET {url}"))?;
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
    let mut select: Vec<&str> = columns.iter().map(Column::wire_name).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn expired_token_errors_are_recognised() {
        let error = ServiceError::read(br#"{"error":{"code":"0x80044352","message":"x"}}"#);
        assert!(error.means_expired_token());
        let other = ServiceError::read(br#"{"error":{"code":"0x1","message":"bad select"}}"#);
        assert!(!other.means_expired_token());
    }
}
