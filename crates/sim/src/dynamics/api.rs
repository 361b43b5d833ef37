//! The simulated Web API under `/api/data/v9.2/`: routes a request (already authenticated) to
//! metadata, entity CRUD, change-tracked listings, functions or `$batch`, and renders the
//! service's JSON shapes, headers and error bodies. Framework-free (plain request and response
//! values) so that `$batch` can dispatch its inner requests through the same code.

use serde_json::{Map, Value as Json, json};

use super::odata::{
    ApiError, EntityKey, Preferences, QueryOptions, matches_filter, parse_entity_key, parse_filter,
    percent_decode, percent_encode,
};
use super::schema::{AttributeType, TableDef};
use super::store::{Change, ListPosition, Store, StoredRow, TableState, WriteMode};

/// The path prefix of the Web API.
pub const API_PREFIX: &str = "/api/data/v9.2/";

/// Rows per page when the client does not say, and the most it may ask for.
pub const MAX_PAGE_SIZE: usize = 5000;

/// A request to the Web API, framework-free.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// `GET`, `POST`, `PATCH`, `DELETE`...
    pub method: String,
    /// The path after [`API_PREFIX`], still percent-encoded.
    pub path: String,
    /// The raw query string (without `?`).
    pub query: String,
    /// The headers, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// The absolute URL of the API root, e.g. `http://127.0.0.1:5000/api/data/v9.2/`.
    pub api_root: String,
}

impl ApiRequest {
    /// Every value of header `name` (case-insensitive).
    pub fn header_values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = name.to_string();
        self.headers
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(&name))
            .map(|(_, value)| value.as_str())
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).next()
    }

    fn preferences(&self) -> Preferences {
        Preferences::parse(self.header_values("Prefer"))
    }
}

/// A response of the Web API, framework-free.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// The HTTP status.
    pub status: u16,
    /// The headers to send.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl ApiResponse {
    fn json(status: u16, body: &Json) -> ApiResponse {
        ApiResponse {
            status,
            headers: vec![
                (
                    "Content-Type".to_string(),
                    "application/json; odata.metadata=minimal".to_string(),
                ),
                ("OData-Version".to_string(), "4.0".to_string()),
            ],
            body: body.to_string(),
        }
    }

    fn empty(status: u16) -> ApiResponse {
        ApiResponse {
            status,
            headers: vec![("OData-Version".to_string(), "4.0".to_string())],
            body: String::new(),
        }
    }

    fn with_header(mut self, name: &str, value: impl Into<String>) -> ApiResponse {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// The response for an error.
    pub fn error(error: &ApiError) -> ApiResponse {
        ApiResponse::json(error.status, &error.body())
    }
}

/// Serves one Web API request against `store` (everything except `$batch`).
pub fn handle(store: &mut Store, request: &ApiRequest) -> ApiResponse {
    match route(store, request) {
        Ok(response) => response,
        Err(error) => ApiResponse::error(&error),
    }
}

fn route(store: &mut Store, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let segments: Vec<String> = request
        .path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let method = request.method.as_str();
    let first = segments.first().map(String::as_str).unwrap_or_default();
    if first == "WhoAmI" || first == "WhoAmI()" {
        return only_get(method).map(|()| who_am_i(request));
    }
    if first.starts_with("RetrieveTotalRecordCount(") {
        only_get(method)?;
        return retrieve_total_record_count(store, request, first);
    }
    if first == "EntityDefinitions" || first.starts_with("EntityDefinitions(") {
        only_get(method)?;
        return metadata(store, request, &segments);
    }
    let (set, key) = split_key_segment(first)?;
    let table = store.table_by_set(&set).ok_or_else(|| {
        ApiError::new(
            404,
            "0x8006088a",
            format!("Resource not found for the segment '{set}'."),
        )
    })?;
    let logical = table.def.logical_name.clone();
    match (key, segments.get(1).map(String::as_str), method) {
        (None, None, "GET") => list(store, &logical, request),
        (None, None, "POST") => create(store, &logical, request),
        (None, Some("$count"), "GET") => {
            let count = store
                .table(&logical)
                .map_or(0, |t| t.rows.len())
                .min(MAX_PAGE_SIZE);
            Ok(ApiResponse {
                status: 200,
                headers: vec![
                    ("Content-Type".to_string(), "text/plain".to_string()),
                    ("OData-Version".to_string(), "4.0".to_string()),
                ],
                body: count.to_string(),
            })
        }
        (Some(key), None, "GET") => retrieve(store, &logical, &key, request),
        (Some(key), None, "PATCH") => upsert(store, &logical, &key, request),
        (Some(key), None, "DELETE") => delete(store, &logical, &key),
        (_, Some(segment), _) => Err(ApiError::new(
            404,
            "0x8006088a",
            format!("The simulator does not serve the segment '{segment}' of '{set}'."),
        )),
        _ => Err(ApiError::new(
            405,
            "0x80060888",
            format!("The method '{method}' is not allowed on this resource."),
        )),
    }
}

fn only_get(method: &str) -> Result<(), ApiError> {
    if method == "GET" {
        Ok(())
    } else {
        Err(ApiError::new(
            405,
            "0x80060888",
            format!("The method '{method}' is not allowed on this resource."),
        ))
    }
}

/// Splits `contacts(<key>)` into the set and the parsed key.
fn split_key_segment(segment: &str) -> Result<(String, Option<EntityKey>), ApiError> {
    match segment.split_once('(') {
        Some((set, rest)) => {
            let inner = rest.strip_suffix(')').ok_or_else(|| {
                ApiError::bad_request(format!("Bad Request - Error in query syntax: '{segment}'."))
            })?;
            Ok((set.to_string(), Some(parse_entity_key(inner)?)))
        }
        None => Ok((segment.to_string(), None)),
    }
}

fn who_am_i(request: &ApiRequest) -> ApiResponse {
    ApiResponse::json(
        200,
        &json!({
            "@odata.context": format!("{}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse", request.api_root),
            "BusinessUnitId": "7b1e5b8c-1a7c-4f0e-9f53-0a1b2c3d4e51",
            "UserId": "2f6e1d3c-5b4a-4c9d-8e7f-0a1b2c3d4e52",
            "OrganizationId": "9a8b7c6d-5e4f-4a3b-8c2d-0a1b2c3d4e53",
        }),
    )
}

fn retrieve_total_record_count(
    store: &Store,
    request: &ApiRequest,
    segment: &str,
) -> Result<ApiResponse, ApiError> {
    let argument = segment
        .strip_prefix("RetrieveTotalRecordCount(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|rest| rest.strip_prefix("EntityNames="))
        .ok_or_else(|| {
            ApiError::bad_request("RetrieveTotalRecordCount needs EntityNames=[...] or an @alias")
        })?;
    let list_text = if let Some(alias) = argument.strip_prefix('@') {
        QueryOptions::parse(&request.query)
            .get(&format!("@{alias}"))
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::bad_request(format!("The parameter alias '@{alias}' has no value."))
            })?
    } else {
        argument.to_string()
    };
    let names: Vec<String> =
        serde_json::from_str(&list_text.replace('\'', "\"")).map_err(|_| {
            ApiError::bad_request(format!(
                "EntityNames must be a list of strings, got {list_text}"
            ))
        })?;
    let mut values = Vec::new();
    for name in &names {
        let table = store
            .table(name)
            .ok_or_else(|| super::store::unknown_table(name))?;
        values.push(table.rows.len());
    }
    Ok(ApiResponse::json(
        200,
        &json!({
            "@odata.context": format!("{}$metadata#Microsoft.Dynamics.CRM.RetrieveTotalRecordCountResponse", request.api_root),
            "EntityRecordCountCollection": {
                "Count": names.len(), "IsReadOnly": false, "Keys": names, "Values": values,
            }
        }),
    ))
}

/// Keeps the `$select`ed properties of a metadata object (plus its type and id).
fn select_properties(object: Json, select: Option<&[String]>) -> Json {
    let (Some(select), Json::Object(map)) = (select, &object) else {
        return object;
    };
    let kept: Map<String, Json> = map
        .iter()
        .filter(|(key, _)| {
            key.starts_with('@')
                || key.as_str() == "MetadataId"
                || select.iter().any(|wanted| wanted == *key)
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Json::Object(kept)
}

fn logical_name_argument(segment: &str, prefix: &str) -> Result<Option<String>, ApiError> {
    if segment == prefix {
        return Ok(None);
    }
    let inner = segment
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('('))
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(format!("Bad Request - Error in query syntax: '{segment}'."))
        })?;
    match parse_entity_key(inner)? {
        EntityKey::Alternate(pairs) if pairs.len() == 1 && pairs[0].0 == "LogicalName" => {
            Ok(pairs[0].1.as_str().map(str::to_string))
        }
        _ => Err(ApiError::bad_request(format!(
            "The simulator addresses metadata by LogicalName='...' only, not '{inner}'."
        ))),
    }
}

fn metadata(
    store: &Store,
    request: &ApiRequest,
    segments: &[String],
) -> Result<ApiResponse, ApiError> {
    let options = QueryOptions::parse(&request.query);
    let select = options.select();
    let root = &request.api_root;
    let table_name = logical_name_argument(&segments[0], "EntityDefinitions")?;
    let Some(table_name) = table_name else {
        if segments.len() > 1 {
            return Err(ApiError::bad_request(
                "Address a table as EntityDefinitions(LogicalName='...')",
            ));
        }
        let filter = options.get("$filter").map(parse_filter).transpose()?;
        let value: Vec<Json> = store
            .tables()
            .map(|table| table.def.metadata())
            .filter(|entry| {
                filter.as_ref().is_none_or(|filter| {
                    entry
                        .as_object()
                        .is_some_and(|object| matches_filter(object, filter))
                })
            })
            .map(|entry| select_properties(entry, select.as_deref()))
            .collect();
        return Ok(ApiResponse::json(
            200,
            &json!({"@odata.context": format!("{root}$metadata#EntityDefinitions"), "value": value}),
        ));
    };
    let table = store
        .table(&table_name)
        .ok_or_else(|| super::store::unknown_table(&table_name))?;
    let Some(second) = segments.get(1) else {
        let mut entry = select_properties(table.def.metadata(), select.as_deref());
        if let Some(map) = entry.as_object_mut() {
            map.insert(
                "@odata.context".to_string(),
                json!(format!("{root}$metadata#EntityDefinitions/$entity")),
            );
        }
        return Ok(ApiResponse::json(200, &entry));
    };
    let attribute_name = logical_name_argument(second, "Attributes")?;
    let cast = segments
        .get(2)
        .map(|cast| {
            cast.strip_prefix("Microsoft.Dynamics.CRM.")
                .map(str::to_string)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("'{cast}' is not a metadata type cast"))
                })
        })
        .transpose()?;
    let expand_option_set = options
        .get("$expand")
        .is_some_and(|expand| expand.split(',').any(|e| e.trim() == "OptionSet"));
    let render = |attribute: &super::schema::AttributeDef| {
        let mut entry = select_properties(
            attribute.metadata(&table.def.logical_name),
            select.as_deref(),
        );
        if expand_option_set
            && let (Some(option_set), Some(map)) = (attribute.option_set(), entry.as_object_mut())
        {
            map.insert("OptionSet".to_string(), option_set);
        }
        entry
    };
    let fits_cast = |attribute: &&super::schema::AttributeDef| {
        cast.as_deref()
            .is_none_or(|cast| attribute.kind.metadata_class() == cast)
    };
    match attribute_name {
        None => {
            let value: Vec<Json> = table
                .def
                .attributes
                .iter()
                .filter(fits_cast)
                .map(render)
                .collect();
            Ok(ApiResponse::json(
                200,
                &json!({
                    "@odata.context": format!("{root}$metadata#EntityDefinitions('{}')/Attributes", table.def.logical_name),
                    "value": value,
                }),
            ))
        }
        Some(name) => {
            let attribute = table.def.attribute(&name).ok_or_else(|| {
                ApiError::new(
                    404,
                    "0x80040217",
                    format!(
                        "Could not find attribute '{name}' on entity '{}'.",
                        table.def.logical_name
                    ),
                )
            })?;
            if !fits_cast(&attribute) {
                return Err(ApiError::bad_request(format!(
                    "The attribute '{name}' is a {} and cannot be cast to {}.",
                    attribute.kind.metadata_class(),
                    cast.unwrap_or_default()
                )));
            }
            let mut entry = render(attribute);
            if let Some(map) = entry.as_object_mut() {
                map.insert(
                    "@odata.context".to_string(),
                    json!(format!(
                        "{root}$metadata#EntityDefinitions('{}')/Attributes/$entity",
                        table.def.logical_name
                    )),
                );
            }
            Ok(ApiResponse::json(200, &entry))
        }
    }
}

/// How rows are rendered: columns and annotations.
struct RenderOptions<'a> {
    select: Option<&'a [String]>,
    formatted: bool,
    lookup_annotations: bool,
}

fn check_select(table: &TableDef, select: &[String]) -> Result<(), ApiError> {
    for column in select {
        if table.attribute_by_wire_name(column).is_none() {
            return Err(super::store::unknown_property(table, column));
        }
    }
    Ok(())
}

fn render_row(
    store: &Store,
    table: &TableState,
    row: &StoredRow,
    options: &RenderOptions<'_>,
) -> Json {
    let mut body = Map::new();
    body.insert(
        "@odata.etag".to_string(),
        json!(format!("W/\"{}\"", row.version)),
    );
    for attribute in &table.def.attributes {
        let wire = attribute.wire_name();
        let selected = attribute.logical_name == table.def.primary_id
            || options.select.is_none_or(|select| select.contains(&wire));
        if !selected {
            continue;
        }
        let value = row
            .fields
            .get(&attribute.logical_name)
            .cloned()
            .unwrap_or(Json::Null);
        if options.formatted && !value.is_null() {
            let formatted = match attribute.kind {
                AttributeType::Picklist | AttributeType::State | AttributeType::Status => value
                    .as_i64()
                    .and_then(|option| attribute.option_label(option))
                    .map(str::to_string),
                AttributeType::Boolean => {
                    attribute.boolean_labels.as_ref().and_then(|(no, yes)| {
                        value
                            .as_bool()
                            .map(|flag| if flag { yes.clone() } else { no.clone() })
                    })
                }
                AttributeType::Money => value.as_f64().map(|amount| format!("${amount:.2}")),
                AttributeType::Lookup => lookup_name(store, attribute.target.as_deref(), &value),
                _ => None,
            };
            if let Some(formatted) = formatted {
                body.insert(
                    format!("{wire}@OData.Community.Display.V1.FormattedValue"),
                    Json::String(formatted),
                );
            }
        }
        if options.lookup_annotations && attribute.kind == AttributeType::Lookup && !value.is_null()
        {
            body.insert(
                format!("{wire}@Microsoft.Dynamics.CRM.associatednavigationproperty"),
                json!(attribute.navigation),
            );
            body.insert(
                format!("{wire}@Microsoft.Dynamics.CRM.lookuplogicalname"),
                json!(attribute.target),
            );
        }
        body.insert(wire, value);
    }
    Json::Object(body)
}

/// Every row of `table` rendered with all columns and no annotations (empty for unknown tables).
pub fn all_rows(store: &Store, logical: &str) -> Vec<Json> {
    let Some(table) = store.table(logical) else {
        return Vec::new();
    };
    let options = RenderOptions {
        select: None,
        formatted: false,
        lookup_annotations: false,
    };
    let start = ListPosition {
        in_deletes: false,
        after: 0,
    };
    let (changes, _) = table.changes(0, table.version, start, false, usize::MAX);
    changes
        .into_iter()
        .filter_map(|change| match change {
            Change::Upsert(_, row) => Some(render_row(store, table, row, &options)),
            Change::Delete(_) => None,
        })
        .collect()
}

fn lookup_name(store: &Store, target: Option<&str>, id: &Json) -> Option<String> {
    let table = store.table(target?)?;
    let row = table.rows.get(id.as_str()?)?;
    row.fields
        .get(&table.def.primary_name)
        .and_then(Json::as_str)
        .map(str::to_string)
}

/// The `$skiptoken` paging cookie: where a listing continues and what it lists.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cookie {
    page: u64,
    since: u64,
    upto: u64,
    position: ListPosition,
    delta: bool,
}

impl Cookie {
    fn encode(&self) -> String {
        format!(
            "<cookie pagenumber=\"{}\" pagingcookie=\"since={};upto={};phase={};after={};delta={}\" istracking=\"True\" />",
            self.page,
            self.since,
            self.upto,
            if self.position.in_deletes { "d" } else { "u" },
            self.position.after,
            u8::from(self.delta)
        )
    }

    fn decode(text: &str) -> Result<Cookie, ApiError> {
        let invalid = || ApiError::bad_request(format!("The $skiptoken '{text}' is not valid."));
        let attribute = |name: &str| -> Option<&str> {
            let start = text.find(&format!("{name}=\""))? + name.len() + 2;
            let end = text[start..].find('"')? + start;
            Some(&text[start..end])
        };
        let page: u64 = attribute("pagenumber")
            .and_then(|p| p.parse().ok())
            .ok_or_else(invalid)?;
        let inner = attribute("pagingcookie").ok_or_else(invalid)?;
        let mut fields = std::collections::HashMap::new();
        for pair in inner.split(';') {
            let (key, value) = pair.split_once('=').ok_or_else(invalid)?;
            fields.insert(key, value);
        }
        let number = |key: &str| -> Result<u64, ApiError> {
            fields
                .get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(invalid)
        };
        Ok(Cookie {
            page,
            since: number("since")?,
            upto: number("upto")?,
            position: ListPosition {
                in_deletes: fields.get("phase") == Some(&"d"),
                after: number("after")?,
            },
            delta: number("delta")? == 1,
        })
    }
}

fn list(store: &Store, logical: &str, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let Some(table) = store.table(logical) else {
        return Err(super::store::unknown_table(logical));
    };
    let options = QueryOptions::parse(&request.query);
    let preferences = request.preferences();
    let delta_token = options.get("$deltatoken");
    let skip_token = options.get("$skiptoken");
    let tracking = preferences.track_changes || delta_token.is_some();
    if tracking {
        for option in ["filter", "orderby", "expand", "top"] {
            if options.get(&format!("${option}")).is_some() {
                return Err(ApiError::new(
                    400,
                    "0x80060888",
                    format!(
                        "The \"${option}\" query parameter isn't supported when Change Tracking is enabled."
                    ),
                ));
            }
        }
    } else {
        for option in ["$orderby", "$expand", "$apply", "$skip"] {
            if options.get(option).is_some() {
                return Err(ApiError::bad_request(format!(
                    "The simulator does not evaluate {option}; the connector never sends it."
                )));
            }
        }
    }
    let select = options.select();
    if let Some(select) = &select {
        check_select(&table.def, select)?;
    }
    let filter = options.get("$filter").map(parse_filter).transpose()?;
    let asked_page_size = preferences.max_page_size;
    let page_size = asked_page_size
        .unwrap_or(MAX_PAGE_SIZE)
        .clamp(1, MAX_PAGE_SIZE);
    let top = if asked_page_size.is_none() {
        options
            .get("$top")
            .and_then(|top| top.parse::<usize>().ok())
    } else {
        None
    };

    let cookie = match skip_token {
        Some(token) => Cookie::decode(token)?,
        None => {
            let since = match delta_token {
                Some(token) => store.check_delta_token(token)?,
                None => 0,
            };
            Cookie {
                page: 1,
                since,
                upto: table.version,
                position: ListPosition {
                    in_deletes: false,
                    after: 0,
                },
                delta: delta_token.is_some(),
            }
        }
    };
    let render_options = RenderOptions {
        select: select.as_deref(),
        formatted: preferences.wants_formatted_values(),
        lookup_annotations: preferences.wants_lookup_annotations(),
    };
    let limit = top.map_or(page_size, |top| top.min(page_size));
    let mut value = Vec::new();
    let mut position = cookie.position;
    let mut next;
    // A filter may drop rows, so keep reading until the page is full or the listing ends.
    loop {
        let (changes, more) = table.changes(
            cookie.since,
            cookie.upto,
            position,
            cookie.delta,
            limit - value.len(),
        );
        for change in changes {
            match change {
                Change::Upsert(_, row) => {
                    // The filter sees every column, not only the selected ones.
                    let keep = filter.as_ref().is_none_or(|filter| {
                        let everything = RenderOptions { select: None, formatted: false, lookup_annotations: false };
                        render_row(store, table, row, &everything)
                            .as_object()
                            .is_some_and(|object| matches_filter(object, filter))
                    });
                    if keep {
                        value.push(render_row(store, table, row, &render_options));
                    }
                }
                Change::Delete(id) => value.push(json!({
                    "@odata.context": format!("{}$metadata#{}/$deletedEntity", request.api_root, table.def.entity_set),
                    "id": id,
                    "reason": "deleted",
                })),
            }
        }
        match more {
            Some(more) if value.len() < limit => position = more,
            other => {
                next = other;
                break;
            }
        }
    }
    if top.is_some() {
        next = None;
    }

    let columns = select.as_ref().map(|s| s.join(",")).unwrap_or_default();
    let mut context = format!("{}$metadata#{}", request.api_root, table.def.entity_set);
    if !columns.is_empty() {
        context.push_str(&format!("({columns})"));
    }
    if cookie.delta {
        context.push_str("/$delta");
    }
    let mut body = Map::new();
    body.insert("@odata.context".to_string(), json!(context));
    if options.get("$count").is_some_and(|count| count == "true") {
        // The count covers every matching row, not just this page, capped as the service caps it.
        let everything = RenderOptions {
            select: None,
            formatted: false,
            lookup_annotations: false,
        };
        let matching = table
            .rows
            .values()
            .filter(|row| {
                filter.as_ref().is_none_or(|filter| {
                    render_row(store, table, row, &everything)
                        .as_object()
                        .is_some_and(|object| matches_filter(object, filter))
                })
            })
            .count();
        body.insert(
            "@odata.count".to_string(),
            json!(matching.min(MAX_PAGE_SIZE)),
        );
    }
    body.insert("value".to_string(), Json::Array(value));
    let base_query = options.encoded_without(&["$skiptoken", "$deltatoken"]);
    let link = |extra: String| {
        let separator = if base_query.is_empty() { "" } else { "&" };
        format!(
            "{}{}?{base_query}{separator}{extra}",
            request.api_root, table.def.entity_set
        )
    };
    match next {
        Some(position) => {
            let next_cookie = Cookie {
                page: cookie.page + 1,
                position,
                ..cookie
            };
            body.insert(
                "@odata.nextLink".to_string(),
                json!(link(format!(
                    "$skiptoken={}",
                    percent_encode(&next_cookie.encode())
                ))),
            );
        }
        None if tracking => {
            let token = store.delta_token(cookie.upto);
            body.insert(
                "@odata.deltaLink".to_string(),
                json!(link(format!("$deltatoken={}", percent_encode(&token)))),
            );
        }
        None => {}
    }
    let mut response = ApiResponse::json(200, &Json::Object(body));
    let mut applied = Vec::new();
    if preferences.track_changes {
        applied.push("odata.track-changes".to_string());
    }
    if let Some(asked) = asked_page_size {
        applied.push(format!(
            "odata.maxpagesize={}",
            asked.clamp(1, MAX_PAGE_SIZE)
        ));
    }
    if let Some(annotations) = &preferences.include_annotations {
        applied.push(format!("odata.include-annotations=\"{annotations}\""));
    }
    if !applied.is_empty() {
        response = response.with_header("Preference-Applied", applied.join(","));
    }
    Ok(response)
}

fn retrieve(
    store: &Store,
    logical: &str,
    key: &EntityKey,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let table = store
        .table(logical)
        .ok_or_else(|| super::store::unknown_table(logical))?;
    let id = table
        .resolve_key(key)?
        .ok_or_else(|| ApiError::row_not_found(logical, &describe_key(key)))?;
    let options = QueryOptions::parse(&request.query);
    let select = options.select();
    if let Some(select) = &select {
        check_select(&table.def, select)?;
    }
    let preferences = request.preferences();
    let row = &table.rows[&id];
    let etag = format!("W/\"{}\"", row.version);
    if !preferences.wants_formatted_values()
        && request
            .header("If-None-Match")
            .is_some_and(|tag| tag == etag)
    {
        return Ok(ApiResponse::empty(304));
    }
    let mut body = render_row(
        store,
        table,
        row,
        &RenderOptions {
            select: select.as_deref(),
            formatted: preferences.wants_formatted_values(),
            lookup_annotations: preferences.wants_lookup_annotations(),
        },
    );
    if let Some(map) = body.as_object_mut() {
        map.insert(
            "@odata.context".to_string(),
            json!(format!(
                "{}$metadata#{}/$entity",
                request.api_root, table.def.entity_set
            )),
        );
    }
    let mut response = ApiResponse::json(200, &body).with_header("ETag", etag);
    if let Some(annotations) = &preferences.include_annotations {
        response = response.with_header(
            "Preference-Applied",
            format!("odata.include-annotations=\"{annotations}\""),
        );
    }
    Ok(response)
}

fn describe_key(key: &EntityKey) -> String {
    match key {
        EntityKey::Id(id) => id.clone(),
        EntityKey::Alternate(pairs) => pairs
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn body_object(request: &ApiRequest) -> Result<Map<String, Json>, ApiError> {
    match serde_json::from_str::<Json>(&request.body) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        )),
        Err(error) => Err(ApiError::bad_request(format!(
            "The request body is not valid JSON: {error}"
        ))),
    }
}

fn entity_url(request: &ApiRequest, table: &TableDef, id: &str) -> String {
    format!("{}{}({id})", request.api_root, table.entity_set)
}

fn written_response(
    store: &Store,
    logical: &str,
    id: &str,
    created: bool,
    request: &ApiRequest,
    is_post: bool,
) -> Result<ApiResponse, ApiError> {
    let table = store
        .table(logical)
        .ok_or_else(|| super::store::unknown_table(logical))?;
    let url = entity_url(request, &table.def, id);
    let preferences = request.preferences();
    let response = if preferences.return_representation {
        let options = QueryOptions::parse(&request.query);
        let select = options.select();
        let mut body = render_row(
            store,
            table,
            &table.rows[id],
            &RenderOptions {
                select: select.as_deref(),
                formatted: preferences.wants_formatted_values(),
                lookup_annotations: false,
            },
        );
        if let Some(map) = body.as_object_mut() {
            map.insert(
                "@odata.context".to_string(),
                json!(format!(
                    "{}$metadata#{}/$entity",
                    request.api_root, table.def.entity_set
                )),
            );
        }
        let status = if is_post || created { 201 } else { 200 };
        ApiResponse::json(status, &body).with_header("Preference-Applied", "return=representation")
    } else {
        ApiResponse::empty(204)
    };
    let response = response.with_header("OData-EntityId", url.clone());
    Ok(if is_post {
        response.with_header("Location", url)
    } else {
        response
    })
}

fn create(store: &mut Store, logical: &str, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let input = body_object(request)?;
    let primary = store
        .table(logical)
        .map(|table| table.def.primary_id.clone())
        .unwrap_or_default();
    let id = match input.get(&primary) {
        Some(Json::String(given)) => uuid::Uuid::parse_str(given)
            .map_err(|_| {
                ApiError::bad_request(format!("'{primary}' must be a GUID, got '{given}'."))
            })?
            .to_string(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "'{primary}' must be a GUID, got {other}."
            )));
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let created = store.write(logical, &id, &input, WriteMode::CreateOnly, None)?;
    written_response(store, logical, &id, created, request, true)
}

fn upsert(
    store: &mut Store,
    logical: &str,
    key: &EntityKey,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let mut input = body_object(request)?;
    let table = store
        .table(logical)
        .ok_or_else(|| super::store::unknown_table(logical))?;
    let existing = table.resolve_key(key)?;
    let id = match (key, existing) {
        (EntityKey::Id(id), _) => id.clone(),
        (EntityKey::Alternate(_), Some(id)) => id,
        (EntityKey::Alternate(pairs), None) => {
            // Creating through an alternate key stores the key values from the URL.
            for (name, value) in pairs {
                input.insert(name.clone(), value.clone());
            }
            uuid::Uuid::new_v4().to_string()
        }
    };
    let if_match = request.header("If-Match");
    let if_none_match = request
        .header("If-None-Match")
        .filter(|value| *value != "null");
    let (mode, expected) = match (if_match, if_none_match) {
        (Some("*"), _) => (WriteMode::UpdateOnly, None),
        (Some(tag), _) => {
            let version = tag
                .trim_start_matches("W/")
                .trim_matches('"')
                .parse::<u64>()
                .map_err(|_| {
                    ApiError::bad_request(format!("The If-Match value '{tag}' is not an ETag."))
                })?;
            (WriteMode::UpdateOnly, Some(version))
        }
        (None, Some("*")) => (WriteMode::CreateOnly, None),
        _ => (WriteMode::Upsert, None),
    };
    let created = store.write(logical, &id, &input, mode, expected)?;
    written_response(store, logical, &id, created, request, false)
}

fn delete(store: &mut Store, logical: &str, key: &EntityKey) -> Result<ApiResponse, ApiError> {
    let table = store
        .table(logical)
        .ok_or_else(|| super::store::unknown_table(logical))?;
    let id = table
        .resolve_key(key)?
        .ok_or_else(|| ApiError::row_not_found(logical, &describe_key(key)))?;
    store.delete(logical, &id)?;
    Ok(ApiResponse::empty(204))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_cookie_round_trips() {
        let cookie = Cookie {
            page: 3,
            since: 10,
            upto: 99,
            position: ListPosition {
                in_deletes: true,
                after: 42,
            },
            delta: true,
        };
        assert_eq!(Cookie::decode(&cookie.encode()), Ok(cookie));
        assert!(Cookie::decode("garbage").is_err());
    }
}
