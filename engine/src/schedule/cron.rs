//! Cron expressions (5 fields, or 6 with seconds first) and their slots in an IANA time zone.
//! A local time that does not exist (spring forward) is no slot; one that happens twice (fall
//! back) is one slot, at its first occurrence. Pure arithmetic on `jiff` values: never reads
//! a clock or a file.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};

/// A parsed cron expression: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Days of the month, bits 1..=31.
    days: u64,
    /// Months, bits 1..=12.
    months: u64,
    /// Days of the week, bits 0..=6 (0 is Sunday).
    weekdays: u64,
    /// Whether the day-of-month and day-of-week fields were `*`: when both are restricted a day
    /// matches either (as in Vixie cron), else both.
    days_any: bool,
    weekdays_any: bool,
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// How far a search looks before it says "no slot": longer than any leap-day cycle.
const HORIZON_YEARS: i16 = 9;

impl Cron {
    /// Parses `expr`; the error says which field is wrong and why.
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let expanded = match expr.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "expected 5 fields (minute hour day month weekday) or 6 (second first), found {n}"
                ));
            }
        };
        let weekdays = field(rest[4], "weekday", 0, 7, WEEKDAYS)?;
        // 7 is Sunday too.
        let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
        Ok(Cron {
            seconds: field(sec, "second", 0, 59, &[])?,
            minutes: field(rest[0], "minute", 0, 59, &[])?,
            hours: field(rest[1], "hour", 0, 23, &[])?,
            days: field(rest[2], "day of month", 1, 31, &[])?,
            months: field(rest[3], "month", 1, 12, MONTHS)?,
            weekdays,
            days_any: is_any(rest[2]),
            weekdays_any: is_any(rest[4]),
        })
    }

    fn day_ok(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_any, self.weekdays_any) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }

    fn month_ok(&self, d: Date) -> bool {
        self.months & (1 << d.month()) != 0
    }

    /// The first matching local time at or after `c`, within the horizon.
    fn at_or_after(&self, c: DateTime) -> Option<DateTime> {
        let end = c.year().saturating_add(HORIZON_YEARS);
        let (mut d, mut h, mut m, mut s) = (c.date(), c.hour() as u32, c.minute() as u32, c.second() as u32);
        while d.year() <= end {
            if !self.month_ok(d) {
                d = d.last_of_month().tomorrow().ok()?;
                (h, m, s) = (0, 0, 0);
                continue;
            }
            if !self.day_ok(d) {
                d = d.tomorrow().ok()?;
                (h, m, s) = (0, 0, 0);
                continue;
            }
            let Some(hh) = next_bit(self.hours, h) else {
                d = d.tomorrow().ok()?;
                (h, m, s) = (0, 0, 0);
                continue;
            };
            if hh != h {
                (h, m, s) = (hh, 0, 0);
            }
            let Some(mm) = next_bit(self.minutes, m) else {
                (h, m, s) = (h + 1, 0, 0);
                if h == 24 {
                    d = d.tomorrow().ok()?;
                    h = 0;
                }
                continue;
            };
            if mm != m {
                (m, s) = (mm, 0);
            }
            let Some(ss) = next_bit(self.seconds, s) else {
                (m, s) = (m + 1, 0);
                if m == 60 {
                    (h, m) = (h + 1, 0);
                    if h == 24 {
                        d = d.tomorrow().ok()?;
                        h = 0;
                    }
                }
                continue;
            };
            return Some(d.at(h as i8, m as i8, ss as i8, 0));
        }
        None
    }

    /// The last matching local time at or before `c`, within the horizon.
    fn at_or_before(&self, c: DateTime) -> Option<DateTime> {
        let end = c.year().saturating_sub(HORIZON_YEARS);
        let (mut d, mut h, mut m, mut s) = (c.date(), c.hour() as u32, c.minute() as u32, c.second() as u32);
        while d.year() >= end {
            if !self.month_ok(d) {
                d = d.first_of_month().yesterday().ok()?;
                (h, m, s) = (23, 59, 59);
                continue;
            }
            if !self.day_ok(d) {
                d = d.yesterday().ok()?;
                (h, m, s) = (23, 59, 59);
                continue;
            }
            let Some(hh) = prev_bit(self.hours, h) else {
                d = d.yesterday().ok()?;
                (h, m, s) = (23, 59, 59);
                continue;
            };
            if hh != h {
                (h, m, s) = (hh, 59, 59);
            }
            let Some(mm) = prev_bit(self.minutes, m) else {
                if h == 0 {
                    d = d.yesterday().ok()?;
                    (h, m, s) = (23, 59, 59);
                } else {
                    (h, m, s) = (h - 1, 59, 59);
                }
                continue;
            };
            if mm != m {
                (m, s) = (mm, 59);
            }
            let Some(ss) = prev_bit(self.seconds, s) else {
                if m == 0 {
                    if h == 0 {
                        d = d.yesterday().ok()?;
                        (h, m, s) = (23, 59, 59);
                    } else {
                        (h, m, s) = (h - 1, 59, 59);
                    }
                } else {
                    (m, s) = (m - 1, 59);
                }
                continue;
            };
            return Some(d.at(h as i8, m as i8, ss as i8, 0));
        }
        None
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, tz: &TimeZone, t: Timestamp) -> Option<Timestamp> {
        let mut from = tz.to_datetime(t).checked_add(jiff::SignedDuration::from_secs(1)).ok()?;
        from = from.with().subsec_nanosecond(0).build().ok()?;
        // Each candidate moves on by a second at least; a fold holds at most a few hours.
        for _ in 0..100_000 {
            let c = self.at_or_after(from)?;
            if let Some(ts) = instant(tz, c)
                && ts > t
            {
                return Some(ts);
            }
            from = c.checked_add(jiff::SignedDuration::from_secs(1)).ok()?;
        }
        None
    }

    /// The last slot at or before `t`.
    pub fn last_at_or_before(&self, tz: &TimeZone, t: Timestamp) -> Option<Timestamp> {
        let mut from = tz.to_datetime(t).with().subsec_nanosecond(0).build().ok()?;
        // Just after a fall-back transition the local clock reads earlier than slots already
        // passed: look from a little later, when the offset changed lately.
        const FOLD: i64 = 3 * 3600;
        let earlier = t.checked_sub(jiff::SignedDuration::from_secs(FOLD)).ok()?;
        if tz.to_offset(earlier) != tz.to_offset(t) {
            from = from.checked_add(jiff::SignedDuration::from_secs(FOLD)).ok()?;
        }
        for _ in 0..100_000 {
            let c = self.at_or_before(from)?;
            if let Some(ts) = instant(tz, c)
                && ts <= t
            {
                return Some(ts);
            }
            from = c.checked_sub(jiff::SignedDuration::from_secs(1)).ok()?;
        }
        None
    }

    /// Whether `t` is one of the slots.
    pub fn is_slot(&self, tz: &TimeZone, t: Timestamp) -> bool {
        t.subsec_nanosecond() == 0
            && t.checked_sub(jiff::SignedDuration::from_secs(1))
                .ok()
                .and_then(|before| self.next_after(tz, before))
                == Some(t)
    }
}

/// The instant of local time `c`: none in a gap, the first occurrence in a fold.
fn instant(tz: &TimeZone, c: DateTime) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(c).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(c).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(c).ok(),
        AmbiguousOffset::Gap { .. } => None,
    }
}

fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let m = (mask >> from) << from;
    (m != 0).then(|| m.trailing_zeros())
}

fn prev_bit(mask: u64, upto: u32) -> Option<u32> {
    let m = if upto >= 63 {
        mask
    } else {
        mask & ((1u64 << (upto + 1)) - 1)
    };
    (m != 0).then(|| 63 - m.leading_zeros())
}

fn is_any(f: &str) -> bool {
    f == "*" || f == "?"
}

/// One field: `*`, `?`, `N`, `N-M`, with `/STEP`, comma-separated; names where `names` has them.
fn field(text: &str, what: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let msg = |why: String| format!("{what} field `{text}`: {why}");
    let bad = |why: String| Err(msg(why));
    let value = |v: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            // Months are named from 1, weekdays from 0.
            return Ok(i as u32 + min);
        }
        match v.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            Ok(n) => Err(format!("{n} is out of range {min}-{max}")),
            Err(_) => Err(format!("`{v}` is not a number")),
        }
    };
    let mut mask = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => match s.parse::<u32>() {
                Ok(s) if s > 0 => (r, s),
                _ => return bad(format!("step `{s}` is not a positive number")),
            },
            None => (part, 1),
        };
        let (lo, hi) = if is_any(range) {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a).map_err(msg)?, value(b).map_err(msg)?);
            if a > b {
                return bad(format!("range {a}-{b} goes backwards"));
            }
            (a, b)
        } else {
            let a = value(range).map_err(msg)?;
            // `N/S` runs from N to the end.
            (a, if part.contains('/') { max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            mask |= 1 << v;
            let Some(next) = v.checked_add(step) else { break };
            v = next;
        }
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn slots(cron: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
        let (c, tz) = (Cron::parse(cron).unwrap(), super::super::zone(zone).unwrap());
        let mut t = ts(from);
        (0..n)
            .map(|_| {
                t = c.next_after(&tz, t).unwrap();
                t.to_string()
            })
            .collect()
    }

    #[test]
    fn five_and_six_fields() {
        assert_eq!(
            slots("*/20 * * * * *", "UTC", "2026-12-02T00:00:00Z", 3),
            ["2026-12-02T00:00:20Z", "2026-12-02T00:00:40Z", "2026-12-02T00:01:00Z"]
        );
        assert_eq!(
            slots("0 2 * * mon-fri", "UTC", "2026-12-04T03:00:00Z", 2),
            ["2026-12-07T02:00:00Z", "2026-12-08T02:00:00Z"]
        );
        // Day of month and day of week both restricted: either matches.
        assert_eq!(
            slots("0 0 1 * sun", "UTC", "2026-12-02T00:00:00Z", 2),
            ["2026-12-06T00:00:00Z", "2026-12-13T00:00:00Z"]
        );
        assert_eq!(
            slots("@yearly", "UTC", "2026-12-02T00:00:00Z", 1),
            ["2027-01-01T00:00:00Z"]
        );
        assert_eq!(
            slots("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", 1),
            ["2028-02-29T00:00:00Z"]
        );
        assert!(
            Cron::parse("0 0 30 2 *")
                .unwrap()
                .next_after(&TimeZone::UTC, ts("2026-01-01T00:00:00Z"))
                .is_none()
        );
    }

    #[test]
    fn bad_expressions_name_the_field() {
        for (bad, says) in [
            ("* * * *", "expected 5 fields"),
            ("61 * * * *", "minute field `61`: 61 is out of range 0-59"),
            ("* 25 * * *", "hour field"),
            ("* * * foo *", "month field"),
            ("*/0 * * * *", "step"),
            ("5-1 * * * *", "backwards"),
            ("* * * * * * *", "found 7"),
            ("*/99999999999 * * * *", "step"),
        ] {
            let e = Cron::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_huge_step_is_one_value() {
        assert_eq!(
            slots("7/4294967295 * * * *", "UTC", "2026-12-02T00:00:00Z", 2),
            ["2026-12-02T00:07:00Z", "2026-12-02T01:07:00Z"]
        );
    }

    #[test]
    fn spring_forward_skips_the_missing_slot() {
        // Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
        assert_eq!(
            slots("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z", 2),
            ["2026-03-28T01:30:00Z", "2026-03-30T00:30:00Z"]
        );
        // America/New_York, 2026-03-08: 02:00 EST becomes 03:00 EDT.
        assert_eq!(
            slots("30 2 * * *", "America/New_York", "2026-03-07T00:00:00Z", 2),
            ["2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z"]
        );
    }

    #[test]
    fn fall_back_runs_the_repeated_slot_once() {
        // Europe/Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
        assert_eq!(
            slots("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        // America/New_York, 2026-11-01: 02:00 EDT becomes 01:00 EST; the 01:xx hour repeats.
        assert_eq!(
            slots("*/20 1-2 * * *", "America/New_York", "2026-11-01T04:59:00Z", 7),
            [
                "2026-11-01T05:00:00Z",
                "2026-11-01T05:20:00Z",
                "2026-11-01T05:40:00Z",
                "2026-11-01T07:00:00Z",
                "2026-11-01T07:20:00Z",
                "2026-11-01T07:40:00Z",
                "2026-11-02T06:00:00Z"
            ]
        );
        let (c, tz) = (
            Cron::parse("*/20 1-2 * * *").unwrap(),
            super::super::zone("America/New_York").unwrap(),
        );
        // In the repeated hour (01:10 EST), the last slot is 01:40 EDT, not 01:00 again.
        assert_eq!(
            c.last_at_or_before(&tz, ts("2026-11-01T06:10:00Z"))
                .unwrap()
                .to_string(),
            "2026-11-01T05:40:00Z"
        );
        assert!(!c.is_slot(&tz, ts("2026-11-01T06:20:00Z")));
        assert!(c.is_slot(&tz, ts("2026-11-01T05:20:00Z")));
    }

    #[test]
    fn the_last_slot_before_a_time() {
        let c = Cron::parse("0 2 * * *").unwrap();
        let tz = super::super::zone("Europe/Berlin").unwrap();
        assert_eq!(
            c.last_at_or_before(&tz, ts("2026-12-02T10:00:00Z"))
                .unwrap()
                .to_string(),
            "2026-12-02T01:00:00Z"
        );
        assert_eq!(
            c.last_at_or_before(&tz, ts("2026-12-02T01:00:00Z"))
                .unwrap()
                .to_string(),
            "2026-12-02T01:00:00Z"
        );
        let every = Cron::parse("*/3 * * * * *").unwrap();
        assert_eq!(
            every
                .last_at_or_before(&TimeZone::UTC, ts("2026-12-02T10:00:04.5Z"))
                .unwrap()
                .to_string(),
            "2026-12-02T10:00:03Z"
        );
    }
}
