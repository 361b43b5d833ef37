//! Measuring helpers shared by the benchmarks that run servers beside the code they measure.

use std::time::Duration;

/// User + system CPU time of a process, read from its `/proc/<pid>/stat` (or `/proc/self/stat`);
/// zero when the file cannot be read.
pub fn cpu_time_of(stat_path: &str) -> Duration {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> u64 {
        fields
            .get(index)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    // Linux reports in USER_HZ, which is 100 on every mainstream configuration.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// User + system CPU time of this process so far.
pub fn process_cpu_time() -> Duration {
    cpu_time_of("/proc/self/stat")
}
