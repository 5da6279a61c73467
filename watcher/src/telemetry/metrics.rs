//! The daemon's Prometheus metrics (DESIGN section 11), with the official client crate: their
//! names, types and labels, what each `Happening` adds to them, the gauges set from a census,
//! and the text exposition. Counters and histograms start from zero with the process; the
//! gauges are whatever the census last said. Never reads the ledger or a clock itself.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::census::Counts;
use super::labels::Bounded;
use super::track::{Happening, Outcome};

/// The content type of `Metrics::encode`'s text: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How many distinct pack names and gate ids the labels take per process;
/// past that, new ones are `_other` (see `labels`).
pub const MAX_PACKS: usize = 50;
pub const MAX_GATES: usize = 100;

/// Run durations (gate waits included): a second to a day.
const RUN_BUCKETS: [f64; 13] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];
/// Step durations: 100 ms to an hour.
const STEP_BUCKETS: [f64; 11] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
/// Gate waits: a minute to a week; 1800 (30 minutes) is a bucket bound, for the alert.
const GATE_BUCKETS: [f64; 11] = [
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 259200.0, 604800.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    pack: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    pack: String,
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PackLabels {
    pack: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    pack: String,
    gate: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    target: String,
    outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The bounded label values, and the finished runs behind the success ratio.
#[derive(Debug)]
struct Seen {
    packs: Bounded,
    gates: Bounded,
    targets: Bounded,
    succeeded: u64,
    finished: u64,
}

/// The registry and every metric in it.
pub struct Metrics {
    registry: Registry,
    active: Gauge,
    waiting: Gauge,
    queue: Gauge,
    runs: Family<RunLabels, Counter>,
    ratio: Gauge<f64, AtomicU64>,
    run_seconds: Histograms<RunLabels>,
    step_seconds: Histograms<StepLabels>,
    retries: Family<PackLabels, Counter>,
    gate_seconds: Histograms<GateLabels>,
    notify: Family<NotifyLabels, Counter>,
    seen: Mutex<Seen>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            active: Gauge::default(),
            waiting: Gauge::default(),
            queue: Gauge::default(),
            runs: Family::default(),
            ratio: Gauge::default(),
            run_seconds: Family::new_with_constructor(|| Histogram::new(RUN_BUCKETS)),
            step_seconds: Family::new_with_constructor(|| Histogram::new(STEP_BUCKETS)),
            retries: Family::default(),
            gate_seconds: Family::new_with_constructor(|| Histogram::new(GATE_BUCKETS)),
            notify: Family::default(),
            seen: Mutex::new(Seen {
                packs: Bounded::new(MAX_PACKS),
                gates: Bounded::new(MAX_GATES),
                targets: Bounded::new(MAX_GATES),
                succeeded: 0,
                finished: 0,
            }),
        };
        // No run has finished yet: succeeded / finished is 0 / 0.
        m.ratio.set(f64::NAN);
        m.registered()
    }

    /// Puts every metric in the registry, in DESIGN's order. The client adds `_total` to
    /// counters' names.
    fn registered(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register("pack_run_active", "Runs executing now", self.active.clone());
        r.register("pack_runs_waiting", "Runs waiting at a gate", self.waiting.clone());
        r.register(
            "pack_queue_depth",
            "Run requests seen and not yet started",
            self.queue.clone(),
        );
        r.register(
            "pack_runs",
            "Runs finished since the process started, by pack and outcome",
            self.runs.clone(),
        );
        r.register(
            "pack_run_success_ratio",
            "Runs succeeded / runs finished since the process started (NaN before the first)",
            self.ratio.clone(),
        );
        r.register(
            "pack_run_duration_seconds",
            "Run duration from its first event to its last, gate waits included",
            self.run_seconds.clone(),
        );
        r.register(
            "pack_step_duration_seconds",
            "Step duration from its first start (or its gate's wait) to its end, retries included",
            self.step_seconds.clone(),
        );
        r.register("pack_step_retries", "Step attempts retried", self.retries.clone());
        r.register(
            "pack_gate_wait_seconds",
            "How long an approval gate waited before it was approved, rejected or expired",
            self.gate_seconds.clone(),
        );
        r.register(
            "pack_notify_deliveries",
            "Notification delivery attempts by target and outcome (delivered, retried, failed)",
            self.notify.clone(),
        );
        self
    }

    /// A notification to `target` was delivered, will be retried, or was given up on.
    pub fn notified(&self, target: &str, outcome: &'static str) {
        let target = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .targets
            .value(Some(target));
        self.notify.get_or_create(&NotifyLabels { target, outcome }).inc();
    }

    /// The gauges, as a census counts the runs.
    pub fn set_counts(&self, c: Counts) {
        self.active.set(c.active as i64);
        self.waiting.set(c.waiting as i64);
        self.queue.set(c.queued as i64);
    }

    /// Records what happened.
    pub fn record(&self, h: &Happening) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match h {
            Happening::RunEnded { pack, outcome, seconds } => {
                let labels = RunLabels {
                    pack: seen.packs.value(pack.as_deref()),
                    outcome: outcome.label(),
                };
                self.runs.get_or_create(&labels).inc();
                self.run_seconds.get_or_create(&labels).observe(*seconds);
                seen.finished += 1;
                seen.succeeded += u64::from(*outcome == Outcome::Succeeded);
                self.ratio.set(seen.succeeded as f64 / seen.finished as f64);
            }
            Happening::StepEnded {
                pack,
                kind,
                outcome,
                seconds,
            } => {
                let labels = StepLabels {
                    pack: seen.packs.value(pack.as_deref()),
                    kind: kind.label(),
                    outcome: outcome.label(),
                };
                self.step_seconds.get_or_create(&labels).observe(*seconds);
            }
            Happening::Retried { pack } => {
                let labels = PackLabels {
                    pack: seen.packs.value(pack.as_deref()),
                };
                self.retries.get_or_create(&labels).inc();
            }
            Happening::GateResolved { pack, gate, seconds } => {
                let labels = GateLabels {
                    pack: seen.packs.value(pack.as_deref()),
                    gate: seen.gates.value(Some(gate)),
                };
                self.gate_seconds.get_or_create(&labels).observe(*seconds);
            }
        }
    }

    /// The Prometheus text exposition (format 0.0.4, `CONTENT_TYPE`).
    pub fn encode(&self) -> String {
        let mut open = String::new();
        prometheus_client::encoding::text::encode_registry(&mut open, &self.registry)
            .expect("writing to a String cannot fail");
        classic(&open)
    }
}

/// The client writes OpenMetrics, where a counter's family is named without its `_total`
/// (`# TYPE pack_runs counter`, samples `pack_runs_total`); the Prometheus text format (what
/// `promtool check metrics` and every Prometheus read) names the family as its samples. Only
/// the `# HELP` and `# TYPE` lines of counters change; label values cannot hold a newline (the
/// client escapes it), so the text is safe to take line by line.
fn classic(open: &str) -> String {
    let counters: Vec<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len() + 16 * counters.len());
    for line in open.lines() {
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((p, rest))
                if counters
                    .iter()
                    .any(|c| rest.strip_prefix(c).is_some_and(|r| r.starts_with(' '))) =>
            {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let _ = writeln!(out, "{p}{name}_total {tail}");
            }
            _ if line == "# EOF" => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}
