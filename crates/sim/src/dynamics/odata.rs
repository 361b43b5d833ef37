//! OData request details the simulated Web API reads and writes: percent-coding, query
//! options, `Prefer` preferences, entity keys in paths, literals, and the Dataverse error
//! envelope. Query expressions (`$filter`, `$orderby`, `$expand`) live in [`super::query`].

use serde_json::{Value as Json, json};

/// An error answered in the Dataverse envelope `{"error":{"code":..,"message":..}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The service's hex code (may be empty, as the service sometimes sends).
    pub code: &'static str,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A 400 about the request's syntax or options.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "0x80060888", message)
    }

    /// A 404 for a missing row, in the service's words.
    pub fn row_not_found(table: &str, id: &str) -> ApiError {
        ApiError::new(
            404,
            "0x80040217",
            format!("{table} With Id = {id} Does Not Exist"),
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Json {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

/// Decodes `%XX` escapes (and leaves malformed ones as they are).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && index + 2 < bytes.len()
            && let Some(byte) = std::str::from_utf8(&bytes[index + 1..index + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            index += 3;
            continue;
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes a query value so it survives in a URL (unreserved characters kept).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        // Commas stay readable in `$select` lists; everything else outside unreserved is escaped.
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b',') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Splits a raw query string into decoded pairs, keeping their order.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            // OData clients encode spaces as %20; a '+' from a form encoder means a space too.
            (
                percent_decode(&key.replace('+', " ")),
                percent_decode(&value.replace('+', " ")),
            )
        })
        .collect()
}

/// The request's query options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryOptions {
    /// Every pair, in order.
    pub pairs: Vec<(String, String)>,
}

impl QueryOptions {
    /// Parses a raw query string.
    pub fn parse(raw: &str) -> QueryOptions {
        QueryOptions {
            pairs: parse_query(raw),
        }
    }

    /// The value of option `name` (case-insensitive, `$` included in the name).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The `$select` list, if given.
    pub fn select(&self) -> Option<Vec<String>> {
        self.get("$select").map(|select| {
            select
                .split(',')
                .map(|column| column.trim().to_string())
                .filter(|column| !column.is_empty())
                .collect()
        })
    }

    /// The query string without the named options, re-encoded, for next links.
    pub fn encoded_without(&self, dropped: &[&str]) -> String {
        self.pairs
            .iter()
            .filter(|(key, _)| !dropped.iter().any(|drop| key.eq_ignore_ascii_case(drop)))
            .map(|(key, value)| format!("{}={}", encode_option_name(key), percent_encode(value)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn encode_option_name(name: &str) -> String {
    // `$` is legal in a query and clients expect `$select`, not `%24select`.
    name.split('$')
        .map(percent_encode)
        .collect::<Vec<_>>()
        .join("$")
}

/// The preferences of a `Prefer` header.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preferences {
    /// `odata.track-changes`.
    pub track_changes: bool,
    /// `odata.maxpagesize=n`.
    pub max_page_size: Option<usize>,
    /// `odata.include-annotations="..."`, unquoted.
    pub include_annotations: Option<String>,
    /// `return=representation`.
    pub return_representation: bool,
    /// `odata.continue-on-error`.
    pub continue_on_error: bool,
}

impl Preferences {
    /// Parses every `Prefer` header value given.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Preferences {
        let mut preferences = Preferences::default();
        for value in values {
            for preference in split_preferences(value) {
                let preference = preference.trim();
                let (name, argument) = match preference.split_once('=') {
                    Some((name, argument)) => (name.trim(), Some(argument.trim())),
                    None => (preference, None),
                };
                match name.to_ascii_lowercase().as_str() {
                    "odata.track-changes" => preferences.track_changes = true,
                    "odata.maxpagesize" => {
                        preferences.max_page_size = argument.and_then(|n| n.parse().ok());
                    }
                    "odata.include-annotations" => {
                        preferences.include_annotations =
                            argument.map(|a| a.trim_matches('"').to_string());
                    }
                    "return" => {
                        preferences.return_representation = argument == Some("representation");
                    }
                    "odata.continue-on-error" => preferences.continue_on_error = true,
                    _ => {}
                }
            }
        }
        preferences
    }

    /// True when FormattedValue annotations were asked for.
    pub fn wants_formatted_values(&self) -> bool {
        self.include_annotations.as_deref().is_some_and(|filter| {
            filter.split(',').any(|one| {
                let one = one.trim();
                one == "*"
                    || one.eq_ignore_ascii_case("OData.Community.Display.V1.FormattedValue")
                    || one.eq_ignore_ascii_case("OData.Community.Display.V1.*")
            })
        })
    }

    /// True when lookup annotations were asked for.
    pub fn wants_lookup_annotations(&self) -> bool {
        self.include_annotations.as_deref().is_some_and(|filter| {
            filter.split(',').any(|one| {
                let one = one.trim();
                one == "*"
                    || one.eq_ignore_ascii_case("Microsoft.Dynamics.CRM.*")
                    || one.eq_ignore_ascii_case("Microsoft.Dynamics.CRM.lookuplogicalname")
            })
        })
    }
}

/// Splits on commas outside double quotes (annotation filters are quoted lists).
fn split_preferences(value: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (index, character) in value.char_indices() {
        match character {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                pieces.push(&value[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    pieces.push(&value[start..]);
    pieces
}

/// How a path addresses one row.
#[derive(Debug, Clone, PartialEq)]
pub enum EntityKey {
    /// By primary key.
    Id(String),
    /// By alternate key values, `(name, value)` pairs.
    Alternate(Vec<(String, Json)>),
}

/// Parses the inside of `set(...)`: a GUID, or `name=value` pairs.
pub fn parse_entity_key(inner: &str) -> Result<EntityKey, ApiError> {
    let inner = inner.trim();
    if let Ok(id) = uuid::Uuid::parse_str(inner) {
        return Ok(EntityKey::Id(id.to_string()));
    }
    let mut pairs = Vec::new();
    for piece in split_key_pairs(inner) {
        let Some((name, raw)) = piece.split_once('=') else {
            return Err(ApiError::bad_request(format!(
                "Bad Request - Error in query syntax: '{inner}' is neither a GUID nor key=value pairs."
            )));
        };
        pairs.push((name.trim().to_string(), parse_literal(raw.trim())?));
    }
    Ok(EntityKey::Alternate(pairs))
}

/// Splits `a='x,y',b=2` on commas outside quotes.
fn split_key_pairs(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (index, character) in text.char_indices() {
        match character {
            '\'' => quoted = !quoted,
            ',' if !quoted => {
                pieces.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    pieces.push(&text[start..]);
    pieces
}

/// Parses an OData literal: `'text'` (with `''` escapes), a number, `true`/`false`, `null`,
/// or a bare GUID.
pub fn parse_literal(raw: &str) -> Result<Json, ApiError> {
    if let Some(quoted) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Ok(Json::String(quoted.replace("''", "'")));
    }
    match raw {
        "null" => return Ok(Json::Null),
        "true" => return Ok(Json::Bool(true)),
        "false" => return Ok(Json::Bool(false)),
        _ => {}
    }
    if let Ok(id) = uuid::Uuid::parse_str(raw) {
        return Ok(Json::String(id.to_string()));
    }
    if let Ok(integer) = raw.parse::<i64>() {
        return Ok(json!(integer));
    }
    if let Ok(float) = raw.parse::<f64>() {
        return Ok(json!(float));
    }
    Err(ApiError::bad_request(format!(
        "Bad Request - Error in query syntax: '{raw}' is not a literal."
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_header_with_quoted_annotation_list_is_split_correctly() {
        let preferences = Preferences::parse([
            "odata.track-changes, odata.maxpagesize=50, odata.include-annotations=\"OData.Community.Display.V1.FormattedValue,Microsoft.Dynamics.CRM.lookuplogicalname\"",
        ]);
        assert!(preferences.track_changes);
        assert_eq!(preferences.max_page_size, Some(50));
        assert!(preferences.wants_formatted_values());
        assert!(preferences.wants_lookup_annotations());
    }

    #[test]
    fn alternate_keys_parse_with_quote_escapes() {
        assert_eq!(
            parse_entity_key("emailaddress1='o''bryan@x.com',new_year=2020").expect("pairs"),
            EntityKey::Alternate(vec![
                ("emailaddress1".to_string(), json!("o'bryan@x.com")),
                ("new_year".to_string(), json!(2020)),
            ])
        );
        assert!(matches!(
            parse_entity_key("5b4a4c5e-0000-4000-8000-000000000001").expect("guid"),
            EntityKey::Id(_)
        ));
    }

    #[test]
    fn query_round_trips_through_encoding() {
        let options = QueryOptions::parse(
            "$select=firstname,lastname&$deltatoken=12%2111%2F02%2F2026%2010%3A00%3A00",
        );
        assert_eq!(options.get("$deltatoken"), Some("12!11/02/2026 10:00:00"));
        let again = QueryOptions::parse(&options.encoded_without(&[]));
        assert_eq!(again, options);
    }
}
