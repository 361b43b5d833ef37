//! The process-wide plugin host: the engine (pooling allocator by default, epoch interruption, component
//! model), the linker, the epoch ticker thread and the compiled-component cache; and
//! [`LoadedPlugin`], a compiled and linked component checked against its world.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::bindings::{event_mapper, opt_out_resolver, packed_record_mapper, record_mapper};
use super::builtin::builtin;
use super::cache::CompiledCache;
use super::limits::MAX_MEMORY_BYTES;
use super::sandbox::{self, EPOCH_TICK, StoreState};
use super::{PluginError, PluginRef, World};

/// Instances alive at once across all workflows (one per in-flight batch).
const MAX_LIVE_INSTANCES: u32 = 64;

/// The plugin runtime of one process. Cheap to clone; shares one engine.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    linker: Linker<StoreState>,
    cache: Option<CompiledCache>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for HostInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

/// How the engine allocates instances' memories, tables and stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Allocator {
    /// Slots reserved up front for `MAX_LIVE_INSTANCES` instances and reused: a fresh
    /// instance costs a few microseconds. Reserves ~516 GiB of address space (not memory).
    #[default]
    Pooling,
    /// Each instance maps its own memory when it starts. Slower to instantiate, but runs where
    /// address space is capped: valgrind refuses the pool's reservation, and so would a
    /// `ulimit -v` (the binary always uses the pool today; benches and tests use this).
    OnDemand,
}

/// The engine configuration every plugin runs under.
fn engine_config(allocator: Allocator) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    // A Rust wasip2 component has a handful of core instances, one memory and a few tables.
    pool.total_component_instances(MAX_LIVE_INSTANCES)
        .total_core_instances(MAX_LIVE_INSTANCES * 8)
        .total_memories(MAX_LIVE_INSTANCES * 2)
        .total_tables(MAX_LIVE_INSTANCES * 8)
        .total_stacks(MAX_LIVE_INSTANCES)
        .max_memory_size(MAX_MEMORY_BYTES);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed);
    if allocator == Allocator::Pooling {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

impl PluginHost {
    /// Starts the engine and its epoch ticker; `cache_dir` keeps compiled components across
    /// restarts (none: compile on every load).
    /// The pooling allocator is used where the process may reserve its address space; where it
    /// may not (a capped `ulimit -v`, a container's address-space limit, valgrind), the engine
    /// allocates on demand instead, with a warning, rather than refusing to run plugins.
    pub fn new(cache_dir: Option<&Path>) -> Result<PluginHost, PluginError> {
        match PluginHost::with_allocator(cache_dir, Allocator::Pooling) {
            Ok(host) => Ok(host),
            Err(PluginError::Engine(reason)) => {
                tracing::warn!(
                    %reason,
                    "the plugin engine cannot reserve its instance pool; allocating plugin memory on demand (slower to instantiate)"
                );
                PluginHost::with_allocator(cache_dir, Allocator::OnDemand)
            }
            Err(error) => Err(error),
        }
    }

    /// [`PluginHost::new`] with the given instance allocator.
    pub fn with_allocator(
        cache_dir: Option<&Path>,
        allocator: Allocator,
    ) -> Result<PluginHost, PluginError> {
        let engine = Engine::new(&engine_config(allocator))
            .map_err(|error| PluginError::Engine(format!("{error:#}")))?;
        let linker =
            sandbox::linker(&engine).map_err(|error| PluginError::Engine(format!("{error:#}")))?;
        let cache = cache_dir
            .map(|dir| CompiledCache::open(dir, &engine))
            .transpose()
            .map_err(PluginError::Engine)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let stop = Arc::clone(&ticker_stop);
        thread::Builder::new()
            .name("plugin-epoch".to_owned())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|error| {
                PluginError::Engine(format!("cannot start the epoch ticker: {error}"))
            })?;
        Ok(PluginHost {
            inner: Arc::new(HostInner {
                engine,
                linker,
                cache,
                ticker_stop,
            }),
        })
    }

    /// Reads, compiles (or takes from the cache) and links `plugin`, checking that it is a
    /// component implementing `world` and importing nothing but WASI and `log`.
    pub fn load(&self, plugin: &PluginRef, world: World) -> Result<LoadedPlugin, PluginError> {
        let name = plugin.to_string();
        let load_error = |message: String| PluginError::Load {
            plugin: name.clone(),
            message,
        };
        let (bytes, fingerprint): (std::borrow::Cow<'static, [u8]>, String) = match plugin {
            PluginRef::Builtin(builtin_name) => match builtin(builtin_name) {
                Some(found) if found.world != world => {
                    return Err(PluginError::WrongWorld {
                        plugin: name,
                        expected: world,
                        message: format!("it implements the {} world", found.world),
                    });
                }
                Some(found) => (found.bytes.into(), found.fingerprint.to_owned()),
                None => {
                    return Err(load_error(format!(
                        "there is no builtin plugin `{builtin_name}`"
                    )));
                }
            },
            PluginRef::Path(path) => {
                let bytes = std::fs::read(path).map_err(|error| {
                    load_error(format!("cannot read {}: {error}", path.display()))
                })?;
                let fingerprint = hex::encode(Sha256::digest(&bytes));
                (bytes.into(), fingerprint)
            }
        };
        check_is_component(&bytes).map_err(load_error)?;
        let engine = &self.inner.engine;
        let cached = self
            .inner
            .cache
            .as_ref()
            .and_then(|cache| cache.load(engine, &fingerprint));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => {
                let component = Component::new(engine, &bytes)
                    .map_err(|error| load_error(format!("cannot compile: {error:#}")))?;
                if let Some(cache) = &self.inner.cache {
                    cache.store(&fingerprint, &component);
                }
                component
            }
        };
        let instance_pre = self.inner.linker.instantiate_pre(&component).map_err(|error| {
            load_error(format!(
                "it imports something the host does not provide (plugins may import only WASI and conduit:plugin/log): {error:#}"
            ))
        })?;
        let pre = match world_pre(instance_pre.clone(), world) {
            Ok(pre) => pre,
            Err(error) => {
                // Naming the world the component does implement turns a type-checking
                // message into the fix: the plugin is in the wrong section of the config.
                let implemented = World::ALL
                    .into_iter()
                    .filter(|other| *other != world)
                    .find(|other| world_pre(instance_pre.clone(), *other).is_ok());
                let hint = match implemented {
                    Some(other) => format!(
                        "; it is a {other} component, so it can only be used where a {other} plugin is expected"
                    ),
                    None => String::new(),
                };
                return Err(PluginError::WrongWorld {
                    plugin: name,
                    expected: world,
                    message: format!(
                        "it must export {} ({error:#}){hint}",
                        required_exports(world)
                    ),
                });
            }
        };
        Ok(LoadedPlugin {
            inner: Arc::new(LoadedInner {
                host: self.clone(),
                name: Arc::from(plugin.display_name()),
                reference: name,
                fingerprint,
                world,
                from_cache,
                pre,
            }),
        })
    }

    /// The world `plugin` implements, found by checking the component against each world's
    /// exports (a builtin knows its own). Compiles the component (or takes it from the cache,
    /// and stores it there, so that a following [`PluginHost::load`] does not compile again).
    pub fn world_of(&self, plugin: &PluginRef) -> Result<World, PluginError> {
        let name = plugin.to_string();
        let load_error = |message: String| PluginError::Load {
            plugin: name.clone(),
            message,
        };
        let path = match plugin {
            PluginRef::Builtin(builtin_name) => {
                return builtin(builtin_name)
                    .map(|found| found.world)
                    .ok_or_else(|| {
                        load_error(format!("there is no builtin plugin `{builtin_name}`"))
                    });
            }
            PluginRef::Path(path) => path,
        };
        let bytes = std::fs::read(path)
            .map_err(|error| load_error(format!("cannot read {}: {error}", path.display())))?;
        check_is_component(&bytes).map_err(load_error)?;
        let engine = &self.inner.engine;
        let fingerprint = hex::encode(Sha256::digest(&bytes));
        let cache = self.inner.cache.as_ref();
        let component = match cache.and_then(|cache| cache.load(engine, &fingerprint)) {
            Some(component) => component,
            None => {
                let component = Component::new(engine, &bytes)
                    .map_err(|error| load_error(format!("cannot compile: {error:#}")))?;
                if let Some(cache) = cache {
                    cache.store(&fingerprint, &component);
                }
                component
            }
        };
        let instance_pre = self.inner.linker.instantiate_pre(&component).map_err(|error| {
            load_error(format!(
                "it imports something the host does not provide (plugins may import only WASI and conduit:plugin/log): {error:#}"
            ))
        })?;
        World::ALL
            .into_iter()
            .find(|world| world_pre(instance_pre.clone(), *world).is_ok())
            .ok_or_else(|| {
                load_error(format!(
                    "it implements none of the plugin worlds: a record-mapper exports {}, an event-mapper {}, an opt-out-resolver {}",
                    required_exports(World::RecordMapper),
                    required_exports(World::EventMapper),
                    required_exports(World::OptOutResolver)
                ))
            })
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.inner.engine
    }
}

/// Checks a linked component against the exports of `world`.
fn world_pre(
    instance_pre: wasmtime::component::InstancePre<StoreState>,
    world: World,
) -> wasmtime::Result<WorldPre> {
    Ok(match world {
        // A 1.1 plugin's packed export is preferred; a 1.0 plugin has only `map`.
        World::RecordMapper => {
            match packed_record_mapper::PackedRecordMapperPre::new(instance_pre.clone()) {
                Ok(pre) => WorldPre::PackedRecord(pre),
                Err(_) => WorldPre::Record(record_mapper::RecordMapperPre::new(instance_pre)?),
            }
        }
        World::EventMapper => WorldPre::Event(event_mapper::EventMapperPre::new(instance_pre)?),
        World::OptOutResolver => {
            WorldPre::OptOut(opt_out_resolver::OptOutResolverPre::new(instance_pre)?)
        }
    })
}

/// The functions a world's component must export, as `wit/conduit-plugin.wit` declares them.
fn required_exports(world: World) -> &'static str {
    match world {
        World::RecordMapper => {
            "`configure(settings: string)` and `map(phase: phase, batch: record-batch)` (or, since 1.1, `map-packed(phase: phase, batch: packed-batch)`)"
        }
        World::EventMapper => "`configure(settings: string)` and `map(events: list<email-event>)`",
        World::OptOutResolver => {
            "`configure(settings: string)` and `resolve(contacts: list<contact-opt-out>)`"
        }
    }
}

/// Refuses anything but a component binary with a message saying what it is instead.
fn check_is_component(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly file".to_owned());
    }
    // Bytes 4..8: a 16-bit version and a 16-bit layer; layer 0 is a core module.
    if bytes[6..8] == [0, 0] {
        return Err(
            "a core WebAssembly module, not a component; build the plugin for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
                .to_owned(),
        );
    }
    Ok(())
}

/// The pre-linked instance factory for the world the plugin was loaded as.
pub(super) enum WorldPre {
    /// A record mapper of the 1.0 form (`map`).
    Record(record_mapper::RecordMapperPre<StoreState>),
    /// A record mapper of the packed form (`map-packed`, since 1.1).
    PackedRecord(packed_record_mapper::PackedRecordMapperPre<StoreState>),
    /// An event mapper.
    Event(event_mapper::EventMapperPre<StoreState>),
    /// An opt-out resolver.
    OptOut(opt_out_resolver::OptOutResolverPre<StoreState>),
}

impl WorldPre {
    /// The linked component, whichever world it was checked against.
    pub(super) fn instance_pre(&self) -> &wasmtime::component::InstancePre<StoreState> {
        match self {
            WorldPre::Record(pre) => pre.instance_pre(),
            WorldPre::PackedRecord(pre) => pre.instance_pre(),
            WorldPre::Event(pre) => pre.instance_pre(),
            WorldPre::OptOut(pre) => pre.instance_pre(),
        }
    }
}

/// A compiled, linked plugin checked against its world; configure it into a mapper.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub(super) inner: Arc<LoadedInner>,
}

pub(super) struct LoadedInner {
    pub(super) host: PluginHost,
    /// Short name for logs.
    pub(super) name: Arc<str>,
    /// `builtin:...` or the path, for errors.
    pub(super) reference: String,
    fingerprint: String,
    world: World,
    from_cache: bool,
    pub(super) pre: WorldPre,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("plugin", &self.inner.reference)
            .field("world", &self.inner.world)
            .field("fingerprint", &self.inner.fingerprint)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// The sha256 (hex) of the component bytes.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    /// The world the plugin was loaded as.
    pub fn world(&self) -> World {
        self.inner.world
    }

    /// True when the compiled code came from the on-disk cache rather than a compile.
    pub fn from_cache(&self) -> bool {
        self.inner.from_cache
    }

    /// True when the plugin takes packed batches (a record mapper exporting `map-packed`,
    /// contract 1.1); false for every other plugin, which the host calls through the 1.0 form.
    pub fn takes_packed_batches(&self) -> bool {
        matches!(self.inner.pre, WorldPre::PackedRecord(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_modules_and_other_files_are_told_apart_from_components() {
        let core = b"\0asm\x01\0\0\0";
        assert!(
            check_is_component(core)
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(
            check_is_component(b"PK\x03\x04 zip")
                .unwrap_err()
                .contains("not a WebAssembly")
        );
        assert!(check_is_component(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
