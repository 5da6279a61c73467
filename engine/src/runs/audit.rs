//! The audit export (`stella runs export --since T --until T --ndjson`, DESIGN section 10):
//! every event of every run whose time is in [since, until), read from the ledger at one tip,
//! one JSON object a line with its run id, ordered by time, then run, then seq; then one
//! manifest line with the sha256 of those lines and the commit they were read at. Runs the
//! scan (and its index) knows to lie outside the window are not read. Writes only to the
//! writer it is given; never to the ledger.

use std::io::Write;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};

use super::{Error, Index, Select, scan};
use crate::ledger::Ledger;

/// A half-open time window, [since, until).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: SystemTime,
    pub until: SystemTime,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Event lines written (the manifest line not counted).
    pub events: usize,
    /// Runs with at least one event in the window.
    pub runs: usize,
    /// Runs whose events were read (the others were skipped by what the scan knew).
    pub read: usize,
    /// Run directories that cannot be read as runs: named in the manifest, their events absent.
    pub invalid: Vec<String>,
    /// sha256 of the event lines, newlines included, as written.
    pub sha256: String,
    /// The ledger commit read, if the branch has one.
    pub commit: Option<String>,
}

/// Reads a window bound: RFC 3339 (`2026-12-01T10:00:00Z`, `…+02:00`, fractions allowed) or a
/// date (`2026-12-01`, midnight UTC).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let t = text.trim();
    if t.len() == 10 {
        return humantime::parse_rfc3339(&format!("{t}T00:00:00Z")).ok();
    }
    if let Ok(at) = humantime::parse_rfc3339(t) {
        return Some(at);
    }
    // An offset other than Z: `…±hh:mm`.
    let (local, offset) = t.split_at_checked(t.len().checked_sub(6)?)?;
    let sign = match offset.as_bytes()[0] {
        b'+' => 1i64,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = offset[1..].split_once(':')?;
    let (h, m): (u64, u64) = (h.parse().ok()?, m.parse().ok()?);
    if h > 23 || m > 59 || !local.contains('T') {
        return None;
    }
    let at = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    let shift = Duration::from_secs(h * 3600 + m * 60);
    // Local time minus its offset is UTC.
    if sign > 0 {
        at.checked_sub(shift)
    } else {
        at.checked_add(shift)
    }
}

/// Writes the events of `window` from the ledger's tip to `out`, then the manifest line.
pub fn export(ledger: &Ledger, index: &mut Index, window: Window, out: &mut dyn Write) -> Result<Exported, Error> {
    let tip = ledger.tip()?;
    let mut lines: Vec<(SystemTime, String, u64, String)> = Vec::new();
    let mut exported = Exported {
        events: 0,
        runs: 0,
        read: 0,
        invalid: Vec::new(),
        sha256: String::new(),
        commit: tip.map(|t| t.to_string()),
    };
    if let Some(tip) = tip {
        let scanned = scan(ledger, tip, index, Select::All)?;
        for s in scanned.runs {
            if s.invalid.is_some() {
                exported.invalid.push(s.id);
                continue;
            }
            if !s.facts.may_overlap(window.since, window.until) {
                continue;
            }
            exported.read += 1;
            // The ledger's events only: the audit record is what was committed and signed.
            let view = super::view(ledger, tip, &s.dir);
            if view.invalid.is_some() {
                exported.invalid.push(s.id);
                continue;
            }
            let before = lines.len();
            for e in view.ledger_events {
                let Some(at) = humantime::parse_rfc3339(&e.ts).ok() else {
                    continue;
                };
                if at < window.since || at >= window.until {
                    continue;
                }
                let mut line = Map::new();
                line.insert("run".into(), json!(s.id));
                if let Json::Object(fields) = serde_json::to_value(&e).expect("JSON") {
                    line.extend(fields);
                }
                lines.push((at, s.id.clone(), e.seq, Json::Object(line).to_string()));
            }
            exported.runs += usize::from(lines.len() > before);
        }
    }
    lines.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    let mut hash = Sha256::new();
    let io = Error::Output;
    for (_, _, _, line) in &lines {
        hash.update(line.as_bytes());
        hash.update(b"\n");
        out.write_all(line.as_bytes()).map_err(io)?;
        out.write_all(b"\n").map_err(io)?;
    }
    exported.events = lines.len();
    exported.sha256 = hex::encode(hash.finalize());
    let stamp = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
    let manifest = json!({
        "type": "export.manifest", "since": stamp(window.since), "until": stamp(window.until),
        "commit": exported.commit, "runs": exported.runs, "events": exported.events,
        "sha256": exported.sha256, "invalid": exported.invalid,
    });
    writeln!(out, "{manifest}").map_err(io)?;
    out.flush().map_err(io)?;
    Ok(exported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds_read_as_rfc3339_with_offsets_or_dates() {
        let at = |t: &str| humantime::parse_rfc3339(t).unwrap();
        assert_eq!(parse_time("2026-12-01"), Some(at("2026-12-01T00:00:00Z")));
        assert_eq!(
            parse_time("2026-12-01T10:00:00.250Z"),
            Some(at("2026-12-01T10:00:00.250Z"))
        );
        assert_eq!(
            parse_time("2026-12-01T12:00:00+02:00"),
            Some(at("2026-12-01T10:00:00Z"))
        );
        assert_eq!(
            parse_time("2026-12-01T08:30:00-01:30"),
            Some(at("2026-12-01T10:00:00Z"))
        );
        for bad in ["yesterday", "2026-13-01", "2026-12-01T10:00:00+25:00", ""] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
