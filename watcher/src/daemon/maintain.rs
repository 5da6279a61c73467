//! The daemon's housekeeping, off every run's path: a task of its own that wakes at each
//! poll and, when the branch moved, prunes the journals the ledger now holds and, when loose
//! objects piled up, runs git maintenance (`ledger::maintenance`), one pass at a time, on a
//! blocking worker. Never holds the ledger a run commits through.

use std::path::PathBuf;
use std::time::Duration;

use gix::ObjectId;
use stella_engine::ledger::{Ledger, maintenance};
use tracing::{info, warn};

/// What a pass needs to know of the daemon.
#[derive(Clone)]
pub struct Housekeeping {
    pub root: PathBuf,
    pub branch: String,
    /// With `--remote`, the remote-tracking branch (`refs/remotes/<name>/<branch>`): a journal
    /// is pruned only once its events are on the server too.
    pub tracking: Option<String>,
}

/// What a pass looked at: the branch tip and, with a remote, the server's branch.
type Seen = Option<(ObjectId, Option<ObjectId>)>;

/// Runs a pass at every `poll`, for as long as the runtime lives.
pub async fn background(h: Housekeeping, poll: Duration) {
    let mut seen: Seen = None;
    loop {
        tokio::time::sleep(poll).await;
        let h = h.clone();
        match tokio::task::spawn_blocking(move || pass(&h, seen)).await {
            Ok(tip) => seen = tip,
            Err(e) => warn!(error = %e, "maintenance pass died"),
        }
    }
}

/// One pass: nothing when neither the tip nor the server's branch moved since `seen`; else
/// journals pruned, and git maintenance when due. Returns what it looked at.
pub fn pass(h: &Housekeeping, seen: Seen) -> Seen {
    // Opened afresh: sees the refs and packs that runs and other processes wrote.
    let ledger = Ledger::open(&h.root, &h.branch).ok()?;
    let tip = ledger.tip().ok().flatten()?;
    let server = h.tracking.as_deref().and_then(|name| ledger.resolve(name));
    let now = Some((tip, server));
    if now == seen {
        return now;
    }
    let others: Vec<ObjectId> = match (&h.tracking, server) {
        (Some(_), Some(t)) => vec![t],
        // Nothing fetched or pushed yet: every journal may still be needed.
        (Some(_), None) => return now,
        (None, _) => Vec::new(),
    };
    if maintenance::due(ledger.git_dir()) {
        match maintenance::run(&ledger, &others) {
            Ok(Some(r)) => {
                info!(record = ?r, "maintenance");
                say!("stella daemon: {}", summary(&r));
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "maintenance failed"),
        }
    } else {
        match maintenance::prune_journals(&ledger, &others) {
            Ok(0) => {}
            Ok(n) => info!(journals = n, "journals pruned: the ledger holds all their events"),
            Err(e) => warn!(error = %e, "cannot prune journals"),
        }
    }
    now
}

/// `maintenance: 1300 loose objects packed in 0.4 s; objects 5.1 MB -> 1.2 MB; 40 journals pruned`.
pub fn summary(r: &maintenance::Record) -> String {
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    format!(
        "maintenance: {} loose objects packed in {:.1} s; objects {} -> {}; {} journal{} pruned{}",
        r.before.loose_objects.saturating_sub(r.after.loose_objects),
        r.duration_ms as f64 / 1000.0,
        mb(r.before.bytes()),
        mb(r.after.bytes()),
        r.journals_pruned,
        if r.journals_pruned == 1 { "" } else { "s" },
        r.error.as_ref().map_or(String::new(), |e| format!("; git failed: {e}"))
    )
}
