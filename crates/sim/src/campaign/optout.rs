//! The simulator's opt-out export: Campaign's attribute-level change times of opt-out attributes,
//! the changes queued since the last export, and writing them as a CSV file into the drop folder
//! (`d365_loads/exports/optout_<YYYYMMDDTHHMMSSZ>.csv`, the format the connector reads).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, SubsecRound, Utc};

use super::wire::{EXPORTS_SUBFOLDER, datetime_text, export_file_name};

/// One queued change of an opt-out attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOptOut {
    /// The profile's CRM ID (`externalId`).
    pub crm_id: String,
    /// The attribute, e.g. `blackListEmail`.
    pub attribute: String,
    /// The new value.
    pub value: bool,
    /// When it changed in Campaign.
    pub changed_at: DateTime<Utc>,
}

/// Change times per (CRM ID, attribute) and the queue of the next export.
#[derive(Debug, Default)]
pub struct OptOutLog {
    changed_at: HashMap<(String, String), DateTime<Utc>>,
    pending: Vec<PendingOptOut>,
    last_export: Option<DateTime<Utc>>,
}

impl OptOutLog {
    /// Records a change; profiles without a CRM ID get a change time but cannot be exported.
    pub fn record(
        &mut self,
        crm_id: Option<&str>,
        attribute: &str,
        value: bool,
        at: DateTime<Utc>,
    ) {
        let Some(crm_id) = crm_id.filter(|id| !id.is_empty()) else {
            return;
        };
        self.changed_at
            .insert((crm_id.to_owned(), attribute.to_owned()), at);
        self.pending.push(PendingOptOut {
            crm_id: crm_id.to_owned(),
            attribute: attribute.to_owned(),
            value,
            changed_at: at,
        });
    }

    /// The changes waiting for the next export.
    pub fn pending(&self) -> &[PendingOptOut] {
        &self.pending
    }

    /// When Campaign last changed this attribute of this profile.
    pub fn changed_at(&self, crm_id: &str, attribute: &str) -> Option<DateTime<Utc>> {
        self.changed_at
            .get(&(crm_id.to_owned(), attribute.to_owned()))
            .copied()
    }

    /// Takes the queued changes and a file time later than any earlier export's, so that names
    /// stay unique and sorted even with several exports per second.
    pub fn take_export(&mut self, now: DateTime<Utc>) -> (DateTime<Utc>, Vec<PendingOptOut>) {
        let mut at = now.trunc_subsecs(0);
        if let Some(last) = self.last_export
            && at <= last
        {
            at = last + Duration::seconds(1);
        }
        self.last_export = Some(at);
        (at, std::mem::take(&mut self.pending))
    }
}

/// Writes one export file (via a temporary name, so readers never see half a file).
pub fn write_export(
    drop_root: &Path,
    at: DateTime<Utc>,
    changes: &[PendingOptOut],
) -> std::io::Result<PathBuf> {
    let folder = drop_root.join(EXPORTS_SUBFOLDER);
    // Exports name contacts: private to the user, as Campaign's SFTP drop should be.
    conduit_base::private::create_dir(&folder)?;
    let path = folder.join(export_file_name(at));
    let partial = folder.join(format!("{}.partial", export_file_name(at)));
    let mut writer = csv::Writer::from_writer(conduit_base::private::create_file(&partial)?);
    writer.write_record(["crmId", "attribute", "value", "changedAt"])?;
    for change in changes {
        writer.write_record([
            change.crm_id.as_str(),
            change.attribute.as_str(),
            if change.value { "true" } else { "false" },
            datetime_text(change.changed_at).as_str(),
        ])?;
    }
    writer.flush()?;
    drop(writer);
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_in_the_same_second_get_distinct_names() {
        let mut log = OptOutLog::default();
        let now = Utc::now();
        let (first, _) = log.take_export(now);
        let (second, _) = log.take_export(now);
        assert!(export_file_name(first) < export_file_name(second));
    }

    #[test]
    fn an_export_file_reads_back_through_the_connector_parser() {
        let root = tempfile::tempdir().unwrap();
        let mut log = OptOutLog::default();
        log.record(Some("c-1"), "blackListEmail", true, Utc::now());
        log.record(None, "blackListPhone", true, Utc::now());
        let (at, changes) = log.take_export(Utc::now());
        let path = write_export(root.path(), at, &changes).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let parsed =
            conduit_connectors::campaign::parse_export(&name, &std::fs::read(&path).unwrap())
                .unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].contact_key, "c-1");
        assert!(log.pending().is_empty());
    }

    #[test]
    fn export_files_and_their_folder_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let mut log = OptOutLog::default();
        log.record(Some("c-1"), "blackListEmail", true, Utc::now());
        let (at, changes) = log.take_export(Utc::now());
        let path = write_export(root.path(), at, &changes).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
}
