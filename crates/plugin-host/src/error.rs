//! Why a plugin could not be loaded, configured or run, classified so that the workflow
//! engine knows when to retry a batch record by record.

use std::time::Duration;

use super::World;

/// A plugin failure; every message names the plugin.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    /// The wasmtime engine could not be set up.
    #[error("cannot start the plugin engine: {0}")]
    Engine(String),
    /// The component could not be read, compiled or linked (not a component, unknown imports...).
    #[error("plugin {plugin}: cannot load: {message}")]
    Load {
        /// The plugin reference.
        plugin: String,
        /// What went wrong.
        message: String,
    },
    /// The component does not export the functions of the world it is used as.
    #[error("plugin {plugin} does not implement the {expected} world: {message}")]
    WrongWorld {
        /// The plugin reference.
        plugin: String,
        /// The world the configuration uses it as.
        expected: World,
        /// What is missing or mistyped.
        message: String,
    },
    /// The limits asked for are outside what the engine supports.
    #[error("invalid plugin limits: {0}")]
    Limits(String),
    /// The plugin refused its settings.
    #[error("plugin {plugin} rejected its settings: {message}")]
    Configure {
        /// The plugin reference.
        plugin: String,
        /// The plugin's message, naming the bad setting.
        message: String,
    },
    /// A call ran past its deadline and was interrupted.
    #[error("plugin {plugin} ran past its deadline of {deadline:?} and was stopped")]
    DeadlineExceeded {
        /// The plugin reference.
        plugin: String,
        /// The deadline in force.
        deadline: Duration,
    },
    /// A call needed more memory than the cap allows.
    #[error("plugin {plugin} needed more than its memory cap of {limit_bytes} bytes")]
    MemoryLimit {
        /// The plugin reference.
        plugin: String,
        /// The cap in force.
        limit_bytes: usize,
    },
    /// The plugin trapped (a panic, an out-of-bounds access, ...).
    #[error("plugin {plugin} trapped: {message}")]
    Trap {
        /// The plugin reference.
        plugin: String,
        /// The trap and, for a panic, the plugin's panic message.
        message: String,
    },
    /// The plugin returned something the host refuses to trust.
    #[error("plugin {plugin} returned invalid output: {problem}")]
    InvalidOutput {
        /// The plugin reference.
        plugin: String,
        /// What was wrong.
        problem: String,
    },
    /// The plugin reported that it cannot handle the batch as a whole.
    #[error("plugin {plugin} failed the batch: {message}")]
    Batch {
        /// The plugin reference.
        plugin: String,
        /// The plugin's message.
        message: String,
    },
}

impl PluginError {
    /// True when the failure belongs to one batch: the engine then retries it record by
    /// record and dead-letters the records that still fail.
    pub fn is_batch_failure(&self) -> bool {
        matches!(
            self,
            PluginError::DeadlineExceeded { .. }
                | PluginError::MemoryLimit { .. }
                | PluginError::Trap { .. }
                | PluginError::InvalidOutput { .. }
                | PluginError::Batch { .. }
        )
    }
}
