//! The plugin SDKs embedded in the binary: the Rust SDK crate's sources with the WIT it is
//! generated from, and the JavaScript and Python helpers. `conduit plugin new` writes them into
//! the project, so that a project builds on a machine that has only the `conduit` binary (no
//! checkout, no path of the build machine).

/// The SDK (and contract) version embedded here; projects keep it in their `.conduit/sdk-<v>/`
/// folder name, so that a project made by another release says which SDK it holds.
pub const SDK_VERSION: &str = "1.1.0";

/// The folder, relative to a project, holding the embedded SDK.
pub fn sdk_folder() -> String {
    format!(".conduit/sdk-{SDK_VERSION}")
}

/// The WIT, relative to [`sdk_folder`] (the Rust SDK finds it at `../../wit`).
pub const WIT: (&str, &str) = (
    "wit/conduit-plugin.wit",
    include_str!("../../../../wit/conduit-plugin.wit"),
);

/// The Rust SDK crate, relative to [`sdk_folder`]: its sources and a standalone manifest
/// (the checkout's manifest inherits from the plugins workspace, which a project lacks).
pub const RUST_SDK: &[(&str, &str)] = &[
    ("rust/conduit-plugin/Cargo.toml", RUST_SDK_MANIFEST),
    (
        "rust/conduit-plugin/src/lib.rs",
        include_str!("../../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "rust/conduit-plugin/src/bindings.rs",
        include_str!("../../../../plugins/sdk/src/bindings.rs"),
    ),
    (
        "rust/conduit-plugin/src/cells.rs",
        include_str!("../../../../plugins/sdk/src/cells.rs"),
    ),
    (
        "rust/conduit-plugin/src/datetime.rs",
        include_str!("../../../../plugins/sdk/src/datetime.rs"),
    ),
    (
        "rust/conduit-plugin/src/export.rs",
        include_str!("../../../../plugins/sdk/src/export.rs"),
    ),
    (
        "rust/conduit-plugin/src/glue.rs",
        include_str!("../../../../plugins/sdk/src/glue.rs"),
    ),
    (
        "rust/conduit-plugin/src/helpers.rs",
        include_str!("../../../../plugins/sdk/src/helpers.rs"),
    ),
    (
        "rust/conduit-plugin/src/log.rs",
        include_str!("../../../../plugins/sdk/src/log.rs"),
    ),
    (
        "rust/conduit-plugin/src/settings.rs",
        include_str!("../../../../plugins/sdk/src/settings.rs"),
    ),
    (
        "rust/conduit-plugin/src/types.rs",
        include_str!("../../../../plugins/sdk/src/types.rs"),
    ),
];

/// The lock file the SDK is tested with: a Rust project starts from it, so its first build
/// resolves the same dependency versions (cargo drops the entries it does not need).
pub const RUST_LOCK: &str = include_str!("../../../../plugins/Cargo.lock");

/// The JavaScript helper, written next to the plugin's source (componentize-js resolves
/// imports inside the source's folder only).
pub const JS_HELPER: &str = include_str!("../../../../plugins/sdk-js/conduit-plugin.js");

/// The Python helper, written next to the plugin's `app.py`.
pub const PY_HELPER: &str = include_str!("../../../../plugins/sdk-py/conduit_plugin.py");

/// The Rust SDK's manifest outside the plugins workspace: the same package and dependency
/// versions as `plugins/sdk/Cargo.toml` with `plugins/Cargo.toml`'s `[workspace.dependencies]`
/// (a unit test keeps them equal).
const RUST_SDK_MANIFEST: &str = r#"[package]
name = "conduit-plugin"
version = "1.1.0"
description = "The Conduit plugin SDK (written by `conduit plugin new`; do not edit)"
edition = "2024"
rust-version = "1.95"
license = "Apache-2.0"
publish = false

[features]
record-mapper = []
event-mapper = []
opt-out-resolver = []

[dependencies]
serde = { version = "1", default-features = false, features = ["std", "derive"] }
serde_json = { version = "1", default-features = false, features = ["std"] }
serde_path_to_error = "0.1"

[target.'cfg(target_arch = "wasm32")'.dependencies]
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc", "std"] }
"#;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn checkout() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
    }

    #[test]
    fn every_source_file_of_the_rust_sdk_is_embedded() {
        let mut on_disk: Vec<String> = std::fs::read_dir(checkout().join("plugins/sdk/src"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = RUST_SDK
            .iter()
            .filter_map(|(path, _)| path.strip_prefix("rust/conduit-plugin/src/"))
            .map(str::to_owned)
            .collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "add the new SDK file to RUST_SDK");
    }

    #[test]
    fn the_standalone_manifest_matches_the_workspace_one() {
        let read = |path: &str| -> toml::Table {
            toml::from_str(&std::fs::read_to_string(checkout().join(path)).unwrap()).unwrap()
        };
        let sdk = read("plugins/sdk/Cargo.toml");
        let workspace = read("plugins/Cargo.toml");
        let standalone: toml::Table = toml::from_str(RUST_SDK_MANIFEST).unwrap();
        assert_eq!(standalone["package"]["version"], sdk["package"]["version"]);
        assert_eq!(standalone["package"]["version"].as_str(), Some(SDK_VERSION));
        assert_eq!(standalone["features"], sdk["features"]);
        let shared = &workspace["workspace"]["dependencies"];
        for (section, deps) in [
            ("dependencies", &standalone["dependencies"]),
            (
                "wasm32",
                &standalone["target"]["cfg(target_arch = \"wasm32\")"]["dependencies"],
            ),
        ] {
            for (name, spec) in deps.as_table().unwrap() {
                assert_eq!(spec, &shared[name], "{section}: {name}");
            }
        }
        assert_eq!(
            standalone["package"]["edition"],
            workspace["workspace"]["package"]["edition"]
        );
    }
}
