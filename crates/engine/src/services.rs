//! What a running workflow is given: the connectors (behind the connector traits) and its
//! mapping plugin (behind the mapping traits below). The engine knows these traits only; the
//! Wasm runtime and the HTTP connectors implement them, and tests implement fakes.

use std::sync::Arc;

use conduit_config::{Config, EffectiveLimits};
use conduit_connectors::{
    ChangeSource, EventSource, OptOutExportSource, ProfileOptOutSource, RecordSink,
};
use conduit_model::{ContactOptOut, EmailEvent, Outcome, Phase, RecordBatch, System};

/// A plugin call that failed for the whole batch (trap, deadline, memory, invalid output or
/// the plugin's own error). The engine then retries the batch record by record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MappingFailed(pub String);

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
}

/// Loads and configures plugins at STARTING. Errors are messages for the operator.
pub trait PluginFactory: Send + Sync {
    /// A record mapper from `plugin` (`builtin:...` or a path) configured with `settings`.
    fn record_mapper(
        &self,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn RecordMapping>>, String>;

    /// An event mapper.
    fn event_mapper(
        &self,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn EventMapping>>, String>;

    /// An opt-out resolver.
    fn opt_out_resolver(
        &self,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn OptOutResolution>>, String>;

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
/// environment then). Errors are messages for the operator.
pub trait Connect: Send + Sync {
    /// The connectors for this config.
    fn connect(&self, config: &Config) -> Result<Services, String>;
}
