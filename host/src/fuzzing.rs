//! Entry points for the fuzz targets in `fuzz/` (and their property tests): each hands
//! untrusted bytes to one of the host's parsers, through the same code the running host uses,
//! and returns that parser's verdict. The host itself never calls these: the module exists
//! only with the `fuzzing` feature, which `fuzz/` turns on.

use std::path::Path;

use crate::config::{Config, Problem};
use crate::connector::dynamics365::metadata::PicklistOption;
use crate::connector::dynamics365::multipart::HttpMessage;
use crate::connector::{ChangePage, ConnectorError, EventPage, FieldInfo, OptOutChange};
use crate::model::{Outcome, System, Target, WriteRecord};

/// The file name the config entry point reports problems against.
pub const CONFIG_PATH: &str = "/fuzz/conduit.toml";

/// The export file name the opt-out CSV entry point reports problems against.
pub const EXPORT_FILE_NAME: &str = "optout_20260101_000000.csv";

/// The URL the response entry points name in their errors.
pub const RESPONSE_URL: &str = "https://fuzz.invalid/api";

/// Parses and validates config text (invalid UTF-8 is replaced, as a reader of the file would
/// refuse it before parsing).
pub fn config_parse(data: &[u8]) -> Result<Config, Vec<Problem>> {
    Config::parse(Path::new(CONFIG_PATH), &String::from_utf8_lossy(data))
}

pub use crate::connector::dynamics365::fixtures::{contact_columns, contact_table};

/// Reads a Dataverse change-tracking page body of [`contact_table`].
pub fn dataverse_page(body: &[u8]) -> Result<ChangePage, ConnectorError> {
    crate::connector::dynamics365::read::read_change_page(
        &contact_table(),
        &contact_columns(),
        body,
        RESPONSE_URL,
    )
}

/// Reads a Dataverse picklist attribute body into its options (values and user labels).
pub fn dataverse_option_set(body: &[u8]) -> Result<Vec<PicklistOption>, ConnectorError> {
    crate::connector::dynamics365::metadata::read_option_set(body, RESPONSE_URL)
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
    crate::connector::dynamics365::write::read_batch_response(&headers, body, RESPONSE_URL)
}

/// Reads a Campaign list page body: its records and the next href to follow.
pub fn campaign_list_page(
    body: &[u8],
) -> Result<(Vec<serde_json::Value>, Option<String>), ConnectorError> {
    crate::connector::campaign::sink::read_list_page(body, RESPONSE_URL)
}

/// Reads a Campaign key lookup's answer for a profile keyed by `externalId`: `Ok(None)` when
/// nothing matched, else the found record's href or PKey (`href:` / `pkey:` prefixed).
pub fn campaign_lookup(body: &[u8]) -> Result<Option<String>, ConnectorError> {
    use crate::connector::campaign::sink::FoundAt;
    let record = WriteRecord {
        target: Target {
            system: System::Campaign,
            table: "profile".to_owned(),
            key_field: "externalId".to_owned(),
        },
        key: "c1".to_owned(),
        op: crate::model::Operation::Upsert,
        fields: Vec::new(),
    };
    let found = crate::connector::campaign::sink::read_lookup(body, RESPONSE_URL, &record)?;
    Ok(found.map(|found| match found {
        FoundAt::Href(href) => format!("href:{href}"),
        FoundAt::PKey(pkey) => format!("pkey:{pkey}"),
    }))
}

/// Reads a Campaign `resourceType` metadata body into the resource's fields.
pub fn campaign_resource_fields(body: &[u8]) -> Result<Vec<FieldInfo>, ConnectorError> {
    crate::connector::campaign::sink::read_resource_fields(body, RESPONSE_URL, "profile")
}

/// Reads an opt-out export file.
pub fn optout_csv(data: &[u8]) -> Result<Vec<OptOutChange>, String> {
    crate::connector::campaign::parse_export(EXPORT_FILE_NAME, data)
}

/// Reads an event-journal page body, as the page after position `since`.
pub fn journal_page(body: &[u8], since: Option<&str>) -> Result<EventPage, ConnectorError> {
    crate::connector::campaign::events::read_journal_page(body, RESPONSE_URL, since)
}

/// Decodes bytes into a plugin's mapped batch and checks it as the host checks a plugin's
/// output (see `plugin/fuzz_input.rs` for the decoding).
pub fn plugin_output(data: &[u8]) -> Result<Vec<Outcome>, String> {
    crate::plugin::fuzz_input::check_output_bytes(data)
}
