//! Hands the binary's tests the Wasm test fixtures that `conduit-plugin-host`'s build script
//! built, as `CONDUIT_PLUGIN_FIXTURES` (read from that crate's `links` metadata). Nothing here
//! ends up in the product: only tests name the variable.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_CONDUIT_PLUGINS_FIXTURES");
    if let Ok(folder) = std::env::var("DEP_CONDUIT_PLUGINS_FIXTURES") {
        println!("cargo:rustc-env=CONDUIT_PLUGIN_FIXTURES={folder}");
    }
}
