//! The executor: the engine's one way to run a plan. It takes the plan, the pack's files, the
//! events of an earlier interrupted attempt (to resume), gates and event sinks, and walks the
//! step graph: sequences, parallel groups, maps, gates, retries, timeouts. Synchronous;
//! threads for parallel steps; never touches git. This file owns the entry (`execute`), the
//! runner's state and a run's first and last events; the walk, run steps, commands, gates and
//! the workspace each have a room of their own.

mod artifacts;
mod attempt;
pub mod chaos_gates;
mod command;
mod config;
pub mod control;
mod gates;
mod namespaces;
mod policy;
mod process;
mod reuse;
pub mod sandbox;
mod secret_files;
mod walk;
mod workspace;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value as Json, json};

use crate::chaos::{self, Action, Point};
use crate::code::Code;
use crate::event::{Emitter, Event, EventSink};
use crate::expr::{self, Flavor};
use crate::pack::PackFiles;
use crate::plan::{Plan, PlanStep, TemplateFlavor, Text};
use crate::redact::Redactor;
use crate::state::{self, RunState};

pub use artifacts::StepError;
pub use config::ExecConfig;
pub use control::{CancelToken, Limiter, Stop};
pub use gates::{GateDecision, GateVerdict, Gatekeeper, LocalGates, recorded_keys};
pub use process::{shutdown, shutting_down};
pub use reuse::Reuse;
pub use secret_files::clear_secret_files;

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
    let facts = Mutex::new(policy::Facts::new(&before, prior));
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
        facts,
        files,
    };
    runner.run(files)
}

/// How a step, a sequence or the whole walk ended.
enum Res {
    Ok,
    Skipped,
    Failed(StepError),
    Cancelled,
    Waiting(String, String),
}

/// One run being executed: what the walk, run steps, gates and the workspace share. Its
/// methods live in the rooms that own each idea.
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
    /// What a Rego policy gate may read of the run so far.
    facts: Mutex<policy::Facts>,
    files: &'a PackFiles,
}

impl Runner<'_> {
    fn emit(&self, e: Event) {
        self.facts.lock().unwrap_or_else(|p| p.into_inner()).note(&e);
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

/// Why an attempt did not finish: it failed, or it was stopped (timeout or cancel).
enum Attempt {
    Failed(StepError),
    Stopped,
}
