//! What makes a run directory unreadable as a run: ledger events that are not the NDJSON a
//! runner writes, a `plan.json` that is not the run's plan, a runner file that is not a
//! regular file, a local journal that cannot be read. Such a run is reported and skipped;
//! it never stops the others. Only structure is checked here, from one tree, with no history:
//! who wrote a file is `ledger::verify`'s question.

use std::fmt;

use serde::Serialize;

use crate::code::Code;
use crate::event::Event;

/// The entries a run directory holds: a person's request and cancel, the runner's files.
/// Anything else is reported and ignored (DESIGN section 2).
pub const RUN_ENTRIES: [&str; 7] = [
    "request.yaml",
    "cancel.yaml",
    "plan.json",
    "events.ndjson",
    "events",
    "artifacts",
    "evidence",
];

/// Why a run cannot be read: the file (and line) at fault and the code of the problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invalid {
    pub code: Code,
    /// Repository path (`runs/<id>/events.ndjson`), or the local journal's path.
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub message: String,
}

impl Invalid {
    pub fn new(code: Code, file: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            code,
            file: file.into(),
            line: None,
            message: message.into(),
        }
    }

    #[must_use]
    pub fn at_line(mut self, line: u64) -> Invalid {
        self.line = Some(line);
        self
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} line {line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Reads a run's `events.ndjson` as the ledger holds it. Stricter than a journal: a runner
/// commits whole lines only, so every line, the last too, must be an event, and sequence
/// numbers only ever grow. Messages name the line and never quote its content.
pub fn ledger_events(file: &str, bytes: &[u8]) -> Result<Vec<Event>, Invalid> {
    let tampered = |line: u64, msg: String| Invalid::new(Code::LedgerTampered, file, msg).at_line(line);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        tampered(line, "not UTF-8".into())
    })?;
    let mut out: Vec<Event> = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let number = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str::<Event>(line).map_err(|e| tampered(number, not_an_event(&e)))?;
        if let Some(last) = out.last()
            && event.seq <= last.seq
        {
            return Err(tampered(
                number,
                format!(
                    "sequence number {} does not follow {}; a runner only appends",
                    event.seq, last.seq
                ),
            ));
        }
        out.push(event);
    }
    Ok(out)
}

/// Why a line is not an event, without quoting any of it (it may hold anything).
fn not_an_event(e: &serde_json::Error) -> String {
    let shown = e.to_string();
    let field = shown
        .split(" at line ")
        .next()
        .filter(|m| m.starts_with("missing field") || m.starts_with("unknown field"));
    match (e.classify(), field) {
        (_, Some(m)) => format!("not an event: {m}"),
        (serde_json::error::Category::Data, None) => {
            format!("not an event: a field has the wrong type (column {})", e.column())
        }
        _ => format!("not JSON (column {})", e.column()),
    }
}

/// Checks a run's `plan.json` against its events: it must be the plan the run recorded, and
/// hash to what it states. A runner writes it only together with events.
pub fn plan_json(file: &str, bytes: &[u8], events: &[Event]) -> Result<(), Invalid> {
    let tampered = |msg: String| Invalid::new(Code::LedgerTampered, file, msg);
    if events.is_empty() {
        return Err(tampered(
            "a plan.json without events.ndjson; a runner writes them together".into(),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| tampered("not UTF-8".into()))?;
    let (_, stated) = crate::plan::Plan::from_plan_json(text).map_err(|e| {
        // The reason without serde's detail, which may quote the content.
        let reason = e.strip_prefix("plan.json ").unwrap_or(&e);
        let reason = if reason.starts_with("states ") {
            reason
        } else {
            reason.split(": ").next().unwrap_or(reason)
        };
        tampered(format!("it {reason}"))
    })?;
    let recorded = crate::state::fold(events).plan_hash;
    if let Some(recorded) = recorded
        && recorded != stated
    {
        return Err(tampered(format!(
            "it is plan {stated}, but the run was planned as {recorded}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "runs/a/events.ndjson";

    #[test]
    fn garbage_names_its_line_and_quotes_nothing() {
        let good = "{\"seq\":0,\"ts\":\"t\",\"type\":\"run.planned\"}\n";
        let bad = format!("{good}hunter2-secret-ish garbage\n");
        let e = ledger_events(FILE, bad.as_bytes()).unwrap_err();
        assert_eq!((e.code, e.line), (Code::LedgerTampered, Some(2)));
        assert!(!e.to_string().contains("hunter"), "{e}");
        let wrong = format!("{good}{{\"seq\":\"hunter2\",\"ts\":\"t\",\"type\":\"x\"}}\n");
        let e = ledger_events(FILE, wrong.as_bytes()).unwrap_err();
        assert!(!e.to_string().contains("hunter"), "{e}");
        assert!(ledger_events(FILE, good.as_bytes()).is_ok());
    }

    #[test]
    fn a_torn_last_line_is_tampering_in_the_ledger() {
        let torn = "{\"seq\":0,\"ts\":\"t\",\"type\":\"run.planned\"}\n{\"seq\":1,";
        assert_eq!(ledger_events(FILE, torn.as_bytes()).unwrap_err().line, Some(2));
    }

    #[test]
    fn sequence_numbers_only_grow() {
        let twice = "{\"seq\":0,\"ts\":\"t\",\"type\":\"a\"}\n{\"seq\":0,\"ts\":\"t\",\"type\":\"b\"}\n";
        let e = ledger_events(FILE, twice.as_bytes()).unwrap_err();
        assert!(e.message.contains("does not follow"), "{e}");
    }

    #[test]
    fn a_plan_without_events_is_not_a_runners() {
        let e = plan_json("runs/a/plan.json", b"{}", &[]).unwrap_err();
        assert_eq!(e.code, Code::LedgerTampered);
    }
}
