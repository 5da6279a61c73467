//! What the daemon sees on the branch: the runs not settled and what each needs (after
//! checking that history was not rewritten; the local index makes a scan cost what changed
//! since the last one), a cheap fingerprint to skip scans that would find nothing new,
//! the order new runs are tried in, and the next gate deadline. Reads only; starts nothing.

use std::path::Path;
use std::sync::Mutex;

use stella_engine::Code;
use stella_engine::runs::{self, Environment, Need};

use crate::failure::Failure;

/// What an idle scan's result depends on besides the clock: the branch tip, and the journal
/// directory (a journal created or set aside). Journals grow only under this daemon's own
/// work, after which it scans anyway. Cheap: one ref read and one stat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub tip: Option<gix::ObjectId>,
    /// With a separate ledger branch, the watched branch's tip (its new commits are taken in).
    watched: Option<gix::ObjectId>,
    journals: Option<std::time::SystemTime>,
}

pub fn fingerprint(env: &Environment) -> Fingerprint {
    let ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
    let (tip, watched) = (ledger.tip().ok().flatten(), ledger.watched_tip());
    drop(ledger);
    let journals = std::fs::metadata(stella_engine::journal::dir(&env.git_dir))
        .and_then(|m| m.modified())
        .ok();
    Fingerprint { tip, watched, journals }
}

/// Orders new runs differently on each runner (by a hash of the runner key and the run id,
/// as rendezvous hashing does), so runners sharing a remote do not all race for the same run
/// first; runs already under way come first.
pub fn spread(found: &mut [(runs::Summary, Need)], runner: &str) {
    use sha2::Digest;
    found.sort_by_cached_key(|(view, need)| {
        let fresh = *need == Need::Start;
        let rank = fresh.then(|| sha2::Sha256::digest(format!("{runner}\n{}", view.id).as_bytes()).to_vec());
        (fresh, rank)
    });
}

/// The earliest moment a waiting run's gate expires, or a chaos delay on its approvals ends.
pub fn next_deadline<'a>(runs: impl Iterator<Item = &'a runs::Summary>) -> Option<std::time::SystemTime> {
    let now = std::time::SystemTime::now();
    runs.filter_map(|v| v.facts.deadline(now)).min()
}

/// The runs found by a scan with what each needs, and the entries under runs/ that are not runs.
pub type Scan = (Vec<(runs::Summary, Need)>, Vec<String>);

/// The runs on the branch that are not settled (`runs::Select::Active`: finished runs whose
/// files did not change are never read) and what each needs, after checking history was not
/// rewritten. Runs `index` knows unchanged are not read; the views hold no events.
pub fn scan(env: &Environment, index: &Mutex<runs::Index>) -> Result<Scan, Failure> {
    let mut ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
    ledger.refresh();
    // A separate ledger branch first takes in the watched branch's new requests and policy.
    ledger.take_in(env.key.as_ref())?;
    let Some(tip) = ledger.tip()? else {
        return Ok((Vec::new(), Vec::new()));
    };
    check_history(&ledger, &env.git_dir, tip)?;
    let mut index = index.lock().unwrap_or_else(|p| p.into_inner());
    let scanned = runs::scan(&ledger, tip, &mut index, runs::Select::Active)?;
    Ok((
        scanned
            .runs
            .into_iter()
            .map(|v| {
                let n = v.need();
                (v, n)
            })
            .collect(),
        scanned.ignored,
    ))
}

/// Refuses to go on when the branch no longer contains the last tip this daemon saw
/// (a force-push rewrote the ledger's history).
fn check_history(ledger: &stella_engine::ledger::Ledger, git_dir: &Path, tip: gix::ObjectId) -> Result<(), Failure> {
    let file = stella_engine::ledger::seen::last_seen_path(git_dir);
    if let Some(seen) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| gix::ObjectId::from_hex(s.trim().as_bytes()).ok())
    {
        let ok = ledger.is_ancestor(seen, tip).unwrap_or(false);
        if !ok {
            return Err(Failure::one(
                Code::LedgerTampered,
                format!(
                    "the branch no longer contains {seen}, the last commit this runner saw: its history was rewritten (force-push?). Restore it, or remove {} after review to accept the new history",
                    file.display()
                ),
            ));
        }
    }
    let _ = std::fs::create_dir_all(file.parent().expect("has a parent"));
    let _ = std::fs::write(&file, tip.to_string());
    stella_engine::ledger::seen::record(git_dir, tip);
    Ok(())
}
