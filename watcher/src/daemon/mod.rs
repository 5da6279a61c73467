//! `stella daemon`: watches a repository (notify on the working tree's git refs, plus a slow
//! safety poll), finds run requests on the branch, and carries each forward on a bounded pool
//! of blocking workers. This room sets the daemon up (key, ledger, environment, remote,
//! repairs at start, the housekeeping task, the `Telemetry` it feeds) and owns the tokio
//! runtime; the loop is `cycle::Daemon`. The engine
//! underneath is synchronous.

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

mod cycle;
mod exchange;
mod fire;
mod maintain;
mod scan;
mod tasks;
mod watch;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stella_engine::Code;
use stella_engine::chaos::Chaos;
use stella_engine::remote::Remote;
use stella_engine::runs::{self, Environment};
use tracing::warn;

use crate::failure::{Failure, Outcome};
use crate::repo;
use crate::telemetry::Telemetry;

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
    /// Serve the read-only HTTP edge beside the runner.
    pub http: Option<crate::http::Settings>,
}

pub fn run(a: Args) -> Result<Outcome, Failure> {
    let telemetry = Arc::new(Telemetry::new(a.remote.is_some()));
    run_with(a, telemetry)
}

/// As `run`, feeding `telemetry` (the metrics and health the HTTP edge serves): each scan sets
/// its gauges and readiness, each exchange its remote state, and the runs' events reach it as
/// the engine's `runs::Observer`.
pub fn run_with(a: Args, telemetry: Arc<Telemetry>) -> Result<Outcome, Failure> {
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
    // Checked and bound before anything else happens: a refused address is exit 2 at once.
    let http = a
        .http
        .as_ref()
        .map(|h| {
            crate::http::Server::bind(
                h,
                root.clone(),
                a.key.clone(),
                crate::http::Follow::Notify,
                Some(telemetry.clone()),
            )
        })
        .transpose()?;
    let config = repo::config_at_head(&root)?;
    let key = repo::load_key(&root, a.key.as_deref())?;
    let mut ledger = repo::open_ledger(&root, &config)?;
    if let Some(r) = a.remote.as_ref().filter(|_| config.ledger_branch() != config.branch) {
        // With a remote, requests come from the server's branch as last fetched.
        ledger.set_watched(&format!("refs/remotes/{r}/{}", config.branch))?;
    }
    repair_at_start(&mut ledger, &key);
    let file_secrets = match &a.secrets {
        Some(p) => stella_engine::secrets::Secrets::from_file(p)?,
        None => Default::default(),
    };
    for warning in crate::webhooks::missing_secrets(&config, &file_secrets) {
        warn!("{warning}");
        say_err!("stella daemon: warning: {warning}");
    }
    say!(
        "stella daemon: repository {}, branch {}{}, runner key {}, limits maxRuns {} maxSteps {}, commit batch {} ms{}{}",
        root.display(),
        config.branch,
        if config.ledger_branch() == config.branch {
            String::new()
        } else {
            format!(", ledger branch {}", config.ledger_branch())
        },
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
        // The age identities SOPS files are opened with (docs/secrets.md).
        std::env::var_os("SOPS_AGE_KEY_FILE")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
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
    let (notifier, notify_threads) = crate::webhooks::Notifier::new(&git_dir)
        .map_err(|e| Failure::one(Code::Io, format!("cannot open the notification outbox: {e}")))?;
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
        observer: Some(Arc::new(crate::webhooks::Both(telemetry.clone(), notifier.clone()))),
        first_parents: Default::default(),
        tokens: Default::default(),
        commits: Default::default(),
    });
    notify_threads
        .start(env.clone(), telemetry.clone(), crate::webhooks::Settings::from_env())
        .map_err(|e| Failure::one(Code::Io, format!("cannot start the notifier: {e}")))?;
    let remote = a.remote.as_ref().map(|name| {
        Arc::new(
            Remote::new(
                root.clone(),
                name.clone(),
                config.ledger_branch().to_string(),
                config.pull_patterns.clone(),
                a.lease,
            )
            .watching(&config.branch),
        )
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::one(Code::Io, format!("cannot start the runtime: {e}")))?;
    let settings = cycle::Settings {
        once: a.once,
        poll: a.poll,
        kill_grace: a.kill_grace,
        lease: a.lease,
        max_runs: config.max_runs,
    };
    let housekeeping = maintain::Housekeeping {
        root: root.clone(),
        branch: config.ledger_branch().to_string(),
        tracking: a
            .remote
            .as_ref()
            .map(|r| format!("refs/remotes/{r}/{}", config.ledger_branch())),
    };
    if !a.once {
        rt.spawn(maintain::background(housekeeping.clone(), a.poll));
    }
    if let Some(server) = http {
        say!("stella daemon: http on http://{}", server.local_addr());
        rt.spawn(async move {
            if let Err(e) = server.run().await {
                warn!(error = ?e, "http: the server stopped");
            }
        });
    }
    match rt.block_on(cycle::Daemon::new(env, remote, settings, telemetry).run(&root))? {
        cycle::End::Idle => {
            // Notifications of what ran get a moment to go out (they stay queued otherwise).
            notifier.drain(std::time::Duration::from_secs(10));
            // Nothing left to run: the moment for housekeeping.
            maintain::pass(&housekeeping, None);
            Ok(Outcome::Done)
        }
        cycle::End::Stopped => {
            // Workers still busy after a stop are not waited for: their steps were ended, and
            // the runs resume from their journals at the next start.
            rt.shutdown_background();
            Ok(Outcome::Done)
        }
    }
}

/// Before anything else: ref locks a killed process left removed (they would fail every
/// later fetch and commit), the index and working tree made to agree with the branch tip for
/// every runner path (a runner killed between moving the branch and updating the index
/// leaves them stale), then any damage a person's commit did to runner files healed. Either
/// failing is reported and the daemon goes on: neither blocks executing runs.
fn repair_at_start(ledger: &mut stella_engine::ledger::Ledger, key: &stella_engine::keys::SshKey) {
    // Secret files (`as: file`) a runner killed during a step left behind: wiped before any run.
    let secret_files = stella_engine::runs::secret_files_root(ledger.git_dir());
    let wiped = stella_engine::exec::clear_secret_files(&secret_files);
    if wiped > 0 {
        warn!(
            files = wiped,
            "secret files left by a stopped runner were wiped at start"
        );
        say!("stella daemon: wiped {wiped} secret file(s) left by a stopped runner");
    }
    for lock in stella_engine::ledger::remove_stale_ref_locks(ledger.git_dir()) {
        warn!(lock = %lock.display(), "a ref lock left by a killed git process was removed at start");
        say!("stella daemon: removed a stale ref lock: {}", lock.display());
    }
    // Comparing every runner file with the tip costs a stat per file of the history: skipped
    // when neither the tip nor git's index changed since a check left them agreeing (what a
    // runner killed between moving the branch and updating the index leaves changes both).
    let agreed = ledger.git_dir().join("stella").join("worktree-checked");
    let mark = worktree_mark(ledger);
    if mark.is_none() || std::fs::read_to_string(&agreed).ok() != mark {
        match ledger.repair_worktree() {
            Ok(fixed) => {
                for r in fixed {
                    warn!(path = %r.path, what = %r.what, "index and working tree repaired at start");
                    say!("stella daemon: repaired {}: {}", r.path, r.what);
                }
                if let Some(mark) = worktree_mark(ledger) {
                    let _ = std::fs::write(&agreed, mark);
                }
            }
            Err(e) => warn!(error = %e, "cannot repair the index and working tree at start"),
        }
    }
    // Finding damage walks the history after the ledger checkpoint (the whole history without
    // one); a tip already found whole (the file below) is not walked again, so a daemon
    // restarted on an unchanged branch starts at once.
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
    let checked = match stella_engine::ledger::heal::check_and_heal(ledger, key) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot heal the ledger at start");
            return;
        }
    };
    if let Some(e) = &checked.refused {
        warn!(error = %e, "the ledger checkpoint was not used; the whole history was verified");
        say_err!("stella daemon: warning: {e}; verified the whole history instead");
    }
    whole(ledger);
    if let Some(h) = checked.healing {
        warn!(commit = %h.commit, damaged_by = ?h.damaged_by, paths = ?h.paths, "ledger healed at start");
        say!(
            "stella daemon: ledger healed: {} runner file{} restored by {} after {}",
            h.paths.len(),
            if h.paths.len() == 1 { "" } else { "s" },
            h.commit.to_hex_with_len(12),
            h.damaged_by.join(", ")
        );
    }
}

#[cfg(test)]
mod tests;

/// The branch tip and the fingerprint of git's index file (length, modification time in ns,
/// inode): what the index and working tree were last found agreeing at.
fn worktree_mark(ledger: &stella_engine::ledger::Ledger) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let tip = ledger.tip().ok().flatten()?;
    let m = std::fs::metadata(ledger.git_dir().join("index")).ok()?;
    Some(format!(
        "{tip} {} {} {} {}\n",
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino()
    ))
}
