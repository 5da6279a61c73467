//! Which runs are queued, executing or waiting at a gate: taken whole from each scan of the
//! ledger (so it is right from the first scan after a restart, whatever this process saw),
//! and moved on by the events recorded between scans. Holds one small entry per unfinished
//! run; never reads anything itself.

use std::collections::HashMap;

use stella_engine::event::Event;
use stella_engine::runs::Summary;
use stella_engine::state::RunStatus;

/// Where an unfinished run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request seen and not started yet (no events, or planned only).
    Queued,
    /// Executing (or interrupted, to be recovered at once).
    Active,
    /// Waiting at a gate.
    Waiting,
}

/// How many runs stand where: the gauges and `/readyz`'s numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub queued: usize,
    pub active: usize,
    pub waiting: usize,
}

/// The unfinished runs and where each stands.
#[derive(Debug, Default)]
pub struct Census {
    runs: HashMap<String, Phase>,
}

impl Census {
    /// The census a scan gives: every valid run that is not finished.
    pub fn of<'a>(runs: impl IntoIterator<Item = &'a Summary>) -> Census {
        let runs = runs
            .into_iter()
            .filter(|s| s.invalid.is_none())
            .filter_map(|s| {
                let phase = match s.facts.status {
                    RunStatus::Planned if s.facts.events == 0 && !s.facts.has_request => return None,
                    RunStatus::Planned => Phase::Queued,
                    RunStatus::Running => Phase::Active,
                    RunStatus::Waiting => Phase::Waiting,
                    RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled => return None,
                };
                Some((s.id.clone(), phase))
            })
            .collect();
        Census { runs }
    }

    /// Moves run `run` on as event `e` says; whether anything changed.
    pub fn event(&mut self, run: &str, e: &Event) -> bool {
        let phase = match e.kind.as_str() {
            "run.planned" => {
                if self.runs.contains_key(run) {
                    return false;
                }
                Phase::Queued
            }
            "run.started" | "run.resumed" | "run.recovered" | "step.started" | "gate.approved" => Phase::Active,
            "run.waiting" => Phase::Waiting,
            "run.succeeded" | "run.failed" | "run.cancelled" => return self.runs.remove(run).is_some(),
            _ => return false,
        };
        self.runs.insert(run.to_string(), phase) != Some(phase)
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for phase in self.runs.values() {
            match phase {
                Phase::Queued => c.queued += 1,
                Phase::Active => c.active += 1,
                Phase::Waiting => c.waiting += 1,
            }
        }
        c
    }
}
