//! The sandboxed plugin runtime: one wasmtime engine, typed bindings for the plugin worlds (a
//! record mapper through the packed form of contract 1.1 when it offers it, `packed.rs`),
//! limits and a compiled-component cache.
//!
//! The workflow engine loads a plugin once ([`PluginHost::load`]), configures it into a
//! mapper per workflow ([`LoadedPlugin::record_mapper`] and friends) and calls the mapper once
//! per page of input from `spawn_blocking`. Each call runs on a thread of its own (outside
//! any async runtime, a panic turned into a trap) in a fresh instance with its own deadline
//! and memory cap; everything the plugin returns is validated, and every text it hands back
//! capped ([`cap`]), before the host trusts it. This crate knows the data model and WIT, not HTTP, redb or workflows.

mod bindings;
mod builtin;
mod cache;
mod capped;
mod convert;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_input;
mod host;
mod limits;
mod mappers;
mod output;
mod packed;
#[cfg(test)]
mod proptests;
mod reference;
mod sandbox;
mod untrusted;

pub use error::PluginError;
pub use host::{Allocator, LoadedPlugin, PluginHost};
pub use limits::Limits;
pub use mappers::{CALLS_PER_INSTANCE, EventMapper, OptOutResolver, RecordMapper};
pub use reference::{PluginRef, World};
pub use untrusted::{MAX_MESSAGE_BYTES, cap};

#[cfg(test)]
mod tests {
    use super::*;

    fn shareable<T: Send + Sync + Clone>() {}

    /// A mapper keeps its instance's store, which one thread uses at a time: it moves between
    /// threads but is not shared.
    fn movable<T: Send + Clone>() {}

    #[test]
    fn host_plugins_and_mappers_can_move_into_spawn_blocking() {
        shareable::<PluginHost>();
        shareable::<LoadedPlugin>();
        movable::<RecordMapper>();
        movable::<EventMapper>();
        movable::<OptOutResolver>();
        shareable::<PluginError>();
    }
}
