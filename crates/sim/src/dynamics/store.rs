//! The simulator's in-memory Dataverse: rows per table, the per-table version counter behind
//! change tracking, tombstones of deleted rows, delta tokens, the simulated clock, and the
//! validation of written values against the schema. HTTP shapes live in `api.rs`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::{Map, Value as Json};

use super::odata::{ApiError, EntityKey};
use super::schema::{AttributeChange, AttributeDef, AttributeType, TableDef};

/// Days a delta token stays valid (the organization's `ExpireChangeTrackingInDays` default).
pub const EXPIRE_CHANGE_TRACKING_IN_DAYS: i64 = 7;

/// The simulated clock: real time since construction, shifted by [`Clock::advance`].
#[derive(Debug, Clone)]
pub struct Clock {
    start: DateTime<Utc>,
    started: std::time::Instant,
    offset: Duration,
}

impl Clock {
    /// A clock reading `start` now.
    pub fn new(start: DateTime<Utc>) -> Clock {
        Clock {
            start,
            started: std::time::Instant::now(),
            offset: Duration::ZERO,
        }
    }

    /// The current simulated time.
    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = self.started.elapsed() + self.offset;
        self.start + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::zero())
    }

    /// Moves the clock forward.
    pub fn advance(&mut self, by: Duration) {
        self.offset += by;
    }
}

/// Formats a time as the service does (`2022-05-12T22:19:12Z`).
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One stored row: attribute values by logical name (lookups hold the target's GUID).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    /// The values.
    pub fields: Map<String, Json>,
    /// The table version of its last change (its ETag).
    pub version: u64,
}

/// One table's rows and change-tracking state.
#[derive(Debug, Clone)]
pub struct TableState {
    /// The table's schema.
    pub def: TableDef,
    /// Rows by primary key.
    pub rows: HashMap<String, StoredRow>,
    by_version: BTreeMap<u64, String>,
    tombstones: BTreeMap<u64, String>,
    tombstone_of: HashMap<String, u64>,
    /// The last version handed out.
    pub version: u64,
}

/// One change in a change-tracking listing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change<'a> {
    /// A row that exists now.
    Upsert(&'a str, &'a StoredRow),
    /// A row deleted since.
    Delete(&'a str),
}

/// Where a paged listing continues: after `version` within its phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPosition {
    /// False while listing rows, true once listing tombstones.
    pub in_deletes: bool,
    /// The last version already listed in that phase.
    pub after: u64,
}

/// How a write may treat an existing or missing row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Create or update.
    Upsert,
    /// Update only (`If-Match: *`).
    UpdateOnly,
    /// Create only (`If-None-Match: *` or POST).
    CreateOnly,
}

impl TableState {
    fn new(def: TableDef) -> TableState {
        TableState {
            def,
            rows: HashMap::new(),
            by_version: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            tombstone_of: HashMap::new(),
            version: 0,
        }
    }

    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Lists changes with `since < version <= upto` after `position`: rows first (by version),
    /// then, when `include_deletes`, tombstones. Returns at most `limit` and where to continue.
    pub fn changes(
        &self,
        since: u64,
        upto: u64,
        position: ListPosition,
        include_deletes: bool,
        limit: usize,
    ) -> (Vec<Change<'_>>, Option<ListPosition>) {
        let mut changes = Vec::new();
        if !position.in_deletes {
            let from = since.max(position.after) + 1;
            if from <= upto {
                for (version, id) in self.by_version.range(from..=upto) {
                    if changes.len() == limit {
                        return (
                            changes,
                            Some(ListPosition {
                                in_deletes: false,
                                after: version - 1,
                            }),
                        );
                    }
                    if let Some(row) = self.rows.get(id) {
                        changes.push(Change::Upsert(id, row));
                    }
                }
            }
        }
        if include_deletes {
            let after = if position.in_deletes {
                position.after
            } else {
                0
            };
            let from = since.max(after) + 1;
            if from <= upto {
                for (version, id) in self.tombstones.range(from..=upto) {
                    if changes.len() == limit {
                        return (
                            changes,
                            Some(ListPosition {
                                in_deletes: true,
                                after: version - 1,
                            }),
                        );
                    }
                    changes.push(Change::Delete(id));
                }
            }
        }
        (changes, None)
    }

    /// Finds the row an entity key addresses.
    pub fn resolve_key(&self, key: &EntityKey) -> Result<Option<String>, ApiError> {
        match key {
            EntityKey::Id(id) => Ok(self.rows.contains_key(id).then(|| id.clone())),
            EntityKey::Alternate(pairs) => {
                self.check_alternate_key(pairs)?;
                Ok(self
                    .rows
                    .iter()
                    .find(|(_, row)| {
                        pairs.iter().all(|(name, value)| {
                            let stored = row.fields.get(name).unwrap_or(&Json::Null);
                            match (stored, value) {
                                (Json::String(left), Json::String(right)) => {
                                    left.eq_ignore_ascii_case(right)
                                }
                                (left, right) => left == right,
                            }
                        })
                    })
                    .map(|(id, _)| id.clone()))
            }
        }
    }

    fn check_alternate_key(&self, pairs: &[(String, Json)]) -> Result<(), ApiError> {
        let mut asked: Vec<&str> = pairs.iter().map(|(name, _)| name.as_str()).collect();
        asked.sort_unstable();
        let declared = self.def.alternate_keys.iter().any(|key| {
            let mut parts: Vec<&str> = key.iter().map(String::as_str).collect();
            parts.sort_unstable();
            parts == asked
        });
        if declared {
            Ok(())
        } else {
            Err(ApiError::bad_request(format!(
                "The key specified '{}' is not defined as an alternate key on entity '{}'.",
                asked.join(","),
                self.def.logical_name
            )))
        }
    }
}

/// Every table of the simulated organization, and its clock.
#[derive(Debug, Clone)]
pub struct Store {
    tables: BTreeMap<String, TableState>,
    /// The simulated clock.
    pub clock: Clock,
}

impl Store {
    /// A store with `tables` (empty) and `clock`.
    pub fn new(tables: Vec<TableDef>, clock: Clock) -> Store {
        Store {
            tables: tables
                .into_iter()
                .map(|def| (def.logical_name.clone(), TableState::new(def)))
                .collect(),
            clock,
        }
    }

    /// All tables, by logical name.
    pub fn tables(&self) -> impl Iterator<Item = &TableState> {
        self.tables.values()
    }

    /// The table with logical name `name`.
    pub fn table(&self, name: &str) -> Option<&TableState> {
        self.tables.get(name)
    }

    /// The table whose entity set is `set`.
    pub fn table_by_set(&self, set: &str) -> Option<&TableState> {
        self.tables
            .values()
            .find(|table| table.def.entity_set == set)
    }

    fn table_mut(&mut self, name: &str) -> Result<&mut TableState, ApiError> {
        self.tables.get_mut(name).ok_or_else(|| unknown_table(name))
    }

    /// A delta token for `version` issued now: `<version>!<MM/dd/yyyy HH:mm:ss>`.
    pub fn delta_token(&self, version: u64) -> String {
        format!("{version}!{}", self.clock.now().format("%m/%d/%Y %H:%M:%S"))
    }

    /// Reads a delta token back into its version, refusing unreadable or expired ones.
    pub fn check_delta_token(&self, token: &str) -> Result<u64, ApiError> {
        let invalid = || {
            ApiError::bad_request(format!(
                "The delta token '{token}' is not valid: expected '<version>!<MM/dd/yyyy HH:mm:ss>'."
            ))
        };
        let (version, stamp) = token.split_once('!').ok_or_else(invalid)?;
        let version: u64 = version.parse().map_err(|_| invalid())?;
        let issued = chrono::NaiveDateTime::parse_from_str(stamp, "%m/%d/%Y %H:%M:%S")
            .map_err(|_| invalid())?
            .and_utc();
        if self.clock.now() - issued > chrono::Duration::days(EXPIRE_CHANGE_TRACKING_IN_DAYS) {
            return Err(ApiError::new(
                400,
                "0x80044352",
                format!(
                    "Version stamp associated with the delta token has expired: changes are kept for {EXPIRE_CHANGE_TRACKING_IN_DAYS} days (ExpireChangeTrackingInDays). Please perform a full sync."
                ),
            ));
        }
        Ok(version)
    }

    /// Writes `input` (client JSON: attribute names and `nav@odata.bind`) to the row `id` of
    /// `table`, creating or updating per `mode`. Returns true when the row was created.
    pub fn write(
        &mut self,
        table: &str,
        id: &str,
        input: &Map<String, Json>,
        mode: WriteMode,
        expected_version: Option<u64>,
    ) -> Result<bool, ApiError> {
        let now = format_time(self.clock.now());
        let sets: HashMap<String, String> = self
            .tables
            .values()
            .map(|state| (state.def.entity_set.clone(), state.def.logical_name.clone()))
            .collect();
        let state = self.table_mut(table)?;
        let values = convert_input(&state.def, input, &sets)?;
        if let Some(Json::String(given)) = values.get(&state.def.primary_id)
            && !given.eq_ignore_ascii_case(id)
        {
            return Err(ApiError::bad_request(format!(
                "The primary key '{}' in the body ({given}) differs from the one in the URL ({id}).",
                state.def.primary_id
            )));
        }
        let exists = state.rows.contains_key(id);
        match (mode, exists) {
            (WriteMode::UpdateOnly, false) => {
                return Err(ApiError::new(
                    404,
                    "",
                    format!("{table} With Id = {id} Does Not Exist"),
                ));
            }
            (WriteMode::CreateOnly, true) => {
                return Err(ApiError::new(
                    412,
                    "0x80040237",
                    "A record with matching key values already exists.",
                ));
            }
            _ => {}
        }
        if let (Some(expected), Some(row)) = (expected_version, state.rows.get(id))
            && row.version != expected
        {
            return Err(ApiError::new(
                412,
                "0x80060882",
                "The version of the existing record doesn't match the RowVersion property provided.",
            ));
        }
        let version = state.next_version();
        let created = !exists;
        let row = state
            .rows
            .entry(id.to_string())
            .or_insert_with(|| StoredRow {
                fields: Map::new(),
                version,
            });
        if created {
            row.fields
                .insert(state.def.primary_id.clone(), Json::String(id.to_string()));
            for attribute in &state.def.attributes {
                let default = match (attribute.kind, attribute.logical_name.as_str()) {
                    (AttributeType::Boolean, _) => Json::Bool(false),
                    (AttributeType::State, _) => Json::from(0),
                    (_, "createdon") => Json::String(now.clone()),
                    _ => continue,
                };
                row.fields.insert(attribute.logical_name.clone(), default);
            }
        } else {
            state.by_version.remove(&row.version);
        }
        for (name, value) in values {
            row.fields.insert(name, value);
        }
        if state.def.attribute("modifiedon").is_some() {
            row.fields
                .insert("modifiedon".to_string(), Json::String(now));
        }
        if state.def.logical_name == "contact" {
            let part = |name: &str| {
                row.fields
                    .get(name)
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let full = format!("{} {}", part("firstname"), part("lastname"));
            row.fields.insert(
                "fullname".to_string(),
                Json::String(full.trim().to_string()),
            );
        }
        row.version = version;
        state.by_version.insert(version, id.to_string());
        if let Some(old) = state.tombstone_of.remove(id) {
            state.tombstones.remove(&old);
        }
        Ok(created)
    }

    /// Deletes row `id` of `table`, leaving a tombstone for change tracking.
    pub fn delete(&mut self, table: &str, id: &str) -> Result<(), ApiError> {
        let state = self.table_mut(table)?;
        let Some(row) = state.rows.remove(id) else {
            return Err(ApiError::row_not_found(table, id));
        };
        state.by_version.remove(&row.version);
        let version = state.next_version();
        state.tombstones.insert(version, id.to_string());
        state.tombstone_of.insert(id.to_string(), version);
        Ok(())
    }

    /// Changes the schema of `table`; values of a removed or retyped attribute are dropped.
    pub fn change_attribute(
        &mut self,
        table: &str,
        attribute: &str,
        change: &AttributeChange,
    ) -> Result<(), ApiError> {
        let state = self.table_mut(table)?;
        super::schema::apply_change(&mut state.def, attribute, change)
            .map_err(ApiError::bad_request)?;
        for row in state.rows.values_mut() {
            row.fields.remove(attribute);
        }
        Ok(())
    }
}

/// The 404 for an unknown table.
pub fn unknown_table(name: &str) -> ApiError {
    ApiError::new(
        404,
        "0x80040217",
        format!("Could not find an entity with logical name '{name}'."),
    )
}

fn type_error(table: &TableDef, attribute: &AttributeDef, value: &Json) -> ApiError {
    ApiError::new(
        400,
        "0x80048d19",
        format!(
            "Error identified in Payload provided by the user for Entity :'{}' ----> InnerException : Microsoft.OData.ODataException: Cannot convert the literal '{value}' to the expected type 'Edm.{}' of property '{}'.",
            table.logical_name,
            edm_type(attribute),
            attribute.logical_name
        ),
    )
}

/// The Edm type of an attribute's values (`Int32`, `DateTimeOffset`...), without the `Edm.` prefix.
pub fn edm_type(attribute: &AttributeDef) -> &'static str {
    match attribute.kind {
        AttributeType::Boolean => "Boolean",
        AttributeType::DateTime if attribute.date_only => "Date",
        AttributeType::DateTime => "DateTimeOffset",
        AttributeType::Decimal | AttributeType::Money => "Decimal",
        AttributeType::Double => "Double",
        AttributeType::Integer
        | AttributeType::Picklist
        | AttributeType::State
        | AttributeType::Status => "Int32",
        AttributeType::Lookup | AttributeType::Uniqueidentifier => "Guid",
        AttributeType::Memo | AttributeType::String => "String",
    }
}

/// Checks and converts client JSON into stored values, by attribute logical name.
fn convert_input(
    table: &TableDef,
    input: &Map<String, Json>,
    sets: &HashMap<String, String>,
) -> Result<Map<String, Json>, ApiError> {
    let mut values = Map::new();
    for (key, value) in input {
        if let Some(navigation) = key.strip_suffix("@odata.bind") {
            let attribute = table.attribute_by_navigation(navigation).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "An undeclared property '{navigation}' which only has property annotations in the payload but no property value was found in the payload. In OData, only declared navigation properties and declared named streams can be represented as properties without values."
                ))
            })?;
            let id = bound_id(table, attribute, value, sets)?;
            values.insert(attribute.logical_name.clone(), Json::String(id));
            continue;
        }
        if key.contains('@') {
            // Instance annotations (e.g. @odata.etag, FormattedValue) are not data.
            continue;
        }
        let attribute = table
            .attribute(key)
            .ok_or_else(|| unknown_property(table, key))?;
        if attribute.read_only {
            continue;
        }
        if attribute.kind == AttributeType::Lookup {
            return Err(ApiError::bad_request(format!(
                "'{key}' is a lookup: set it with '{}@odata.bind'.",
                attribute.navigation.as_deref().unwrap_or(key)
            )));
        }
        values.insert(key.clone(), convert_value(table, attribute, value)?);
    }
    Ok(values)
}

/// The 400 for a property the table does not have.
pub fn unknown_property(table: &TableDef, name: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{}'.",
        table.logical_name
    ))
}

fn bound_id(
    table: &TableDef,
    attribute: &AttributeDef,
    value: &Json,
    sets: &HashMap<String, String>,
) -> Result<String, ApiError> {
    let reference = value
        .as_str()
        .ok_or_else(|| type_error(table, attribute, value))?;
    let path = reference.rsplit('/').next().unwrap_or(reference);
    let parsed = path
        .strip_suffix(')')
        .and_then(|rest| rest.split_once('('))
        .and_then(|(set, id)| Some((set, uuid::Uuid::parse_str(id.trim_matches('\'')).ok()?)));
    let Some((set, id)) = parsed else {
        return Err(ApiError::bad_request(format!(
            "The '@odata.bind' value '{reference}' of '{}' is not an entity reference like '/contacts(<guid>)'.",
            attribute.logical_name
        )));
    };
    let target = attribute.target.as_deref().unwrap_or_default();
    if sets.get(set).map(String::as_str) != Some(target) {
        return Err(ApiError::bad_request(format!(
            "The '@odata.bind' value '{reference}' of '{}' must reference the '{target}' entity set.",
            attribute.logical_name
        )));
    }
    Ok(id.to_string())
}

fn convert_value(
    table: &TableDef,
    attribute: &AttributeDef,
    value: &Json,
) -> Result<Json, ApiError> {
    if value.is_null() {
        return Ok(Json::Null);
    }
    let wrong = || type_error(table, attribute, value);
    match attribute.kind {
        AttributeType::String | AttributeType::Memo => {
            let text = value.as_str().ok_or_else(wrong)?;
            if let Some(max) = attribute.max_length
                && text.chars().count() > max as usize
            {
                return Err(ApiError::new(
                    400,
                    "0x80044331",
                    format!(
                        "A validation error occurred. The length of the '{}' attribute of the '{}' entity exceeded the maximum allowed length of '{max}'.",
                        attribute.logical_name, table.logical_name
                    ),
                ));
            }
            Ok(value.clone())
        }
        AttributeType::Integer => value.as_i64().map(Json::from).ok_or_else(wrong),
        AttributeType::Decimal | AttributeType::Double | AttributeType::Money => {
            value.as_f64().map(Json::from).ok_or_else(wrong)
        }
        AttributeType::Boolean => value.as_bool().map(Json::Bool).ok_or_else(wrong),
        AttributeType::Picklist | AttributeType::State | AttributeType::Status => {
            let option = value.as_i64().ok_or_else(wrong)?;
            if attribute.option_label(option).is_none() {
                let accepted: Vec<String> = attribute
                    .options
                    .iter()
                    .map(|(value, _)| value.to_string())
                    .collect();
                return Err(ApiError::new(
                    400,
                    "0x8004431a",
                    format!(
                        "A validation error occurred. The value {option} of '{}' on record of type '{}' is outside the valid range. Accepted Values: {}",
                        attribute.logical_name,
                        table.logical_name,
                        accepted.join(",")
                    ),
                ));
            }
            Ok(Json::from(option))
        }
        AttributeType::DateTime => {
            let text = value.as_str().ok_or_else(wrong)?;
            if attribute.date_only {
                let date = text.get(..10).unwrap_or(text);
                NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| wrong())?;
                Ok(Json::String(date.to_string()))
            } else {
                let parsed = DateTime::parse_from_rfc3339(text).map_err(|_| wrong())?;
                Ok(Json::String(format_time(parsed.with_timezone(&Utc))))
            }
        }
        AttributeType::Uniqueidentifier | AttributeType::Lookup => {
            let text = value.as_str().ok_or_else(wrong)?;
            let id = uuid::Uuid::parse_str(text).map_err(|_| wrong())?;
            Ok(Json::String(id.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::seeded_tables;
    use super::*;
    use serde_json::json;

    fn store() -> Store {
        Store::new(seeded_tables(), Clock::new(Utc::now()))
    }

    fn fields(value: Json) -> Map<String, Json> {
        value.as_object().cloned().expect("an object")
    }

    const ID: &str = "00000000-0000-4000-8000-000000000001";

    #[test]
    fn created_then_deleted_row_appears_only_as_deleted() {
        let mut store = store();
        let since = store.table("contact").expect("seeded").version;
        store
            .write(
                "contact",
                ID,
                &fields(json!({"firstname": "Ann"})),
                WriteMode::Upsert,
                None,
            )
            .expect("valid");
        store.delete("contact", ID).expect("exists");
        let table = store.table("contact").expect("seeded");
        let start = ListPosition {
            in_deletes: false,
            after: 0,
        };
        let (changes, next) = table.changes(since, table.version, start, true, 100);
        assert_eq!(changes, vec![Change::Delete(ID)]);
        assert_eq!(next, None);
    }

    #[test]
    fn rows_changed_while_paging_move_to_the_next_delta() {
        let mut store = store();
        for n in 1..=3 {
            let id = format!("00000000-0000-4000-8000-00000000000{n}");
            store
                .write(
                    "contact",
                    &id,
                    &fields(json!({"lastname": "x"})),
                    WriteMode::Upsert,
                    None,
                )
                .expect("valid");
        }
        let upto = store.table("contact").expect("seeded").version;
        let start = ListPosition {
            in_deletes: false,
            after: 0,
        };
        let (first, next) = store
            .table("contact")
            .expect("seeded")
            .changes(0, upto, start, false, 1);
        assert_eq!(first.len(), 1);
        let next = next.expect("more pages");
        // Row 2 changes between pages: it leaves this listing and shows up after `upto`.
        store
            .write(
                "contact",
                "00000000-0000-4000-8000-000000000002",
                &fields(json!({"lastname": "y"})),
                WriteMode::Upsert,
                None,
            )
            .expect("valid");
        let table = store.table("contact").expect("seeded");
        let (rest, _) = table.changes(0, upto, next, false, 10);
        assert_eq!(rest.len(), 1);
        let (delta, _) = table.changes(upto, table.version, start, true, 10);
        assert!(matches!(
            delta[..],
            [Change::Upsert("00000000-0000-4000-8000-000000000002", _)]
        ));
    }

    #[test]
    fn expired_delta_token_is_refused() {
        let mut store = store();
        let token = store.delta_token(5);
        assert_eq!(store.check_delta_token(&token), Ok(5));
        store.clock.advance(Duration::from_secs(8 * 24 * 3600));
        let error = store
            .check_delta_token(&token)
            .expect_err("older than 7 days");
        assert!(error.message.contains("expired"), "{}", error.message);
    }

    #[test]
    fn values_are_checked_against_the_schema() {
        let mut store = store();
        let long = "x".repeat(201);
        let error = store
            .write(
                "adobe_emailsend",
                ID,
                &fields(json!({"subject": long})),
                WriteMode::Upsert,
                None,
            )
            .expect_err("too long");
        assert_eq!(error.code, "0x80044331");
        let error = store
            .write(
                "contact",
                ID,
                &fields(json!({"gendercode": 9})),
                WriteMode::Upsert,
                None,
            )
            .expect_err("not an option");
        assert!(
            error.message.contains("Accepted Values: 1,2"),
            "{}",
            error.message
        );
        let error = store
            .write(
                "contact",
                ID,
                &fields(json!({"nosuch": 1})),
                WriteMode::Upsert,
                None,
            )
            .expect_err("unknown");
        assert!(error.message.contains("'nosuch'"));
        let error = store
            .write(
                "contact",
                ID,
                &fields(json!({"firstname": "A"})),
                WriteMode::UpdateOnly,
                None,
            )
            .expect_err("update only");
        assert_eq!(error.status, 404);
    }

    #[test]
    fn lookups_bind_through_their_navigation_property() {
        let mut store = store();
        store
            .write(
                "adobe_emailsend",
                ID,
                &fields(
                    json!({"regardingobjectid_contact@odata.bind": format!("/contacts({ID})")}),
                ),
                WriteMode::Upsert,
                None,
            )
            .expect("valid bind");
        let row = &store.table("adobe_emailsend").expect("seeded").rows[ID];
        assert_eq!(row.fields["regardingobjectid"], json!(ID));
        let error = store
            .write(
                "adobe_emailsend",
                ID,
                &fields(
                    json!({"regardingobjectid_contact@odata.bind": format!("/new_vehicles({ID})")}),
                ),
                WriteMode::Upsert,
                None,
            )
            .expect_err("wrong set");
        assert!(error.message.contains("contact"));
    }
}
