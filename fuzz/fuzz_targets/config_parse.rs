//! Any bytes as `conduit.toml`: parsing and validation never panic, and every problem is
//! located at a real line and column of the file and names what is wrong.
#![no_main]

use conduit::fuzzing::{CONFIG_PATH, config_parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(problems) = config_parse(data) {
        assert!(!problems.is_empty(), "a refused config names no problem");
        let lines = text.split('\n').count();
        for problem in problems {
            assert_eq!(problem.file.to_str(), Some(CONFIG_PATH));
            assert!(problem.line >= 1 && problem.line <= lines, "{problem}");
            assert!(problem.column >= 1, "{problem}");
            assert!(!problem.message.is_empty(), "{problem}");
        }
    }
});
