//! Entry points for the fuzz targets in `fuzz/` that reach this crate's parsers: each hands
//! untrusted bytes to one parser, through the same code the connectors use, and returns that
//! parser's verdict. Nothing in the product calls these: the module exists only with the
//! `fuzzing` feature, which `fuzz/` turns on through the `conduit` crate.

use conduit_model::{System, Target, WriteRecord};

use crate::dynamics365::metadata::PicklistOption;
use crate::dynamics365::multipart::HttpMessage;
use crate::{ChangePage, ConnectorError, EventPage, FieldInfo, OptOutChange};

/// The export file name the opt-out CSV entry point reports problems against.
pub const EXPORT_FILE_NAME: &str = "optout_20260101_000000.csv";

/// The URL the response entry points name in their errors.
pub const RESPONSE_URL: &str = "https://fuzz.invalid/api";

pub use crate::dynamics365::fixtures::{contact_columns, contact_table};

/// Reads a Dataverse change-tracking page body of [`contact_table`].
pub fn dataverse_page(body: &[u8]) -> Result<ChangePage, ConnectorError> {
    crate::dynamics365::page::read_change_page(
        &contact_table(),
        &contact_columns(),
        body,
        RESPONSE_URL,
    )
}

/// Reads a Dataverse picklist attribute body into its options (values and user labels).
pub fn dataverse_option_set(body: &[u8]) -> Result<Vec<PicklistOption>, ConnectorError> {
    crate::dynamics365::metadata::read_option_set(body, RESPONSE_URL)
}

/// Reads a Dataverse `$batch` response given its `Content-Type` header value and body.
pub fn dataverse_batch(
    content_type: &[u8],
    body: &[u8],
) -> Result<Vec<HttpMessage>, ConnectorError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(value) = reqwest::header::HeaderValue::from_bytes(content_type) {
        headers.insert(reqwest::header::CONTENT_TYPE, value);
    }
    crate::dynamics365::write::read_batch_response(&headers, body, RESPONSE_URL)
}

/// Reads a Campaign list page body: its records and the next href to follow.
pub fn campaign_list_page(
    body: &[u8],
) -> Result<(Vec<serde_json::Value>, Option<String>), ConnectorError> {
    crate::campaign::sink::read_list_page(body, RESPONSE_URL)
}

/// Reads a Campaign key lookup's answer for a profile keyed by `externalId`: `Ok(None)` when
/// nothing matched, else the found record's href or PKey (`href:` / `pkey:` prefixed).
pub fn campaign_lookup(body: &[u8]) -> Result<Option<String>, ConnectorError> {
    use crate::campaign::sink::FoundAt;
    let record = WriteRecord {
        target: Target {
            system: System::Campaign,
            table: "profile".to_owned(),
            key_field: "externalId".to_owned(),
        },
        key: "c1".to_owned(),
        op: conduit_model::Operation::Upsert,
        fields: Vec::new(),
    };
    let found = crate::campaign::sink::read_lookup(body, RESPONSE_URL, &record)?;
    Ok(found.map(|found| match found {
        FoundAt::Href(href) => format!("href:{href}"),
        FoundAt::PKey(pkey) => format!("pkey:{pkey}"),
    }))
}

/// Reads a Campaign `resourceType` metadata body into the resource's fields.
pub fn campaign_resource_fields(body: &[u8]) -> Result<Vec<FieldInfo>, ConnectorError> {
    crate::campaign::sink::read_resource_fields(body, RESPONSE_URL, "profile")
}

/// Reads an opt-out export file.
pub fn optout_csv(data: &[u8]) -> Result<Vec<OptOutChange>, String> {
    crate::campaign::parse_export(EXPORT_FILE_NAME, data)
}

/// Reads an event-journal page body, as the page after position `since`.
pub fn journal_page(body: &[u8], since: Option<&str>) -> Result<EventPage, ConnectorError> {
    crate::campaign::events::read_journal_page(body, RESPONSE_URL, since)
}
