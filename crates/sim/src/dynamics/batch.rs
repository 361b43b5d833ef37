//! The simulated `$batch` endpoint: reads the multipart request, runs each part through the
//! Web API dispatcher (change sets atomically, `$n` Content-ID references resolved), and writes
//! the multipart response. Without `odata.continue-on-error` the first failure ends the batch.

use super::multipart::{
    HttpMessage, boundary_param, parts, read_message, render_close, render_part,
};

use super::api::{API_PREFIX, ApiRequest, ApiResponse, handle};
use super::odata::{ApiError, Preferences};
use super::store::Store;

/// The most requests one batch may hold.
pub const MAX_BATCH_REQUESTS: usize = 1000;

/// One request of the batch, with its change set when it belongs to one.
struct BatchItem {
    changeset: Option<usize>,
    content_id: Option<String>,
    message: HttpMessage,
}

/// Serves `POST $batch`.
pub fn handle_batch(store: &mut Store, request: &ApiRequest) -> ApiResponse {
    match run(store, request) {
        Ok(response) => response,
        Err(error) => ApiResponse::error(&error),
    }
}

fn run(store: &mut Store, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let content_type = request.header("Content-Type").unwrap_or_default();
    let boundary = boundary_param(content_type).ok_or_else(|| {
        ApiError::bad_request(format!(
            "A $batch request needs 'Content-Type: multipart/mixed; boundary=...', got '{content_type}'."
        ))
    })?;
    let items = read_items(&request.body, &boundary)?;
    if items.len() > MAX_BATCH_REQUESTS {
        return Err(ApiError::new(
            400,
            "0x8005f103",
            format!(
                "The number of requests in a batch ({}) exceeds the maximum of {MAX_BATCH_REQUESTS}.",
                items.len()
            ),
        ));
    }
    let continue_on_error = Preferences::parse(request.header_values("Prefer")).continue_on_error;
    let response_boundary = format!("batchresponse_{}", uuid::Uuid::new_v4());
    let mut body = String::new();
    let mut batch_status = 200;
    let mut index = 0;
    while index < items.len() {
        let outcome = match items[index].changeset {
            None => {
                let response = dispatch(store, request, &items[index].message, &[])?;
                let failed = response.status >= 400;
                render_part(&mut body, &response_boundary, &[], &to_message(&response));
                index += 1;
                failed.then_some(response.status)
            }
            Some(changeset) => {
                let end = items[index..]
                    .iter()
                    .position(|item| item.changeset != Some(changeset))
                    .map_or(items.len(), |offset| index + offset);
                let failure = run_changeset(
                    store,
                    request,
                    &items[index..end],
                    &response_boundary,
                    &mut body,
                )?;
                index = end;
                failure
            }
        };
        if let Some(status) = outcome
            && !continue_on_error
        {
            batch_status = status;
            break;
        }
    }
    render_close(&mut body, &response_boundary);
    Ok(ApiResponse {
        status: batch_status,
        headers: vec![
            (
                "Content-Type".to_string(),
                format!("multipart/mixed; boundary={response_boundary}"),
            ),
            ("OData-Version".to_string(), "4.0".to_string()),
        ],
        body,
    })
}

/// Runs a change set all-or-nothing; returns the failing status when it failed.
fn run_changeset(
    store: &mut Store,
    request: &ApiRequest,
    items: &[BatchItem],
    response_boundary: &str,
    body: &mut String,
) -> Result<Option<u16>, ApiError> {
    let before = store.clone();
    let mut references: Vec<(String, String)> = Vec::new();
    let mut responses = Vec::new();
    for item in items {
        if item.message.start_line.starts_with("GET ") {
            return Err(ApiError::bad_request(
                "GET requests are not allowed inside a change set.",
            ));
        }
        let response = dispatch(store, request, &item.message, &references)?;
        if response.status >= 400 {
            *store = before;
            // A failed change set answers with the failure alone.
            render_part(body, response_boundary, &[], &to_message(&response));
            return Ok(Some(response.status));
        }
        if let (Some(content_id), Some(url)) = (
            &item.content_id,
            response_header(&response, "OData-EntityId"),
        ) {
            references.push((format!("${content_id}"), url.to_string()));
        }
        responses.push((item.content_id.clone(), response));
    }
    let changeset_boundary = format!("changesetresponse_{}", uuid::Uuid::new_v4());
    let mut inner = String::new();
    for (content_id, response) in &responses {
        let headers: Vec<(&str, &str)> = content_id
            .as_deref()
            .map(|id| vec![("Content-ID", id)])
            .unwrap_or_default();
        render_part(
            &mut inner,
            &changeset_boundary,
            &headers,
            &to_message(response),
        );
    }
    render_close(&mut inner, &changeset_boundary);
    body.push_str(&format!(
        "--{response_boundary}\r\nContent-Type: multipart/mixed; boundary={changeset_boundary}\r\n\r\n{inner}\r\n"
    ));
    Ok(None)
}

fn response_header<'a>(response: &'a ApiResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

fn read_items(body: &str, boundary: &str) -> Result<Vec<BatchItem>, ApiError> {
    let invalid =
        |what: String| ApiError::bad_request(format!("The $batch body is malformed: {what}"));
    let mut items = Vec::new();
    for (changeset_index, part) in parts(body, boundary)
        .map_err(invalid)?
        .into_iter()
        .enumerate()
    {
        let part_type = part.header("Content-Type").unwrap_or_default();
        if let Some(inner_boundary) = boundary_param(part_type) {
            for inner in parts(&part.content, &inner_boundary).map_err(invalid)? {
                items.push(BatchItem {
                    changeset: Some(changeset_index),
                    content_id: inner.header("Content-ID").map(str::to_string),
                    message: read_message(&inner.content).map_err(invalid)?,
                });
            }
        } else {
            items.push(BatchItem {
                changeset: None,
                content_id: part.header("Content-ID").map(str::to_string),
                message: read_message(&part.content).map_err(invalid)?,
            });
        }
    }
    Ok(items)
}

/// Runs one inner request through the Web API, resolving `$n` references.
fn dispatch(
    store: &mut Store,
    outer: &ApiRequest,
    message: &HttpMessage,
    references: &[(String, String)],
) -> Result<ApiResponse, ApiError> {
    let mut words = message.start_line.split_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Err(ApiError::bad_request(format!(
            "The $batch part's request line '{}' is not 'METHOD URL HTTP/1.1'.",
            message.start_line
        )));
    };
    let target = resolve_reference(target, references)?;
    let relative = if let Some(position) = target.find(API_PREFIX) {
        target[position + API_PREFIX.len()..].to_string()
    } else {
        target.trim_start_matches('/').to_string()
    };
    let (path, query) = relative.split_once('?').unwrap_or((&relative, ""));
    let mut body = message.body.clone();
    for (reference, url) in references {
        // Binds may reference an entity created earlier in the change set.
        body = body.replace(&format!("\"{reference}\""), &format!("\"{url}\""));
    }
    let inner = ApiRequest {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: message.headers.clone(),
        body,
        api_root: outer.api_root.clone(),
    };
    if inner.path == "$batch" {
        return Err(ApiError::bad_request(
            "Nested $batch requests are not supported.",
        ));
    }
    Ok(handle(store, &inner))
}

fn resolve_reference(target: &str, references: &[(String, String)]) -> Result<String, ApiError> {
    let Some(rest) = target.strip_prefix('$') else {
        return Ok(target.to_string());
    };
    let (id, tail) = rest.split_at(
        rest.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len()),
    );
    if id.is_empty() {
        return Ok(target.to_string());
    }
    references
        .iter()
        .find(|(reference, _)| *reference == format!("${id}"))
        .map(|(_, url)| format!("{url}{tail}"))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Content-ID Reference: '${id}' does not exist in the batch context."
            ))
        })
}

fn to_message(response: &ApiResponse) -> HttpMessage {
    HttpMessage {
        start_line: format!("HTTP/1.1 {} {}", response.status, reason(response.status)),
        headers: response.headers.clone(),
        body: response.body.clone(),
    }
}

fn reason(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("Unknown")
}
