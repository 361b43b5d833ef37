//! The simulator's own rendering and reading of Campaign Standard wire text, written from Adobe's
//! API documentation (not shared with the connector, so a codec bug on either side shows in the
//! cross-checking tests): date-time text `2018-05-16 23:08:13.006Z` (the ACS REST API's format for
//! `datetime` fields), the `by<Key>` filter name of an identification key, and the names of the
//! opt-out export files in the `d365_loads/exports` drop folder.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Where opt-out exports sit under the drop folder's root (the folder Adobe's settings page tells
/// the customer to create on the Campaign SFTP server).
pub const EXPORTS_SUBFOLDER: &str = "d365_loads/exports";

/// Renders an instant as Campaign date-time text: `YYYY-MM-DD HH:MM:SS.mmmZ`, always UTC.
pub fn datetime_text(instant: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;
    if !(0..=9999).contains(&instant.year()) || instant.nanosecond() >= 1_000_000_000 {
        // Years chrono writes with a sign, and leap seconds: its own formatter.
        return instant.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string();
    }
    // Every record written stamps `created` and `lastModified`: a direct write costs a
    // quarter of chrono's format-string interpretation. The connector writes these dates
    // with code of its own on purpose: the simulator stands in for Campaign, so it does not
    // share the client's encoding (a bug there would then pass here too).
    let mut text = String::with_capacity(24);
    let _ = write!(
        text,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}Z",
        instant.year(),
        instant.month(),
        instant.day(),
        instant.hour(),
        instant.minute(),
        instant.second(),
        instant.nanosecond() / 1_000_000
    );
    text
}

/// Reads a date-time a client may send in a `datetime` field: Campaign text (with or without
/// fractional seconds, `Z` optional as the Campaign UI writes it), ISO 8601 / RFC 3339 with any
/// offset, or a bare day (midnight UTC). `None` for anything else or years past 9999.
pub fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let instant = DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            let naive = text.strip_suffix('Z').unwrap_or(text);
            ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|format| NaiveDateTime::parse_from_str(naive, format).ok())
                .map(|naive| naive.and_utc())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|day| day.and_hms_opt(0, 0, 0))
                .map(|naive| naive.and_utc())
        })?;
    (instant.format("%Y").to_string().len() == 4).then_some(instant)
}

/// The filter Campaign publishes for an identification key: `by` and the key with its first
/// letter upper-cased (`cusCrmId` -> `byCusCrmId`, `email` -> `byEmail`).
pub fn key_filter_name(key: &str) -> String {
    let mut name = String::from("by");
    let mut chars = key.chars();
    if let Some(first) = chars.next() {
        name.extend(first.to_uppercase());
        name.push_str(chars.as_str());
    }
    name
}

/// The name of an opt-out export made at `at`: `optout_YYYYMMDDTHHMMSSZ.csv` (UTC, so names sort
/// in export order).
pub fn export_file_name(at: DateTime<Utc>) -> String {
    format!("optout_{}.csv", at.format("%Y%m%dT%H%M%SZ"))
}

/// True for Campaign's opt-out flags a profile carries: `blackList` ("no longer contact"), the
/// per-channel `blackList*` family and `ccpaOptOut`.
pub fn is_opt_out_field(name: &str) -> bool {
    name == "ccpaOptOut"
        || name
            .strip_prefix("blackList")
            .is_some_and(|suffix| suffix.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn datetime_text_has_milliseconds_and_z() {
        let instant = Utc.with_ymd_and_hms(2018, 5, 16, 23, 8, 13).unwrap()
            + chrono::Duration::milliseconds(6);
        assert_eq!(datetime_text(instant), "2018-05-16 23:08:13.006Z");
        for instant in [
            Utc.with_ymd_and_hms(7, 1, 2, 3, 4, 5).unwrap()
                + chrono::Duration::microseconds(999_999),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(12345, 6, 7, 8, 9, 10).unwrap(),
            Utc.with_ymd_and_hms(-44, 3, 15, 12, 0, 0).unwrap(),
        ] {
            assert_eq!(
                datetime_text(instant),
                instant.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string(),
                "{instant:?} is written as chrono writes it"
            );
        }
        assert_eq!(parse_datetime("2018-05-16 23:08:13.006Z"), Some(instant));
        assert_eq!(
            parse_datetime("2018-05-17T01:08:13.006+02:00"),
            Some(instant)
        );
        assert_eq!(
            parse_datetime("2018-05-16"),
            Some(Utc.with_ymd_and_hms(2018, 5, 16, 0, 0, 0).unwrap())
        );
        assert_eq!(parse_datetime("16/05/2018"), None);
        assert_eq!(parse_datetime("2018-13-01 00:00:00Z"), None);
    }

    #[test]
    fn key_filters_and_export_names_follow_campaign() {
        assert_eq!(key_filter_name("cusCrmId"), "byCusCrmId");
        assert_eq!(key_filter_name("email"), "byEmail");
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(export_file_name(at), "optout_20260102T030405Z.csv");
        assert!(is_opt_out_field("blackListEmail"));
        assert!(is_opt_out_field("ccpaOptOut"));
        assert!(is_opt_out_field("blackList"));
        assert!(!is_opt_out_field("blackList_x"));
        assert!(!is_opt_out_field("email"));
    }

    /// The connector reads what the simulator writes, and the other way round.
    #[test]
    fn agrees_with_the_connector_codec() {
        use conduit_connectors::campaign as connector;
        let instants = [
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap()
                + chrono::Duration::milliseconds(999),
        ];
        for instant in instants {
            assert_eq!(
                connector::parse_campaign_instant(&datetime_text(instant)),
                Some(instant)
            );
            assert_eq!(
                parse_datetime(&connector::campaign_datetime_text(instant)),
                Some(instant)
            );
            assert_eq!(
                export_file_name(instant),
                connector::export_file_name(instant)
            );
        }
        for key in ["cusCrmId", "externalId", "email"] {
            assert_eq!(key_filter_name(key), connector::key_filter_name(key));
        }
        assert_eq!(EXPORTS_SUBFOLDER, connector::EXPORTS_SUBFOLDER);
        for name in conduit_model::OPT_OUT_ATTRIBUTES {
            assert_eq!(
                is_opt_out_field(name),
                connector::is_opt_out_attribute(name)
            );
        }
    }
}
