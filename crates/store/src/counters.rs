//! Reading and changing a workflow's counters inside a write transaction, so that every count
//! changes in the same commit as the records it counts.

use redb::{ReadableTable, WriteTransaction};

use super::StoreError;
use super::tables::COUNTERS;

/// A counter's value (0 when never set).
pub(super) fn counter_get(
    write: &WriteTransaction,
    wf: &str,
    name: &str,
) -> Result<u64, StoreError> {
    let table = write.open_table(COUNTERS)?;
    let value = table.get((wf, name))?.map(|v| v.value()).unwrap_or(0);
    Ok(value)
}

/// Sets a counter.
pub(super) fn counter_set(
    write: &WriteTransaction,
    wf: &str,
    name: &str,
    value: u64,
) -> Result<(), StoreError> {
    let mut table = write.open_table(COUNTERS)?;
    table.insert((wf, name), value)?;
    Ok(())
}

/// Adds `delta` to a counter, never below zero.
pub(super) fn counter_add(
    write: &WriteTransaction,
    wf: &str,
    name: &str,
    delta: i64,
) -> Result<(), StoreError> {
    if delta == 0 {
        return Ok(());
    }
    let current = counter_get(write, wf, name)?;
    counter_set(write, wf, name, current.saturating_add_signed(delta))
}
