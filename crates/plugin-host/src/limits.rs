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
    /// The most bytes of strings one call's whole output may hold (keys, values, reasons).
    pub max_output_bytes: usize,
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
            // A page of 500 rows x 16 records of about 1 KiB is 8 MiB: twice that is plenty,
            // and it keeps one batch from filling the queue with hundreds of MiB.
            max_output_bytes: 16 << 20,
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
        if self.max_output_bytes < self.max_string_bytes {
            return Err(PluginError::Limits(format!(
                "max_output_bytes ({}) must be at least max_string_bytes ({})",
                self.max_output_bytes, self.max_string_bytes
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_cap_below_the_string_cap_is_refused_naming_both() {
        let limits = Limits {
            max_string_bytes: 100,
            max_output_bytes: 99,
            ..Limits::default()
        };
        let error = limits.validate().unwrap_err().to_string();
        assert!(error.contains("max_output_bytes (99)"), "{error}");
        assert!(error.contains("max_string_bytes (100)"), "{error}");
        assert!(Limits::default().validate().is_ok());
    }
}
