//! Any bytes as a Dataverse change-tracking page (and as a picklist option set): the readers
//! never panic, and a page they accept has one value per requested column in every row,
//! upserts before deletes.
#![no_main]

use conduit::fuzzing::{contact_columns, dataverse_option_set, dataverse_page};
use conduit_model::Operation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dataverse_option_set(data);
    if let Ok(page) = dataverse_page(data) {
        let columns = contact_columns();
        assert_eq!(page.batch.columns, columns);
        let mut seen_delete = false;
        for row in &page.batch.rows {
            assert_eq!(row.values.len(), columns.len());
            if row.op == Operation::Delete {
                seen_delete = true;
            } else {
                assert!(!seen_delete, "an upsert follows a delete");
            }
        }
    }
});
