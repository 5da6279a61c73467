//! What one run's events mean for the metrics: a `Track` per run under way keeps the little it
//! must remember between events (its pack, when it and its steps started, which steps are
//! gates) and turns each event into the `Happening`s the counters and histograms record.
//! Pure: no registry, no clock (durations are the differences of the events' timestamps),
//! and it keeps nothing of an event's message, output or data beyond names from the plan.

use std::collections::HashMap;
use std::time::SystemTime;

use stella_engine::event::Event;
use stella_engine::plan::{Plan, StepKind};

/// How a run or a step ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// The outcome a `run.*` or `step.*` event type ends with, if it ends anything.
    fn of(kind: &str) -> Option<Outcome> {
        match kind.split_once('.').map(|(_, end)| end) {
            Some("succeeded") => Some(Outcome::Succeeded),
            Some("failed") => Some(Outcome::Failed),
            Some("cancelled") => Some(Outcome::Cancelled),
            _ => None,
        }
    }
}

/// A step's kind, as the `kind` label says it: approval and policy gates are both `gate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Run,
    Parallel,
    Map,
    Gate,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Run => "run",
            Kind::Parallel => "parallel",
            Kind::Map => "map",
            Kind::Gate => "gate",
        }
    }

    /// The kind a `step.started` event or `plan.json` names (`run`, `map`, `gate.approval`, …).
    fn named(name: &str) -> Option<Kind> {
        match name {
            "run" => Some(Kind::Run),
            "parallel" => Some(Kind::Parallel),
            "map" => Some(Kind::Map),
            n if n.starts_with("gate") => Some(Kind::Gate),
            _ => None,
        }
    }
}

/// Something the metrics record. `pack` is the pack's name when the run made it known.
#[derive(Debug, Clone, PartialEq)]
pub enum Happening {
    RunEnded {
        pack: Option<String>,
        outcome: Outcome,
        seconds: f64,
    },
    StepEnded {
        pack: Option<String>,
        kind: Kind,
        outcome: Outcome,
        seconds: f64,
    },
    Retried {
        pack: Option<String>,
    },
    GateResolved {
        pack: Option<String>,
        gate: String,
        seconds: f64,
    },
}

/// What one run's metrics need to remember between its events.
#[derive(Debug, Default)]
pub struct Track {
    pack: Option<String>,
    /// The run's first event (`run.planned`): its duration counts from there.
    first: Option<SystemTime>,
    /// Step kinds, from the plan (or, before it is known, from the events).
    kinds: HashMap<String, Kind>,
    /// Approval gate steps and the approval each asks for.
    gates: HashMap<String, String>,
    /// When each step under way started (its first attempt, or its gate's wait).
    started: HashMap<String, SystemTime>,
    /// When each gate step under way began to wait.
    waiting: HashMap<String, SystemTime>,
}

impl Track {
    /// The track of a run whose events so far are `prior` (what they did is not recorded again).
    pub fn resumed(prior: &[Event]) -> Track {
        let mut t = Track::default();
        for e in prior {
            t.event(e);
        }
        t
    }

    /// The run's plan: its pack's name, and the kind of every step (map children included).
    pub fn planned(&mut self, plan: &Plan) {
        self.pack = Some(plan.pack.name.clone());
        for s in plan.all_steps() {
            self.kinds
                .insert(s.id.clone(), Kind::named(s.kind.name()).unwrap_or(Kind::Run));
            if let StepKind::Approval(g) = &s.kind {
                self.gates.insert(s.id.clone(), g.id.clone());
            }
        }
    }

    /// What `e`, the run's next event, means for the metrics.
    pub fn event(&mut self, e: &Event) -> Vec<Happening> {
        let ts = humantime::parse_rfc3339(&e.ts).ok();
        let text = |k: &str| e.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let since = |start: Option<SystemTime>| match (start, ts) {
            (Some(a), Some(b)) => b.duration_since(a).map_or(0.0, |d| d.as_secs_f64()),
            _ => 0.0,
        };
        let pack = || self.pack.clone();
        let Some(step) = e.step.clone() else {
            match e.kind.as_str() {
                "run.planned" => self.first = self.first.or(ts),
                "run.started" => {
                    self.first = self.first.or(ts);
                    self.pack = self.pack.take().or_else(|| text("pack"));
                }
                kind => {
                    if let Some(outcome) = Outcome::of(kind).filter(|_| kind.starts_with("run.")) {
                        return vec![Happening::RunEnded {
                            pack: pack(),
                            outcome,
                            seconds: since(self.first),
                        }];
                    }
                }
            }
            return Vec::new();
        };
        match e.kind.as_str() {
            "step.started" => {
                if let Some(k) = text("kind").as_deref().and_then(Kind::named) {
                    self.kinds.entry(step.clone()).or_insert(k);
                }
                if let Some(t) = ts {
                    self.started.entry(step).or_insert(t);
                }
                Vec::new()
            }
            "gate.waiting" => {
                self.kinds.entry(step.clone()).or_insert(Kind::Gate);
                if let Some(g) = text("gate") {
                    self.gates.entry(step.clone()).or_insert(g);
                }
                if let Some(t) = ts {
                    self.started.entry(step.clone()).or_insert(t);
                    self.waiting.entry(step).or_insert(t);
                }
                Vec::new()
            }
            "approval.verdict" => {
                self.kinds.entry(step).or_insert(Kind::Gate);
                Vec::new()
            }
            "gate.approved" => {
                let gate = text("gate").or_else(|| self.gates.get(&step).cloned());
                let waited = self.waiting.remove(&step);
                gate.map(|gate| Happening::GateResolved {
                    pack: pack(),
                    gate,
                    seconds: since(waited),
                })
                .into_iter()
                .collect()
            }
            "step.retrying" => vec![Happening::Retried { pack: pack() }],
            kind => {
                let Some(outcome) = Outcome::of(kind).filter(|_| kind.starts_with("step.")) else {
                    return Vec::new();
                };
                let started = self.started.remove(&step);
                let waited = self.waiting.remove(&step);
                let mut out = Vec::new();
                // A rejected or expired approval gate is resolved by its failure.
                if outcome == Outcome::Failed
                    && let Some(gate) = self.gates.get(&step)
                {
                    out.push(Happening::GateResolved {
                        pack: pack(),
                        gate: gate.clone(),
                        seconds: since(waited),
                    });
                }
                let kind = self
                    .kinds
                    .get(&step)
                    .copied()
                    .or_else(|| (e.get("gate").is_some() || e.get("policy").is_some()).then_some(Kind::Gate));
                // A step cancelled before it started never ran: it has no duration to record.
                let ran = started.is_some() || outcome != Outcome::Cancelled;
                if let Some(kind) = kind.filter(|_| ran) {
                    out.push(Happening::StepEnded {
                        pack: pack(),
                        kind,
                        outcome,
                        seconds: since(started),
                    });
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(ts_s: u64, kind: &str, step: Option<&str>, data: serde_json::Value) -> Event {
        let mut e = Event::new(kind).data(data);
        if let Some(s) = step {
            e = e.step(s);
        }
        e.ts =
            humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(ts_s)).to_string();
        e
    }

    #[test]
    fn a_run_with_a_retry_a_group_and_a_gate_says_what_happened() {
        let mut t = Track::default();
        let mut all = Vec::new();
        let events = [
            ev(100, "run.planned", None, json!({"pack": "packs/demo"})),
            ev(101, "run.started", None, json!({"pack": "demo"})),
            ev(101, "step.started", Some("build"), json!({"attempt": 1, "kind": "run"})),
            ev(103, "step.retrying", Some("build"), json!({"attempt": 1})),
            ev(104, "step.started", Some("build"), json!({"attempt": 2, "kind": "run"})),
            ev(106, "step.succeeded", Some("build"), json!({"attempt": 2})),
            ev(106, "step.started", Some("all"), json!({"kind": "map", "children": 0})),
            ev(107, "step.succeeded", Some("all"), json!({"children": 0})),
            ev(110, "gate.waiting", Some("review"), json!({"gate": "security"})),
            ev(110, "run.waiting", Some("review"), json!({"gate": "security"})),
            ev(2000, "approval.verdict", Some("review"), json!({"verdict": "counted"})),
            ev(2010, "gate.approved", Some("review"), json!({"gate": "security"})),
            ev(2010, "step.succeeded", Some("review"), json!({"gate": "security"})),
            ev(2011, "run.succeeded", None, json!({"durationMs": 1})),
        ];
        for e in &events {
            all.extend(t.event(e));
        }
        let pack = Some("demo".to_string());
        assert_eq!(
            all,
            vec![
                Happening::Retried { pack: pack.clone() },
                Happening::StepEnded {
                    pack: pack.clone(),
                    kind: Kind::Run,
                    outcome: Outcome::Succeeded,
                    seconds: 5.0
                },
                Happening::StepEnded {
                    pack: pack.clone(),
                    kind: Kind::Map,
                    outcome: Outcome::Succeeded,
                    seconds: 1.0
                },
                Happening::GateResolved {
                    pack: pack.clone(),
                    gate: "security".into(),
                    seconds: 1900.0
                },
                Happening::StepEnded {
                    pack: pack.clone(),
                    kind: Kind::Gate,
                    outcome: Outcome::Succeeded,
                    seconds: 1900.0
                },
                Happening::RunEnded {
                    pack,
                    outcome: Outcome::Succeeded,
                    seconds: 1911.0
                },
            ]
        );
    }

    #[test]
    fn a_run_resumed_after_a_restart_counts_from_its_recorded_start() {
        let prior = [
            ev(100, "run.planned", None, json!({})),
            ev(100, "run.started", None, json!({"pack": "demo"})),
            ev(120, "gate.waiting", Some("review"), json!({"gate": "security"})),
        ];
        let mut t = Track::resumed(&prior);
        let got: Vec<Happening> = [
            ev(400, "run.resumed", None, json!({})),
            ev(
                400,
                "step.failed",
                Some("review"),
                json!({"code": "ERR_PACK_APPROVAL_REJECTED"}),
            ),
            ev(401, "run.failed", None, json!({})),
        ]
        .iter()
        .flat_map(|e| t.event(e))
        .collect();
        let pack = Some("demo".to_string());
        assert_eq!(
            got,
            vec![
                Happening::GateResolved {
                    pack: pack.clone(),
                    gate: "security".into(),
                    seconds: 280.0
                },
                Happening::StepEnded {
                    pack: pack.clone(),
                    kind: Kind::Gate,
                    outcome: Outcome::Failed,
                    seconds: 280.0
                },
                Happening::RunEnded {
                    pack,
                    outcome: Outcome::Failed,
                    seconds: 301.0
                },
            ]
        );
    }

    #[test]
    fn a_step_cancelled_before_it_started_has_no_duration() {
        let mut t = Track::default();
        t.event(&ev(1, "run.started", None, json!({"pack": "p"})));
        t.event(&ev(1, "step.started", Some("a"), json!({"kind": "run"})));
        let got: Vec<Happening> = [
            ev(2, "step.cancelled", Some("b"), json!({})),
            ev(3, "step.cancelled", Some("a"), json!({})),
        ]
        .iter()
        .flat_map(|e| t.event(e))
        .collect();
        assert_eq!(
            got,
            vec![Happening::StepEnded {
                pack: Some("p".into()),
                kind: Kind::Run,
                outcome: Outcome::Cancelled,
                seconds: 2.0
            }]
        );
    }

    #[test]
    fn a_run_refused_before_planning_ends_with_no_pack_and_no_duration() {
        let mut t = Track::default();
        assert_eq!(
            t.event(&ev(5, "run.failed", None, json!({"code": "ERR_REQUEST_INVALID"}))),
            vec![Happening::RunEnded {
                pack: None,
                outcome: Outcome::Failed,
                seconds: 0.0
            }]
        );
    }
}
