//! Builds the reference plugins and the test fixtures (`plugins/` at the checkout's root, its own workspace) for
//! wasm32-wasip2 and hands them to the host: the builtins as `CONDUIT_BUILTIN_*` paths for
//! `include_bytes!`, the fixtures' directory as `CONDUIT_PLUGIN_FIXTURES` for tests.
//!
//! A fresh clone's `cargo test --workspace` must just work, so this also installs the
//! wasm32-wasip2 target when the active rustup toolchain lacks it (auto-install is off on our
//! machines). `CONDUIT_PREBUILT_PLUGINS=<folder>` skips the nested build and takes the
//! components from that folder instead (the nightly fuzz build uses it).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const WASM_TARGET: &str = "wasm32-wasip2";

/// Names a folder of already built plugin components to use instead of building them.
const PREBUILT_VARIABLE: &str = "CONDUIT_PREBUILT_PLUGINS";

/// The builtins: (environment variable, component file name).
const BUILTINS: [(&str, &str); 3] = [
    ("CONDUIT_BUILTIN_TABLE_MAPPER", "table_mapper.wasm"),
    ("CONDUIT_BUILTIN_EMAIL_EVENTS", "email_events.wasm"),
    ("CONDUIT_BUILTIN_OPT_OUT", "opt_out.wasm"),
];

/// The hostile fixtures and the Rust example plugin the tests load from
/// `CONDUIT_PLUGIN_FIXTURES`.
const FIXTURES: [&str; 3] = [
    "fixture_hostile.wasm",
    "fixture_unknown_import.wasm",
    "contact_mapper.wasm",
];

/// Variables the outer cargo sets for this build script or for rustc that would make the
/// nested build write elsewhere, wrap rustc in clippy, inherit host flags or fight over the
/// outer jobserver.
const INHERITED_TO_DROP: [&str; 16] = [
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_MAKEFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "MAKEFLAGS",
    "MFLAGS",
    "OUT_DIR",
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    // This crate sits at crates/plugin-host/ in the checkout.
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .ok_or("crates/plugin-host/ has no checkout above it")?
        .to_path_buf();
    let plugins = root.join("plugins");
    for watched in [
        root.join("wit"),
        plugins.join("Cargo.toml"),
        plugins.join("Cargo.lock"),
        plugins.join("sdk"),
        plugins.join("table-mapper"),
        plugins.join("email-events"),
        plugins.join("opt-out"),
        plugins.join("fixtures"),
        plugins.join("examples"),
    ] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }

    println!("cargo:rerun-if-env-changed={PREBUILT_VARIABLE}");
    // The fuzz targets build with a nightly toolchain that has no wasm32-wasip2 standard
    // library; they reuse the plugins the pinned toolchain already built.
    let built = match env::var_os(PREBUILT_VARIABLE) {
        Some(prebuilt) => PathBuf::from(prebuilt),
        None => {
            ensure_wasm_target()?;
            let plugin_target_dir = outer_target_dir(&out_dir).join("plugins");
            build_plugins(&plugins, &plugin_target_dir)?;
            plugin_target_dir.join(WASM_TARGET).join("release")
        }
    };
    // Copies in OUT_DIR keep `include_bytes!` stable while another build (say, clippy
    // alongside test) rewrites the shared plugin target directory.
    for (variable, file) in BUILTINS {
        let copy = copy_into(&built.join(file), &out_dir.join("builtins"))?;
        println!("cargo:rustc-env={variable}={}", copy.display());
    }
    let fixtures = out_dir.join("fixtures");
    for file in FIXTURES {
        copy_into(&built.join(file), &fixtures)?;
    }
    println!(
        "cargo:rustc-env=CONDUIT_PLUGIN_FIXTURES={}",
        fixtures.display()
    );
    // For the build scripts of crates that depend on this one (`links`): the conduit binary's
    // tests load the same fixtures through `DEP_CONDUIT_PLUGINS_FIXTURES`.
    println!("cargo::metadata=fixtures={}", fixtures.display());
    Ok(())
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("cargo did not set {name} for the build script"))
}

/// Installs wasm32-wasip2 into the active rustup toolchain when it is missing.
fn ensure_wasm_target() -> Result<(), String> {
    // Without rustup (a distro or hand-built toolchain) there is nothing to install with;
    // the nested build then reports a missing target itself.
    let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") else {
        return Ok(());
    };
    let listed = Command::new("rustup")
        .args(["target", "list", "--installed", "--toolchain", &toolchain])
        .output();
    let Ok(listed) = listed else {
        return Ok(());
    };
    let installed = String::from_utf8_lossy(&listed.stdout);
    if listed.status.success() && installed.lines().any(|line| line.trim() == WASM_TARGET) {
        return Ok(());
    }
    let added = Command::new("rustup")
        .args(["target", "add", WASM_TARGET, "--toolchain", &toolchain])
        .output()
        .map_err(|error| format!("could not run `rustup target add {WASM_TARGET}`: {error}"))?;
    if !added.status.success() {
        return Err(format!(
            "`rustup target add {WASM_TARGET} --toolchain {toolchain}` failed; install the target by hand and rebuild:\n{}",
            String::from_utf8_lossy(&added.stderr)
        ));
    }
    Ok(())
}

/// The outer target directory (holding `CACHEDIR.TAG`), so debug, release and clippy builds
/// share one nested plugin build.
fn outer_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
        .or_else(|| out_dir.ancestors().nth(4))
        .unwrap_or(out_dir)
        .to_path_buf()
}

fn build_plugins(plugins: &Path, target_dir: &Path) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--release", "--target", WASM_TARGET])
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    for name in INHERITED_TO_DROP {
        command.env_remove(name);
    }
    // Per-package and per-target settings cargo passes to build scripts describe the host
    // crate, not the plugins.
    for (name, _) in env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_CFG_")
            || name.starts_with("CARGO_FEATURE_")
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_TARGET_")
        {
            command.env_remove(name.as_ref());
        }
    }
    let output = command
        .output()
        .map_err(|error| format!("could not run `{cargo}` to build the plugins: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the Wasm plugins failed (`cargo build --release --target {WASM_TARGET} --manifest-path {}`):\n{}",
            plugins.join("Cargo.toml").display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

fn copy_into(file: &Path, dir: &Path) -> Result<PathBuf, String> {
    fs::create_dir_all(dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let name = file
        .file_name()
        .ok_or_else(|| format!("{} has no file name", file.display()))?;
    let destination = dir.join(name);
    fs::copy(file, &destination).map_err(|error| {
        format!(
            "the plugin build did not produce {} ({error})",
            file.display()
        )
    })?;
    Ok(destination)
}
