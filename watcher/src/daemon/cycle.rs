//! The daemon's loop as a `Daemon` value: each cycle exchanges with the remote when due,
//! scans the branch when something may have changed, starts what the scan found on blocking
//! workers (at most `maxRuns` at once), and sleeps until a worker ends, a ref changes, the
//! poll or a gate deadline comes, or a signal stops it. Tells its `Telemetry` of each scan
//! and exchange. Executes nothing itself.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use stella_engine::Code;
use stella_engine::exec::{CancelToken, Outcome as RunOutcome};
use stella_engine::remote::{self, Remote};
use stella_engine::runs::{self, Environment, Need};
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tracing::{info, warn};

use super::exchange::{exchange, release_claims};
use super::scan::{self, Fingerprint};
use super::tasks::{Done, TaskEnd, report, report_invalid, work};
use super::watch::watch;
use crate::failure::Failure;
use crate::telemetry::Telemetry;

/// What the command line fixes for the whole life of the daemon.
pub struct Settings {
    /// Process what can progress, wait for it, and end.
    pub once: bool,
    pub poll: Duration,
    pub kill_grace: Duration,
    pub lease: Duration,
    pub max_runs: usize,
}

/// Why the loop ended.
pub enum End {
    /// `--once` found nothing more that can progress.
    Idle,
    /// A signal stopped it.
    Stopped,
}

/// The daemon between two cycles: what runs, what the last scan found, what was said.
pub struct Daemon {
    env: Arc<Environment>,
    remote: Option<Arc<Remote>>,
    settings: Settings,
    running: HashMap<String, CancelToken>,
    tasks: JoinSet<Done>,
    /// (run, need) pairs already started: once each with `--once`.
    tried: HashSet<(String, String)>,
    /// What each run started was read at: its `runs/<id>` and `approvals/<id>` trees and its
    /// next deadline. A waiting run is re-checked only when one of them changed or the
    /// deadline passed (its trust files, those of its trust commit, never change).
    waited: HashMap<String, Checked>,
    /// The local runs index: the scans read only the runs that changed.
    index: Arc<std::sync::Mutex<runs::Index>>,
    /// What was said once and is not said again.
    reported: HashSet<String>,
    said_ready: bool,
    /// Runs found by the last scan (those not settled) and not started yet, with what each needs.
    backlog: VecDeque<(runs::Summary, Need)>,
    /// Entries under runs/ that are not runs or not run files, and sharded duplicates of flat runs.
    ignored: Vec<String>,
    /// Runs whose files cannot be read as a run, with the branch tip at which they were found
    /// so: skipped (every other run goes on) until the branch moves.
    invalid: HashMap<String, (runs::Invalid, Option<gix::ObjectId>)>,
    /// The next gate expiry (or chaos delay end) of a waiting run.
    deadline: Option<SystemTime>,
    /// Whether the next cycle must scan whatever the backlog holds.
    rescan: bool,
    /// Whether the wake-up asks only "did anything change?" (the safety poll, a file event):
    /// then an unchanged branch and journals need no scan.
    quiet: bool,
    /// Runs another runner holds, with when their claim could lapse.
    elsewhere: HashMap<String, Instant>,
    /// The remote could not be reached: when to try again, and the wait after that.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// What the last scan saw.
    scanned: Option<Fingerprint>,
    /// Whether the last scan found work (a failed commit to flush, a run to recover): then the
    /// next poll scans again even if nothing moved.
    had_work: bool,
    /// Runs finished since the last exchange with the remote: their results wait to be pushed.
    exchange_due: bool,
    /// Claims of runs waiting at a gate, released after the next successful exchange.
    to_release: Vec<(String, String)>,
    /// Told of each scan and exchange (the runs' events reach it through the environment).
    telemetry: Arc<Telemetry>,
    /// The schedules' clock, and the runs the last scan found not settled.
    clock: super::fire::Clock,
    live: Vec<String>,
}

impl Daemon {
    pub fn new(
        env: Arc<Environment>,
        remote: Option<Arc<Remote>>,
        settings: Settings,
        telemetry: Arc<Telemetry>,
    ) -> Daemon {
        let index = runs::Index::open(&env.git_dir, &env.key);
        let once = settings.once;
        Daemon {
            env,
            remote,
            settings,
            running: HashMap::new(),
            tasks: JoinSet::new(),
            tried: HashSet::new(),
            waited: HashMap::new(),
            index: Arc::new(std::sync::Mutex::new(index)),
            reported: HashSet::new(),
            said_ready: false,
            backlog: VecDeque::new(),
            ignored: Vec::new(),
            invalid: HashMap::new(),
            deadline: None,
            rescan: true,
            quiet: false,
            elsewhere: HashMap::new(),
            retry_at: None,
            backoff: Duration::from_secs(1),
            scanned: None,
            had_work: true,
            exchange_due: false,
            to_release: Vec::new(),
            telemetry,
            clock: super::fire::Clock::new(once.then(jiff::Timestamp::now)),
            live: Vec::new(),
        }
    }

    /// Runs cycles until `--once` has nothing left to do or a signal stops the daemon.
    pub async fn run(mut self, root: &Path) -> Result<End, Failure> {
        let once = self.settings.once;
        let (tx, mut rx) = mpsc::channel::<()>(64);
        let _watcher = if once { None } else { Some(watch(root, tx.clone())?) };
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::one(Code::Io, format!("cannot handle SIGTERM: {e}")))?;
        loop {
            // Scan when the last scan's work is used up or something changed; otherwise keep
            // starting what it found (a scan reads every run, so not one per finished run).
            let fresh = self.backlog.is_empty() || self.rescan;
            if !fresh {
                self.push_finished().await;
            }
            self.exchange_due = false;
            if fresh {
                self.refresh().await?;
            }
            self.stop_fenced();
            let started = self.start_backlog();
            if !self.said_ready {
                self.said_ready = true;
                say!("stella daemon: ready ({started} run(s) started)");
            }
            self.report_skipped();
            if once && started == 0 && self.tasks.is_empty() {
                if fresh && self.backlog.is_empty() {
                    return Ok(End::Idle);
                }
                self.rescan = true;
                continue;
            }
            let poll = self.retry_at.map_or(self.settings.poll, |t| {
                t.saturating_duration_since(Instant::now()).min(self.settings.poll)
            });
            let until_slot = self.clock.until_next();
            let deadline = self.deadline;
            let until_deadline = deadline.map_or(Duration::MAX, |d| {
                d.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_millis(5)
            });
            tokio::select! {
                Some(first) = self.tasks.join_next() => self.finished(first),
                Some(()) = rx.recv(), if !once => {
                    // Let a burst of file events settle, then scan once.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    while rx.try_recv().is_ok() {}
                    self.rescan = true;
                    self.quiet = true;
                }
                _ = sigterm.recv() => return self.stop("SIGTERM").await,
                _ = tokio::signal::ctrl_c() => return self.stop("SIGINT").await,
                _ = tokio::time::sleep(poll), if !once => {
                    self.rescan = true;
                    self.quiet = true;
                }
                // A schedule's slot needs no commit either: wake up for it and fire it.
                _ = tokio::time::sleep(until_slot.unwrap_or_default()), if until_slot.is_some() && !once => {
                    self.rescan = true;
                }
                // A gate's expiry needs no commit: wake up at the deadline and judge it.
                _ = tokio::time::sleep(until_deadline), if deadline.is_some() && !once => {
                    self.rescan = true;
                }
                else => {}
            }
        }
    }

    /// One exchange with the remote on a blocking worker, then the release of the claims of
    /// runs left waiting. The outer error is a worker that died.
    async fn exchange(&mut self, remote: &Arc<Remote>) -> Result<Result<(), remote::Error>, Failure> {
        let (env, r, release) = (self.env.clone(), remote.clone(), std::mem::take(&mut self.to_release));
        let done = tokio::task::spawn_blocking(move || exchange(&env, &r).map(|()| release_claims(&r, release)))
            .await
            .map_err(died)?;
        self.telemetry.exchanged(done.is_ok());
        Ok(done)
    }

    /// Pushes what finished while the backlog is still being worked through.
    async fn push_finished(&mut self) {
        if !self.exchange_due {
            return;
        }
        let Some(r) = self.remote.clone() else { return };
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if let Ok(Err(e)) = self.exchange(&r).await {
            warn!(error = %e, "cannot exchange with the remote; retried at the next cycle");
        }
    }

    /// Exchanges with the remote, when there is one; false while it cannot be reached (then
    /// it is tried again after a growing wait). A diverged branch needs a person, and
    /// `--once` reports whatever failed: both stop the daemon.
    async fn reach_remote(&mut self) -> Result<bool, Failure> {
        let Some(r) = self.remote.clone() else {
            return Ok(true);
        };
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return Ok(false);
        }
        match self.exchange(&r).await? {
            Ok(()) => {
                if self.retry_at.take().is_some() {
                    say!("stella daemon: the remote answers again");
                }
                self.backoff = Duration::from_secs(1);
                Ok(true)
            }
            Err(e) if self.settings.once || e.code() == Code::BranchDiverged => Err(e.into()),
            Err(e) => {
                let backoff = self.backoff;
                warn!(error = %e, retry_in = ?backoff, "cannot exchange with the remote; runs wait until it answers");
                self.retry_at = Some(Instant::now() + backoff);
                self.backoff = (backoff * 2).min(Duration::from_secs(60));
                Ok(false)
            }
        }
    }

    /// Exchanges with the remote and scans the branch into the backlog; without the remote no
    /// run can be claimed, so nothing starts until it answers.
    async fn refresh(&mut self) -> Result<(), Failure> {
        if self.reach_remote().await? {
            let live = self.live.iter().chain(self.running.keys()).cloned().collect();
            // A fired slot's request goes to the remote before anything claims its run: a
            // runner that loses the race for the slot drops its request there.
            if self.clock.fire(&self.env, live).await? > 0 && self.remote.is_some() {
                self.reach_remote().await?;
            }
            self.scan().await?;
        } else {
            self.backlog.clear();
        }
        self.rescan = false;
        self.quiet = false;
        Ok(())
    }

    /// Scans the branch, unless the wake-up was quiet, nothing is under way and nothing moved
    /// since the last scan (it would find what it found then).
    async fn scan(&mut self) -> Result<(), Failure> {
        let seen = Some(scan::fingerprint(&self.env));
        let idle = !self.had_work && self.elsewhere.is_empty() && self.tasks.is_empty() && self.backlog.is_empty();
        if self.quiet && idle && seen == self.scanned {
            self.telemetry.unchanged();
            return Ok(());
        }
        self.scanned = seen;
        let (env, index) = (self.env.clone(), self.index.clone());
        let (mut found, ignored) = tokio::task::spawn_blocking(move || scan::scan(&env, &index))
            .await
            .map_err(died)??;
        self.telemetry.scanned(found.iter().map(|(v, _)| v));
        self.deadline = scan::next_deadline(found.iter().map(|(v, _)| v));
        self.had_work = found.iter().any(|(_, n)| !matches!(n, Need::Nothing | Need::Waiting));
        if self.remote.is_some() {
            scan::spread(&mut found, &self.env.key.fingerprint());
        }
        let tip = self.scanned.as_ref().and_then(|f| f.tip);
        self.invalid.retain(|_, (_, at)| *at == tip);
        for (view, _) in &found {
            if let Some(why) = &view.invalid {
                self.invalid.insert(view.id.clone(), (why.clone(), tip));
            }
        }
        self.live = found.iter().map(|(v, _)| v.id.clone()).collect();
        self.backlog = found.into_iter().collect();
        self.ignored = ignored;
        Ok(())
    }

    /// Runs another runner took over: stop this runner's work on them.
    fn stop_fenced(&mut self) {
        for (id, token) in &self.running {
            if self.env.is_fenced(id) {
                token.cancel();
            }
        }
    }

    /// Starts what the backlog holds, as far as `maxRuns` allows; passes cancels on to runs
    /// under way. Returns how many runs were started.
    fn start_backlog(&mut self) -> usize {
        let now = Instant::now();
        self.elsewhere.retain(|_, until| *until > now);
        let mut started = 0;
        let mut later = VecDeque::new();
        while let Some((view, need)) = self.backlog.pop_front() {
            if self.running.len() >= self.settings.max_runs
                && !self.running.contains_key(&view.id)
                && need != Need::Nothing
            {
                later.push_back((view, need));
                continue;
            }
            if let Some(token) = self.running.get(&view.id) {
                if need == Need::Cancel || view.facts.has_cancel {
                    token.cancel();
                }
                continue;
            }
            if need == Need::Nothing || self.elsewhere.contains_key(&view.id) || self.invalid.contains_key(&view.id) {
                continue;
            }
            let key = (view.id.clone(), format!("{need:?}"));
            if self.settings.once && !self.tried.insert(key) {
                continue;
            }
            let checked = Checked {
                tree: view.tree,
                approvals: view.approvals,
                // One already passed is judged now, and then no longer a reason to re-check.
                deadline: view
                    .facts
                    .deadline(SystemTime::now())
                    .filter(|d| *d > SystemTime::now()),
            };
            let unchanged = self.waited.get(&view.id).is_some_and(|was| was.same(&checked));
            if need == Need::Waiting && !self.settings.once && unchanged {
                continue;
            }
            self.waited.insert(view.id.clone(), checked);
            let token = CancelToken::new();
            if view.facts.has_cancel {
                token.cancel();
            }
            self.running.insert(view.id.clone(), token.clone());
            let (env, remote, id) = (self.env.clone(), self.remote.clone(), view.id.clone());
            info!(run = %id, need = ?need, "processing");
            self.tasks.spawn_blocking(move || work(env, remote, id, need, token));
            started += 1;
        }
        self.backlog = later;
        started
    }

    /// Says once about each entry under runs/ that is not a run, and each invalid run.
    fn report_skipped(&mut self) {
        for path in &self.ignored {
            if self.reported.insert(path.clone()) {
                let duplicate = stella_engine::layout::classify(path).is_some_and(|(_, dir, rest)| {
                    rest.is_empty() && dir.layout == stella_engine::layout::Layout::Sharded
                });
                if duplicate {
                    warn!(path = %path, "a run also in the flat layout (runs/<id>/, which wins); ignored");
                } else if stella_engine::layout::classify(path).is_some_and(|(_, _, rest)| !rest.is_empty()) {
                    warn!(path = %path, "not a run file (a run directory holds request.yaml, cancel.yaml and the runner's files); ignored");
                } else {
                    warn!(path = %path, "not a run directory (runs/_<xx>/<id>/ with <xx> the first two hex digits of the id's SHA-256, or runs/<id>/; run ids match ^[a-z0-9][a-z0-9._-]{{0,99}}$); ignored");
                }
            }
        }
        for (id, (why, _)) in &self.invalid {
            if self.reported.insert(format!("{id} invalid {why}")) {
                report_invalid(id, why);
            }
        }
    }

    /// Takes in `first` and every other piece of work that has ended meanwhile.
    fn finished(&mut self, first: Result<Done, JoinError>) {
        let mut next = Some(first);
        while let Some(done) = next {
            if let Ok((id, end, release)) = done {
                self.ended(id, end, release);
            }
            next = self.tasks.try_join_next();
        }
        // Runner commits in quick succession leave git's index behind (see the engine's
        // `ledger::worktree`); once no run is under way it catches up.
        if self.tasks.is_empty() {
            let mut ledger = self.env.ledger.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = ledger.flush_index() {
                warn!(error = %e, "cannot update git's index for the runner's last commits; tried again at the next commit");
            }
        }
        // With a remote, results are exchanged each cycle; locally the backlog goes on.
        if self.remote.is_some() {
            self.exchange_due = true;
            if self.backlog.is_empty() {
                self.rescan = true;
            }
        }
    }

    /// Notes how the work on run `id` ended and says so (once where it would repeat).
    fn ended(&mut self, id: String, end: TaskEnd, release: Option<String>) {
        self.running.remove(&id);
        if let Some(lease) = release {
            self.to_release.push((id.clone(), lease));
        }
        match &end {
            TaskEnd::ClaimedElsewhere { holder, age_secs } => {
                let lapse = self.settings.lease.saturating_sub(Duration::from_secs(*age_secs)) + Duration::from_secs(1);
                self.elsewhere.insert(id.clone(), Instant::now() + lapse);
                self.waited.remove(&id);
                if self.reported.insert(format!("{id} {holder}")) {
                    say!("run {id} is claimed by runner {holder}; left to it");
                }
            }
            TaskEnd::Invalid(why) => {
                let tip = self.scanned.as_ref().and_then(|f| f.tip);
                self.invalid.insert(id.clone(), (why.clone(), tip));
                if self.reported.insert(format!("{id} invalid {why}")) {
                    report_invalid(&id, why);
                }
            }
            // Said once per gate: re-checking a waiting run is not news.
            TaskEnd::Finished(Some(RunOutcome::Waiting { step, .. })) => {
                if self.reported.insert(format!("{id} waiting {step}")) {
                    report(&id, end);
                }
            }
            _ => {
                // Whatever did not leave the run waiting is tried again at the next scan.
                self.waited.remove(&id);
                report(&id, end)
            }
        }
    }

    /// Stops the daemon on a signal: ends the running steps (SIGTERM to their process groups,
    /// SIGKILL after the grace), records nothing of their ends, and returns once no ledger
    /// commit is under way. Interrupted runs resume from their journals at the next start.
    async fn stop(self, signal: &'static str) -> Result<End, Failure> {
        let (env, grace) = (self.env.clone(), self.settings.kill_grace);
        let ended = tokio::task::spawn_blocking(move || {
            let n = stella_engine::exec::shutdown(grace);
            // Holding the ledger means no commit of this process is half done.
            drop(env.ledger.lock().unwrap_or_else(|p| p.into_inner()));
            n
        })
        .await
        .map_err(died)?;
        say!("stella daemon: stopped on {signal}; {ended} step(s) ended, their runs resume at the next start");
        Ok(End::Stopped)
    }
}

/// What a run was started at (see `Daemon::waited`).
struct Checked {
    tree: gix::ObjectId,
    approvals: Option<gix::ObjectId>,
    deadline: Option<SystemTime>,
}

impl Checked {
    /// Whether a re-check at `now` would see what the last one saw: the same run directory
    /// (its cancel file included), the same approvals, and no deadline passed since.
    fn same(&self, now: &Checked) -> bool {
        self.tree == now.tree && self.approvals == now.approvals && self.deadline.is_none_or(|d| d > SystemTime::now())
    }
}

/// A blocking worker of the daemon's own that panicked.
fn died(e: JoinError) -> Failure {
    Failure::one(Code::Io, e.to_string())
}
