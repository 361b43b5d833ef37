//! The plugin SDK: plain-Rust mirrors of the `conduit:plugin` WIT types, so that mapping logic
//! compiles and is tested natively; a builder for mapped batches; strict settings parsing; an
//! RFC 3339 parser; and [`guest_conversions!`], the glue between these types and the types
//! wit-bindgen generates inside a guest.
//!
//! This crate owns no mapping rule: each plugin crate does.

pub mod datetime;
mod glue;
pub mod settings;
mod types;

pub use types::*;
