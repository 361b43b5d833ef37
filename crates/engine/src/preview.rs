//! `conduit preview`: what a restart would do to the data. It reads a sample of what the
//! workflow reads, through the connectors and from the start (never the workflow's cursor),
//! maps it with what the running workflow started with (its config, and the plugin build it
//! loaded then, kept while it runs) and with what is in the files now (the pending edit, and
//! the plugin as it is on disk: a replaced .wasm shows as what it changes), and reports per
//! record what would be written differently, and the pending plugin's errors. It writes
//! nothing, anywhere.
//!
//! - Ingress: per table mapping, the first source rows, mapped as a replay maps them (every
//!   field written): after the restart, a record is written with the new values at its next
//!   change, or at once by a replay. Per record: the destination fields whose written value
//!   changes, and the records newly filtered out, deleted or dead-lettered.
//! - Egress: the first events of Campaign's journal (read as `verify egress` reads it) through
//!   the event mapper: activity fields that change, events newly skipped (e.g. a kind switched
//!   off) or newly mapped, events the pending mapper rejects.
//! - Opt-in/out: the first contacts' flags and what their profiles hold (read as `verify
//!   optinout` reads them), resolved with the direction, pairs and resolver of each side: per
//!   contact, each flag either side's rule would write (named by system and attribute, as
//!   verify names it), and contacts the pending resolver rejects.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use conduit_config::{Config, MappingSpec};
use conduit_connectors::ChangeRequest;
use conduit_model::{ContactOptOut, Operation, Outcome, Phase, RecordBatch, Value, WorkflowId};

use super::reader::on_plugin_thread;
use super::services::{PluginBuild, RecordMapping};
use super::verify::{SourcePages, VerifyError, step_reason};
use super::verify_egress::{EVENTS, JournalPages, map_events};
use super::verify_opt_outs::{
    PAIRS, contact_of, flag_writes, read_campaign_flags, resolve_contacts,
};
use super::workflows::opt_in_out::flags_of;
use super::workflows::{
    Egress, Ingress, OptInOut, Workflow, load, load_in_force, map_rows_isolated,
};
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

/// The two plugins a preview compares, or why only its status can be told.
enum Both<P> {
    /// The preview so far, the plugin in force and the pending one.
    Loaded(MappingPreview, P, P),
    /// The pending plugin does not load: the preview with its error.
    PendingFails(MappingPreview),
}

impl Supervisor {
    /// Previews what restarting workflow `id` with the config file (and plugin file) as it is
    /// now would change, on a sample of source records. Writes nothing.
    pub async fn preview(
        &self,
        id: WorkflowId,
        options: &PreviewOptions,
    ) -> Result<PreviewReport, VerifyError> {
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
        let services = self
            .inner
            .env
            .connect
            .connect(&pending)
            .map_err(EngineError::from)?;
        let sides = Sides {
            in_force: &in_force,
            build,
            pending: &pending,
            plugin_replaced,
        };
        let (mappings, sample_note) = match id {
            WorkflowId::Ingress => (
                self.preview_ingress(&sides, &services, options, limit)
                    .await?,
                format!(
                    "the first {limit} source record(s) of each mapping, each mapped as a replay maps it: a changed record is written with the new values at its next change, or at once by a replay"
                ),
            ),
            WorkflowId::Egress => {
                only_name(options, EVENTS)?;
                (
                    vec![self.preview_egress(&sides, &services, limit).await?],
                    format!(
                        "the first {limit} event(s) of the journal, from its oldest retained one, each mapped as if read now: events read after the restart are mapped this way; activities already written stay as they are (`conduit verify egress --repair` maps them again)"
                    ),
                )
            }
            WorkflowId::OptInOut => {
                only_name(options, PAIRS)?;
                (
                    vec![self.preview_opt_outs(&sides, &services, limit).await?],
                    format!(
                        "the first {limit} contact(s), resolved with the flags both sides hold now (Campaign's without change times, as verify does); a flag lists what each rule writes (null: nothing): a contact is resolved with the pending rule at its next change"
                    ),
                )
            }
        };
        let is_pending = plugin_replaced
            || in_force.workflow_fingerprint(id) != pending.workflow_fingerprint(id);
        let mut notes = vec![sample_note];
        if plugin_replaced {
            notes.push(
                "the plugin file was replaced on disk since the start: the side in force maps with the build the workflow started with, the pending one with the file as it is now"
                    .into(),
            );
        }
        Ok(PreviewReport {
            workflow: id,
            pending: is_pending,
            mappings,
            notes,
        })
    }

    /// Ingress: each table mapping in force or in the file.
    async fn preview_ingress(
        &self,
        sides: &Sides<'_>,
        services: &super::Services,
        options: &PreviewOptions,
        limit: u32,
    ) -> Result<Vec<MappingPreview>, VerifyError> {
        let before = sides
            .in_force
            .ingress()
            .map(|s| s.mappings.clone())
            .unwrap_or_default();
        let after = sides
            .pending
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
        let mut previews = Vec::new();
        for name in names {
            let old = before.iter().find(|m| m.name == name);
            let new = after.iter().find(|m| m.name == name);
            let preview = match (old, new) {
                (Some(old), Some(new)) => {
                    self.preview_mapping(sides, services, old, new, limit)
                        .await?
                }
                (None, _) => status_only(name, "new"),
                (_, None) => status_only(name, "removed"),
            };
            previews.push(preview);
        }
        Ok(previews)
    }

    /// The plugin in force and the pending one of `W` for the preview `name`, with the
    /// preview's status; or only the status and the pending plugin's error when it does not
    /// load. `changed`: the workflow's settings differ (a replaced `.wasm` counts too).
    async fn both_plugins<W: Workflow>(
        &self,
        sides: &Sides<'_>,
        name: &str,
        changed: bool,
        in_force: serde_json::Value,
        pending: serde_json::Value,
    ) -> Result<Both<W::Plugin>, VerifyError> {
        let changed = changed || sides.plugin_replaced;
        let mut preview = status_only(name.into(), if changed { "changed" } else { "unchanged" });
        let before = load_in_force::<W>(
            &self.inner.env,
            sides.in_force,
            in_force,
            sides.build.clone(),
        )
        .await
        .map_err(|reason| VerifyError::Load {
            mapping: name.into(),
            reason,
        })?;
        match load::<W>(&self.inner.env, sides.pending, pending).await {
            Ok(loaded) => Ok(Both::Loaded(preview, before, loaded.plugin)),
            Err(reason) => {
                preview.pending_error = Some(reason);
                Ok(Both::PendingFails(preview))
            }
        }
    }

    /// Egress: the journal's first events through the event mapper in force and the pending
    /// one (whose event switches are among its settings).
    async fn preview_egress(
        &self,
        sides: &Sides<'_>,
        services: &super::Services,
        limit: u32,
    ) -> Result<MappingPreview, VerifyError> {
        let id = WorkflowId::Egress;
        let old = sides
            .in_force
            .egress()
            .ok_or(EngineError::NotConfigured(id))?;
        let Some(new) = sides.pending.egress() else {
            return Ok(status_only(EVENTS.into(), "removed"));
        };
        let (mut preview, mut before, mut after) = match self
            .both_plugins::<Egress>(
                sides,
                EVENTS,
                old != new,
                old.plugin_settings(),
                new.plugin_settings(),
            )
            .await?
        {
            Both::Loaded(preview, before, after) => (preview, Some(before), Some(after)),
            Both::PendingFails(preview) => return Ok(preview),
        };
        let page_size = limit.min(sides.in_force.pacing(id).page_size.max(1));
        let mut pages = JournalPages::new(services, page_size, Some(limit));
        while let Some(events) = pages.next().await? {
            preview.records_read += events.len() as u64;
            let (events, was) = map_events(&mut before, events).await?;
            let (events, will) = map_events(&mut after, events).await?;
            for ((event, was), will) in events.iter().zip(was).zip(will) {
                match compare(&event.id, was, will) {
                    Some(change) => preview.records.push(change),
                    None => preview.unchanged += 1,
                }
            }
        }
        Ok(preview)
    }

    /// Opt-in/out: the first contacts' flags, resolved with the direction, pairs and resolver
    /// in force and with the pending ones, against what both sides hold now.
    async fn preview_opt_outs(
        &self,
        sides: &Sides<'_>,
        services: &super::Services,
        limit: u32,
    ) -> Result<MappingPreview, VerifyError> {
        let id = WorkflowId::OptInOut;
        let old = sides
            .in_force
            .optinout()
            .ok_or(EngineError::NotConfigured(id))?;
        let Some(new) = sides.pending.optinout() else {
            return Ok(status_only(PAIRS.into(), "removed"));
        };
        let (mut preview, mut before, mut after) = match self
            .both_plugins::<OptInOut>(
                sides,
                PAIRS,
                old != new,
                old.plugin_settings(),
                new.plugin_settings(),
            )
            .await?
        {
            Both::Loaded(preview, before, after) => (preview, Some(before), Some(after)),
            Both::PendingFails(preview) => return Ok(preview),
        };
        // Both sides' pairs, so that a flag only one of them pairs is read too.
        let mut columns: Vec<String> = Vec::new();
        let mut attributes: Vec<String> = Vec::new();
        for pair in old.pairs.iter().chain(&new.pairs) {
            if !columns.contains(&pair.dynamics) {
                columns.push(pair.dynamics.clone());
            }
            if !attributes.contains(&pair.campaign) {
                attributes.push(pair.campaign.clone());
            }
        }
        if columns.is_empty() {
            return Ok(preview);
        }
        columns.push("modifiedon".into());
        let request = ChangeRequest {
            table: "contact".into(),
            columns,
            page_size: limit.min(sides.in_force.pacing(id).page_size.max(1)),
        };
        let mut dynamics = Vec::new();
        let mut pages = SourcePages::new(services, request, Some(limit));
        while let Some(batch) = pages.next().await? {
            for row in &batch.rows {
                let values = flags_of(&batch.columns, &row.values, row.modified_at.as_ref());
                dynamics.push((row.key.clone(), values));
            }
        }
        preview.records_read = dynamics.len() as u64;
        let campaign = read_campaign_flags(services, &attributes, &mut |_| {}).await?;
        // A contact without a profile is Ingress's to create: no flag of it is written.
        let contacts: Vec<ContactOptOut> = dynamics
            .iter()
            .filter_map(|(key, values)| campaign.get(key).map(|held| contact_of(key, values, held)))
            .collect();
        preview.unchanged = preview.records_read - contacts.len() as u64;
        if contacts.is_empty() {
            return Ok(preview);
        }
        let (contacts, was) = resolve_contacts(&mut before, contacts).await?;
        let (contacts, will) = resolve_contacts(&mut after, contacts).await?;
        for ((contact, was), will) in contacts.iter().zip(was).zip(will) {
            match compare_flags(contact, was, will) {
                Some(change) => preview.records.push(change),
                None => preview.unchanged += 1,
            }
        }
        Ok(preview)
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

/// A preview of a part that is only on one side, or that was not mapped.
fn status_only(mapping: String, status: &str) -> MappingPreview {
    MappingPreview {
        mapping,
        status: status.into(),
        ..MappingPreview::default()
    }
}

/// Refuses `--mapping` naming anything but the workflow's one part.
fn only_name(options: &PreviewOptions, name: &str) -> Result<(), VerifyError> {
    match &options.mapping {
        Some(asked) if asked != name => Err(EngineError::UnknownMapping {
            name: asked.clone(),
            known: vec![name.to_owned()],
        }
        .into()),
        _ => Ok(()),
    }
}

/// What one contact's resolution before and after says a restart changes, if anything: each
/// flag either rule would write where the side holds another value, with what each writes.
fn compare_flags(
    contact: &ContactOptOut,
    was: Result<Outcome, String>,
    will: Result<Outcome, String>,
) -> Option<RecordChange> {
    let flags = |outcome: &Result<Outcome, String>| -> Result<HashMap<String, bool>, String> {
        match outcome {
            Ok(Outcome::Write { records }) => Ok(flag_writes(contact, records)
                .into_iter()
                .map(|flag| (flag.field, flag.want))
                .collect()),
            Ok(Outcome::Skip { .. }) => Ok(HashMap::new()),
            Ok(Outcome::Reject { reason }) | Err(reason) => Err(reason.clone()),
        }
    };
    let key = contact.contact_key.clone();
    let (before, after) = match (flags(&was), flags(&will)) {
        (Err(_), Err(_)) => return None,
        (Ok(_), Err(reason)) => {
            return Some(RecordChange {
                key,
                change: "rejected".into(),
                fields: Vec::new(),
                reason: Some(reason),
            });
        }
        (Err(_), Ok(after)) => (HashMap::new(), after),
        (Ok(before), Ok(after)) => (before, after),
    };
    let as_values = |flags: HashMap<String, bool>| -> HashMap<String, Value> {
        flags
            .into_iter()
            .map(|(field, flag)| (field, Value::Boolean(flag)))
            .collect()
    };
    let fields = field_changes(&as_values(before), &as_values(after));
    (!fields.is_empty()).then(|| RecordChange {
        key,
        change: "fields".into(),
        fields,
        reason: None,
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

    fn flag_update(system: System, field: &str, flag: bool) -> WriteRecord {
        WriteRecord {
            target: Target {
                system,
                table: "t".into(),
                key_field: "k".into(),
            },
            key: "c-1".into(),
            op: Operation::Update,
            fields: vec![(field.into(), Value::Boolean(flag))],
        }
    }

    #[test]
    fn flags_are_compared_by_what_each_rule_writes() {
        use conduit_model::OptOutValue;
        let value = |attribute: &str, value: bool| OptOutValue {
            attribute: attribute.into(),
            value,
            changed_at: None,
        };
        let contact = ContactOptOut {
            contact_key: "c-1".into(),
            dynamics: vec![value("donotbulkemail", false)],
            campaign: vec![value("blackListEmail", true)],
        };
        let writes = |records: Vec<WriteRecord>| Ok(Outcome::Write { records });
        let to_dynamics = writes(vec![flag_update(System::Dynamics, "donotbulkemail", true)]);
        let to_campaign = writes(vec![flag_update(System::Campaign, "blackListEmail", false)]);
        let change = compare_flags(&contact, to_dynamics.clone(), to_campaign).unwrap();
        assert_eq!(change.change, "fields");
        assert_eq!(
            change.fields,
            [
                FieldChange {
                    field: "campaign blackListEmail".into(),
                    before: serde_json::Value::Null,
                    after: false.into(),
                },
                FieldChange {
                    field: "dynamics donotbulkemail".into(),
                    before: true.into(),
                    after: serde_json::Value::Null,
                },
            ]
        );
        assert_eq!(
            compare_flags(&contact, to_dynamics.clone(), to_dynamics.clone()),
            None
        );
        // A write of the value the side already holds changes nothing.
        let held = writes(vec![flag_update(System::Campaign, "blackListEmail", true)]);
        let skip = Ok(Outcome::Skip { reason: "x".into() });
        assert_eq!(compare_flags(&contact, skip, held), None);
        let rejected = compare_flags(&contact, to_dynamics, Err("bad time".into())).unwrap();
        assert_eq!(
            (rejected.change.as_str(), rejected.reason.as_deref()),
            ("rejected", Some("bad time"))
        );
    }
}
