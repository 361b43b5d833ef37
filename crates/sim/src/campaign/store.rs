//! The simulator's in-memory records: opaque PKeys, creation, patching, deletion, filtering by
//! the identification key, and paging in insertion order. Every write of an opt-out attribute is
//! also logged in the opt-out log (attribute-level change times and the next export).
//!
//! It renders records as Campaign JSON but knows nothing of HTTP; errors carry the status and the
//! RST detail text for the HTTP layer to wrap.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::optout::OptOutLog;
use super::schema::{Schema, is_opt_out_field, now_text, profile_schema, vehicle_schema};

/// A refusal with its HTTP status and RST detail text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RstError {
    /// The HTTP status.
    pub status: u16,
    /// What is wrong, in Campaign's words.
    pub detail: String,
}

impl RstError {
    fn new(status: u16, detail: impl Into<String>) -> RstError {
        RstError {
            status,
            detail: detail.into(),
        }
    }
}

struct Row {
    pkey: String,
    fields: Map<String, Value>,
}

/// One resource's schema and rows.
pub struct Resource {
    /// The resource's definition (changed by schema-drift faults).
    pub schema: Schema,
    rows: BTreeMap<u64, Row>,
    seq_of_pkey: HashMap<String, u64>,
    // The identification key index: `by<Key>` lookups must not scan (the benchmark writes 10^5 rows).
    seq_of_key: HashMap<String, u64>,
    next_seq: u64,
    /// The order of a rendered record's members under the current schema (reset when the
    /// schema is handed out for change).
    member_order: OnceCell<Vec<Member>>,
}

impl Resource {
    fn new(schema: Schema) -> Resource {
        Resource {
            schema,
            rows: BTreeMap::new(),
            seq_of_pkey: HashMap::new(),
            seq_of_key: HashMap::new(),
            next_seq: 1,
            member_order: OnceCell::new(),
        }
    }

    /// A rendered record's members in JSON object order: by name, as serde_json's map orders
    /// its keys (Campaign's own answers list them so too), a later member replacing an
    /// earlier one of the same name.
    fn member_order(&self) -> &[Member] {
        self.member_order.get_or_init(|| {
            let fields = &self.schema.fields;
            let mut members: Vec<(&str, Member)> = Vec::with_capacity(fields.len() + 2);
            members.push(("PKey", Member::PKey));
            members.extend(
                fields
                    .iter()
                    .enumerate()
                    .map(|(at, field)| (field.name.as_str(), Member::Field(at))),
            );
            members.push(("href", Member::Href));
            members.sort_by_key(|(name, _)| *name);
            let mut order: Vec<Member> = Vec::with_capacity(members.len());
            for (at, (name, member)) in members.iter().enumerate() {
                if members.get(at + 1).is_none_or(|(next, _)| next != name) {
                    order.push(*member);
                }
            }
            order
        })
    }

    fn render(&self, row: &Row, collection_url: &str) -> Value {
        // Serializing borrowed values into a `Value` cannot fail (its keys are strings).
        serde_json::to_value(self.rendered(row, collection_url)).unwrap_or(Value::Null)
    }

    fn rendered<'a>(&'a self, row: &'a Row, collection_url: &'a str) -> Rendered<'a> {
        Rendered {
            resource: self,
            row,
            collection_url,
        }
    }

    fn matches(&self, row: &Row, filter: Option<&(String, String)>) -> bool {
        filter.is_none_or(|(field, wanted)| {
            row.fields
                .get(field)
                .is_some_and(|value| value.as_str() == Some(wanted.as_str()))
        })
    }

    /// The rows matching a filter from `start` on, using the key index when it applies.
    fn matching<'a>(
        &'a self,
        filter: Option<&'a (String, String)>,
        start: u64,
    ) -> Box<dyn Iterator<Item = (&'a u64, &'a Row)> + 'a> {
        match filter {
            Some((field, value)) if *field == self.schema.identification_key => Box::new(
                self.seq_of_key
                    .get(value)
                    .filter(|seq| **seq >= start)
                    .and_then(|seq| self.rows.get_key_value(seq))
                    .into_iter(),
            ),
            _ => Box::new(
                self.rows
                    .range(start..)
                    .filter(move |(_, row)| self.matches(row, filter)),
            ),
        }
    }

    fn seq(&self, pkey: &str) -> Result<u64, RstError> {
        self.seq_of_pkey.get(pkey).copied().ok_or_else(|| {
            RstError::new(
                404,
                format!(
                    "Error rc=-2003 No '{}' record with key '{pkey}'.",
                    self.schema.name
                ),
            )
        })
    }
}

/// A record as Campaign renders it (its PKey, every schema field, empty ones as the type's
/// empty value, and its href), serialized straight from the stored values: the POST and GET
/// answers are written without copying the record into a `Value` first.
pub struct Rendered<'a> {
    resource: &'a Resource,
    row: &'a Row,
    collection_url: &'a str,
}

/// One member of a rendered record.
#[derive(Debug, Clone, Copy)]
enum Member {
    PKey,
    /// The schema field at this position.
    Field(usize),
    Href,
}

impl Serialize for Rendered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let order = self.resource.member_order();
        let mut object = serializer.serialize_map(Some(order.len()))?;
        for member in order {
            match *member {
                Member::PKey => object.serialize_entry("PKey", &self.row.pkey)?,
                Member::Field(at) => {
                    let Some(field) = self.resource.schema.fields.get(at) else {
                        continue;
                    };
                    match self.row.fields.get(&field.name) {
                        Some(value) => object.serialize_entry(&field.name, value)?,
                        None => object.serialize_entry(&field.name, &field.empty_value())?,
                    }
                }
                Member::Href => object.serialize_entry(
                    "href",
                    &format_args!("{}/{}", self.collection_url, self.row.pkey),
                )?,
            }
        }
        object.end()
    }
}

/// One page of a list.
pub struct Page {
    /// The rendered records.
    pub content: Vec<Value>,
    /// Where the next page starts, when more rows remain.
    pub next_start: Option<u64>,
}

/// All simulated Campaign data.
pub struct Store {
    resources: BTreeMap<String, Resource>,
    rng: fastrand::Rng,
    /// Opt-out change times and the queue of the next export.
    pub opt_outs: OptOutLog,
}

impl Store {
    /// A store with empty `profile` and `cusVehicle` resources; `seed` makes PKeys reproducible.
    pub fn new(seed: u64) -> Store {
        let mut resources = BTreeMap::new();
        for schema in [profile_schema(), vehicle_schema()] {
            resources.insert(schema.name.clone(), Resource::new(schema));
        }
        Store {
            resources,
            rng: fastrand::Rng::with_seed(seed),
            opt_outs: OptOutLog::default(),
        }
    }

    /// The resource called `name`, or Campaign's 404.
    pub fn resource(&self, name: &str) -> Result<&Resource, RstError> {
        self.resources
            .get(name)
            .ok_or_else(|| unknown_resource(name))
    }

    fn resource_mut(&mut self, name: &str) -> Result<&mut Resource, RstError> {
        self.resources
            .get_mut(name)
            .ok_or_else(|| unknown_resource(name))
    }

    /// The names of all resources.
    pub fn resource_names(&self) -> Vec<String> {
        self.resources.keys().cloned().collect()
    }

    /// One record by PKey, ready to serialize (see [`Rendered`]).
    pub fn rendered<'a>(
        &'a self,
        name: &str,
        pkey: &str,
        collection_url: &'a str,
    ) -> Result<Rendered<'a>, RstError> {
        let resource = self.resource(name)?;
        let seq = resource.seq(pkey)?;
        let row = resource
            .rows
            .get(&seq)
            .ok_or_else(|| RstError::new(404, format!("Error rc=-2003 '{pkey}' was deleted.")))?;
        Ok(resource.rendered(row, collection_url))
    }

    /// The record whose identification key equals `key`.
    pub fn find_by_key(&self, name: &str, key: &str, collection_url: &str) -> Option<Value> {
        let resource = self.resources.get(name)?;
        let row = resource.rows.get(resource.seq_of_key.get(key)?)?;
        Some(resource.render(row, collection_url))
    }

    /// Up to `count` records from the row at `start` on, optionally filtered by `field == value`.
    pub fn page(
        &self,
        name: &str,
        filter: Option<&(String, String)>,
        start: u64,
        count: usize,
        collection_url: &str,
    ) -> Result<Page, RstError> {
        let resource = self.resource(name)?;
        let mut rows = resource.matching(filter, start);
        let content = rows
            .by_ref()
            .take(count)
            .map(|(_, row)| resource.render(row, collection_url))
            .collect();
        let next_start = rows.next().map(|(seq, _)| *seq);
        Ok(Page {
            content,
            next_start,
        })
    }

    /// How many records match.
    pub fn count(&self, name: &str, filter: Option<&(String, String)>) -> Result<usize, RstError> {
        let resource = self.resource(name)?;
        Ok(resource.matching(filter, 0).count())
    }

    /// Creates a record from a POST body; returns the new PKey.
    pub fn create(&mut self, name: &str, body: Value) -> Result<String, RstError> {
        let pkey = self.fresh_pkey();
        let resource = self.resource_mut(name)?;
        let mut fields = checked_fields(&resource.schema, body)?;
        let key_field = resource.schema.identification_key.clone();
        let key = fields
            .get(&key_field)
            .and_then(Value::as_str)
            .filter(|key| !key.is_empty())
            .map(str::to_owned);
        if let Some(key) = &key
            && resource.seq_of_key.contains_key(key)
        {
            return Err(RstError::new(
                400,
                format!(
                    "PGS-220000 PostgreSQL error: ERROR: duplicate key value violates unique constraint on '{key_field}' ({key})."
                ),
            ));
        }
        let now = now_text();
        if resource.schema.field("created").is_some() {
            fields.insert("created".into(), Value::String(now.clone()));
            fields.insert("lastModified".into(), Value::String(now));
        }
        let opt_out_changes: Vec<(String, bool)> = fields
            .iter()
            .filter(|(field, value)| is_opt_out_field(field) && value.as_bool() == Some(true))
            .map(|(field, _)| (field.clone(), true))
            .collect();
        // Only opt-out writes are logged (with the profile's CRM ID, empty or not).
        let crm_id = if opt_out_changes.is_empty() {
            None
        } else {
            fields
                .get(&key_field)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let seq = resource.next_seq;
        resource.next_seq += 1;
        resource.seq_of_pkey.insert(pkey.clone(), seq);
        if let Some(key) = key {
            resource.seq_of_key.insert(key, seq);
        }
        resource.rows.insert(
            seq,
            Row {
                pkey: pkey.clone(),
                fields,
            },
        );
        if name == "profile" {
            self.log_opt_outs(crm_id.as_deref(), opt_out_changes);
        }
        Ok(pkey)
    }

    /// Applies a PATCH body to the record with this PKey.
    pub fn patch(&mut self, name: &str, pkey: &str, body: Value) -> Result<(), RstError> {
        let resource = self.resource_mut(name)?;
        let seq = resource.seq(pkey)?;
        let changes = checked_fields(&resource.schema, body)?;
        let key_field = resource.schema.identification_key.clone();
        let is_profile = name == "profile";
        let has_modified = resource.schema.field("lastModified").is_some();
        let old_key = resource
            .rows
            .get(&seq)
            .and_then(|row| row.fields.get(&key_field))
            .and_then(Value::as_str)
            .filter(|key| !key.is_empty());
        if let Some(new_key) = changes.get(&key_field)
            && old_key.is_some_and(|old| Some(old) != new_key.as_str())
        {
            return Err(RstError::new(
                400,
                format!("The key field '{key_field}' cannot be changed by PATCH."),
            ));
        }
        if let Some(new_key) = changes
            .get(&key_field)
            .and_then(Value::as_str)
            .filter(|key| !key.is_empty())
        {
            if resource
                .seq_of_key
                .get(new_key)
                .is_some_and(|owner| *owner != seq)
            {
                return Err(RstError::new(
                    400,
                    format!(
                        "PGS-220000 PostgreSQL error: ERROR: duplicate key value violates unique constraint on '{key_field}' ({new_key})."
                    ),
                ));
            }
            resource.seq_of_key.insert(new_key.to_owned(), seq);
        }
        let row = resource
            .rows
            .get_mut(&seq)
            .ok_or_else(|| RstError::new(404, format!("Error rc=-2003 '{pkey}' was deleted.")))?;
        let mut opt_out_changes = Vec::new();
        for (field, value) in changes {
            if is_opt_out_field(&field) {
                let old = row
                    .fields
                    .get(&field)
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let new = value.as_bool().unwrap_or(false);
                if old != new {
                    opt_out_changes.push((field.clone(), new));
                }
            }
            row.fields.insert(field, value);
        }
        if has_modified {
            row.fields
                .insert("lastModified".into(), Value::String(now_text()));
        }
        let crm_id = row
            .fields
            .get(&key_field)
            .and_then(Value::as_str)
            .map(str::to_owned);
        if is_profile {
            self.log_opt_outs(crm_id.as_deref(), opt_out_changes);
        }
        Ok(())
    }

    /// Deletes the record with this PKey.
    pub fn delete(&mut self, name: &str, pkey: &str) -> Result<(), RstError> {
        let resource = self.resource_mut(name)?;
        let seq = resource.seq(pkey)?;
        resource.seq_of_pkey.remove(pkey);
        let key_field = &resource.schema.identification_key;
        if let Some(row) = resource.rows.remove(&seq)
            && let Some(key) = row.fields.get(key_field).and_then(Value::as_str)
        {
            resource.seq_of_key.remove(key);
        }
        Ok(())
    }

    /// The PKey of the record whose identification key equals `key`.
    pub fn pkey_of(&self, name: &str, key: &str) -> Result<String, RstError> {
        let resource = self.resource(name)?;
        let key_field = &resource.schema.identification_key;
        resource
            .seq_of_key
            .get(key)
            .and_then(|seq| resource.rows.get(seq))
            .map(|row| row.pkey.clone())
            .ok_or_else(|| {
                RstError::new(404, format!("No '{name}' record with {key_field} '{key}'."))
            })
    }

    /// Replaces a resource's schema (schema-drift faults).
    pub fn schema_mut(&mut self, name: &str) -> Result<&mut Schema, RstError> {
        let resource = self.resource_mut(name)?;
        resource.member_order = OnceCell::new();
        Ok(&mut resource.schema)
    }

    fn log_opt_outs(&mut self, crm_id: Option<&str>, changes: Vec<(String, bool)>) {
        let at = Utc::now();
        for (attribute, value) in changes {
            self.opt_outs.record(crm_id, &attribute, value, at);
        }
    }

    fn fresh_pkey(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
        loop {
            let mut pkey = String::with_capacity(44);
            pkey.push('@');
            pkey.extend((0..43).map(|_| char::from(ALPHABET[self.rng.usize(..ALPHABET.len())])));
            if self
                .resources
                .values()
                .all(|resource| !resource.seq_of_pkey.contains_key(&pkey))
            {
                return pkey;
            }
        }
    }
}

fn unknown_resource(name: &str) -> RstError {
    RstError::new(
        404,
        format!("XTK-170036 Unable to find resource '{name}'. Check the resource name."),
    )
}

/// Checks every field of a write body against the schema; returns the values to store. The
/// body is taken so that its field names move into the record instead of being copied (one
/// POST per record).
fn checked_fields(schema: &Schema, body: Value) -> Result<Map<String, Value>, RstError> {
    let Value::Object(body) = body else {
        return Err(RstError::new(
            400,
            "The request body must be a JSON object of field values.",
        ));
    };
    let mut fields = Map::new();
    for (name, value) in body {
        if name == "PKey" || name == "href" {
            continue;
        }
        let field = schema.field(&name).ok_or_else(|| {
            RstError::new(
                400,
                format!(
                    "XTK-170036 Unable to parse expression '{name}': unknown field of resource '{}'.",
                    schema.name
                ),
            )
        })?;
        let stored = field.accept(value).map_err(|detail| {
            // Campaign reports writes to read-only properties as a server error.
            let status = if field.read_only { 500 } else { 400 };
            RstError::new(status, detail)
        })?;
        fields.insert(name, stored);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::schema::{FieldDef, FieldType};
    use serde_json::json;

    /// A record rendered as a JSON map is built: PKey, every schema field, then href.
    fn rendered_through_a_map(resource: &Resource, row: &Row, collection_url: &str) -> String {
        let mut record = Map::new();
        record.insert("PKey".into(), Value::String(row.pkey.clone()));
        for field in &resource.schema.fields {
            let value = row.fields.get(&field.name).cloned();
            record.insert(
                field.name.clone(),
                value.unwrap_or_else(|| field.empty_value()),
            );
        }
        record.insert(
            "href".into(),
            Value::String(format!("{collection_url}/{}", row.pkey)),
        );
        Value::Object(record).to_string()
    }

    #[test]
    fn a_record_is_written_as_the_map_of_its_members_would_be() {
        let mut store = Store::new(7);
        let bodies = [
            json!({"externalId": "c-1", "firstName": "Ada", "email": "ada@example.com"}),
            json!({"externalId": "c-\"2\"", "lastName": "Ünïcödé \n line", "gender": "female"}),
            json!({}),
        ];
        let mut pkeys = Vec::new();
        for body in &bodies {
            pkeys.push(store.create("profile", body.clone()).unwrap());
        }
        // A schema that changed under the records, with members named as the fixed ones.
        // Rendered once before the change, so a kept member order would show.
        serde_json::to_string(&store.rendered("profile", &pkeys[0], "u").unwrap()).unwrap();
        let schema = store.schema_mut("profile").unwrap();
        for (name, field_type) in [
            ("href", FieldType::String),
            ("Aaa", FieldType::Long),
            ("PKey", FieldType::Boolean),
        ] {
            schema.fields.push(FieldDef {
                name: name.into(),
                label: name.into(),
                field_type,
                length: None,
                values: Vec::new(),
                read_only: false,
            });
        }
        let url = "http://127.0.0.1:1/ORG/campaign/profileAndServicesExt/profile";
        let resource = store.resource("profile").unwrap();
        for pkey in &pkeys {
            let row = &resource.rows[&resource.seq(pkey).unwrap()];
            let written = serde_json::to_string(&store.rendered("profile", pkey, url).unwrap());
            assert_eq!(written.unwrap(), rendered_through_a_map(resource, row, url));
        }
    }

    #[test]
    fn create_then_find_by_key_and_patch() {
        let mut store = Store::new(7);
        let pkey = store
            .create("profile", json!({"externalId": "c-1", "firstName": "Ada"}))
            .unwrap();
        assert!(pkey.starts_with('@'));
        let found = store.find_by_key("profile", "c-1", "u").unwrap();
        assert_eq!(found["PKey"], pkey.as_str());
        assert_eq!(found["href"], format!("u/{pkey}"));
        store
            .patch("profile", &pkey, json!({"lastName": "Lovelace"}))
            .unwrap();
        let record = serde_json::to_value(store.rendered("profile", &pkey, "u").unwrap()).unwrap();
        assert_eq!(record["lastName"], "Lovelace");
        assert_eq!(record["firstName"], "Ada");
    }

    #[test]
    fn duplicate_key_and_unknown_field_are_refused() {
        let mut store = Store::new(7);
        store
            .create("profile", json!({"externalId": "c-1"}))
            .unwrap();
        let duplicate = store
            .create("profile", json!({"externalId": "c-1"}))
            .unwrap_err();
        assert!(duplicate.detail.contains("PGS-220000"));
        let unknown = store
            .create("profile", json!({"shoeSize": 44}))
            .unwrap_err();
        assert_eq!(unknown.status, 400);
        assert!(unknown.detail.contains("shoeSize"));
    }

    #[test]
    fn pages_follow_insertion_order_and_survive_deletes() {
        let mut store = Store::new(7);
        let mut pkeys = Vec::new();
        for index in 0..5 {
            pkeys.push(
                store
                    .create("cusVehicle", json!({"cusCrmId": format!("v-{index}")}))
                    .unwrap(),
            );
        }
        let first = store.page("cusVehicle", None, 0, 2, "u").unwrap();
        assert_eq!(first.content.len(), 2);
        store.delete("cusVehicle", &pkeys[2]).unwrap();
        let second = store
            .page("cusVehicle", None, first.next_start.unwrap(), 2, "u")
            .unwrap();
        assert_eq!(second.content[0]["cusCrmId"], "v-3");
        assert_eq!(second.next_start, None);
    }

    #[test]
    fn opt_out_writes_are_logged_with_change_times() {
        let mut store = Store::new(7);
        let pkey = store
            .create("profile", json!({"externalId": "c-1"}))
            .unwrap();
        store
            .patch("profile", &pkey, json!({"blackListEmail": true}))
            .unwrap();
        store
            .patch("profile", &pkey, json!({"blackListEmail": true}))
            .unwrap();
        assert_eq!(store.opt_outs.pending().len(), 1);
        assert!(store.opt_outs.changed_at("c-1", "blackListEmail").is_some());
    }
}
