//! What a running workflow is given: the connectors (behind the connector traits) and its
//! mapping plugin (behind the mapping traits below). The engine knows these traits only; the
//! Wasm runtime and the HTTP connectors implement them, and tests implement fakes.

use std::sync::Arc;

use conduit_config::{Config, EffectiveLimits};
use conduit_connectors::{
    ChangeSource, EventSource, OptOutExportSource, ProfileOptOutSource, RecordReader, RecordSink,
};
use conduit_model::{ContactOptOut, EmailEvent, Outcome, Phase, RecordBatch, System};

/// The error an implementation of these traits hands the engine, kept whole as the source of
/// the engine's own error (the engine does not know the plugin host's or the connectors'
/// types, only that they are errors).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A plugin call that failed for the whole batch (trap, deadline, memory, invalid output or
/// the plugin's own error). The engine then retries the batch record by record. Its message
/// is the cause's, shown to operators as the plugin's failure.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct MappingFailed {
    /// Why the call failed (the plugin host's error).
    #[source]
    pub source: BoxError,
}

impl MappingFailed {
    /// A failed call for `source` (an error, or a message).
    pub fn new(source: impl Into<BoxError>) -> MappingFailed {
        MappingFailed {
            source: source.into(),
        }
    }
}

/// A plugin that could not be loaded or configured at STARTING (a bad reference, an invalid
/// component, a `configure` that refused its settings). Its message is the cause's; the
/// engine places it in the config for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct LoadFailed {
    /// Why (the plugin host's error).
    #[source]
    pub source: BoxError,
}

impl LoadFailed {
    /// A failed load for `source` (an error, or a message).
    pub fn new(source: impl Into<BoxError>) -> LoadFailed {
        LoadFailed {
            source: source.into(),
        }
    }
}

/// The connectors could not be built from a config (a missing secret, a bad URL, an unusable
/// CA file). Its message is the cause's, for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct ConnectFailed {
    /// Why.
    #[source]
    pub source: BoxError,
}

impl ConnectFailed {
    /// A failed connect for `source` (an error, or a message).
    pub fn new(source: impl Into<BoxError>) -> ConnectFailed {
        ConnectFailed {
            source: source.into(),
        }
    }
}

/// A configured record mapper (Ingress).
pub trait RecordMapping: Send {
    /// Maps a page of rows: one outcome per row.
    fn map(&mut self, phase: Phase, batch: &RecordBatch) -> Result<Vec<Outcome>, MappingFailed>;
}

/// A configured event mapper (Egress).
pub trait EventMapping: Send {
    /// Maps a page of events: one outcome per event.
    fn map(&mut self, events: &[EmailEvent]) -> Result<Vec<Outcome>, MappingFailed>;
}

/// A configured opt-out resolver (Opt-in/out).
pub trait OptOutResolution: Send {
    /// Resolves a batch of contacts: one outcome per contact.
    fn resolve(&mut self, contacts: &[ContactOptOut]) -> Result<Vec<Outcome>, MappingFailed>;
}

/// A loaded plugin, configured, with the fingerprint of the bytes it was loaded from.
pub struct Loaded<T> {
    /// The configured plugin.
    pub plugin: T,
    /// sha256 of the component bytes.
    pub fingerprint: String,
    /// The build it was configured from, to configure again later (`None`: the factory keeps
    /// none, and the plugin is loaded again from its reference).
    pub build: Option<Arc<dyn PluginBuild>>,
}

/// A plugin build (compiled and checked) as a workflow loaded it at its start. The running
/// workflow keeps it, so that `conduit preview` and `conduit verify` map with the build in
/// force even after the file on disk was replaced. Each call configures a new plugin.
pub trait PluginBuild: Send + Sync {
    /// sha256 of the component bytes it was built from.
    fn fingerprint(&self) -> &str;

    /// A record mapper of this build configured with `settings`.
    fn record_mapper(
        &self,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Box<dyn RecordMapping>, LoadFailed>;

    /// An event mapper of this build.
    fn event_mapper(
        &self,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Box<dyn EventMapping>, LoadFailed>;

    /// An opt-out resolver of this build.
    fn opt_out_resolver(
        &self,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Box<dyn OptOutResolution>, LoadFailed>;
}

/// Loads and configures plugins at STARTING.
pub trait PluginFactory: Send + Sync {
    /// A record mapper from `plugin` (`builtin:...` or a path) configured with `settings`.
    fn record_mapper(
        &self,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn RecordMapping>>, LoadFailed>;

    /// An event mapper.
    fn event_mapper(
        &self,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn EventMapping>>, LoadFailed>;

    /// An opt-out resolver.
    fn opt_out_resolver(
        &self,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn OptOutResolution>>, LoadFailed>;

    /// The fingerprint of the plugin as it is now on disk (for "changes pending restart").
    fn current_fingerprint(&self, plugin: &str) -> Option<String>;
}

/// The connectors of one host.
#[derive(Clone)]
pub struct Services {
    /// Dataverse change tracking.
    pub dynamics_source: Arc<dyn ChangeSource>,
    /// Dataverse writes.
    pub dynamics_sink: Arc<dyn RecordSink>,
    /// Campaign writes.
    pub campaign_sink: Arc<dyn RecordSink>,
    /// Campaign's email event journal.
    pub events: Arc<dyn EventSource>,
    /// Campaign's opt-out exports, when configured.
    pub opt_out_exports: Option<Arc<dyn OptOutExportSource>>,
    /// Campaign profiles' current opt-out attributes, for the first Opt-in/out reconcile.
    pub profile_opt_outs: Option<Arc<dyn ProfileOptOutSource>>,
    /// Campaign records read back, for `conduit verify` and `conduit preview`.
    pub campaign_records: Option<Arc<dyn RecordReader>>,
    /// Dataverse records read back, for `conduit verify` of Egress.
    pub dynamics_records: Option<Arc<dyn RecordReader>>,
}

impl Services {
    /// The sink that writes to a system.
    pub fn sink(&self, system: System) -> &Arc<dyn RecordSink> {
        match system {
            System::Dynamics => &self.dynamics_sink,
            System::Campaign => &self.campaign_sink,
        }
    }
}

/// Builds the connectors from a config (at STARTING, with the secrets read from the
/// environment then).
pub trait Connect: Send + Sync {
    /// The connectors for this config.
    fn connect(&self, config: &Config) -> Result<Services, ConnectFailed>;
}
