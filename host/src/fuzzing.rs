//! Entry points for the fuzz targets in `fuzz/` (and their property tests): each hands
//! untrusted bytes to one of the host's parsers, through the same code the running host uses,
//! and returns that parser's verdict. The host itself never calls these: the module exists
//! only with the `fuzzing` feature, which `fuzz/` turns on. The parsers' own entry points live
//! in their crates (`conduit_connectors::fuzzing`, `conduit_plugin_host::fuzz_input`); this
//! module gathers them under one name for the targets.

use std::path::Path;

use conduit_config::{Config, Problem};

pub use conduit_connectors::fuzzing::*;
pub use conduit_plugin_host::fuzz_input::check_output_bytes as plugin_output;

/// The file name the config entry point reports problems against.
pub const CONFIG_PATH: &str = "/fuzz/conduit.toml";

/// Parses and validates config text (invalid UTF-8 is replaced, as a reader of the file would
/// refuse it before parsing).
pub fn config_parse(data: &[u8]) -> Result<Config, Vec<Problem>> {
    Config::parse(Path::new(CONFIG_PATH), &String::from_utf8_lossy(data))
}
