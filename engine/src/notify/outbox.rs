//! The durable outbox under `.git/stella/outbox/`: one file per notification not yet
//! delivered (`pending/<target>/<webhook-id>.json`, written whole and fsynced before any
//! delivery is tried), notifications given up on until `notify.failed` is recorded
//! (`failed/`), each run's high-water mark (`marks/<run>`: the last event seq looked at, so
//! what a crash left unqueued is found again) and per-target counts (`stats/<target>.json`).
//! Holds no secret value: an entry names its secrets. Decides no timing; sends nothing.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Endpoint;

/// At most this many notifications wait per target; past it new ones are dropped (counted
/// as failed), so a dead receiver cannot fill the disk.
pub const MAX_PENDING: usize = 10_000;

/// One notification to one target, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The `webhook-id`: `<run>.<seq>.<target>`, the same on every attempt.
    pub id: String,
    pub target: String,
    pub run: String,
    pub seq: u64,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: String,
    pub endpoint: Endpoint,
    /// The runner secret holding the signing key.
    pub secret: String,
    pub content_type: String,
    pub body: String,
    /// When it was queued, unix milliseconds.
    pub created_ms: u64,
    pub attempts: u32,
    /// When the next attempt is due, unix milliseconds.
    pub due_ms: u64,
    /// What the last attempt met (no URL, no secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What `put` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    Added,
    /// The same notification is already waiting.
    Exists,
    /// The target has `MAX_PENDING` waiting.
    Full,
}

/// A target's counts since the outbox was made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub delivered: u64,
    pub retried: u64,
    pub failed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_at: Option<String>,
}

/// The outbox of one repository.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

/// `.git/stella/outbox`.
pub fn dir(git_dir: &Path) -> PathBuf {
    git_dir.join("stella").join("outbox")
}

/// A name that is safe as one path component (ids are checked where they are made; this
/// refuses anything else that reaches the outbox).
fn safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn bad_name(name: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("not an outbox name: {name:?}"),
    )
}

/// Writes `bytes` to `path` whole: a temporary file, fsynced, renamed over, the directory fsynced.
fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().expect("outbox paths have a parent");
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)?;
    if durable {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn names(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

impl Outbox {
    /// The outbox under `git_dir`, its directories made.
    pub fn open(git_dir: &Path) -> std::io::Result<Outbox> {
        let dir = dir(git_dir);
        for sub in ["pending", "failed", "marks", "stats"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        Ok(Outbox { dir })
    }

    /// The outbox under `git_dir` for reading only (nothing is made).
    pub fn at(git_dir: &Path) -> Outbox {
        Outbox { dir: dir(git_dir) }
    }

    fn pending_dir(&self, target: &str) -> std::io::Result<PathBuf> {
        if !safe(target) {
            return Err(bad_name(target));
        }
        Ok(self.dir.join("pending").join(target))
    }

    fn entry_path(&self, target: &str, id: &str) -> std::io::Result<PathBuf> {
        if !safe(id) {
            return Err(bad_name(id));
        }
        Ok(self.pending_dir(target)?.join(format!("{id}.json")))
    }

    /// Queues `e` durably, unless it is already waiting or its target is full.
    pub fn put(&self, e: &Entry) -> std::io::Result<Put> {
        let path = self.entry_path(&e.target, &e.id)?;
        if path.exists() {
            return Ok(Put::Exists);
        }
        let dir = self.pending_dir(&e.target)?;
        std::fs::create_dir_all(&dir)?;
        if self.pending(&e.target).len() >= MAX_PENDING {
            return Ok(Put::Full);
        }
        write_atomic(&path, &serde_json::to_vec(e).expect("entries are JSON"), true)?;
        Ok(Put::Added)
    }

    /// Rewrites a waiting entry (its attempts, due time, last error).
    pub fn update(&self, e: &Entry) -> std::io::Result<()> {
        let path = self.entry_path(&e.target, &e.id)?;
        write_atomic(&path, &serde_json::to_vec(e).expect("entries are JSON"), true)
    }

    /// The targets that have a pending directory.
    pub fn targets(&self) -> Vec<String> {
        names(&self.dir.join("pending"))
            .into_iter()
            .filter(|n| safe(n))
            .collect()
    }

    /// The ids of the entries waiting for `target`.
    pub fn pending(&self, target: &str) -> Vec<String> {
        let Ok(dir) = self.pending_dir(target) else {
            return Vec::new();
        };
        names(&dir)
            .into_iter()
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .collect()
    }

    pub fn read(&self, target: &str, id: &str) -> std::io::Result<Entry> {
        let bytes = std::fs::read(self.entry_path(target, id)?)?;
        serde_json::from_slice(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Removes a delivered entry.
    pub fn remove(&self, target: &str, id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.entry_path(target, id)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Gives up on `e`: it moves to `failed/` (with its last state) until `notify.failed` is recorded.
    pub fn give_up(&self, e: &Entry) -> std::io::Result<()> {
        if !safe(&e.id) {
            return Err(bad_name(&e.id));
        }
        let failed = self.dir.join("failed").join(format!("{}.json", e.id));
        write_atomic(&failed, &serde_json::to_vec(e).expect("entries are JSON"), true)?;
        self.remove(&e.target, &e.id)
    }

    /// The entries given up on whose `notify.failed` is not recorded yet.
    pub fn failed(&self) -> Vec<Entry> {
        names(&self.dir.join("failed"))
            .into_iter()
            .filter_map(|n| std::fs::read(self.dir.join("failed").join(n)).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// `notify.failed` of `id` is recorded.
    pub fn forget_failed(&self, id: &str) -> std::io::Result<()> {
        if !safe(id) {
            return Err(bad_name(id));
        }
        match std::fs::remove_file(self.dir.join("failed").join(format!("{id}.json"))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The last event seq of `run` looked at, if the run has a mark.
    pub fn mark(&self, run: &str) -> Option<Option<u64>> {
        if !safe(run) {
            return None;
        }
        let text = std::fs::read_to_string(self.dir.join("marks").join(run)).ok()?;
        Some(text.trim().parse().ok())
    }

    /// Sets the mark of `run` (`None`: no event looked at yet). Not fsynced: a mark lost to a
    /// crash only means events are looked at again (at least once, never lost).
    pub fn set_mark(&self, run: &str, seq: Option<u64>) -> std::io::Result<()> {
        if !safe(run) {
            return Err(bad_name(run));
        }
        let text = seq.map_or(String::from("-\n"), |s| format!("{s}\n"));
        write_atomic(&self.dir.join("marks").join(run), text.as_bytes(), false)
    }

    pub fn clear_mark(&self, run: &str) {
        if safe(run) {
            let _ = std::fs::remove_file(self.dir.join("marks").join(run));
        }
    }

    /// The runs with a mark.
    pub fn marked_runs(&self) -> Vec<String> {
        names(&self.dir.join("marks")).into_iter().filter(|n| safe(n)).collect()
    }

    pub fn stats(&self, target: &str) -> Stats {
        if !safe(target) {
            return Stats::default();
        }
        std::fs::read(self.dir.join("stats").join(format!("{target}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_stats(&self, target: &str, s: &Stats) -> std::io::Result<()> {
        if !safe(target) {
            return Err(bad_name(target));
        }
        let path = self.dir.join("stats").join(format!("{target}.json"));
        write_atomic(&path, &serde_json::to_vec(s).expect("stats are JSON"), false)
    }

    /// The targets with stats or waiting entries.
    pub fn known_targets(&self) -> Vec<String> {
        let mut all: Vec<String> = names(&self.dir.join("stats"))
            .into_iter()
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .chain(self.targets())
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            id: id.into(),
            target: "ops".into(),
            run: "r1".into(),
            seq: 3,
            kind: "run.failed".into(),
            endpoint: Endpoint::UrlSecret("HOOK".into()),
            secret: "KEY".into(),
            content_type: "application/json".into(),
            body: "{}".into(),
            created_ms: 1,
            attempts: 0,
            due_ms: 1,
            last_error: None,
        }
    }

    #[test]
    fn entries_are_kept_once_until_removed_or_given_up() {
        let tmp = tempfile::tempdir().unwrap();
        let o = Outbox::open(tmp.path()).unwrap();
        assert_eq!(o.put(&entry("r1.3.ops")).unwrap(), Put::Added);
        assert_eq!(o.put(&entry("r1.3.ops")).unwrap(), Put::Exists);
        let mut e = o.read("ops", "r1.3.ops").unwrap();
        e.attempts = 2;
        o.update(&e).unwrap();
        assert_eq!(o.read("ops", "r1.3.ops").unwrap().attempts, 2);
        assert_eq!(o.pending("ops"), ["r1.3.ops"]);
        o.give_up(&e).unwrap();
        assert!(o.pending("ops").is_empty());
        assert_eq!(o.failed(), [e]);
        o.forget_failed("r1.3.ops").unwrap();
        assert!(o.failed().is_empty());
    }

    #[test]
    fn marks_and_hostile_names() {
        let tmp = tempfile::tempdir().unwrap();
        let o = Outbox::open(tmp.path()).unwrap();
        assert_eq!(o.mark("r1"), None);
        o.set_mark("r1", None).unwrap();
        assert_eq!(o.mark("r1"), Some(None));
        o.set_mark("r1", Some(9)).unwrap();
        assert_eq!((o.mark("r1"), o.marked_runs()), (Some(Some(9)), vec!["r1".to_string()]));
        assert!(o.set_mark("../x", Some(1)).is_err());
        assert!(
            o.put(&Entry {
                target: "../t".into(),
                ..entry("a")
            })
            .is_err()
        );
        assert!(o.put(&entry("../../a")).is_err());
    }
}
