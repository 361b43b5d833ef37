//! Conduit: an integration host that keeps Microsoft Dynamics 365 and Adobe Campaign Standard in
//! sync through three workflows (Ingress, Egress, Opt-in/out) whose mapping logic runs as
//! sandboxed WebAssembly components.
//!
//! Data flows one way: [`connector`] (read) -> [`plugin`] (map) -> [`store`] (durable queue)
//! -> [`connector`] (write), driven by [`workflow`] and configured by [`config`].

pub mod admin;
pub mod config;
pub mod connector;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod model;
pub mod plugin;
pub mod private;
pub mod retry;
pub mod runtime;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod workflow;
