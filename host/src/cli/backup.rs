//! `conduit backup <file>` and `conduit restore <file>`. A running host holds the store's file
//! lock, so the backup asks it for a copy (`POST /api/backup`, taken in one read transaction
//! while the workflows keep running); with no host running it copies the store itself. Either
//! way the backup is written beside `<file>`, checked, and renamed into place only when
//! complete. A restore refuses a store in use or, without `--force`, one that exists.

use std::path::{Path, PathBuf};

use super::client::{AdminClient, CallError, exit};
use conduit_store::{BackupError, Store};

/// The arguments of `conduit backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where to write the backup (replaced atomically when it exists).
    pub file: PathBuf,
    /// Copy the store in this data directory directly instead of asking the running host
    /// (only while no host runs on it). Default: ask the host, and copy `host.data_dir` of
    /// the config when no host answers.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// The arguments of `conduit restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup written by `conduit backup`.
    pub file: PathBuf,
    /// The data directory to restore into (default: `host.data_dir` of the config).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Replace a store that exists there (never one a running host holds).
    #[arg(long)]
    pub force: bool,
}

/// Takes a backup through the running host, or directly when no host answers.
pub async fn backup(
    args: &BackupArgs,
    config: &Path,
    admin: impl FnOnce() -> Result<AdminClient, CallError>,
) -> Result<(), CallError> {
    if let Some(data_dir) = &args.data_dir {
        return backup_directly(data_dir, &args.file).await;
    }
    match backup_from_host(&admin()?, &args.file).await {
        Err(error) if error.code == exit::UNREACHABLE => {
            let data_dir = data_dir_of(config)?;
            let store = conduit::runtime::store_path(&data_dir);
            if !store.exists() {
                return Err(error);
            }
            errln!(
                "no host answered ({}); copying {} directly",
                error.message,
                store.display()
            );
            backup_directly(&data_dir, &args.file).await
        }
        other => other,
    }
}

/// Downloads the running host's copy beside `target`, checks it, and renames it over `target`.
async fn backup_from_host(client: &AdminClient, target: &Path) -> Result<(), CallError> {
    let mut temp = temp_beside(target)?;
    let headers = client.download("/api/backup", temp.as_file_mut()).await?;
    temp.as_file()
        .sync_all()
        .map_err(|error| write_failed(target, &error))?;
    let checked = temp.path().to_path_buf();
    let version = tokio::task::spawn_blocking(move || conduit_store::check_backup(&checked))
        .await
        .map_err(|error| failed(format!("checking the backup failed: {error}")))?
        .map_err(|error| failed(format!("the host's backup is unusable: {error}")))?;
    temp.persist(target)
        .map_err(|error| write_failed(target, &error.error))?;
    let entries = headers
        .get(conduit_admin::ENTRIES_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("?");
    outln!(
        "{}: backup of the running host's store ({entries} entries, format version {version})",
        target.display()
    );
    Ok(())
}

/// Copies the store of a data directory no host is running on.
async fn backup_directly(data_dir: &Path, target: &Path) -> Result<(), CallError> {
    let store = conduit::runtime::store_path(data_dir);
    if !store.exists() {
        return Err(CallError {
            code: exit::NOT_FOUND,
            message: format!("there is no store at {}", store.display()),
        });
    }
    let target = target.to_path_buf();
    let (summary, target) = tokio::task::spawn_blocking(move || {
        let opened = Store::open(&store).map_err(|error| match error {
            conduit_store::StoreError::InUse { path } => failed(format!(
                "a host holds {} but its admin API did not answer; back up through it with --admin-url",
                path.display()
            )),
            other => failed(other.to_string()),
        })?;
        let summary = opened.backup_to(&target).map_err(backup_failed)?;
        Ok::<_, CallError>((summary, target))
    })
    .await
    .map_err(|error| failed(format!("the backup failed: {error}")))??;
    outln!(
        "{}: backup of the store in {} ({} entries, format version {})",
        target.display(),
        data_dir.display(),
        summary.entries,
        summary.format_version
    );
    Ok(())
}

/// Restores a backup into a data directory.
pub async fn restore(args: &RestoreArgs, config: &Path) -> Result<(), CallError> {
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => data_dir_of(config)?,
    };
    let store = conduit::runtime::store_path(&data_dir);
    let (backup, force) = (args.file.clone(), args.force);
    let target = store.clone();
    let summary =
        tokio::task::spawn_blocking(move || conduit_store::restore(&backup, &target, force))
            .await
            .map_err(|error| failed(format!("the restore failed: {error}")))?
            .map_err(backup_failed)?;
    outln!(
        "{}: restored from {} ({} entries, format version {}); start the host to resume",
        store.display(),
        args.file.display(),
        summary.entries,
        summary.format_version
    );
    Ok(())
}

/// `host.data_dir` of a valid config.
fn data_dir_of(config: &Path) -> Result<PathBuf, CallError> {
    conduit_config::Config::load(config)
        .map(|config| config.data_dir())
        .map_err(|error| CallError {
            code: exit::INVALID_CONFIG,
            message: format!("{error}; or name the data directory with --data-dir"),
        })
}

/// A new private file beside `target`, renamed over it once complete.
fn temp_beside(target: &Path) -> Result<tempfile::NamedTempFile, CallError> {
    let dir = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".conduit-backup-")
        .tempfile_in(dir)
        .map_err(|error| write_failed(target, &error))
}

fn write_failed(target: &Path, error: &std::io::Error) -> CallError {
    failed(format!("cannot write {}: {error}", target.display()))
}

fn backup_failed(error: BackupError) -> CallError {
    let code = match error {
        BackupError::InUse { .. } | BackupError::Exists { .. } => exit::REFUSED,
        BackupError::Unreadable { .. }
        | BackupError::NotAStore { .. }
        | BackupError::NewerFormat { .. }
        | BackupError::UnknownTable { .. } => exit::USAGE,
        _ => 1,
    };
    CallError {
        code,
        message: error.to_string(),
    }
}

fn failed(message: String) -> CallError {
    CallError { code: 1, message }
}
