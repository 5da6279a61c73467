//! What the daemon tells the outside about itself: Prometheus metrics (`metrics`) and the
//! health probes (`health`), held together by `Telemetry`, the one handle the daemon creates,
//! updates, and shares (through an `Arc`) with whatever serves `/metrics`, `/healthz` and
//! `/readyz`. It is fed in two ways: each scan of the ledger sets the gauges and readiness
//! (`scanned`), so they are right from the first scan after a restart; and as the engine's
//! `runs::Observer` it is told of every event this runner records, which moves the counters
//! and histograms (from zero at each start) and keeps the gauges live between scans. Never
//! serves anything, reads nothing from disk, and takes no label value but names from a plan.

mod census;
pub mod health;
mod labels;
pub mod metrics;
mod track;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use stella_engine::event::Event;
use stella_engine::plan::Plan;
use stella_engine::runs::{Observer, Summary};

pub use census::Counts;
pub use health::Health;
pub use metrics::Metrics;

use census::Census;
use track::Track;

/// The daemon's metrics and health, and what moves them.
pub struct Telemetry {
    pub metrics: Metrics,
    pub health: Health,
    census: Mutex<Census>,
    /// One track per run being worked on now (at most the daemon's `maxRuns`).
    tracks: Mutex<HashMap<String, Track>>,
}

impl Telemetry {
    /// Nothing seen yet; `remote`: the daemon works with a remote.
    pub fn new(remote: bool) -> Telemetry {
        Telemetry {
            metrics: Metrics::new(),
            health: Health::new(remote),
            census: Mutex::new(Census::default()),
            tracks: Mutex::new(HashMap::new()),
        }
    }

    /// A scan of the ledger found `runs`: the census is theirs now, and the daemon is ready.
    pub fn scanned<'a>(&self, runs: impl IntoIterator<Item = &'a Summary>) {
        let mut census = self.census.lock().unwrap_or_else(|p| p.into_inner());
        *census = Census::of(runs);
        // Published under the census lock, so counts are never published out of order.
        self.publish(census.counts());
        self.health.looked(Instant::now());
    }

    /// The daemon looked at the branch and found nothing changed since its last scan.
    pub fn unchanged(&self) {
        self.health.looked(Instant::now());
    }

    /// An exchange with the remote ended: it was reached (`true`) or not.
    pub fn exchanged(&self, reached: bool) {
        self.health.exchanged(reached, Instant::now());
    }

    fn publish(&self, counts: Counts) {
        self.metrics.set_counts(counts);
        self.health.set_counts(counts);
    }

    fn tracks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Track>> {
        self.tracks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Observer for Telemetry {
    fn begin(&self, run: &str, prior: &[Event]) {
        self.tracks().insert(run.to_string(), Track::resumed(prior));
    }

    fn planned(&self, run: &str, plan: &Plan) {
        self.tracks().entry(run.to_string()).or_default().planned(plan);
    }

    fn recorded(&self, run: &str, event: &Event) {
        // Log lines are most events and change nothing here.
        if event.kind.starts_with("step.log") {
            return;
        }
        let happened = self.tracks().entry(run.to_string()).or_default().event(event);
        for h in &happened {
            self.metrics.record(h);
        }
        let mut census = self.census.lock().unwrap_or_else(|p| p.into_inner());
        if census.event(run, event) {
            self.publish(census.counts());
        }
    }

    fn end(&self, run: &str) {
        self.tracks().remove(run);
    }
}

#[cfg(test)]
mod tests;
