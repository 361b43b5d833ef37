//! The wit-bindgen glue: exports the `packed-record-mapper` world (1.1) around [`TableMapper`].

use std::cell::RefCell;

use crate::TableMapper;

wit_bindgen::generate!({
    path: "../../wit",
    world: "packed-record-mapper",
});

use conduit::plugin::packed;
use conduit::plugin::types as wit;

conduit_plugin::guest_conversions!();
conduit_plugin::packed_guest_conversions!();

// Every string of a page is its own allocation in the guest (the SDK's rows own their text),
// and talc serves them in fewer instructions than dlmalloc, wasm32's default allocator.
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

thread_local! {
    /// The instance's mapping, set by `configure` (the host keeps an instance for many batches
    /// and configures each new one).
    static MAPPER: RefCell<Option<TableMapper>> = const { RefCell::new(None) };
}

struct Component;

impl Guest for Component {
    fn configure(settings: String) -> Result<(), String> {
        let mapper = TableMapper::configure(&settings)?;
        MAPPER.with(|slot| *slot.borrow_mut() = Some(mapper));
        Ok(())
    }

    fn map_packed(
        phase: wit::Phase,
        batch: packed::PackedBatch,
    ) -> Result<packed::PackedMappedBatch, String> {
        MAPPER.with(|slot| match slot.borrow().as_ref() {
            Some(mapper) => mapper
                .map(phase_from_wit(phase), batch_from_packed(batch)?)
                .map(mapped_to_packed),
            None => Err("map called before configure".to_owned()),
        })
    }
}

export!(Component);
