//! Conversions between host values and Campaign's JSON: dates as Campaign date text
//! (`2018-05-16 23:08:13.006Z`, or `2018-05-16` for date fields), picklists as labels, lookups as
//! their id. Used by the sink (writing) and by the event and export readers (dates back to RFC 3339).

use std::borrow::Cow;
use std::fmt::Write;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, Timelike, Utc};
use serde::{Serialize, Serializer};

use crate::FieldKind;
use conduit_model::Value;

/// Formats an instant as Campaign's date-time text, e.g. `2018-05-16 23:08:13.006Z`.
pub fn campaign_datetime_text(instant: DateTime<Utc>) -> String {
    if !written_directly(instant) {
        return instant.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string();
    }
    let mut text = campaign_date_text(instant);
    let _ = write!(
        text,
        " {:02}:{:02}:{:02}.{:03}Z",
        instant.hour(),
        instant.minute(),
        instant.second(),
        instant.nanosecond() / 1_000_000
    );
    text
}

/// Formats an instant's date as Campaign's date text, e.g. `2018-05-16`.
pub fn campaign_date_text(instant: DateTime<Utc>) -> String {
    if !written_directly(instant) {
        return instant.format("%Y-%m-%d").to_string();
    }
    let mut text = String::with_capacity(24);
    let _ = write!(
        text,
        "{:04}-{:02}-{:02}",
        instant.year(),
        instant.month(),
        instant.day()
    );
    text
}

/// Whether an instant's text is written field by field rather than by chrono's format
/// strings (which cost four times as much, once per date of every record written): all but
/// the years chrono writes with a sign and leap seconds.
fn written_directly(instant: DateTime<Utc>) -> bool {
    (0..=9999).contains(&instant.year()) && instant.nanosecond() < 1_000_000_000
}

/// Reads RFC 3339, Campaign date-time text or a bare date into an instant (UTC) of the years
/// 0000 to 9999, the ones both formats can write back.
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    read_instant(text.trim()).filter(|instant| (0..=9999).contains(&instant.year()))
}

fn read_instant(text: &str) -> Option<DateTime<Utc>> {
    if let Some(date) = plain_date(text) {
        return date.and_hms_opt(0, 0, 0).map(|instant| instant.and_utc());
    }
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Some(instant.with_timezone(&Utc));
    }
    if let Some(naive) = text.strip_suffix('Z')
        && let Ok(instant) = NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S%.f")
    {
        return Some(instant.and_utc());
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return date.and_hms_opt(0, 0, 0).map(|instant| instant.and_utc());
    }
    None
}

/// A date written exactly as `YYYY-MM-DD`, read without chrono's format strings (a mapped date
/// of every record written comes so; chrono's `%Y-%m-%d` costs ~1,200 instructions a read);
/// `None` for any other text, which the general readers then take.
fn plain_date(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = *bytes else {
        return None;
    };
    let digits = [y0, y1, y2, y3, m0, m1, d0, d1];
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |digits: &[u8]| {
        digits
            .iter()
            .fold(0u32, |number, digit| number * 10 + u32::from(digit - b'0'))
    };
    let year = i32::try_from(number(&digits[..4])).ok()?;
    NaiveDate::from_ymd_opt(year, number(&digits[4..6]), number(&digits[6..]))
}

/// Converts Campaign date text (or RFC 3339) to RFC 3339 with milliseconds; `None` if unreadable.
pub fn rfc3339_from_campaign(text: &str) -> Option<String> {
    parse_instant(text).map(|instant| instant.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// One value in Campaign's JSON, borrowing the record's text where it goes out as it is, so a
/// write body is encoded straight from the record without a `serde_json::Value` per field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CampaignJson<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Boolean(bool),
    /// An integer.
    Integer(i64),
    /// A finite number.
    Number(f64),
    /// A string.
    Text(Cow<'a, str>),
}

impl Serialize for CampaignJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            CampaignJson::Null => serializer.serialize_unit(),
            CampaignJson::Boolean(flag) => serializer.serialize_bool(*flag),
            CampaignJson::Integer(number) => serializer.serialize_i64(*number),
            CampaignJson::Number(number) => serializer.serialize_f64(*number),
            CampaignJson::Text(text) => serializer.serialize_str(text),
        }
    }
}

impl From<CampaignJson<'_>> for serde_json::Value {
    fn from(json: CampaignJson<'_>) -> serde_json::Value {
        match json {
            CampaignJson::Null => serde_json::Value::Null,
            CampaignJson::Boolean(flag) => serde_json::Value::Bool(flag),
            CampaignJson::Integer(number) => serde_json::Value::from(number),
            CampaignJson::Number(number) => serde_json::Number::from_f64(number)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            CampaignJson::Text(text) => serde_json::Value::String(text.into_owned()),
        }
    }
}

/// Converts one value for a field of the given kind (`None` when the metadata does not know the
/// field); the error names the field and what was wrong.
pub fn to_campaign_json(
    field: &str,
    value: &Value,
    kind: Option<&FieldKind>,
) -> Result<serde_json::Value, String> {
    campaign_json(field, value, kind).map(serde_json::Value::from)
}

/// [`to_campaign_json`] without the copy: text written as it is stays borrowed.
pub(crate) fn campaign_json<'a>(
    field: &str,
    value: &'a Value,
    kind: Option<&FieldKind>,
) -> Result<CampaignJson<'a>, String> {
    Ok(match value {
        Value::Null => CampaignJson::Null,
        // Into a text field a number or a flag goes as its text, as Campaign's own import
        // does: a technical picklist value (an option number) mapped to a string field is then
        // written as "1" instead of being refused.
        Value::Boolean(flag) if kind == Some(&FieldKind::Text) => {
            CampaignJson::Text(Cow::Owned(flag.to_string()))
        }
        Value::Integer(number) if kind == Some(&FieldKind::Text) => {
            CampaignJson::Text(Cow::Owned(number.to_string()))
        }
        Value::Decimal(number) if kind == Some(&FieldKind::Text) && number.is_finite() => {
            CampaignJson::Text(Cow::Owned(number.to_string()))
        }
        Value::Boolean(flag) => CampaignJson::Boolean(*flag),
        Value::Integer(number) => CampaignJson::Integer(*number),
        Value::Decimal(number) if number.is_finite() => CampaignJson::Number(*number),
        Value::Decimal(number) => {
            return Err(format!("field {field}: {number} is not a finite number"));
        }
        Value::Text(text) | Value::Guid(text) => CampaignJson::Text(Cow::Borrowed(text)),
        Value::Datetime(text) => {
            let instant = parse_instant(text).ok_or_else(|| {
                format!("field {field}: {text:?} is not an RFC 3339 date or date-time")
            })?;
            let formatted = if kind == Some(&FieldKind::Date) {
                campaign_date_text(instant)
            } else {
                campaign_datetime_text(instant)
            };
            CampaignJson::Text(Cow::Owned(formatted))
        }
        Value::Picklist { value, label } => match label {
            Some(label) => CampaignJson::Text(Cow::Borrowed(label)),
            None => {
                return Err(format!(
                    "field {field}: picklist value {value} has no label to write to Campaign"
                ));
            }
        },
        Value::Lookup { id, .. } => CampaignJson::Text(Cow::Borrowed(id)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_values_read_back_as_their_json_and_text_is_not_copied() {
        let values = [
            (Value::Null, None),
            (Value::Boolean(true), None),
            (Value::Boolean(false), Some(FieldKind::Text)),
            (Value::Integer(-42), None),
            (Value::Integer(7), Some(FieldKind::Text)),
            (Value::Decimal(0.1), None),
            (Value::Decimal(1e300), Some(FieldKind::Text)),
            (Value::Text("line\nbreak \"quoted\" \u{7f} é".into()), None),
            (Value::Datetime("2018-05-16T23:08:13.006Z".into()), None),
        ];
        for (value, kind) in &values {
            let json = campaign_json("f", value, kind.as_ref()).unwrap();
            let encoded = serde_json::to_string(&json).unwrap();
            let read: serde_json::Value = serde_json::from_str(&encoded).unwrap();
            assert_eq!(
                read,
                to_campaign_json("f", value, kind.as_ref()).unwrap(),
                "{value:?}"
            );
        }
        let text = Value::Text("as it is".into());
        assert!(matches!(
            campaign_json("f", &text, None),
            Ok(CampaignJson::Text(Cow::Borrowed("as it is")))
        ));
    }

    #[test]
    fn datetimes_become_campaign_text_and_dates_keep_the_day() {
        let value = Value::Datetime("2018-05-16T23:08:13.006+00:00".into());
        assert_eq!(
            to_campaign_json("lastSeen", &value, Some(&FieldKind::Datetime)).unwrap(),
            "2018-05-16 23:08:13.006Z"
        );
        assert_eq!(
            to_campaign_json("birthDate", &value, Some(&FieldKind::Date)).unwrap(),
            "2018-05-16"
        );
        let bare = Value::Datetime("1990-02-03".into());
        assert_eq!(
            to_campaign_json("birthDate", &bare, Some(&FieldKind::Date)).unwrap(),
            "1990-02-03"
        );
    }

    #[test]
    fn numbers_and_flags_become_text_in_text_fields_and_stay_numbers_elsewhere() {
        let option = Value::Integer(1);
        assert_eq!(
            to_campaign_json("phone", &option, Some(&FieldKind::Text)).unwrap(),
            serde_json::json!("1")
        );
        assert_eq!(
            to_campaign_json("score", &option, Some(&FieldKind::Integer)).unwrap(),
            serde_json::json!(1)
        );
        assert_eq!(
            to_campaign_json("ratio", &Value::Decimal(2.5), Some(&FieldKind::Text)).unwrap(),
            serde_json::json!("2.5")
        );
        assert_eq!(
            to_campaign_json("flag", &Value::Boolean(true), Some(&FieldKind::Text)).unwrap(),
            serde_json::json!("true")
        );
        assert_eq!(
            to_campaign_json("flag", &Value::Boolean(true), Some(&FieldKind::Boolean)).unwrap(),
            serde_json::json!(true)
        );
    }

    #[test]
    fn picklists_write_labels_and_lookups_their_id() {
        let gender = Value::Picklist {
            value: 1,
            label: Some("male".into()),
        };
        assert_eq!(to_campaign_json("gender", &gender, None).unwrap(), "male");
        let unlabeled = Value::Picklist {
            value: 1,
            label: None,
        };
        let error = to_campaign_json("gender", &unlabeled, None).unwrap_err();
        assert!(
            error.contains("gender") && error.contains("no label"),
            "{error}"
        );
        let lookup = Value::Lookup {
            table: "contact".into(),
            id: "c-1".into(),
        };
        assert_eq!(
            to_campaign_json("cusProfileCrmId", &lookup, None).unwrap(),
            "c-1"
        );
    }

    #[test]
    fn bad_dates_and_non_finite_numbers_are_named() {
        let error =
            to_campaign_json("created", &Value::Datetime("yesterday".into()), None).unwrap_err();
        assert!(
            error.contains("created") && error.contains("yesterday"),
            "{error}"
        );
        let error = to_campaign_json("score", &Value::Decimal(f64::NAN), None).unwrap_err();
        assert!(error.contains("score"), "{error}");
    }

    /// Found by `any_readable_date_text_writes_out_and_reads_back_as_the_same_instant`:
    /// `-1-01-01` was read as year -1, whose RFC 3339 text (`-0001-...`) nothing reads back.
    #[test]
    fn dates_outside_the_years_0000_to_9999_are_unreadable() {
        for text in ["-1-01-01", "+10000-01-01", "10000-01-01 00:00:00.000Z"] {
            assert_eq!(parse_instant(text), None, "{text}");
            assert_eq!(rfc3339_from_campaign(text), None, "{text}");
        }
        assert!(to_campaign_json("f", &Value::Datetime("-1-01-01".into()), None).is_err());
        assert!(parse_instant("0000-01-01").is_some());
        assert!(parse_instant("9999-12-31 23:59:59.999Z").is_some());
    }

    #[test]
    fn campaign_text_reads_back_as_rfc3339() {
        assert_eq!(
            rfc3339_from_campaign("2018-05-16 23:08:13.006Z").as_deref(),
            Some("2018-05-16T23:08:13.006Z")
        );
        assert_eq!(
            rfc3339_from_campaign("2018-05-16T23:08:13+02:00").as_deref(),
            Some("2018-05-16T21:08:13.000Z")
        );
        assert_eq!(rfc3339_from_campaign("16/05/2018"), None);
    }
}
