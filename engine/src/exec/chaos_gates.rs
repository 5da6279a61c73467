//! The gatekeeper a chaos plan wraps around a run's gates: where a delay-approvals rule fires,
//! the approvals are not looked at until the delay has passed since the gate was reached, and
//! the gate waits meanwhile. Whether the rule fires is `chaos`'s; what the gate decides is the
//! inner gatekeeper's.

use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::chaos::Chaos;
use crate::plan::{PlanApprovalGate, PlanStep};

use super::{GateDecision, GateVerdict, Gatekeeper};

/// A gatekeeper that, where a delay-approvals rule fires, does not look at the approvals until
/// the delay has passed since the gate was reached; the gate waits meanwhile. Each delay is
/// recorded once, as a note (`pack.chaos.injected`) with the verdict.
pub struct ChaosGates<'a> {
    pub inner: &'a dyn Gatekeeper,
    pub chaos: Option<&'a Chaos>,
    pub run: &'a str,
}

impl Gatekeeper for ChaosGates<'_> {
    fn decide(&self, step: &PlanStep, gate: &PlanApprovalGate, waiting_since: Option<&str>) -> GateVerdict {
        let Some(inj) = self.chaos.and_then(|c| c.delay_at_gate(self.run, &step.id)) else {
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
