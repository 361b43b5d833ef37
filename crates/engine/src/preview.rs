//! `conduit preview`: what a restart would do to the data. For each Ingress table mapping it
//! reads a sample of current source rows through the Dynamics 365 connector, maps them with
//! the mapping the running workflow started with (its config, and the plugin build it loaded
//! then, kept while it runs) and with the one in the config file now (the pending edit, and the
//! plugin as it is on disk: a replaced .wasm shows as the fields it changes), and reports per
//! record the destination
//! fields whose written value would change, the records newly filtered out, deleted or
//! dead-lettered, and the pending plugin's errors. It writes nothing, anywhere.
//!
//! Both sides are mapped as a replay maps (every field written): after the restart, a record
//! is written with the new values at its next change, or at once by a replay.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use conduit_config::{Config, MappingSpec};
use conduit_connectors::ChangeRequest;
use conduit_model::{Operation, Outcome, Phase, RecordBatch, Value, WorkflowId};

use super::reader::on_plugin_thread;
use super::services::{PluginBuild, RecordMapping};
use super::verify::{SourcePages, VerifyError, step_reason};
use super::workflows::{Ingress, load, load_in_force, map_rows_isolated};
use super::{EngineError, Supervisor};

/// Source records a preview reads per mapping when not told.
pub const DEFAULT_LIMIT: u32 = 100;

/// What to preview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewOptions {
    /// Only this table mapping; all of them when `None`.
    #[serde(default)]
    pub mapping: Option<String>,
    /// Source records read per mapping ([`DEFAULT_LIMIT`] when `None`).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One destination field whose written value would change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The destination field.
    pub field: String,
    /// What the mapping in force writes (`null`: the field is not written).
    pub before: serde_json::Value,
    /// What the pending mapping would write (`null`: the field is no longer written).
    pub after: serde_json::Value,
}

/// What a restart would change for one source record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordChange {
    /// The source record's key (the destination key, for Ingress).
    pub key: String,
    /// `fields` (written with other values), `filtered` (newly filtered out), `deleted`
    /// (newly deleted), `rejected` (newly dead-lettered) or `written` (newly written).
    pub change: String,
    /// The fields whose written value would change (for `fields` and `written`).
    pub fields: Vec<FieldChange>,
    /// The plugin's reason, for `filtered` and `rejected`.
    pub reason: Option<String>,
}

/// The preview of one table mapping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MappingPreview {
    /// The table mapping's name.
    pub mapping: String,
    /// `changed`, `unchanged`, `new` (only in the file) or `removed` (only in force).
    pub status: String,
    /// Source records read.
    pub records_read: u64,
    /// Records a restart would write differently, in source order.
    pub records: Vec<RecordChange>,
    /// Records read that would be written as now.
    pub unchanged: u64,
    /// Why the pending plugin cannot be used (it does not load, or refuses its settings).
    pub pending_error: Option<String>,
}

/// The answer of a preview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewReport {
    /// The workflow previewed.
    pub workflow: WorkflowId,
    /// True when the config file differs from what the workflow runs with.
    pub pending: bool,
    /// One preview per table mapping.
    pub mappings: Vec<MappingPreview>,
    /// What the numbers mean here.
    pub notes: Vec<String>,
}

/// The two sides a preview maps with.
struct Sides<'a> {
    /// The config the running workflow started with.
    in_force: &'a Config,
    /// The plugin build it started with.
    build: Option<Arc<dyn PluginBuild>>,
    /// The config file as it is now.
    pending: &'a Config,
    /// True when the plugin file on disk is not the build in force.
    plugin_replaced: bool,
}

impl Supervisor {
    /// Previews what restarting workflow `id` (Ingress) with the config file as it is now
    /// would change, on a sample of source records. Writes nothing.
    pub async fn preview(
        &self,
        id: WorkflowId,
        options: &PreviewOptions,
    ) -> Result<PreviewReport, VerifyError> {
        if id != WorkflowId::Ingress {
            return Err(VerifyError::Unsupported(id));
        }
        let pending = self.load_config()?;
        let Some((in_force, build)) = self.in_force(id) else {
            return Err(VerifyError::NotRunning(id));
        };
        // The plugin file as it is now, against the build the workflow started with.
        let plugin_now = pending
            .plugin(id)
            .and_then(|plugin| self.inner.env.plugins.current_fingerprint(plugin));
        let plugin_replaced = match (&build, &plugin_now) {
            (Some(build), Some(now)) => build.fingerprint() != now,
            _ => false,
        };
        let limit = options.limit.unwrap_or(DEFAULT_LIMIT).max(1);
        let before = in_force
            .ingress()
            .map(|s| s.mappings.clone())
            .unwrap_or_default();
        let after = pending
            .ingress()
            .map(|s| s.mappings.clone())
            .unwrap_or_default();
        let mut names: Vec<String> = before.iter().map(|m| m.name.clone()).collect();
        for mapping in &after {
            if !names.contains(&mapping.name) {
                names.push(mapping.name.clone());
            }
        }
        if let Some(name) = &options.mapping {
            if !names.contains(name) {
                return Err(EngineError::UnknownMapping {
                    name: name.clone(),
                    known: names,
                }
                .into());
            }
            names.retain(|n| n == name);
        }
        let services = self
            .inner
            .env
            .connect
            .connect(&pending)
            .map_err(EngineError::from)?;
        let mut previews = Vec::new();
        for name in names {
            let old = before.iter().find(|m| m.name == name);
            let new = after.iter().find(|m| m.name == name);
            let preview = match (old, new) {
                (Some(old), Some(new)) => {
                    let sides = Sides {
                        in_force: &in_force,
                        build: build.clone(),
                        pending: &pending,
                        plugin_replaced,
                    };
                    self.preview_mapping(&sides, &services, old, new, limit)
                        .await?
                }
                (None, _) => MappingPreview {
                    mapping: name,
                    status: "new".into(),
                    ..MappingPreview::default()
                },
                (_, None) => MappingPreview {
                    mapping: name,
                    status: "removed".into(),
                    ..MappingPreview::default()
                },
            };
            previews.push(preview);
        }
        let is_pending = plugin_replaced
            || in_force.workflow_fingerprint(id) != pending.workflow_fingerprint(id);
        let mut notes = vec![format!(
            "the first {limit} source record(s) of each mapping, each mapped as a replay maps it: a changed record is written with the new values at its next change, or at once by a replay"
        )];
        if plugin_replaced {
            notes.push(
                "the plugin file was replaced on disk since the start: the mapping in force maps with the build the workflow started with, the pending one with the file as it is now"
                    .into(),
            );
        }
        Ok(PreviewReport {
            workflow: id,
            pending: is_pending,
            mappings: previews,
            notes,
        })
    }

    async fn preview_mapping(
        &self,
        sides: &Sides<'_>,
        services: &super::Services,
        old: &MappingSpec,
        new: &MappingSpec,
        limit: u32,
    ) -> Result<MappingPreview, VerifyError> {
        let changed = old != new || sides.plugin_replaced;
        let mut preview = MappingPreview {
            mapping: new.name.clone(),
            status: if changed { "changed" } else { "unchanged" }.into(),
            ..MappingPreview::default()
        };
        let plugin = load_in_force::<Ingress>(
            &self.inner.env,
            sides.in_force,
            old.plugin_settings(),
            sides.build.clone(),
        )
        .await
        .map_err(|reason| VerifyError::Load {
            mapping: old.name.clone(),
            reason,
        })?;
        let mut before = Some(plugin);
        let mut after =
            match load::<Ingress>(&self.inner.env, sides.pending, new.plugin_settings()).await {
                Ok(loaded) => Some(loaded.plugin),
                Err(reason) => {
                    preview.pending_error = Some(reason);
                    return Ok(preview);
                }
            };
        // Both mappings' columns, so that a field only one of them maps is read too.
        let mut columns = old.source_columns();
        for column in new.source_columns() {
            if !columns.contains(&column) {
                columns.push(column);
            }
        }
        let request = ChangeRequest {
            table: new.source.clone(),
            columns,
            page_size: limit.min(sides.in_force.pacing(WorkflowId::Ingress).page_size.max(1)),
        };
        let mut pages = SourcePages::new(services, request, Some(limit));
        while let Some(batch) = pages.next().await? {
            preview.records_read += batch.rows.len() as u64;
            if batch.rows.is_empty() {
                continue;
            }
            let (batch, was) = map_sample(&mut before, &old.name, batch).await?;
            let (_, will) = map_sample(&mut after, &new.name, batch.clone()).await?;
            for ((row, was), will) in batch.rows.iter().zip(was).zip(will) {
                match compare(&row.key, was, will) {
                    Some(change) => preview.records.push(change),
                    None => preview.unchanged += 1,
                }
            }
        }
        Ok(preview)
    }
}

/// Maps a sample as a replay would, on a plugin thread.
async fn map_sample(
    mapper: &mut Option<Box<dyn RecordMapping>>,
    mapping: &str,
    batch: RecordBatch,
) -> Result<(RecordBatch, Vec<Result<Outcome, String>>), VerifyError> {
    on_plugin_thread(
        mapper,
        "mapper",
        WorkflowId::Ingress,
        batch,
        |mapper, batch| map_rows_isolated(mapper.as_mut(), Phase::Replay, batch).results,
    )
    .await
    .map_err(|error| VerifyError::Plugin {
        mapping: mapping.to_owned(),
        reason: step_reason(error),
    })
}

/// What one record's outcome before and after says a restart changes, if anything.
fn compare(
    key: &str,
    was: Result<Outcome, String>,
    will: Result<Outcome, String>,
) -> Option<RecordChange> {
    let change = |kind: &str, fields: Vec<FieldChange>, reason: Option<String>| RecordChange {
        key: key.to_owned(),
        change: kind.to_owned(),
        fields,
        reason,
    };
    let rejected = |outcome: &Result<Outcome, String>| match outcome {
        Ok(Outcome::Reject { reason }) | Err(reason) => Some(reason.clone()),
        _ => None,
    };
    let written = |outcome: &Result<Outcome, String>| match outcome {
        Ok(Outcome::Write { records }) => {
            let deletes = records.iter().any(|r| r.op == Operation::Delete);
            let fields: HashMap<String, Value> = records
                .iter()
                .filter(|r| r.op != Operation::Delete)
                .flat_map(|r| r.fields.iter().cloned())
                .collect();
            Some((deletes, fields))
        }
        _ => None,
    };
    if let Some(reason) = rejected(&will) {
        return rejected(&was)
            .is_none()
            .then(|| change("rejected", Vec::new(), Some(reason)));
    }
    match (written(&was), written(&will)) {
        (Some((false, _)) | None, Some((true, _))) => Some(change("deleted", Vec::new(), None)),
        (Some((false, _)), None) => {
            let reason = match will {
                Ok(Outcome::Skip { reason }) => Some(reason),
                _ => None,
            };
            Some(change("filtered", Vec::new(), reason))
        }
        (None, Some((false, fields))) => {
            let fields = field_changes(&HashMap::new(), &fields);
            Some(change("written", fields, None))
        }
        (Some((false, before)), Some((false, after))) => {
            let fields = field_changes(&before, &after);
            (!fields.is_empty()).then(|| change("fields", fields, None))
        }
        _ => None,
    }
}

/// The fields whose written value differs, sorted by name.
fn field_changes(
    before: &HashMap<String, Value>,
    after: &HashMap<String, Value>,
) -> Vec<FieldChange> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| before.get(*name) != after.get(*name))
        .map(|name| FieldChange {
            field: name.clone(),
            before: before.get(name).map_or(serde_json::Value::Null, plain),
            after: after.get(name).map_or(serde_json::Value::Null, plain),
        })
        .collect()
}

/// A value as people read it: text as text, numbers as numbers, a picklist as its label (or
/// its number), a lookup as its id.
pub fn plain(value: &Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        Value::Null => Json::Null,
        Value::Boolean(flag) => Json::Bool(*flag),
        Value::Integer(number) => Json::from(*number),
        Value::Decimal(number) => {
            serde_json::Number::from_f64(*number).map_or(Json::Null, Json::Number)
        }
        Value::Text(text) | Value::Datetime(text) | Value::Guid(text) => Json::String(text.clone()),
        Value::Picklist { value, label } => label
            .clone()
            .map_or_else(|| Json::from(*value), Json::String),
        Value::Lookup { id, .. } => Json::String(id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_model::{System, Target, WriteRecord};

    fn upsert(fields: &[(&str, &str)]) -> Result<Outcome, String> {
        Ok(Outcome::Write {
            records: vec![WriteRecord {
                target: Target {
                    system: System::Campaign,
                    table: "profile".into(),
                    key_field: "externalId".into(),
                },
                key: "c-1".into(),
                op: Operation::Upsert,
                fields: fields
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), Value::Text((*v).to_owned())))
                    .collect(),
            }],
        })
    }

    #[test]
    fn each_kind_of_change_is_told_apart() {
        let same = compare(
            "c-1",
            upsert(&[("lastName", "Lee")]),
            upsert(&[("lastName", "Lee")]),
        );
        assert_eq!(same, None);
        let renamed = compare(
            "c-1",
            upsert(&[("lastName", "Lee")]),
            upsert(&[("lastName", "Li")]),
        )
        .unwrap();
        assert_eq!(renamed.change, "fields");
        assert_eq!(
            renamed.fields,
            [FieldChange {
                field: "lastName".into(),
                before: "Lee".into(),
                after: "Li".into()
            }]
        );
        let filtered = compare(
            "c-1",
            upsert(&[("lastName", "Lee")]),
            Ok(Outcome::Skip {
                reason: "filtered out by firstname ne Ann".into(),
            }),
        )
        .unwrap();
        assert_eq!(filtered.change, "filtered");
        assert_eq!(
            filtered.reason.as_deref(),
            Some("filtered out by firstname ne Ann")
        );
        let rejected = compare("c-1", upsert(&[]), Err("trap".into())).unwrap();
        assert_eq!(
            (rejected.change.as_str(), rejected.reason.as_deref()),
            ("rejected", Some("trap"))
        );
        assert_eq!(compare("c-1", Err("trap".into()), Err("trap".into())), None);
        let written = compare(
            "c-1",
            Ok(Outcome::Skip { reason: "x".into() }),
            upsert(&[("firstName", "Ann")]),
        )
        .unwrap();
        assert_eq!(written.change, "written");
        assert_eq!(written.fields[0].before, serde_json::Value::Null);
    }
}
