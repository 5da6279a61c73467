//! The daemon's exchange with its remote: fetch, bring the branch level, push what the runner
//! committed, release the claims of runs left waiting. Blocking calls for a worker thread;
//! never decides when to exchange (the loop does) and never executes a run.

use stella_engine::remote::{self, Remote};
use stella_engine::runs::Environment;
use tracing::{info, warn};

/// Fetch, bring the branch level with the remote, and push what the runner committed. Runs
/// whose local results had to be dropped (another runner holds them) are fenced.
pub fn exchange(env: &Environment, remote: &Remote) -> Result<(), remote::Error> {
    tracing::debug!(remote = %remote.name, "exchange with the remote");
    remote.fetch()?;
    let mut ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
    let mut dropped = remote.integrate(&mut ledger, &env.key)?.dropped;
    ledger.refresh();
    dropped.extend(remote.push(&mut ledger, &env.key)?.1);
    ledger.refresh();
    for id in dropped {
        warn!(run = %id, "another runner holds this run: this runner's unpushed results for it were dropped");
        env.fence(&id);
    }
    // Pull requests are planned and noted, never executed.
    match remote.note_pull_requests(&ledger) {
        Ok(n) if n > 0 => info!(notes = n, "wrote plan notes on pull requests"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot write plan notes on pull requests"),
    }
    Ok(())
}

/// Releases the claims of runs left waiting at a gate (their events are on the remote now).
pub fn release_claims(remote: &Remote, claims: Vec<(String, String)>) {
    for (id, lease) in claims {
        if let Err(e) = remote.release(&id, &lease) {
            warn!(run = %id, error = %e, "cannot release the claim of a waiting run; it lapses after the lease");
        }
    }
}

/// Fetches and brings the branch level with the remote, without pushing.
pub fn catch_up(env: &Environment, remote: &Remote) -> Result<(), remote::Error> {
    remote.fetch()?;
    let mut ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
    for id in remote.integrate(&mut ledger, &env.key)?.dropped {
        env.fence(&id);
    }
    ledger.refresh();
    Ok(())
}
