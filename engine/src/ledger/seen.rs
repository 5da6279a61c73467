//! What this runner has seen of the branch, kept under `.git/stella/`: the last tip (a later
//! tip that does not contain it means history was rewritten) and the tips seen before (the
//! branch as it was before a request arrived, whose trust files judge it). Local files only;
//! never read from or written to the repository's objects.

use std::path::{Path, PathBuf};

use gix::ObjectId;

/// How many seen tips are kept.
const KEPT: usize = 1000;

/// Where the daemon keeps the last branch tip it saw (`.git/stella/last-seen`): a later tip
/// that does not contain it means history was rewritten.
pub fn last_seen_path(git_dir: &Path) -> PathBuf {
    git_dir.join("stella").join("last-seen")
}

fn tips_path(git_dir: &Path) -> PathBuf {
    git_dir.join("stella").join("seen")
}

/// The branch tips this runner has seen, oldest first (`.git/stella/seen`).
pub fn tips(git_dir: &Path) -> Vec<ObjectId> {
    std::fs::read_to_string(tips_path(git_dir))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| ObjectId::from_hex(l.trim().as_bytes()).ok())
        .collect()
}

/// Records a branch tip as seen (kept to the last 1,000). Best effort: a tip not recorded
/// only makes the trust commit of a later request the one before it on the branch.
pub fn record(git_dir: &Path, tip: ObjectId) {
    let mut tips = tips(git_dir);
    if tips.last() == Some(&tip) {
        return;
    }
    tips.push(tip);
    let keep = tips.len().saturating_sub(KEPT);
    let text: String = tips[keep..].iter().map(|t| format!("{t}\n")).collect();
    let path = tips_path(git_dir);
    let tmp = path.with_extension("tmp");
    if std::fs::create_dir_all(path.parent().expect("has a parent")).is_ok() && std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(tmp, path);
    }
}
