//! Chaos hooks (`stella daemon --chaos FILE`): a runner-local file that kills the runner at a
//! named point, pauses a run, cuts a step's network or delays a gate's approvals, each
//! injection recorded as `pack.chaos.injected` before it happens; and the runs still finish.

use std::process::Command;
use std::time::Duration;

use crate::support::{HELLO, Repo, Stella};

/// `stella daemon --once` with a chaos file holding `yaml` (kept outside the repository).
fn daemon_once_with_chaos(r: &Repo, yaml: &str) -> Stella {
    let file = r.outside("chaos.yaml");
    std::fs::write(&file, yaml).unwrap();
    r.stella(&["daemon", "--once", "--repo", ".", "--chaos", file.to_str().unwrap()])
}

/// The `pack.chaos.injected` events of a run's ledger.
fn injections(r: &Repo, id: &str) -> Vec<serde_json::Value> {
    r.events(id)
        .into_iter()
        .filter(|e| e["type"] == "pack.chaos.injected")
        .collect()
}

fn index_of(events: &[serde_json::Value], kind: &str, step: &str) -> usize {
    events
        .iter()
        .position(|e| e["type"] == kind && e["step"] == step)
        .unwrap_or_else(|| panic!("no {kind} of {step}: {events:#?}"))
}

fn killed_by_sigkill(out: &Stella) -> bool {
    use std::os::unix::process::ExitStatusExt;
    out.0.status.signal() == Some(libc::SIGKILL)
}

#[test]
fn a_chaos_file_with_mistakes_names_each_file_line_and_field() {
    let r = Repo::new();
    let out = daemon_once_with_chaos(
        &r,
        "seed: 1\nrules:\n  - action: kill-runner\n    point: mid-comit\n  - { action: pause, step: greet }\n  - { action: explode }\n",
    );
    assert_eq!(out.code(), Some(2), "{}", out.stderr());
    let err = out.stderr();
    assert!(
        err.contains("error[ERR_USAGE]: ")
            && err.contains("chaos.yaml:4:12: rules[0].point: unknown point `mid-comit`; did you mean `mid-commit`?"),
        "{err}"
    );
    assert!(
        err.contains("chaos.yaml:5:5: rules[1].duration: pause needs `duration:`"),
        "{err}"
    );
    assert!(
        err.contains("chaos.yaml:6:15: rules[2].action: unknown action `explode`"),
        "{err}"
    );
    assert!(r.runner_commits().is_empty(), "nothing ran");

    let missing = r.stella(&["daemon", "--once", "--repo", ".", "--chaos", "/nonexistent/chaos.yaml"]);
    assert_eq!(missing.code(), Some(2));
    assert!(
        missing
            .stderr()
            .contains("/nonexistent/chaos.yaml: cannot read the chaos file"),
        "{}",
        missing.stderr()
    );
}

#[test]
fn a_pause_before_a_step_is_recorded_then_held() {
    let r = Repo::new();
    r.pack("hello", HELLO).request("p1", "hello", "{}\n");
    daemon_once_with_chaos(&r, "rules:\n  - { action: pause, step: after, duration: 700ms }\n").ok();
    assert_eq!(r.state("p1"), "succeeded");
    let events = r.events("p1");
    let paused = index_of(&events, "pack.chaos.injected", "after");
    let started = index_of(&events, "step.started", "after");
    assert!(paused < started, "recorded before the step starts");
    let e = &events[paused];
    assert_eq!(
        (
            &e["data"]["action"],
            &e["data"]["point"],
            &e["data"]["rule"],
            &e["data"]["durationMs"]
        ),
        (
            &serde_json::json!("pause"),
            &serde_json::json!("before-step-start"),
            &serde_json::json!(0),
            &serde_json::json!(700)
        )
    );
    let ts = |i: usize| humantime::parse_rfc3339(events[i]["ts"].as_str().unwrap()).unwrap();
    assert!(ts(started).duration_since(ts(paused)).unwrap() >= Duration::from_millis(700));
    // A note, not progress: the greet step that ran before it is untouched, and the fold
    // shows no step of the injection's own.
    assert_eq!(r.show("p1")["steps"].as_array().unwrap().len(), 2);
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn delayed_approvals_are_recorded_and_looked_at_once_the_delay_is_over() {
    let r = Repo::new();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("alice");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let mut signers = std::fs::read_to_string(r.path().join(".stella/allowed_signers")).unwrap();
    signers.push_str(&format!("alice namespaces=\"stella-approval\" {}\n", public.trim()));
    r.write(".stella/allowed_signers", &signers)
        .write(".stella/approvers.yaml", "grants:\n  Packs.Approve: [alice]\n")
        .commit_all("alice approves");
    r.pack(
        "gated",
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: gated, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: go, grants: [Packs.Approve] }\n  steps:\n    - { id: review, gate: { approval: { id: go } } }\n    - { id: after, run: { uses: builtin:exec, with: { argv: [echo, done] } } }\n",
    )
    .request("g1", "gated", "{}\n");
    // The approval is there before the gate is reached: only the delay holds the run.
    r.stella(&["approve", "g1", "--gate", "go", "--key", key.to_str().unwrap()])
        .ok();
    r.commit_all("alice approves g1");
    let chaos = r.outside("chaos.yaml");
    std::fs::write(
        &chaos,
        "rules:\n  - { action: delay-approvals, run: \"g*\", step: review, duration: 2s }\n",
    )
    .unwrap();
    // A watching daemon with a poll far away: it must wake up by itself when the delay ends.
    let daemon = r.daemon(&["--repo", ".", "--poll", "10m", "--chaos", chaos.to_str().unwrap()]);
    daemon.wait_for("the delayed run to finish", Duration::from_secs(30), || {
        r.events("g1").iter().any(|e| e["type"] == "run.succeeded")
    });
    daemon.kill();
    let events = r.events("g1");
    let delayed = index_of(&events, "pack.chaos.injected", "review");
    let waiting = index_of(&events, "gate.waiting", "review");
    let approved = index_of(&events, "gate.approved", "review");
    assert!(delayed < waiting && waiting < approved, "{events:#?}");
    assert_eq!(events[delayed]["data"]["action"], "delay-approvals");
    assert_eq!(events[delayed]["data"]["point"], "gate-reached");
    assert_eq!(
        injections(&r, "g1").len(),
        1,
        "recorded once, however often the gate is judged"
    );
    let ts = |i: usize| humantime::parse_rfc3339(events[i]["ts"].as_str().unwrap()).unwrap();
    assert!(ts(approved).duration_since(ts(waiting)).unwrap() >= Duration::from_millis(1900));
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn a_kill_before_the_second_step_start_is_in_the_journal_and_the_restart_finishes() {
    let r = Repo::new();
    r.pack("hello", HELLO).request("k1", "hello", "{}\n");
    let out = daemon_once_with_chaos(
        &r,
        "rules:\n  - { action: kill-runner, point: before-step-start, run: k1, after: 1, times: 1 }\n",
    );
    assert!(killed_by_sigkill(&out), "{:?} {}", out.0.status, out.stderr());
    let journal = std::fs::read_to_string(r.journal("k1")).unwrap();
    let last: serde_json::Value = serde_json::from_str(journal.lines().last().unwrap()).unwrap();
    assert_eq!(
        (&last["type"], &last["step"], &last["data"]["action"]),
        (
            &serde_json::json!("pack.chaos.injected"),
            &serde_json::json!("after"),
            &serde_json::json!("kill-runner")
        ),
        "the injection is the journal's last word"
    );
    let log = std::fs::read_to_string(r.path().join(".git/stella/chaos.ndjson")).unwrap();
    assert!(log.contains("\"point\":\"before-step-start\""), "{log}");
    r.daemon_once().ok();
    assert_eq!(r.state("k1"), "succeeded");
    let events = r.events("k1");
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"run.recovered"), "{kinds:?}");
    assert_eq!(injections(&r, "k1").len(), 1);
    r.stella(&["ledger", "verify"]).ok();
}

/// The chaos file that kills the runner in the commit of run `m1`, after the branch moved
/// and before the index and working tree follow.
const BETWEEN: &str =
    "rules:\n  - { action: kill-runner, point: between-branch-move-and-index-update, run: m1, times: 1 }\n";

fn killed_between_branch_move_and_index_update() -> Repo {
    let r = Repo::new();
    r.pack("hello", HELLO).request("m1", "hello", "{}\n");
    let out = daemon_once_with_chaos(&r, BETWEEN);
    assert!(killed_by_sigkill(&out), "{:?} {}", out.0.status, out.stderr());
    let log = std::fs::read_to_string(r.path().join(".git/stella/chaos.ndjson")).unwrap();
    assert!(
        log.contains("\"point\":\"between-branch-move-and-index-update\"") && log.contains("\"run\":\"m1\""),
        "{log}"
    );
    assert!(!r.runner_commits().is_empty(), "the branch moved before the kill");
    r.daemon_once().ok();
    r
}

#[test]
fn a_kill_between_branch_move_and_index_update_then_restart_finishes_the_run() {
    let r = killed_between_branch_move_and_index_update();
    assert_eq!(r.state("m1"), "succeeded");
    r.stella(&["ledger", "verify"]).ok();
    let fsck = r.git_try(&["fsck", "--strict"]);
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stderr));
}

/// Needs the index repair at daemon start (built on another branch): the index and working
/// tree the killed runner left behind are brought level with the branch for runner paths.
#[test]
fn a_kill_between_branch_move_and_index_update_leaves_a_clean_working_tree_after_restart() {
    let r = killed_between_branch_move_and_index_update();
    assert_eq!(r.status_porcelain(), "", "runner files are as committed");
}

#[test]
fn a_dropped_network_leaves_a_step_only_loopback() {
    let r = Repo::new();
    let pack = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: net, version: 1.0.0 }\nspec:\n  steps:\n    - id: cut\n      run: { uses: builtin:shell, with: { script: \"awk -F: 'NR>2 {gsub(/ /, \\\"\\\", $1); print \\\"iface \\\" $1}' /proc/net/dev\" } }\n";
    r.pack("net", pack).request("n1", "net", "{}\n");
    daemon_once_with_chaos(&r, "rules:\n  - { action: drop-network, step: cut }\n").ok();
    assert_eq!(r.state("n1"), "succeeded");
    let events = r.events("n1");
    let ifaces: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "step.log")
        .filter_map(|e| e["msg"].as_str())
        .collect();
    assert_eq!(ifaces, ["iface lo"]);
    assert!(index_of(&events, "pack.chaos.injected", "cut") > index_of(&events, "step.started", "cut"));
    assert_eq!(injections(&r, "n1")[0]["data"]["point"], "after-step-start");
}
