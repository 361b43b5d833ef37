//! The Conduit plugin SDK (`conduit-plugin`): everything a mapping plugin needs.
//!
//! - plain-Rust mirrors of the `conduit:plugin@1.1.0` WIT types, so that mapping logic
//!   compiles and is unit-tested natively;
//! - helpers: typed [`Value`] accessors, [`Outcome`] builders, [`MappedBatchBuilder`], strict
//!   [`settings`] parsing (the plugin's own table strictly, the host's keys leniently), an
//!   RFC 3339 [`datetime`] parser and [`log`];
//! - the generated bindings ([`bindings`], on wasm32, for the world chosen by the crate
//!   feature `record-mapper`, `event-mapper` or `opt-out-resolver`) and the macros
//!   [`export_record_mapper!`], [`export_event_mapper!`] and [`export_opt_out_resolver!`]
//!   that export a type implementing [`RecordMapper`], [`EventMapper`] or [`OptOutResolver`].
//!
//! A whole record-mapper plugin (Cargo feature `record-mapper`, `crate-type = ["cdylib",
//! "rlib"]`):
//!
//! ```
//! use conduit_plugin::{
//!     MappedBatch, MappedBatchBuilder, Outcome, OutputRecord, Phase, RecordBatch,
//!     RecordMapper, Target, settings,
//! };
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Settings { destination: String }
//!
//! /// Maps contacts' e-mail addresses to Campaign profiles.
//! pub struct Contacts { target: Target }
//!
//! impl RecordMapper for Contacts {
//!     fn configure(json: &str) -> Result<Self, String> {
//!         let Settings { destination } = settings::parse(json)?;
//!         Ok(Contacts { target: Target::campaign(&destination, "externalId") })
//!     }
//!
//!     fn map(&self, _phase: Phase, batch: RecordBatch) -> Result<MappedBatch, String> {
//!         let mut out = MappedBatchBuilder::with_capacity(batch.rows.len());
//!         let target = out.target(&self.target);
//!         let (email_in, email_out) = (batch.column("emailaddress1"), out.column("email"));
//!         for row in &batch.rows {
//!             out.push(match row.get(email_in).as_text() {
//!                 Some(email) if email.contains('@') => Outcome::write(
//!                     OutputRecord::upsert(target, &row.key).field(email_out, email),
//!                 ),
//!                 Some(_) => Outcome::reject("emailaddress1 is not an e-mail address"),
//!                 None => Outcome::skip("no emailaddress1"),
//!             });
//!         }
//!         Ok(out.finish())
//!     }
//! }
//!
//! conduit_plugin::export_record_mapper!(Contacts);
//! # let mapper = Contacts::configure(r#"{"destination": "profile"}"#).unwrap();
//! # let batch = RecordBatch {
//! #     table: "contact".into(),
//! #     columns: vec!["emailaddress1".into()],
//! #     rows: vec![conduit_plugin::Row::upsert("c1", vec!["a@example.com".into()])],
//! # };
//! # let mapped = mapper.map(Phase::Initial, batch).unwrap();
//! # assert_eq!(mapped.columns, ["email"]);
//! ```
//!
//! This crate owns no mapping rule: each plugin crate does.

// The generated bindings name their runtime through this crate's own name, so that plugin
// crates need no direct wit-bindgen dependency.
extern crate self as conduit_plugin;

#[cfg(target_arch = "wasm32")]
pub mod bindings;
pub mod cells;
pub mod datetime;
mod export;
mod glue;
mod helpers;
pub mod log;
pub mod settings;
mod types;

pub use export::{EventMapper, OptOutResolver, RecordMapper};
pub use types::*;

/// The wit-bindgen runtime the generated bindings use (not part of the SDK's API).
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;
