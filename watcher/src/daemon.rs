//! `stella daemon`: watches a repository (notify on the working tree's git refs, plus a slow
//! safety poll), finds run requests on the branch, and carries each forward on a bounded pool
//! of blocking workers. Owns the tokio runtime; the engine underneath is synchronous.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::Watcher;
use stella_engine::Code;
use stella_engine::chaos::Chaos;
use stella_engine::exec::{CancelToken, Outcome};
use stella_engine::remote::{Claim, Remote, Renewal};
use stella_engine::runs::{self, Environment, Need};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::cli::{Failure, repo};

/// Prints a line on stdout, ignoring a closed stdout: the daemon ignores SIGPIPE (see `run`),
/// and losing its reader (`stella daemon | head`) must not stop it.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// As `say!`, on stderr.
macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub struct Args {
    pub repo: PathBuf,
    pub once: bool,
    pub secrets: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub poll: Duration,
    pub kill_grace: Duration,
    /// Work with this remote: fetch, claim runs, push results.
    pub remote: Option<String>,
    /// How long a claim holds without renewal before another runner may take the run over.
    pub lease: Duration,
    /// Where run workspaces go (default: `runs::default_work_root`, outside the repository).
    pub work_dir: Option<PathBuf>,
    /// Keep the workspace of a failed run for inspection.
    pub keep_work: bool,
    /// The chaos file (runner-local, never read from the repository).
    pub chaos: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<u8, Failure> {
    // The daemon talks to git over pipes (gix's transport writes to `git upload-pack`): a
    // server that hangs up early must be an error to handle, not a signal that kills us.
    // SAFETY: setting a signal disposition before any thread of ours is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // Nothing running as this user may read the runner's memory (the key) through ptrace or
    // /proc/<pid>/mem; steps are kept out by their sandbox, this is the second wall.
    // SAFETY: a prctl on this process only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
    }
    let chaos = a.chaos.as_deref().map(Chaos::load).transpose()?;
    let root = repo::find_root(&a.repo)?;
    let config = repo::config_at_head(&root)?;
    let key = repo::load_key(&root, a.key.as_deref())?;
    let mut ledger = repo::open_ledger(&root, &config)?;
    repair_at_start(&mut ledger, &key);
    let file_secrets = match &a.secrets {
        Some(p) => stella_engine::secrets::Secrets::from_file(p)?,
        None => Default::default(),
    };
    say!(
        "stella daemon: repository {}, branch {}, runner key {}, limits maxRuns {} maxSteps {}, commit batch {} ms{}{}",
        root.display(),
        config.branch,
        key.fingerprint(),
        config.max_runs,
        if config.max_steps == 0 {
            "cores".to_string()
        } else {
            config.max_steps.to_string()
        },
        config.batch_ms,
        a.remote.as_ref().map_or(String::new(), |r| format!(
            ", remote {r} (claims lease {}, pull requests {})",
            humantime::format_duration(a.lease),
            config.pull_patterns.join(" ")
        )),
        if a.once { ", once" } else { "" }
    );
    // A `stella sync import` killed mid-way leaves its quarantine; it is of no use to anyone.
    stella_engine::sync::sweep_leftovers(&root);
    let git_dir = ledger.git_dir().to_path_buf();
    let work_root = match &a.work_dir {
        Some(d) => std::path::absolute(d).unwrap_or_else(|_| d.clone()),
        None => runs::default_work_root(&git_dir),
    };
    // With the default work root, the whole state directory: other repositories' runners
    // keep their workspaces there too.
    let hidden = [
        Some(root.clone()),
        Some(git_dir.clone()),
        Some(work_root.clone()),
        a.work_dir.is_none().then(runs::state_dir),
        Some(repo::key_path(&root, a.key.as_deref())),
        a.secrets.clone(),
    ]
    .into_iter()
    .flatten()
    .map(|p| std::path::absolute(&p).unwrap_or(p))
    .collect();
    let chaos = chaos.map(|c| Arc::new(c.with_log(git_dir.join("stella").join("chaos.ndjson"))));
    if let Some(c) = &chaos {
        say!(
            "stella daemon: chaos hooks from {} ({} rule(s)); injections are logged to .git/stella/chaos.ndjson",
            a.chaos.as_deref().unwrap_or(Path::new("")).display(),
            c.len()
        );
        stella_engine::chaos::install(c.clone());
    }
    let env = Arc::new(Environment {
        ledger: Mutex::new(ledger),
        git_dir: git_dir.clone(),
        key: Arc::new(key),
        file_secrets,
        kill_grace: a.kill_grace,
        fenced: Mutex::new(HashSet::new()),
        work_root,
        hidden,
        keep_work: a.keep_work,
        chaos,
    });
    let remote = a.remote.as_ref().map(|name| {
        Arc::new(Remote::new(
            root.clone(),
            name.clone(),
            config.branch.clone(),
            config.pull_patterns.clone(),
            a.lease,
        ))
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::one(Code::Io, format!("cannot start the runtime: {e}")))?;
    rt.block_on(main_loop(env, root, config.max_runs, a, remote))
}

/// Before anything else: ref locks a killed process left removed (they would fail every
/// later fetch and commit), the index and working tree made to agree with the branch tip for
/// every runner path (a runner killed between moving the branch and updating the index
/// leaves them stale), then any damage a person's commit did to runner files healed. Either
/// failing is reported and the daemon goes on: neither blocks executing runs.
fn repair_at_start(ledger: &mut stella_engine::ledger::Ledger, key: &stella_engine::keys::SshKey) {
    for lock in stella_engine::ledger::remove_stale_ref_locks(ledger.git_dir()) {
        warn!(lock = %lock.display(), "a ref lock left by a killed git process was removed at start");
        say!("stella daemon: removed a stale ref lock: {}", lock.display());
    }
    match ledger.repair_worktree() {
        Ok(fixed) => {
            for r in fixed {
                warn!(path = %r.path, what = %r.what, "index and working tree repaired at start");
                say!("stella daemon: repaired {}: {}", r.path, r.what);
            }
        }
        Err(e) => warn!(error = %e, "cannot repair the index and working tree at start"),
    }
    // Finding damage walks the whole history; a tip already found whole (the file below) is not
    // walked again, so a daemon restarted on an unchanged branch starts at once.
    let checked = ledger.git_dir().join("stella").join("healed-tip");
    let tip = ledger.tip().ok().flatten();
    if tip.is_some_and(|t| std::fs::read_to_string(&checked).is_ok_and(|s| t.to_hex() == s.trim())) {
        return;
    }
    let whole = |ledger: &stella_engine::ledger::Ledger| {
        if let Ok(Some(t)) = ledger.tip() {
            let _ = std::fs::write(&checked, format!("{t}\n"));
        }
    };
    match stella_engine::ledger::heal::heal(ledger, key) {
        Ok(Some(h)) => {
            whole(ledger);
            warn!(commit = %h.commit, damaged_by = ?h.damaged_by, paths = ?h.paths, "ledger healed at start");
            say!(
                "stella daemon: ledger healed: {} runner file{} restored by {} after {}",
                h.paths.len(),
                if h.paths.len() == 1 { "" } else { "s" },
                h.commit.to_hex_with_len(12),
                h.damaged_by.join(", ")
            );
        }
        Ok(None) => whole(ledger),
        Err(e) => warn!(error = %e, "cannot heal the ledger at start"),
    }
}

/// How one piece of work on a run ended.
enum TaskEnd {
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
type Done = (String, TaskEnd, Option<String>);

type SharedRemote = Option<Arc<Remote>>;

/// Fetch, bring the branch level with the remote, and push what the runner committed. Runs
/// whose local results had to be dropped (another runner holds them) are fenced.
fn exchange(env: &Environment, remote: &Remote) -> Result<(), stella_engine::remote::Error> {
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
fn release_claims(remote: &Remote, claims: Vec<(String, String)>) {
    for (id, lease) in claims {
        if let Err(e) = remote.release(&id, &lease) {
            warn!(run = %id, error = %e, "cannot release the claim of a waiting run; it lapses after the lease");
        }
    }
}

/// One piece of work on a run, on a blocking worker. With a remote, the run is executed only
/// by the runner that holds its claim, and the claim is renewed while the work goes on.
fn work(env: Arc<Environment>, remote: SharedRemote, id: String, need: Need, token: CancelToken) -> Done {
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
    let renewer = remote.clone().zip(lease_token).map(|(r, mut lease)| {
        let (env, id, renewing, token) = (env.clone(), id.clone(), renewing.clone(), token.clone());
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
    });
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
    let result = runs::process(&env, &id, need, token, took_over.as_deref());
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

/// Fetches and brings the branch level with the remote, without pushing.
fn catch_up(env: &Environment, remote: &Remote) -> Result<(), stella_engine::remote::Error> {
    remote.fetch()?;
    let mut ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
    for id in remote.integrate(&mut ledger, &env.key)?.dropped {
        env.fence(&id);
    }
    ledger.refresh();
    Ok(())
}

async fn main_loop(
    env: Arc<Environment>,
    root: PathBuf,
    max_runs: usize,
    a: Args,
    remote: SharedRemote,
) -> Result<u8, Failure> {
    let (tx, mut rx) = mpsc::channel::<()>(64);
    let _watcher = if a.once { None } else { Some(watch(&root, tx.clone())?) };
    let mut running: HashMap<String, CancelToken> = HashMap::new();
    let mut tasks: JoinSet<Done> = JoinSet::new();
    let mut tried: HashSet<(String, String)> = HashSet::new();
    let mut reported: HashSet<String> = HashSet::new();
    let mut first = true;
    let mut backlog: std::collections::VecDeque<(runs::RunView, Need)> = std::collections::VecDeque::new();
    let mut ignored: Vec<String> = Vec::new();
    // Runs whose files cannot be read as a run, with the branch tip at which they were found
    // so: skipped (every other run goes on) until the branch moves.
    let mut invalid: HashMap<String, (runs::Invalid, Option<gix::ObjectId>)> = HashMap::new();
    let mut deadline = None;
    let mut rescan = true;
    // Runs another runner holds, with when their claim could lapse.
    let mut elsewhere: HashMap<String, Instant> = HashMap::new();
    // The remote could not be reached: when to try again, and the wait after that.
    let mut retry_at: Option<Instant> = None;
    let mut backoff = Duration::from_secs(1);
    // What the last scan saw, and whether the wake-up asks only "did anything change?"
    // (the safety poll, a file event): then an unchanged branch and journals need no scan.
    let mut scanned: Option<Fingerprint> = None;
    let mut quiet = false;
    // Whether the last scan found work (a failed commit to flush, a run to recover): then the
    // next poll scans again even if nothing moved.
    let mut had_work = true;
    // Runs finished since the last exchange with the remote: their results wait to be pushed.
    let mut exchange_due = false;
    // Claims of runs waiting at a gate, released after the next successful exchange.
    let mut to_release: Vec<(String, String)> = Vec::new();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::one(Code::Io, format!("cannot handle SIGTERM: {e}")))?;
    loop {
        // Scan when the last scan's work is used up or something changed; otherwise keep
        // starting what it found (a scan reads every run, so not one per finished run).
        let fresh = backlog.is_empty() || rescan;
        if !fresh
            && exchange_due
            && let Some(r) = &remote
            && retry_at.is_none_or(|t| Instant::now() >= t)
        {
            // Push what finished while the backlog is still being worked through.
            let (env, r, release) = (env.clone(), r.clone(), std::mem::take(&mut to_release));
            let exchanged =
                tokio::task::spawn_blocking(move || exchange(&env, &r).map(|()| release_claims(&r, release)));
            if let Ok(Err(e)) = exchanged.await {
                warn!(error = %e, "cannot exchange with the remote; retried at the next cycle");
            }
        }
        exchange_due = false;
        if fresh {
            let mut reachable = true;
            if let Some(r) = &remote {
                if retry_at.is_some_and(|t| Instant::now() < t) {
                    reachable = false;
                } else {
                    let (env, r, release) = (env.clone(), r.clone(), std::mem::take(&mut to_release));
                    let res =
                        tokio::task::spawn_blocking(move || exchange(&env, &r).map(|()| release_claims(&r, release)))
                            .await
                            .map_err(|e| Failure::one(Code::Io, e.to_string()))?;
                    match res {
                        Ok(()) => {
                            if retry_at.take().is_some() {
                                say!("stella daemon: the remote answers again");
                            }
                            backoff = Duration::from_secs(1);
                        }
                        // A diverged branch needs a person; `--once` reports whatever failed.
                        Err(e) if a.once || e.code() == Code::BranchDiverged => {
                            return Err(Failure::one(e.code(), e.to_string()));
                        }
                        Err(e) => {
                            warn!(error = %e, retry_in = ?backoff, "cannot exchange with the remote; runs wait until it answers");
                            retry_at = Some(Instant::now() + backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(60));
                            reachable = false;
                        }
                    }
                }
            }
            let seen = reachable.then(|| fingerprint(&env));
            let idle = !had_work && elsewhere.is_empty() && tasks.is_empty() && backlog.is_empty();
            if reachable && quiet && idle && seen.is_some() && seen == scanned {
                // Nothing moved since the last scan: it would find what it found then.
            } else if reachable {
                if quiet {
                    tried.retain(|(_, need)| need != "Waiting");
                }
                scanned = seen;
                let views = {
                    let env = env.clone();
                    tokio::task::spawn_blocking(move || scan(&env))
                        .await
                        .map_err(|e| Failure::one(Code::Io, e.to_string()))??
                };
                deadline = next_deadline(views.0.iter().map(|(v, _)| v));
                had_work = views.0.iter().any(|(_, n)| !matches!(n, Need::Nothing | Need::Waiting));
                let mut found = views.0;
                if remote.is_some() {
                    spread(&mut found, &env.key.fingerprint());
                }
                let tip = scanned.as_ref().and_then(|f| f.tip);
                invalid.retain(|_, (_, at)| *at == tip);
                for (view, _) in &found {
                    if let Some(why) = &view.invalid {
                        invalid.insert(view.id.clone(), (why.clone(), tip));
                    }
                }
                backlog = found.into_iter().collect();
                ignored = views.1;
            } else {
                // Without the remote no run can be claimed: nothing starts until it answers.
                backlog.clear();
            }
            rescan = false;
            quiet = false;
        }
        // Runs another runner took over: stop this runner's work on them.
        for (id, token) in &running {
            if env.is_fenced(id) {
                token.cancel();
            }
        }
        let now = Instant::now();
        elsewhere.retain(|_, until| *until > now);
        let mut started = 0;
        let mut later = std::collections::VecDeque::new();
        while let Some((view, need)) = backlog.pop_front() {
            if running.len() >= max_runs && !running.contains_key(&view.id) && need != Need::Nothing {
                later.push_back((view, need));
                continue;
            }
            if let Some(token) = running.get(&view.id) {
                if need == Need::Cancel || view.has_cancel {
                    token.cancel();
                }
                continue;
            }
            if need == Need::Nothing || elsewhere.contains_key(&view.id) || invalid.contains_key(&view.id) {
                continue;
            }
            let key = (view.id.clone(), format!("{need:?}"));
            if a.once && !tried.insert(key) {
                continue;
            }
            if need == Need::Waiting && !a.once && tried.contains(&(view.id.clone(), "Waiting".into())) {
                continue;
            }
            tried.insert((view.id.clone(), "Waiting".into()));
            let token = CancelToken::new();
            if view.has_cancel {
                token.cancel();
            }
            running.insert(view.id.clone(), token.clone());
            let env = env.clone();
            let id = view.id.clone();
            info!(run = %id, need = ?need, "processing");
            let remote = remote.clone();
            tasks.spawn_blocking(move || work(env, remote, id, need, token));
            started += 1;
        }
        backlog = later;
        if first {
            first = false;
            say!("stella daemon: ready ({started} run(s) started)");
        }
        for path in &ignored {
            if reported.insert(path.clone()) {
                if path.matches('/').count() > 1 {
                    warn!(path = %path, "not a run file (a run directory holds request.yaml, cancel.yaml and the runner's files); ignored");
                } else {
                    warn!(path = %path, "not a run directory (run ids match ^[a-z0-9][a-z0-9._-]{{0,99}}$); ignored");
                }
            }
        }
        for (id, (why, _)) in &invalid {
            if reported.insert(format!("{id} invalid {why}")) {
                report_invalid(id, why);
            }
        }
        if a.once && started == 0 && tasks.is_empty() {
            if fresh && backlog.is_empty() {
                return Ok(0);
            }
            rescan = true;
            continue;
        }
        tokio::select! {
            Some(first) = tasks.join_next() => {
              let mut next = Some(first);
              while let Some(done) = next {
                if let Ok((id, end, release)) = done {
                    running.remove(&id);
                    if let Some(lease) = release {
                        to_release.push((id.clone(), lease));
                    }
                    if let TaskEnd::ClaimedElsewhere { holder, age_secs } = &end {
                        let lapse = a.lease.saturating_sub(Duration::from_secs(*age_secs)) + Duration::from_secs(1);
                        elsewhere.insert(id.clone(), Instant::now() + lapse);
                        tried.remove(&(id.clone(), "Waiting".to_string()));
                        if reported.insert(format!("{id} {holder}")) {
                            say!("run {id} is claimed by runner {holder}; left to it");
                        }
                    } else if let TaskEnd::Invalid(why) = &end {
                        let tip = scanned.as_ref().and_then(|f| f.tip);
                        invalid.insert(id.clone(), (why.clone(), tip));
                        if reported.insert(format!("{id} invalid {why}")) {
                            report_invalid(&id, why);
                        }
                    } else if let TaskEnd::Finished(Some(Outcome::Waiting { step, .. })) = &end {
                        // Said once per gate: re-checking a waiting run is not news.
                        if reported.insert(format!("{id} waiting {step}")) {
                            report(&id, end);
                        }
                    } else {
                        report(&id, end);
                    }
                }
                next = tasks.try_join_next();
              }
                // With a remote, results are exchanged each cycle; locally the backlog goes on.
                if remote.is_some() {
                    exchange_due = true;
                    if backlog.is_empty() {
                        rescan = true;
                    }
                }
            }
            Some(()) = rx.recv(), if !a.once => {
                // Let a burst of file events settle, then scan once.
                tokio::time::sleep(Duration::from_millis(20)).await;
                while rx.try_recv().is_ok() {}
                rescan = true;
                quiet = true;
            }
            _ = sigterm.recv() => return stop(env.clone(), a.kill_grace, "SIGTERM").await,
            _ = tokio::signal::ctrl_c() => return stop(env.clone(), a.kill_grace, "SIGINT").await,
            _ = tokio::time::sleep(retry_at.map_or(a.poll, |t| t.saturating_duration_since(Instant::now()).min(a.poll))), if !a.once => {
                rescan = true;
                quiet = true;
            }
            // A gate's expiry needs no commit: wake up at the deadline and judge it.
            _ = tokio::time::sleep(deadline.map_or(Duration::MAX, |d| d.duration_since(std::time::SystemTime::now()).unwrap_or_default() + Duration::from_millis(5))), if deadline.is_some() && !a.once => {
                tried.retain(|(_, need)| need != "Waiting");
                rescan = true;
            }
            else => {}
        }
    }
}

/// What an idle scan's result depends on besides the clock: the branch tip, and the journal
/// directory (a journal created or set aside). Journals grow only under this daemon's own
/// work, after which it scans anyway. Cheap: one ref read and one stat.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    tip: Option<gix::ObjectId>,
    journals: Option<std::time::SystemTime>,
}

fn fingerprint(env: &Environment) -> Fingerprint {
    let tip = env
        .ledger
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .tip()
        .ok()
        .flatten();
    let journals = std::fs::metadata(stella_engine::journal::dir(&env.git_dir))
        .and_then(|m| m.modified())
        .ok();
    Fingerprint { tip, journals }
}

/// Orders new runs differently on each runner (by a hash of the runner key and the run id,
/// as rendezvous hashing does), so runners sharing a remote do not all race for the same run
/// first; runs already under way come first.
fn spread(found: &mut [(runs::RunView, Need)], runner: &str) {
    use sha2::Digest;
    found.sort_by_cached_key(|(view, need)| {
        let fresh = *need == Need::Start;
        let rank = fresh.then(|| sha2::Sha256::digest(format!("{runner}\n{}", view.id).as_bytes()).to_vec());
        (fresh, rank)
    });
}

/// The earliest moment a waiting run's gate expires, or a chaos delay on its approvals ends.
fn next_deadline<'a>(views: impl Iterator<Item = &'a runs::RunView>) -> Option<std::time::SystemTime> {
    views
        .filter_map(|v| {
            let st = v.state();
            let gate = st.waiting_gate.as_deref()?;
            let ends = |kind: &str, key: &str| {
                let e = v
                    .events()
                    .iter()
                    .find(|e| e.kind == kind && e.step.as_deref() == Some(gate))?;
                let ms = e.get(key)?.as_u64()?;
                Some(humantime::parse_rfc3339(&e.ts).ok()? + Duration::from_millis(ms))
            };
            // Once a delay is over the gate is judged as usual: only one still to come counts.
            let delay = ends(stella_engine::chaos::EVENT, "durationMs").filter(|t| *t > std::time::SystemTime::now());
            ends("gate.waiting", "expiresAfterMs").into_iter().chain(delay).min()
        })
        .min()
}

fn report(id: &str, end: TaskEnd) {
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
fn report_invalid(id: &str, why: &runs::Invalid) {
    warn!(
        run = %id,
        file = %why.file,
        line = why.line,
        code = %why.code,
        reason = %why.message,
        "run is invalid and skipped; the other runs go on (`stella runs show {id}`)"
    );
}

/// Stops the daemon on a signal: ends the running steps (SIGTERM to their process groups,
/// SIGKILL after the grace), records nothing of their ends, and exits once no ledger commit is
/// under way. Interrupted runs resume from their journals at the next start.
async fn stop(env: Arc<Environment>, grace: Duration, signal: &'static str) -> Result<u8, Failure> {
    let ended = tokio::task::spawn_blocking(move || {
        let n = stella_engine::exec::shutdown(grace);
        // Holding the ledger means no commit of this process is half done.
        let guard = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
        (n, guard.git_dir().to_path_buf())
    })
    .await
    .map_err(|e| Failure::one(Code::Io, e.to_string()))?;
    say!(
        "stella daemon: stopped on {signal}; {} step(s) ended, their runs resume at the next start",
        ended.0
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(0)
}

/// The runs on the branch and what each needs, after checking history was not rewritten.
/// The runs found by a scan with what each needs, and the entries under runs/ that are not runs.
type Scan = (Vec<(runs::RunView, Need)>, Vec<String>);

fn scan(env: &Environment) -> Result<Scan, Failure> {
    let mut ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
    ledger.refresh();
    let Some(tip) = ledger.tip().map_err(|e| Failure::one(e.code(), e.to_string()))? else {
        return Ok((Vec::new(), Vec::new()));
    };
    check_history(&ledger, &env.git_dir, tip)?;
    let (views, ignored) = runs::scan(&ledger, tip).map_err(|e| Failure::one(e.code(), e.to_string()))?;
    Ok((
        views
            .into_iter()
            .map(|v| {
                let n = v.need();
                (v, n)
            })
            .collect(),
        ignored,
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

/// Watches the git refs and HEAD; every relevant change pokes the main loop.
fn watch(root: &Path, tx: mpsc::Sender<()>) -> Result<notify::RecommendedWatcher, Failure> {
    let git = root.join(".git");
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            // Only changes count: opening or reading files (our own scans do) must not wake us.
            let change = matches!(
                ev.kind,
                notify::EventKind::Create(_)
                    | notify::EventKind::Remove(_)
                    | notify::EventKind::Modify(
                        notify::event::ModifyKind::Data(_)
                            | notify::event::ModifyKind::Name(_)
                            | notify::event::ModifyKind::Any
                    )
                    | notify::EventKind::Access(notify::event::AccessKind::Close(notify::event::AccessMode::Write))
            );
            // Only what can move the branch: HEAD, packed-refs and refs/heads/. Lock files,
            // FETCH_HEAD and the like come and go with every fetch (ours too) and would wake
            // the daemon to fetch again, for ever.
            let relevant = change
                && ev.paths.iter().any(|p| {
                    let s = p.to_string_lossy();
                    !s.ends_with(".lock")
                        && (s.ends_with("/.git/HEAD")
                            || s.ends_with("/.git/packed-refs")
                            || s.contains("/.git/refs/heads/"))
                });
            if relevant {
                let _ = tx.try_send(());
            }
        }
    })
    .map_err(|e| Failure::one(Code::Io, format!("cannot watch {}: {e}", root.display())))?;
    let limit_hint = |e: notify::Error| {
        Failure::one(
            Code::Io,
            format!(
                "cannot watch {}: {e}; if the inotify watch limit is reached, raise fs.inotify.max_user_watches",
                git.display()
            ),
        )
    };
    watcher
        .watch(&git, notify::RecursiveMode::NonRecursive)
        .map_err(limit_hint)?;
    let heads = git.join("refs").join("heads");
    let _ = std::fs::create_dir_all(&heads);
    watcher
        .watch(&heads, notify::RecursiveMode::Recursive)
        .map_err(limit_hint)?;
    Ok(watcher)
}
