//! The daemon's telemetry against real runs: a repository made with the real git CLI, the
//! daemon (`run_with`, `--once`) executing its requests in their sandboxes and committing
//! them, and the metrics text and `/readyz` answer read back from the `Telemetry` it fed —
//! then a restarted daemon, whose counters start from zero while its gauges come from the
//! ledger.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use stella_engine::keys::SshKey;
use stella_engine::layout::RunDir;
use stella_engine::request::Request;

use super::{Args, run_with};
use crate::repo;
use crate::telemetry::Telemetry;

const HELLO: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: hello, version: 1.0.0 }\nspec:\n  steps:\n    - id: greet\n      run: { uses: builtin:shell, with: { script: \"echo hello\" } }\n    - id: after\n      run: { uses: builtin:exec, with: { argv: [echo, done] } }\n";
const HOPELESS: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: hopeless, version: 1.0.0 }\nspec:\n  steps:\n    - id: never\n      retries: { maxAttempts: 2, backoff: 0s }\n      run: { uses: builtin:exec, with: { argv: [\"false\"] } }\n";
const GATED: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: gated, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: change-review, grants: [Packs.Approve], requiredCount: 1, expiresAfter: PT1H }\n  steps:\n    - { id: before, run: { uses: builtin:exec, with: { argv: [\"true\"] } } }\n    - { id: review, gate: { approval: { id: change-review } } }\n";

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git").current_dir(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn commit(dir: &Path, msg: &str) {
    git(dir, &["add", "-A"]);
    git(
        dir,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-q",
            "-m",
            msg,
        ],
    );
}

/// A repository as `stella init` leaves it, with the three packs committed.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"]);
    let key = SshKey::generate("stella-runner");
    key.save(&repo::key_path(d, None)).unwrap();
    write(
        d,
        ".stella/allowed_signers",
        &format!(
            "runner@stella namespaces=\"git,stella-evidence\" {}\n",
            key.public_openssh()
        ),
    );
    write(d, ".stella/config.yaml", "branch: main\ncommit: { batchMs: 2000 }\n");
    write(d, ".stella/approvers.yaml", "grants:\n  Packs.Approve: []\n");
    for (name, manifest) in [("hello", HELLO), ("hopeless", HOPELESS), ("gated", GATED)] {
        write(d, &format!("packs/{name}/pack.yaml"), manifest);
    }
    commit(d, "stella init");
    dir
}

/// A request of `pack` with its plan pinned, as `stella run request` writes it, committed.
fn request(dir: &Path, id: &str, pack: &str) {
    let config = repo::config_in_worktree(dir).unwrap();
    let rel = format!("packs/{pack}");
    let plan = stella_engine::plan::from_dir(&dir.join(&rel), &rel, None, "inputs", &config.plan_config()).unwrap();
    let text = Request::render(&rel, &serde_json::json!({}), &plan.hash());
    write(dir, &RunDir::flat(id).file("request.yaml"), &text);
    commit(dir, &format!("request {id}"));
}

/// `stella daemon --once` on `dir`, feeding `telemetry`.
fn daemon_once(dir: &Path, work: &Path, telemetry: &Arc<Telemetry>) {
    let args = Args {
        repo: dir.to_path_buf(),
        once: true,
        secrets: None,
        key: None,
        poll: Duration::from_secs(5),
        kill_grace: Duration::from_secs(2),
        remote: None,
        lease: Duration::from_secs(60),
        work_dir: Some(work.to_path_buf()),
        keep_work: false,
        chaos: None,
        http: None,
    };
    run_with(args, telemetry.clone()).unwrap_or_else(|f| panic!("the daemon failed: {f:?}"));
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn real_runs_move_the_metrics_and_a_restart_keeps_the_gauges() {
    let repo = repository();
    let work = tempfile::tempdir().unwrap();
    let d = repo.path();
    request(d, "r1", "hello");
    request(d, "r2", "hopeless");
    request(d, "r3", "gated");
    let first = Arc::new(Telemetry::new(false));
    daemon_once(d, work.path(), &first);
    let text = first.metrics.encode();
    for line in [
        "pack_runs_total{pack=\"hello\",outcome=\"succeeded\"} 1",
        "pack_runs_total{pack=\"hopeless\",outcome=\"failed\"} 1",
        "pack_run_success_ratio 0.5",
        "pack_step_retries_total{pack=\"hopeless\"} 1",
        "pack_step_duration_seconds_count{pack=\"hello\",kind=\"run\",outcome=\"succeeded\"} 2",
        "pack_step_duration_seconds_count{pack=\"hopeless\",kind=\"run\",outcome=\"failed\"} 1",
        "pack_run_duration_seconds_count{pack=\"hello\",outcome=\"succeeded\"} 1",
        "pack_run_active 0",
        "pack_runs_waiting 1",
        "pack_queue_depth 0",
    ] {
        assert!(has(&text, line), "{line} in\n{text}");
    }
    assert!(
        !text.contains("pack=\"gated\",outcome"),
        "the gated run has not finished:\n{text}"
    );
    let (code, ready) = first.health.readyz();
    assert_eq!(code, 200, "{ready}");
    assert_eq!(
        (&ready["queueDepth"], &ready["activeRuns"], &ready["waitingRuns"]),
        (&serde_json::json!(0), &serde_json::json!(0), &serde_json::json!(1)),
        "{ready}"
    );

    // A restarted daemon: nothing finished in this process, yet the run waiting at its gate
    // is counted from its first scan on.
    let second = Arc::new(Telemetry::new(false));
    assert_eq!(second.health.readyz().0, 503, "not ready before the first scan");
    daemon_once(d, work.path(), &second);
    let text = second.metrics.encode();
    assert!(has(&text, "pack_runs_waiting 1"), "{text}");
    assert!(has(&text, "pack_run_success_ratio NaN"), "{text}");
    assert!(!text.contains("pack_runs_total"), "counters start from zero:\n{text}");

    // Cancelling the waiting run is counted by the process that records it.
    write(
        d,
        &RunDir::flat("r3").file("cancel.yaml"),
        "reason: \"no longer needed\"\n",
    );
    commit(d, "cancel r3");
    daemon_once(d, work.path(), &second);
    let text = second.metrics.encode();
    for line in [
        "pack_runs_total{pack=\"gated\",outcome=\"cancelled\"} 1",
        "pack_run_success_ratio 0.0",
        "pack_runs_waiting 0",
        "pack_run_active 0",
    ] {
        assert!(has(&text, line), "{line} in\n{text}");
    }
    assert!(!text.contains("pack=\"hello\""), "{text}");
}
