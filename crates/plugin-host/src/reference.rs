//! Naming plugins: the three worlds a plugin can implement, and where a plugin comes from
//! (`builtin:<name>` or a `.wasm` path).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::PluginError;
use super::builtin::BUILTIN_NAMES;

/// The capability a plugin implements: one world of `wit/conduit-plugin.wit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    /// Maps Dynamics 365 rows to Campaign records (Ingress).
    RecordMapper,
    /// Maps Campaign email events to Dynamics 365 activities (Egress).
    EventMapper,
    /// Resolves opt-out flags between the two systems (Opt-in/out).
    OptOutResolver,
}

impl World {
    /// Every world, in contract order.
    pub const ALL: [World; 3] = [
        World::RecordMapper,
        World::EventMapper,
        World::OptOutResolver,
    ];

    /// The world's name in the WIT package.
    pub fn name(self) -> &'static str {
        match self {
            World::RecordMapper => "record-mapper",
            World::EventMapper => "event-mapper",
            World::OptOutResolver => "opt-out-resolver",
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for World {
    type Err = String;

    fn from_str(text: &str) -> Result<World, String> {
        World::ALL
            .into_iter()
            .find(|world| world.name() == text)
            .ok_or_else(|| {
                format!(
                    "unknown plugin world `{text}`; expected record-mapper, event-mapper or opt-out-resolver"
                )
            })
    }
}

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
        if let Some(name) = text.strip_prefix("builtin:") {
            if !BUILTIN_NAMES.contains(&name) {
                return Err(PluginError::Load {
                    plugin: text.to_owned(),
                    message: format!(
                        "there is no builtin plugin `{name}`; the builtins are {}",
                        BUILTIN_NAMES.map(|b| format!("builtin:{b}")).join(", ")
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
