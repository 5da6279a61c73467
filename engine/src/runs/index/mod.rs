//! The local index of runs, under `.git/stella/index/`: what a scan learned about the runs at
//! a tip, so that the next scan reads only what changed since. A small head (the tip, the
//! runs not settled there with their trees, journal fingerprints and `Facts`, the entries that
//! are no run) and an append-only log of settled runs (`log`). A cache, never trusted over
//! git: every part is authenticated with a key derived from the runner key, and a part that is
//! missing, of another version or not authentic is rebuilt from git. Never decides a run's
//! need, and never reads git itself.

pub mod log;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Need, RunView};
use crate::layout::Layout;
use crate::state::RunStatus;

/// The format of the head (and with it the log); a head of any other version is rebuilt.
pub const VERSION: u32 = 2;
const MAGIC: &str = "stella-runs-index";
const HEAD: &str = "head";

/// Where the index lives: `.git/stella/index/`.
pub fn dir(git_dir: &Path) -> PathBuf {
    git_dir.join("stella").join("index")
}

/// The index's head: `.git/stella/index/head`.
pub fn path(git_dir: &Path) -> PathBuf {
    dir(git_dir).join(HEAD)
}

/// What every reader of many runs needs of one, without its events: the folded state's
/// headline, the pack, how many events there are, and what decides its need and deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Facts {
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_gate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The pack path recorded when the run was planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    /// How many events the most complete record (ledger or journal) holds.
    pub events: usize,
    /// The local journal holds events the ledger lacks.
    pub journal_ahead: bool,
    pub has_request: bool,
    pub has_cancel: bool,
    /// Entries of the run directory that are no run file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    /// When the gate the run waits at expires, if it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_expires: Option<SystemTime>,
    /// When a chaos delay on the waiting gate's approvals ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ends: Option<SystemTime>,
    /// The earliest and latest event times the run's record holds (`step.log` lines, read for
    /// state without theirs, left out): which runs a time window can skip (`runs export --since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<(String, String)>,
}

/// The earliest and latest non-empty event times of `events`; none when one does not parse.
fn times(events: &[crate::event::Event]) -> Option<(String, String)> {
    type Stamp<'a> = (SystemTime, &'a str);
    let mut bounds: Option<(Stamp, Stamp)> = None;
    for t in events.iter().map(|e| e.ts.as_str()).filter(|t| !t.is_empty()) {
        let at = (humantime::parse_rfc3339(t).ok()?, t);
        bounds = Some(match bounds {
            None => (at, at),
            Some((lo, hi)) => (if at.0 < lo.0 { at } else { lo }, if at.0 > hi.0 { at } else { hi }),
        });
    }
    bounds.map(|(lo, hi)| (lo.1.to_string(), hi.1.to_string()))
}

impl Facts {
    /// The facts of a view read whole (or for state).
    pub fn of(v: &RunView) -> Facts {
        let st = v.state();
        let ends = |kind: &str, key: &str| {
            let gate = st.waiting_gate.as_deref()?;
            let e = v
                .events()
                .iter()
                .find(|e| e.kind == kind && e.step.as_deref() == Some(gate))?;
            let ms = e.get(key)?.as_u64()?;
            Some(humantime::parse_rfc3339(&e.ts).ok()? + std::time::Duration::from_millis(ms))
        };
        Facts {
            gate_expires: ends("gate.waiting", "expiresAfterMs"),
            delay_ends: ends(crate::chaos::EVENT, "durationMs"),
            status: st.state,
            started: st.started,
            finished: st.finished,
            waiting_gate: st.waiting_gate,
            code: st.code,
            error: st.error,
            pack: v.pack(),
            events: v.events().len(),
            journal_ahead: v.journal_events.len() > v.ledger_events.len(),
            has_request: v.has_request,
            has_cancel: v.has_cancel,
            ignored: v.ignored.clone(),
            times: times(v.events()),
        }
    }

    /// Whether the run may hold an event whose time is in [`since`, `until`): not when all its
    /// events are known to be outside. A run not finished may still add events; unknown times
    /// (an index written before `times`) never skip.
    pub fn may_overlap(&self, since: SystemTime, until: SystemTime) -> bool {
        let Some((first, last)) = &self.times else { return true };
        let at = |t: &str| humantime::parse_rfc3339(t).ok();
        match (at(first), at(last)) {
            (Some(first), Some(last)) => first < until && (last >= since || !self.status.is_terminal()),
            _ => true,
        }
    }

    /// Where the run stands in "newest first": when it started (`run.started`), else when it
    /// finished, in ms since the epoch; a run with neither (not started yet) is newer than any
    /// run that has one (`u64::MAX`). A time that does not parse counts as 0.
    pub fn order(&self) -> u64 {
        match self.started.as_deref().or(self.finished.as_deref()) {
            None => u64::MAX,
            Some(t) => humantime::parse_rfc3339(t)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// Whether nothing more happens to the run until a commit touches it: finished, every
    /// event in the ledger, nothing stray in its directory. (A runner never appends to the
    /// journal of a finished run, so its facts depend on its tree alone.)
    pub fn settled(&self) -> bool {
        self.events > 0 && self.status.is_terminal() && !self.journal_ahead && self.ignored.is_empty()
    }

    /// What the run needs from the daemon (`RunView::need`'s one definition); an invalid run
    /// needs nothing.
    pub fn need(&self, invalid: bool) -> Need {
        if invalid {
            return Need::Nothing;
        }
        if self.events == 0 {
            return if self.has_request { Need::Start } else { Need::Nothing };
        }
        if self.status.is_terminal() {
            return if self.journal_ahead { Need::Flush } else { Need::Nothing };
        }
        if self.has_cancel {
            return Need::Cancel;
        }
        match self.status {
            RunStatus::Waiting if !self.journal_ahead => Need::Waiting,
            _ => Need::Recover,
        }
    }

    /// The earliest moment after `now` that changes what the waiting run's gate says: its
    /// expiry, or the end of a chaos delay still to come (one that is over no longer counts).
    pub fn deadline(&self, now: SystemTime) -> Option<SystemTime> {
        self.waiting_gate.as_ref()?;
        let delay = self.delay_ends.filter(|t| *t > now);
        self.gate_expires.into_iter().chain(delay).min()
    }
}

/// The local journal's fingerprint: length, modification time (ns) and inode. A journal only
/// grows by appends, and is replaced only by being set aside (a new file).
pub type JournalMark = Option<[u64; 3]>;

/// The fingerprint of run `id`'s journal now (`None` when there is none).
pub fn journal_mark(git_dir: &Path, id: &str) -> JournalMark {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(crate::journal::path(git_dir, id)).ok()?;
    let ns = m.mtime() as u64 * 1_000_000_000 + m.mtime_nsec() as u64;
    Some([m.len(), ns, m.ino()])
}

/// A run the head holds: one not settled (requested, under way, waiting, finished with events
/// the ledger lacks, or with stray entries in its directory), or one that cannot be read as a
/// run (then without facts: it is read again at every scan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    pub layout: Layout,
    pub tree: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<String>,
    pub journal: JournalMark,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<Facts>,
}

/// The small part of the index, read by every scan and rewritten whole (atomically) when it
/// changes: the tip it describes, the runs not settled there, the entries under `runs/` that
/// are no run, and where the log of settled runs ends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub tip: String,
    pub live: BTreeMap<String, Live>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub ignored: BTreeSet<String>,
    pub log: log::End,
}

/// The index in memory: the head as read (when it is this runner's and of this version),
/// and the directory the log lives in. Without a runner key there is no index
/// (`Index::none`): every scan reads git.
pub struct Index {
    dir: Option<PathBuf>,
    secret: [u8; 32],
    head: Option<Head>,
    /// The head's body as read or last written: a head that did not change is not written.
    saved: Option<Vec<u8>>,
}

impl Index {
    /// No index: every run is read from git.
    pub fn none() -> Index {
        Index {
            dir: None,
            secret: [0; 32],
            head: None,
            saved: None,
        }
    }

    /// The index of the repository at `git_dir`, authenticated with a secret derived from the
    /// runner key. A head that is missing, truncated, of another version or whose MAC does not
    /// verify is no head: the next scan rebuilds the index from git.
    pub fn open(git_dir: &Path, key: &crate::keys::SshKey) -> Index {
        let mut h = Sha256::new();
        h.update(b"stella runs index secret\0");
        h.update(key.signing_key().to_bytes());
        let mut index = Index {
            dir: Some(dir(git_dir)),
            secret: h.finalize().into(),
            head: None,
            saved: None,
        };
        index.reload();
        index
    }

    /// Reads the head from disk again (another process may have moved it on).
    fn reload(&mut self) {
        let Some(file) = self.dir.as_ref().map(|d| d.join(HEAD)) else {
            return;
        };
        match std::fs::read(&file).ok().and_then(|b| self.decode(&b)) {
            Some((head, body)) => {
                self.head = Some(head);
                self.saved = Some(body);
            }
            None => {
                tracing::debug!(file = %file.display(), "the runs index is missing or not this runner's; rebuilt from git");
                self.head = None;
                self.saved = None;
            }
        }
    }

    /// Holds the index for one scan: an exclusive lock on `.git/stella/index/lock` (released
    /// when the value is dropped), so that two processes never append to the log at once, and
    /// the head as the last writer left it. Without a lock (it cannot be taken) the scan goes
    /// on: a log two writers raced on fails its check and is rebuilt.
    pub fn hold(&mut self) -> Option<std::fs::File> {
        use std::os::fd::AsRawFd;
        let dir = self.dir.clone()?;
        let lock = std::fs::create_dir_all(&dir)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join("lock"))
            })
            .ok();
        // SAFETY: flock on a descriptor this function owns; it blocks until the lock is free.
        let lock = lock.filter(|f| unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0);
        self.reload();
        lock
    }

    /// Whether there is an index at all (a runner key).
    pub fn is_on(&self) -> bool {
        self.dir.is_some()
    }

    fn decode(&self, bytes: &[u8]) -> Option<(Head, Vec<u8>)> {
        let nl = bytes.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&bytes[..nl]).ok()?;
        let mac = header.strip_prefix(&format!("{MAGIC} {VERSION} "))?;
        let body = &bytes[nl + 1..];
        let mac = hex::decode(mac).ok()?;
        // `verify_slice` compares in constant time.
        self.mac(body).verify_slice(&mac).ok()?;
        Some((serde_json::from_slice(body).ok()?, body.to_vec()))
    }

    /// HMAC-SHA256 of the header's magic and version, then the body.
    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        mac.update(format!("{MAGIC} {VERSION}\n").as_bytes());
        mac.update(body);
        mac
    }

    /// The head as read, taken out (the scan brings it up to date and saves it back).
    pub fn take_head(&mut self) -> Option<Head> {
        self.head.take()
    }

    /// The log of settled runs, when there is an index.
    pub fn log(&self) -> Option<log::Log<'_>> {
        Some(log::Log {
            dir: self.dir.as_deref()?,
            secret: &self.secret,
        })
    }

    /// Writes `head` if it changed: a temporary file, then a rename, so a reader sees the old
    /// head or the new one. When its log is of a new generation, the other generations' logs
    /// (and the index of version 1) are removed after. A failure is logged and costs only the
    /// next scan's reads.
    pub fn save(&mut self, head: Head) {
        let Some(dir) = self.dir.clone() else {
            return;
        };
        let body = serde_json::to_vec(&head).expect("the head is JSON");
        let generation = head.log.generation;
        self.head = Some(head);
        if self.saved.as_ref() == Some(&body) {
            return;
        }
        let old_generation = self
            .saved
            .as_ref()
            .and_then(|b| serde_json::from_slice::<Head>(b).ok())
            .map(|h| h.log.generation);
        let mut bytes = format!(
            "{MAGIC} {VERSION} {}\n",
            hex::encode(self.mac(&body).finalize().into_bytes())
        )
        .into_bytes();
        bytes.extend_from_slice(&body);
        let file = dir.join(HEAD);
        let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&tmp, &bytes))
            .and_then(|()| std::fs::rename(&tmp, &file));
        match written {
            Ok(()) => self.saved = Some(body),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(file = %file.display(), error = %e, "cannot write the runs index; the next scan reads git again");
                return;
            }
        }
        if old_generation != Some(generation) {
            let keep = log::path(&dir, generation);
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let stale_log = name.starts_with("settled.") && name.ends_with(".log") && p != keep;
                if stale_log || name == "runs.json" {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: RunStatus) -> Facts {
        Facts {
            status,
            started: Some("2026-12-01T10:00:00.000Z".into()),
            finished: None,
            waiting_gate: None,
            code: None,
            error: None,
            pack: None,
            events: 3,
            journal_ahead: false,
            has_request: true,
            has_cancel: false,
            ignored: Vec::new(),
            gate_expires: None,
            delay_ends: None,
            times: None,
        }
    }

    #[test]
    fn a_head_is_read_back_only_under_its_key_and_as_written() {
        let git = tempfile::tempdir().unwrap();
        let key = crate::keys::SshKey::generate("runner");
        let mut head = Head {
            tip: "ab".repeat(20),
            ..Head::default()
        };
        let live = Live {
            layout: Layout::Sharded,
            tree: "cd".repeat(20),
            approvals: None,
            journal: Some([1, 2, 3]),
            facts: Some(facts(RunStatus::Waiting)),
        };
        head.live.insert("r1".into(), live);
        let mut index = Index::open(git.path(), &key);
        assert_eq!(index.take_head(), None, "no index yet");
        index.save(head.clone());
        assert_eq!(Index::open(git.path(), &key).take_head(), Some(head.clone()));
        let stranger = Index::open(git.path(), &crate::keys::SshKey::generate("other"));
        assert!(!stranger.is_on() || stranger.head.is_none(), "another runner's key");
        let text = std::fs::read_to_string(path(git.path())).unwrap();
        std::fs::write(path(git.path()), text.replace("waiting", "succeeded")).unwrap();
        assert_eq!(Index::open(git.path(), &key).take_head(), None, "edited");
        std::fs::write(path(git.path()), &text[..text.len() / 2]).unwrap();
        assert_eq!(Index::open(git.path(), &key).take_head(), None, "truncated");
        assert!(!Index::none().is_on());
    }

    #[test]
    fn newest_is_by_start_then_finish_and_not_started_is_newest() {
        let mut f = facts(RunStatus::Succeeded);
        let started = f.order();
        f.started = None;
        assert_eq!(f.order(), u64::MAX);
        f.finished = Some("2026-12-01T10:00:01.000Z".into());
        assert_eq!(f.order(), started + 1000);
        assert!(f.settled());
        f.journal_ahead = true;
        assert!(!f.settled());
    }
}
