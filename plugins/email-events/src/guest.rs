//! The wit-bindgen glue: exports the `event-mapper` world around [`EventMapper`].

use std::cell::Cell;

use crate::EventMapper;

wit_bindgen::generate!({
    path: "../../wit",
    world: "event-mapper",
});

use conduit::plugin::types as wit;

conduit_plugin::guest_conversions!();

thread_local! {
    /// The instance's settings, set by `configure` (the host creates a fresh instance per batch).
    static MAPPER: Cell<Option<EventMapper>> = const { Cell::new(None) };
}

struct Component;

impl Guest for Component {
    fn configure(settings: String) -> Result<(), String> {
        let mapper = EventMapper::configure(&settings)?;
        MAPPER.with(|slot| slot.set(Some(mapper)));
        Ok(())
    }

    fn map(events: Vec<wit::EmailEvent>) -> Result<wit::MappedBatch, String> {
        let mapper = MAPPER
            .with(Cell::get)
            .ok_or_else(|| "map called before configure".to_owned())?;
        let events = events.into_iter().map(event_from_wit).collect();
        Ok(mapped_to_wit(mapper.map(events)))
    }
}

export!(Component);
