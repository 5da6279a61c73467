//! Keeping the repository and `.git/stella/` from growing with the history: the git
//! maintenance the runner runs itself when loose objects pile up (loose objects packed,
//! packs consolidated, the commit-graph written), recorded in `.git/stella/maintenance.json`;
//! and journals pruned once the ledger holds every event they carry. Runs only off the
//! critical path (the daemon's background task), never twice at once, and never deletes a
//! journal byte the ledger lacks.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use gix::ObjectId;
use serde::{Deserialize, Serialize};

use super::Ledger;
use crate::code::Code;

/// Loose objects past which maintenance is due (git's own `gc.auto` is 6,700; a runner makes
/// a few dozen per run, so this is every few dozen runs).
pub const LOOSE_THRESHOLD: u64 = 1024;

/// The tasks of `git maintenance run`, in this order, with `git prune-packed` after the first
/// (so the loose objects just packed go at once, not at the next pass).
pub const TASKS: [&str; 3] = ["loose-objects", "incremental-repack", "commit-graph"];

/// Packed objects past which the first full repack is made (see `full_repack_due`).
pub const FULL_REPACK_FROM: u64 = 10_000;

/// How long a finished run's journal is kept after its last write, whatever the ledger holds:
/// a live reader (`runs logs -f`, the workspace's streams) that follows the journal reaches
/// the end of the run before it goes. After that the ledger is the same record.
pub const JOURNAL_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Maintenance that could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Git(#[from] crate::git_cli::Error),
    #[error("{0}")]
    Ledger(#[from] super::Error),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Io { .. } => Code::Io,
            Error::Git(e) => e.code(),
            Error::Ledger(e) => e.code(),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The object database's size, as `git count-objects -v` tells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sizes {
    pub loose_objects: u64,
    pub loose_bytes: u64,
    pub packs: u64,
    pub packed_objects: u64,
    pub packed_bytes: u64,
}

impl Sizes {
    /// Loose and packed bytes together.
    pub fn bytes(&self) -> u64 {
        self.loose_bytes + self.packed_bytes
    }
}

/// The last maintenance, as `.git/stella/maintenance.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// When it started (RFC 3339, UTC).
    pub time: String,
    pub duration_ms: u64,
    pub tasks: Vec<String>,
    pub before: Sizes,
    pub after: Sizes,
    /// Journals removed because the ledger holds all their events.
    pub journals_pruned: usize,
    /// The packed objects right after the last full repack (fresh deltas over every object),
    /// carried from record to record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_repack_objects: Option<u64>,
    /// What failed, if git did (the sizes are still recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where the record lives: `<git-dir>/stella/maintenance.json`.
pub fn record_path(git_dir: &Path) -> PathBuf {
    git_dir.join("stella").join("maintenance.json")
}

/// The last maintenance recorded, if any (a record that does not parse counts as none).
pub fn last(git_dir: &Path) -> Option<Record> {
    serde_json::from_slice(&std::fs::read(record_path(git_dir)).ok()?).ok()
}

/// The object database's size now.
pub fn sizes(workdir: &Path) -> Result<Sizes, Error> {
    let text = crate::git_cli::run(workdir, &["count-objects", "-v"])?;
    let mut s = Sizes::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v: u64 = v.trim().parse().unwrap_or(0);
        match k.trim() {
            "count" => s.loose_objects = v,
            "size" => s.loose_bytes = v * 1024,
            "in-pack" => s.packed_objects = v,
            "packs" => s.packs = v,
            "size-pack" => s.packed_bytes = v * 1024,
            _ => {}
        }
    }
    Ok(s)
}

/// How many loose objects the repository holds, counted from the object directories
/// (no git process: cheap enough for every check).
pub fn loose_objects(git_dir: &Path) -> u64 {
    let objects = git_dir.join("objects");
    (0..=255u8)
        .map(|b| {
            std::fs::read_dir(objects.join(format!("{b:02x}")))
                .map(|d| d.count() as u64)
                .unwrap_or(0)
        })
        .sum()
}

/// Whether maintenance is due: more than `LOOSE_THRESHOLD` loose objects.
pub fn due(git_dir: &Path) -> bool {
    loose_objects(git_dir) > LOOSE_THRESHOLD
}

/// Whether a full repack is due with `packed` objects in packs, the last full repack having
/// left `last` (none yet): from `FULL_REPACK_FROM` objects on, each time they double.
pub fn full_repack_due(packed: u64, last: Option<u64>) -> bool {
    packed >= FULL_REPACK_FROM && last.is_none_or(|l| packed >= l.saturating_mul(2))
}

/// Held while maintenance runs (`.git/stella/maintenance.lock`, naming the process): a
/// second pass, in this process or another, finds it and does nothing. A lock whose process
/// is gone (killed mid-way) is taken over.
struct Lock(PathBuf);

impl Lock {
    fn take(git_dir: &Path) -> Result<Option<Lock>, Error> {
        let path = git_dir.join("stella").join("maintenance.lock");
        std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io(&path))?;
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(Some(Lock(path)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<i32>().ok());
                    // SAFETY: signal 0 only asks whether the process exists.
                    let gone = pid.is_some_and(|p| p > 0 && unsafe { libc::kill(p, 0) } != 0);
                    if !gone {
                        return Ok(None);
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Ok(None)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One maintenance pass: journals pruned (see `prune_journals`, with `tips`), then the git
/// tasks, the sizes before and after recorded. `None` when another pass holds the lock.
pub fn run(ledger: &Ledger, tips: &[ObjectId]) -> Result<Option<Record>, Error> {
    let git_dir = ledger.git_dir().to_path_buf();
    let Some(_lock) = Lock::take(&git_dir)? else {
        return Ok(None);
    };
    let started = SystemTime::now();
    let clock = Instant::now();
    let before = sizes(ledger.workdir())?;
    let journals_pruned = prune_journals(ledger, tips)?;
    // Separate invocations: one git process knows only the packs it found when it started,
    // so a repack in the same process as `loose-objects` would miss the pack just written.
    let git = |args: &[&str]| crate::git_cli::run(ledger.workdir(), args).map(|_| ());
    let task = |t: &str| {
        git(&[
            "-c",
            "maintenance.auto=false",
            "maintenance",
            "run",
            "--quiet",
            &format!("--task={t}"),
        ])
    };
    let mut tasks: Vec<String> = TASKS.iter().map(|t| t.to_string()).collect();
    let mut full_repack_objects = last(&git_dir).and_then(|r| r.full_repack_objects);
    let mut error = task(TASKS[0])
        .and_then(|()| git(&["prune-packed", "--quiet"]))
        .and_then(|()| task(TASKS[1]))
        .err()
        .map(|e| e.to_string());
    // Incremental packs keep the deltas they were made with, and packs made batch by batch
    // delta poorly (one shard's trees land in many packs); `git gc` reuses them. Each time
    // the packed objects double, one repack finds every delta afresh: its cost, amortised,
    // is a constant per object, and the stored ledger stays as small as git can make it.
    if error.is_none() {
        let packed = sizes(ledger.workdir())?.packed_objects;
        if full_repack_due(packed, full_repack_objects) {
            tasks.insert(2, "full-repack".into());
            // git's delta chains (up to 50): reading them back is cheap with the delta-base
            // cache every repository is opened with (`ledger::open_repo`).
            let args = [
                "-c",
                "pack.writeBitmaps=false",
                "repack",
                "-a",
                "-d",
                "-f",
                "-q",
                "--write-midx",
            ];
            match git(&args) {
                Ok(()) => full_repack_objects = Some(sizes(ledger.workdir())?.packed_objects),
                Err(e) => error = Some(e.to_string()),
            }
        }
    }
    if error.is_none() {
        error = task(TASKS[2]).err().map(|e| e.to_string());
    }
    let after = sizes(ledger.workdir())?;
    let record = Record {
        time: humantime::format_rfc3339_seconds(started).to_string(),
        duration_ms: clock.elapsed().as_millis() as u64,
        tasks,
        before,
        after,
        journals_pruned,
        full_repack_objects,
        error,
    };
    let path = record_path(&git_dir);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&record).expect("JSON") + "\n").map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(Some(record))
}

/// Removes the journal of every finished run whose events the ledger holds, byte for byte,
/// at the branch tip and at each of `tips` (with a remote: the server's branch, so nothing
/// unpushed is pruned), once it was last written `JOURNAL_GRACE` ago. Returns how many went. A journal with one byte more than the ledger
/// (an event not yet committed, a torn line), of a run not finished, or that cannot be read,
/// stays; set-aside (stale) journals are never touched. Before removing anything the
/// repository's file system is synced, so the objects that hold the events are on disk
/// before the journal that also holds them is gone.
pub fn prune_journals(ledger: &Ledger, tips: &[ObjectId]) -> Result<usize, Error> {
    let dir = crate::journal::dir(ledger.git_dir());
    let entries = match std::fs::read_dir(&dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(&dir)(e)),
    };
    let Some(tip) = ledger.tip()? else { return Ok(0) };
    let mut held = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(run) = name.strip_suffix(".ndjson").filter(|r| crate::run_id::is_valid(r)) else {
            continue;
        };
        let recent = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default() < JOURNAL_GRACE)
            .unwrap_or(true);
        if recent {
            continue;
        }
        let Ok(journal) = std::fs::read(entry.path()) else {
            continue;
        };
        if ledger_holds(ledger, tip, tips, run, &journal)? {
            held.push((entry.path(), journal.len() as u64));
        }
    }
    if held.is_empty() {
        return Ok(0);
    }
    sync_fs(ledger.git_dir());
    let mut pruned = 0;
    for (path, len) in held {
        // Appended to since it was read (it cannot be, for a finished run; but never guess).
        if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(len) {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            pruned += 1;
        }
    }
    Ok(pruned)
}

/// Whether the ledger at `tip` and at every one of `others` holds exactly `journal` as the
/// events of `run`, and they say the run is finished.
fn ledger_holds(ledger: &Ledger, tip: ObjectId, others: &[ObjectId], run: &str, journal: &[u8]) -> Result<bool, Error> {
    for &at in std::iter::once(&tip).chain(others) {
        let Some(dir) = ledger.locate(at, run)? else {
            return Ok(false);
        };
        if ledger.run_events(at, &dir)?.as_deref() != Some(journal) {
            return Ok(false);
        }
    }
    let events = crate::event::read_ndjson_for_state(&String::from_utf8_lossy(journal)).unwrap_or_default();
    Ok(!events.is_empty() && crate::state::fold(&events).state.is_terminal())
}

/// Flushes the file system holding `git_dir` to disk (best effort).
fn sync_fs(git_dir: &Path) {
    use std::os::fd::AsRawFd;
    if let Ok(dir) = std::fs::File::open(git_dir.join("objects")) {
        // SAFETY: syncfs on a descriptor this function owns.
        unsafe {
            libc::syncfs(dir.as_raw_fd());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_repack_comes_each_time_the_packed_objects_double() {
        assert!(!full_repack_due(FULL_REPACK_FROM - 1, None));
        assert!(full_repack_due(FULL_REPACK_FROM, None));
        assert!(!full_repack_due(39_999, Some(20_000)));
        assert!(full_repack_due(40_000, Some(20_000)));
        assert!(!full_repack_due(FULL_REPACK_FROM + 5, Some(FULL_REPACK_FROM)));
    }
}
