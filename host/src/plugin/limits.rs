//! The per-call sandbox limits a workflow runs its plugin under.

use std::time::Duration;

use super::PluginError;

/// The largest memory cap a workflow may ask for: the pooling allocator reserves slots of
/// this size, so it is fixed when the engine starts.
pub const MAX_MEMORY_BYTES: usize = 1 << 30;

/// Limits for every call of one configured plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget of one call (configure, or one batch).
    pub deadline: Duration,
    /// The most linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// The most output records one input may produce.
    pub max_output_records_per_input: usize,
    /// The longest string (key, field name, value, reason) the host accepts, in bytes.
    pub max_string_bytes: usize,
    /// Log lines a plugin instance may write in a burst before rate limiting starts.
    pub log_burst: u32,
    /// Log lines per second a plugin instance may write after its burst.
    pub log_lines_per_second: u32,
    /// Longer log lines are truncated to this many bytes.
    pub max_log_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            deadline: Duration::from_secs(2),
            memory_bytes: 64 << 20,
            max_output_records_per_input: 16,
            max_string_bytes: 1 << 20,
            log_burst: 100,
            log_lines_per_second: 10,
            max_log_line_bytes: 1024,
        }
    }
}

impl Limits {
    /// Checks that the limits are usable, naming the one that is not.
    pub fn validate(&self) -> Result<(), PluginError> {
        if self.deadline.is_zero() {
            return Err(PluginError::Limits(
                "deadline must be above zero".to_owned(),
            ));
        }
        if self.memory_bytes == 0 || self.memory_bytes > MAX_MEMORY_BYTES {
            return Err(PluginError::Limits(format!(
                "memory_bytes must be between 1 and {MAX_MEMORY_BYTES}, got {}",
                self.memory_bytes
            )));
        }
        if self.max_output_records_per_input == 0 {
            return Err(PluginError::Limits(
                "max_output_records_per_input must be at least 1".to_owned(),
            ));
        }
        if self.max_string_bytes == 0 {
            return Err(PluginError::Limits(
                "max_string_bytes must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }
}
