//! `Telemetry` fed as the daemon feeds it (scans, then events as a runner records them), read
//! back as the text Prometheus scrapes; the text checked by `promtool` when it is installed
//! (always in CI).

use std::time::{Duration, SystemTime};

use serde_json::json;
use stella_engine::event::Event;
use stella_engine::runs::{Facts, Observer, Summary};
use stella_engine::state::RunStatus;

use super::{Counts, Telemetry};

fn summary(id: &str, status: RunStatus, events: usize, invalid: bool) -> Summary {
    Summary {
        id: id.into(),
        dir: stella_engine::layout::RunDir::new(id),
        facts: Facts {
            status,
            started: None,
            finished: None,
            waiting_gate: None,
            code: None,
            error: None,
            pack: None,
            events,
            journal_ahead: false,
            has_request: true,
            has_cancel: false,
            ignored: Vec::new(),
            gate_expires: None,
            delay_ends: None,
            times: None,
        },
        invalid: invalid
            .then(|| stella_engine::runs::Invalid::new(stella_engine::Code::LedgerTampered, "runs/x/plan.json", "bad")),
        tree: gix::ObjectId::null(gix::hash::Kind::Sha1),
        approvals: None,
    }
}

fn ev(secs: u64, kind: &str, step: Option<&str>, data: serde_json::Value) -> Event {
    let mut e = Event::new(kind).data(data);
    if let Some(s) = step {
        e = e.step(s);
    }
    e.ts = humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).to_string();
    e
}

/// The sample lines of `text` that start with `prefix`.
fn samples<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

fn counts(t: &Telemetry) -> Counts {
    let (_, body) = t.health.readyz();
    Counts {
        queued: body["queueDepth"].as_u64().unwrap() as usize,
        active: body["activeRuns"].as_u64().unwrap() as usize,
        waiting: body["waitingRuns"].as_u64().unwrap() as usize,
    }
}

#[test]
fn gauges_come_from_the_scan_and_move_with_the_events() {
    let t = Telemetry::new(false);
    assert_eq!(t.health.readyz().0, 503, "not ready before the first scan");
    let scanned = [
        summary("new", RunStatus::Planned, 0, false),
        summary("planned", RunStatus::Planned, 1, false),
        summary("busy", RunStatus::Running, 5, false),
        summary("gate", RunStatus::Waiting, 5, false),
        summary("done", RunStatus::Succeeded, 9, false),
        summary("broken", RunStatus::Running, 0, true),
    ];
    t.scanned(&scanned);
    assert_eq!(
        counts(&t),
        Counts {
            queued: 2,
            active: 1,
            waiting: 1
        }
    );
    let text = t.metrics.encode();
    for line in ["pack_run_active 1", "pack_runs_waiting 1", "pack_queue_depth 2"] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    t.begin("new", &[]);
    t.recorded("new", &ev(1, "run.planned", None, json!({})));
    t.recorded("new", &ev(1, "run.started", None, json!({"pack": "demo"})));
    t.recorded("busy", &ev(1, "run.waiting", Some("g"), json!({"gate": "g"})));
    t.recorded("gate", &ev(1, "run.cancelled", None, json!({})));
    t.end("new");
    assert_eq!(
        counts(&t),
        Counts {
            queued: 1,
            active: 1,
            waiting: 1
        }
    );
    // The next scan is the truth again.
    t.scanned(&scanned[..1]);
    assert_eq!(
        counts(&t),
        Counts {
            queued: 1,
            active: 0,
            waiting: 0
        }
    );
}

#[test]
fn counters_and_histograms_after_a_sequence_of_runs() {
    let t = Telemetry::new(false);
    let text = t.metrics.encode();
    assert!(
        text.contains("\npack_run_success_ratio NaN\n"),
        "NaN before any run finished:\n{text}"
    );
    // Labelled families have no series before their first sample.
    let families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
    assert_eq!(
        families,
        [
            "pack_run_active gauge",
            "pack_runs_waiting gauge",
            "pack_queue_depth gauge",
            "pack_run_success_ratio gauge"
        ],
        "{text}"
    );
    // r1: a retried step, then a gate approved after 40 minutes; succeeds.
    t.begin("r1", &[]);
    for e in [
        ev(0, "run.planned", None, json!({})),
        ev(1, "run.started", None, json!({"pack": "demo"})),
        ev(1, "step.started", Some("build"), json!({"attempt": 1, "kind": "run"})),
        ev(2, "step.log", Some("build"), json!({"stream": "stdout"})),
        ev(3, "step.retrying", Some("build"), json!({"attempt": 1})),
        ev(4, "step.started", Some("build"), json!({"attempt": 2, "kind": "run"})),
        ev(5, "step.succeeded", Some("build"), json!({"attempt": 2})),
        ev(10, "gate.waiting", Some("review"), json!({"gate": "security"})),
        ev(10, "run.waiting", Some("review"), json!({"gate": "security"})),
    ] {
        t.recorded("r1", &e);
    }
    t.end("r1");
    // The daemon restarts in between: the run is resumed with its prior events.
    let prior = [
        ev(0, "run.planned", None, json!({})),
        ev(1, "run.started", None, json!({"pack": "demo"})),
        ev(10, "gate.waiting", Some("review"), json!({"gate": "security"})),
    ];
    t.begin("r1", &prior);
    for e in [
        ev(2410, "run.resumed", None, json!({})),
        ev(2410, "gate.approved", Some("review"), json!({"gate": "security"})),
        ev(2410, "step.succeeded", Some("review"), json!({"gate": "security"})),
        ev(2412, "run.succeeded", None, json!({})),
    ] {
        t.recorded("r1", &e);
    }
    t.end("r1");
    // r2: refused before it was planned.
    t.begin("r2", &[]);
    t.recorded(
        "r2",
        &ev(3000, "run.failed", None, json!({"code": "ERR_REQUEST_INVALID"})),
    );
    t.end("r2");
    let text = t.metrics.encode();
    let expect = [
        "pack_runs_total{pack=\"demo\",outcome=\"succeeded\"} 1",
        "pack_runs_total{pack=\"_unknown\",outcome=\"failed\"} 1",
        "pack_run_success_ratio 0.5",
        "pack_step_retries_total{pack=\"demo\"} 1",
        "pack_run_duration_seconds_sum{pack=\"demo\",outcome=\"succeeded\"} 2412.0",
        "pack_step_duration_seconds_sum{pack=\"demo\",kind=\"run\",outcome=\"succeeded\"} 4.0",
        "pack_step_duration_seconds_count{pack=\"demo\",kind=\"gate\",outcome=\"succeeded\"} 1",
        "pack_gate_wait_seconds_sum{pack=\"demo\",gate=\"security\"} 2400.0",
        "pack_gate_wait_seconds_bucket{le=\"1800.0\",pack=\"demo\",gate=\"security\"} 0",
        "pack_gate_wait_seconds_bucket{le=\"3600.0\",pack=\"demo\",gate=\"security\"} 1",
    ];
    for line in expect {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert_eq!(samples(&text, "pack_runs_total").len(), 2, "{text}");
    assert!(t.tracks().is_empty(), "nothing is kept of runs no longer worked on");
}

#[test]
fn label_values_from_packs_are_bounded() {
    let t = Telemetry::new(false);
    for i in 0..super::metrics::MAX_PACKS + 10 {
        let run = format!("r{i}");
        t.recorded(&run, &ev(1, "run.started", None, json!({"pack": format!("pack-{i}")})));
        t.recorded(&run, &ev(2, "run.succeeded", None, json!({})));
    }
    t.recorded(
        "evil",
        &ev(1, "run.started", None, json!({"pack": "x\"} 1\nfake_metric{a=\"b"})),
    );
    t.recorded("evil", &ev(2, "run.succeeded", None, json!({})));
    let text = t.metrics.encode();
    let lines = samples(&text, "pack_runs_total{");
    assert_eq!(lines.len(), super::metrics::MAX_PACKS + 2, "{text}");
    assert!(
        lines.contains(&"pack_runs_total{pack=\"_other\",outcome=\"succeeded\"} 10"),
        "{text}"
    );
    assert!(
        lines.contains(&"pack_runs_total{pack=\"_invalid\",outcome=\"succeeded\"} 1"),
        "{text}"
    );
    assert!(!text.contains("fake_metric"), "{text}");
}

/// `promtool check metrics` on the text after every kind of metric has samples. Without
/// promtool the check is skipped, except in CI (`CI=true`), which installs it.
#[test]
fn the_exposition_passes_promtool() {
    let t = Telemetry::new(true);
    t.scanned(&[summary("a", RunStatus::Running, 3, false)]);
    t.begin("a", &[]);
    for e in [
        ev(1, "run.started", None, json!({"pack": "demo"})),
        ev(1, "step.started", Some("s"), json!({"attempt": 1, "kind": "run"})),
        ev(2, "step.retrying", Some("s"), json!({"attempt": 1})),
        ev(3, "step.failed", Some("s"), json!({"attempt": 2})),
        ev(3, "gate.waiting", Some("g"), json!({"gate": "ok"})),
        ev(4, "gate.approved", Some("g"), json!({"gate": "ok"})),
        ev(5, "run.failed", None, json!({})),
    ] {
        t.recorded("a", &e);
    }
    for outcome in ["delivered", "retried", "failed"] {
        t.metrics.notified("ops", outcome);
    }
    t.metrics.notified("bad target!", "failed");
    let text = t.metrics.encode();
    assert!(
        text.contains("pack_notify_deliveries_total{target=\"ops\",outcome=\"retried\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pack_notify_deliveries_total{target=\"_invalid\",outcome=\"failed\"} 1"),
        "{text}"
    );
    let Some(promtool) = promtool() else { return };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The alerting rules docs/workspace.md gives for "gate waiting over 30 minutes" load in
/// Prometheus (`promtool check rules`) and fire when they should (`promtool test rules`):
/// the first only after 30 minutes of waiting, the second for a gate resolved after 40.
#[test]
fn the_documented_gate_alerts_fire() {
    let Some(promtool) = promtool() else { return };
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/workspace.md")).unwrap();
    let rules = page
        .split("```yaml\n")
        .filter_map(|b| b.split("```").next())
        .find(|b| b.starts_with("groups:"))
        .expect("docs/workspace.md has the alerting rules");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
    std::fs::write(dir.path().join("test.yml"), ALERT_TEST).unwrap();
    for args in [&["check", "rules", "rules.yml"][..], &["test", "rules", "test.yml"][..]] {
        let out = std::process::Command::new(&promtool)
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}\n{rules}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Series made for the rules: a run waiting from minute 0; a gate whose wait of 40 minutes
/// ended at minute 2 (counted, but not within the 1800 s bucket).
const ALERT_TEST: &str = r#"rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: pack_runs_waiting
        values: 1x45
      - series: pack_gate_wait_seconds_count{pack="demo",gate="security"}
        values: 0 0 1x40
      - series: pack_gate_wait_seconds_bucket{pack="demo",gate="security",le="1800.0"}
        values: 0x42
    alert_rule_test:
      - eval_time: 20m
        alertname: StellaGateWaitingOver30m
        exp_alerts: []
      - eval_time: 35m
        alertname: StellaGateWaitingOver30m
        exp_alerts:
          - exp_labels: { severity: warning }
            exp_annotations: { summary: "a run has been waiting at an approval gate for over 30 minutes" }
      - eval_time: 10m
        alertname: StellaGateWaitedOver30m
        exp_alerts:
          - exp_labels: { severity: info, pack: demo, gate: security }
            exp_annotations: { summary: "gate security of pack demo waited over 30 minutes" }
"#;

/// promtool, when it is installed; in CI (`CI=true`) its absence fails the test.
fn promtool() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is needed in CI (Debian package prometheus)"
        );
        eprintln!("skipped: promtool is not installed (Debian package prometheus)");
    }
    found
}
