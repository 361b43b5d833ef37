//! What operators see of the workflows: status and reason, backlog, counters, rates and ETA,
//! cursor ages, pending replays, and whether (and what) config changes wait for a restart.
//! The views are `Serialize + Deserialize`: the admin API sends them and the CLI reads them
//! back into the same types (`conduit_admin::views` lists every answer of the API).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::lifecycle::StatusKind;
use super::workflows::opt_in_out::OPT_OUT_REREAD;
use super::{Supervisor, lock};
use conduit_config::{Config, Problem};
use conduit_model::{Phase, WorkflowId};
use conduit_store::{Counters, StoreError};

/// One workflow as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowView {
    /// `ingress`, `egress` or `optinout`.
    pub id: WorkflowId,
    /// The display name.
    pub name: String,
    /// `STOPPED`, `STARTING`, `RUNNING` or `ERROR`.
    pub status: StatusKind,
    /// The reason of an ERROR.
    pub reason: Option<String>,
    /// A transient problem a running workflow is retrying through.
    pub warning: Option<String>,
    /// Writes waiting for their record to be created, with one of their reasons.
    pub waiting: Option<String>,
    /// Records read and queued, not yet written.
    pub backlog: u64,
    /// All-time counters.
    pub counters: Counters,
    /// Records read per second, recently.
    pub read_rate: f64,
    /// Records written per second, recently.
    pub write_rate: f64,
    /// Seconds until the backlog is written at the current rate.
    pub eta_seconds: Option<f64>,
    /// True when the config or plugin on disk differs from what the workflow started with.
    pub pending_changes: bool,
    /// What changed, briefly.
    pub pending_summary: Vec<String>,
    /// Replays accepted and waiting for the next start.
    pub pending_replays: Vec<String>,
    /// Where each source's reader is.
    pub cursors: Vec<CursorView>,
    /// The plugin, as configured.
    pub plugin: Option<String>,
    /// Whether the config has a section for this workflow.
    pub configured: bool,
}

/// One source cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CursorView {
    /// The source (mapping name, `events`, ...).
    pub source: String,
    /// Its phase.
    pub phase: Phase,
    /// Seconds since it last moved.
    pub age_seconds: f64,
}

/// The whole host as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    /// The three workflows.
    pub workflows: Vec<WorkflowView>,
    /// Problems of the config on disk (an invalid edit), empty when valid.
    pub config_problems: Vec<Problem>,
}

/// One Ingress table mapping and whether it can be replayed now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MappingView {
    /// The mapping's name.
    pub name: String,
    /// The Dynamics 365 table.
    pub source: String,
    /// The Campaign resource.
    pub destination: String,
    /// A replay was accepted and waits for the next start.
    pub replay_pending: bool,
    /// Why a replay would be refused now (the backlog guard), if it would.
    pub replay_blocked: Option<String>,
}

/// Turns counter samples into rates.
#[derive(Debug, Default)]
pub(super) struct RateMeter {
    last: Option<(Instant, u64, u64)>,
    read_rate: f64,
    write_rate: f64,
}

impl RateMeter {
    fn sample(&mut self, counters: &Counters) -> (f64, f64) {
        let now = Instant::now();
        match self.last {
            Some((at, read, written)) => {
                let elapsed = now.duration_since(at).as_secs_f64();
                if elapsed >= 1.0 {
                    let read_now = counters.read.saturating_sub(read) as f64 / elapsed;
                    let written_now = counters.written.saturating_sub(written) as f64 / elapsed;
                    // Smooth over a few samples so the ETA does not jump.
                    self.read_rate = 0.5 * self.read_rate + 0.5 * read_now;
                    self.write_rate = 0.5 * self.write_rate + 0.5 * written_now;
                    self.last = Some((now, counters.read, counters.written));
                }
            }
            None => self.last = Some((now, counters.read, counters.written)),
        }
        (self.read_rate, self.write_rate)
    }
}

impl Supervisor {
    /// The host's workflows and config problems.
    pub fn view(&self) -> Result<HostView, StoreError> {
        let problems = self.refresh_config();
        let workflows = WorkflowId::ALL
            .into_iter()
            .map(|id| self.workflow_view(id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HostView {
            workflows,
            config_problems: problems,
        })
    }

    /// The Ingress table mappings of the latest valid config, with their replay state.
    pub fn mapping_views(&self) -> Result<Vec<MappingView>, StoreError> {
        let Some(config) = lock(&self.inner.watch).latest_valid.clone() else {
            return Ok(Vec::new());
        };
        let record = self.store().workflow(WorkflowId::Ingress)?;
        let backlog = self.store().backlog(WorkflowId::Ingress)?;
        let limit = self
            .running_config(WorkflowId::Ingress)
            .unwrap_or_else(|| config.clone())
            .limits(WorkflowId::Ingress)
            .replay_max_rows;
        let blocked = (backlog >= limit).then(|| {
            format!("Refused: the backlog holds {backlog} records (the limit is {limit})")
        });
        Ok(config
            .ingress()
            .iter()
            .flat_map(|section| section.mappings.iter())
            .map(|mapping| MappingView {
                name: mapping.name.clone(),
                source: mapping.source.clone(),
                destination: mapping.destination.clone(),
                replay_pending: record.pending_replays.contains(&mapping.name),
                replay_blocked: blocked.clone(),
            })
            .collect())
    }

    /// One workflow.
    pub fn workflow_view(&self, id: WorkflowId) -> Result<WorkflowView, StoreError> {
        let store = self.store();
        let counters = store.counters(id)?;
        let record = store.workflow(id)?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let cursors = store
            .cursors(id)?
            .into_iter()
            .map(|(source, cursor)| CursorView {
                source,
                phase: cursor.phase,
                age_seconds: (now_ms - cursor.updated_at_ms).max(0) as f64 / 1000.0,
            })
            .collect();
        let latest = lock(&self.inner.watch).latest_valid.clone();
        let mut slots = lock(&self.inner.slots);
        let slot = super::slot_mut(&mut slots, id);
        let status = slot.live.status();
        let (read_rate, write_rate) = slot.rate.sample(&counters);
        let pending_summary = match (&slot.snapshot, &latest) {
            (Some(snapshot), Some(latest)) => {
                let mut summary = diff_sections(
                    snapshot.config.workflow_section_json(id),
                    latest.workflow_section_json(id),
                    id.as_str(),
                );
                if id == WorkflowId::Ingress {
                    summary.extend(ingress_notes(&snapshot.config, latest));
                }
                if snapshot.config.workflow_fingerprint(id) != latest.workflow_fingerprint(id)
                    && summary.is_empty()
                {
                    summary.push("connection or limit settings changed".into());
                }
                if let Some(plugin) = latest.plugin(id)
                    && let Some(now) = self.inner.env.plugins.current_fingerprint(plugin)
                    && now != snapshot.plugin_fingerprint
                    && !snapshot.plugin_fingerprint.is_empty()
                {
                    summary.push(format!("plugin {plugin} changed on disk"));
                }
                summary
            }
            _ => Vec::new(),
        };
        // Records waiting to be read again (under a changed mapping, or for a repair) are
        // still to be written. The re-read list holds both workflows' keys, Opt-in/out's
        // under its own owner name.
        let rereads = match id {
            WorkflowId::Ingress => store
                .reread_count()?
                .saturating_sub(store.reread_count_of(OPT_OUT_REREAD)?),
            WorkflowId::OptInOut => store.reread_count_of(OPT_OUT_REREAD)?,
            _ => 0,
        };
        let backlog = counters.queued + rereads;
        Ok(WorkflowView {
            id,
            name: id.display_name().to_string(),
            status: status.kind(),
            reason: status.reason().map(str::to_string),
            warning: slot.live.warning(),
            waiting: slot.live.waiting(),
            backlog,
            counters,
            read_rate,
            write_rate,
            eta_seconds: (backlog > 0 && write_rate > 0.0).then(|| backlog as f64 / write_rate),
            pending_changes: !pending_summary.is_empty(),
            pending_summary,
            pending_replays: record.pending_replays,
            cursors,
            plugin: latest
                .as_ref()
                .and_then(|c| c.plugin(id).map(str::to_string)),
            configured: latest.as_ref().is_some_and(|c| c.has_workflow(id)),
        })
    }
}

/// Says what a restart with an edited Ingress will do with each table mapping's columns: an
/// added source field is read from the next change on (a replay backfills it), a removed one
/// is no longer read, a new mapping reads its table in full.
fn ingress_notes(running: &Config, edited: &Config) -> Vec<String> {
    let mappings = |config: &Config| {
        config
            .ingress()
            .iter()
            .flat_map(|section| section.mappings.iter())
            .map(|mapping| (mapping.name.clone(), mapping.source_columns()))
            .collect::<Vec<_>>()
    };
    let before = mappings(running);
    let mut notes = Vec::new();
    for (name, columns) in mappings(edited) {
        let Some((_, old)) = before.iter().find(|(old_name, _)| *old_name == name) else {
            notes.push(format!(
                "new mapping '{name}': its table is read in full at the next start"
            ));
            continue;
        };
        for added in columns.iter().filter(|column| !old.contains(column)) {
            notes.push(format!(
                "mapping '{name}': new field {added}: following changes carry it; replay to backfill"
            ));
        }
        for removed in old.iter().filter(|column| !columns.contains(column)) {
            notes.push(format!(
                "mapping '{name}': field {removed} is no longer read"
            ));
        }
    }
    notes
}

/// Lists the keys whose values differ between two versions of a section, as dotted paths.
fn diff_sections(
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
    root: &str,
) -> Vec<String> {
    let mut changes = Vec::new();
    diff_values(
        &before.unwrap_or(serde_json::Value::Null),
        &after.unwrap_or(serde_json::Value::Null),
        root.to_string(),
        &mut changes,
    );
    changes
}

fn diff_values(
    before: &serde_json::Value,
    after: &serde_json::Value,
    path: String,
    changes: &mut Vec<String>,
) {
    use serde_json::Value;
    if before == after || changes.len() >= 10 {
        return;
    }
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<_> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                diff_values(
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    format!("{path}.{key}"),
                    changes,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                diff_values(x, y, format!("{path}[{index}]"), changes);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            changes.push(format!("{path}: {} -> {} entries", a.len(), b.len()));
        }
        (Value::Null, value) => changes.push(format!("{path} added: {}", short(value))),
        (value, Value::Null) => changes.push(format!("{path} removed (was {})", short(value))),
        (a, b) => changes.push(format!("{path}: {} -> {}", short(a), short(b))),
    }
}

fn short(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(57).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pending_summary_names_what_changed() {
        let before = serde_json::json!({"send": true, "click": false, "pacing": {"page_size": 10}});
        let after = serde_json::json!({"send": true, "click": true, "pacing": {"page_size": 20}});
        let changes = diff_sections(Some(before), Some(after), "egress");
        assert_eq!(
            changes,
            [
                "egress.click: false -> true",
                "egress.pacing.page_size: 10 -> 20"
            ]
        );
    }
}
