//! The walk of the step graph: sequences, `when`, steps already finished in an earlier attempt
//! (or reused from a resumed run), skips, failures, stops, and parallel groups and maps run on
//! scoped threads under the global limit. Dispatches each step by its kind; never builds or
//! runs a command itself.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::code::Code;
use crate::event::Event;
use crate::expr;
use crate::plan::{Cond, PlanStep, StepKind};
use crate::state::StepStatus;

use super::artifacts::StepError;
use super::control::{CancelToken, Stop};
use super::{Res, Runner};

impl Runner<'_> {
    /// Runs `steps` one after another until one fails (unless it may), waits or is stopped.
    pub(super) fn sequence(&self, steps: &[PlanStep], item: Option<&Json>, token: &CancelToken) -> Res {
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

    /// One step of any kind: reused from an earlier attempt, skipped by `when`, or run by its kind.
    pub(super) fn step(&self, s: &PlanStep, item: Option<&Json>, token: &CancelToken) -> Res {
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
        if let Some(res) = self.reuse(s) {
            return res;
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
        match &s.kind {
            StepKind::Run(run) => self.run_step(s, run, item, token),
            StepKind::Parallel(g) => {
                let children: Vec<(&PlanStep, Option<&Json>)> = g.steps.iter().map(|c| (c, item)).collect();
                self.group(s, &children, g.max_parallel, g.continue_on_error, token)
            }
            StepKind::Map(m) => {
                let children: Vec<(&PlanStep, Option<&Json>)> =
                    m.steps.iter().zip(m.items.iter()).map(|(c, i)| (c, Some(i))).collect();
                self.group(s, &children, m.max_parallel, false, token)
            }
            StepKind::Approval(gate) => self.approval(s, gate, item),
            StepKind::Policy(p) => self.policy(s, p, item),
        }
    }

    /// Records `s` and what it holds as skipped.
    pub(super) fn skip(&self, s: &PlanStep, why: &str) {
        self.emit(Event::new("step.skipped").step(&s.id).msg(why));
        for c in s.children() {
            if self.before.step(&c.id).is_none_or(|p| !p.status.is_done()) {
                self.skip(c, "its group was skipped");
            }
        }
    }

    /// Records `s` as failed with `e` (`attempt` 0 when attempts do not apply).
    pub(super) fn fail(&self, s: &PlanStep, e: StepError, attempt: u32) -> Res {
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
    pub(super) fn stopped(&self, s: &PlanStep, token: &CancelToken) -> Res {
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

    /// A parallel group or a map: its children on up to `max_parallel` threads; the first failure
    /// stops the rest unless failures may continue.
    pub(super) fn group(
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
                    .data(json!({ "kind": s.kind.name(), "children": children.len() })),
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
}
