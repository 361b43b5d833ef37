//! Small foundations that several Conduit crates share and that know nothing of the services,
//! the plugins or the workflows: files and folders readable by the host's user only
//! ([`private`]), the one retry policy of connectors and stages ([`retry`]), and the process-wide
//! metric families the admin surface renders ([`telemetry`]); with the `https` feature, the TLS
//! listener the admin API and the simulators serve HTTPS with (`https`).

#[cfg(feature = "https")]
pub mod https;
pub mod private;
pub mod retry;
pub mod telemetry;
