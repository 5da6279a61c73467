//! The local index of runs, `.git/stella/index/runs.json`: for each run the object id of its
//! `runs/<id>` tree, its journal's fingerprint and the `Facts` read from them, so that a scan
//! reads only the runs that changed. A cache, never trusted over git: an entry counts only
//! while both keys match, and a file that is missing, of another version, or not
//! authenticated by this runner's key is ignored and rebuilt. Never decides a run's need.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gix::ObjectId;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Need, RunView};
use crate::state::RunStatus;

/// The format of the index file; a file of any other version is rebuilt.
pub const VERSION: u32 = 1;
const MAGIC: &str = "stella-runs-index";

/// Where the index lives: `.git/stella/index/runs.json`.
pub fn path(git_dir: &Path) -> PathBuf {
    git_dir.join("stella").join("index").join("runs.json")
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
        }
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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    tree: String,
    journal: JournalMark,
    facts: Facts,
}

/// The index in memory: what a scan may take instead of reading a run. Without a runner key
/// there is no index (`Index::none`): every scan reads git.
pub struct Index {
    file: Option<PathBuf>,
    secret: [u8; 32],
    entries: BTreeMap<String, Entry>,
    dirty: bool,
    /// Read, never written: what a reader that must write nothing (the HTTP edge) uses.
    read_only: bool,
}

impl Index {
    /// No index: every run is read from git.
    pub fn none() -> Index {
        Index {
            file: None,
            secret: [0; 32],
            entries: BTreeMap::new(),
            dirty: false,
            read_only: false,
        }
    }

    /// The index of the repository at `git_dir`, authenticated with a secret derived from the
    /// runner key. A file that is missing, truncated, of another version or whose MAC does not
    /// verify gives an empty index, rewritten at the next `save`.
    pub fn open(git_dir: &Path, key: &crate::keys::SshKey) -> Index {
        let mut h = Sha256::new();
        h.update(b"stella runs index secret\0");
        h.update(key.signing_key().to_bytes());
        let mut index = Index {
            file: Some(path(git_dir)),
            secret: h.finalize().into(),
            entries: BTreeMap::new(),
            dirty: true,
            read_only: false,
        };
        if let Some(entries) = std::fs::read(path(git_dir)).ok().and_then(|b| index.decode(&b)) {
            index.entries = entries;
            index.dirty = false;
        } else {
            tracing::debug!(file = %path(git_dir).display(), "the runs index is missing or not this runner's; rebuilt from git");
        }
        index
    }

    /// This index, never saved: scans use what it holds and write nothing.
    #[must_use]
    pub fn read_only(mut self) -> Index {
        self.read_only = true;
        self
    }

    fn decode(&self, bytes: &[u8]) -> Option<BTreeMap<String, Entry>> {
        let nl = bytes.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&bytes[..nl]).ok()?;
        let mac = header.strip_prefix(&format!("{MAGIC} {VERSION} "))?;
        let body = &bytes[nl + 1..];
        let mac = hex::decode(mac).ok()?;
        // `verify_slice` compares in constant time.
        self.mac(body).verify_slice(&mac).ok()?;
        serde_json::from_slice(body).ok()
    }

    /// HMAC-SHA256 of the header's magic and version, then the body.
    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        mac.update(format!("{MAGIC} {VERSION}\n").as_bytes());
        mac.update(body);
        mac
    }

    /// The facts recorded for run `id`, if its tree and journal are those they were read from.
    pub fn get(&self, id: &str, tree: ObjectId, journal: JournalMark) -> Option<Facts> {
        let e = self.entries.get(id)?;
        let same_tree = ObjectId::from_hex(e.tree.as_bytes()).is_ok_and(|t| t == tree);
        (self.file.is_some() && same_tree && e.journal == journal).then(|| e.facts.clone())
    }

    /// Records the facts read from run `id`'s tree and journal.
    pub fn put(&mut self, id: &str, tree: ObjectId, journal: JournalMark, facts: Facts) {
        if self.file.is_none() {
            return;
        }
        let entry = Entry {
            tree: tree.to_string(),
            journal,
            facts,
        };
        self.entries.insert(id.to_string(), entry);
        self.dirty = true;
    }

    /// Forgets the runs that are no longer on the branch.
    pub fn keep(&mut self, ids: &BTreeSet<String>) {
        let before = self.entries.len();
        self.entries.retain(|id, _| ids.contains(id));
        self.dirty |= self.entries.len() != before;
    }

    /// Writes the index if it changed: a temporary file, then a rename, so a reader sees the
    /// old file or the new one. A failure is logged and costs only the next scan's reads.
    pub fn save(&mut self) {
        let Some(file) = self.file.clone().filter(|_| self.dirty && !self.read_only) else {
            return;
        };
        let body = serde_json::to_vec(&self.entries).expect("the index is JSON");
        let mut bytes = format!(
            "{MAGIC} {VERSION} {}\n",
            hex::encode(self.mac(&body).finalize().into_bytes())
        )
        .into_bytes();
        bytes.extend_from_slice(&body);
        let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, &bytes))
            .and_then(|()| std::fs::rename(&tmp, &file));
        match written {
            Ok(()) => self.dirty = false,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(file = %file.display(), error = %e, "cannot write the runs index; the next scan reads git again");
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
            started: None,
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
        }
    }

    #[test]
    fn an_entry_counts_only_for_its_tree_and_journal_and_only_under_its_key() {
        let git = tempfile::tempdir().unwrap();
        let key = crate::keys::SshKey::generate("runner");
        let tree = ObjectId::empty_tree(gix::hash::Kind::Sha1);
        let other = ObjectId::null(gix::hash::Kind::Sha1);
        let mut index = Index::open(git.path(), &key);
        index.put("r1", tree, Some([1, 2, 3]), facts(RunStatus::Succeeded));
        index.save();
        let again = Index::open(git.path(), &key);
        assert_eq!(
            again.get("r1", tree, Some([1, 2, 3])),
            Some(facts(RunStatus::Succeeded))
        );
        assert_eq!(again.get("r1", other, Some([1, 2, 3])), None, "another tree");
        assert_eq!(again.get("r1", tree, Some([2, 2, 3])), None, "the journal grew");
        assert_eq!(again.get("r1", tree, None), None, "the journal went");
        let stranger = Index::open(git.path(), &crate::keys::SshKey::generate("other"));
        assert_eq!(stranger.get("r1", tree, Some([1, 2, 3])), None, "another runner's key");
        let text = std::fs::read_to_string(path(git.path())).unwrap();
        std::fs::write(path(git.path()), text.replace("succeeded", "cancelled")).unwrap();
        assert_eq!(
            Index::open(git.path(), &key).get("r1", tree, Some([1, 2, 3])),
            None,
            "edited"
        );
        assert_eq!(Index::none().get("r1", tree, Some([1, 2, 3])), None);
    }
}
