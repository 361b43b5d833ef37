//! The wit-bindgen bindings of the world selected by the crate feature, re-exported for
//! plugins that want the raw WIT types; the `export_*!` macros build on them.
//!
//! Each module is generated only when its feature is on, because a world's component type is
//! embedded in every binary that links its bindings.

/// The record-mapper role (feature `record-mapper`), in its packed world
/// `packed-record-mapper` (1.1): the host calls `map-packed`, so a batch crosses the boundary
/// in a few copies instead of one per string.
#[cfg(feature = "record-mapper")]
pub mod record_mapper {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "packed-record-mapper",
        runtime_path: "conduit_plugin::__wit_bindgen::rt",
        export_macro_name: "__export_record_mapper_world",
        pub_export_macro: true,
        default_bindings_module: "conduit_plugin::bindings::record_mapper",
    });

    use self::conduit::plugin::packed;
    use self::conduit::plugin::types as wit;
    crate::guest_conversions!();
    crate::packed_guest_conversions!();
}

/// The `event-mapper` world (feature `event-mapper`).
#[cfg(feature = "event-mapper")]
pub mod event_mapper {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "event-mapper",
        runtime_path: "conduit_plugin::__wit_bindgen::rt",
        export_macro_name: "__export_event_mapper_world",
        pub_export_macro: true,
        default_bindings_module: "conduit_plugin::bindings::event_mapper",
    });

    use self::conduit::plugin::types as wit;
    crate::guest_conversions!();
}

/// The `opt-out-resolver` world (feature `opt-out-resolver`).
#[cfg(feature = "opt-out-resolver")]
pub mod opt_out_resolver {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "opt-out-resolver",
        runtime_path: "conduit_plugin::__wit_bindgen::rt",
        export_macro_name: "__export_opt_out_resolver_world",
        pub_export_macro: true,
        default_bindings_module: "conduit_plugin::bindings::opt_out_resolver",
    });

    use self::conduit::plugin::types as wit;
    crate::guest_conversions!();
}
