//! The three workflows, each one module implementing [`Workflow`]: what it reads, how its
//! plugin maps what it read, and which destination fields its writes need. Around them the
//! stage machinery is shared and names no workflow: the reader loop (`reader.rs`), the writer
//! (`writer.rs`), STARTING (`prepare.rs`) and the supervisor (`lib.rs`), which picks the
//! workflow's type once, by its id, in [`run`](super::Supervisor) and [`remap`].

mod egress;
mod ingress;
pub(crate) mod opt_in_out;

use std::future::Future;
use std::sync::Arc;

use conduit_config::{Config, ConfigKey, EffectiveLimits};
use conduit_model::{Outcome, System, WorkflowId};
use conduit_store::{DeadLetter, DeadLetterPayload};

use super::Environment;
use super::reader::{ReaderCore, StepError};
use super::services::{LoadFailed, Loaded, PluginBuild, PluginFactory, Services};
use super::stage::{PrepareError, StageContext};

pub(super) use egress::Egress;
pub(crate) use ingress::Ingress;
pub use ingress::map_rows_isolated;
pub(super) use opt_in_out::OptInOut;

/// What STARTING hands a workflow to prepare with.
pub(super) struct Start<'a> {
    /// The host's store, connectors and plugin factory.
    pub(super) env: &'a Environment,
    /// The config snapshot the workflow starts with.
    pub(super) config: &'a Config,
    /// The connectors built from that config, their credentials already checked.
    pub(super) services: &'a Services,
    /// Rows or events per source page.
    pub(super) page_size: u32,
}

/// A workflow ready to read.
pub(super) struct Ready<W> {
    /// The workflow with its plugin(s) loaded and configured.
    pub(super) workflow: W,
    /// The destination tables and the fields its writes need (checked now, and watched for
    /// drift while it runs).
    pub(super) needed: Vec<(System, String, Vec<String>)>,
    /// The fingerprint of the plugin's bytes, for "changes pending restart".
    pub(super) plugin_fingerprint: String,
    /// The plugin build it loaded, kept while it runs (preview and verify map with it).
    pub(super) build: Option<Arc<dyn PluginBuild>>,
}

/// One workflow: what it reads, how it maps it, what its writes need.
pub(super) trait Workflow: Sized + Send + 'static {
    /// Which workflow this is.
    const ID: WorkflowId;
    /// The destination whose tables and fields the plugin alone decides: learned at the first
    /// write instead of checked at start.
    const LEARNS_DESTINATION: Option<System> = None;
    /// The plugin contract it maps with.
    type Plugin: Send + 'static;

    /// Loads and configures its plugin (called on a blocking thread).
    fn load(
        factory: &dyn PluginFactory,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Self::Plugin>, LoadFailed>;

    /// Configures its plugin from a kept build (called on a blocking thread).
    fn configure(
        build: &dyn PluginBuild,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Self::Plugin, LoadFailed>;

    /// STARTING: loads the plugin, checks what the source offers, and says what it writes.
    fn prepare(start: Start<'_>) -> impl Future<Output = Result<Ready<Self>, PrepareError>> + Send;

    /// One step of the reader: read a page, map it, commit. True when there was work.
    fn step(
        &mut self,
        reader: &mut ReaderCore,
        ctx: &StageContext,
    ) -> impl Future<Output = Result<bool, StepError>> + Send;

    /// The plugin settings a read-stage dead letter from `origin` is mapped again with.
    fn remap_settings(config: &Config, origin: &str) -> Result<serde_json::Value, RemapError>;

    /// Maps a read-stage dead letter again (on a blocking thread).
    fn remap(plugin: &mut Self::Plugin, payload: &DeadLetterPayload)
    -> Result<Outcome, RemapError>;
}

/// Why a dead letter could not be mapped again.
#[derive(Debug, thiserror::Error)]
pub enum RemapError {
    /// The workflow's section is gone from the config.
    #[error("the {0} workflow is not configured")]
    NotConfigured(WorkflowId),
    /// The table mapping the record came through is gone from the config.
    #[error("the mapping '{0}' is no longer in the config")]
    MappingGone(String),
    /// The plugin as configured now does not load.
    #[error("{0}")]
    Load(String),
    /// The plugin failed on the record.
    #[error("{0}")]
    Plugin(String),
    /// The dead letter holds a refused write, which is requeued instead.
    #[error("a refused write is requeued, not remapped")]
    Write,
    /// The dead letter holds another workflow's input.
    #[error("this dead letter does not hold an input of the {0} workflow")]
    OtherWorkflow(WorkflowId),
    /// The blocking task that ran the plugin panicked or was cancelled.
    #[error("internal error: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Maps a read-stage dead letter of workflow `id` again with the plugin as configured now.
pub(super) async fn remap(
    env: &Environment,
    config: &Config,
    id: WorkflowId,
    dead: &DeadLetter,
) -> Result<Outcome, RemapError> {
    match id {
        WorkflowId::Ingress => remap_as::<Ingress>(env, config, dead).await,
        WorkflowId::Egress => remap_as::<Egress>(env, config, dead).await,
        WorkflowId::OptInOut => remap_as::<OptInOut>(env, config, dead).await,
    }
}

async fn remap_as<W: Workflow>(
    env: &Environment,
    config: &Config,
    dead: &DeadLetter,
) -> Result<Outcome, RemapError> {
    if matches!(dead.payload, DeadLetterPayload::Write { .. }) {
        return Err(RemapError::Write);
    }
    let settings = W::remap_settings(config, &dead.origin)?;
    let mut loaded = load::<W>(env, config, settings)
        .await
        .map_err(RemapError::Load)?;
    let payload = dead.payload.clone();
    tokio::task::spawn_blocking(move || W::remap(&mut loaded.plugin, &payload)).await?
}

/// Loads and configures the workflow's plugin with `settings` on a blocking thread:
/// `configure` runs plugin code for up to its deadline, which must not hold an async worker,
/// and a panic while loading must fail the start with a reason rather than leave the
/// workflow STARTING.
pub(crate) async fn load<W: Workflow>(
    env: &Environment,
    config: &Config,
    settings: serde_json::Value,
) -> Result<Loaded<W::Plugin>, String> {
    let plugin = config
        .plugin(W::ID)
        .ok_or_else(|| format!("the {} workflow is not configured", W::ID))?
        .to_string();
    let limits = config.limits(W::ID);
    let plugins = Arc::clone(&env.plugins);
    // What `configure` logs keeps the workflow it was loaded for.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        span.in_scope(|| W::load(plugins.as_ref(), &plugin, &settings, &limits))
    })
    .await
    .map_err(panic_reason)?
    .map_err(|error| error.to_string())
}

/// What a loading task that did not finish says, for the operator.
fn panic_reason(error: tokio::task::JoinError) -> String {
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
}

/// The workflow's plugin in force, configured with `settings`: from `build`, the build the
/// running workflow started with (a .wasm replaced on disk since does not count until its
/// restart), or when there is none (the workflow is stopped, or the factory keeps no builds)
/// loaded from the config's reference as [`load`] does.
pub(crate) async fn load_in_force<W: Workflow>(
    env: &Environment,
    config: &Config,
    settings: serde_json::Value,
    build: Option<Arc<dyn PluginBuild>>,
) -> Result<W::Plugin, String> {
    let Some(build) = build else {
        return load::<W>(env, config, settings)
            .await
            .map(|loaded| loaded.plugin);
    };
    let limits = config.limits(W::ID);
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        span.in_scope(|| W::configure(build.as_ref(), &settings, &limits))
    })
    .await
    .map_err(panic_reason)?
    .map_err(|error| error.to_string())
}

/// A plugin failure at start, located in the config file as `conduit config check` locates
/// it (the workflow's `plugin` key, or the table mapping for Ingress), so that the ERROR
/// reason and the check name the same place.
fn located(config: &Config, at: ConfigKey<'_>, message: String) -> PrepareError {
    PrepareError::from(config.problem(at, message, None).to_string())
}
