//! Run events (DESIGN section 6): the record every reader folds into state. Owns sequence
//! numbers, timestamps and redaction at the single point where events leave the executor;
//! sinks only store or show what they are given. How much of a step's output becomes events
//! is `output`'s to say.

pub mod output;

use std::io::Write;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use output::{LogLimits, RunLog, StepOutput};

use crate::redact::Redactor;

/// One event, one NDJSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// UTC, RFC 3339, milliseconds.
    pub ts: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Json>,
}

impl Event {
    /// A new event of `kind`; sequence and time are set when it is emitted.
    pub fn new(kind: &str) -> Event {
        Event {
            seq: 0,
            ts: String::new(),
            kind: kind.into(),
            step: None,
            level: None,
            msg: None,
            data: None,
        }
    }

    #[must_use]
    pub fn step(mut self, id: &str) -> Event {
        self.step = Some(id.into());
        self
    }

    #[must_use]
    pub fn level(mut self, level: &str) -> Event {
        self.level = Some(level.into());
        self
    }

    #[must_use]
    pub fn msg(mut self, msg: impl Into<String>) -> Event {
        self.msg = Some(msg.into());
        self
    }

    #[must_use]
    pub fn data(mut self, data: Json) -> Event {
        self.data = Some(data);
        self
    }

    /// A field of `data`, if present.
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.data.as_ref().and_then(|d| d.get(key))
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("events are JSON")
    }
}

/// Where emitted events go. Called with events in sequence order, one at a time.
pub trait EventSink: Send + Sync {
    fn accept(&self, event: &Event) -> std::io::Result<()>;

    /// Forces what was accepted to stable storage (before the runner dies on purpose).
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Appends events as NDJSON to a file, flushing each line.
pub struct NdjsonSink {
    file: Mutex<std::fs::File>,
}

impl NdjsonSink {
    pub fn append(path: &std::path::Path) -> std::io::Result<NdjsonSink> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        cut_torn_line(path)?;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(NdjsonSink { file: Mutex::new(file) })
    }
}

impl EventSink for NdjsonSink {
    fn accept(&self, event: &Event) -> std::io::Result<()> {
        let mut line = event.to_line();
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(line.as_bytes())
    }
}

/// Cuts a torn last line (a crash mid-write) off an NDJSON file, so the next event starts a
/// line of its own instead of gluing itself to half an event.
pub fn cut_torn_line(path: &std::path::Path) -> std::io::Result<()> {
    let Ok(text) = std::fs::read(path) else { return Ok(()) };
    if text.is_empty() || text.ends_with(b"\n") {
        return Ok(());
    }
    let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    std::fs::OpenOptions::new().write(true).open(path)?.set_len(keep as u64)
}

/// Stamps, redacts and fans out events to sinks; the executor's only way to emit. Also holds
/// the run's output budget (`limits.logBytes`, `limits.runLogBytes`), which steps draw from.
pub struct Emitter<'s> {
    sinks: Vec<&'s dyn EventSink>,
    redactor: Redactor,
    state: Mutex<EmitState>,
    run_log: RunLog,
}

struct EmitState {
    next_seq: u64,
    error: Option<String>,
}

impl<'s> Emitter<'s> {
    /// `next_seq` continues a resumed stream.
    pub fn new(sinks: Vec<&'s dyn EventSink>, redactor: Redactor, next_seq: u64) -> Emitter<'s> {
        Emitter {
            sinks,
            redactor,
            state: Mutex::new(EmitState { next_seq, error: None }),
            run_log: RunLog::new(LogLimits::default()),
        }
    }

    /// The output limits of this run (the defaults otherwise).
    #[must_use]
    pub fn with_log_limits(mut self, limits: LogLimits) -> Emitter<'s> {
        self.run_log = RunLog::new(limits);
        self
    }

    /// A step's share of the run's output budget: which of its lines become `step.log` events.
    pub fn step_output(&self, step: &str) -> StepOutput<'_> {
        StepOutput::new(&self.run_log, step)
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Emits one event. A failing sink is remembered (see `error`), not fatal here.
    pub fn emit(&self, mut event: Event) {
        if !self.redactor.is_empty() {
            event.msg = event.msg.map(|m| self.redactor.redact(&m));
            event.data = event.data.map(|d| self.redactor.redact_json(&d));
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        event.seq = st.next_seq;
        st.next_seq += 1;
        event.ts = now_rfc3339();
        for sink in &self.sinks {
            if let Err(e) = sink.accept(&event) {
                st.error.get_or_insert_with(|| format!("cannot record events: {e}"));
            }
        }
    }

    /// Syncs every sink (see `EventSink::sync`); failures are only logged.
    pub fn sync(&self) {
        let _st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for sink in &self.sinks {
            if let Err(e) = sink.sync() {
                tracing::warn!(error = %e, "cannot sync events");
            }
        }
    }

    /// The first sink failure, if any: a run whose events could not be stored must not pass as good.
    pub fn error(&self) -> Option<String> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).error.clone()
    }
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Reads an NDJSON event file; a torn last line (a crash mid-write) is ignored.
pub fn read_ndjson(text: &str) -> Result<Vec<Event>, String> {
    read_lines(text, |e| e)
}

/// As `read_ndjson`, for readers that need a run's state, not its output: `step.log` events
/// keep their seq, type and step but not their line (`msg`, `data`, `ts`), so a run's log costs
/// a reader a few bytes an event instead of the whole log.
pub fn read_ndjson_for_state(text: &str) -> Result<Vec<Event>, String> {
    read_lines(text, for_state)
}

/// An event as state readers need it: a `step.log` loses its line (`msg`, `data`, `ts`).
pub fn for_state(mut e: Event) -> Event {
    if e.kind == "step.log" {
        e.msg = None;
        e.data = None;
        e.ts = String::new();
    }
    e
}

fn read_lines(text: &str, keep: impl Fn(Event) -> Event) -> Result<Vec<Event>, String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(line) {
            Ok(e) => out.push(keep(e)),
            Err(_) if i == lines.len() - 1 => break,
            Err(e) => return Err(format!("line {}: not an event: {e}", i + 1)),
        }
    }
    Ok(out)
}
