//! The simulator's service-facing HTTP surface, wire-faithful to the real one: the API gateway checks (`X-Api-Key`, bearer token), the Campaign REST routes under
//! `/<ORG>/campaign/profileAndServices[Ext]/...`, and the event journal.
//!
//! Handlers translate HTTP to [`Store`](super::store::Store) and [`Journal`](super::journal::Journal)
//! calls; they hold no data themselves.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Shared;
use super::store::RstError;

const EXT: &str = "profileAndServicesExt";
const BASIC: &str = "profileAndServices";
const DEFAULT_LINE_COUNT: usize = 25;
const DEFAULT_JOURNAL_LIMIT: usize = 100;

/// A Campaign engine error body: `{"code":<status>,"message":"RST-360011 ..."}`.
fn rst(status: u16, detail: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({
            "code": status.as_u16(),
            "message": format!("RST-360011 An error has occurred - please contact your administrator. {detail}"),
        })),
    )
        .into_response()
}

impl IntoResponse for RstError {
    fn into_response(self) -> Response {
        rst(self.status, &self.detail)
    }
}

/// A gateway error body: `{"error_code":"...","message":"..."}`.
fn gateway(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error_code": code, "message": message})),
    )
        .into_response()
}

/// A gateway refusal (`{"error_code","message"}`).
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        gateway(self.status, self.code, self.message)
    }
}

/// The gateway's checks: the API key first, then the bearer token, then the organization.
fn authorize(shared: &Shared, headers: &HeaderMap, org: &str) -> Result<(), Refusal> {
    let api_key = headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok());
    match api_key {
        None => {
            return Err(Refusal {
                status: StatusCode::FORBIDDEN,
                code: "403000",
                message: "Api Key is required",
            });
        }
        Some(key) if key != shared.client_id => {
            return Err(Refusal {
                status: StatusCode::FORBIDDEN,
                code: "403003",
                message: "Api Key is invalid",
            });
        }
        Some(_) => {}
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        });
    if !token.is_some_and(|token| shared.token_is_valid(token)) {
        return Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            code: "401013",
            message: "Oauth token is not valid",
        });
    }
    if org != shared.org {
        // What the gateway says when the credentials lack this organization's product context.
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            code: "403023",
            message: "Profile is not valid",
        });
    }
    Ok(())
}

/// Every `/<ORG>/campaign/...` request.
pub async fn campaign(
    State(shared): State<Arc<Shared>>,
    Path((org, rest)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let Err(refusal) = authorize(&shared, &headers, &org) {
        return refusal.into_response();
    }
    shared.count_request();
    let segments: Vec<&str> = rest.split('/').filter(|part| !part.is_empty()).collect();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let Some((&namespace, path)) = segments.split_first() else {
        return rst(404, "Error rc=-2003 Unknown API path.");
    };
    if namespace != EXT && namespace != BASIC {
        return rst(
            404,
            &format!("XTK-170036 Unable to find resource '{namespace}'."),
        );
    }
    if let [resource, ..] = path
        && *resource != "resourceType"
        && resource.starts_with("cus")
        && namespace == BASIC
    {
        return rst(
            404,
            &format!(
                "XTK-170036 Unable to find resource '{resource}' in {BASIC}; custom resources are under {EXT}."
            ),
        );
    }
    let request = Call {
        shared: &shared,
        namespace,
        query: &query,
    };
    let result = match (&method, path) {
        (&Method::GET, []) if namespace == EXT => Ok(request.custom_resources()),
        (&Method::GET, ["resourceType", resource] | [resource, "metadata"]) => {
            request.metadata(resource)
        }
        (&Method::GET, [resource]) => request.list(resource, None),
        (&Method::GET, [resource, "_count"]) => request.count(resource, None),
        (&Method::GET, [resource, filter]) if filter.starts_with("by") => {
            request.list(resource, Some(filter))
        }
        (&Method::GET, [resource, filter, "_count"]) if filter.starts_with("by") => {
            request.count(resource, Some(filter))
        }
        (&Method::GET, [resource, pkey]) => request.get(resource, pkey),
        (&Method::POST, [resource]) => request.create(resource, &body),
        (&Method::PATCH, [resource, pkey]) => request.patch(resource, pkey, &body),
        (&Method::DELETE, [resource, pkey]) => request.delete(resource, pkey),
        _ => Err(RstError {
            status: 405,
            detail: format!("Method {method} is not allowed on /{rest}."),
        }),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// One Campaign call's context.
struct Call<'a> {
    shared: &'a Shared,
    namespace: &'a str,
    query: &'a [(String, String)],
}

impl Call<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn collection_url(&self, resource: &str) -> String {
        self.shared.collection_url(self.namespace, resource)
    }

    fn custom_resources(&self) -> Response {
        let store = self.shared.store();
        let content: Vec<Value> = store
            .resource_names()
            .into_iter()
            .filter(|name| name.starts_with("cus"))
            .map(|name| {
                json!({
                    "data": format!("/{EXT}/{name}/"),
                    "href": format!("{}/{EXT}/{name}/metadata", self.shared.api_root()),
                    "name": name,
                    "type": "collection",
                })
            })
            .collect();
        Json(json!({ "content": content })).into_response()
    }

    fn metadata(&self, resource: &str) -> Result<Response, RstError> {
        let store = self.shared.store();
        let schema = &store.resource(resource)?.schema;
        Ok(Json(schema.metadata(&self.shared.api_root())).into_response())
    }

    /// Resolves `by<Field>` to `(field, value)` from its `<field>_parameter`.
    fn filter(&self, resource: &str, filter: &str) -> Result<(String, String), RstError> {
        let store = self.shared.store();
        let schema = &store.resource(resource)?.schema;
        let field = [schema.identification_key.as_str(), "email"]
            .into_iter()
            .filter(|field| schema.field(field).is_some())
            .find(|field| super::wire::key_filter_name(field) == filter)
            .ok_or_else(|| RstError {
                status: 404,
                detail: format!("XTK-170036 Unknown filter '{filter}' for resource '{resource}'."),
            })?;
        let parameter = format!("{field}_parameter");
        let value = self.param(&parameter).ok_or_else(|| RstError {
            status: 400,
            detail: format!("The filter '{filter}' needs the parameter '{parameter}'."),
        })?;
        Ok((field.to_owned(), value.to_owned()))
    }

    fn list(&self, resource: &str, filter_name: Option<&str>) -> Result<Response, RstError> {
        let filter = filter_name
            .map(|name| self.filter(resource, name))
            .transpose()?;
        let line_count = match self.param("_lineCount") {
            None => DEFAULT_LINE_COUNT,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|count| *count > 0)
                .ok_or_else(|| RstError {
                    status: 400,
                    detail: format!("Invalid _lineCount '{text}': expected a positive number."),
                })?,
        };
        let start = match self.param("_lineStart") {
            None => 0,
            Some(token) => decode_line_start(token).ok_or_else(|| RstError {
                status: 400,
                detail: format!("Invalid _lineStart '{token}'."),
            })?,
        };
        let collection = self.collection_url(resource);
        let page =
            self.shared
                .store()
                .page(resource, filter.as_ref(), start, line_count, &collection)?;
        let path = match filter_name {
            Some(name) => format!("{collection}/{name}"),
            None => collection.clone(),
        };
        let mut carried = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in self.query {
            if !key.starts_with('_') {
                carried.append_pair(key, value);
            }
        }
        carried.append_pair("_lineCount", &line_count.to_string());
        let carried = carried.finish();
        let mut body = json!({
            "content": page.content,
            "count": {"href": format!("{path}/_count?{carried}")},
            "serverSidePagination": true,
        });
        if let Some(next) = page.next_start {
            body["next"] = json!({
                "href": format!("{path}?{carried}&_lineStart={}", encode_line_start(next)),
            });
        }
        Ok(Json(body).into_response())
    }

    fn count(&self, resource: &str, filter_name: Option<&str>) -> Result<Response, RstError> {
        let filter = filter_name
            .map(|name| self.filter(resource, name))
            .transpose()?;
        let count = self.shared.store().count(resource, filter.as_ref())?;
        Ok(Json(json!({ "count": count })).into_response())
    }

    fn get(&self, resource: &str, pkey: &str) -> Result<Response, RstError> {
        let collection = self.collection_url(resource);
        let store = self.shared.store();
        Ok(json_answer(
            StatusCode::OK,
            &store.rendered(resource, pkey, &collection)?,
        ))
    }

    fn create(&self, resource: &str, body: &[u8]) -> Result<Response, RstError> {
        let body = parse_body(body)?;
        let collection = self.collection_url(resource);
        let mut store = self.shared.store();
        let pkey = store.create(resource, body)?;
        let record = store.rendered(resource, &pkey, &collection)?;
        Ok(json_answer(StatusCode::CREATED, &record))
    }

    fn patch(&self, resource: &str, pkey: &str, body: &[u8]) -> Result<Response, RstError> {
        let body = parse_body(body)?;
        self.shared.store().patch(resource, pkey, body)?;
        Ok(Json(json!({
            "PKey": pkey,
            "href": format!("{}/{pkey}", self.collection_url(resource)),
        }))
        .into_response())
    }

    fn delete(&self, resource: &str, pkey: &str) -> Result<Response, RstError> {
        self.shared.store().delete(resource, pkey)?;
        Ok(StatusCode::OK.into_response())
    }
}

/// A JSON answer written in one buffer: axum's `Json` writes through a growing `BytesMut`
/// in many small steps, which a record's answer (one per write call) pays for twice.
fn json_answer(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let mut bytes = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut bytes, body) {
        Ok(()) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(error) => rst(500, &format!("The answer cannot be written: {error}.")),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, RstError> {
    serde_json::from_slice(body).map_err(|error| RstError {
        status: 400,
        detail: format!("The request body is not valid JSON: {error}."),
    })
}

/// `_lineStart` tokens are opaque: clients must follow `next.href`, never build them.
fn encode_line_start(seq: u64) -> String {
    format!("@{}", hex::encode(format!("line:{seq}")))
}

fn decode_line_start(token: &str) -> Option<u64> {
    let bytes = hex::decode(token.strip_prefix('@')?).ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("line:")?
        .parse()
        .ok()
}

/// `GET <journal>?since=<position>&limit=N[&latest=true]`: the email event journal.
pub async fn journal(
    State(shared): State<Arc<Shared>>,
    Path(org): Path<String>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refusal) = authorize(&shared, &headers, &org) {
        return refusal.into_response();
    }
    shared.count_request();
    let limit = match params.get("limit") {
        None => DEFAULT_JOURNAL_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if limit > 0 => limit,
            _ => {
                return gateway(
                    StatusCode::BAD_REQUEST,
                    "400001",
                    &format!("Invalid limit '{text}': expected a positive number."),
                );
            }
        },
    };
    let journal = shared.journal();
    let since = match (params.get("since"), params.get("latest")) {
        (Some(since), _) => Some(since.clone()),
        (None, Some(latest)) if latest == "true" => journal.latest_position(),
        _ => None,
    };
    let read = match journal.read(since.as_deref(), limit) {
        Ok(read) => read,
        Err(message) => return gateway(StatusCode::BAD_REQUEST, "400002", &message),
    };
    drop(journal);
    let next_since = read.last.clone().or(since);
    let mut next = format!("{}?", shared.journal_url());
    if let Some(position) = &next_since {
        next.push_str(&format!("since={position}&"));
    }
    next.push_str(&format!("limit={limit}"));
    let link = HeaderValue::from_str(&format!("<{next}>; rel=\"next\""))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    if read.entries.is_empty() {
        let mut response = StatusCode::NO_CONTENT.into_response();
        response.headers_mut().insert(header::LINK, link);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        return response;
    }
    let count = read.entries.len();
    let events: Vec<Value> = read
        .entries
        .into_iter()
        .map(|(position, event)| json!({"position": position, "event": event}))
        .collect();
    let mut response = Json(json!({
        "events": events,
        "_page": {"last": read.last, "count": count},
    }))
    .into_response();
    response.headers_mut().insert(header::LINK, link);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_start_tokens_round_trip_and_reject_garbage() {
        assert_eq!(decode_line_start(&encode_line_start(42)), Some(42));
        assert_eq!(decode_line_start("@zz"), None);
        assert_eq!(decode_line_start("42"), None);
    }
}
