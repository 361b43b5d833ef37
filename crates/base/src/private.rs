//! Private by default on disk: the directories and files Conduit creates that may hold personal
//! data (the data directory, the redb store, the plugin cache, opt-out exports) are created
//! readable by the host's user only (0700 / 0600), whatever the process umask, and an existing
//! path that others can read is reported with the command that fixes it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of a private directory.
pub const DIR_MODE: u32 = 0o700;
/// The mode of a private file.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with mode 0700; an existing directory is left as it
/// is (see [`looser_than_private`] to report it).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates (truncating) a file with mode 0600 for writing. The mode is set again after the
/// open because an existing file keeps the mode it had.
pub fn create_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Creates an empty file with mode 0600 unless `path` exists, so that a library that creates
/// the file itself (redb) finds it private from its first byte.
pub fn precreate_file(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// A warning naming `path`, what it holds and the fix when it exists and other users may
/// read or enter it (any group or other permission bit); `None` when it is private or absent.
pub fn looser_than_private(path: &Path, holds: &str) -> Option<String> {
    let metadata = std::fs::metadata(path).ok()?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return None;
    }
    let (wanted, kind) = if metadata.is_dir() {
        (DIR_MODE, "directory")
    } else {
        (FILE_MODE, "file")
    };
    Some(format!(
        "the {kind} {} holds {holds} and other users can access it (mode {mode:o}); restrict it with: chmod {wanted:o} {}",
        path.display(),
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_directories_and_files_are_private_and_an_existing_loose_one_is_reported() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a/b");
        create_dir(&nested).unwrap();
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(looser_than_private(&nested, "data"), None);

        let file = nested.join("f");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(create_file(&file).unwrap());
        assert_eq!(mode(&file), 0o600, "an existing file is made private");
        let fresh = nested.join("g");
        precreate_file(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o600);

        std::fs::set_permissions(&nested, std::fs::Permissions::from_mode(0o755)).unwrap();
        let warning = looser_than_private(&nested, "personal data").unwrap();
        assert!(
            warning.contains("mode 755")
                && warning.contains(&format!("chmod 700 {}", nested.display())),
            "{warning}"
        );
        assert_eq!(looser_than_private(&root.path().join("missing"), "x"), None);
    }
}
