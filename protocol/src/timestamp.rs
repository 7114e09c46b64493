//! RFC 3339 timestamps as used in payloads (`issuedAt`, `expiresAt`, `ts`, `lastReboot`):
//! checking, converting to and from Unix milliseconds, without a time crate.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::DecodeError;

/// Parses an RFC 3339 timestamp (`2025-05-01T12:00:00Z`, `2025-05-01T14:00:00.5+02:00`) into
/// Unix milliseconds (fractions below a millisecond are truncated).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some((b'.', fraction)) = rest.split_first() {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        for i in 0..3 {
            let d = fraction.get(i).filter(|_| i < n).map_or(0, |c| i64::from(c - b'0'));
            millis = millis * 10 + d;
        }
        rest = &fraction[n..];
    }

    let offset_seconds = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let oh = digits(rest, 1, 2)?;
            let om = digits(rest, 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let offset = oh * 3600 + om * 60;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return None,
    };

    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(seconds * 1000 + millis)
}

/// Whether `s` is an RFC 3339 timestamp.
pub fn is_rfc3339(s: &str) -> bool {
    parse_rfc3339(s).is_some()
}

/// Checks an RFC 3339 timestamp field, failing with [`DecodeError::InvalidField`].
pub fn validate_timestamp(field: &str, value: &str) -> Result<(), DecodeError> {
    if is_rfc3339(value) {
        Ok(())
    } else {
        Err(DecodeError::InvalidField(format!("{field} {value:?} is not an RFC 3339 timestamp")))
    }
}

/// Formats Unix milliseconds as an RFC 3339 UTC timestamp (`2025-05-01T12:00:00Z`, or with
/// `.mmm` when there are milliseconds).
pub fn format_rfc3339(unix_millis: i64) -> String {
    let seconds = unix_millis.div_euclid(1000);
    let millis = unix_millis.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let in_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (in_day / 3600, in_day / 60 % 60, in_day % 60);
    if millis == 0 {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
    }
}

/// The current time in Unix milliseconds (0 if the clock is before 1970).
pub fn now_unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The current time as an RFC 3339 UTC timestamp.
pub fn now_rfc3339() -> String {
    format_rfc3339(now_unix_millis())
}

fn digits(b: &[u8], start: usize, len: usize) -> Option<i64> {
    let slice = b.get(start..start + len)?;
    slice
        .iter()
        .try_fold(0i64, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0')))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2025-05-01T12:00:00Z"), Some(1_746_100_800_000));
        assert_eq!(parse_rfc3339("2025-05-01T14:00:00+02:00"), Some(1_746_100_800_000));
        assert_eq!(parse_rfc3339("2025-05-01T07:30:00-04:30"), Some(1_746_100_800_000));
        assert_eq!(parse_rfc3339("2025-05-01t12:00:00z"), Some(1_746_100_800_000));
        assert_eq!(parse_rfc3339("2025-05-01T12:00:00.5Z"), Some(1_746_100_800_500));
        assert_eq!(parse_rfc3339("2025-05-01T12:00:00.123456789Z"), Some(1_746_100_800_123));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1000));
    }

    #[test]
    fn rejects_non_rfc3339() {
        for bad in [
            "",
            "2025-05-01",
            "2025-05-01T12:00:00",
            "2025-05-01 12:00:00Z",
            "2025-05-01T12:00Z",
            "2025-13-01T12:00:00Z",
            "2025-02-29T12:00:00Z",
            "2025-04-31T12:00:00Z",
            "2025-05-00T12:00:00Z",
            "2025-05-01T24:00:00Z",
            "2025-05-01T12:60:00Z",
            "2025-05-01T12:00:61Z",
            "2025-05-01T12:00:00.Z",
            "2025-05-01T12:00:00+0200",
            "2025-05-01T12:00:00+24:00",
            "2025-05-01T12:00:00Zjunk",
            "2025/05/01T12:00:00Z",
            "1746100800",
            "２025-05-01T12:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
            assert!(!is_rfc3339(bad));
        }
        assert_eq!(validate_timestamp("ts", "yesterday").map_err(|e| e.reason()), Err("invalid"));
        assert_eq!(validate_timestamp("ts", "2025-05-01T12:00:00Z"), Ok(()));
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_746_100_800_000), "2025-05-01T12:00:00Z");
        assert_eq!(format_rfc3339(1_746_100_800_042), "2025-05-01T12:00:00.042Z");
        assert_eq!(format_rfc3339(1_709_164_800_000), "2024-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn format_and_parse_round_trip() {
        let mut t = -86_400_000 * 400;
        while t < 4_102_444_800_000 {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t), "{t}");
            t += 7_777_777_777;
        }
        let now = now_unix_millis();
        assert!(now > 1_700_000_000_000);
        assert!(is_rfc3339(&now_rfc3339()));
    }
}
