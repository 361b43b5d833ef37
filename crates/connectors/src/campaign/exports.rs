//! Reading Campaign's opt-out exports from the drop folder (`d365_loads/exports` under the
//! configured root; SFTP in production): files `optout_<YYYYMMDDTHHMMSSZ>.csv`, sorted by export
//! time, header `crmId,attribute,value,changedAt`, one row per changed attribute.
//!
//! Only the file format lives here; the simulator writes files with [`export_file_name`].

use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};

use super::CampaignConnector;
use super::values::rfc3339_from_campaign;
use crate::{ConnectorError, OptOutChange, OptOutExportPage, OptOutExportSource};

/// Where exports sit under the drop folder's root.
pub const EXPORTS_SUBFOLDER: &str = "d365_loads/exports";

const HEADER: [&str; 4] = ["crmId", "attribute", "value", "changedAt"];
const NAME_PREFIX: &str = "optout_";
const NAME_SUFFIX: &str = ".csv";
const NAME_TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// The file name of an export made at `at`, e.g. `optout_20260102T030405Z.csv`.
pub fn export_file_name(at: DateTime<Utc>) -> String {
    format!("{NAME_PREFIX}{}{NAME_SUFFIX}", at.format(NAME_TIME_FORMAT))
}

/// True for names of the export pattern (anything else in the folder, e.g. a partial upload, is
/// not ours to read).
fn is_export_file_name(name: &str) -> bool {
    name.strip_prefix(NAME_PREFIX)
        .and_then(|rest| rest.strip_suffix(NAME_SUFFIX))
        .is_some_and(|time| NaiveDateTime::parse_from_str(time, NAME_TIME_FORMAT).is_ok())
}

/// True for the opt-out attributes Campaign may export: `blackList*` and `ccpaOptOut`. Wider on
/// purpose than `conduit_model::OPT_OUT_ATTRIBUTES` (what a configured pair may use): an export
/// naming an attribute no pair uses is still a well-formed export.
pub fn is_opt_out_attribute(attribute: &str) -> bool {
    attribute == "ccpaOptOut"
        || attribute
            .strip_prefix("blackList")
            .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Parses one export file; the error names the file, the line and the column.
pub fn parse_export(file_name: &str, bytes: &[u8]) -> Result<Vec<OptOutChange>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut rows = reader.records();
    let header = match rows.next() {
        Some(Ok(header)) => header,
        Some(Err(error)) => return Err(format!("{file_name} line 1: unreadable header: {error}")),
        None => {
            return Err(format!(
                "{file_name}: the file is empty; expected the header {}",
                HEADER.join(",")
            ));
        }
    };
    let names: Vec<&str> = header
        .iter()
        .map(|name| name.trim_start_matches('\u{feff}').trim())
        .collect();
    if names != HEADER {
        return Err(format!(
            "{file_name} line 1: header is {:?}; expected {}",
            names.join(","),
            HEADER.join(",")
        ));
    }
    let mut changes = Vec::new();
    for row in rows {
        let row = row.map_err(|error| format!("{file_name}: unreadable CSV: {error}"))?;
        let line = row.position().map_or(0, csv::Position::line);
        if row.len() == 1 && row.get(0).is_some_and(|cell| cell.trim().is_empty()) {
            continue;
        }
        if row.len() != HEADER.len() {
            return Err(format!(
                "{file_name} line {line}: expected {} columns, found {}",
                HEADER.len(),
                row.len()
            ));
        }
        let cell = |column: usize| row.get(column).unwrap_or_default().trim();
        let at = |column: usize, reason: String| {
            format!(
                "{file_name} line {line} column {} ({}): {reason}",
                column + 1,
                HEADER[column]
            )
        };
        let crm_id = cell(0);
        if crm_id.is_empty() {
            return Err(at(0, "the CRM ID is empty".into()));
        }
        let attribute = cell(1);
        if !is_opt_out_attribute(attribute) {
            return Err(at(
                1,
                format!("{attribute:?} is not an opt-out attribute (blackList* or ccpaOptOut)"),
            ));
        }
        let value = match cell(2) {
            "true" => true,
            "false" => false,
            other => return Err(at(2, format!("expected true or false, found {other:?}"))),
        };
        let changed_at = rfc3339_from_campaign(cell(3)).ok_or_else(|| {
            at(
                3,
                format!(
                    "expected an RFC 3339 or Campaign date-time, found {:?}",
                    cell(3)
                ),
            )
        })?;
        changes.push(OptOutChange {
            contact_key: crm_id.to_owned(),
            attribute: attribute.to_owned(),
            value,
            changed_at,
        });
    }
    Ok(changes)
}

/// The export files in `folder`, sorted by name (= by export time).
async fn export_files(folder: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(folder).await?;
    while let Some(entry) = entries.next_entry().await? {
        if let Some(name) = entry.file_name().to_str()
            && is_export_file_name(name)
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

#[async_trait]
impl OptOutExportSource for CampaignConnector {
    async fn read_next_export(
        &self,
        cursor: Option<&str>,
    ) -> Result<OptOutExportPage, ConnectorError> {
        let root = &self.settings.opt_out_drop_root;
        if !tokio::fs::try_exists(root).await.unwrap_or(false) {
            return Err(ConnectorError::Permanent {
                message: format!(
                    "the opt-out drop folder {} does not exist; check the Campaign drop folder setting",
                    root.display()
                ),
            });
        }
        let folder = root.join(EXPORTS_SUBFOLDER);
        if !tokio::fs::try_exists(&folder).await.unwrap_or(false) {
            // Campaign creates the folder with its first export.
            return Ok(OptOutExportPage {
                changes: Vec::new(),
                cursor: None,
            });
        }
        let io_error = |error: std::io::Error, path: &Path| ConnectorError::Transient {
            message: format!("cannot read {}: {error}", path.display()),
            retry_after: None,
        };
        let names = export_files(&folder)
            .await
            .map_err(|error| io_error(error, &folder))?;
        let next = names
            .into_iter()
            .find(|name| cursor.is_none_or(|consumed| name.as_str() > consumed));
        let Some(name) = next else {
            return Ok(OptOutExportPage {
                changes: Vec::new(),
                cursor: None,
            });
        };
        let path = folder.join(&name);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|error| io_error(error, &path))?;
        let changes =
            parse_export(&name, &bytes).map_err(|message| ConnectorError::Permanent { message })?;
        Ok(OptOutExportPage {
            changes,
            cursor: Some(name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_by_export_time() {
        let early = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap();
        let late = DateTime::parse_from_rfc3339("2026-11-02T03:04:05Z").unwrap();
        let early = export_file_name(early.with_timezone(&Utc));
        assert_eq!(early, "optout_20260102T030405Z.csv");
        assert!(early < export_file_name(late.with_timezone(&Utc)));
        assert!(is_export_file_name(&early));
        assert!(!is_export_file_name("optout_20260102T030405Z.csv.tmp"));
        assert!(!is_export_file_name("optout_yesterday.csv"));
    }

    #[test]
    fn a_good_file_parses_both_date_styles() {
        let csv = "crmId,attribute,value,changedAt\n\
                   c-1,blackListEmail,true,2026-01-02T03:04:05Z\n\
                   c-2,ccpaOptOut,false,2026-01-02 03:04:05.120Z\n";
        let changes = parse_export("optout_x.csv", csv.as_bytes()).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].attribute, "blackListEmail");
        assert!(changes[0].value);
        assert_eq!(changes[1].changed_at, "2026-01-02T03:04:05.120Z");
    }

    #[test]
    fn a_bad_value_names_file_line_and_column() {
        let csv = "crmId,attribute,value,changedAt\n\
                   c-1,blackListEmail,true,2026-01-02T03:04:05Z\n\
                   c-2,blackListPhone,yes,2026-01-02T03:04:05Z\n";
        let error = parse_export("optout_x.csv", csv.as_bytes()).unwrap_err();
        assert_eq!(
            error,
            "optout_x.csv line 3 column 3 (value): expected true or false, found \"yes\""
        );
    }

    #[test]
    fn attributes_other_than_opt_outs_are_refused() {
        let csv = "crmId,attribute,value,changedAt\nc-1,email,true,2026-01-02T03:04:05Z\n";
        let error = parse_export("f.csv", csv.as_bytes()).unwrap_err();
        assert!(error.contains("line 2 column 2 (attribute)"), "{error}");
    }

    proptest::proptest! {
        #[test]
        fn any_file_content_parses_or_fails_with_the_file_name(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let mut content = b"crmId,attribute,value,changedAt\n".to_vec();
            content.extend(bytes);
            if let Err(error) = parse_export("optout_p.csv", &content) {
                proptest::prop_assert!(error.contains("optout_p.csv"), "{}", error);
            }
        }
    }

    #[test]
    fn a_wrong_header_or_short_row_is_refused() {
        let error = parse_export("f.csv", b"id,attr\n").unwrap_err();
        assert!(
            error.contains("line 1") && error.contains("crmId"),
            "{error}"
        );
        let csv = "crmId,attribute,value,changedAt\nc-1,blackList\n";
        let error = parse_export("f.csv", csv.as_bytes()).unwrap_err();
        assert!(
            error.contains("line 2: expected 4 columns, found 2"),
            "{error}"
        );
        assert!(parse_export("f.csv", b"").unwrap_err().contains("empty"));
    }
}
