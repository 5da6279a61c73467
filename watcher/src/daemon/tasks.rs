//! One piece of work on a run, on a blocking worker: claim it (with a remote), keep the claim
//! renewed, catch up with the remote, carry the run forward with `runs::process`, and say how
//! it ended. Never exchanges results with the remote: the daemon's loop pushes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stella_engine::Code;
use stella_engine::exec::{CancelToken, Outcome};
use stella_engine::remote::{Claim, Remote, Renewal};
use stella_engine::runs::{self, Environment, Need};
use tracing::{info, warn};

use super::exchange::catch_up;

/// How one piece of work on a run ended.
pub enum TaskEnd {
    Finished(Option<Outcome>),
    /// Another runner holds the claim, renewed `age_secs` ago: left alone until it may lapse.
    ClaimedElsewhere {
        holder: String,
        age_secs: u64,
    },
    /// Another runner took the run over while this one worked on it.
    TakenOver,
    /// The run's files cannot be continued (tampered, malformed): left alone until they change.
    Invalid(runs::Invalid),
    Failed(Code, String),
}

/// A run, how the work on it ended, and the claim to release once its results are pushed.
pub type Done = (String, TaskEnd, Option<String>);

/// One piece of work on a run, on a blocking worker. With a remote, the run is executed only
/// by the runner that holds its claim, and the claim is renewed while the work goes on.
pub fn work(env: Arc<Environment>, remote: Option<Arc<Remote>>, id: String, need: Need, token: CancelToken) -> Done {
    let mut took_over = None;
    let mut lease_token = None;
    if let Some(r) = &remote {
        match r.claim(&id, &env.key) {
            Ok(Claim::Lost { holder, age_secs }) => return (id, TaskEnd::ClaimedElsewhere { holder, age_secs }, None),
            Ok(Claim::TakenOver { from, token }) => {
                env.unfence(&id);
                info!(run = %id, from = %from, "took over a claim whose runner went silent");
                took_over = Some(from);
                lease_token = Some(token);
            }
            Ok(Claim::Won { token }) => {
                env.unfence(&id);
                lease_token = Some(token);
            }
            Err(e) => {
                return (
                    id,
                    TaskEnd::Failed(e.code(), format!("cannot claim the run: {e}")),
                    None,
                );
            }
        }
    }
    let renewing = Arc::new(AtomicBool::new(true));
    let renewer = remote
        .clone()
        .zip(lease_token)
        .map(|(r, lease)| renew(r, env.clone(), id.clone(), lease, renewing.clone(), token.clone()));
    // Holding the claim, read the run as the remote has it now: another runner may have
    // carried it on since this runner's last fetch (a brand-new claim on a new request
    // cannot be behind: nobody ever held it).
    if let Some(r) = &remote
        && (need != Need::Start || took_over.is_some())
        && let Err(e) = catch_up(&env, r)
    {
        renewing.store(false, Ordering::SeqCst);
        if let Some(h) = renewer {
            let _ = h.join();
        }
        return (
            id,
            TaskEnd::Failed(e.code(), format!("cannot read the run from the remote: {e}")),
            None,
        );
    }
    // The run's place at the tip now (a catch-up may have brought its directory).
    let dir = match env.run_dir(&id) {
        Ok(dir) => dir,
        Err(e) => {
            renewing.store(false, Ordering::SeqCst);
            if let Some(h) = renewer {
                let _ = h.join();
            }
            return (id, TaskEnd::Failed(e.code(), format!("cannot read the run: {e}")), None);
        }
    };
    let result = runs::process(&env, &dir, need, token, took_over.as_deref());
    renewing.store(false, Ordering::SeqCst);
    let lease = renewer.and_then(|h| h.join().ok().flatten());
    // A run waiting at a gate is not being executed: its claim is released once its events
    // are on the remote, so whichever runner sees the approvals first carries it on (a live
    // runner's waiting run is not "taken over" after the lease).
    let release = match &result {
        Ok(Some(Outcome::Waiting { .. })) => lease,
        _ => None,
    };
    // The results go out with the main loop's next exchange, together with those of the
    // runs that finished meanwhile (one fetch and one push for all of them).
    if env.is_fenced(&id) {
        // What this runner recorded after the takeover is not the run's: keep it aside.
        if let Ok(kept) = stella_engine::journal::set_aside(&env.git_dir, &id) {
            info!(run = %id, kept = %kept.display(), "journal of a run taken over set aside");
        }
        return (id, TaskEnd::TakenOver, None);
    }
    match result {
        Ok(o) => (id, TaskEnd::Finished(o), release),
        Err(runs::Error::Invalid(why)) => (id, TaskEnd::Invalid(why), None),
        Err(e) => (id, TaskEnd::Failed(e.code(), e.to_string()), None),
    }
}

/// Renews the claim on run `id` every third of the lease while `renewing` holds; returns the
/// last lease token, or `None` when another runner took the run over (its work is then
/// cancelled and the run fenced).
fn renew(
    r: Arc<Remote>,
    env: Arc<Environment>,
    id: String,
    mut lease: String,
    renewing: Arc<AtomicBool>,
    token: CancelToken,
) -> std::thread::JoinHandle<Option<String>> {
    std::thread::spawn(move || {
        let every = (r.lease / 3).max(Duration::from_millis(200));
        let mut last = std::time::Instant::now();
        while renewing.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() < every {
                continue;
            }
            match r.renew(&id, &env.key, &lease) {
                Ok(Renewal::Kept { token }) => lease = token,
                Ok(Renewal::Lost { holder }) => {
                    // Paused past the lease (or cut off): another runner has the run now.
                    warn!(run = %id, holder = %holder, "the claim was taken over; stopping this runner's work on the run");
                    env.fence(&id);
                    token.cancel();
                    return None;
                }
                Err(e) => warn!(run = %id, error = %e, "cannot renew the claim; retrying"),
            }
            last = std::time::Instant::now();
        }
        Some(lease)
    })
}

/// The daemon's line about how one piece of work ended. A run that could not be carried on
/// gets an `error[ERR_…]: run ID: …` line on stderr: a log line about that run while the
/// daemon goes on, not the command's failure (that is `main`'s to print).
pub fn report(id: &str, end: TaskEnd) {
    match end {
        TaskEnd::Finished(Some(Outcome::Succeeded)) => say!("run {id} succeeded"),
        TaskEnd::Finished(Some(Outcome::Failed { code, message })) => say!("run {id} failed: {message} [{code}]"),
        TaskEnd::Finished(Some(Outcome::Cancelled)) => say!("run {id} cancelled"),
        TaskEnd::Finished(Some(Outcome::Waiting { step, .. })) => say!("run {id} waiting at gate {step}"),
        TaskEnd::Finished(None) | TaskEnd::ClaimedElsewhere { .. } | TaskEnd::Invalid(_) => {}
        TaskEnd::TakenOver => {
            say!("run {id} was taken over by another runner (this one was silent past its lease); stopped here")
        }
        TaskEnd::Failed(code, e) => say_err!("error[{code}]: run {id}: {e}"),
    }
}

/// Says once that a run is invalid and skipped: the run, the file and line, the code.
pub fn report_invalid(id: &str, why: &runs::Invalid) {
    warn!(
        run = %id,
        file = %why.file,
        line = why.line,
        code = %why.code,
        reason = %why.message,
        "run is invalid and skipped; the other runs go on (`stella runs show {id}`)"
    );
}
