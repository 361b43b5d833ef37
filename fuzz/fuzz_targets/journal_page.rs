//! Any bytes as an event-journal page: the reader never panics, and an accepted page always
//! has a cursor to continue from, with every event carrying its ids and an RFC 3339 time.
#![no_main]

use conduit_connectors::campaign::parse_campaign_instant as parse_instant;
use conduit::fuzzing::journal_page;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = journal_page(data, Some("p0")) {
        assert!(page.cursor.is_some(), "an accepted page lost the cursor");
        for event in page.events {
            assert!(!event.id.trim().is_empty());
            assert!(!event.contact_key.trim().is_empty());
            assert!(parse_instant(&event.timestamp).is_some());
        }
    }
});
