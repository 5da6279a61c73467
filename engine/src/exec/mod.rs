//! The executor: the engine's one way to run a plan. It takes the plan, the pack's files, the
//! events of an earlier interrupted attempt (to resume), gates and event sinks, and walks the
//! step graph: sequences, parallel groups, maps, gates, retries, timeouts. Synchronous;
//! threads for parallel steps; never touches git.

mod artifacts;
pub mod control;
pub mod output;
mod process;
pub mod sandbox;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value as Json, json};

use crate::chaos::{self, Action, Point};
use crate::code::Code;
use crate::event::{Emitter, Event, EventSink};
use crate::expr::{self, Flavor};
use crate::pack::{PackFiles, sha256_hex};
use crate::plan::{Cond, Plan, PlanApprovalGate, PlanStep, TemplateFlavor, Text};
use crate::redact::Redactor;
use crate::secrets::Secrets;
use crate::state::{self, RunState, StepStatus};

pub use artifacts::StepError;
pub use control::{CancelToken, Limiter, Stop};
pub use process::{shutdown, shutting_down};

/// How to run one plan.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    pub run_id: String,
    /// Where artifacts (`artifacts/<step>/<name>`) and scratch files go.
    pub run_dir: PathBuf,
    /// The steps' working directory; the pack's files are materialised here.
    pub workspace: PathBuf,
    /// Most steps running at once; 0 means the number of cores.
    pub max_steps: usize,
    pub artifact_bytes: u64,
    /// How much output becomes `step.log` events, per step and per run (`limits.logBytes`,
    /// `limits.runLogBytes`); the rest is counted and hashed in `step.log.truncated`.
    pub log_limits: output::LogLimits,
    /// Time between SIGTERM and SIGKILL when a step is stopped.
    pub kill_grace: Duration,
    pub secrets: Secrets,
    pub cancel: CancelToken,
    /// The environment steps start from (a small allowlist of the runner's, by default).
    pub base_env: Vec<(String, String)>,
    /// Sealed mode: a step that declares no host runs in a network namespace of its own with
    /// only loopback (DESIGN section 9).
    pub sealed: bool,
    /// How steps are kept from the runner (`sandbox:` in the config, DESIGN section 9).
    pub sandbox: sandbox::Sandbox,
    /// Chaos hooks (`stella daemon --chaos`): faults injected at the step points.
    pub chaos: Option<Arc<crate::chaos::Chaos>>,
}

impl ExecConfig {
    pub fn new(run_id: &str, run_dir: &Path) -> ExecConfig {
        // Steps run in the workspace, so every path handed to them must be absolute.
        let run_dir = std::path::absolute(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
        let run_dir = run_dir.as_path();
        ExecConfig {
            run_id: run_id.into(),
            run_dir: run_dir.into(),
            workspace: run_dir.join("workspace"),
            max_steps: 0,
            artifact_bytes: 10 << 20,
            log_limits: output::LogLimits::default(),
            kill_grace: Duration::from_secs(5),
            secrets: Secrets::default(),
            cancel: CancelToken::new(),
            base_env: base_env(),
            sealed: false,
            sandbox: sandbox::Sandbox::default(),
            chaos: None,
        }
    }
}

/// The runner's variables a step may see; everything else (and every other secret) stays out.
pub fn base_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    env
}

/// What an approval gate says when the executor reaches it.
#[derive(Debug, Clone, PartialEq)]
pub enum GateDecision {
    /// The gate passes; `data` is recorded in the `gate.approved` event.
    Approved { data: Json },
    /// Not enough approvals yet: the run stops here, waiting.
    Waiting,
    /// Rejected or expired: the run fails with this code.
    Failed { code: Code, message: String },
}

/// Decides approval gates: locally a development flag, in the daemon signed approval files.
pub trait Gatekeeper: Sync {
    /// `waiting_since`: when the run first waited at this gate (RFC 3339), if it has.
    fn decide(&self, step: &PlanStep, gate: &PlanApprovalGate, waiting_since: Option<&str>) -> GateVerdict;
}

/// A gate's decision and what the gatekeeper saw on the way (e.g. `approval.verdict` events,
/// each with a unique `data.key`; the executor records each key once per run).
#[derive(Debug, Clone)]
pub struct GateVerdict {
    pub decision: GateDecision,
    pub notes: Vec<Event>,
}

impl From<GateDecision> for GateVerdict {
    fn from(decision: GateDecision) -> Self {
        GateVerdict {
            decision,
            notes: Vec::new(),
        }
    }
}

/// Gates for `stella pack run`: wait, unless `--approve-local` passes them (recorded as such).
pub struct LocalGates {
    pub approve_local: bool,
}

impl Gatekeeper for LocalGates {
    fn decide(&self, _step: &PlanStep, _gate: &PlanApprovalGate, _since: Option<&str>) -> GateVerdict {
        if self.approve_local {
            GateDecision::Approved {
                data: json!({ "local": true, "note": "approved with --approve-local (development only)" }),
            }
            .into()
        } else {
            GateDecision::Waiting.into()
        }
    }
}

/// How a run (or this attempt at it) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed {
        code: Code,
        message: String,
    },
    Cancelled,
    /// Stopped at an approval gate.
    Waiting {
        step: String,
        approval: String,
    },
}

impl Outcome {
    /// DESIGN section 10: 0 ok, 1 failed or cancelled, 3 waiting at a gate.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Succeeded => 0,
            Outcome::Failed { code, .. } => i32::from(code.exit_code()),
            Outcome::Cancelled => 1,
            Outcome::Waiting { .. } => 3,
        }
    }
}

/// Runs (or resumes) `plan`. `prior` holds the events of an interrupted attempt: steps that
/// finished there are not run again, their outputs are reused. Every event goes to `sinks`.
pub fn execute(
    plan: &Plan,
    files: &PackFiles,
    prior: &[crate::event::Event],
    cfg: &ExecConfig,
    gates: &dyn Gatekeeper,
    sinks: Vec<&dyn EventSink>,
) -> Outcome {
    let before = state::fold(prior);
    let redactor = Redactor::new(cfg.secrets.values());
    let emitter = Emitter::new(sinks, redactor, before.next_seq).with_log_limits(cfg.log_limits);
    if before.state.is_terminal() {
        return match before.state {
            state::RunStatus::Succeeded => Outcome::Succeeded,
            state::RunStatus::Cancelled => Outcome::Cancelled,
            _ => Outcome::Failed {
                code: before
                    .code
                    .as_deref()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(Code::StepFailed),
                message: before
                    .error
                    .clone()
                    .unwrap_or_else(|| "the run had already failed".into()),
            },
        };
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runner = Runner {
        plan,
        cfg,
        gates,
        emitter: &emitter,
        limiter: Limiter::new(if cfg.max_steps == 0 { cores } else { cfg.max_steps }),
        outputs: Arc::new(Outputs(Mutex::new(before.outputs()))),
        before,
        inputs: expr::value(&Json::Object(plan.inputs.clone())),
        scratch: AtomicU64::new(0),
        started: Instant::now(),
        recorded: Mutex::new(recorded_keys(prior)),
    };
    runner.run(files)
}

enum Res {
    Ok,
    Skipped,
    Failed(StepError),
    Cancelled,
    Waiting(String, String),
}

struct Runner<'a> {
    plan: &'a Plan,
    cfg: &'a ExecConfig,
    gates: &'a dyn Gatekeeper,
    emitter: &'a Emitter<'a>,
    limiter: Limiter,
    before: RunState,
    outputs: Arc<Outputs>,
    inputs: expr::Ctx,
    scratch: AtomicU64,
    started: Instant,
    /// `data.key`s of gatekeeper notes already recorded in this run's events.
    recorded: Mutex<std::collections::HashSet<String>>,
}

impl Runner<'_> {
    fn emit(&self, e: Event) {
        self.emitter.emit(e);
    }

    /// A chaos hook: the action a rule fires here, recorded as `pack.chaos.injected` before it
    /// happens. A kill is synced to the journal and done here, except as the step starts
    /// (`after-step-start`), where the caller arms it on the step's process.
    fn chaos(&self, at: Point, s: &PlanStep) -> Option<Action> {
        let ctx = chaos::Ctx {
            run: Some(&self.cfg.run_id),
            step: Some(&s.id),
        };
        let inj = self.cfg.chaos.as_ref()?.point(at, ctx)?;
        self.emit(inj.event(Some(&s.id)));
        if inj.action == Action::KillRunner {
            self.emitter.sync();
            if at != Point::AfterStepStart {
                chaos::kill_runner();
            }
        }
        Some(inj.action)
    }

    /// A run step's final end is recorded: the `after-step-end` hook.
    fn ended(&self, s: &PlanStep, res: Res) -> Res {
        self.chaos(Point::AfterStepEnd, s);
        res
    }

    fn run(&self, files: &PackFiles) -> Outcome {
        let resumed = !self.before.steps.is_empty() || self.before.state != state::RunStatus::Planned;
        // A run is bound to the plan it started with: resuming with a different pack or
        // different inputs would run something nobody planned (or approved).
        if let Some(recorded) = &self.before.plan_hash {
            let hash = self.plan.hash();
            if *recorded != hash {
                let message =
                    format!("this run was planned as {recorded}, but the pack and inputs given now plan to {hash}");
                return self.finish(Res::Failed(StepError::new(Code::PackHashMismatch, message)));
            }
        }
        if resumed {
            let done = self.before.steps.iter().filter(|s| s.status.is_done()).count();
            let plural = if done == 1 { "" } else { "s" };
            self.emit(
                Event::new("run.resumed")
                    .msg(format!("resuming: {done} step{plural} already finished"))
                    .data(json!({ "finished": done })),
            );
        } else {
            let total = self.plan.all_steps().len();
            self.emit(Event::new("run.started").data(json!({
                "runId": self.cfg.run_id, "planHash": self.plan.hash(), "pack": self.plan.pack.name,
                "version": self.plan.pack.version, "steps": total, "sandbox": self.cfg.sandbox.describe(),
            })));
        }
        let result = match self.materialise(files) {
            Ok(()) => self.sequence(&self.plan.steps, None, &self.cfg.cancel),
            Err(e) => Res::Failed(e),
        };
        self.finish(result)
    }

    fn finish(&self, result: Res) -> Outcome {
        let ms = self.started.elapsed().as_millis() as u64;
        let outcome = match result {
            Res::Ok | Res::Skipped => Outcome::Succeeded,
            // Messages may quote what a step wrote; they leave the executor redacted.
            Res::Failed(e) => Outcome::Failed {
                code: e.code,
                message: self.emitter.redactor().redact(&e.message),
            },
            Res::Cancelled => Outcome::Cancelled,
            Res::Waiting(step, approval) => {
                self.emit(
                    Event::new("run.waiting")
                        .step(&step)
                        .msg(format!("waiting at gate `{step}` for approval `{approval}`"))
                        .data(json!({ "gate": approval })),
                );
                return Outcome::Waiting { step, approval };
            }
        };
        let outcome = match (self.emitter.error(), outcome) {
            (Some(msg), _) => Outcome::Failed {
                code: Code::EventsWrite,
                message: msg,
            },
            (None, o) => o,
        };
        match &outcome {
            Outcome::Succeeded => self.emit(Event::new("run.succeeded").data(json!({ "durationMs": ms }))),
            Outcome::Failed { code, message } => self.emit(
                Event::new("run.failed")
                    .level("error")
                    .msg(message.clone())
                    .data(json!({ "code": code.as_str(), "durationMs": ms })),
            ),
            Outcome::Cancelled => self.emit(
                Event::new("run.cancelled")
                    .level("warn")
                    .msg("the run was cancelled")
                    .data(json!({ "code": Code::RunCancelled.as_str(), "durationMs": ms })),
            ),
            Outcome::Waiting { .. } => {}
        }
        outcome
    }

    /// Writes the pack's files into the workspace (read-only), after checking them against the plan.
    fn materialise(&self, files: &PackFiles) -> Result<(), StepError> {
        let ws = &self.cfg.workspace;
        let io = |e: std::io::Error| {
            StepError::new(
                Code::StepFailed,
                format!("cannot prepare the workspace {}: {e}", ws.display()),
            )
        };
        std::fs::create_dir_all(ws).map_err(io)?;
        std::fs::create_dir_all(self.cfg.run_dir.join("tmp")).map_err(io)?;
        for f in &self.plan.pack.files {
            let bytes = files
                .get(&f.path)
                .ok_or_else(|| mismatch(&f.path, "is missing from the pack"))?;
            if sha256_hex(bytes) != f.sha256 {
                return Err(mismatch(&f.path, "differs from the planned file"));
            }
            let dest = ws.join(&f.path);
            std::fs::create_dir_all(dest.parent().expect("inside the workspace")).map_err(io)?;
            let _ = std::fs::remove_file(&dest);
            std::fs::write(&dest, bytes).map_err(io)?;
            let mode = if f.executable { 0o555 } else { 0o444 };
            std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(io)?;
        }
        Ok(())
    }

    /// Re-checks the workspace's pack files against the plan before a step runs.
    fn verify_pack(&self) -> Result<(), StepError> {
        for f in &self.plan.pack.files {
            let bytes = std::fs::read(self.cfg.workspace.join(&f.path))
                .map_err(|_| mismatch(&f.path, "was removed from the workspace"))?;
            if sha256_hex(&bytes) != f.sha256 {
                return Err(mismatch(&f.path, "was changed in the workspace"));
            }
        }
        Ok(())
    }

    /// The template context: inputs, step outputs so far (looked up lazily), the map item.
    fn ctx(&self, item: Option<&Json>) -> expr::Ctx {
        let mut parts = vec![
            ("inputs", self.inputs.clone()),
            ("steps", minijinja::Value::from_dyn_object(self.outputs.clone())),
        ];
        if let Some(item) = item {
            parts.push(("item", expr::value(item)));
        }
        expr::ctx(parts)
    }

    fn text(&self, t: &Text, item: Option<&Json>) -> Result<String, StepError> {
        match t {
            Text::Resolved(s) => Ok(s.clone()),
            Text::Template { template, flavor } => {
                let flavor = if *flavor == TemplateFlavor::Shell {
                    Flavor::Shell
                } else {
                    Flavor::Text
                };
                expr::render(template, flavor, &self.ctx(item)).map_err(|m| StepError::new(Code::ExprFailed, m))
            }
        }
    }

    fn sequence(&self, steps: &[PlanStep], item: Option<&Json>, token: &CancelToken) -> Res {
        for s in steps {
            if let Some(msg) = self.emitter.error() {
                return Res::Failed(StepError::new(Code::EventsWrite, msg));
            }
            match self.step(s, item, token) {
                Res::Ok | Res::Skipped => {}
                Res::Failed(_) if s.continue_on_error => {}
                other => return other,
            }
        }
        Res::Ok
    }

    fn step(&self, s: &PlanStep, item: Option<&Json>, token: &CancelToken) -> Res {
        if let Some(prev) = self.before.step(&s.id) {
            match prev.status {
                StepStatus::Succeeded => return Res::Ok,
                StepStatus::Skipped => return Res::Skipped,
                StepStatus::Failed => {
                    let code = prev
                        .code
                        .as_deref()
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(Code::StepFailed);
                    return Res::Failed(StepError::new(code, prev.error.clone().unwrap_or_default()));
                }
                _ => {}
            }
        }
        if token.stop().is_some() {
            return self.stopped(s, token);
        }
        let run = match &s.when {
            None | Some(Cond::Known(true)) => true,
            Some(Cond::Known(false)) => false,
            Some(Cond::Template { template }) => match expr::eval_bool(template, &self.ctx(item)) {
                Ok(b) => b,
                Err(m) => return self.fail(s, StepError::new(Code::ExprFailed, format!("when: {m}")), 0),
            },
        };
        if !run {
            self.skip(s, "when is false");
            return Res::Skipped;
        }
        match s.kind.as_str() {
            "run" => self.run_step(s, item, token),
            "parallel" => {
                let g = s.parallel.as_ref().expect("parallel step has a group");
                let children: Vec<(&PlanStep, Option<&Json>)> = g.steps.iter().map(|c| (c, item)).collect();
                self.group(s, &children, g.max_parallel, g.continue_on_error, token)
            }
            "map" => {
                let m = s.map.as_ref().expect("map step has a map");
                let children: Vec<(&PlanStep, Option<&Json>)> =
                    m.steps.iter().zip(m.items.iter()).map(|(c, i)| (c, Some(i))).collect();
                self.group(s, &children, m.max_parallel, false, token)
            }
            "gate.approval" => self.approval(s, s.approval.as_ref().expect("gate"), item),
            "gate.policy" => self.policy(s, item),
            other => self.fail(
                s,
                StepError::new(Code::StepFailed, format!("unknown step kind `{other}`")),
                0,
            ),
        }
    }

    fn skip(&self, s: &PlanStep, why: &str) {
        self.emit(Event::new("step.skipped").step(&s.id).msg(why));
        for c in s.children() {
            if self.before.step(&c.id).is_none_or(|p| !p.status.is_done()) {
                self.skip(c, "its group was skipped");
            }
        }
    }

    fn fail(&self, s: &PlanStep, e: StepError, attempt: u32) -> Res {
        let mut data = json!({ "code": e.code.as_str() });
        if attempt > 0 {
            data["attempt"] = json!(attempt);
        }
        if s.continue_on_error {
            data["continued"] = json!(true);
        }
        self.emit(
            Event::new("step.failed")
                .step(&s.id)
                .level("error")
                .msg(e.message.clone())
                .data(data),
        );
        Res::Failed(e)
    }

    /// A step that will not run (or was terminated) because the run or its group is stopping.
    fn stopped(&self, s: &PlanStep, token: &CancelToken) -> Res {
        match token.stop() {
            Some(Stop::TimedOut) => self.fail(
                s,
                StepError::new(Code::StepTimeout, "the enclosing group ran out of time"),
                0,
            ),
            _ => {
                self.emit(
                    Event::new("step.cancelled")
                        .step(&s.id)
                        .level("warn")
                        .msg("terminated: the run is stopping"),
                );
                Res::Cancelled
            }
        }
    }

    fn run_step(&self, s: &PlanStep, item: Option<&Json>, token: &CancelToken) -> Res {
        let retries = s.retries.unwrap_or(crate::plan::PlanRetries {
            max_attempts: 1,
            backoff_ms: 0,
        });
        let prior_attempts = self.before.step(&s.id).map_or(0, |p| p.attempts);
        let max = retries.max_attempts.max(1);
        let mut attempt = prior_attempts;
        loop {
            attempt += 1;
            if let Some(Action::Pause { ms }) = self.chaos(Point::BeforeStepStart, s)
                && token.sleep(Duration::from_millis(ms)).is_some()
            {
                return self.stopped(s, token);
            }
            if let Err(e) = self.verify_pack() {
                return self.fail(s, e, attempt);
            }
            let Some(permit) = self.limiter.acquire(token) else {
                return self.stopped(s, token);
            };
            let deadline = s.timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
            let step_token = token.child(deadline);
            let uses = s.run.as_ref().map_or("", |r| r.uses.as_str());
            self.emit(
                Event::new("step.started")
                    .step(&s.id)
                    .data(json!({ "attempt": attempt, "kind": "run", "uses": uses })),
            );
            let t0 = Instant::now();
            let result = self.attempt(s, item, attempt, &step_token);
            drop(permit);
            self.chaos(Point::BeforeStepEnd, s);
            let ms = t0.elapsed().as_millis() as u64;
            match result {
                Ok((outputs, artifacts, exit)) => {
                    let mut data =
                        json!({ "attempt": attempt, "durationMs": ms, "outputs": outputs, "artifacts": artifacts });
                    if let Some(code) = exit {
                        data["exitCode"] = json!(code);
                    }
                    self.emit(Event::new("step.succeeded").step(&s.id).data(data));
                    let outputs = self.emitter.redactor().redact_json(&Json::Object(outputs));
                    if let Json::Object(o) = outputs {
                        self.outputs
                            .0
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(s.id.clone(), o);
                    }
                    return self.ended(s, Res::Ok);
                }
                Err(Attempt::Stopped) if token.stop().is_some() => return self.stopped(s, token),
                Err(Attempt::Stopped) => {
                    let e = StepError::new(
                        Code::StepTimeout,
                        format!(
                            "timed out after {}",
                            crate::duration::format_ms(s.timeout_ms.unwrap_or(0))
                        ),
                    );
                    if attempt < max && !self.retry(s, attempt, &e, retries.backoff_ms, token) {
                        return self.stopped(s, token);
                    } else if attempt >= max {
                        return self.ended(s, self.fail(s, e, attempt));
                    }
                }
                Err(Attempt::Failed(e)) => {
                    let retryable = !matches!(
                        e.code,
                        Code::PackHashMismatch | Code::ArtifactSecret | Code::SandboxUnavailable
                    );
                    if retryable && attempt < max {
                        if !self.retry(s, attempt, &e, retries.backoff_ms, token) {
                            return self.stopped(s, token);
                        }
                    } else {
                        return self.ended(s, self.fail(s, e, attempt));
                    }
                }
            }
        }
    }

    /// Records a retry and waits out the backoff; false when the run stops meanwhile.
    fn retry(&self, s: &PlanStep, attempt: u32, e: &StepError, backoff_ms: u64, token: &CancelToken) -> bool {
        self.emit(
            Event::new("step.retrying")
                .step(&s.id)
                .level("warn")
                .msg(format!("attempt {attempt} failed: {}", e.message))
                .data(json!({ "attempt": attempt, "code": e.code.as_str(), "backoffMs": backoff_ms })),
        );
        token.sleep(Duration::from_millis(backoff_ms)).is_none()
    }

    fn attempt(
        &self,
        s: &PlanStep,
        item: Option<&Json>,
        attempt: u32,
        token: &CancelToken,
    ) -> Result<Finished, Attempt> {
        let run = s
            .run
            .as_ref()
            .ok_or_else(|| Attempt::Failed(StepError::new(Code::StepFailed, "run step without run")))?;
        let redactor = self.emitter.redactor();
        if run.uses == "builtin:bundle.ingest" {
            if self.chaos(Point::AfterStepStart, s) == Some(Action::KillRunner) {
                chaos::kill_runner();
            }
            let path = self
                .text(run.path.as_ref().expect("ingest has a path"), item)
                .map_err(Attempt::Failed)?;
            let sum = self
                .text(run.checksum_sha256.as_ref().expect("ingest has a checksum"), item)
                .map_err(Attempt::Failed)?;
            let arts = artifacts::ingest_bundle(
                &self.cfg.workspace,
                &self.cfg.run_dir,
                &s.id,
                &path,
                &sum,
                self.cfg.artifact_bytes,
                redactor,
            )
            .map_err(Attempt::Failed)?;
            self.emit(
                Event::new("step.log")
                    .step(&s.id)
                    .msg(format!("verified and staged {path}"))
                    .data(json!({ "stream": "stdout" })),
            );
            return Ok((Map::new(), arts, None));
        }
        let mut cmd = match run.uses.as_str() {
            "builtin:shell" => {
                let script = self
                    .text(run.script.as_ref().expect("shell has a script"), item)
                    .map_err(Attempt::Failed)?;
                let mut c = Command::new("bash");
                c.args(["-euo", "pipefail", "-c", &script]);
                c
            }
            "builtin:exec" => {
                let argv: Vec<String> = run
                    .argv
                    .iter()
                    .flatten()
                    .map(|a| self.text(a, item))
                    .collect::<Result<_, _>>()
                    .map_err(Attempt::Failed)?;
                let program = &argv[0];
                let program = if program.contains('/') && !program.starts_with('/') {
                    self.cfg.workspace.join(program)
                } else {
                    PathBuf::from(program)
                };
                let mut c = Command::new(program);
                c.args(&argv[1..]);
                c
            }
            other => {
                return Err(Attempt::Failed(StepError::new(
                    Code::StepFailed,
                    format!("unknown runner `{other}`"),
                )));
            }
        };
        let out_file = self
            .cfg
            .run_dir
            .join("tmp")
            .join(format!("output-{}", self.scratch.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&out_file, b"").map_err(|e| {
            Attempt::Failed(StepError::new(
                Code::StepFailed,
                format!("cannot create $STELLA_OUTPUT: {e}"),
            ))
        })?;
        cmd.current_dir(&self.cfg.workspace)
            .env_clear()
            .envs(self.cfg.base_env.iter().cloned());
        cmd.env("STELLA_RUN_ID", &self.cfg.run_id)
            .env("STELLA_STEP_ID", &s.id)
            .env("STELLA_ATTEMPT", attempt.to_string())
            .env("STELLA_WORKSPACE", &self.cfg.workspace)
            .env("STELLA_OUTPUT", &out_file);
        for (name, value) in &self.plan.inputs {
            let v = match value {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            cmd.env(format!("STELLA_INPUT_{}", name.to_ascii_uppercase()), v);
        }
        for (name, value) in self.cfg.secrets.env_pairs() {
            cmd.env(name, value);
        }
        for (name, value) in &s.env {
            cmd.env(name, self.text(value, item).map_err(Attempt::Failed)?);
        }
        let sealed = self.cfg.sealed && s.network.is_empty();
        // A kill armed for the step's start runs in the forked child before the sandbox is
        // made, while it can still name the runner: the runner dies as its step is forked.
        let chaos = self.chaos(Point::AfterStepStart, s);
        if chaos == Some(Action::KillRunner) {
            chaos::kill_runner_on_spawn(&mut cmd);
        }
        let isolate_network = sealed || chaos == Some(Action::DropNetwork);
        let guard = if self.cfg.sandbox.is_off() {
            if isolate_network {
                process::loopback_only(&mut cmd);
            }
            None
        } else {
            cmd.env("TMPDIR", "/tmp");
            match self
                .cfg
                .sandbox
                .apply(&mut cmd, &self.cfg.workspace, &out_file, isolate_network)
            {
                Ok(g) => Some(g),
                Err(u) => {
                    let _ = std::fs::remove_file(&out_file);
                    return Err(Attempt::Failed(StepError::new(Code::SandboxUnavailable, u.to_string())));
                }
            }
        };
        let end = process::run(cmd, guard, &s.id, token, self.cfg.kill_grace, self.emitter);
        let result = match end {
            process::ProcEnd::Exited(0) => {
                let outputs = artifacts::read_outputs(&out_file, redactor).map_err(Attempt::Failed);
                outputs.and_then(|o| {
                    let mut arts = Vec::new();
                    for (name, declared) in &s.outputs {
                        let src =
                            artifacts::resolve_in_workspace(&self.cfg.workspace, declared).map_err(Attempt::Failed)?;
                        arts.push(
                            artifacts::store(&src, &self.cfg.run_dir, &s.id, name, self.cfg.artifact_bytes, redactor)
                                .map_err(Attempt::Failed)?,
                        );
                    }
                    Ok((o, arts, Some(0)))
                })
            }
            process::ProcEnd::Exited(code) => Err(Attempt::Failed(StepError::new(
                Code::StepFailed,
                format!("exited with status {code}"),
            ))),
            process::ProcEnd::Signaled(sig) => Err(Attempt::Failed(StepError::new(
                Code::StepFailed,
                format!("killed by signal {sig}"),
            ))),
            process::ProcEnd::Stopped(_) => Err(Attempt::Stopped),
            process::ProcEnd::Unisolated(u) => {
                Err(Attempt::Failed(StepError::new(Code::SandboxUnavailable, u.to_string())))
            }
            process::ProcEnd::SpawnFailed(m) if sealed => Err(Attempt::Failed(StepError::new(
                Code::StepFailed,
                format!(
                    "cannot start in sealed mode: the step could not be given a network namespace of its own ({m}); the runner needs CAP_SYS_ADMIN or unprivileged user namespaces"
                ),
            ))),
            process::ProcEnd::SpawnFailed(m) => Err(Attempt::Failed(StepError::new(
                Code::StepFailed,
                format!("cannot start: {m}"),
            ))),
        };
        let _ = std::fs::remove_file(&out_file);
        result
    }

    fn group(
        &self,
        s: &PlanStep,
        children: &[(&PlanStep, Option<&Json>)],
        max_parallel: u32,
        continue_on_error: bool,
        token: &CancelToken,
    ) -> Res {
        let already = self.before.step(&s.id).is_some();
        if !already {
            self.emit(
                Event::new("step.started")
                    .step(&s.id)
                    .data(json!({ "kind": s.kind, "children": children.len() })),
            );
        }
        let deadline = s.timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
        let group_token = token.child(deadline);
        let workers = match max_parallel {
            0 => self.limiter.max(),
            n => n as usize,
        }
        .min(children.len())
        .max(1);
        let next = AtomicUsize::new(0);
        let halted = AtomicBool::new(false);
        let first_failure: Mutex<Option<(String, StepError)>> = Mutex::new(None);
        let waiting: Mutex<Option<(String, String)>> = Mutex::new(None);
        let cancelled = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some((child, item)) = children.get(i) else { break };
                        if halted.load(Ordering::SeqCst) {
                            if self.before.step(&child.id).is_none_or(|p| !p.status.is_done()) {
                                self.emit(
                                    Event::new("step.cancelled")
                                        .step(&child.id)
                                        .level("warn")
                                        .msg("not started: a sibling failed"),
                                );
                            }
                            continue;
                        }
                        match self.step(child, *item, &group_token) {
                            Res::Failed(e) if !child.continue_on_error && !continue_on_error => {
                                first_failure
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .get_or_insert((child.id.clone(), e));
                                halted.store(true, Ordering::SeqCst);
                                group_token.cancel();
                            }
                            Res::Cancelled => cancelled.store(true, Ordering::SeqCst),
                            Res::Waiting(a, b) => {
                                waiting.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert((a, b));
                            }
                            _ => {}
                        }
                    }
                });
            }
        });
        if let Some((child, e)) = first_failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return self.fail(
                s,
                StepError::new(e.code, format!("step `{child}` failed: {}", e.message)),
                0,
            );
        }
        if group_token.stop() == Some(Stop::TimedOut) && token.stop().is_none() {
            return self.fail(
                s,
                StepError::new(
                    Code::StepTimeout,
                    format!(
                        "timed out after {}",
                        crate::duration::format_ms(s.timeout_ms.unwrap_or(0))
                    ),
                ),
                0,
            );
        }
        if cancelled.load(Ordering::SeqCst) || token.stop().is_some() {
            return self.stopped(s, token);
        }
        if let Some((step, approval)) = waiting.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Res::Waiting(step, approval);
        }
        self.emit(
            Event::new("step.succeeded")
                .step(&s.id)
                .data(json!({ "children": children.len() })),
        );
        Res::Ok
    }

    fn approval(&self, s: &PlanStep, gate: &PlanApprovalGate, item: Option<&Json>) -> Res {
        let message = match gate.message.as_ref().map(|m| self.text(m, item)).transpose() {
            Ok(m) => m,
            Err(e) => return self.fail(s, e, 0),
        };
        let since = self.before.step(&s.id).and_then(|p| p.started.clone());
        let verdict = self.gates.decide(s, gate, since.as_deref());
        for note in verdict.notes {
            let key = note.get("key").and_then(|k| k.as_str()).map(str::to_string);
            let fresh = key.is_none_or(|k| self.recorded.lock().unwrap_or_else(|p| p.into_inner()).insert(k));
            if fresh {
                self.emit(note.step(&s.id));
            }
        }
        match verdict.decision {
            GateDecision::Approved { data } => {
                self.emit(Event::new("gate.approved").step(&s.id).data(data));
                self.emit(
                    Event::new("step.succeeded")
                        .step(&s.id)
                        .data(json!({ "gate": gate.id })),
                );
                Res::Ok
            }
            GateDecision::Waiting => {
                let already = self.before.step(&s.id).is_some_and(|p| p.status == StepStatus::Waiting);
                if !already {
                    let rule = self.plan.approvals.iter().find(|a| a.id == gate.id);
                    let mut data = json!({ "gate": gate.id });
                    if let Some(r) = rule {
                        data["grants"] = json!(r.grants);
                        data["requiredCount"] = json!(r.required_count);
                        if let Some(ms) = r.expires_after_ms {
                            data["expiresAfterMs"] = json!(ms);
                        }
                    }
                    let msg = message.unwrap_or_else(|| format!("waiting for approval `{}`", gate.id));
                    self.emit(Event::new("gate.waiting").step(&s.id).msg(msg).data(data));
                }
                Res::Waiting(s.id.clone(), gate.id.clone())
            }
            GateDecision::Failed { code, message } => self.fail(s, StepError::new(code, message), 0),
        }
    }

    fn policy(&self, s: &PlanStep, item: Option<&Json>) -> Res {
        let p = s.policy.as_ref().expect("policy step has a policy");
        let verdict = match &p.expr {
            Text::Resolved(v) => Ok(v == "true"),
            Text::Template { template, .. } => expr::eval_bool(template, &self.ctx(item)),
        };
        match verdict {
            Err(m) => self.fail(s, StepError::new(Code::ExprFailed, format!("policy: {m}")), 0),
            Ok(true) => {
                self.emit(Event::new("step.succeeded").step(&s.id).data(json!({ "policy": true })));
                Res::Ok
            }
            Ok(false) => {
                let message = match p.message.as_ref().map(|m| self.text(m, item)).transpose() {
                    Ok(m) => m.unwrap_or_else(|| "policy expression is false".into()),
                    Err(e) => return self.fail(s, e, 0),
                };
                let e = StepError::new(Code::PolicyFailed, message);
                if p.fail_action == "continue" {
                    self.emit(
                        Event::new("step.failed")
                            .step(&s.id)
                            .level("warn")
                            .msg(e.message.clone())
                            .data(json!({ "code": e.code.as_str(), "policy": false, "continued": true })),
                    );
                    return Res::Skipped;
                }
                self.fail(s, e, 0)
            }
        }
    }
}

/// Step outputs as templates see them (`steps.<id>.outputs.<key>`), read when a template asks,
/// so a context costs the same however many steps came before.
#[derive(Debug)]
struct Outputs(Mutex<BTreeMap<String, Map<String, Json>>>);

impl minijinja::value::Object for Outputs {
    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        let id = key.as_str()?;
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).map(|o| expr::value(&json!({ "outputs": o })))
    }
}

/// What a successful attempt leaves: outputs, artifacts, and the exit code (none for builtins).
type Finished = (Map<String, Json>, Vec<state::Artifact>, Option<i32>);

enum Attempt {
    Failed(StepError),
    Stopped,
}

fn mismatch(path: &str, what: &str) -> StepError {
    StepError::new(
        Code::PackHashMismatch,
        format!("pack file `{path}` {what}; the plan that was approved no longer matches"),
    )
}

/// The `data.key`s of notes already in `events`.
pub fn recorded_keys(events: &[Event]) -> std::collections::HashSet<String> {
    events
        .iter()
        .filter_map(|e| e.get("key").and_then(|k| k.as_str()).map(str::to_string))
        .collect()
}
