//! The times of `valid-after` and `valid-before`, read exactly as ssh-keygen reads them, in
//! UTC or, through `mktime`, in the local time zone. Knows nothing of keys or lines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A valid-after/valid-before time, read as ssh-keygen's `parse_absolute_time` reads it:
/// `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, in UTC when suffixed `Z` (or `UTC`), else
/// in the local time zone. Local times go through `mktime` with daylight saving time off,
/// exactly as ssh-keygen does, so both read a line the same way on the same host.
pub(super) fn parse_time(text: &str) -> Result<SystemTime, String> {
    let upper = text.to_ascii_uppercase();
    let (digits, utc) = match upper.strip_suffix('Z').or_else(|| upper.strip_suffix("UTC")) {
        Some(d) => (d, true),
        None => (upper.as_str(), false),
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected 8, 12 or 14 digits".into());
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).map_or(0, |s| s.parse::<i64>().unwrap_or(0));
    let (y, mo, d, h, mi, s) = (num(0..4), num(4..6), num(6..8), num(8..10), num(10..12), num(12..14));
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo.clamp(1, 12) - 1) as usize] {
        return Err("no such date".into());
    }
    if h > 23 || mi > 59 || s > 59 {
        return Err("no such time of day".into());
    }
    let secs = if utc {
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s
    } else {
        local_mktime(y, mo, d, h, mi, s)?
    };
    if secs <= 0 {
        return Err("must be after 1970-01-01T00:00:00Z".into());
    }
    Ok(UNIX_EPOCH + Duration::from_secs(secs as u64))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn local_mktime(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Result<i64, String> {
    // SAFETY: `tm` is a plain C struct for which all-zero is a valid value (a null `tm_zone`
    // included), and mktime only reads and normalises the struct we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = (y - 1900) as libc::c_int;
    tm.tm_mon = (mo - 1) as libc::c_int;
    tm.tm_mday = d as libc::c_int;
    tm.tm_hour = h as libc::c_int;
    tm.tm_min = mi as libc::c_int;
    tm.tm_sec = s as libc::c_int;
    tm.tm_isdst = 0;
    // SAFETY: as above; mktime is thread-safe in glibc and musl.
    let t = unsafe { libc::mktime(&mut tm) };
    if t == -1 {
        Err("not representable in the local time zone".into())
    } else {
        Ok(t as i64)
    }
}
