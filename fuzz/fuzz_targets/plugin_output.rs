//! Any bytes decoded into a plugin's mapped batch: the host's check never panics, and what it
//! accepts is consistent (one outcome per input, non-empty keys, strings within the cap).
#![no_main]

use conduit::fuzzing::plugin_output;
use conduit_model::Outcome;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let inputs = usize::from(data.first().copied().unwrap_or(0) % 8);
    if let Ok(outcomes) = plugin_output(data) {
        assert_eq!(outcomes.len(), inputs);
        for outcome in outcomes {
            if let Outcome::Write { records } = outcome {
                assert!(records.len() <= 4);
                for record in records {
                    assert!(!record.key.is_empty() && record.key.len() <= 48);
                    assert!(!record.target.table.is_empty());
                }
            }
        }
    }
});
