//! The wit-bindgen glue: exports the `opt-out-resolver` world around [`Resolver`].

use std::cell::RefCell;

use crate::Resolver;

wit_bindgen::generate!({
    path: "../../wit",
    world: "opt-out-resolver",
});

use conduit::plugin::types as wit;

conduit_plugin::guest_conversions!();

thread_local! {
    /// The instance's resolver, set by `configure` (the host creates a fresh instance per batch).
    static RESOLVER: RefCell<Option<Resolver>> = const { RefCell::new(None) };
}

struct Component;

impl Guest for Component {
    fn configure(settings: String) -> Result<(), String> {
        let resolver = Resolver::configure(&settings)?;
        RESOLVER.with(|slot| *slot.borrow_mut() = Some(resolver));
        Ok(())
    }

    fn resolve(contacts: Vec<wit::ContactOptOut>) -> Result<wit::MappedBatch, String> {
        RESOLVER.with(|slot| match slot.borrow().as_ref() {
            Some(resolver) => {
                let contacts = contacts.into_iter().map(contact_from_wit).collect();
                Ok(mapped_to_wit(resolver.resolve(contacts)))
            }
            None => Err("resolve called before configure".to_owned()),
        })
    }
}

export!(Component);
