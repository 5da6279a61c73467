//! Retry and resume (DESIGN section 12) with the real binary, git and daemon: a resumed run
//! runs only what had not succeeded (steps count their runs in a directory the test shares
//! with them, and one fails until the test creates a file there), carries artifacts and
//! outputs over byte for byte, names the run it resumes in its events and evidence, and is
//! refused when the plan changed, the run succeeded or the run does not exist.

use std::path::Path;

use base64::Engine as _;
use serde_json::Value as Json;
use stella_engine::pack::sha256_hex;

use crate::support::{Repo, keygen, run_path, shared_dir};

/// `make` leaves an artifact and an output that differ on every run (so a step that ran again
/// shows), `check` fails until `<dir>/fixed` exists, `after` uses `make`'s output.
fn pack() -> String {
    "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: fixit, version: 1.0.0 }\nspec:\n  inputs: [{ name: dir, type: string }]\n  steps:\n    - id: make\n      outputs: { made: made.txt }\n      run: { uses: builtin:shell, with: { script: \"echo ran >> {{ inputs.dir }}/make.count; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\\\n' > made.txt; echo token=$(cat made.txt) >> $STELLA_OUTPUT\" } }\n    - id: check\n      run: { uses: builtin:shell, with: { script: \"echo ran >> {{ inputs.dir }}/check.count; test -e {{ inputs.dir }}/fixed\" } }\n    - id: after\n      outputs: { seen: seen.txt }\n      run: { uses: builtin:shell, with: { script: \"echo {{ steps.make.outputs.token }} > seen.txt\" } }\n".to_string()
}

fn count(dir: &Path, name: &str) -> usize {
    std::fs::read_to_string(dir.join(name)).map_or(0, |t| t.lines().count())
}

fn inputs(dir: &Path) -> String {
    format!("dir: {}\n", dir.display())
}

/// A repository where run r1 of `pack` failed at its step `check`.
fn failed_once(pack: &str, dir: &Path) -> Repo {
    let r = Repo::new();
    r.pack("fixit", pack).request("r1", "fixit", &inputs(dir));
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "failed");
    r
}

/// `stella runs resume|retry RUN --id ID`, committed.
fn again(r: &Repo, how: &str, run: &str, id: &str) {
    r.stella(&["runs", how, run, "--id", id]).ok();
    r.commit_all(&format!("{how} {run} as {id}"));
}

fn of_type<'a>(events: &'a [Json], kind: &str) -> Vec<&'a Json> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// The in-toto statement of a run's attestation at HEAD.
fn statement(r: &Repo, id: &str) -> Json {
    let envelope: Json = serde_json::from_str(
        &r.at_head(&format!("{}/evidence/attestation.dsse.json", run_path(id)))
            .unwrap(),
    )
    .unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

#[test]
fn resume_after_a_failure_runs_only_what_had_not_succeeded() {
    let dir = shared_dir();
    let r = failed_once(&pack(), &dir);
    assert_eq!((count(&dir, "make.count"), count(&dir, "check.count")), (1, 1));
    std::fs::write(dir.join("fixed"), "").unwrap();
    again(&r, "resume", "r1", "r2");
    assert!(
        r.at_head(&format!("{}/request.yaml", run_path("r2")))
            .unwrap()
            .contains("resumeOf: r1")
    );
    r.daemon_once().ok();
    assert_eq!(r.state("r2"), "succeeded");
    // `make` did not run again; `check` did, and succeeded this time.
    assert_eq!((count(&dir, "make.count"), count(&dir, "check.count")), (1, 2));

    let first = r.events("r1");
    let events = r.events("r2");
    let reused = of_type(&events, "step.reused");
    assert_eq!(reused.len(), 1, "{events:#?}");
    let made = of_type(&first, "step.succeeded")
        .into_iter()
        .find(|e| e["step"] == "make")
        .unwrap();
    assert_eq!(reused[0]["step"], "make");
    assert_eq!(reused[0]["data"]["from"], "r1");
    assert_eq!(reused[0]["data"]["outputs"], made["data"]["outputs"]);
    assert!(
        !of_type(&events, "step.started").iter().any(|e| e["step"] == "make"),
        "make must not start again"
    );
    // The artifact is carried over: same bytes in the new run's ledger.
    let token = made["data"]["outputs"]["token"].as_str().unwrap();
    let old = r.at_head(&format!("{}/artifacts/make/made", run_path("r1"))).unwrap();
    let new = r.at_head(&format!("{}/artifacts/make/made", run_path("r2"))).unwrap();
    assert_eq!(
        (sha256_hex(new.as_bytes()), new.as_str()),
        (sha256_hex(old.as_bytes()), token)
    );
    assert_eq!(
        reused[0]["data"]["artifacts"][0]["sha256"].as_str(),
        Some(sha256_hex(old.as_bytes()).as_str())
    );
    // Later steps see the reused outputs as if `make` had run.
    let seen = r.at_head(&format!("{}/artifacts/after/seen", run_path("r2"))).unwrap();
    assert_eq!(seen.trim(), token);

    // The run names its origin, and its evidence names the attestation of r1 by digest.
    let show = r.show("r2");
    assert_eq!(show["resumeOf"]["runId"], "r1");
    let make = show["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "make")
        .unwrap();
    assert_eq!(
        (make["status"].as_str(), make["reusedFrom"].as_str()),
        (Some("succeeded"), Some("r1"))
    );
    let predicate = &statement(&r, "r2")["predicate"];
    let attestation = r
        .at_head(&format!("{}/evidence/attestation.dsse.json", run_path("r1")))
        .unwrap();
    assert_eq!(predicate["resumeOf"]["runId"], "r1");
    assert_eq!(
        predicate["resumeOf"]["attestation"]["sha256"].as_str(),
        Some(sha256_hex(attestation.as_bytes()).as_str())
    );
    assert!(
        statement(&r, "r2")["subject"]
            .to_string()
            .contains("artifacts/make/made")
    );
    r.stella(&["evidence", "verify", "r2"]).ok();
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn a_retry_runs_everything_again_and_says_what_it_retries() {
    let dir = shared_dir();
    let r = failed_once(&pack(), &dir);
    std::fs::write(dir.join("fixed"), "").unwrap();
    again(&r, "retry", "r1", "r2");
    r.daemon_once().ok();
    assert_eq!(r.state("r2"), "succeeded");
    assert_eq!((count(&dir, "make.count"), count(&dir, "check.count")), (2, 2));
    assert!(of_type(&r.events("r2"), "step.reused").is_empty());
    assert_eq!(r.show("r2")["retryOf"]["runId"], "r1");
    assert_eq!(statement(&r, "r2")["predicate"]["retryOf"]["runId"], "r1");
    // A succeeded run may be retried, not resumed.
    let out = r.stella(&["runs", "resume", "r2"]);
    assert_eq!(out.code(), Some(2), "{}", out.stderr());
    assert!(
        out.stderr().contains("error[ERR_RUN_NOT_RESUMABLE]"),
        "{}",
        out.stderr()
    );
    assert!(out.stderr().contains("run r2 succeeded"), "{}", out.stderr());
    r.stella(&["runs", "retry", "r2", "--id", "r3"]).ok();
}

#[test]
fn the_api_names_what_a_run_retries_or_resumes() {
    let dir = shared_dir();
    let r = failed_once(&pack(), &dir);
    again(&r, "retry", "r1", "r2");
    again(&r, "resume", "r1", "r3");
    r.daemon_once();
    let mut cmd = crate::support::stella();
    cmd.current_dir(r.path())
        .args(["serve", "--repo", ".", "--http", "127.0.0.1:0"]);
    let serve = crate::support::Daemon::start(cmd);
    let base = crate::support::http::base_of(&serve);
    let trigger = |id: &str| crate::support::http::get(&base, &format!("/api/v1/runs/{id}")).json()["trigger"].clone();
    assert_eq!(trigger("r1"), serde_json::json!({ "manual": "commit" }));
    assert_eq!(trigger("r2"), serde_json::json!({ "retryOf": "r1" }));
    assert_eq!(trigger("r3"), serde_json::json!({ "resumeOf": "r1" }));
    let page = crate::support::http::get(&base, "/runs/r3").text();
    assert!(page.contains(r#"resume of <a href="/runs/r1">r1</a>"#), "{page}");
    let failed = crate::support::http::get(&base, "/runs/r1").text();
    assert!(failed.contains("stella runs resume r1"), "{failed}");
}

#[test]
fn resuming_a_run_that_does_not_exist_is_refused() {
    let r = Repo::new();
    for how in ["resume", "retry"] {
        let out = r.stella(&["runs", how, "nope"]);
        assert_eq!(out.code(), Some(2), "{}", out.stderr());
        assert!(out.stderr().contains("error[ERR_RUN_NOT_FOUND]"), "{}", out.stderr());
    }
}

/// A request for `pack` written by hand with `extra` lines (a person may commit anything).
fn by_hand(r: &Repo, id: &str, dir: &Path, extra: &str) {
    r.request(id, "fixit", &inputs(dir));
    let path = format!("{}/request.yaml", run_path(id));
    let text = r.at_head(&path).unwrap();
    r.write(&path, &format!("{text}{extra}"));
    r.commit_all(&format!("{id} by hand"));
}

#[test]
fn a_changed_plan_is_refused_at_the_cli_and_by_the_runner() {
    let dir = shared_dir();
    let r = failed_once(&pack(), &dir);
    r.pack("fixit", &pack().replace("version: 1.0.0", "version: 1.0.1"));
    let out = r.stella(&["runs", "resume", "r1"]);
    assert_eq!(out.code(), Some(1), "{}", out.stderr());
    assert!(
        out.stderr().contains("error[ERR_PACK_HASH_MISMATCH]"),
        "{}",
        out.stderr()
    );

    by_hand(&r, "r2", &dir, "resumeOf: r1\n");
    r.daemon_once().ok();
    assert_eq!(r.state("r2"), "failed");
    let show = r.show("r2");
    assert_eq!(show["code"], "ERR_PACK_HASH_MISMATCH");
    assert!(
        show["error"].as_str().unwrap().contains("run r1 was planned as"),
        "{show:#}"
    );
    assert!(of_type(&r.events("r2"), "step.started").is_empty());
    assert_eq!(count(&dir, "make.count"), 1);
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn the_runner_refuses_to_resume_a_succeeded_or_unknown_run_before_any_step() {
    let dir = shared_dir();
    std::fs::write(dir.join("fixed"), "").unwrap();
    let r = Repo::new();
    r.pack("fixit", &pack()).request("r1", "fixit", &inputs(&dir));
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "succeeded");
    by_hand(&r, "r2", &dir, "resumeOf: r1\n");
    by_hand(&r, "r3", &dir, "resumeOf: nowhere\n");
    r.daemon_once().ok();
    for (id, code) in [("r2", "ERR_RUN_NOT_RESUMABLE"), ("r3", "ERR_RUN_NOT_FOUND")] {
        let show = r.show(id);
        assert_eq!(
            (show["state"].as_str(), show["code"].as_str()),
            (Some("failed"), Some(code)),
            "{show:#}"
        );
        assert!(of_type(&r.events(id), "step.started").is_empty());
    }
    assert_eq!(count(&dir, "make.count"), 1);
}

const GATED: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: fixit, version: 1.0.0 }\nspec:\n  inputs: [{ name: dir, type: string }]\n  approvals: [{ id: go, grants: [Packs.Approve] }]\n  steps:\n    - id: before\n      run: { uses: builtin:shell, with: { script: \"echo ran >> {{ inputs.dir }}/before.count\" } }\n    - { id: review, gate: { approval: { id: go } } }\n    - id: check\n      run: { uses: builtin:shell, with: { script: \"test -e {{ inputs.dir }}/fixed\" } }\n";

#[test]
fn approvals_are_never_carried_over() {
    let dir = shared_dir();
    let r = Repo::new();
    let keys = tempfile::tempdir().unwrap();
    let public = keygen(keys.path(), "alice");
    let mut signers = std::fs::read_to_string(r.path().join(".stella/allowed_signers")).unwrap();
    signers.push_str(&format!("alice namespaces=\"stella-approval\" {public}\n"));
    r.write(".stella/allowed_signers", &signers)
        .write(".stella/approvers.yaml", "grants:\n  Packs.Approve: [alice]\n")
        .commit_all("approvers");
    r.pack("fixit", GATED).request("r1", "fixit", &inputs(&dir));
    r.daemon_once();
    assert_eq!(r.state("r1"), "waiting");
    let out = r.stella(&["runs", "resume", "r1"]);
    assert_eq!(out.code(), Some(2), "{}", out.stderr());
    assert!(
        out.stderr()
            .contains("error[ERR_RUN_NOT_RESUMABLE]: run r1 is still waiting"),
        "{}",
        out.stderr()
    );
    let key = keys.path().join("alice");
    r.stella(&["approve", "r1", "--gate", "go", "--key", key.to_str().unwrap()])
        .ok();
    r.commit_all("approve r1");
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "failed");

    std::fs::write(dir.join("fixed"), "").unwrap();
    again(&r, "resume", "r1", "r2");
    r.daemon_once();
    // `before` is reused; the gate waits for an approval of r2, r1's does not count.
    assert_eq!(r.state("r2"), "waiting");
    assert_eq!(count(&dir, "before.count"), 1);
    let events = r.events("r2");
    assert_eq!(of_type(&events, "step.reused")[0]["step"], "before");
    assert!(of_type(&events, "gate.approved").is_empty());
    r.stella(&["approve", "r2", "--gate", "go", "--key", key.to_str().unwrap()])
        .ok();
    r.commit_all("approve r2");
    r.daemon_once().ok();
    assert_eq!(r.state("r2"), "succeeded");
    r.stella(&["evidence", "verify", "r2"]).ok();
    r.stella(&["ledger", "verify"]).ok();
}

/// A parallel group of two whose failures continue (child `q` fails until `<dir>/fixed`
/// exists), then a map over three items, one at a time (item `b` fails until then, which
/// stops the map); every child counts its runs.
const FANNED: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: fixit, version: 1.0.0 }\nspec:\n  inputs: [{ name: dir, type: string }]\n  steps:\n    - id: both\n      parallel:\n        continueOnError: true\n        steps:\n          - { id: p, run: { uses: builtin:shell, with: { script: \"echo p >> {{ inputs.dir }}/par.count\" } } }\n          - { id: q, run: { uses: builtin:shell, with: { script: \"echo q >> {{ inputs.dir }}/par.count; test -e {{ inputs.dir }}/fixed\" } } }\n    - id: each\n      map:\n        items: [a, b, c]\n        maxParallel: 1\n        step:\n          id: t\n          outputs: { out: out.txt }\n          run: { uses: builtin:shell, with: { script: \"echo {{ item }} >> {{ inputs.dir }}/map.count; echo {{ item }} > out.txt; test {{ item }} != b || test -e {{ inputs.dir }}/fixed\" } }\n";

#[test]
fn maps_and_parallel_groups_resume_per_child() {
    let dir = shared_dir();
    let r = Repo::new();
    r.pack("fixit", FANNED).request("r1", "fixit", &inputs(&dir));
    r.daemon_once().ok();
    let show = r.show("r1");
    assert_eq!(show["state"], "failed", "{show:#}");
    let ran = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    assert_eq!(
        (ran("par.count").lines().count(), ran("map.count")),
        (2, "a\nb\n".to_string())
    );

    std::fs::write(dir.join("fixed"), "").unwrap();
    again(&r, "resume", "r1", "r2");
    r.daemon_once().ok();
    let show = r.show("r2");
    assert_eq!(show["state"], "succeeded", "{show:#}");
    let events = r.events("r2");
    let mut reused: Vec<&str> = of_type(&events, "step.reused")
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    reused.sort();
    assert_eq!(
        reused,
        ["each[0]::t", "p"],
        "exactly the children that succeeded in r1 are reused"
    );
    // The second time, only what had not succeeded ran: q, and items b and c.
    assert_eq!(ran("par.count").lines().filter(|l| *l == "q").count(), 2);
    assert_eq!(ran("par.count").lines().filter(|l| *l == "p").count(), 1);
    assert_eq!(ran("map.count"), "a\nb\nb\nc\n");
    // The reused child's artifact is the one r1 stored.
    let path = |id: &str| format!("{}/artifacts/each[0]::t/out", run_path(id));
    assert_eq!(r.at_head(&path("r2")), r.at_head(&path("r1")));
    r.stella(&["evidence", "verify", "r2"]).ok();
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn a_run_whose_ledger_does_not_verify_is_not_resumed() {
    let dir = shared_dir();
    let r = failed_once(&pack(), &dir);
    std::fs::write(dir.join("fixed"), "").unwrap();
    // A daemon heals the ledger when it starts; this one is running when someone rewrites
    // r1's artifact outside a runner commit and asks to resume r1.
    let daemon = r.daemon(&["--repo", ".", "--poll", "200ms"]);
    daemon.wait_for("the daemon to be ready", std::time::Duration::from_secs(30), || {
        daemon.stdout().contains("stella daemon: ready")
    });
    let inputs_file = r.outside("inputs.yaml");
    std::fs::write(&inputs_file, inputs(&dir)).unwrap();
    let args = [
        "run",
        "request",
        "packs/fixit",
        "--inputs",
        inputs_file.to_str().unwrap(),
        "--id",
        "r2",
    ];
    r.stella(&args).ok();
    let request = format!("{}/request.yaml", run_path("r2"));
    let text = std::fs::read_to_string(r.path().join(&request)).unwrap();
    r.write(&request, &format!("{text}resumeOf: r1\n"));
    r.write(&format!("{}/artifacts/make/made", run_path("r1")), "forged");
    // Committed past the hook, beside the daemon: a commit that loses a race is tried again.
    let committed = crate::support::poll(std::time::Duration::from_secs(10), || {
        r.git_try(&["add", "-A"]).status.success()
            && r.git_try(&[
                "commit",
                "-q",
                "--no-verify",
                "-m",
                "forge r1's artifact and ask to resume r1",
            ])
            .status
            .success()
    });
    assert!(committed);
    crate::support::wait_for("r2 to end", std::time::Duration::from_secs(30), || {
        let out = r.stella(&["runs", "show", "r2", "--json"]).stdout();
        serde_json::from_str::<Json>(&out).is_ok_and(|v| matches!(v["state"].as_str(), Some("failed" | "succeeded")))
    });
    drop(daemon);
    let show = r.show("r2");
    assert_eq!(
        (show["state"].as_str(), show["code"].as_str()),
        (Some("failed"), Some("ERR_LEDGER_TAMPERED")),
        "{show:#}"
    );
    assert!(
        show["error"].as_str().unwrap().contains("refusing to resume run r1"),
        "{show:#}"
    );
    assert!(of_type(&r.events("r2"), "step.started").is_empty());
    assert_eq!(count(&dir, "make.count"), 1);
}

#[test]
fn a_runner_killed_during_a_resume_finishes_it_without_running_a_reused_step() {
    let dir = shared_dir();
    let r = failed_once(&pack(), &dir);
    std::fs::write(dir.join("fixed"), "").unwrap();
    again(&r, "resume", "r1", "r2");
    // Killed (SIGKILL) as `check`, the first step that runs, is about to start.
    let chaos = r.outside("chaos.yaml");
    std::fs::write(
        &chaos,
        "rules:\n  - { action: kill-runner, point: before-step-start, run: r2, times: 1 }\n",
    )
    .unwrap();
    let out = r.stella(&["daemon", "--once", "--repo", ".", "--chaos", chaos.to_str().unwrap()]);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.0.status.signal(), Some(libc::SIGKILL), "{}", out.stderr());
    r.daemon_once().ok();
    assert_eq!(r.state("r2"), "succeeded");
    let events = r.events("r2");
    assert_eq!(of_type(&events, "step.reused").len(), 1);
    assert_eq!(of_type(&events, "run.recovered").len(), 1);
    assert_eq!((count(&dir, "make.count"), count(&dir, "check.count")), (1, 2));
    let path = |id: &str| format!("{}/artifacts/make/made", run_path(id));
    assert_eq!(r.at_head(&path("r2")), r.at_head(&path("r1")));
    r.stella(&["evidence", "verify", "r2"]).ok();
    r.stella(&["ledger", "verify"]).ok();
}
