//! Egress: Campaign's email events (sends, opens, clicks, bounces), through the event
//! mapper, to activities on the contact in Dynamics 365. One cursor over the event journal;
//! the plugin alone decides the activity tables and fields, so they are learned at the first
//! write rather than checked at start.

use conduit_config::{Config, ConfigKey, EffectiveLimits};
use conduit_model::{Outcome, Phase, System, WorkflowId};
use conduit_store::{CursorState, DeadLetterPayload, ReadCommit};

use super::super::reader::{
    ReaderCore, StepError, collect, isolate, on_plugin_thread, single_outcome,
};
use super::super::services::{EventMapping, LoadFailed, Loaded, PluginBuild, PluginFactory};
use super::super::stage::{PrepareError, StageContext};
use super::{Ready, RemapError, Start, Workflow, load, located};

/// The source name of the email events cursor.
const EVENTS_SOURCE: &str = "events";

/// The Egress workflow: its event mapper.
pub(crate) struct Egress {
    mapper: Option<Box<dyn EventMapping>>,
}

impl Workflow for Egress {
    const ID: WorkflowId = WorkflowId::Egress;
    const LEARNS_DESTINATION: Option<System> = Some(System::Dynamics);
    type Plugin = Box<dyn EventMapping>;

    fn load(
        factory: &dyn PluginFactory,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Self::Plugin>, LoadFailed> {
        factory.event_mapper(plugin, settings, limits)
    }

    fn configure(
        build: &dyn PluginBuild,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Self::Plugin, LoadFailed> {
        build.event_mapper(settings, limits)
    }

    async fn prepare(start: Start<'_>) -> Result<Ready<Self>, PrepareError> {
        let section = start.config.egress().ok_or("egress is not configured")?;
        let loaded = load::<Self>(start.env, start.config, section.plugin_settings())
            .await
            .map_err(|error| located(start.config, ConfigKey::Plugin(Self::ID), error))?;
        Ok(Ready {
            workflow: Egress {
                mapper: Some(loaded.plugin),
            },
            needed: Vec::new(),
            plugin_fingerprint: loaded.fingerprint,
            build: loaded.build,
        })
    }

    /// One page of the event journal.
    async fn step(&mut self, core: &mut ReaderCore, ctx: &StageContext) -> Result<bool, StepError> {
        let cursor = core
            .store
            .cursor(core.workflow, EVENTS_SOURCE)?
            .and_then(|c| c.cursor);
        let page = core
            .services
            .events
            .read_events(cursor.as_deref(), core.pacing.page_size)
            .await
            .map_err(|error| StepError::from_source(EVENTS_SOURCE, error))?;
        if page.events.is_empty() {
            return Ok(false);
        }
        let (events, results) = on_plugin_thread(
            &mut self.mapper,
            "mapper",
            core.workflow,
            page.events,
            |mapper, events| isolate(events, |items| mapper.map(items)),
        )
        .await?;
        let mut commit = ReadCommit {
            source: EVENTS_SOURCE.into(),
            cursor: page
                .cursor
                .map(|c| CursorState::new(Some(c), Phase::Incremental)),
            read: events.len() as u64,
            ..ReadCommit::default()
        };
        let all_failed = collect(&mut commit, EVENTS_SOURCE, results, |index| {
            DeadLetterPayload::Event {
                event: events[index].clone(),
            }
        });
        core.commit(ctx, commit, all_failed).await?;
        Ok(true)
    }

    fn remap_settings(config: &Config, _origin: &str) -> Result<serde_json::Value, RemapError> {
        let section = config.egress().ok_or(RemapError::NotConfigured(Self::ID))?;
        Ok(section.plugin_settings())
    }

    fn remap(
        plugin: &mut Self::Plugin,
        payload: &DeadLetterPayload,
    ) -> Result<Outcome, RemapError> {
        match payload {
            DeadLetterPayload::Event { event } => {
                single_outcome(plugin.map(std::slice::from_ref(event))).map_err(RemapError::Plugin)
            }
            _ => Err(RemapError::OtherWorkflow(Self::ID)),
        }
    }
}
