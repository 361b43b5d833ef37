//! The write path: turning [`WriteRecord`]s into `$batch` parts (PATCH upserts and updates by
//! primary or alternate key, DELETEs, lookups as `@odata.bind`), sending batches with
//! `odata.continue-on-error`, and reading one outcome per part from the multipart response.
//!
//! Per-key order: a batch holds at most one write per key; a later write of the same key goes
//! in a later round, and only when the earlier one succeeded (otherwise it fails with it), so a
//! retried old write can never overwrite a newer one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Map, Value as Json};

use super::Shared;
use super::metadata::TableMeta;
use super::multipart::{
    HttpMessage, boundary_of, parse_http_message, split_parts, write_end, write_http_part,
};
use crate::http::{classify_status, service_error_message};
use crate::{ConnectorError, WriteOutcome};
use conduit_model::{Operation, Value, WriteRecord};

/// One prepared `$batch` part and the record it came from.
struct PreparedPart {
    index: usize,
    operation: Operation,
    description: String,
    message: HttpMessage,
}

impl Shared {
    pub(super) async fn write(self: &Arc<Self>, records: &[WriteRecord]) -> Vec<WriteOutcome> {
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; records.len()];
        let mut pending: Vec<usize> = (0..records.len()).collect();
        while !pending.is_empty() {
            // This round: the first pending write of each key; the rest wait for the next round.
            let mut seen = HashSet::new();
            let (round, later): (Vec<usize>, Vec<usize>) = pending
                .into_iter()
                .partition(|index| seen.insert(record_key(&records[*index])));
            let mut parts = Vec::with_capacity(round.len());
            for index in round {
                match self.prepare(index, &records[index]).await {
                    Ok(part) => parts.push(part),
                    Err(error) => outcomes[index] = Some(WriteOutcome::Failed(error)),
                }
            }
            for (index, outcome) in self.send_parts(parts).await {
                outcomes[index] = Some(outcome);
            }
            // A key whose earlier write failed must not be written past: fail its later writes too.
            pending = Vec::new();
            let mut failed_keys: HashMap<(String, String, String), ConnectorError> = HashMap::new();
            for (index, record) in records.iter().enumerate() {
                if let Some(WriteOutcome::Failed(error)) = &outcomes[index] {
                    failed_keys
                        .entry(record_key(record))
                        .or_insert_with(|| error.clone());
                }
            }
            for index in later {
                match failed_keys.get(&record_key(&records[index])) {
                    Some(error) => {
                        outcomes[index] = Some(WriteOutcome::Failed(earlier_failed(error)));
                    }
                    None => pending.push(index),
                }
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| {
                    WriteOutcome::Failed(ConnectorError::Transient {
                        message: "the write was not attempted".to_string(),
                        retry_after: None,
                    })
                })
            })
            .collect()
    }

    /// Builds the `$batch` part of one record.
    async fn prepare(
        &self,
        index: usize,
        record: &WriteRecord,
    ) -> Result<PreparedPart, ConnectorError> {
        let meta = self.table(&record.target.table).await?;
        let address = address(&meta, &record.target.key_field, &record.key)?;
        let url = format!("{}{address}", self.root_path);
        let description = format!("{}({})", meta.entity_set, record.key);
        let mut headers = Vec::new();
        let (method, body) = match record.op {
            Operation::Delete => ("DELETE", String::new()),
            Operation::Upsert | Operation::Update => {
                if record.op == Operation::Update {
                    headers.push(("If-Match".to_string(), "*".to_string()));
                }
                headers.push((
                    "Content-Type".to_string(),
                    "application/json; type=entry".to_string(),
                ));
                (
                    "PATCH",
                    Json::Object(self.body(&meta, record).await?).to_string(),
                )
            }
        };
        Ok(PreparedPart {
            index,
            operation: record.op,
            description,
            message: HttpMessage {
                start_line: format!("{method} {url} HTTP/1.1"),
                headers,
                body,
            },
        })
    }

    /// The JSON body of an upsert or update.
    async fn body(
        &self,
        meta: &TableMeta,
        record: &WriteRecord,
    ) -> Result<Map<String, Json>, ConnectorError> {
        let mut body = Map::new();
        for (field, value) in &record.fields {
            let json = match value {
                Value::Null => Json::Null,
                Value::Boolean(flag) => Json::Bool(*flag),
                Value::Integer(number) => Json::from(*number),
                Value::Decimal(number) => serde_json::Number::from_f64(*number)
                    .map(Json::Number)
                    .ok_or_else(|| ConnectorError::Permanent {
                    message: format!(
                        "the value of '{field}' for {}({}) is not a finite number",
                        meta.entity_set, record.key
                    ),
                })?,
                Value::Text(text) | Value::Datetime(text) | Value::Guid(text) => {
                    Json::String(text.clone())
                }
                Value::Picklist { value, .. } => Json::from(*value),
                Value::Lookup { table, id } => {
                    let target = self.table(table).await?;
                    body.insert(
                        format!("{field}@odata.bind"),
                        Json::String(format!("/{}({id})", target.entity_set)),
                    );
                    continue;
                }
            };
            body.insert(field.clone(), json);
        }
        Ok(body)
    }

    /// Sends the parts in `$batch` requests of at most `batch_size`, concurrently (the pacer
    /// bounds how many are in flight), and returns an outcome per record index.
    async fn send_parts(self: &Arc<Self>, parts: Vec<PreparedPart>) -> Vec<(usize, WriteOutcome)> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut chunks = Vec::new();
        let mut parts = parts.into_iter().peekable();
        while parts.peek().is_some() {
            chunks.push(parts.by_ref().take(self.batch_size).collect::<Vec<_>>());
        }
        let mut indexes_of_chunk = Vec::new();
        for chunk in chunks {
            indexes_of_chunk.push(chunk.iter().map(|part| part.index).collect::<Vec<_>>());
            let shared = Arc::clone(self);
            tasks.spawn(async move { shared.send_batch(chunk).await });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(chunk_outcomes) => outcomes.extend(chunk_outcomes),
                Err(error) => tracing::error!(%error, "a $batch task ended abnormally"),
            }
        }
        // Any record whose task ended abnormally gets a transient failure, never silence.
        let answered: HashSet<usize> = outcomes.iter().map(|(index, _)| *index).collect();
        for index in indexes_of_chunk.into_iter().flatten() {
            if !answered.contains(&index) {
                outcomes.push((
                    index,
                    WriteOutcome::Failed(ConnectorError::Transient {
                        message: "the $batch request carrying this write ended abnormally"
                            .to_string(),
                        retry_after: None,
                    }),
                ));
            }
        }
        outcomes
    }

    async fn send_batch(&self, parts: Vec<PreparedPart>) -> Vec<(usize, WriteOutcome)> {
        let boundary = format!("batch_{}", uuid::Uuid::new_v4());
        let mut body = String::new();
        for part in &parts {
            write_http_part(&mut body, &boundary, &[], &part.message);
        }
        write_end(&mut body, &boundary);
        let url = self.url("$batch");
        let content_type = format!("multipart/mixed; boundary=\"{boundary}\"");
        let sent = self
            .api
            .execute(Method::POST, &url, |request| {
                super::odata_headers(request)
                    .header(CONTENT_TYPE, content_type.as_str())
                    .header("Prefer", "odata.continue-on-error")
                    .body(body.clone())
            })
            .await
            .and_then(|response| response.into_success(format_args!("POST {url}")));
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                return parts
                    .iter()
                    .map(|part| (part.index, WriteOutcome::Failed(error.clone())))
                    .collect();
            }
        };
        let results = read_batch_response(&response.headers, &response.body, &url);
        let results = match results {
            Ok(results) => results,
            Err(error) => {
                return parts
                    .iter()
                    .map(|part| (part.index, WriteOutcome::Failed(error.clone())))
                    .collect();
            }
        };
        let mut outcomes = Vec::with_capacity(parts.len());
        let mut results = results.into_iter();
        for part in &parts {
            let outcome = match results.next() {
                Some(message) => self.outcome_of(part, &message),
                None => WriteOutcome::Failed(ConnectorError::Transient {
                    message: format!(
                        "the $batch response of {url} has no result for {}: it was not processed",
                        part.description
                    ),
                    retry_after: None,
                }),
            };
            outcomes.push((part.index, outcome));
        }
        outcomes
    }

    fn outcome_of(&self, part: &PreparedPart, message: &HttpMessage) -> WriteOutcome {
        let Some(status) = message
            .status()
            .and_then(|code| reqwest::StatusCode::from_u16(code).ok())
        else {
            return WriteOutcome::Failed(ConnectorError::Permanent {
                message: format!(
                    "the $batch result for {} has no HTTP status line: '{}'",
                    part.description, message.start_line
                ),
            });
        };
        if status.is_success() {
            return WriteOutcome::Written;
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            match part.operation {
                Operation::Delete => return WriteOutcome::Written,
                Operation::Update => {
                    return WriteOutcome::Failed(ConnectorError::Missing {
                        message: format!(
                            "{} does not exist, and this write is update-only: {}",
                            part.description,
                            service_error_message(message.body.as_bytes())
                        ),
                    });
                }
                Operation::Upsert => {}
            }
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &message.headers {
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::try_from(name.as_str()),
                reqwest::header::HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        }
        let error = classify_status(
            status,
            &headers,
            message.body.as_bytes(),
            &format!(
                "{} {}",
                part.message.start_line.split(' ').next().unwrap_or("write"),
                part.description
            ),
        );
        if let ConnectorError::Transient {
            retry_after: Some(wait),
            ..
        } = &error
        {
            self.api.pacer().pause_for(*wait);
        }
        WriteOutcome::Failed(error)
    }
}

/// The record's identity for ordering: table, key field and key.
fn record_key(record: &WriteRecord) -> (String, String, String) {
    (
        record.target.table.clone(),
        record.target.key_field.clone(),
        record.key.clone(),
    )
}

fn earlier_failed(error: &ConnectorError) -> ConnectorError {
    let message = format!("an earlier write of the same key failed: {error}");
    match error {
        ConnectorError::Transient { retry_after, .. } => ConnectorError::Transient {
            message,
            retry_after: *retry_after,
        },
        // Retrying the later write alone would reorder writes, so it waits for the earlier one.
        _ => ConnectorError::Transient {
            message,
            retry_after: None,
        },
    }
}

/// `set(<guid>)` by primary key, or `set(field='key')` by alternate key.
pub(super) fn address(
    meta: &TableMeta,
    key_field: &str,
    key: &str,
) -> Result<String, ConnectorError> {
    if key_field == meta.primary_id {
        let id = uuid::Uuid::parse_str(key).map_err(|_| ConnectorError::Permanent {
            message: format!(
                "the key '{key}' of {} is not a GUID, but '{key_field}' is the primary key",
                meta.entity_set
            ),
        })?;
        return Ok(format!("{}({id})", meta.entity_set));
    }
    super::metadata::check_identifier(key_field, "key field")?;
    let attribute = meta
        .attributes
        .get(key_field)
        .ok_or_else(|| ConnectorError::Permanent {
            message: format!(
                "the table '{}' has no key field '{key_field}'",
                meta.logical_name
            ),
        })?;
    let literal = match attribute.attribute_type.as_str() {
        "Integer" | "BigInt" | "Decimal" | "Double" | "Money" => key
            .parse::<f64>()
            .map(|_| key.to_string())
            .map_err(|_| ConnectorError::Permanent {
                message: format!(
                    "the key '{key}' of {} is not a number, but '{key_field}' is numeric",
                    meta.entity_set
                ),
            })?,
        _ => format!("'{}'", encode_key(&key.replace('\'', "''"))),
    };
    Ok(format!("{}({key_field}={literal})", meta.entity_set))
}

/// Percent-encodes what may not appear raw in a URL path segment.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~'@!$*+,;=:".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The HTTP responses inside a `$batch` response, in order (change sets flattened).
pub(crate) fn read_batch_response(
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    url: &str,
) -> Result<Vec<HttpMessage>, ConnectorError> {
    // Transient, like any unreadable answer: the batch is resent (upserts are idempotent).
    let malformed = |why: String| ConnectorError::Transient {
        message: format!(
            "the $batch response of {url} is not a readable multipart/mixed body: {why}"
        ),
        retry_after: None,
    };
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let boundary = boundary_of(content_type).ok_or_else(|| {
        malformed(format!(
            "the content type '{content_type}' has no multipart boundary"
        ))
    })?;
    let text = std::str::from_utf8(body).map_err(|error| malformed(error.to_string()))?;
    let mut messages = Vec::new();
    for part in split_parts(text, &boundary).map_err(malformed)? {
        match part.header("Content-Type").and_then(boundary_of) {
            Some(inner) => {
                for inner_part in split_parts(&part.content, &inner).map_err(malformed)? {
                    messages.push(parse_http_message(&inner_part.content).map_err(malformed)?);
                }
            }
            None => messages.push(parse_http_message(&part.content).map_err(malformed)?),
        }
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamics365::metadata::AttributeMeta;

    fn meta() -> TableMeta {
        let attribute = |name: &str, kind: &str| {
            (
                name.to_string(),
                AttributeMeta {
                    logical_name: name.to_string(),
                    attribute_type: kind.to_string(),
                    max_length: None,
                    targets: Vec::new(),
                    date_only: false,
                },
            )
        };
        TableMeta {
            logical_name: "contact".to_string(),
            entity_set: "contacts".to_string(),
            primary_id: "contactid".to_string(),
            change_tracking: true,
            attributes: HashMap::from([
                attribute("contactid", "Uniqueidentifier"),
                attribute("emailaddress1", "String"),
                attribute("numberofchildren", "Integer"),
            ]),
        }
    }

    #[test]
    fn primary_key_addresses_by_guid_and_other_keys_by_alternate_key() {
        let meta = meta();
        assert_eq!(
            address(&meta, "contactid", "5B4A4C5E-0000-4000-8000-000000000001").expect("guid"),
            "contacts(5b4a4c5e-0000-4000-8000-000000000001)"
        );
        assert_eq!(
            address(&meta, "emailaddress1", "o'neil@x.com").expect("alternate"),
            "contacts(emailaddress1='o''neil@x.com')"
        );
        assert!(address(&meta, "contactid", "not-a-guid").is_err());
        assert!(address(&meta, "nosuch", "x").is_err());
    }

    #[test]
    fn batch_response_parts_are_read_in_order() {
        let body = "--batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\n\r\n\r\n--batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n{\"error\":{\"code\":\"0x1\",\"message\":\"bad\"}}\r\n--batchresponse_1--\r\n";
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("multipart/mixed; boundary=batchresponse_1"),
        );
        let messages = read_batch_response(&headers, body.as_bytes(), "u").expect("readable");
        let statuses: Vec<Option<u16>> = messages.iter().map(HttpMessage::status).collect();
        assert_eq!(statuses, vec![Some(204), Some(400)]);
        assert!(messages[1].body.contains("bad"));
    }

    #[test]
    fn non_multipart_batch_response_is_a_clear_error() {
        let error = read_batch_response(
            &reqwest::header::HeaderMap::new(),
            b"{}",
            "https://x/$batch",
        )
        .expect_err("not multipart");
        assert!(error.to_string().contains("https://x/$batch"), "{error}");
    }
}
