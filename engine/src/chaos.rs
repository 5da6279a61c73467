//! Chaos hooks (`stella daemon --chaos FILE`, DESIGN section 9): a runner-local plan of faults
//! to inject — kill the runner at a named point, pause a run before a step, start a step
//! without network, look at a gate's approvals only after a delay — and the decision, at each
//! hook point, whether a rule fires. Owns the chaos file's format; never reads the repository,
//! and never decides anything about a run beyond "inject now".
//!
//! The executor and the run lifecycle get the plan through their config structs
//! (`ExecConfig::chaos`, `Environment::chaos`). The points inside a ledger commit and before a
//! push have no config struct to ride on: they ask the plan installed for the whole process
//! (`install`), which only `stella daemon --chaos` does.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::code::Code;
use crate::diag::{Diagnostic, Diagnostics, Pos, did_you_mean};
use crate::event::Event;
use crate::exec::{GateDecision, GateVerdict, Gatekeeper};
use crate::plan::{PlanApprovalGate, PlanStep};
use crate::yaml::{self, Node, Value};

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

    fn ms(self) -> Option<u64> {
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
struct Rule {
    action: Action,
    point: Point,
    run: Option<String>,
    step: Option<String>,
    after: u64,
    times: Option<u64>,
    probability: Option<f64>,
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
    /// Reads and parses a chaos file; every problem names the file, line and field (ERR_USAGE).
    pub fn load(path: &Path) -> Result<Chaos, Diagnostics> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostic::new(
                Code::Usage,
                &shown,
                Pos::UNKNOWN,
                "",
                format!("cannot read the chaos file: {e}"),
            )
        })?;
        Chaos::parse(&shown, &text)
    }

    /// Parses chaos file text (`file` names it in messages).
    pub fn parse(file: &str, text: &str) -> Result<Chaos, Diagnostics> {
        let root = yaml::parse(file, text, yaml::Limits::default()).map_err(|mut d| {
            d.code = Code::Usage;
            Diagnostics::from(d)
        })?;
        let mut diags = Diagnostics::default();
        let mut err =
            |n: &Node, field: &str, msg: String| diags.push(Diagnostic::new(Code::Usage, file, n.pos, field, msg));
        let mut seed = 0u64;
        let mut rules = Vec::new();
        match root.as_map() {
            None => err(
                &root,
                "",
                format!("a chaos file is a mapping with `rules:`, found {}", root.kind()),
            ),
            Some(entries) => {
                for (k, v) in entries {
                    match k.name.as_str() {
                        "seed" => match v.value {
                            Value::Int(i) if i >= 0 => seed = i as u64,
                            _ => err(v, "seed", "expected a whole number".into()),
                        },
                        "rules" => match v.as_seq() {
                            Some(items) => {
                                for (i, item) in items.iter().enumerate() {
                                    if let Some(r) = rule(item, &format!("rules[{i}]"), &mut err) {
                                        rules.push(r);
                                    }
                                }
                            }
                            None => err(v, "rules", format!("expected a list of rules, found {}", v.kind())),
                        },
                        other => {
                            let hint = did_you_mean(other, ["seed", "rules"])
                                .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                            err(v, other, format!("unknown field `{other}`{hint}"));
                        }
                    }
                }
                if root.get("rules").is_none() {
                    err(&root, "rules", "missing field `rules`".into());
                }
            }
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        let n = rules.len();
        Ok(Chaos {
            rules,
            counters: Mutex::new(Counters {
                seen: vec![0; n],
                fired: vec![0; n],
                rng: seed,
                delayed: HashMap::new(),
            }),
            log: None,
        })
    }

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

    /// Whether a rule fires at `at`, here. Every rule whose point and selectors match counts
    /// the occurrence (for `after`); the first in file order that then fires wins. Logged to the
    /// chaos log; recording it in the run's events is the caller's part.
    pub fn point(&self, at: Point, ctx: Ctx) -> Option<Injection> {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut chosen = None;
        for (i, r) in self.rules.iter().enumerate() {
            if r.point != at || !selects(r.run.as_deref(), ctx.run) || !selects(r.step.as_deref(), ctx.step) {
                continue;
            }
            c.seen[i] += 1;
            if chosen.is_some() || c.seen[i] <= r.after || r.times.is_some_and(|t| c.fired[i] >= t) {
                continue;
            }
            if let Some(p) = r.probability
                && next_unit(&mut c.rng) >= p
            {
                continue;
            }
            c.fired[i] += 1;
            chosen = Some(Injection {
                rule: i,
                action: r.action,
                point: at,
            });
        }
        drop(c);
        if let Some(inj) = &chosen {
            self.log(inj, ctx);
        }
        chosen
    }

    /// The runner-local record of an injection: a warning on stderr (through tracing) and a
    /// line in the chaos log, synced before anything else happens.
    fn log(&self, inj: &Injection, ctx: Ctx) {
        tracing::warn!(
            action = inj.action.as_str(),
            point = inj.point.as_str(),
            rule = inj.rule,
            run = ctx.run.unwrap_or(""),
            step = ctx.step.unwrap_or(""),
            "chaos: injecting"
        );
        let Some(path) = &self.log else { return };
        let line = json!({
            "ts": crate::event::now_rfc3339(), "pid": std::process::id(), "action": inj.action.as_str(),
            "point": inj.point.as_str(), "rule": inj.rule, "run": ctx.run, "step": ctx.step,
        });
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| {
                f.write_all(format!("{line}\n").as_bytes())?;
                f.sync_data()
            });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the chaos log");
        }
    }
}

/// Parses one rule; problems go to `err`.
fn rule(n: &Node, at: &str, err: &mut impl FnMut(&Node, &str, String)) -> Option<Rule> {
    let Some(entries) = n.as_map() else {
        err(n, at, format!("a rule is a mapping with `action:`, found {}", n.kind()));
        return None;
    };
    const FIELDS: &[&str] = &[
        "action",
        "point",
        "run",
        "step",
        "after",
        "times",
        "probability",
        "duration",
    ];
    let mut ok = true;
    for (k, v) in entries {
        if !FIELDS.contains(&k.name.as_str()) {
            let hint = did_you_mean(&k.name, FIELDS.iter().copied())
                .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
            err(
                v,
                &format!("{at}.{}", k.name),
                format!("unknown field `{}`{hint}", k.name),
            );
            ok = false;
        }
    }
    let text = |err: &mut dyn FnMut(&Node, &str, String), key: &str| -> Option<Result<(String, &Node), ()>> {
        let v = n.get(key)?;
        Some(match v.as_str() {
            Some(s) if !s.is_empty() => Ok((s.to_string(), v)),
            _ => {
                err(
                    v,
                    &format!("{at}.{key}"),
                    format!("expected a non-empty string, found {}", v.kind()),
                );
                Err(())
            }
        })
    };
    let whole = |err: &mut dyn FnMut(&Node, &str, String), key: &str, min: i64| -> Result<Option<u64>, ()> {
        let Some(v) = n.get(key) else { return Ok(None) };
        match v.value {
            Value::Int(i) if i >= min => Ok(Some(i as u64)),
            _ => {
                err(
                    v,
                    &format!("{at}.{key}"),
                    format!("expected a whole number of at least {min}"),
                );
                Err(())
            }
        }
    };
    let action_name = match text(err, "action") {
        None => {
            err(
                n,
                &format!("{at}.action"),
                format!("missing field `action` (one of {})", ACTIONS.join(", ")),
            );
            return None;
        }
        Some(Err(())) => return None,
        Some(Ok((s, v))) if !ACTIONS.contains(&s.as_str()) => {
            let hint =
                did_you_mean(&s, ACTIONS.iter().copied()).map_or(String::new(), |h| format!("; did you mean `{h}`?"));
            err(
                v,
                &format!("{at}.action"),
                format!("unknown action `{s}` (one of {}){hint}", ACTIONS.join(", ")),
            );
            return None;
        }
        Some(Ok((s, _))) => s,
    };
    // The point each action may fire at; kill-runner names one.
    let fixed = match action_name.as_str() {
        "pause" => Some(Point::BeforeStepStart),
        "drop-network" => Some(Point::AfterStepStart),
        "delay-approvals" => Some(Point::GateReached),
        _ => None,
    };
    let point = match (text(err, "point"), fixed) {
        (Some(Err(())), _) => None,
        (None, Some(p)) => Some(p),
        (None, None) => {
            let names: Vec<&str> = POINTS
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| *n != "gate-reached")
                .collect();
            err(
                n,
                &format!("{at}.point"),
                format!("kill-runner needs `point:` (one of {})", names.join(", ")),
            );
            None
        }
        (Some(Ok((s, v))), fixed) => match POINTS.iter().find(|(name, _)| *name == s) {
            Some((_, p)) if fixed.map_or(*p != Point::GateReached, |f| f == *p) => Some(*p),
            Some(_) => {
                let only = fixed.map_or("a point other than gate-reached", Point::as_str);
                err(v, &format!("{at}.point"), format!("{action_name} fires only at {only}"));
                None
            }
            None => {
                let hint = did_you_mean(&s, POINTS.iter().map(|(n, _)| *n))
                    .map_or(String::new(), |h| format!("; did you mean `{h}`?"));
                err(v, &format!("{at}.point"), format!("unknown point `{s}`{hint}"));
                None
            }
        },
    };
    // A selector the point cannot have is named with why; otherwise its text, if given.
    let mut select = |field: &str, refuse: Option<String>| match text(err, field) {
        Some(Ok((_, v))) if refuse.is_some() => {
            err(v, &format!("{at}.{field}"), refuse.unwrap_or_default());
            ok = false;
            None
        }
        Some(Ok((s, _))) => Some(s),
        Some(Err(())) => {
            ok = false;
            None
        }
        None => None,
    };
    let run = select(
        "run",
        (point == Some(Point::MidPush))
            .then(|| "mid-push has no run (a push carries every run); remove `run: …`".to_string()),
    );
    let step = select(
        "step",
        point
            .filter(|p| !p.has_step())
            .map(|p| format!("{} has no step; select by `run` only", p.as_str())),
    );
    let after = whole(err, "after", 0);
    let times = whole(err, "times", 1);
    let probability = match n.get("probability") {
        None => Ok(None),
        Some(v) => match v.value {
            Value::Float(f) if f > 0.0 && f <= 1.0 => Ok(Some(f)),
            Value::Int(1) => Ok(Some(1.0)),
            _ => {
                err(
                    v,
                    &format!("{at}.probability"),
                    "expected a number above 0 and at most 1 (e.g. 0.25)".into(),
                );
                Err(())
            }
        },
    };
    let duration = match n.get("duration") {
        None if fixed.is_some() && action_name != "drop-network" => {
            err(
                n,
                &format!("{at}.duration"),
                format!("{action_name} needs `duration:` (e.g. 5s)"),
            );
            Err(())
        }
        None => Ok(None),
        Some(v) if action_name == "kill-runner" || action_name == "drop-network" => {
            err(v, &format!("{at}.duration"), format!("{action_name} takes no duration"));
            Err(())
        }
        Some(v) => match v.as_str().map(crate::duration::parse_ms) {
            Some(Ok(ms)) => Ok(Some(ms)),
            Some(Err(m)) => {
                err(v, &format!("{at}.duration"), m);
                Err(())
            }
            None => {
                err(
                    v,
                    &format!("{at}.duration"),
                    format!("expected a duration such as 5s, found {}", v.kind()),
                );
                Err(())
            }
        },
    };
    let (Some(point), true, Ok(after), Ok(times), Ok(probability), Ok(ms)) =
        (point, ok, after, times, probability, duration)
    else {
        return None;
    };
    let ms = ms.unwrap_or(0);
    let action = match action_name.as_str() {
        "pause" => Action::Pause { ms },
        "drop-network" => Action::DropNetwork,
        "delay-approvals" => Action::DelayApprovals { ms },
        _ => Action::KillRunner,
    };
    Some(Rule {
        action,
        point,
        run,
        step,
        after: after.unwrap_or(0),
        times,
        probability,
    })
}

/// Whether a selector (a glob with `*` and `?`; none: anything) selects `value`. A selector
/// never selects a point that lacks the value.
fn selects(pattern: Option<&str>, value: Option<&str>) -> bool {
    match (pattern, value) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(p), Some(v)) => glob(p.as_bytes(), v.as_bytes()),
    }
}

fn glob(p: &[u8], v: &[u8]) -> bool {
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A number in [0, 1) from a seeded splitmix64 stream: the same file and seed draw the same
/// numbers in the same order of occurrences.
fn next_unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
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
/// own. So it goes to the chaos log and stderr only. The run is the one all `writes` belong to.
pub fn at_commit(at: Point, writes: &[crate::ledger::FileWrite]) {
    let Some(chaos) = INSTALLED.get() else { return };
    let run_of = |path: &str| {
        path.strip_prefix("runs/")
            .and_then(|r| r.split('/').next())
            .map(str::to_string)
    };
    let first = writes.first().and_then(|w| run_of(&w.path));
    let run = first.filter(|r| writes.iter().all(|w| run_of(&w.path).as_deref() == Some(r)));
    fire_outside_a_run(chaos, at, run.as_deref());
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

/// A gatekeeper that, where a delay-approvals rule fires, does not look at the approvals until
/// the delay has passed since the gate was reached; the gate waits meanwhile. Each delay is
/// recorded once, as a note (`pack.chaos.injected`) with the verdict.
pub struct Gates<'a> {
    pub inner: &'a dyn Gatekeeper,
    pub chaos: Option<&'a Chaos>,
    pub run: &'a str,
}

impl Gatekeeper for Gates<'_> {
    fn decide(&self, step: &PlanStep, gate: &PlanApprovalGate, waiting_since: Option<&str>) -> GateVerdict {
        let Some(chaos) = self.chaos else {
            return self.inner.decide(step, gate, waiting_since);
        };
        let key = (self.run.to_string(), step.id.clone());
        let known = chaos
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .delayed
            .get(&key)
            .copied();
        let fired = known.unwrap_or_else(|| {
            let fired = chaos
                .point(
                    Point::GateReached,
                    Ctx {
                        run: Some(self.run),
                        step: Some(&step.id),
                    },
                )
                .filter(|i| matches!(i.action, Action::DelayApprovals { .. }));
            let mut c = chaos.counters.lock().unwrap_or_else(|p| p.into_inner());
            *c.delayed.entry(key).or_insert(fired)
        });
        let Some(inj) = fired else {
            return self.inner.decide(step, gate, waiting_since);
        };
        let mut note = inj.event(Some(&step.id));
        if let Some(d) = note.data.as_mut() {
            d["key"] = json!(format!("chaos:{}:{}", inj.rule, step.id));
        }
        let since = waiting_since
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .unwrap_or_else(SystemTime::now);
        let until = since + Duration::from_millis(inj.action.ms().unwrap_or(0));
        let mut verdict = if SystemTime::now() < until {
            GateDecision::Waiting.into()
        } else {
            self.inner.decide(step, gate, waiting_since)
        };
        verdict.notes.insert(0, note);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_select_runs_and_steps() {
        assert!(glob(b"*", b"anything"));
        assert!(glob(b"nightly-*", b"nightly-42"));
        assert!(!glob(b"nightly-*", b"weekly-42"));
        assert!(glob(b"fix-all[?]::fix", b"fix-all[3]::fix"));
        assert!(glob(b"a*b*c", b"aXXbYYc"));
        assert!(!glob(b"a*b*c", b"aXXbYY"));
    }

    #[test]
    fn the_third_step_start_is_killed_once() {
        let c = Chaos::parse(
            "chaos.yaml",
            "rules:\n  - { action: kill-runner, point: before-step-start, after: 2, times: 1 }\n",
        )
        .unwrap();
        let at = |step| {
            c.point(
                Point::BeforeStepStart,
                Ctx {
                    run: Some("r1"),
                    step: Some(step),
                },
            )
        };
        assert_eq!(at("a"), None);
        assert_eq!(at("b"), None);
        assert_eq!(at("c").map(|i| i.action), Some(Action::KillRunner));
        assert_eq!(at("d"), None);
    }

    #[test]
    fn the_same_seed_draws_the_same_injections() {
        let text = "seed: 7\nrules:\n  - { action: pause, duration: 1ms, probability: 0.5 }\n";
        let draw = || {
            let c = Chaos::parse("chaos.yaml", text).unwrap();
            (0..64)
                .map(|_| c.point(Point::BeforeStepStart, Ctx::default()).is_some())
                .collect::<Vec<_>>()
        };
        let first = draw();
        assert_eq!(first, draw());
        assert!(first.iter().any(|f| *f) && first.iter().any(|f| !*f), "{first:?}");
    }

    #[test]
    fn every_problem_names_its_line_and_field() {
        let text = "rules:\n  - action: kill-runner\n    point: mid-comit\n  - action: pause\n  - action: delay-approvals\n    duration: 5s\n    step: review\n    probability: 2\n  - { action: kill-runner, point: mid-push, run: r1 }\n";
        let d = Chaos::parse("chaos.yaml", text).unwrap_err();
        let shown: Vec<String> = d.iter().map(|d| format!("{}:{}", d.line, d.field)).collect();
        assert_eq!(
            shown,
            [
                "3:rules[0].point",
                "4:rules[1].duration",
                "8:rules[2].probability",
                "9:rules[3].run"
            ],
            "{d}"
        );
        assert!(d.iter().all(|d| d.code == Code::Usage));
        assert!(d.to_string().contains("did you mean `mid-commit`"), "{d}");
    }
}
