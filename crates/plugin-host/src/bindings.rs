//! Typed wasmtime bindings of the plugin worlds. The shared `types` and `log` interfaces are
//! generated once (with `record_mapper`) and reused by the other worlds.

/// Bindings of the `record-mapper` world, and the shared `types` / `log` interfaces.
pub(super) mod record_mapper {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "record-mapper",
    });
}

/// Bindings of the `packed-record-mapper` world (1.1.0), and the `packed` interface.
pub(super) mod packed_record_mapper {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "packed-record-mapper",
        with: {
            "conduit:plugin/types": super::record_mapper::conduit::plugin::types,
            "conduit:plugin/log": super::record_mapper::conduit::plugin::log,
        },
    });
}

/// Bindings of the `event-mapper` world.
pub(super) mod event_mapper {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "event-mapper",
        with: {
            "conduit:plugin/types": super::record_mapper::conduit::plugin::types,
            "conduit:plugin/log": super::record_mapper::conduit::plugin::log,
        },
    });
}

/// Bindings of the `opt-out-resolver` world.
pub(super) mod opt_out_resolver {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "opt-out-resolver",
        with: {
            "conduit:plugin/types": super::record_mapper::conduit::plugin::types,
            "conduit:plugin/log": super::record_mapper::conduit::plugin::log,
        },
    });
}

pub(super) use packed_record_mapper::conduit::plugin::packed;
pub(super) use record_mapper::conduit::plugin::log;
pub(super) use record_mapper::conduit::plugin::types as wit;
