//! Any bytes as an opt-out export file: the reader never panics, every refusal names the file,
//! and every change it accepts has a CRM ID, an opt-out attribute and an RFC 3339 time.
#![no_main]

use conduit_connectors::campaign::{is_opt_out_attribute, parse_campaign_instant as parse_instant};
use conduit::fuzzing::{EXPORT_FILE_NAME, optout_csv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match optout_csv(data) {
        Ok(changes) => {
            for change in changes {
                assert!(!change.contact_key.is_empty());
                assert!(is_opt_out_attribute(&change.attribute));
                assert!(parse_instant(&change.changed_at).is_some());
            }
        }
        Err(error) => assert!(error.contains(EXPORT_FILE_NAME), "{error}"),
    }
});
