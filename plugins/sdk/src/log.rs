//! `log`: lines to the host log, tagged with the plugin's name (the WIT `log` import of the
//! world the crate feature selects). Natively, and on wasm32 without a world feature, the line
//! goes to stderr, which the host logs too.

/// How important a log line is (WIT `log-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Detail for the plugin's author.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected the plugin handled.
    Warn,
    /// Something failed.
    Error,
}

/// Writes `message` at `level` (rate-limited by the host: a burst of 100 lines per call, then
/// 10 lines/s).
pub fn write(level: Level, message: &str) {
    imp::write(level, message);
}

/// [`write`] at [`Level::Debug`].
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// [`write`] at [`Level::Info`].
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// [`write`] at [`Level::Warn`].
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// [`write`] at [`Level::Error`].
pub fn error(message: &str) {
    write(Level::Error, message);
}

#[cfg(all(
    target_arch = "wasm32",
    any(
        feature = "record-mapper",
        feature = "event-mapper",
        feature = "opt-out-resolver"
    )
))]
mod imp {
    #[cfg(feature = "event-mapper")]
    use crate::bindings::event_mapper::conduit::plugin::{log, types::LogLevel};
    #[cfg(all(feature = "opt-out-resolver", not(feature = "event-mapper")))]
    use crate::bindings::opt_out_resolver::conduit::plugin::{log, types::LogLevel};
    #[cfg(all(
        feature = "record-mapper",
        not(feature = "event-mapper"),
        not(feature = "opt-out-resolver")
    ))]
    use crate::bindings::record_mapper::conduit::plugin::{log, types::LogLevel};

    pub fn write(level: super::Level, message: &str) {
        let level = match level {
            super::Level::Debug => LogLevel::Debug,
            super::Level::Info => LogLevel::Info,
            super::Level::Warn => LogLevel::Warn,
            super::Level::Error => LogLevel::Error,
        };
        log::log(level, message);
    }
}

#[cfg(not(all(
    target_arch = "wasm32",
    any(
        feature = "record-mapper",
        feature = "event-mapper",
        feature = "opt-out-resolver"
    )
)))]
mod imp {
    pub fn write(level: super::Level, message: &str) {
        eprintln!("[{level:?}] {message}");
    }
}
