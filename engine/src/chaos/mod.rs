//! Chaos hooks (`stella daemon --chaos FILE`, DESIGN section 9): a runner-local plan of faults
//! to inject — kill the runner at a named point, pause a run before a step, start a step
//! without network, look at a gate's approvals only after a delay — and the decision, at each
//! hook point, whether a rule fires. Owns the chaos file's format (`file`) and the firing
//! (`fire`); never reads the repository, and never decides anything about a run beyond
//! "inject now".
//!
//! The executor and the run lifecycle get the plan through their config structs
//! (`ExecConfig::chaos`, `Environment::chaos`). The points inside a ledger commit and before a
//! push have no config struct to ride on: they ask the plan installed for the whole process
//! (`install`), which only `stella daemon --chaos` does.

mod file;
mod fire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::json;

use crate::event::Event;

use file::Rule;

/// The event every injection is recorded as.
pub const EVENT: &str = "pack.chaos.injected";

/// Where a rule can fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Before a run step's attempt starts (before `step.started`).
    BeforeStepStart,
    /// The step's process is being started (`step.started` recorded).
    AfterStepStart,
    /// The step's process exited; its end event is not recorded yet.
    BeforeStepEnd,
    /// The step's final end event is recorded.
    AfterStepEnd,
    /// In a runner commit: the branch moved, the index and working tree not yet updated.
    BetweenBranchMoveAndIndexUpdate,
    /// In a runner commit: its objects are written, the branch has not moved.
    MidCommit,
    /// With `--remote`: the branch is committed locally, `git push` is about to run.
    MidPush,
    /// An approval gate is reached (or re-checked).
    GateReached,
}

const POINTS: &[(&str, Point)] = &[
    ("before-step-start", Point::BeforeStepStart),
    ("after-step-start", Point::AfterStepStart),
    ("before-step-end", Point::BeforeStepEnd),
    ("after-step-end", Point::AfterStepEnd),
    (
        "between-branch-move-and-index-update",
        Point::BetweenBranchMoveAndIndexUpdate,
    ),
    ("mid-commit", Point::MidCommit),
    ("mid-push", Point::MidPush),
    ("gate-reached", Point::GateReached),
];

impl Point {
    pub fn as_str(self) -> &'static str {
        POINTS.iter().find(|(_, p)| *p == self).map_or("", |(n, _)| n)
    }

    /// Points without a step (inside a commit, before a push).
    fn has_step(self) -> bool {
        !matches!(
            self,
            Point::BetweenBranchMoveAndIndexUpdate | Point::MidCommit | Point::MidPush
        )
    }
}

/// What a rule does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The runner SIGKILLs itself.
    KillRunner,
    /// The run waits this long before the step starts.
    Pause { ms: u64 },
    /// The step runs in a network namespace with only loopback.
    DropNetwork,
    /// The gate's approvals are not looked at until this long after it was reached.
    DelayApprovals { ms: u64 },
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::KillRunner => "kill-runner",
            Action::Pause { .. } => "pause",
            Action::DropNetwork => "drop-network",
            Action::DelayApprovals { .. } => "delay-approvals",
        }
    }

    /// How long a pause or delay lasts; none for the other actions.
    pub fn ms(self) -> Option<u64> {
        match self {
            Action::Pause { ms } | Action::DelayApprovals { ms } => Some(ms),
            _ => None,
        }
    }
}

const ACTIONS: &[&str] = &["kill-runner", "pause", "drop-network", "delay-approvals"];

/// Where a hook is: the run and step, when the point has them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ctx<'a> {
    pub run: Option<&'a str>,
    pub step: Option<&'a str>,
}

/// A rule that fired: what to do, and which rule (its index in the file) said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injection {
    pub rule: usize,
    pub action: Action,
    pub point: Point,
}

impl Injection {
    /// The `pack.chaos.injected` event recording this injection (before it happens).
    pub fn event(&self, step: Option<&str>) -> Event {
        let mut data = json!({
            "action": self.action.as_str(), "point": self.point.as_str(), "rule": self.rule,
        });
        if let Some(s) = step {
            data["step"] = json!(s);
        }
        if let Some(ms) = self.action.ms() {
            data["durationMs"] = json!(ms);
        }
        let mut e = Event::new(EVENT)
            .level("warn")
            .msg(format!("chaos: {} at {}", self.action.as_str(), self.point.as_str()))
            .data(data);
        if let Some(s) = step {
            e = e.step(s);
        }
        e
    }
}

#[derive(Debug)]
struct Counters {
    /// Per rule: occurrences that matched its point and selectors, and how often it fired.
    seen: Vec<u64>,
    fired: Vec<u64>,
    rng: u64,
    /// Per (run, gate): whether a delay-approvals rule fired there, and which.
    delayed: HashMap<(String, String), Option<Injection>>,
}

/// A parsed chaos file and what it has done so far in this process.
#[derive(Debug)]
pub struct Chaos {
    rules: Vec<Rule>,
    counters: Mutex<Counters>,
    /// The runner-local chaos log (`.git/stella/chaos.ndjson` for the daemon).
    log: Option<PathBuf>,
}

impl Chaos {
    /// Also appends every injection to `path` (one JSON line each, synced).
    #[must_use]
    pub fn with_log(mut self, path: PathBuf) -> Chaos {
        self.log = Some(path);
        self
    }

    /// How many rules the file has.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The runner dies at once, as in a power cut of one process: SIGKILL to itself.
pub fn kill_runner() -> ! {
    // SAFETY: signalling our own process; nothing is shared.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Makes the runner die as `cmd`'s process starts: its child, between fork and exec, sends
/// the runner SIGKILL (a bare system call), then goes on to run the step. So the step is
/// started for sure and the runner is gone for sure, with no timing guess.
pub fn kill_runner_on_spawn(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid cannot fail.
    let runner = unsafe { libc::getpid() };
    // SAFETY: the hook makes one async-signal-safe system call.
    unsafe {
        cmd.pre_exec(move || {
            libc::kill(runner, libc::SIGKILL);
            Ok(())
        });
    }
}

static INSTALLED: OnceLock<Arc<Chaos>> = OnceLock::new();

/// Makes `chaos` the plan the commit and push points ask (once per process).
pub fn install(chaos: Arc<Chaos>) {
    let _ = INSTALLED.set(chaos);
}

/// The hook inside a runner commit (`mid-commit`, `between-branch-move-and-index-update`).
/// There is no event to record it in: the commit is made of the journal, and an event added
/// now would come after the run's last (perhaps terminal) event and need a commit of its
/// own. So it goes to the chaos log and stderr only. The run is the one all the written
/// `paths` belong to.
pub fn at_commit<'a>(at: Point, paths: impl IntoIterator<Item = &'a str>) {
    let Some(chaos) = INSTALLED.get() else { return };
    fire_outside_a_run(chaos, at, one_run(paths).as_deref());
}

/// The run every path is under (`runs/_<xx>/<run>/…` or `runs/<run>/…`), when they are all
/// under the same one.
fn one_run<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut run: Option<String> = None;
    for path in paths {
        let (crate::layout::Area::Runs, dir, _) = crate::layout::classify(path)? else {
            return None;
        };
        if run.as_ref().is_some_and(|r| *r != dir.id) {
            return None;
        }
        run = Some(dir.id);
    }
    run
}

/// The hook before `git push` (`mid-push`): logged as `at_commit` is, with no run.
pub fn at_push() {
    if let Some(chaos) = INSTALLED.get() {
        fire_outside_a_run(chaos, Point::MidPush, None);
    }
}

fn fire_outside_a_run(chaos: &Chaos, at: Point, run: Option<&str>) {
    if let Some(inj) = chaos.point(at, Ctx { run, step: None })
        && inj.action == Action::KillRunner
    {
        kill_runner();
    }
}
