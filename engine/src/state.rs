//! Run state as the fold of its events: the one function every reader (CLI, daemon, resume)
//! uses to learn what a run is doing. Pure: events in, state out.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::event::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Planned,
    Waiting,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Planned => "planned",
            RunStatus::Waiting => "waiting",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Pending,
    Running,
    Waiting,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl StepStatus {
    /// Finished for good: a resumed run does not run it again.
    pub fn is_done(self) -> bool {
        matches!(self, StepStatus::Succeeded | StepStatus::Failed | StepStatus::Skipped)
    }
}

/// An artifact a step left, as recorded in its `step.succeeded` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Artifact {
    pub name: String,
    /// Path relative to the run directory, e.g. `artifacts/scan/report`.
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepState {
    pub id: String,
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub outputs: Map<String, Json>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The run whose result this step reused (`step.reused`, `resumeOf`) instead of running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    pub state: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// The gate step the run waits at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_gate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Steps in the order they were first seen.
    pub steps: Vec<StepState>,
    /// Sequence number the next event gets.
    pub next_seq: u64,
    /// How many times the run was resumed after an interruption.
    pub resumed: u32,
}

impl RunState {
    pub fn step(&self, id: &str) -> Option<&StepState> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Outputs of every step that succeeded, by step id (what templates see as `steps`).
    pub fn outputs(&self) -> BTreeMap<String, Map<String, Json>> {
        self.steps
            .iter()
            .filter(|s| s.status == StepStatus::Succeeded)
            .map(|s| (s.id.clone(), s.outputs.clone()))
            .collect()
    }
}

/// Folds events, in order, into the run's state.
pub fn fold(events: &[Event]) -> RunState {
    let mut st = RunState {
        state: RunStatus::Planned,
        plan_hash: None,
        started: None,
        finished: None,
        waiting_gate: None,
        code: None,
        error: None,
        steps: Vec::new(),
        next_seq: 0,
        resumed: 0,
    };
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for e in events {
        st.next_seq = st.next_seq.max(e.seq.saturating_add(1));
        // A chaos injection is a note: it neither starts a step nor moves the run.
        if e.kind == crate::chaos::EVENT {
            continue;
        }
        let text = |k: &str| e.get(k).and_then(Json::as_str).map(str::to_string);
        if let Some(id) = &e.step {
            let i = *index.entry(id.clone()).or_insert_with(|| {
                st.steps.push(StepState {
                    id: id.clone(),
                    status: StepStatus::Pending,
                    attempts: 0,
                    started: None,
                    finished: None,
                    outputs: Map::new(),
                    artifacts: Vec::new(),
                    code: None,
                    error: None,
                    reused_from: None,
                });
                st.steps.len() - 1
            });
            let s = &mut st.steps[i];
            let attempt = e.get("attempt").and_then(Json::as_u64).map(|a| a as u32);
            match e.kind.as_str() {
                "step.started" => {
                    s.status = StepStatus::Running;
                    s.attempts = attempt.unwrap_or(s.attempts.saturating_add(1));
                    s.started.get_or_insert_with(|| e.ts.clone());
                    s.code = None;
                    s.error = None;
                }
                "step.succeeded" => {
                    s.status = StepStatus::Succeeded;
                    s.finished = Some(e.ts.clone());
                    if let Some(Json::Object(o)) = e.get("outputs") {
                        s.outputs = o.clone();
                    }
                    if let Some(a) = e.get("artifacts") {
                        s.artifacts = serde_json::from_value(a.clone()).unwrap_or_default();
                    }
                }
                // Succeeded in the run resumed (`resumeOf`): its outputs and artifacts, carried over.
                "step.reused" => {
                    s.status = StepStatus::Succeeded;
                    s.started.get_or_insert_with(|| e.ts.clone());
                    s.finished = Some(e.ts.clone());
                    s.reused_from = text("from");
                    if let Some(Json::Object(o)) = e.get("outputs") {
                        s.outputs = o.clone();
                    }
                    if let Some(a) = e.get("artifacts") {
                        s.artifacts = serde_json::from_value(a.clone()).unwrap_or_default();
                    }
                }
                "step.failed" => {
                    s.status = StepStatus::Failed;
                    s.finished = Some(e.ts.clone());
                    s.code = text("code");
                    s.error = e.msg.clone();
                }
                "step.retrying" => {
                    s.code = text("code");
                    s.error = e.msg.clone();
                }
                "step.skipped" => {
                    s.status = StepStatus::Skipped;
                    s.finished = Some(e.ts.clone());
                }
                "step.cancelled" => {
                    s.status = StepStatus::Cancelled;
                    s.finished = Some(e.ts.clone());
                }
                "gate.waiting" | "run.waiting" => {
                    s.status = StepStatus::Waiting;
                    s.started.get_or_insert_with(|| e.ts.clone());
                    st.state = RunStatus::Waiting;
                    st.waiting_gate = Some(id.clone());
                }
                _ => {}
            }
            if e.kind == "step.started" && st.state == RunStatus::Waiting && st.waiting_gate.as_deref() != Some(id) {
                st.state = RunStatus::Running;
                st.waiting_gate = None;
            }
            // Only progress leaves a wait; notes such as approval.verdict do not.
            let progress = matches!(
                e.kind.as_str(),
                "gate.approved"
                    | "step.started"
                    | "step.succeeded"
                    | "step.reused"
                    | "step.failed"
                    | "step.skipped"
                    | "step.cancelled"
            );
            if e.kind == "gate.approved" || (st.waiting_gate.as_deref() == Some(id) && progress) {
                if st.state == RunStatus::Waiting {
                    st.state = RunStatus::Running;
                }
                st.waiting_gate = None;
            }
            continue;
        }
        match e.kind.as_str() {
            "run.planned" => {
                st.plan_hash = text("planHash").or(st.plan_hash.take());
            }
            "run.started" => {
                st.state = RunStatus::Running;
                st.started.get_or_insert_with(|| e.ts.clone());
                st.plan_hash = text("planHash").or(st.plan_hash.take());
            }
            "run.resumed" | "run.recovered" => {
                if !st.state.is_terminal() {
                    st.state = RunStatus::Running;
                    st.waiting_gate = None;
                }
                st.resumed += u32::from(e.kind == "run.resumed");
            }
            "run.succeeded" | "run.failed" | "run.cancelled" => {
                st.state = match e.kind.as_str() {
                    "run.succeeded" => RunStatus::Succeeded,
                    "run.failed" => RunStatus::Failed,
                    _ => RunStatus::Cancelled,
                };
                st.finished = Some(e.ts.clone());
                st.waiting_gate = None;
                st.code = text("code");
                st.error = e.msg.clone().filter(|_| e.kind != "run.succeeded");
            }
            _ => {}
        }
    }
    st
}

/// The decisions of a run's Rego policy gates (`policy.evaluated` events), oldest first: `{step,
/// file, sha256, query, inputSha256, result, allow, deny, error}` as recorded.
pub fn policies(events: &[Event]) -> Vec<Json> {
    events
        .iter()
        .filter(|e| e.kind == "policy.evaluated")
        .map(|e| {
            let mut d = e.data.clone().unwrap_or_default();
            if let Some(o) = d.as_object_mut() {
                o.remove("gate");
                o.insert("step".into(), Json::from(e.step.clone()));
            }
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(seq: u64, kind: &str, step: Option<&str>, data: Json) -> Event {
        let mut e = Event::new(kind).data(data);
        e.seq = seq;
        e.ts = format!("t{seq}");
        e.step = step.map(str::to_string);
        e
    }

    #[test]
    fn fold_follows_a_run_through_a_gate_to_success() {
        let events = vec![
            ev(0, "run.started", None, json!({"planHash": "sha256:x"})),
            ev(1, "step.started", Some("a"), json!({"attempt": 1})),
            ev(2, "step.succeeded", Some("a"), json!({"outputs": {"k": "v"}})),
            ev(3, "gate.waiting", Some("g"), json!({})),
        ];
        let st = fold(&events);
        assert_eq!(st.state, RunStatus::Waiting);
        assert_eq!(st.waiting_gate.as_deref(), Some("g"));
        assert_eq!(st.outputs()["a"]["k"], "v");
        let mut more = events.clone();
        more.push(ev(4, "gate.approved", Some("g"), json!({})));
        more.push(ev(5, "step.succeeded", Some("g"), json!({})));
        more.push(ev(6, "run.succeeded", None, json!({})));
        let st = fold(&more);
        assert_eq!(st.state, RunStatus::Succeeded);
        assert_eq!(st.next_seq, 7);
        assert!(st.waiting_gate.is_none());
    }

    #[test]
    fn a_reused_step_succeeded_with_the_outputs_it_carries() {
        let events = vec![
            ev(0, "run.started", None, json!({})),
            ev(
                1,
                "step.reused",
                Some("a"),
                json!({"from": "r0", "outputs": {"k": "v"}, "artifacts": [{"name": "n", "path": "artifacts/a/n", "sha256": "00", "size": 1}]}),
            ),
        ];
        let st = fold(&events);
        let a = st.step("a").unwrap();
        assert_eq!(
            (a.status, a.attempts, a.reused_from.as_deref()),
            (StepStatus::Succeeded, 0, Some("r0"))
        );
        assert_eq!(st.outputs()["a"]["k"], "v");
        assert_eq!(a.artifacts[0].path, "artifacts/a/n");
    }

    #[test]
    fn retries_count_attempts() {
        let events = vec![
            ev(0, "run.started", None, json!({})),
            ev(1, "step.started", Some("a"), json!({"attempt": 1})),
            ev(
                2,
                "step.retrying",
                Some("a"),
                json!({"attempt": 1, "code": "ERR_STEP_FAILED"}),
            ),
            ev(3, "step.started", Some("a"), json!({"attempt": 2})),
            ev(
                4,
                "step.failed",
                Some("a"),
                json!({"attempt": 2, "code": "ERR_STEP_FAILED"}),
            ),
            ev(5, "run.failed", None, json!({"code": "ERR_STEP_FAILED"})),
        ];
        let st = fold(&events);
        assert_eq!(st.step("a").unwrap().attempts, 2);
        assert_eq!(st.state, RunStatus::Failed);
        assert_eq!(st.code.as_deref(), Some("ERR_STEP_FAILED"));
    }
}
