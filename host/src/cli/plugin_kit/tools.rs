//! The pinned componentize tools that build JavaScript and Python plugins: installed by the
//! binary itself on first use (componentize-js from npm, componentize-py from PyPI into a
//! virtual environment) into a per-user cache folder, once, under a file lock, and reused
//! while the pins are unchanged.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The pinned `@bytecodealliance/componentize-js` (npm).
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// The pinned `componentize-py` (PyPI).
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The variable naming the tools folder (default: `$XDG_CACHE_HOME/conduit/tools`, else
/// `~/.cache/conduit/tools`).
pub const TOOLS_VARIABLE: &str = "CONDUIT_TOOLS_DIR";

/// The file marking a finished install inside a tool's folder.
const STAMP: &str = ".installed";

/// The folder the tools are installed in.
pub fn tools_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(TOOLS_VARIABLE).filter(|dir| !dir.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(cache) = std::env::var_os("XDG_CACHE_HOME").filter(|dir| !dir.is_empty()) {
        return Ok(PathBuf::from(cache).join("conduit/tools"));
    }
    match std::env::var_os("HOME").filter(|dir| !dir.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache/conduit/tools")),
        None => bail!(
            "no folder for the componentize tools: set {TOOLS_VARIABLE} (or XDG_CACHE_HOME or HOME)"
        ),
    }
}

/// The `node_modules` folder holding componentize-js, installed on first use.
pub fn componentize_js() -> anyhow::Result<PathBuf> {
    let dir = tools_dir()?.join(format!("componentize-js-{COMPONENTIZE_JS}"));
    ensure(&dir, |dir| {
        let package = format!("@bytecodealliance/componentize-js@{COMPONENTIZE_JS}");
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(dir)
            .arg(&package))
        .context("installing componentize-js needs node and npm (https://nodejs.org)")
    })?;
    Ok(dir.join("node_modules"))
}

/// The `componentize-py` executable, installed into its own virtual environment on first use.
pub fn componentize_py() -> anyhow::Result<PathBuf> {
    let dir = tools_dir()?.join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let bin = if cfg!(windows) { "Scripts" } else { "bin" };
    ensure(&dir, |dir| {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
        run(Command::new(&python).args(["-m", "venv"]).arg(dir))
            .with_context(|| format!("installing componentize-py needs `{python} -m venv` (Python 3.10 or later; set PYTHON to choose one)"))?;
        run(Command::new(dir.join(bin).join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("componentize-py=={COMPONENTIZE_PY}")))
        .context("installing componentize-py from PyPI failed")
    })?;
    Ok(dir.join(bin).join("componentize-py"))
}

/// Installs into `dir` unless its stamp says it is done; under the tools folder's lock, with
/// the check repeated under it, so that two builds starting together install once and a
/// half-finished install (a killed process) is redone.
fn ensure(dir: &Path, install: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    if dir.join(STAMP).is_file() {
        return Ok(());
    }
    let parent = dir
        .parent()
        .context("the tools folder has no parent folder")?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let lock_path = parent.join(".lock");
    let lock = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    if dir.join(STAMP).is_file() {
        return Ok(());
    }
    if dir.exists() {
        fs::remove_dir_all(dir)
            .with_context(|| format!("cannot clear the unfinished install {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    errln!(
        "installing {} (once, into {})",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        parent.display()
    );
    install(dir)?;
    fs::write(dir.join(STAMP), b"")
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    Ok(())
}

/// Runs `command`, its output going to stderr; an error says what failed.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}
