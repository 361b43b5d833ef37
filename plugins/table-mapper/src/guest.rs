//! The wit-bindgen glue: exports the `record-mapper` world around [`TableMapper`].

use std::cell::RefCell;

use crate::TableMapper;

wit_bindgen::generate!({
    path: "../../wit",
    world: "record-mapper",
});

use conduit::plugin::types as wit;

conduit_plugin::guest_conversions!();

thread_local! {
    /// The instance's mapping, set by `configure` (the host creates a fresh instance per batch).
    static MAPPER: RefCell<Option<TableMapper>> = const { RefCell::new(None) };
}

struct Component;

impl Guest for Component {
    fn configure(settings: String) -> Result<(), String> {
        let mapper = TableMapper::configure(&settings)?;
        MAPPER.with(|slot| *slot.borrow_mut() = Some(mapper));
        Ok(())
    }

    fn map(phase: wit::Phase, batch: wit::RecordBatch) -> Result<wit::MappedBatch, String> {
        MAPPER.with(|slot| match slot.borrow().as_ref() {
            Some(mapper) => mapper
                .map(phase_from_wit(phase), batch_from_wit(batch))
                .map(mapped_to_wit),
            None => Err("map called before configure".to_owned()),
        })
    }
}

export!(Component);
