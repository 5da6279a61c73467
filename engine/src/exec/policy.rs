//! Rego policy gates in a run: what the executor has seen that a policy may read (`Facts`:
//! step states, approvals granted, who requested the run), the input document built from it
//! (DESIGN section 14), and the gate itself: evaluated within bounds (`rego::bounded`), the
//! decision recorded as a `policy.evaluated` event. Secrets are never part of the input: the
//! document is built from the plan, the inputs, step outputs and gate events only.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json, json};

use crate::code::Code;
use crate::event::Event;
use crate::plan::{PlanPolicy, PlanRego, PlanStep};
use crate::rego::{self, Policy, bounded};
use crate::state::{RunState, StepStatus};

use super::artifacts::StepError;
use super::{Res, Runner};

/// What the run has shown so far that a policy may read.
#[derive(Debug, Default)]
pub(super) struct Facts {
    steps: BTreeMap<String, Json>,
    approvals: Map<String, Json>,
    requested_by: Option<String>,
}

impl Facts {
    /// The facts of an earlier attempt: its steps' states, its approvals, its requester.
    pub(super) fn new(before: &RunState, prior: &[Event]) -> Facts {
        let mut f = Facts::default();
        for s in &before.steps {
            f.steps.insert(s.id.clone(), status(s.status));
        }
        for e in prior {
            f.note(e);
        }
        f
    }

    /// Keeps what `e` says about a step's state, an approval or the requester.
    pub(super) fn note(&mut self, e: &Event) {
        let state = match e.kind.as_str() {
            "step.started" => Some(StepStatus::Running),
            "gate.waiting" => Some(StepStatus::Waiting),
            "step.succeeded" | "step.reused" => Some(StepStatus::Succeeded),
            "step.failed" => Some(StepStatus::Failed),
            "step.skipped" => Some(StepStatus::Skipped),
            "step.cancelled" => Some(StepStatus::Cancelled),
            "gate.approved" => {
                let id = e
                    .get("gate")
                    .and_then(Json::as_str)
                    .or(e.step.as_deref())
                    .unwrap_or_default();
                let by: Vec<Json> = e
                    .get("approvals")
                    .and_then(Json::as_array)
                    .map(|a| a.iter().map(|v| v["principal"].clone()).collect())
                    .unwrap_or_default();
                let local = e.get("local").and_then(Json::as_bool).unwrap_or(false);
                self.approvals
                    .insert(id.to_string(), json!({ "approved": true, "by": by, "local": local }));
                None
            }
            "run.planned" => {
                self.requested_by = e.get("requestedBy").and_then(Json::as_str).map(str::to_string);
                None
            }
            _ => None,
        };
        if let (Some(state), Some(step)) = (state, &e.step) {
            self.steps.insert(step.clone(), status(state));
        }
    }
}

fn status(s: StepStatus) -> Json {
    serde_json::to_value(s).unwrap_or(Json::Null)
}

impl Runner<'_> {
    /// The input document of a policy gate: `{run, pack, inputs, steps, approvals, requestedBy}`.
    fn policy_input(&self) -> Json {
        let facts = self.facts.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = self.outputs.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut steps = Map::new();
        for s in &self.plan.steps {
            steps.insert(s.id.clone(), json!({ "state": "pending", "outputs": {} }));
        }
        for (id, state) in &facts.steps {
            let outs = outputs.get(id).cloned().unwrap_or_default();
            steps.insert(id.clone(), json!({ "state": state, "outputs": outs }));
        }
        json!({
            "run": { "id": self.cfg.run_id, "planHash": self.plan.hash() },
            "pack": { "name": self.plan.pack.name, "version": self.plan.pack.version },
            "inputs": self.plan.inputs,
            "steps": steps,
            "approvals": facts.approvals,
            "requestedBy": facts.requested_by,
        })
    }

    /// A Rego policy gate: evaluated within bounds; the decision recorded, then pass, fail,
    /// or (`failAction: continue`) skip on.
    pub(super) fn rego_gate(&self, s: &PlanStep, p: &PlanPolicy, r: &PlanRego, item: Option<&Json>) -> Res {
        let Some(text) = self.files.get(&r.file).and_then(|b| std::str::from_utf8(b).ok()) else {
            let e = StepError::new(
                Code::PolicyFailed,
                format!("policy file `{}` is not in the pack", r.file),
            );
            return self.fail(s, e, 0);
        };
        let policy = Policy {
            path: r.file.clone(),
            text: text.to_string(),
            sha256: r.sha256.clone(),
        };
        let input = self.policy_input();
        let digest = rego::input_digest(&input);
        let mut data = json!({
            "gate": "rego", "file": r.file, "sha256": r.sha256, "query": r.query, "inputSha256": digest,
        });
        let decision = bounded::evaluate(&policy, &r.query, &input, self.cfg.policy_limits);
        let message = match &decision {
            Ok(d) => {
                data["result"] = d.result.clone();
                data["allow"] = json!(d.allow);
                data["deny"] = json!(d.deny);
                if d.allow {
                    None
                } else if d.deny.is_empty() {
                    Some(format!("policy {} says {} is {}", r.file, r.query, d.result))
                } else {
                    Some(format!("policy {} denies: {}", r.file, d.deny.join("; ")))
                }
            }
            Err(e) => {
                data["allow"] = json!(false);
                data["error"] = json!(e.to_string());
                Some(format!("policy {}: {e}", r.file))
            }
        };
        let level = if message.is_some() { "warn" } else { "info" };
        let summary = message.clone().unwrap_or_else(|| format!("policy {} allows", r.file));
        self.emit(
            Event::new("policy.evaluated")
                .step(&s.id)
                .level(level)
                .msg(summary)
                .data(data),
        );
        let Some(message) = message else {
            self.emit(
                Event::new("step.succeeded")
                    .step(&s.id)
                    .data(json!({ "policy": true, "inputSha256": digest })),
            );
            return Res::Ok;
        };
        let message = match p.message.as_ref().map(|m| self.text(m, item)).transpose() {
            Ok(Some(m)) => format!("{m}: {message}"),
            Ok(None) => message,
            Err(e) => return self.fail(s, e, 0),
        };
        self.policy_denied(s, p, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, step: Option<&str>, data: Json) -> Event {
        let mut e = Event::new(kind).data(data);
        if let Some(s) = step {
            e = e.step(s);
        }
        e
    }

    #[test]
    fn facts_follow_step_states_approvals_and_the_requester() {
        let prior = vec![
            ev("run.planned", None, json!({ "requestedBy": "ada" })),
            ev("step.started", Some("build"), json!({})),
            ev("step.succeeded", Some("build"), json!({})),
            ev(
                "gate.approved",
                Some("review"),
                json!({ "gate": "release", "approvals": [{ "principal": "bob" }, { "principal": "cy" }] }),
            ),
            ev("step.failed", Some("lint"), json!({ "code": "ERR_STEP_FAILED" })),
        ];
        let before = crate::state::fold(&prior);
        let mut f = Facts::new(&before, &prior);
        f.note(&ev(
            "gate.approved",
            Some("local"),
            json!({ "gate": "dev", "local": true }),
        ));
        assert_eq!(f.requested_by.as_deref(), Some("ada"));
        assert_eq!(f.steps["build"], "succeeded");
        assert_eq!(f.steps["lint"], "failed");
        assert_eq!(
            f.approvals["release"],
            json!({ "approved": true, "by": ["bob", "cy"], "local": false })
        );
        assert_eq!(f.approvals["dev"], json!({ "approved": true, "by": [], "local": true }));
    }
}
