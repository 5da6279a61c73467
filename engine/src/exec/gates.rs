//! Gates: what decides an approval gate (`Gatekeeper`: locally a flag, in the daemon signed
//! approval files) and how the walk meets approval and policy gates (`gate.waiting`,
//! `gate.approved`, a policy's verdict). Never reads approvals or the ledger itself.

use serde_json::{Value as Json, json};

use crate::code::Code;
use crate::event::Event;
use crate::expr;
use crate::plan::{PlanApprovalGate, PlanPolicy, PlanStep, Text};
use crate::state::StepStatus;

use super::artifacts::StepError;
use super::{Res, Runner};

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

/// The `data.key`s of notes already in `events`.
pub fn recorded_keys(events: &[Event]) -> std::collections::HashSet<String> {
    events
        .iter()
        .filter_map(|e| e.get("key").and_then(|k| k.as_str()).map(str::to_string))
        .collect()
}

impl Runner<'_> {
    /// An approval gate: the gatekeeper's verdict, its notes recorded once, then pass, wait or fail.
    pub(super) fn approval(&self, s: &PlanStep, gate: &PlanApprovalGate, item: Option<&Json>) -> Res {
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

    /// A policy gate: its expression decides; false halts the run or, with `continue`, skips on.
    pub(super) fn policy(&self, s: &PlanStep, p: &PlanPolicy, item: Option<&Json>) -> Res {
        let verdict = match (&p.expr, &p.rego) {
            (_, Some(r)) => return self.rego_gate(s, p, r, item),
            (Some(Text::Resolved(v)), None) => Ok(v == "true"),
            (Some(Text::Template { template, .. }), None) => expr::eval_bool(template, &self.ctx(item)),
            (None, None) => Err("the policy gate has neither expr nor rego".to_string()),
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
                self.policy_denied(s, p, message)
            }
        }
    }

    /// A policy gate that said no, with `message`: `ERR_POLICY_FAILED` halts the run, or with
    /// `failAction: continue` is recorded as a warning and the run goes on.
    pub(super) fn policy_denied(&self, s: &PlanStep, p: &PlanPolicy, message: String) -> Res {
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
