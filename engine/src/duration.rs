//! Durations as pack authors write them: Go-style (`10m`, `2s`, `1h30m`, `500ms`) or
//! ISO 8601 (`PT4H`, `P1DT2H`). Plans store them as whole milliseconds.

/// Parses a duration into milliseconds, or says what is wrong with it.
pub fn parse_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t.starts_with('P') || t.starts_with('p') {
        return parse_iso(t);
    }
    let d = humantime::parse_duration(t).map_err(|e| format!("invalid duration `{s}`: {e}"))?;
    u64::try_from(d.as_millis()).map_err(|_| format!("duration `{s}` is too long"))
}

/// ISO 8601 durations of days, hours, minutes and (fractional) seconds. Years and months
/// are refused: their length depends on the calendar.
fn parse_iso(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid ISO 8601 duration `{s}` (expected e.g. PT4H, PT30M, P1DT2H)");
    let body = &s[1..];
    let (date, time) = match body.find(['T', 't']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mut total: f64 = 0.0;
    let mut any = false;
    for (part, units) in [
        (date, &[('D', 86_400_000.0), ('W', 604_800_000.0)][..]),
        (
            time.unwrap_or(""),
            &[('H', 3_600_000.0), ('M', 60_000.0), ('S', 1_000.0)][..],
        ),
    ] {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
                continue;
            }
            let unit = c.to_ascii_uppercase();
            let Some((_, factor)) = units.iter().find(|(u, _)| *u == unit) else {
                return Err(bad());
            };
            let n: f64 = num.parse().map_err(|_| bad())?;
            total += n * factor;
            num.clear();
            any = true;
        }
        if !num.is_empty() {
            return Err(bad());
        }
    }
    if !any || time == Some("") {
        return Err(bad());
    }
    if total > u64::MAX as f64 / 2.0 {
        return Err(format!("duration `{s}` is too long"));
    }
    Ok(total.round() as u64)
}

/// Renders milliseconds the short way people write them (`4h`, `1m30s`, `250ms`).
pub fn format_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_and_iso_agree() {
        assert_eq!(parse_ms("10m"), Ok(600_000));
        assert_eq!(parse_ms("2s"), Ok(2_000));
        assert_eq!(parse_ms("0s"), Ok(0));
        assert_eq!(parse_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("PT4H"), Ok(14_400_000));
        assert_eq!(parse_ms("P1DT2H"), Ok(93_600_000));
        assert_eq!(parse_ms("PT1.5S"), Ok(1_500));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in ["", "10", "ten minutes", "P", "PT", "P1Y", "PT4X", "-5s", "P1H"] {
            assert!(parse_ms(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_ms(14_400_000), "4h");
        assert_eq!(format_ms(90_000), "1m30s");
        assert_eq!(format_ms(250), "250ms");
    }
}
