//! `stella daemon`: watches a repository (notify on the working tree's git refs, plus a slow
//! safety poll), finds run requests on the branch, and carries each forward on a bounded pool
//! of blocking workers. Owns the tokio runtime; the engine underneath is synchronous.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::Watcher;
use stella_engine::Code;
use stella_engine::exec::{CancelToken, Outcome};
use stella_engine::runs::{self, Environment, Need};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::cli::{Failure, repo};

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
}

pub fn run(a: Args) -> Result<u8, Failure> {
    let root = repo::find_root(&a.repo)?;
    let config = repo::config_at_head(&root)?;
    let key = repo::load_key(&root, a.key.as_deref())?;
    let ledger = repo::open_ledger(&root, &config)?;
    let file_secrets = match &a.secrets {
        Some(p) => stella_engine::secrets::Secrets::from_file(p)?,
        None => Default::default(),
    };
    println!(
        "stella daemon: repository {}, branch {}, runner key {}, limits maxRuns {} maxSteps {}, commit batch {} ms{}",
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
        if a.once { ", once" } else { "" }
    );
    let git_dir = ledger.git_dir().to_path_buf();
    let env = Arc::new(Environment {
        ledger: Mutex::new(ledger),
        git_dir: git_dir.clone(),
        key: Arc::new(key),
        file_secrets,
        kill_grace: a.kill_grace,
    });
    let remote = a.remote.as_ref().map(|name| {
        Arc::new(stella_engine::remote::Remote {
            root: root.clone(),
            name: name.clone(),
            branch: config.branch.clone(),
            pull_patterns: vec!["refs/pull/*/head".into(), "refs/merge-requests/*/head".into()],
            lease: a.lease,
        })
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::one(Code::Io, format!("cannot start the runtime: {e}")))?;
    rt.block_on(main_loop(env, root, config.max_runs, a, remote))
}

type Done = (String, Result<Option<Outcome>, String>);

type SharedRemote = Option<Arc<stella_engine::remote::Remote>>;

/// Fetch, bring the branch level with the remote, and push what the runner committed.
fn exchange(env: &Environment, remote: &stella_engine::remote::Remote) -> Result<(), Failure> {
    let fail = |e: stella_engine::remote::Error| Failure::one(e.code(), e.to_string());
    remote.fetch().map_err(fail)?;
    let mut ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
    remote.integrate(&mut ledger, &env.key).map_err(fail)?;
    ledger.refresh();
    remote.push(&mut ledger, &env.key).map_err(fail)?;
    ledger.refresh();
    // Pull requests are planned and noted, never executed.
    match remote.note_pull_requests(&ledger) {
        Ok(n) if n > 0 => info!(notes = n, "wrote plan notes on pull requests"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot write plan notes on pull requests"),
    }
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
    let mut deadline = None;
    let mut rescan = true;
    loop {
        // Scan when the last scan's work is used up or something changed; otherwise keep
        // starting what it found (a scan reads every run, so not one per finished run).
        let fresh = backlog.is_empty() || rescan;
        if fresh {
            if let Some(r) = &remote {
                let (env, r) = (env.clone(), r.clone());
                tokio::task::spawn_blocking(move || exchange(&env, &r))
                    .await
                    .map_err(|e| Failure::one(Code::Io, e.to_string()))??;
            }
            let views = {
                let env = env.clone();
                tokio::task::spawn_blocking(move || scan(&env))
                    .await
                    .map_err(|e| Failure::one(Code::Io, e.to_string()))??
            };
            deadline = next_deadline(views.0.iter().map(|(v, _)| v));
            backlog = views.0.into_iter().collect();
            ignored = views.1;
            rescan = false;
        }
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
            if need == Need::Nothing {
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
            tasks.spawn_blocking(move || {
                // With a remote, a run is executed only by the runner that holds its claim.
                let mut took_over = None;
                if let Some(r) = &remote {
                    match r.claim(&id, &env.key) {
                        Ok(stella_engine::remote::Claim::Lost { holder }) => {
                            return (id, Err(format!("claimed by runner {holder}; left alone")));
                        }
                        Ok(stella_engine::remote::Claim::TakenOver { from }) => {
                            info!(run = %id, from = %from, "took over a claim whose runner went silent");
                            took_over = Some(from);
                        }
                        Ok(stella_engine::remote::Claim::Won) => {}
                        Err(e) => return (id, Err(format!("cannot claim: {e}"))),
                    }
                }
                // While the run goes, keep the claim fresh so no other runner takes it over.
                let renewing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
                let renewer = remote.clone().map(|r| {
                    let (env, id, renewing) = (env.clone(), id.clone(), renewing.clone());
                    std::thread::spawn(move || {
                        let every = (r.lease / 3).max(Duration::from_millis(200));
                        let mut last = std::time::Instant::now();
                        while renewing.load(std::sync::atomic::Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(100));
                            if last.elapsed() >= every {
                                if let Err(e) = r.renew(&id, &env.key) {
                                    warn!(run = %id, error = %e, "cannot renew the claim");
                                }
                                last = std::time::Instant::now();
                            }
                        }
                    })
                });
                let result = runs::process(&env, &id, need, token, took_over.as_deref()).map_err(|e| e.to_string());
                renewing.store(false, std::sync::atomic::Ordering::SeqCst);
                if let Some(h) = renewer {
                    let _ = h.join();
                }
                if let Some(r) = &remote {
                    let _ = exchange(&env, r);
                }
                (id, result)
            });
            started += 1;
        }
        backlog = later;
        if first {
            first = false;
            println!("stella daemon: ready ({started} run(s) started)");
        }
        for path in &ignored {
            if reported.insert(path.clone()) {
                warn!(path = %path, "not a run directory (run ids match ^[a-z0-9][a-z0-9._-]{{0,99}}$); ignored");
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
            Some(done) = tasks.join_next() => {
                if let Ok((id, result)) = done {
                    running.remove(&id);
                    report(&id, result);
                }
                // With a remote, results are exchanged each cycle; locally the backlog goes on.
                if remote.is_some() && backlog.is_empty() {
                    rescan = true;
                }
            }
            Some(()) = rx.recv(), if !a.once => {
                // Let a burst of file events settle, then scan once.
                tokio::time::sleep(Duration::from_millis(20)).await;
                while rx.try_recv().is_ok() {}
                tried.retain(|(_, need)| need != "Waiting");
                rescan = true;
            }
            _ = tokio::time::sleep(a.poll), if !a.once => {
                tried.retain(|(_, need)| need != "Waiting");
                rescan = true;
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

/// The earliest moment a waiting run's gate expires.
fn next_deadline<'a>(views: impl Iterator<Item = &'a runs::RunView>) -> Option<std::time::SystemTime> {
    views
        .filter_map(|v| {
            let st = v.state();
            let gate = st.waiting_gate.as_deref()?;
            let waiting = v
                .events()
                .iter()
                .find(|e| e.kind == "gate.waiting" && e.step.as_deref() == Some(gate))?;
            let ttl = waiting.get("expiresAfterMs")?.as_u64()?;
            Some(humantime::parse_rfc3339(&waiting.ts).ok()? + Duration::from_millis(ttl))
        })
        .min()
}

fn report(id: &str, result: Result<Option<Outcome>, String>) {
    match result {
        Ok(Some(Outcome::Succeeded)) => println!("run {id} succeeded"),
        Ok(Some(Outcome::Failed { code, message })) => println!("run {id} failed: {message} [{code}]"),
        Ok(Some(Outcome::Cancelled)) => println!("run {id} cancelled"),
        Ok(Some(Outcome::Waiting { step, .. })) => println!("run {id} waiting at gate {step}"),
        Ok(None) => {}
        Err(e) => eprintln!("error[{}]: run {id}: {e}", Code::Io),
    }
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
    let (views, ignored) = runs::scan(&ledger, tip).map_err(|e| Failure::one(Code::Io, e))?;
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
    let file = git_dir.join("stella").join("last-seen");
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
    runs::record_seen(git_dir, tip);
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
            let relevant = change
                && ev.paths.iter().any(|p| {
                    let s = p.to_string_lossy();
                    !s.contains("/.git/stella/")
                        && !s.ends_with("/index")
                        && !s.ends_with("/index.lock")
                        && !s.contains("/objects/")
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
