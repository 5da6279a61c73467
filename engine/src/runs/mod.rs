//! Runs in a repository: finding the requests on the branch, telling what each needs (start,
//! recover, flush, cancel, nothing), and carrying one run from request to finished ledger.
//! Synchronous; the watcher decides when to call it and on which thread.

pub mod audit;
mod env;
pub mod fire;
mod gates;
mod group;
pub mod index;
mod invalid;
mod ledger_sink;
mod lifecycle;
mod observer;
mod planning;
mod requester;
mod resume;
mod scan;
pub mod secret_sources;
pub mod timetable;
mod tokens;
mod trust;

use std::path::Path;

use gix::ObjectId;

use crate::code::Code;
use crate::event::Event;
use crate::layout::RunDir;
use crate::ledger::Ledger;
use crate::state::{RunState, fold};

pub use env::Environment;
pub use index::{Facts, Index};
pub use invalid::{Invalid, RUN_ENTRIES};
pub use lifecycle::{note, process};
pub use observer::Observer;
pub use requester::requested_on_pull_request;
pub use scan::{Scanned, Select, scan};
pub use trust::trust_commit;

/// Why a run could not be carried on. Whatever is wrong with the run's own files is `Invalid`
/// (the run is left alone, the other runs go on); the rest is this runner's trouble with its
/// ledger or journal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ledger: {0}")]
    Ledger(#[from] crate::ledger::Error),
    #[error("ledger: the branch has no commits")]
    NoCommits,
    /// Another runner took the run over: nothing more of this runner's goes into the ledger.
    #[error("ledger: another runner took run {0} over; this runner's results stay in its journal")]
    Fenced(String),
    #[error("ledger: the journal of {run} does not continue the ledger at byte {at}")]
    Discontinued { run: String, at: u64 },
    #[error("ledger: cannot read the journal: {0}")]
    JournalTail(#[source] std::io::Error),
    #[error("ledger: cannot read artifacts: {0}")]
    Artifacts(#[source] walkdir::Error),
    #[error("ledger: {path}: {source}")]
    Artifact {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::Error),
    /// The journal could not be opened, set aside or appended to.
    #[error("journal: {0}")]
    JournalWrite(#[source] std::io::Error),
    /// What the journal holds could not be forced to disk: nothing is committed that the
    /// journal might lose.
    #[error("journal: {} cannot be synced to disk: {source}", path.display())]
    JournalSync {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal: requestCommit: {0}")]
    RequestCommit(#[source] gix::Error),
    /// The run's files cannot be continued: it is left alone, the other runs go on.
    #[error("run is invalid: {0}")]
    Invalid(Invalid),
    /// An export could not be written where it was asked to go.
    #[error("cannot write the export: {0}")]
    Output(#[source] std::io::Error),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Ledger(e) => e.code(),
            Error::Journal(e) => e.code(),
            Error::Invalid(why) => why.code,
            Error::NoCommits
            | Error::Fenced(_)
            | Error::Discontinued { .. }
            | Error::JournalTail(_)
            | Error::Artifacts(_)
            | Error::Artifact { .. }
            | Error::JournalWrite(_)
            | Error::JournalSync { .. }
            | Error::RequestCommit(_)
            | Error::Output(_) => Code::Io,
        }
    }
}

/// What the repository and the local journal say about one run.
#[derive(Debug, Clone)]
pub struct RunView {
    pub id: String,
    /// Where the run's files are in the tree.
    pub dir: RunDir,
    /// Events as committed in the ledger.
    pub ledger_events: Vec<Event>,
    /// Events in the local journal (a superset of the ledger's, when this machine ran it).
    pub journal_events: Vec<Event>,
    pub has_request: bool,
    pub has_cancel: bool,
    /// Why the run directory cannot be read as a run: then it has no events here, and the
    /// daemon leaves it alone (reported, never fatal to the other runs).
    pub invalid: Option<Invalid>,
    /// Entries of the run directory that are no run file (`runs/…/<id>/<name>`): reported, ignored.
    pub ignored: Vec<String>,
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
        Facts::of(self).need(self.invalid.is_some())
    }
}

/// One run as a scan sees it: its facts, without its events (read from the index when the
/// run's tree and journal did not change, else from git).
#[derive(Debug, Clone)]
pub struct Summary {
    pub id: String,
    /// Where the run's files are in the tree.
    pub dir: RunDir,
    pub facts: Facts,
    /// Why the run directory cannot be read as a run (then `facts` are those of no events).
    pub invalid: Option<Invalid>,
    /// The object id of the run's directory at the scanned tip.
    pub tree: ObjectId,
    /// The object id of the run's approvals directory at the scanned tip, if there is one.
    pub approvals: Option<ObjectId>,
}

impl Summary {
    pub fn need(&self) -> Need {
        self.facts.need(self.invalid.is_some())
    }
}

/// One run as the branch at `tip` and the local journal describe it, every event whole.
/// Whatever is wrong with the run's files is in `invalid`, with the file, line and code.
pub fn view(ledger: &Ledger, tip: ObjectId, dir: &RunDir) -> RunView {
    view_with(ledger, tip, dir, false)
}

/// As `view`, for run `id` wherever it is at `tip` (`Ledger::locate`; where a new run would
/// go when it is nowhere, which views as no run).
pub fn find(ledger: &Ledger, tip: ObjectId, id: &str) -> Result<RunView, crate::ledger::Error> {
    let dir = ledger.locate(tip, id)?.unwrap_or_else(|| RunDir::new(id));
    Ok(view(ledger, tip, &dir))
}

/// As `view`, with `step.log` events stripped to their seq, type and step
/// (`event::read_ndjson_for_state`): a run's state and headline without holding its output.
pub fn view_for_state(ledger: &Ledger, tip: ObjectId, dir: &RunDir) -> RunView {
    view_with(ledger, tip, dir, true)
}

/// As `view`; with `for_state`, `step.log` events keep only their seq, type and step
/// (`event::read_ndjson_for_state`), so scanning many runs never holds their output.
fn view_with(ledger: &Ledger, tip: ObjectId, dir: &RunDir, for_state: bool) -> RunView {
    let mut v = RunView {
        id: dir.id.clone(),
        dir: dir.clone(),
        ledger_events: Vec::new(),
        journal_events: Vec::new(),
        has_request: false,
        has_cancel: false,
        invalid: None,
        ignored: Vec::new(),
    };
    if let Err(why) = read_run(ledger, tip, &mut v, for_state) {
        v.ledger_events.clear();
        v.journal_events.clear();
        v.invalid = Some(why);
    }
    v
}

/// Fills `v` from the run's files at `tip` and its journal.
fn read_run(ledger: &Ledger, tip: ObjectId, v: &mut RunView, for_state: bool) -> Result<(), Invalid> {
    let id = v.id.clone();
    let run = v.dir.clone();
    let dir = run.dir();
    let unreadable = |file: &str, e: crate::ledger::Error| Invalid::new(Code::Io, file, format!("cannot be read: {e}"));
    let entries = ledger.list(tip, &dir).map_err(|e| unreadable(&dir, e))?;
    let present = |name: &str| entries.iter().any(|(n, _)| n == name);
    // A run file that is present must be a regular file (not a directory, link or submodule).
    let read = |name: &str| -> Result<Option<Vec<u8>>, Invalid> {
        let file = run.file(name);
        match ledger.read(tip, &file).map_err(|e| unreadable(&file, e))? {
            None if present(name) => {
                let code = if matches!(name, "request.yaml" | "cancel.yaml") {
                    Code::RequestInvalid
                } else {
                    Code::LedgerTampered
                };
                Err(Invalid::new(code, file, "not a regular file"))
            }
            read => Ok(read),
        }
    };
    v.ignored = entries
        .iter()
        .filter(|(name, _)| !RUN_ENTRIES.contains(&name.as_str()))
        .map(|(name, _)| run.file(name))
        .collect();
    v.has_request = read("request.yaml")?.is_some();
    v.has_cancel = read("cancel.yaml")?.is_some();
    if present("events.ndjson") {
        // The legacy single file must be a regular file (segments are checked as they are read).
        read("events.ndjson")?;
    }
    // Problems are named by the file that holds the events: the legacy single file, or the
    // segments' directory.
    let events_file = if present("events") {
        run.file("events/")
    } else {
        run.file("events.ndjson")
    };
    let ledger_bytes = ledger
        .run_events(tip, &run)
        .map_err(|e| unreadable(&events_file, e))?
        .unwrap_or_default();
    v.ledger_events = invalid::ledger_events(&events_file, &ledger_bytes)?;
    if for_state {
        v.ledger_events = v.ledger_events.drain(..).map(crate::event::for_state).collect();
    }
    if let Some(plan) = read("plan.json")? {
        invalid::plan_json(&run.file("plan.json"), &plan, &v.ledger_events)?;
    }
    // A journal that does not continue the ledger is stale: another runner took the run over.
    if crate::journal::continues(ledger.git_dir(), &id, &ledger_bytes) {
        let read = if for_state {
            crate::journal::read_for_state
        } else {
            crate::journal::read
        };
        v.journal_events = read(ledger.git_dir(), &id).map_err(|e| {
            Invalid::new(
                Code::Io,
                crate::journal::path(ledger.git_dir(), &id).display().to_string(),
                format!("the local journal cannot be read ({e}); move it away to continue the run from the ledger"),
            )
        })?;
    }
    Ok(())
}

/// Where a run's workspace and artifacts live while it runs: `<work root>/<run-id>`.
pub fn work_dir(work_root: &Path, id: &str) -> std::path::PathBuf {
    work_root.join(id)
}

/// Where steps' `as: file` secrets are written, a directory per run:
/// `.git/stella/secret-files`. The daemon wipes it at start (`exec::clear_secret_files`).
pub fn secret_files_root(git_dir: &Path) -> std::path::PathBuf {
    git_dir.join("stella").join("secret-files")
}

/// Where a repository's run workspaces live by default: outside the repository and its
/// `.git`, under `$XDG_STATE_HOME/stella/work/<repository key>` (`~/.local/state` without
/// it), the key being the first 16 hex digits of the sha256 of the git directory's path.
pub fn default_work_root(git_dir: &Path) -> std::path::PathBuf {
    let canonical = std::fs::canonicalize(git_dir).unwrap_or_else(|_| git_dir.to_path_buf());
    let key = crate::pack::sha256_hex(canonical.as_os_str().as_encoded_bytes());
    state_dir().join("work").join(&key[..16])
}

/// Stella's state directory for this user, `$XDG_STATE_HOME/stella` (`~/.local/state/stella`
/// without it): every repository's default work root lives under it, so the sandbox covers
/// all of it, not only the running repository's.
pub fn state_dir() -> std::path::PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("stella-state-{}", effective_uid())));
    state.join("stella")
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}
