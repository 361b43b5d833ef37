//! The three plugin roles as Rust traits, and the `export_*!` macros that turn a type
//! implementing one into the component's exports (on wasm32; natively they expand to
//! nothing, so the same crate is unit-tested with `cargo test`).

use crate::{ContactOptOut, EmailEvent, MappedBatch, Phase, RecordBatch};

/// A `record-mapper` plugin: maps Dynamics 365 rows to Campaign records (Ingress).
pub trait RecordMapper: Sized + 'static {
    /// Validates the settings JSON; the error names the offending setting.
    fn configure(settings: &str) -> Result<Self, String>;
    /// Maps one page of rows: exactly one outcome per row, in row order.
    fn map(&self, phase: Phase, batch: RecordBatch) -> Result<MappedBatch, String>;
}

/// An `event-mapper` plugin: maps Campaign email events to Dynamics 365 activities (Egress).
pub trait EventMapper: Sized + 'static {
    /// Validates the settings JSON; the error names the offending setting.
    fn configure(settings: &str) -> Result<Self, String>;
    /// Maps one page of events: exactly one outcome per event, in event order.
    fn map(&self, events: Vec<EmailEvent>) -> Result<MappedBatch, String>;
}

/// An `opt-out-resolver` plugin: decides which opt-out values go to which side.
pub trait OptOutResolver: Sized + 'static {
    /// Validates the settings JSON; the error names the offending setting.
    fn configure(settings: &str) -> Result<Self, String>;
    /// Resolves one batch: exactly one outcome per contact, in input order.
    fn resolve(&self, contacts: Vec<ContactOptOut>) -> Result<MappedBatch, String>;
}

/// Exports a [`RecordMapper`] type as the component's `packed-record-mapper` world (1.1; needs
/// the SDK feature `record-mapper`).
#[macro_export]
macro_rules! export_record_mapper {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use world::conduit::plugin::{packed, types as wit};
            use $crate::bindings::record_mapper as world;

            ::std::thread_local! {
                // Set by `configure`; the host makes a fresh instance per batch.
                static INSTANCE: ::std::cell::RefCell<::std::option::Option<$plugin>> =
                    const { ::std::cell::RefCell::new(None) };
            }

            struct Component;

            impl world::Guest for Component {
                fn configure(settings: String) -> Result<(), String> {
                    let plugin = <$plugin as $crate::RecordMapper>::configure(&settings)?;
                    INSTANCE.with(|slot| *slot.borrow_mut() = Some(plugin));
                    Ok(())
                }

                fn map_packed(
                    phase: wit::Phase,
                    batch: packed::PackedBatch,
                ) -> Result<packed::PackedMappedBatch, String> {
                    INSTANCE.with(|slot| match slot.borrow().as_ref() {
                        Some(plugin) => $crate::RecordMapper::map(
                            plugin,
                            world::phase_from_wit(phase),
                            world::batch_from_packed(batch)?,
                        )
                        .map(world::mapped_to_packed),
                        None => Err("map called before configure".to_owned()),
                    })
                }
            }

            $crate::bindings::record_mapper::__export_record_mapper_world!(Component);
        };
    };
}

/// Exports an [`EventMapper`] type as the component's `event-mapper` world (needs the SDK
/// feature `event-mapper`).
#[macro_export]
macro_rules! export_event_mapper {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use world::conduit::plugin::types as wit;
            use $crate::bindings::event_mapper as world;

            ::std::thread_local! {
                // Set by `configure`; the host makes a fresh instance per batch.
                static INSTANCE: ::std::cell::RefCell<::std::option::Option<$plugin>> =
                    const { ::std::cell::RefCell::new(None) };
            }

            struct Component;

            impl world::Guest for Component {
                fn configure(settings: String) -> Result<(), String> {
                    let plugin = <$plugin as $crate::EventMapper>::configure(&settings)?;
                    INSTANCE.with(|slot| *slot.borrow_mut() = Some(plugin));
                    Ok(())
                }

                fn map(events: Vec<wit::EmailEvent>) -> Result<wit::MappedBatch, String> {
                    INSTANCE.with(|slot| match slot.borrow().as_ref() {
                        Some(plugin) => $crate::EventMapper::map(
                            plugin,
                            events.into_iter().map(world::event_from_wit).collect(),
                        )
                        .map(world::mapped_to_wit),
                        None => Err("map called before configure".to_owned()),
                    })
                }
            }

            $crate::bindings::event_mapper::__export_event_mapper_world!(Component);
        };
    };
}

/// Exports an [`OptOutResolver`] type as the component's `opt-out-resolver` world (needs the
/// SDK feature `opt-out-resolver`).
#[macro_export]
macro_rules! export_opt_out_resolver {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use world::conduit::plugin::types as wit;
            use $crate::bindings::opt_out_resolver as world;

            ::std::thread_local! {
                // Set by `configure`; the host makes a fresh instance per batch.
                static INSTANCE: ::std::cell::RefCell<::std::option::Option<$plugin>> =
                    const { ::std::cell::RefCell::new(None) };
            }

            struct Component;

            impl world::Guest for Component {
                fn configure(settings: String) -> Result<(), String> {
                    let plugin = <$plugin as $crate::OptOutResolver>::configure(&settings)?;
                    INSTANCE.with(|slot| *slot.borrow_mut() = Some(plugin));
                    Ok(())
                }

                fn resolve(contacts: Vec<wit::ContactOptOut>) -> Result<wit::MappedBatch, String> {
                    INSTANCE.with(|slot| match slot.borrow().as_ref() {
                        Some(plugin) => $crate::OptOutResolver::resolve(
                            plugin,
                            contacts.into_iter().map(world::contact_from_wit).collect(),
                        )
                        .map(world::mapped_to_wit),
                        None => Err("resolve called before configure".to_owned()),
                    })
                }
            }

            $crate::bindings::opt_out_resolver::__export_opt_out_resolver_world!(Component);
        };
    };
}
