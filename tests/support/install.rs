//! One installer at a time on the machine: what the tests install for themselves (Chromium from
//! apt, npm packages, the PyPI and npm tools of the polyglot plugin build) is installed under a
//! file lock that every test and every test binary takes, so two tests starting together on a
//! fresh machine do not race (apt's "Could not get lock", two `npm ci` in one folder) and the
//! second one finds the first one's work done. The lock is a `flock` on a well-known file in the
//! temporary folder, released by the kernel even when a test process dies.
//!
//! Std only: `host/tests` include this file by path, as they cannot depend on the e2e crate.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;

/// The file every test process locks while it installs something.
pub fn lock_path() -> PathBuf {
    std::env::temp_dir().join("conduit-test-install.lock")
}

/// The machine-wide install lock, held until the value is dropped.
pub struct InstallLock {
    _file: File,
}

/// Waits for the machine-wide install lock (for work that installs as it goes, like the
/// polyglot plugin build, which keeps its own stamps of what is already there).
pub fn lock() -> InstallLock {
    let path = lock_path();
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|error| panic!("cannot open {}: {error}", path.display()));
    file.lock()
        .unwrap_or_else(|error| panic!("cannot lock {}: {error}", path.display()));
    InstallLock { _file: file }
}

/// Runs `install` unless `installed` already holds, under the install lock; the check is
/// repeated under the lock, so a test that waited finds the other one's work done.
pub fn once<T>(installed: impl Fn() -> bool, install: impl FnOnce() -> T) -> Option<T> {
    if installed() {
        return None;
    }
    let _lock = lock();
    if installed() { None } else { Some(install()) }
}

/// Installs Debian packages with apt, waiting up to 10 minutes for apt's own lock (another
/// apt run on the machine, e.g. unattended upgrades); call it inside [`once`].
pub fn apt_install(packages: &[&str]) -> Result<(), String> {
    let wait = ["-o", "DPkg::Lock::Timeout=600", "-qq"];
    run(Command::new("apt-get").args(wait).arg("update"))?;
    run(Command::new("apt-get")
        .args(wait)
        .args(["install", "-y"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .map_err(|error| format!("{shown} could not start: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}
