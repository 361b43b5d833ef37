//! Schema drift: the destination fields a workflow writes, with the types they had when the
//! workflow started. A field that has gone or changed type is drift: the workflow stops with
//! the field named instead of writing wrong data or dead-lettering good data.
//!
//! Ingress and Opt-in/out know their fields from the config and check them at start. Egress
//! writes whatever activity tables and fields its event-mapper plugin produces, so for it the
//! guard *learns*: the first time a batch writes to a Dynamics 365 table, the table is described
//! and every field the batch writes must exist (a missing one is drift before anything is
//! written); those types are the baseline later failures are checked against.

use std::collections::HashMap;
use std::sync::Mutex;

use conduit_connectors::{ConnectorError, FieldKind, RecordSink};
use conduit_model::{System, Value, WriteRecord};
use conduit_store::QueuedRecord;

use super::services::Services;
use super::stage::PrepareError;

/// The destination fields one workflow depends on, per (system, table).
#[derive(Debug, Default)]
pub(super) struct DriftGuard {
    expected: HashMap<(System, String), HashMap<String, FieldKind>>,
    /// The system whose tables are learned on first write (Egress), with what was learned:
    /// every field of each table as described then.
    learned: Option<(System, Mutex<HashMap<String, Fields>>)>,
}

/// A table's fields and their types.
type Fields = HashMap<String, FieldKind>;

impl DriftGuard {
    /// Describes each destination table and checks that every needed field exists; returns
    /// the guard with the types seen now as the baseline, or the first drift found.
    pub(super) async fn baseline(
        services: &Services,
        needed: &[(System, String, Vec<String>)],
    ) -> Result<DriftGuard, PrepareError> {
        let mut guard = DriftGuard::default();
        for (system, table, fields) in needed {
            let described = describe(services.sink(*system).as_ref(), table)
                .await
                .map_err(|error| {
                    PrepareError::service(&format!("cannot read the metadata of {table}"), &error)
                })?;
            let mut kinds = HashMap::new();
            for field in fields {
                match described.get(field) {
                    Some(kind) => {
                        kinds.insert(field.clone(), kind.clone());
                    }
                    None => {
                        return Err(format!(
                            "schema drift: the field '{field}' of {table} does not exist in {}",
                            system_name(*system)
                        )
                        .into());
                    }
                }
            }
            guard.expected.insert((*system, table.clone()), kinds);
        }
        Ok(guard)
    }

    /// Learns the tables of `system` on first write (see the module doc).
    pub(super) fn learn_on_first_write(&mut self, system: System) {
        self.learned = Some((system, Mutex::new(HashMap::new())));
    }

    /// Before a batch is written: describes each learned system's table the batch writes for
    /// the first time, and returns the drift found if a field written to it does not exist.
    /// A table that cannot be described now is tried again with the next batch.
    pub(super) async fn admit(
        &self,
        services: &Services,
        batch: &[QueuedRecord],
    ) -> Option<String> {
        let (system, learned) = self.learned.as_ref()?;
        let records: Vec<&WriteRecord> = batch.iter().map(|queued| &queued.record).collect();
        let mut new_tables: Vec<&str> = records
            .iter()
            .filter(|r| r.target.system == *system)
            .map(|r| r.target.table.as_str())
            .filter(|table| !lock(learned).contains_key(*table))
            .collect();
        new_tables.sort_unstable();
        new_tables.dedup();
        for table in new_tables {
            let Ok(described) = describe(services.sink(*system).as_ref(), table).await else {
                continue;
            };
            for record in records.iter().filter(|r| r.target.table == table) {
                for (field, value) in &record.fields {
                    if attribute_of(field, value, &described).is_none() {
                        return Some(format!(
                            "the field '{field}' of {table} does not exist in {}",
                            system_name(*system)
                        ));
                    }
                }
            }
            lock(learned).insert(table.to_string(), described);
        }
        None
    }

    /// After a permanent failure of `record`: re-describes its table and returns the drift
    /// found, if any (for a learned table, among the fields the record writes).
    pub(super) async fn check_record(
        &self,
        services: &Services,
        record: &WriteRecord,
    ) -> Option<String> {
        let (system, table) = (record.target.system, record.target.table.as_str());
        if self.expected.contains_key(&(system, table.to_string())) {
            return self.check(services, system, table).await;
        }
        let (learned_system, learned) = self.learned.as_ref()?;
        if *learned_system != system {
            return None;
        }
        let before = lock(learned).get(table).cloned()?;
        let now = describe(services.sink(system).as_ref(), table).await.ok()?;
        for (field, value) in &record.fields {
            let Some((attribute, was)) = attribute_of(field, value, &before) else {
                continue;
            };
            match now.get(attribute) {
                None => {
                    return Some(format!(
                        "the field '{field}' of {table} no longer exists in {}",
                        system_name(system)
                    ));
                }
                Some(kind) if kind != was => {
                    return Some(format!(
                        "the field '{field}' of {table} in {} changed type from {was:?} to {kind:?}",
                        system_name(system)
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Re-describes a destination table and returns the drift found, if any.
    pub(super) async fn check(
        &self,
        services: &Services,
        system: System,
        table: &str,
    ) -> Option<String> {
        let expected = self.expected.get(&(system, table.to_string()))?;
        let described = describe(services.sink(system).as_ref(), table).await.ok()?;
        let mut names: Vec<_> = expected.keys().collect();
        names.sort();
        for name in names {
            let was = &expected[name];
            match described.get(name) {
                None => {
                    return Some(format!(
                        "the field '{name}' of {table} no longer exists in {}",
                        system_name(system)
                    ));
                }
                Some(now) if now != was => {
                    return Some(format!(
                        "the field '{name}' of {table} in {} changed type from {was:?} to {now:?}",
                        system_name(system)
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }
}

async fn describe(
    sink: &dyn RecordSink,
    table: &str,
) -> Result<HashMap<String, FieldKind>, ConnectorError> {
    let fields = sink.describe(table).await?;
    Ok(fields.into_iter().map(|f| (f.name, f.kind)).collect())
}

/// The described attribute a written field sets, with its kind. A reference is written through
/// its navigation property, which Dataverse names after the lookup attribute, with the target
/// table after an underscore for a polymorphic one (`regardingobjectid_contact`).
fn attribute_of<'a>(
    field: &'a str,
    value: &Value,
    described: &'a HashMap<String, FieldKind>,
) -> Option<(&'a str, &'a FieldKind)> {
    if let Some((name, kind)) = described.get_key_value(field) {
        return Some((name.as_str(), kind));
    }
    if !matches!(value, Value::Lookup { .. }) {
        return None;
    }
    described
        .iter()
        .filter(|(name, kind)| {
            **kind == FieldKind::Lookup
                && field
                    .strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with('_'))
        })
        .max_by_key(|(name, _)| name.len())
        .map(|(name, kind)| (name.as_str(), kind))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn system_name(system: System) -> &'static str {
    match system {
        System::Dynamics => "Dynamics 365",
        System::Campaign => "Campaign",
    }
}
