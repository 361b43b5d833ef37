//! The engine's plugin factory over the Wasm runtime: resolves plugin references against the
//! config's folder, applies the workflow's limits, and adapts the typed mappers to the engine's
//! mapping traits.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::EffectiveLimits;
use crate::model::{ContactOptOut, EmailEvent, Outcome, Phase, RecordBatch};
use crate::plugin::{
    EventMapper, Limits, OptOutResolver, PluginError, PluginHost, PluginRef, RecordMapper, World,
};
use crate::workflow::services::{
    EventMapping, Loaded, MappingFailed, OptOutResolution, PluginFactory, RecordMapping,
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

    fn reference(&self, plugin: &str) -> Result<PluginRef, String> {
        resolve_reference(&self.base_dir, plugin)
    }

    fn load(&self, plugin: &str, world: World) -> Result<crate::plugin::LoadedPlugin, String> {
        let reference = self.reference(plugin)?;
        self.host
            .load(&reference, world)
            .map_err(|error| error.to_string())
    }
}

/// A plugin as written in a config (`builtin:...` or a path), a relative path resolved against
/// `base_dir` (the config's folder).
pub fn resolve_reference(base_dir: &std::path::Path, plugin: &str) -> Result<PluginRef, String> {
    match PluginRef::from_str(plugin).map_err(|error| error.to_string())? {
        PluginRef::Path(path) if path.is_relative() => Ok(PluginRef::Path(base_dir.join(path))),
        other => Ok(other),
    }
}

/// The sandbox limits of a workflow.
pub fn sandbox_limits(limits: &EffectiveLimits) -> Limits {
    Limits {
        deadline: Duration::from_millis(limits.plugin_deadline_ms.max(1)),
        memory_bytes: usize::try_from(limits.plugin_memory_mb.saturating_mul(1 << 20))
            .unwrap_or(usize::MAX),
        ..Limits::default()
    }
}

fn failed(error: PluginError) -> MappingFailed {
    MappingFailed(error.to_string())
}

impl RecordMapping for RecordMapper {
    fn map(&mut self, phase: Phase, batch: &RecordBatch) -> Result<Vec<Outcome>, MappingFailed> {
        RecordMapper::map(self, phase, batch).map_err(failed)
    }
}

impl EventMapping for EventMapper {
    fn map(&mut self, events: &[EmailEvent]) -> Result<Vec<Outcome>, MappingFailed> {
        EventMapper::map(self, events).map_err(failed)
    }
}

impl OptOutResolution for OptOutResolver {
    fn resolve(&mut self, contacts: &[ContactOptOut]) -> Result<Vec<Outcome>, MappingFailed> {
        OptOutResolver::resolve(self, contacts).map_err(failed)
    }
}

impl PluginFactory for WasmPlugins {
    fn record_mapper(
        &self,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn RecordMapping>>, String> {
        let loaded = self.load(plugin, World::RecordMapper)?;
        let mapper = loaded
            .record_mapper(settings, sandbox_limits(limits))
            .map_err(|error| error.to_string())?;
        Ok(Loaded {
            plugin: Box::new(mapper),
            fingerprint: loaded.fingerprint().to_string(),
        })
    }

    fn event_mapper(
        &self,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn EventMapping>>, String> {
        let loaded = self.load(plugin, World::EventMapper)?;
        let mapper = loaded
            .event_mapper(settings, sandbox_limits(limits))
            .map_err(|error| error.to_string())?;
        Ok(Loaded {
            plugin: Box::new(mapper),
            fingerprint: loaded.fingerprint().to_string(),
        })
    }

    fn opt_out_resolver(
        &self,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn OptOutResolution>>, String> {
        let loaded = self.load(plugin, World::OptOutResolver)?;
        let resolver = loaded
            .opt_out_resolver(settings, sandbox_limits(limits))
            .map_err(|error| error.to_string())?;
        Ok(Loaded {
            plugin: Box::new(resolver),
            fingerprint: loaded.fingerprint().to_string(),
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
