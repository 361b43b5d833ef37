//! Schema drift: the destination fields a workflow writes, with the types they had when the
//! workflow started. A field that has gone or changed type is drift: the workflow stops with
//! the field named instead of writing wrong data or dead-lettering good data.

use std::collections::HashMap;

use crate::connector::{ConnectorError, FieldKind, RecordSink};
use crate::model::System;

use super::prepare::PrepareError;
use super::services::Services;

/// The destination fields one workflow depends on, per (system, table).
#[derive(Debug, Default)]
pub(super) struct DriftGuard {
    expected: HashMap<(System, String), HashMap<String, FieldKind>>,
}

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

fn system_name(system: System) -> &'static str {
    match system {
        System::Dynamics => "Dynamics 365",
        System::Campaign => "Campaign",
    }
}
