//! STARTING: from a validated config snapshot, build the connectors, check credentials, load
//! and configure the plugin, check source and destination schemas, take pending replays, and
//! assemble the reader and writer stages. Every failure is a message naming what is wrong.

use std::sync::Arc;

use conduit_config::{Config, ConfigKey, MappingSpec};
use conduit_connectors::ChangeRequest;
use conduit_model::{Outcome, Phase, System, WorkflowId};
use conduit_store::{CursorState, DeadLetter, DeadLetterPayload};

use super::Environment;
use super::drift::DriftGuard;
use super::reader::{MappingReader, Reader, ReaderKind, ReaderPacing};
use super::services::{LoadFailed, PluginFactory, Services};
use super::stage::PrepareError;
use super::writer::Writer;

/// The stages of a workflow ready to run.
pub(super) struct Prepared {
    pub(super) reader: Reader,
    pub(super) writer: Writer,
    pub(super) plugin_fingerprint: String,
}

/// Runs STARTING for one workflow.
pub(super) async fn prepare(
    env: &Environment,
    config: &Config,
    id: WorkflowId,
) -> Result<Prepared, PrepareError> {
    let services = env
        .connect
        .connect(config)
        .map_err(|error| error.to_string())?;
    services
        .dynamics_sink
        .check()
        .await
        .map_err(|error| PrepareError::service("Dynamics 365 credentials or URL", &error))?;
    services
        .campaign_sink
        .check()
        .await
        .map_err(|error| PrepareError::service("Campaign credentials or URL", &error))?;
    let limits = config.limits(id);
    let pacing = config.pacing(id);
    let plugin = config
        .plugin(id)
        .ok_or_else(|| format!("the {id} workflow is not configured"))?;
    let reader_pacing = ReaderPacing {
        page_size: pacing.page_size,
        poll_interval: pacing.poll_interval,
        max_backlog: limits.replay_max_rows.max(1),
        failure_threshold: limits.failure_threshold.max(1),
    };
    let (kind, needed, fingerprint) = match id {
        WorkflowId::Ingress => {
            let section = config.ingress().ok_or("ingress is not configured")?;
            let mut readers = Vec::new();
            let mut needed = Vec::new();
            let mut fingerprint = String::new();
            let mut mapping_fingerprints = std::collections::BTreeMap::new();
            for mapping in &section.mappings {
                check_source_fields(&services, mapping).await?;
                let settings = mapping.plugin_settings();
                let (plugin, limits) = (plugin.to_string(), limits);
                let settings_for_plugin = settings.clone();
                let loaded = off_worker(env, move |plugins| {
                    plugins.record_mapper(&plugin, &settings_for_plugin, &limits)
                })
                .await
                .map_err(|error| {
                    located(
                        config,
                        ConfigKey::Mapping(&mapping.name),
                        format!("mapping '{}': {error}", mapping.name),
                    )
                })?;
                mapping_fingerprints.insert(
                    mapping.name.clone(),
                    mapping_fingerprint(&settings, &loaded.fingerprint),
                );
                fingerprint = loaded.fingerprint;
                readers.push(MappingReader {
                    name: mapping.name.clone(),
                    request: change_request(mapping, pacing.page_size),
                    mapper: Some(loaded.plugin),
                });
                let mut fields = vec![mapping.key.destination.clone()];
                fields.extend(mapping.fields.iter().map(|f| f.destination.clone()));
                needed.push((System::Campaign, mapping.destination.clone(), fields));
            }
            take_pending_replays(env, config)?;
            reread_changed_mappings(env, mapping_fingerprints)?;
            (ReaderKind::Ingress(readers), needed, fingerprint)
        }
        WorkflowId::Egress => {
            let section = config.egress().ok_or("egress is not configured")?;
            let settings = section.plugin_settings();
            let (plugin, limits) = (plugin.to_string(), limits);
            let loaded = off_worker(env, move |plugins| {
                plugins.event_mapper(&plugin, &settings, &limits)
            })
            .await
            .map_err(|error| located(config, ConfigKey::Plugin(id), error))?;
            (
                ReaderKind::Egress(Some(loaded.plugin)),
                Vec::new(),
                loaded.fingerprint,
            )
        }
        WorkflowId::OptInOut => {
            let section = config.optinout().ok_or("optinout is not configured")?;
            let settings = section.plugin_settings();
            let (plugin, limits) = (plugin.to_string(), limits);
            let loaded = off_worker(env, move |plugins| {
                plugins.opt_out_resolver(&plugin, &settings, &limits)
            })
            .await
            .map_err(|error| located(config, ConfigKey::Plugin(id), error))?;
            let active = section.direction.is_active();
            let mut columns: Vec<String> =
                section.pairs.iter().map(|p| p.dynamics.clone()).collect();
            columns.push("modifiedon".into());
            let contacts = active.then(|| ChangeRequest {
                table: "contact".into(),
                columns,
                page_size: pacing.page_size,
            });
            let read_exports = section.direction.reads_exports();
            if read_exports && services.opt_out_exports.is_none() {
                return Err("the opt-out direction reads Campaign's exports, but campaign.opt_out_exports is not set".into());
            }
            let campaign_fields: Vec<String> =
                section.pairs.iter().map(|p| p.campaign.clone()).collect();
            let needed = if active && !campaign_fields.is_empty() {
                vec![(
                    System::Campaign,
                    "profile".to_string(),
                    campaign_fields.clone(),
                )]
            } else {
                Vec::new()
            };
            (
                ReaderKind::OptInOut {
                    resolver: Some(loaded.plugin),
                    contacts,
                    read_exports,
                    campaign_attributes: campaign_fields.clone(),
                },
                needed,
                loaded.fingerprint,
            )
        }
    };
    let mut drift = DriftGuard::baseline(&services, &needed).await?;
    if id == WorkflowId::Egress {
        // Its plugin decides the activity tables and fields: learned on first write.
        drift.learn_on_first_write(System::Dynamics);
    }
    let reader = Reader {
        workflow: id,
        store: env.store.clone(),
        services: services.clone(),
        pacing: reader_pacing,
        kind,
        failing_batches: 0,
    };
    let writer = Writer {
        workflow: id,
        store: env.store.clone(),
        services,
        batch_size: pacing.write_batch.max(1),
        drift: Arc::new(drift),
        missing_record_wait: limits.missing_record_wait,
    };
    Ok(Prepared {
        reader,
        writer,
        plugin_fingerprint: fingerprint,
    })
}

/// Maps a read-stage dead letter again with the plugin as configured now.
pub(super) async fn remap(
    env: &Environment,
    config: &Config,
    id: WorkflowId,
    dead: &DeadLetter,
) -> Result<Outcome, String> {
    let plugin = config
        .plugin(id)
        .ok_or_else(|| format!("the {id} workflow is not configured"))?
        .to_string();
    let limits = config.limits(id);
    match &dead.payload {
        DeadLetterPayload::SourceRecord { batch, phase } => {
            let section = config.ingress().ok_or("ingress is not configured")?;
            let mapping = section.mapping(&dead.origin).ok_or_else(|| {
                format!("the mapping '{}' is no longer in the config", dead.origin)
            })?;
            let settings = mapping.plugin_settings();
            let mut loaded = off_worker(env, move |plugins| {
                plugins.record_mapper(&plugin, &settings, &limits)
            })
            .await?;
            let (batch, phase) = (batch.clone(), *phase);
            tokio::task::spawn_blocking(move || {
                super::reader::remap_one(loaded.plugin.as_mut(), &batch, phase)
            })
            .await
            .map_err(|error| error.to_string())?
        }
        DeadLetterPayload::Event { event } => {
            let section = config.egress().ok_or("egress is not configured")?;
            let settings = section.plugin_settings();
            let mut loaded = off_worker(env, move |plugins| {
                plugins.event_mapper(&plugin, &settings, &limits)
            })
            .await?;
            let event = event.clone();
            tokio::task::spawn_blocking(move || {
                super::reader::remap_event(loaded.plugin.as_mut(), &event)
            })
            .await
            .map_err(|error| error.to_string())?
        }
        DeadLetterPayload::OptOut { contact } => {
            let section = config.optinout().ok_or("optinout is not configured")?;
            let settings = section.plugin_settings();
            let mut loaded = off_worker(env, move |plugins| {
                plugins.opt_out_resolver(&plugin, &settings, &limits)
            })
            .await?;
            let contact = contact.clone();
            tokio::task::spawn_blocking(move || {
                let mut outcomes = loaded
                    .plugin
                    .resolve(std::slice::from_ref(&contact))
                    .map_err(|error| error.to_string())?;
                if outcomes.len() == 1 {
                    Ok(outcomes.remove(0))
                } else {
                    Err(format!(
                        "the plugin returned {} outcomes for one contact",
                        outcomes.len()
                    ))
                }
            })
            .await
            .map_err(|error| error.to_string())?
        }
        DeadLetterPayload::Write { .. } => Err("a refused write is requeued, not remapped".into()),
    }
}

/// A plugin failure at start, located in the config file as `conduit config check` locates
/// it (the workflow's `plugin` key, or the table mapping for Ingress), so that the ERROR
/// reason and the check name the same place.
fn located(config: &Config, at: ConfigKey<'_>, message: String) -> String {
    config.problem(at, message, None).to_string()
}

/// Loads and configures a plugin on a blocking thread: `configure` runs plugin code for up to
/// its deadline, which must not hold an async worker, and a panic while loading must fail the
/// start with a reason rather than leave the workflow STARTING.
async fn off_worker<T: Send + 'static>(
    env: &Environment,
    load: impl FnOnce(&dyn PluginFactory) -> Result<T, LoadFailed> + Send + 'static,
) -> Result<T, String> {
    let plugins = Arc::clone(&env.plugins);
    // What `configure` logs keeps the workflow it was loaded for.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| load(plugins.as_ref())))
        .await
        .map_err(|error| {
            let reason = match error.try_into_panic() {
                Ok(payload) => payload
                    .downcast_ref::<&str>()
                    .map(|text| conduit_plugin_host::cap(text))
                    .or_else(|| {
                        payload
                            .downcast_ref::<String>()
                            .map(|text| conduit_plugin_host::cap(text))
                    })
                    .unwrap_or_else(|| "no message".to_owned()),
                Err(error) => error.to_string(),
            };
            format!("loading or configuring the plugin failed: it panicked: {reason}")
        })?
        .map_err(|error| error.to_string())
}

/// The read of a table mapping: its table and columns (`MappingSpec::source_columns`).
pub(super) fn change_request(mapping: &MappingSpec, page_size: u32) -> ChangeRequest {
    ChangeRequest {
        table: mapping.source.clone(),
        columns: mapping.source_columns(),
        page_size,
    }
}

async fn check_source_fields(
    services: &Services,
    mapping: &MappingSpec,
) -> Result<(), PrepareError> {
    let table = &mapping.source;
    let fields = services
        .dynamics_source
        .describe(table)
        .await
        .map_err(|error| {
            PrepareError::service(
                &format!("cannot read the metadata of the Dynamics 365 table '{table}'"),
                &error,
            )
        })?;
    let known: std::collections::HashSet<_> = fields.iter().map(|f| f.name.as_str()).collect();
    let mut used = vec![&mapping.key.source];
    used.extend(mapping.fields.iter().map(|f| &f.source));
    for field in used {
        if !known.contains(field.as_str()) {
            return Err(format!(
                "schema drift: the field '{field}' of the Dynamics 365 table '{table}' does not exist (mapping '{}')",
                mapping.name
            )
            .into());
        }
    }
    Ok(())
}

/// What a table mapping's outputs depend on: its settings and the plugin's build.
fn mapping_fingerprint(settings: &serde_json::Value, plugin_fingerprint: &str) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(settings.to_string().as_bytes());
    hasher.update([0]);
    hasher.update(plugin_fingerprint.as_bytes());
    hex::encode(hasher.finalize())
}

/// Records queued under a mapping that has changed since the last start leave the queue to be
/// read again and mapped with the mapping as it is now: following the documented procedure
/// (fix the mapping, restart) then loses nothing and dead-letters nothing.
fn reread_changed_mappings(
    env: &Environment,
    fingerprints: std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    let record = env
        .store
        .workflow(WorkflowId::Ingress)
        .map_err(|error| error.to_string())?;
    for (name, now) in &fingerprints {
        let changed = record
            .mapping_fingerprints
            .get(name)
            .is_some_and(|before| before != now);
        if changed {
            let moved = env
                .store
                .queue_rereads(name)
                .map_err(|error| error.to_string())?;
            if moved > 0 {
                tracing::info!(mapping = %name, records = moved, "the mapping changed: queued records are read again and mapped with it");
            }
        }
    }
    env.store
        .update_workflow(WorkflowId::Ingress, |record| {
            record.mapping_fingerprints = fingerprints;
        })
        .map_err(|error| error.to_string())?;
    Ok(())
}

/// Pending replays restart their mappings' cursors in the replay phase.
fn take_pending_replays(env: &Environment, config: &Config) -> Result<(), String> {
    let record = env
        .store
        .workflow(WorkflowId::Ingress)
        .map_err(|error| error.to_string())?;
    if record.pending_replays.is_empty() {
        return Ok(());
    }
    let known = |name: &str| config.ingress().is_some_and(|s| s.mapping(name).is_some());
    for mapping in &record.pending_replays {
        if known(mapping) {
            env.store
                .set_cursor(
                    WorkflowId::Ingress,
                    mapping,
                    &CursorState::new(None, Phase::Replay),
                )
                .map_err(|error| error.to_string())?;
        }
    }
    env.store
        .update_workflow(WorkflowId::Ingress, |record| record.pending_replays.clear())
        .map_err(|error| error.to_string())?;
    Ok(())
}
