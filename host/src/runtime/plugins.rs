//! The engine's plugin factory over the Wasm runtime: resolves plugin references against the
//! config's folder, applies the workflow's limits, and adapts the typed mappers to the engine's
//! mapping traits.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use conduit_config::EffectiveLimits;
use conduit_engine::services::{
    EventMapping, LoadFailed, Loaded, MappingFailed, OptOutResolution, PluginBuild, PluginFactory,
    RecordMapping,
};
use conduit_model::{ContactOptOut, EmailEvent, Outcome, Phase, RecordBatch};
use conduit_plugin_host::{
    EventMapper, Limits, OptOutResolver, PluginError, PluginHost, PluginRef, RecordMapper, World,
};

/// Loads plugins into the one Wasm engine of the host.
pub struct WasmPlugins {
    host: PluginHost,
    base_dir: PathBuf,
}

impl WasmPlugins {
    /// A factory whose relative plugin paths are resolved against `base_dir` (the config's folder).
    pub fn new(host: PluginHost, base_dir: PathBuf) -> WasmPlugins {
        WasmPlugins { host, base_dir }
    }

    fn reference(&self, plugin: &str) -> Result<PluginRef, PluginError> {
        resolve_reference(&self.base_dir, plugin)
    }

    fn load(
        &self,
        plugin: &str,
        world: World,
    ) -> Result<conduit_plugin_host::LoadedPlugin, PluginError> {
        let reference = self.reference(plugin)?;
        self.host.load(&reference, world)
    }
}

/// A plugin as written in a config (`builtin:...` or a path), a relative path resolved against
/// `base_dir` (the config's folder).
pub fn resolve_reference(
    base_dir: &std::path::Path,
    plugin: &str,
) -> Result<PluginRef, PluginError> {
    match PluginRef::from_str(plugin)? {
        PluginRef::Path(path) if path.is_relative() => Ok(PluginRef::Path(base_dir.join(path))),
        other => Ok(other),
    }
}

/// The sandbox limits of a workflow.
pub fn sandbox_limits(limits: &EffectiveLimits) -> Limits {
    Limits {
        deadline: limits.plugin_deadline.max(Duration::from_millis(1)),
        memory_bytes: usize::try_from(limits.plugin_memory_mb.saturating_mul(1 << 20))
            .unwrap_or(usize::MAX),
        ..Limits::default()
    }
}

fn failed(error: PluginError) -> MappingFailed {
    MappingFailed::new(error)
}

// The engine's mapping traits over the plugin host's typed mappers. The two crates know
// nothing of each other, so the adapters are newtypes here, where the parts are wired.

/// A record-mapper plugin as the engine's [`RecordMapping`].
pub struct WasmRecordMapper(pub RecordMapper);

impl RecordMapping for WasmRecordMapper {
    fn map(&mut self, phase: Phase, batch: &RecordBatch) -> Result<Vec<Outcome>, MappingFailed> {
        self.0.map(phase, batch).map_err(failed)
    }
}

/// An event-mapper plugin as the engine's [`EventMapping`].
pub struct WasmEventMapper(pub EventMapper);

impl EventMapping for WasmEventMapper {
    fn map(&mut self, events: &[EmailEvent]) -> Result<Vec<Outcome>, MappingFailed> {
        self.0.map(events).map_err(failed)
    }
}

/// An opt-out-resolver plugin as the engine's [`OptOutResolution`].
pub struct WasmOptOutResolver(pub OptOutResolver);

impl OptOutResolution for WasmOptOutResolver {
    fn resolve(&mut self, contacts: &[ContactOptOut]) -> Result<Vec<Outcome>, MappingFailed> {
        self.0.resolve(contacts).map_err(failed)
    }
}

/// A compiled, checked plugin as the engine's [`PluginBuild`]: the running workflow keeps it
/// (the compiled code is shared with the mappers already configured from it, so keeping it
/// costs nothing while they live).
pub struct WasmBuild(pub conduit_plugin_host::LoadedPlugin);

impl PluginBuild for WasmBuild {
    fn fingerprint(&self) -> &str {
        self.0.fingerprint()
    }

    fn record_mapper(
        &self,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Box<dyn RecordMapping>, LoadFailed> {
        let mapper = self
            .0
            .record_mapper(settings, sandbox_limits(limits))
            .map_err(LoadFailed::new)?;
        Ok(Box::new(WasmRecordMapper(mapper)))
    }

    fn event_mapper(
        &self,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Box<dyn EventMapping>, LoadFailed> {
        let mapper = self
            .0
            .event_mapper(settings, sandbox_limits(limits))
            .map_err(LoadFailed::new)?;
        Ok(Box::new(WasmEventMapper(mapper)))
    }

    fn opt_out_resolver(
        &self,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Box<dyn OptOutResolution>, LoadFailed> {
        let resolver = self
            .0
            .opt_out_resolver(settings, sandbox_limits(limits))
            .map_err(LoadFailed::new)?;
        Ok(Box::new(WasmOptOutResolver(resolver)))
    }
}

impl PluginFactory for WasmPlugins {
    fn record_mapper(
        &self,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn RecordMapping>>, LoadFailed> {
        let loaded = self
            .load(plugin, World::RecordMapper)
            .map_err(LoadFailed::new)?;
        let mapper = loaded
            .record_mapper(settings, sandbox_limits(limits))
            .map_err(LoadFailed::new)?;
        Ok(Loaded {
            plugin: Box::new(WasmRecordMapper(mapper)),
            fingerprint: loaded.fingerprint().to_string(),
            build: Some(Arc::new(WasmBuild(loaded))),
        })
    }

    fn event_mapper(
        &self,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn EventMapping>>, LoadFailed> {
        let loaded = self
            .load(plugin, World::EventMapper)
            .map_err(LoadFailed::new)?;
        let mapper = loaded
            .event_mapper(settings, sandbox_limits(limits))
            .map_err(LoadFailed::new)?;
        Ok(Loaded {
            plugin: Box::new(WasmEventMapper(mapper)),
            fingerprint: loaded.fingerprint().to_string(),
            build: Some(Arc::new(WasmBuild(loaded))),
        })
    }

    fn opt_out_resolver(
        &self,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn OptOutResolution>>, LoadFailed> {
        let loaded = self
            .load(plugin, World::OptOutResolver)
            .map_err(LoadFailed::new)?;
        let resolver = loaded
            .opt_out_resolver(settings, sandbox_limits(limits))
            .map_err(LoadFailed::new)?;
        Ok(Loaded {
            plugin: Box::new(WasmOptOutResolver(resolver)),
            fingerprint: loaded.fingerprint().to_string(),
            build: Some(Arc::new(WasmBuild(loaded))),
        })
    }

    fn current_fingerprint(&self, plugin: &str) -> Option<String> {
        match self.reference(plugin).ok()? {
            // Builtins are part of the binary: they cannot change while it runs.
            PluginRef::Builtin(_) => None,
            PluginRef::Path(path) => {
                let bytes = std::fs::read(path).ok()?;
                Some(hex::encode(Sha256::digest(&bytes)))
            }
        }
    }
}
