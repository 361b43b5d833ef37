//! Conduit: an integration host that keeps Microsoft Dynamics 365 and Adobe Campaign Standard in
//! sync through three workflows (Ingress, Egress, Opt-in/out) whose mapping logic runs as
//! sandboxed WebAssembly components.
//!
//! This crate is the thin top of the workspace: the `conduit` binary (its CLI lives in
//! `src/cli/`) and [`runtime`], the one place that wires the concrete parts of the lower crates
//! together. A record's path through them: `conduit-connectors` (read) -> `conduit-plugin-host`
//! (map) -> `conduit-store` (durable queue) -> `conduit-connectors` (write), driven by
//! `conduit-engine`, configured by `conduit-config`, watched through `conduit-admin`. See
//! ARCHITECTURE.md for the map.

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod runtime;
