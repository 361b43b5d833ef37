//! A small RFC 3339 parser, so plugins compare datetimes as instants without a date crate in
//! every component. Also accepts a bare `YYYY-MM-DD` (Dataverse date-only fields) as midnight UTC.

use std::fmt;

/// A point in time: seconds since 1970-01-01T00:00:00Z and the nanoseconds within the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    /// Whole seconds since the Unix epoch (negative before 1970).
    pub seconds: i64,
    /// Nanoseconds within that second.
    pub nanos: u32,
}

/// Why a text is not an RFC 3339 datetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatetimeError {
    text: String,
    problem: &'static str,
}

impl fmt::Display for DatetimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' is not an RFC 3339 datetime ({})",
            self.text, self.problem
        )
    }
}

impl std::error::Error for DatetimeError {}

/// Parses `2026-11-29T04:57:52Z`, `2026-11-29T05:57:52.123+01:00` or `2026-11-29`.
pub fn parse(text: &str) -> Result<Instant, DatetimeError> {
    let fail = |problem| DatetimeError {
        text: text.to_owned(),
        problem,
    };
    let bytes = text.as_bytes();
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return Err(fail("expected YYYY-MM-DD at the start"));
    }
    let year = digits(&bytes[0..4]).ok_or_else(|| fail("bad year"))?;
    let month = digits(&bytes[5..7]).ok_or_else(|| fail("bad month"))?;
    let day = digits(&bytes[8..10]).ok_or_else(|| fail("bad day"))?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(fail("no such date"));
    }
    let days = days_from_civil(year, month, day);
    if bytes.len() == 10 {
        return Ok(Instant {
            seconds: days * 86_400,
            nanos: 0,
        });
    }
    if bytes.len() < 20 || !matches!(bytes[10], b'T' | b't' | b' ') {
        return Err(fail("expected a time after the date"));
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return Err(fail("expected HH:MM:SS"));
    }
    let hour = digits(&bytes[11..13]).ok_or_else(|| fail("bad hour"))?;
    let minute = digits(&bytes[14..16]).ok_or_else(|| fail("bad minute"))?;
    // A leap second (60) is folded into the next second's start, as most systems do.
    let second = digits(&bytes[17..19]).ok_or_else(|| fail("bad second"))?;
    if hour > 23 || minute > 59 || second > 60 {
        return Err(fail("time out of range"));
    }
    let mut rest = &bytes[19..];
    let mut nanos: u32 = 0;
    if let Some((b'.', fraction)) = rest.split_first() {
        let length = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if length == 0 {
            return Err(fail("empty fraction of a second"));
        }
        for (position, digit) in fraction[..length].iter().enumerate() {
            if position < 9 {
                nanos += u32::from(digit - b'0') * 10u32.pow(8 - position as u32);
            }
        }
        rest = &fraction[length..];
    }
    let offset_seconds = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2]).ok_or_else(|| fail("bad offset hours"))?;
            let minutes = digits(&[*m1, *m2]).ok_or_else(|| fail("bad offset minutes"))?;
            if hours > 23 || minutes > 59 {
                return Err(fail("offset out of range"));
            }
            let magnitude = hours * 3600 + minutes * 60;
            if *sign == b'+' { magnitude } else { -magnitude }
        }
        _ => return Err(fail("expected Z or an offset like +01:00 after the time")),
    };
    Ok(Instant {
        seconds: days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds,
        nanos,
    })
}

fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |total, byte| {
        byte.is_ascii_digit()
            .then(|| total * 10 + i64::from(byte - b'0'))
    })
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_offset_forms_of_one_instant_are_equal() {
        let utc = parse("2026-11-29T04:57:52Z").unwrap();
        let offset = parse("2026-11-29T05:57:52+01:00").unwrap();
        assert_eq!(utc, offset);
        assert_eq!(utc.seconds, 1_795_928_272);
    }

    #[test]
    fn fractions_order_instants_within_a_second() {
        let early = parse("2026-01-01T00:00:00.1Z").unwrap();
        let late = parse("2026-01-01T00:00:00.25Z").unwrap();
        assert!(early < late);
        assert_eq!(late.nanos, 250_000_000);
    }

    #[test]
    fn date_only_is_midnight_utc() {
        assert_eq!(parse("1970-01-02").unwrap().seconds, 86_400);
        assert_eq!(parse("1969-12-31").unwrap().seconds, -86_400);
    }

    #[test]
    fn malformed_datetimes_are_refused_with_the_text() {
        for bad in [
            "",
            "yesterday",
            "2026-02-30",
            "2026-13-01T00:00:00Z",
            "2026-01-01T25:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.to_string().contains(&format!("'{bad}'")), "{error}");
        }
    }
}
