//! Runs in a repository: finding the requests on the branch, telling what each needs (start,
//! recover, flush, cancel, nothing), and carrying one run from request to finished ledger.
//! Synchronous; the watcher decides when to call it and on which thread.

mod gates;
mod ledger_sink;
mod lifecycle;

use std::path::Path;

use gix::ObjectId;

use crate::event::{Event, read_ndjson, read_ndjson_for_state};
use crate::ledger::Ledger;
use crate::state::{RunState, RunStatus, fold};

pub use lifecycle::{Environment, Error, last_seen_path, process, record_seen, seen_tips};

/// What the repository and the local journal say about one run.
#[derive(Debug, Clone)]
pub struct RunView {
    pub id: String,
    /// Events as committed in the ledger.
    pub ledger_events: Vec<Event>,
    /// Events in the local journal (a superset of the ledger's, when this machine ran it).
    pub journal_events: Vec<Event>,
    pub has_request: bool,
    pub has_cancel: bool,
}

impl RunView {
    /// The most complete event record available here.
    pub fn events(&self) -> &[Event] {
        if self.journal_events.len() > self.ledger_events.len() {
            &self.journal_events
        } else {
            &self.ledger_events
        }
    }

    pub fn state(&self) -> RunState {
        fold(self.events())
    }

    /// The pack path recorded when the run was planned.
    pub fn pack(&self) -> Option<String> {
        self.events()
            .iter()
            .find(|e| e.kind == "run.planned")
            .and_then(|e| e.get("pack").and_then(|p| p.as_str()).map(str::to_string))
    }
}

/// What a run needs from the daemon now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// A new request: plan and execute it.
    Start,
    /// Interrupted (no runner is working on it): recover from the journal and resume.
    Recover,
    /// Finished locally, but the ledger lacks the tail of its events: commit them.
    Flush,
    /// A cancel request for a run that is not finished.
    Cancel,
    /// Waiting at a gate: re-check its approvals.
    Waiting,
    Nothing,
}

impl RunView {
    pub fn need(&self) -> Need {
        let st = self.state();
        let journal_ahead = self.journal_events.len() > self.ledger_events.len();
        if self.events().is_empty() {
            return if self.has_request { Need::Start } else { Need::Nothing };
        }
        if st.state.is_terminal() {
            return if journal_ahead { Need::Flush } else { Need::Nothing };
        }
        if self.has_cancel {
            return Need::Cancel;
        }
        match st.state {
            RunStatus::Waiting if !journal_ahead => Need::Waiting,
            _ => Need::Recover,
        }
    }
}

/// Every run directory on the branch at `tip`, with its journal; and the entries under
/// `runs/` that are not runs (reported, then ignored). The views carry state, not output:
/// their `step.log` events are stripped (`event::read_ndjson_for_state`); `view` has it all.
pub fn scan(ledger: &Ledger, tip: ObjectId) -> Result<(Vec<RunView>, Vec<String>), String> {
    let mut views = Vec::new();
    let mut ignored = Vec::new();
    for (name, is_dir) in ledger.list(tip, "runs").map_err(|e| e.to_string())? {
        if !is_dir {
            if name != "README.md" {
                ignored.push(format!("runs/{name}"));
            }
            continue;
        }
        if !crate::run_id::is_valid(&name) {
            ignored.push(format!("runs/{name}"));
            continue;
        }
        views.push(view_with(ledger, tip, &name, read_ndjson_for_state)?);
    }
    Ok((views, ignored))
}

/// One run as the branch at `tip` and the local journal describe it, every event whole.
pub fn view(ledger: &Ledger, tip: ObjectId, id: &str) -> Result<RunView, String> {
    view_with(ledger, tip, id, read_ndjson)
}

fn view_with(
    ledger: &Ledger,
    tip: ObjectId,
    id: &str,
    parse: fn(&str) -> Result<Vec<Event>, String>,
) -> Result<RunView, String> {
    let read = |file: &str| {
        ledger
            .read(tip, &format!("runs/{id}/{file}"))
            .map_err(|e| e.to_string())
    };
    let ledger_bytes = ledger
        .run_events(tip, id)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let ledger_events = parse(&String::from_utf8_lossy(&ledger_bytes)).map_err(|e| format!("runs/{id}/events: {e}"))?;
    // A journal that does not continue the ledger is stale: another runner took the run over.
    let journal_events = if crate::journal::continues(ledger.git_dir(), id, &ledger_bytes) {
        drop(ledger_bytes);
        let path = crate::journal::path(ledger.git_dir(), id);
        match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("cannot read the journal of {id}: {e}")),
        }
    } else {
        Vec::new()
    };
    Ok(RunView {
        id: id.to_string(),
        ledger_events,
        journal_events,
        has_request: read("request.yaml")?.is_some(),
        has_cancel: read("cancel.yaml")?.is_some(),
    })
}

/// Where a run's workspace and artifacts live while it runs: `<work root>/<run-id>`.
pub fn work_dir(work_root: &Path, id: &str) -> std::path::PathBuf {
    work_root.join(id)
}

/// Where a repository's run workspaces live by default: outside the repository and its
/// `.git`, under `$XDG_STATE_HOME/stella/work/<repository key>` (`~/.local/state` without
/// it), the key being the first 16 hex digits of the sha256 of the git directory's path.
pub fn default_work_root(git_dir: &Path) -> std::path::PathBuf {
    let canonical = std::fs::canonicalize(git_dir).unwrap_or_else(|_| git_dir.to_path_buf());
    let key = crate::pack::sha256_hex(canonical.as_os_str().as_encoded_bytes());
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("stella-state-{}", effective_uid())));
    state.join("stella").join("work").join(&key[..16])
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}
