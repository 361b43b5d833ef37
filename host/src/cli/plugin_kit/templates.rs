//! The sources, manifests and samples `conduit plugin new` writes, per world and language
//! (the files under `templates/`; `{name}` is replaced by the plugin's name). The three
//! languages implement the same mapping per world, so one sample input, settings and
//! expected output serve them all.

use conduit_plugin_host::World;

use super::Lang;

/// A world's sample: what `conduit plugin test` runs and what it must print.
pub struct Sample {
    /// The input (`--input`).
    pub input: &'static str,
    /// What `configure` receives, as TOML (`--settings`).
    pub settings: &'static str,
    /// The outcomes `plugin test` prints for them.
    pub expected: &'static str,
}

/// The sample of `world`.
pub fn sample(world: World) -> Sample {
    match world {
        World::RecordMapper => Sample {
            input: include_str!("templates/sample/record-mapper/input.json"),
            settings: include_str!("templates/sample/record-mapper/settings.toml"),
            expected: include_str!("templates/sample/record-mapper/expected.json"),
        },
        World::EventMapper => Sample {
            input: include_str!("templates/sample/event-mapper/input.json"),
            settings: include_str!("templates/sample/event-mapper/settings.toml"),
            expected: include_str!("templates/sample/event-mapper/expected.json"),
        },
        World::OptOutResolver => Sample {
            input: include_str!("templates/sample/opt-out-resolver/input.json"),
            settings: include_str!("templates/sample/opt-out-resolver/settings.toml"),
            expected: include_str!("templates/sample/opt-out-resolver/expected.json"),
        },
    }
}

/// The plugin's source file for `world` in `lang`.
pub fn source(world: World, lang: Lang) -> &'static str {
    match (lang, world) {
        (Lang::Rust, World::RecordMapper) => include_str!("templates/rust/record-mapper.rs"),
        (Lang::Rust, World::EventMapper) => include_str!("templates/rust/event-mapper.rs"),
        (Lang::Rust, World::OptOutResolver) => include_str!("templates/rust/opt-out-resolver.rs"),
        (Lang::Js, World::RecordMapper) => include_str!("templates/js/record-mapper.js"),
        (Lang::Js, World::EventMapper) => include_str!("templates/js/event-mapper.js"),
        (Lang::Js, World::OptOutResolver) => include_str!("templates/js/opt-out-resolver.js"),
        (Lang::Python, World::RecordMapper) => include_str!("templates/py/record-mapper.py"),
        (Lang::Python, World::EventMapper) => include_str!("templates/py/event-mapper.py"),
        (Lang::Python, World::OptOutResolver) => include_str!("templates/py/opt-out-resolver.py"),
    }
}

/// The script `plugin build` runs with node to call componentize-js.
pub const JS_BUILD: &str = include_str!("templates/build.mjs");

/// A Rust project's manifest: the SDK by a path inside the project (written there by
/// `plugin new`), its own workspace so it builds wherever it is.
pub const RUST_MANIFEST: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# Its own workspace, so the crate builds wherever it is created.
[workspace]

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
# The SDK `conduit plugin new` wrote into the project; the feature picks the plugin's world.
conduit-plugin = { path = "{sdk}", features = ["{feature}"] }
serde = { version = "1", features = ["derive"] }

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#;

/// A JavaScript project's manifest; `conduit.world` tells `plugin build` the world.
pub const JS_MANIFEST: &str = r#"{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "main": "src/plugin.js",
  "conduit": { "world": "{world}", "sdk": "{version}" }
}
"#;

/// A Python project's manifest; `[tool.conduit] world` tells `plugin build` the world.
pub const PY_MANIFEST: &str = r#"[project]
name = "{name}"
version = "0.1.0"
requires-python = ">=3.10"

[tool.conduit]
world = "{world}"
sdk = "{version}"
"#;
