//! The local journal (DESIGN section 6): every event of a run is appended to
//! `.git/stella/journal/<run-id>.ndjson` before anything else sees it, so a crash loses
//! nothing; the ledger is a prefix of it that catches up at each commit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::code::Code;
use crate::event::{Event, EventSink, read_ndjson, read_ndjson_for_state};

/// A journal that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the journal of {run}: {source}")]
    Read {
        run: String,
        #[source]
        source: std::io::Error,
    },
    /// A line before the last is not an event (`event::read_ndjson` says which and why).
    #[error("{0}")]
    Malformed(String),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Read { .. } | Error::Malformed(_) => Code::Io,
        }
    }
}

/// The journal of one run.
pub struct Journal {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

/// Where journals live: `<git-dir>/stella/journal/`.
pub fn dir(git_dir: &Path) -> PathBuf {
    git_dir.join("stella").join("journal")
}

pub fn path(git_dir: &Path, run: &str) -> PathBuf {
    dir(git_dir).join(format!("{run}.ndjson"))
}

/// The events recorded so far for `run` (empty when there is no journal).
pub fn read(git_dir: &Path, run: &str) -> Result<Vec<Event>, Error> {
    read_with(git_dir, run, read_ndjson)
}

/// As `read`, with `step.log` events stripped to their seq, type and step
/// (`event::read_ndjson_for_state`): what the daemon needs to carry a run on.
pub fn read_for_state(git_dir: &Path, run: &str) -> Result<Vec<Event>, Error> {
    read_with(git_dir, run, read_ndjson_for_state)
}

fn read_with(git_dir: &Path, run: &str, parse: fn(&str) -> Result<Vec<Event>, String>) -> Result<Vec<Event>, Error> {
    match std::fs::read_to_string(path(git_dir, run)) {
        Ok(text) => parse(&text).map_err(Error::Malformed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(Error::Read {
            run: run.to_string(),
            source,
        }),
    }
}

/// Whether the journal of `run` continues `ledger_events` (the run's `events.ndjson` as the
/// ledger holds it), or there is no journal. A journal that does not is stale: another runner
/// took the run over and the ledger went on without this one.
pub fn continues(git_dir: &Path, run: &str, ledger_events: &[u8]) -> bool {
    match std::fs::read(path(git_dir, run)) {
        Ok(bytes) => bytes.is_empty() || bytes.starts_with(ledger_events),
        Err(_) => true,
    }
}

/// Moves a stale journal aside (`<run>.ndjson.stale-<unix-time>`), so the run goes on from the
/// ledger; kept for inspection, never read again.
pub fn set_aside(git_dir: &Path, run: &str) -> std::io::Result<PathBuf> {
    let from = path(git_dir, run);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let to = dir(git_dir).join(format!("{run}.ndjson.stale-{secs}"));
    std::fs::rename(&from, &to)?;
    Ok(to)
}

impl Journal {
    /// Opens (creating) the journal of `run` for appending. A torn last line from a crash
    /// is cut off first, so the next event starts on a line of its own.
    pub fn open(git_dir: &Path, run: &str) -> std::io::Result<Journal> {
        let path = path(git_dir, run);
        std::fs::create_dir_all(path.parent().expect("journal dir"))?;
        crate::event::cut_torn_line(&path)?;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Journal {
            path,
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What was recorded after the first `offset` bytes, up to the end of the last whole line:
    /// the part of the journal the ledger lacks when it holds `offset` bytes.
    pub fn contents_from(&self, offset: u64) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let _guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = std::fs::File::open(&self.path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut out = Vec::new();
        f.read_to_end(&mut out)?;
        let whole = out.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        out.truncate(whole);
        Ok(out)
    }

    /// Forces what was written to stable storage (before each ledger commit, which fails when
    /// this does; a process crash loses nothing written before it anyway).
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).sync_data()
    }
}

impl EventSink for Journal {
    fn accept(&self, event: &Event) -> std::io::Result<()> {
        let mut line = event.to_line();
        line.push('\n');
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(line.as_bytes())
    }

    fn sync(&self) -> std::io::Result<()> {
        Journal::sync(self)
    }
}
