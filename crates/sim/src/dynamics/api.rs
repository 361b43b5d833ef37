//! The simulated Web API under `/api/data/v9.2/`: routes a request (already authenticated) to
//! metadata, entity CRUD, change-tracked listings, functions or `$batch`, and renders the
//! service's JSON shapes, headers and error bodies. Framework-free (plain request and response
//! values) so that `$batch` can dispatch its inner requests through the same code.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value as Json, json};

use super::odata::{
    ApiError, EntityKey, Preferences, QueryOptions, parse_entity_key, percent_decode,
    percent_encode,
};
use super::query::{
    ExpandItem, Filter, OrderKey, compare_rows, parse_expand, parse_filter, parse_orderby,
    unsupported,
};
use super::schema::{AttributeDef, AttributeType, TableDef};
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
    fn json(status: u16, body: &impl Serialize) -> ApiResponse {
        ApiResponse {
            status,
            headers: vec![
                (
                    "Content-Type".to_string(),
                    "application/json; odata.metadata=minimal".to_string(),
                ),
                ("OData-Version".to_string(), "4.0".to_string()),
            ],
            // `to_string` rather than `Display`, which writes through a formatter piece by
            // piece (half a page's cost); a `Value` (and a page of rows) always serializes.
            body: serde_json::to_string(body).unwrap_or_default(),
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
    if segments.len() == 1 && first.is_empty() {
        only_get(method)?;
        only_options(&QueryOptions::parse(&request.query), &[])?;
        return Ok(service_document(store, request));
    }
    if first == "$metadata" {
        only_get(method)?;
        return Ok(csdl(store));
    }
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

/// The OData service document: every entity set, plus the metadata set and `WhoAmI`.
fn service_document(store: &Store, request: &ApiRequest) -> ApiResponse {
    let mut value: Vec<Json> = store
        .tables()
        .map(|table| {
            json!({"name": table.def.entity_set, "kind": "EntitySet", "url": table.def.entity_set})
        })
        .collect();
    value.push(
        json!({"name": "EntityDefinitions", "kind": "EntitySet", "url": "EntityDefinitions"}),
    );
    value.push(json!({"name": "WhoAmI", "kind": "FunctionImport", "url": "WhoAmI"}));
    ApiResponse::json(
        200,
        &json!({"@odata.context": format!("{}$metadata", request.api_root), "value": value}),
    )
}

/// Escapes text for an XML attribute value.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The CSDL (`$metadata`) of the simulated tables: an entity type per table with its key,
/// properties (lookups as `_x_value` Guid properties and single-valued navigation properties),
/// the `WhoAmI` function, and the `System` container with one entity set per table.
fn csdl(store: &Store) -> ApiResponse {
    let mut types = String::new();
    let mut sets = String::new();
    for table in store.tables() {
        let def = &table.def;
        let name = xml_escape(&def.logical_name);
        types.push_str(&format!(
            "<EntityType Name=\"{name}\" BaseType=\"mscrm.crmbaseentity\"><Key><PropertyRef Name=\"{}\"/></Key>",
            xml_escape(&def.primary_id)
        ));
        let mut bindings = String::new();
        for attribute in &def.attributes {
            let mut property = format!(
                "<Property Name=\"{}\" Type=\"Edm.{}\"",
                xml_escape(&attribute.wire_name()),
                super::store::edm_type(attribute)
            );
            if let Some(max_length) = attribute.max_length {
                property.push_str(&format!(" MaxLength=\"{max_length}\""));
            }
            if attribute.logical_name == def.primary_id {
                property.push_str(" Nullable=\"false\"");
            }
            property.push_str("/>");
            types.push_str(&property);
            if let (Some(navigation), Some(target)) = (&attribute.navigation, &attribute.target)
                && let Some(target) = store.table(target)
            {
                types.push_str(&format!(
                    "<NavigationProperty Name=\"{}\" Type=\"mscrm.{}\"/>",
                    xml_escape(navigation),
                    xml_escape(&target.def.logical_name)
                ));
                bindings.push_str(&format!(
                    "<NavigationPropertyBinding Path=\"{}\" Target=\"{}\"/>",
                    xml_escape(navigation),
                    xml_escape(&target.def.entity_set)
                ));
            }
        }
        types.push_str("</EntityType>");
        sets.push_str(&format!(
            "<EntitySet Name=\"{}\" EntityType=\"Microsoft.Dynamics.CRM.{name}\">{bindings}</EntitySet>",
            xml_escape(&def.entity_set)
        ));
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
<edmx:Edmx Version=\"4.0\" xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\">\
<edmx:DataServices>\
<Schema Namespace=\"Microsoft.Dynamics.CRM\" Alias=\"mscrm\" xmlns=\"http://docs.oasis-open.org/odata/ns/edm\">\
<EntityType Name=\"crmbaseentity\" Abstract=\"true\"/>\
{types}\
<ComplexType Name=\"WhoAmIResponse\">\
<Property Name=\"BusinessUnitId\" Type=\"Edm.Guid\" Nullable=\"false\"/>\
<Property Name=\"UserId\" Type=\"Edm.Guid\" Nullable=\"false\"/>\
<Property Name=\"OrganizationId\" Type=\"Edm.Guid\" Nullable=\"false\"/>\
</ComplexType>\
<Function Name=\"WhoAmI\"><ReturnType Type=\"mscrm.WhoAmIResponse\" Nullable=\"false\"/></Function>\
<EntityContainer Name=\"System\">{sets}\
<FunctionImport Name=\"WhoAmI\" Function=\"Microsoft.Dynamics.CRM.WhoAmI\"/>\
</EntityContainer>\
</Schema>\
</edmx:DataServices>\
</edmx:Edmx>"
    );
    ApiResponse {
        status: 200,
        headers: vec![
            ("Content-Type".to_string(), "application/xml".to_string()),
            ("OData-Version".to_string(), "4.0".to_string()),
        ],
        body,
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

/// How a metadata segment addresses its entry: `(LogicalName='x')` or `(<MetadataId>)`.
#[derive(Debug, Clone, PartialEq)]
enum MetadataKey {
    LogicalName(String),
    MetadataId(String),
}

fn metadata_key(segment: &str, prefix: &str) -> Result<Option<MetadataKey>, ApiError> {
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
        EntityKey::Id(id) => Ok(Some(MetadataKey::MetadataId(id))),
        EntityKey::Alternate(pairs) if pairs.len() == 1 && pairs[0].0 == "LogicalName" => Ok(pairs
            [0]
        .1
        .as_str()
        .map(|name| MetadataKey::LogicalName(name.to_string()))),
        _ => Err(ApiError::bad_request(format!(
            "Metadata entries are addressed by MetadataId or LogicalName='...', not '{inner}'."
        ))),
    }
}

/// The table `key` names.
fn metadata_table<'a>(store: &'a Store, key: &MetadataKey) -> Result<&'a TableState, ApiError> {
    match key {
        MetadataKey::LogicalName(name) => store
            .table(name)
            .ok_or_else(|| super::store::unknown_table(name)),
        MetadataKey::MetadataId(id) => store
            .tables()
            .find(|table| table.def.metadata_id() == *id)
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "0x80040217",
                    format!("Could not find an entity with MetadataId = {id}."),
                )
            }),
    }
}

/// Fails naming the first property `filter` reads that none of `entries` has, as Dataverse
/// refuses a filter on a property the metadata type does not declare.
fn check_metadata_filter<'a>(
    filter: &Filter,
    mut entries: impl Iterator<Item = &'a Json>,
    type_name: &str,
) -> Result<(), ApiError> {
    let mut known: HashSet<&str> = HashSet::new();
    for entry in entries.by_ref() {
        if let Some(object) = entry.as_object() {
            known.extend(object.keys().map(String::as_str));
        }
    }
    match filter
        .properties()
        .into_iter()
        .find(|property| !known.contains(property))
    {
        Some(property) => Err(ApiError::bad_request(format!(
            "Could not find a property named '{property}' on type '{type_name}'."
        ))),
        None => Ok(()),
    }
}

/// Fails naming the first system query option outside `allowed` (never a silent ignore).
fn only_options(options: &QueryOptions, allowed: &[&str]) -> Result<(), ApiError> {
    match options.pairs.iter().find(|(key, _)| {
        key.starts_with('$') && !allowed.iter().any(|ok| key.eq_ignore_ascii_case(ok))
    }) {
        Some((key, _)) => Err(unsupported(key)),
        None => Ok(()),
    }
}

/// The `Attributes` of a table as metadata entries, narrowed by a cast, `$filter` and
/// `$select`, with `OptionSet` / `GlobalOptionSet` expanded when asked.
fn attribute_entries(
    table: &TableDef,
    cast: Option<&str>,
    filter: Option<&Filter>,
    select: Option<&[String]>,
    expand: &[ExpandItem],
) -> Result<Vec<(String, Json)>, ApiError> {
    for item in expand {
        if !matches!(item.name.as_str(), "OptionSet" | "GlobalOptionSet") {
            return Err(ApiError::bad_request(format!(
                "Could not find a property named '{}' on type 'Microsoft.Dynamics.CRM.AttributeMetadata'.",
                item.name
            )));
        }
        item.only(&["$select"])?;
    }
    let candidates: Vec<(&AttributeDef, Json)> = table
        .attributes
        .iter()
        .filter(|attribute| cast.is_none_or(|cast| attribute.kind.metadata_class() == cast))
        .map(|attribute| (attribute, attribute.metadata(&table.logical_name)))
        .collect();
    if let Some(filter) = filter {
        let type_name = format!(
            "Microsoft.Dynamics.CRM.{}",
            cast.unwrap_or("AttributeMetadata")
        );
        check_metadata_filter(filter, candidates.iter().map(|(_, full)| full), &type_name)?;
    }
    let mut entries = Vec::new();
    for (attribute, full) in candidates {
        if let Some(filter) = filter
            && !full
                .as_object()
                .is_some_and(|object| filter.matches(object))
        {
            continue;
        }
        let mut entry = select_properties(full, select);
        if let Some(map) = entry.as_object_mut() {
            for item in expand {
                if item.name == "OptionSet" {
                    if let Some(set) = attribute.option_set() {
                        map.insert(
                            item.name.clone(),
                            select_properties(set, item.select().as_deref()),
                        );
                    }
                } else {
                    // The simulated choices are all local: no global option set behind them.
                    map.insert(item.name.clone(), Json::Null);
                }
            }
        }
        entries.push((attribute.logical_name.clone(), entry));
    }
    Ok(entries)
}

/// One `EntityDefinitions` entry with `$select` and `$expand` (`Attributes`, `Keys`) applied.
fn entity_entry(
    table: &TableDef,
    select: Option<&[String]>,
    expand: &[ExpandItem],
) -> Result<Json, ApiError> {
    let mut entry = select_properties(table.metadata(), select);
    for item in expand {
        let value = match item.name.as_str() {
            "Attributes" => {
                item.only(&["$select", "$filter", "$expand"])?;
                let filter = item.option("$filter").map(parse_filter).transpose()?;
                let nested = item.option("$expand").map(parse_expand).transpose()?;
                let entries = attribute_entries(
                    table,
                    None,
                    filter.as_ref(),
                    item.select().as_deref(),
                    nested.as_deref().unwrap_or_default(),
                )?;
                Json::Array(entries.into_iter().map(|(_, entry)| entry).collect())
            }
            "Keys" => {
                item.only(&["$select"])?;
                let keys = table.metadata()["Keys"].clone();
                let select = item.select();
                match keys {
                    Json::Array(keys) => Json::Array(
                        keys.into_iter()
                            .map(|key| select_properties(key, select.as_deref()))
                            .collect(),
                    ),
                    other => other,
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "Could not find a property named '{other}' on type 'Microsoft.Dynamics.CRM.EntityMetadata'."
                )));
            }
        };
        if let Some(map) = entry.as_object_mut() {
            map.insert(item.name.clone(), value);
        }
    }
    Ok(entry)
}

fn metadata(
    store: &Store,
    request: &ApiRequest,
    segments: &[String],
) -> Result<ApiResponse, ApiError> {
    let options = QueryOptions::parse(&request.query);
    only_options(&options, &["$select", "$filter", "$expand"])?;
    let select = options.select();
    let filter = options.get("$filter").map(parse_filter).transpose()?;
    let expand = options
        .get("$expand")
        .map(parse_expand)
        .transpose()?
        .unwrap_or_default();
    let root = &request.api_root;
    let table_key = metadata_key(&segments[0], "EntityDefinitions")?;
    let Some(table_key) = table_key else {
        if segments.len() > 1 {
            return Err(ApiError::bad_request(
                "Address a table as EntityDefinitions(LogicalName='...') or EntityDefinitions(<MetadataId>)",
            ));
        }
        if let Some(filter) = &filter {
            let entries: Vec<Json> = store.tables().map(|table| table.def.metadata()).collect();
            check_metadata_filter(
                filter,
                entries.iter(),
                "Microsoft.Dynamics.CRM.EntityMetadata",
            )?;
        }
        let mut value = Vec::new();
        for table in store.tables() {
            let keep = filter.as_ref().is_none_or(|filter| {
                table
                    .def
                    .metadata()
                    .as_object()
                    .is_some_and(|object| filter.matches(object))
            });
            if keep {
                value.push(entity_entry(&table.def, select.as_deref(), &expand)?);
            }
        }
        return Ok(ApiResponse::json(
            200,
            &json!({"@odata.context": format!("{root}$metadata#EntityDefinitions"), "value": value}),
        ));
    };
    let table = metadata_table(store, &table_key)?;
    let Some(second) = segments.get(1) else {
        if filter.is_some() {
            return Err(unsupported("$filter on a single EntityDefinitions entry"));
        }
        let mut entry = entity_entry(&table.def, select.as_deref(), &expand)?;
        if let Some(map) = entry.as_object_mut() {
            map.insert(
                "@odata.context".to_string(),
                json!(format!("{root}$metadata#EntityDefinitions/$entity")),
            );
        }
        return Ok(ApiResponse::json(200, &entry));
    };
    let logical = &table.def.logical_name;
    let attribute_name = match metadata_key(second, "Attributes")? {
        None => None,
        Some(MetadataKey::LogicalName(name)) => Some(name),
        Some(MetadataKey::MetadataId(id)) => Some(
            table
                .def
                .attributes
                .iter()
                .find(|attribute| attribute.metadata_id(logical) == id)
                .map(|attribute| attribute.logical_name.clone())
                .ok_or_else(|| {
                    ApiError::new(
                        404,
                        "0x80040217",
                        format!("Could not find an attribute with MetadataId = {id} on entity '{logical}'."),
                    )
                })?,
        ),
    };
    if segments.len() > 3 {
        return Err(unsupported(&segments[3..].join("/")));
    }
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
    match attribute_name {
        None => {
            let entries = attribute_entries(
                &table.def,
                cast.as_deref(),
                filter.as_ref(),
                select.as_deref(),
                &expand,
            )?;
            let mut context = format!("{root}$metadata#EntityDefinitions('{logical}')/Attributes");
            if let Some(cast) = &cast {
                context.push_str(&format!("/Microsoft.Dynamics.CRM.{cast}"));
            }
            Ok(ApiResponse::json(
                200,
                &json!({
                    "@odata.context": context,
                    "value": entries.into_iter().map(|(_, entry)| entry).collect::<Vec<_>>(),
                }),
            ))
        }
        Some(name) => {
            if filter.is_some() {
                return Err(unsupported("$filter on a single attribute"));
            }
            let attribute = table.def.attribute(&name).ok_or_else(|| {
                ApiError::new(
                    404,
                    "0x80040217",
                    format!("Could not find attribute '{name}' on entity '{logical}'."),
                )
            })?;
            if cast
                .as_deref()
                .is_some_and(|cast| attribute.kind.metadata_class() != cast)
            {
                return Err(ApiError::bad_request(format!(
                    "The attribute '{name}' is a {} and cannot be cast to {}.",
                    attribute.kind.metadata_class(),
                    cast.unwrap_or_default()
                )));
            }
            let (_, mut entry) = attribute_entries(
                &table.def,
                cast.as_deref(),
                None,
                select.as_deref(),
                &expand,
            )?
            .into_iter()
            .find(|(logical_name, _)| *logical_name == name)
            .ok_or_else(|| unsupported(&name))?;
            if let Some(map) = entry.as_object_mut() {
                map.insert(
                    "@odata.context".to_string(),
                    json!(format!(
                        "{root}$metadata#EntityDefinitions('{logical}')/Attributes/$entity"
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
    expand: &'a [Expansion],
}

impl RenderOptions<'_> {
    /// Every column, no annotations, nothing expanded: what `$filter` and `$orderby` see.
    const PLAIN: RenderOptions<'static> = RenderOptions {
        select: None,
        formatted: false,
        lookup_annotations: false,
        expand: &[],
    };
}

/// A single-valued navigation property to expand, checked against the schema.
struct Expansion {
    /// The navigation property, e.g. `parentcustomerid_contact`.
    navigation: String,
    /// The lookup attribute behind it.
    attribute: String,
    /// The table it points at.
    target: String,
    /// The nested `$select`.
    select: Option<Vec<String>>,
}

/// Checks `$expand` of a table's rows: single-valued lookups only, nested `$select` only.
fn expansions(
    store: &Store,
    table: &TableDef,
    expand: Option<&str>,
) -> Result<Vec<Expansion>, ApiError> {
    let Some(expand) = expand else {
        return Ok(Vec::new());
    };
    let mut plans = Vec::new();
    for item in parse_expand(expand)? {
        let attribute = table
            .attribute_by_navigation(&item.name)
            .ok_or_else(|| super::store::unknown_property(table, &item.name))?;
        item.only(&["$select"])?;
        let target_name = attribute.target.clone().unwrap_or_default();
        let target = store
            .table(&target_name)
            .ok_or_else(|| super::store::unknown_table(&target_name))?;
        let select = item.select();
        if let Some(select) = &select {
            check_select(&target.def, select)?;
        }
        plans.push(Expansion {
            navigation: item.name.clone(),
            attribute: attribute.logical_name.clone(),
            target: target_name,
            select,
        });
    }
    Ok(plans)
}

/// True when the row (all its columns) satisfies `filter`.
fn row_matches(store: &Store, table: &TableState, row: &StoredRow, filter: &Filter) -> bool {
    render_row(store, table, row, &RenderOptions::PLAIN)
        .as_object()
        .is_some_and(|object| filter.matches(object))
}

/// The rows matching `filter`, sorted by `keys` (ties by primary key, so pages are stable).
fn sorted_rows<'a>(
    store: &Store,
    table: &'a TableState,
    filter: Option<&Filter>,
    keys: &[OrderKey],
) -> Vec<&'a StoredRow> {
    let mut rows: Vec<(Map<String, Json>, &String, &StoredRow)> = table
        .rows
        .iter()
        .filter_map(|(id, row)| {
            let plain = render_row(store, table, row, &RenderOptions::PLAIN);
            let object = plain.as_object()?.clone();
            filter
                .is_none_or(|filter| filter.matches(&object))
                .then_some((object, id, row))
        })
        .collect();
    rows.sort_by(|a, b| compare_rows(keys, &a.0, &b.0).then_with(|| a.1.cmp(b.1)));
    rows.into_iter().map(|(_, _, row)| row).collect()
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
    row_members(store, table, row, options).into_json()
}

/// A row's members as the Web API sends them, in the order its JSON object lists them (by name,
/// as `serde_json`'s map sorts them), the values borrowed from the stored row where they can
/// be. A page is written straight from these: building a JSON object per row first copied
/// every name and value of every row of every page, about half of a row's cost.
struct RowMembers<'a> {
    members: Vec<(Cow<'a, str>, Cow<'a, Json>)>,
}

impl RowMembers<'_> {
    fn into_json(self) -> Json {
        Json::Object(
            self.members
                .into_iter()
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        )
    }
}

impl Serialize for RowMembers<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.members.len()))?;
        for (name, value) in &self.members {
            map.serialize_entry(name.as_ref(), value.as_ref())?;
        }
        map.end()
    }
}

fn row_members<'a>(
    store: &'a Store,
    table: &'a TableState,
    row: &'a StoredRow,
    options: &RenderOptions<'_>,
) -> RowMembers<'a> {
    let mut members: Vec<(Cow<'a, str>, Cow<'a, Json>)> =
        Vec::with_capacity(table.def.attributes.len() + 1);
    members.push((
        Cow::Borrowed("@odata.etag"),
        Cow::Owned(json!(format!("W/\"{}\"", row.version))),
    ));
    for attribute in &table.def.attributes {
        let wire = attribute.wire();
        let selected = attribute.logical_name == table.def.primary_id
            || options
                .select
                .is_none_or(|select| select.iter().any(|column| *column == *wire));
        if !selected {
            continue;
        }
        let value = row
            .fields
            .get(&attribute.logical_name)
            .map_or(Cow::Owned(Json::Null), Cow::Borrowed);
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
                members.push((
                    Cow::Owned(format!("{wire}@OData.Community.Display.V1.FormattedValue")),
                    Cow::Owned(Json::String(formatted)),
                ));
            }
        }
        if options.lookup_annotations && attribute.kind == AttributeType::Lookup && !value.is_null()
        {
            members.push((
                Cow::Owned(format!(
                    "{wire}@Microsoft.Dynamics.CRM.associatednavigationproperty"
                )),
                Cow::Owned(json!(attribute.navigation)),
            ));
            members.push((
                Cow::Owned(format!("{wire}@Microsoft.Dynamics.CRM.lookuplogicalname")),
                Cow::Owned(json!(attribute.target)),
            ));
        }
        members.push((wire, value));
    }
    for expansion in options.expand {
        let target = store.table(&expansion.target);
        let related = row
            .fields
            .get(&expansion.attribute)
            .and_then(Json::as_str)
            .and_then(|id| Some((target?, target?.rows.get(id)?)));
        let value = match related {
            Some((target, related)) => render_row(
                store,
                target,
                related,
                &RenderOptions {
                    select: expansion.select.as_deref(),
                    ..RenderOptions::PLAIN
                },
            ),
            None => Json::Null,
        };
        members.push((Cow::Owned(expansion.navigation.clone()), Cow::Owned(value)));
    }
    in_object_order(&mut members);
    RowMembers { members }
}

/// Puts members in the order a JSON object (`serde_json`'s sorted map) holds them: by name, and
/// a name given twice once, with its last value (the sort is stable, so of two equal names the
/// later comes second).
fn in_object_order<N: Ord, V>(members: &mut Vec<(N, V)>) {
    members.sort_by(|a, b| a.0.cmp(&b.0));
    members.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            std::mem::swap(&mut later.1, &mut earlier.1);
        }
        same
    });
}

/// One entry of a listed page: a row, or a deleted row's notice.
enum PageItem<'a> {
    Row(RowMembers<'a>),
    Deleted(Json),
}

impl Serialize for PageItem<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PageItem::Row(row) => row.serialize(serializer),
            PageItem::Deleted(notice) => notice.serialize(serializer),
        }
    }
}

/// A page's JSON object: its other members, and `value`, its rows, in its place by name (as a
/// map holding all of them would list it).
struct PageBody<'b, 'a> {
    members: &'b Map<String, Json>,
    value: &'b [PageItem<'a>],
}

impl Serialize for PageBody<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.members.len() + 1))?;
        let mut value_written = false;
        for (name, member) in self.members {
            if !value_written && name.as_str() > "value" {
                map.serialize_entry("value", self.value)?;
                value_written = true;
            }
            map.serialize_entry(name, member)?;
        }
        if !value_written {
            map.serialize_entry("value", self.value)?;
        }
        map.end()
    }
}

/// The ids of `table`'s rows, oldest change first (empty for unknown tables): what
/// [`all_rows`] lists, without rendering a row.
pub fn all_ids(store: &Store, logical: &str) -> Vec<String> {
    current_rows(store, logical)
        .into_iter()
        .map(|(_, id, _)| id.to_string())
        .collect()
}

/// Every row of `table` rendered with all columns and no annotations (empty for unknown tables).
pub fn all_rows(store: &Store, logical: &str) -> Vec<Json> {
    current_rows(store, logical)
        .into_iter()
        .map(|(table, _, row)| render_row(store, table, row, &RenderOptions::PLAIN))
        .collect()
}

/// The rows of `table` that exist now, oldest change first, with their table and id.
fn current_rows<'s>(
    store: &'s Store,
    logical: &str,
) -> Vec<(&'s TableState, &'s str, &'s StoredRow)> {
    let Some(table) = store.table(logical) else {
        return Vec::new();
    };
    let start = ListPosition {
        in_deletes: false,
        after: 0,
    };
    let (changes, _) = table.changes(0, table.version, start, false, usize::MAX);
    changes
        .into_iter()
        .filter_map(|change| match change {
            Change::Upsert(id, row) => Some((table, id, row)),
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
    }
    only_options(
        &options,
        &[
            "$select",
            "$filter",
            "$orderby",
            "$top",
            "$count",
            "$expand",
            "$skiptoken",
            "$deltatoken",
        ],
    )?;
    let select = options.select();
    if let Some(select) = &select {
        check_select(&table.def, select)?;
    }
    let filter = options.get("$filter").map(parse_filter).transpose()?;
    if let Some(filter) = &filter {
        check_select(
            &table.def,
            &filter
                .properties()
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        )?;
    }
    let orderby = options.get("$orderby").map(parse_orderby).transpose()?;
    if let Some(keys) = &orderby {
        let properties: Vec<String> = keys.iter().map(|key| key.property.clone()).collect();
        check_select(&table.def, &properties)?;
    }
    let expand = expansions(store, &table.def, options.get("$expand"))?;
    let asked_page_size = preferences.max_page_size;
    let page_size = asked_page_size
        .unwrap_or(MAX_PAGE_SIZE)
        .clamp(1, MAX_PAGE_SIZE);
    let top = options
        .get("$top")
        .map(|top| {
            top.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!("$top must be a whole number, got '{top}'."))
            })
        })
        .transpose()?;

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
        expand: &expand,
    };
    // `$top` wins over `odata.maxpagesize`: the client asked for that many rows, one page.
    let limit = top.map_or(page_size, |top| top.min(MAX_PAGE_SIZE));
    let mut value = Vec::new();
    let mut position = cookie.position;
    let mut next;
    if let Some(keys) = &orderby {
        // Sorted listings page by offset (kept in the cookie's position) over the sorted rows.
        let offset = usize::try_from(cookie.position.after).unwrap_or(usize::MAX);
        let sorted = sorted_rows(store, table, filter.as_ref(), keys);
        value = sorted
            .iter()
            .skip(offset)
            .take(limit)
            .map(|row| PageItem::Row(row_members(store, table, row, &render_options)))
            .collect();
        next =
            (top.is_none() && offset.saturating_add(limit) < sorted.len()).then(|| ListPosition {
                in_deletes: false,
                after: u64::try_from(offset + limit).unwrap_or(u64::MAX),
            });
    } else {
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
                    let keep = filter
                        .as_ref()
                        .is_none_or(|filter| row_matches(store, table, row, filter));
                    if keep {
                        value.push(PageItem::Row(row_members(store, table, row, &render_options)));
                    }
                }
                Change::Delete(id) => value.push(PageItem::Deleted(json!({
                    "@odata.context": format!("{}$metadata#{}/$deletedEntity", request.api_root, table.def.entity_set),
                    "id": id,
                    "reason": "deleted",
                }))),
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
        let matching = table
            .rows
            .values()
            .filter(|row| {
                filter
                    .as_ref()
                    .is_none_or(|filter| row_matches(store, table, row, filter))
            })
            .count();
        body.insert(
            "@odata.count".to_string(),
            json!(matching.min(MAX_PAGE_SIZE)),
        );
    }
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
    let mut response = ApiResponse::json(
        200,
        &PageBody {
            members: &body,
            value: &value,
        },
    );
    let mut applied = Vec::new();
    if preferences.track_changes {
        applied.push("odata.track-changes".to_string());
    }
    if let Some(asked) = asked_page_size.filter(|_| top.is_none()) {
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
    only_options(&options, &["$select", "$expand"])?;
    let select = options.select();
    if let Some(select) = &select {
        check_select(&table.def, select)?;
    }
    let expand = expansions(store, &table.def, options.get("$expand"))?;
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
            expand: &expand,
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
                ..RenderOptions::PLAIN
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
    fn ids_are_the_listed_rows_ids_in_their_order() {
        let mut store = store();
        super::super::seed::seed(&mut store, 30, 5).expect("seed");
        store
            .delete("contact", "00000000-0000-4000-8000-000000000002")
            .expect("delete");
        let ids = all_ids(&store, "contact");
        let listed: Vec<String> = all_rows(&store, "contact")
            .iter()
            .map(|row| row["contactid"].as_str().expect("contactid").to_string())
            .collect();
        assert_eq!(ids.len(), 32);
        assert_eq!(ids, listed);
        assert!(all_ids(&store, "nosuch").is_empty());
    }

    #[test]
    fn members_take_a_json_objects_order_and_its_last_value_of_a_name() {
        let given = [("b", 1), ("a", 2), ("b", 3), ("c", 4), ("a", 5), ("@x", 6)];
        let mut members = given.to_vec();
        in_object_order(&mut members);
        let object: Map<String, Json> = given
            .iter()
            .map(|(name, value)| (name.to_string(), json!(value)))
            .collect();
        let expected: Vec<(&str, i32)> = object
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_i64().unwrap() as i32))
            .collect();
        assert_eq!(members, expected);
    }

    /// Pages are written without a JSON tree per row: each must read as the text of its own
    /// JSON object (sorted names, each once), whatever the query asks for.
    #[test]
    fn listed_pages_are_written_as_their_json_objects_would_be() {
        let mut store = store();
        super::super::seed::seed(&mut store, 40, 15).expect("seed");
        let all_annotations = Some("odata.include-annotations=\"*\"");
        // A delta page after a delete lists the deleted row's notice among the rows.
        let tracked = get(
            &mut store,
            "contacts?$select=firstname",
            Some("odata.track-changes"),
        );
        let tracked: Json = serde_json::from_str(&tracked.body).expect("JSON body");
        let delta_link = tracked["@odata.deltaLink"].as_str().expect("delta link");
        let delta = delta_link
            .strip_prefix(ROOT)
            .expect("under the root")
            .to_string();
        store
            .delete("contact", "00000000-0000-4000-8000-000000000003")
            .expect("delete");
        let queries: [(&str, Option<&str>); 10] = [
            (&delta, all_annotations),
            ("contacts", None),
            ("contacts", all_annotations),
            ("contacts?$select=lastname,firstname", all_annotations),
            (
                "new_vehicles?$select=new_name,_new_contactid_value",
                all_annotations,
            ),
            ("contacts?$orderby=lastname desc&$top=7", all_annotations),
            (
                "new_vehicles?$expand=new_contactid($select=firstname)",
                all_annotations,
            ),
            ("contacts", Some("odata.maxpagesize=5")),
            ("contacts", Some("odata.track-changes")),
            ("contacts?$count=true&$filter=numberofchildren gt 1", None),
        ];
        for (query, prefer) in queries {
            let response = get(&mut store, query, prefer);
            assert_eq!(response.status, 200, "{query}: {}", response.body);
            let parsed: Json = serde_json::from_str(&response.body).expect("JSON body");
            assert!(
                parsed["value"]
                    .as_array()
                    .is_some_and(|rows| !rows.is_empty()),
                "{query}"
            );
            assert_eq!(
                response.body,
                serde_json::to_string(&parsed).unwrap(),
                "{query} {prefer:?}"
            );
        }
    }

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

    const ROOT: &str = "http://sim/api/data/v9.2/";

    fn store() -> Store {
        let mut store = Store::new(
            super::super::schema::seeded_tables(),
            super::super::store::Clock::new(chrono::Utc::now()),
        );
        let contacts = [
            ("00000000-0000-4000-8000-000000000001", "Ann", "Smith", 2),
            ("00000000-0000-4000-8000-000000000002", "Bob", "Jones", 0),
            ("00000000-0000-4000-8000-000000000003", "Cy", "smith", 5),
        ];
        for (id, first, last, children) in contacts {
            let fields =
                json!({"firstname": first, "lastname": last, "numberofchildren": children});
            store
                .write(
                    "contact",
                    id,
                    fields.as_object().expect("object"),
                    WriteMode::Upsert,
                    None,
                )
                .expect("seed contact");
        }
        let vehicle = json!({"new_name": "V1", "new_contactid@odata.bind": "/contacts(00000000-0000-4000-8000-000000000002)"});
        store
            .write(
                "new_vehicle",
                "00000000-0000-4000-8000-0000000000a1",
                vehicle.as_object().expect("object"),
                WriteMode::Upsert,
                None,
            )
            .expect("seed vehicle");
        store
    }

    fn get(store: &mut Store, path_and_query: &str, prefer: Option<&str>) -> ApiResponse {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let headers = prefer
            .map(|value| vec![("Prefer".to_string(), value.to_string())])
            .unwrap_or_default();
        handle(
            store,
            &ApiRequest {
                method: "GET".into(),
                path: path.into(),
                query: query.replace(' ', "%20"),
                headers,
                body: String::new(),
                api_root: ROOT.into(),
            },
        )
    }

    fn get_json(store: &mut Store, path_and_query: &str) -> Json {
        let response = get(store, path_and_query, None);
        assert_eq!(response.status, 200, "{path_and_query}: {}", response.body);
        serde_json::from_str(&response.body).expect("JSON body")
    }

    fn column(body: &Json, name: &str) -> Vec<String> {
        body["value"]
            .as_array()
            .expect("value")
            .iter()
            .map(|row| row[name].as_str().unwrap_or("<null>").to_string())
            .collect()
    }

    fn error_of(response: &ApiResponse) -> (u16, String, String) {
        let body: Json = serde_json::from_str(&response.body).expect("error body");
        (
            response.status,
            body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }

    #[test]
    fn the_service_document_lists_every_entity_set() {
        let mut store = store();
        let body = get_json(&mut store, "");
        assert_eq!(body["@odata.context"], format!("{ROOT}$metadata"));
        let names = column(&body, "name");
        for set in [
            "contacts",
            "new_vehicles",
            "adobe_emailsends",
            "EntityDefinitions",
        ] {
            assert!(names.contains(&set.to_string()), "{set} in {names:?}");
        }
    }

    #[test]
    fn orderby_sorts_ascending_descending_and_by_several_keys() {
        let mut store = store();
        let body = get_json(
            &mut store,
            "contacts?$select=firstname&$orderby=firstname desc",
        );
        assert_eq!(column(&body, "firstname"), ["Cy", "Bob", "Ann"]);
        let body = get_json(
            &mut store,
            "contacts?$select=firstname&$orderby=lastname asc,numberofchildren desc",
        );
        assert_eq!(column(&body, "firstname"), ["Bob", "Cy", "Ann"]);
    }

    #[test]
    fn sorted_listings_page_through_next_links() {
        let mut store = store();
        let first = get(
            &mut store,
            "contacts?$select=firstname&$orderby=firstname",
            Some("odata.maxpagesize=2"),
        );
        let first: Json = serde_json::from_str(&first.body).expect("page");
        assert_eq!(column(&first, "firstname"), ["Ann", "Bob"]);
        let next = first["@odata.nextLink"].as_str().expect("next link");
        let relative = next.strip_prefix(ROOT).expect("absolute link");
        let second = get(&mut store, relative, Some("odata.maxpagesize=2"));
        let second: Json = serde_json::from_str(&second.body).expect("page");
        assert_eq!(column(&second, "firstname"), ["Cy"]);
        assert!(second.get("@odata.nextLink").is_none());
    }

    #[test]
    fn filter_count_and_top_combine() {
        let mut store = store();
        let body = get_json(
            &mut store,
            "contacts?$select=firstname&$filter=(contains(lastname,'mit') or firstname eq 'Bob') and not (numberofchildren gt 4)&$count=true&$orderby=firstname",
        );
        assert_eq!(column(&body, "firstname"), ["Ann", "Bob"]);
        assert_eq!(body["@odata.count"], 2);
        let body = get_json(
            &mut store,
            "contacts?$select=firstname&$filter=startswith(firstname,'c') or endswith(firstname,'nn')&$orderby=firstname",
        );
        assert_eq!(column(&body, "firstname"), ["Ann", "Cy"]);
        let body = get_json(
            &mut store,
            "contacts?$filter=emailaddress1 eq null&$count=true&$top=1",
        );
        assert_eq!(body["value"].as_array().map(Vec::len), Some(1));
        assert_eq!(body["@odata.count"], 3);
        assert!(body.get("@odata.nextLink").is_none());
    }

    #[test]
    fn unknown_properties_and_unsupported_options_answer_the_documented_error() {
        let mut store = store();
        let (status, code, message) =
            error_of(&get(&mut store, "contacts?$filter=nosuch eq 1", None));
        assert_eq!((status, code.as_str()), (400, "0x80060888"));
        assert!(message.contains("nosuch"), "{message}");
        for option in ["$skip=1", "$apply=groupby((lastname))", "$search=x"] {
            let (status, code, message) =
                error_of(&get(&mut store, &format!("contacts?{option}"), None));
            let name = option.split('=').next().unwrap_or_default();
            assert_eq!((status, code.as_str()), (400, "0x80060888"), "{option}");
            assert!(message.contains(name), "{option}: {message}");
        }
        let (_, code, message) = error_of(&get(
            &mut store,
            "contacts?$filter=tolower(lastname) eq 'a'",
            None,
        ));
        assert_eq!(code, "0x80060888");
        assert!(message.contains("tolower"), "{message}");
    }

    #[test]
    fn single_valued_lookups_expand_with_a_nested_select() {
        let mut store = store();
        let body = get_json(
            &mut store,
            "new_vehicles?$select=new_name&$expand=new_contactid($select=firstname)",
        );
        let expanded = &body["value"][0]["new_contactid"];
        assert_eq!(expanded["firstname"], "Bob");
        assert!(expanded.get("lastname").is_none());
        let body = get_json(
            &mut store,
            "new_vehicles(00000000-0000-4000-8000-0000000000a1)?$expand=new_contactid",
        );
        assert_eq!(body["new_contactid"]["lastname"], "Jones");
        let (status, _, message) = error_of(&get(&mut store, "new_vehicles?$expand=nosuch", None));
        assert_eq!(status, 400);
        assert!(message.contains("nosuch"), "{message}");
        // Change tracking refuses $expand, as the service does.
        let refused = get(
            &mut store,
            "new_vehicles?$expand=new_contactid",
            Some("odata.track-changes"),
        );
        assert_eq!(refused.status, 400);
    }

    #[test]
    fn entity_definitions_filter_select_and_expand_attributes() {
        let mut store = store();
        let body = get_json(
            &mut store,
            "EntityDefinitions?$select=LogicalName,EntitySetName&$filter=LogicalName eq 'contact'&$expand=Attributes($select=LogicalName,AttributeType)",
        );
        let entries = body["value"].as_array().expect("value");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["EntitySetName"], "contacts");
        assert!(entries[0].get("PrimaryIdAttribute").is_none());
        let attributes = entries[0]["Attributes"]
            .as_array()
            .expect("expanded Attributes");
        let birthdate = attributes
            .iter()
            .find(|a| a["LogicalName"] == "birthdate")
            .expect("birthdate");
        assert_eq!(birthdate["AttributeType"], "DateTime");
        assert!(birthdate.get("MaxLength").is_none());
        let one = get_json(
            &mut store,
            "EntityDefinitions(LogicalName='contact')?$select=LogicalName&$expand=Attributes($filter=AttributeType eq Microsoft.Dynamics.CRM.AttributeTypeCode'Picklist')",
        );
        assert_eq!(one["Attributes"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn table_pickers_filter_on_is_private_and_unknown_properties_are_refused() {
        let mut store = store();
        // What a table picker asks for (Microsoft's Python SDK's tables.list()).
        let listed = get_json(
            &mut store,
            "EntityDefinitions?$select=LogicalName,EntitySetName&$filter=IsPrivate eq false",
        );
        let names = column(&listed, "LogicalName");
        for table in ["contact", "new_vehicle", "adobe_emailsend"] {
            assert!(names.contains(&table.to_string()), "{table} in {names:?}");
        }
        let custom = get_json(
            &mut store,
            "EntityDefinitions?$select=LogicalName&$filter=IsCustomEntity eq false and IsIntersect eq false",
        );
        assert_eq!(column(&custom, "LogicalName"), ["contact"]);
        // A property the metadata type does not have is an error, not an empty answer.
        let (status, code, message) = error_of(&get(
            &mut store,
            "EntityDefinitions?$select=LogicalName&$filter=IsSecret eq false",
            None,
        ));
        assert_eq!((status, code.as_str()), (400, "0x80060888"));
        assert!(
            message.contains("'IsSecret'") && message.contains("EntityMetadata"),
            "{message}"
        );
        let (status, _, message) = error_of(&get(
            &mut store,
            "EntityDefinitions(LogicalName='contact')/Attributes?$filter=Colour eq 'red'",
            None,
        ));
        assert_eq!(status, 400);
        assert!(
            message.contains("'Colour'") && message.contains("AttributeMetadata"),
            "{message}"
        );
        // A property only a derived type has needs the cast.
        let (status, _, message) = error_of(&get(
            &mut store,
            "EntityDefinitions(LogicalName='contact')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$filter=MaxLength gt 10",
            None,
        ));
        assert_eq!(status, 400);
        assert!(message.contains("PicklistAttributeMetadata"), "{message}");
        let long = get_json(
            &mut store,
            "EntityDefinitions(LogicalName='contact')/Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=LogicalName&$filter=MaxLength gt 100",
        );
        assert!(!column(&long, "LogicalName").is_empty());
    }

    #[test]
    fn metadata_entries_are_addressed_by_metadata_id_too() {
        let mut store = store();
        let contact = get_json(
            &mut store,
            "EntityDefinitions?$select=LogicalName&$filter=LogicalName eq 'contact'",
        );
        let table_id = contact["value"][0]["MetadataId"]
            .as_str()
            .expect("MetadataId")
            .to_string();
        let entry = get_json(
            &mut store,
            &format!("EntityDefinitions({table_id})?$select=LogicalName,EntitySetName"),
        );
        assert_eq!(entry["LogicalName"], "contact");
        assert_eq!(entry["EntitySetName"], "contacts");
        let strings = get_json(
            &mut store,
            &format!(
                "EntityDefinitions({table_id})/Attributes?$select=LogicalName&$filter=AttributeType eq 'String'"
            ),
        );
        let names = column(&strings, "LogicalName");
        assert!(names.contains(&"lastname".to_string()), "{names:?}");
        assert!(!names.contains(&"gendercode".to_string()), "{names:?}");
        let lastname_id = strings["value"]
            .as_array()
            .expect("value")
            .iter()
            .find(|entry| entry["LogicalName"] == "lastname")
            .and_then(|entry| entry["MetadataId"].as_str())
            .expect("lastname's MetadataId")
            .to_string();
        let lastname = get_json(
            &mut store,
            &format!("EntityDefinitions({table_id})/Attributes({lastname_id})?$select=LogicalName"),
        );
        assert_eq!(lastname["LogicalName"], "lastname");
        let unknown = "00000000-0000-4000-8000-00000000ffff";
        for path in [
            format!("EntityDefinitions({unknown})"),
            format!("EntityDefinitions({table_id})/Attributes({unknown})"),
        ] {
            let (status, code, message) = error_of(&get(&mut store, &path, None));
            assert_eq!((status, code.as_str()), (404, "0x80040217"), "{path}");
            assert!(message.contains(unknown), "{message}");
        }
    }

    #[test]
    fn typed_attribute_casts_carry_their_own_properties() {
        let mut store = store();
        let body = get_json(
            &mut store,
            "EntityDefinitions(LogicalName='contact')/Attributes/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata?$select=LogicalName,DateTimeBehavior",
        );
        let behaviors: Vec<(String, String)> = body["value"]
            .as_array()
            .expect("value")
            .iter()
            .map(|a| {
                (
                    a["LogicalName"].as_str().unwrap_or_default().to_string(),
                    a["DateTimeBehavior"]["Value"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        assert!(
            behaviors.contains(&("birthdate".into(), "DateOnly".into())),
            "{behaviors:?}"
        );
        assert!(
            behaviors.contains(&("modifiedon".into(), "UserLocal".into())),
            "{behaviors:?}"
        );
        let picklists = get_json(
            &mut store,
            "EntityDefinitions(LogicalName='contact')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options),GlobalOptionSet",
        );
        let gender = &picklists["value"][0];
        assert_eq!(gender["LogicalName"], "gendercode");
        assert_eq!(gender["OptionSet"]["Options"][1]["Value"], 2);
        assert!(gender["GlobalOptionSet"].is_null());
        let lookups = get_json(
            &mut store,
            "EntityDefinitions(LogicalName='new_vehicle')/Attributes/Microsoft.Dynamics.CRM.LookupAttributeMetadata?$select=LogicalName,Targets",
        );
        assert_eq!(lookups["value"][0]["Targets"], json!(["contact"]));
    }

    #[test]
    fn csdl_describes_every_table_and_who_am_i() {
        let mut store = store();
        let response = get(&mut store, "$metadata", None);
        assert_eq!(response.status, 200);
        assert!(
            response
                .headers
                .iter()
                .any(|(k, v)| k == "Content-Type" && v == "application/xml")
        );
        let xml = &response.body;
        assert!(xml.contains("<EntityType Name=\"contact\" BaseType=\"mscrm.crmbaseentity\"><Key><PropertyRef Name=\"contactid\"/></Key>"));
        assert!(xml.contains("<Property Name=\"birthdate\" Type=\"Edm.Date\"/>"));
        assert!(xml.contains("<Property Name=\"_new_contactid_value\" Type=\"Edm.Guid\"/>"));
        assert!(
            xml.contains("<NavigationProperty Name=\"new_contactid\" Type=\"mscrm.contact\"/>")
        );
        assert!(xml.contains(
            "<EntitySet Name=\"contacts\" EntityType=\"Microsoft.Dynamics.CRM.contact\">"
        ));
        assert!(xml.contains("<FunctionImport Name=\"WhoAmI\""));
        let who = get_json(&mut store, "WhoAmI");
        assert!(
            who["UserId"]
                .as_str()
                .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
        );
    }
}
