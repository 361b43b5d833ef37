//! Naming plugins: the three worlds a plugin can implement, and where a plugin comes from
//! (`builtin:<name>` or a `.wasm` path).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::PluginError;

/// The capability a plugin implements: one world of `wit/conduit-plugin.wit` (defined in
/// `conduit-model`, whose builtin table names it too).
pub use conduit_model::World;

/// Where a plugin's component comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PluginRef {
    /// A reference plugin compiled into the binary, e.g. `builtin:table-mapper`.
    Builtin(String),
    /// A component file on disk.
    Path(PathBuf),
}

impl PluginRef {
    /// A short name for logs and errors: the builtin's name or the file's stem.
    pub fn display_name(&self) -> String {
        match self {
            PluginRef::Builtin(name) => name.clone(),
            PluginRef::Path(path) => path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
        }
    }
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginRef::Builtin(name) => write!(f, "builtin:{name}"),
            PluginRef::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

impl FromStr for PluginRef {
    type Err = PluginError;

    /// Parses `builtin:<name>` (a known builtin) or a path ending in `.wasm`.
    fn from_str(text: &str) -> Result<PluginRef, PluginError> {
        let text = text.trim();
        if let Some(name) = text.strip_prefix(conduit_model::BUILTIN_PREFIX) {
            if conduit_model::builtin(name).is_none() {
                return Err(PluginError::Load {
                    plugin: text.to_owned(),
                    message: format!(
                        "there is no builtin plugin `{name}`; the builtins are {}",
                        conduit_model::builtin_references()
                    ),
                });
            }
            return Ok(PluginRef::Builtin(name.to_owned()));
        }
        if text.is_empty() {
            return Err(PluginError::Load {
                plugin: String::new(),
                message: "the plugin reference is empty; give `builtin:<name>` or a path to a .wasm component".to_owned(),
            });
        }
        let path = PathBuf::from(text);
        if path.extension().and_then(|ext| ext.to_str()) != Some("wasm") {
            return Err(PluginError::Load {
                plugin: text.to_owned(),
                message: "a plugin is `builtin:<name>` or a path to a .wasm component".to_owned(),
            });
        }
        Ok(PluginRef::Path(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_refs_parse_builtins_and_wasm_paths() {
        assert_eq!(
            "builtin:table-mapper".parse::<PluginRef>().unwrap(),
            PluginRef::Builtin("table-mapper".into())
        );
        assert_eq!(
            "plugins/custom.wasm".parse::<PluginRef>().unwrap(),
            PluginRef::Path("plugins/custom.wasm".into())
        );
        let unknown = "builtin:nope".parse::<PluginRef>().unwrap_err().to_string();
        assert!(unknown.contains("builtin:table-mapper"), "{unknown}");
        assert!("mapper.so".parse::<PluginRef>().is_err());
    }

    #[test]
    fn worlds_round_trip_through_their_wit_names() {
        for world in World::ALL {
            assert_eq!(world.to_string().parse::<World>().unwrap(), world);
        }
        assert!("record_mapper".parse::<World>().is_err());
    }
}
