//! Several runners and one shared git server: runs claimed so each executes exactly once,
//! results pushed (re-committed when the remote moved), and nothing lost.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Daemon, HELLO, Repo, git_in as git, run_path};

/// A bare hub, an admin clone with the pack, and `n` runner clones whose keys are trusted.
pub(crate) fn hub_with_runners(n: usize) -> (tempfile::TempDir, Repo, Vec<Repo>) {
    let hub = tempfile::tempdir().unwrap();
    git(hub.path(), &["init", "-q", "--bare", "-b", "main"]);
    let admin = Repo::new();
    admin.write(
        ".stella/config.yaml",
        "branch: main\ncommit: { batchMs: 200 }\nlimits: { maxRuns: 2 }\n",
    );
    admin.pack("hello", HELLO);
    admin.git(&["remote", "add", "origin", hub.path().to_str().unwrap()]);
    admin.git(&["push", "-q", "origin", "main"]);
    let mut runners = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["clone", "-q", hub.path().to_str().unwrap(), "."]);
        let r = Repo { dir };
        r.stella(&["init", "."]).ok();
        r.commit_all("trust this runner");
        r.git(&["pull", "-q", "--rebase", "origin", "main"]);
        r.git(&["push", "-q", "origin", "main"]);
        runners.push(r);
    }
    for r in &runners {
        r.git(&["pull", "-q", "--ff-only", "origin", "main"]);
    }
    admin.git(&["pull", "-q", "--ff-only", "origin", "main"]);
    (hub, admin, runners)
}

/// A watching daemon of `r` exchanging with the hub every second; `extra` arguments added.
fn start(r: &Repo, extra: &[&str]) -> Daemon {
    let mut args = vec!["--repo", ".", "--remote", "origin", "--poll", "1s"];
    args.extend_from_slice(extra);
    r.daemon(&args)
}

/// Runs on the hub's branch, by state, as the admin sees them after pulling.
pub(crate) fn hub_states(admin: &Repo) -> std::collections::BTreeMap<String, String> {
    admin.git(&["pull", "-q", "--ff-only", "origin", "main"]);
    admin.states()
}

/// The hello pack made slow (`sleep SECS` in its first step) and one request for it, pushed.
fn push_slow_request(admin: &Repo, secs: u32) {
    let slow = HELLO.replace(
        "echo said=yes >> $STELLA_OUTPUT",
        &format!("echo said=yes >> $STELLA_OUTPUT; sleep {secs}"),
    );
    admin.write("packs/hello/pack.yaml", &slow);
    admin.write(
        &format!("{}/request.yaml", run_path("r1")),
        "apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\n",
    );
    admin.commit_all("slow request");
    admin.git(&["push", "-q", "origin", "main"]);
}

#[test]
fn three_runners_one_hub_twenty_requests_each_run_exactly_once() {
    let (_hub, admin, runners) = hub_with_runners(3);
    for i in 0..20 {
        let id = format!("r{i:02}");
        admin.write(
            &format!("runs/{id}/request.yaml"),
            &format!("apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\ninputs: {{ who: \"{id}\" }}\n"),
        );
    }
    admin.commit_all("twenty requests");
    admin.git(&["push", "-q", "origin", "main"]);
    let daemons: Vec<Daemon> = runners.iter().map(|r| start_logged(r, &[])).collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let states = hub_states(&admin);
        if states.len() == 20 && states.values().all(|s| s == "succeeded") {
            break;
        }
        if Instant::now() >= deadline {
            for (i, d) in daemons.iter().enumerate() {
                eprintln!("--- runner {i}\n{}", said(d));
            }
            panic!("not all runs finished: {states:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(daemons);
    for i in 0..20 {
        let id = format!("r{i:02}");
        let events = admin.events(&id);
        let starts = events.iter().filter(|e| e["type"] == "run.started").count();
        let greets = events
            .iter()
            .filter(|e| e["type"] == "step.started" && e["step"] == "greet")
            .count();
        assert_eq!((starts, greets), (1, 1), "{id} executed more than once");
    }
    admin.stella(&["ledger", "verify"]).ok();
}

#[test]
fn a_claim_is_taken_over_after_its_runner_was_killed() {
    let (_hub, admin, runners) = hub_with_runners(2);
    push_slow_request(&admin, 8);
    let first = start(&runners[0], &["--lease", "2s"]);
    wait_for_step(&first, &runners[0], "r1", "greet");
    first.kill();
    // The second runner waits out the lease, takes the run over and finishes it.
    let second = start(&runners[1], &["--lease", "2s"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let states = hub_states(&admin);
        if states.get("r1").is_some_and(|s| s == "succeeded" || s == "failed") {
            break;
        }
        assert!(Instant::now() < deadline, "the run was not taken over: {states:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    second.kill();
    let events = admin.events("r1");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "run.claimed" && e["data"]["takeover"] == true),
        "the takeover is recorded"
    );
}

#[test]
fn a_pull_request_is_planned_and_noted_but_runs_only_after_the_merge() {
    let (_hub, admin, runners) = hub_with_runners(1);
    let runner = &runners[0];
    open_pull_request(
        &admin,
        "pr-1",
        "p1",
        "apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\ninputs: { who: reviewer }\n",
        "refs/pull/1/head",
    );
    let head = admin.git(&["rev-parse", "HEAD"]);
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    runner
        .stella(&["daemon", "--once", "--repo", ".", "--remote", "origin"])
        .ok();
    // The note is on the hub; any clone can read it with git log --notes=stella.
    admin.git(&["fetch", "-q", "origin", "refs/notes/stella:refs/notes/stella"]);
    let log = admin.git(&["log", "--notes=stella", "-1", &head]);
    let log = String::from_utf8_lossy(&log.stdout).into_owned();
    assert!(
        log.contains("stella plan for runs/p1") && log.contains("planHash: sha256:"),
        "{log}"
    );
    // Not executed: nothing for p1 on main.
    admin.git(&["checkout", "-q", "main"]);
    assert!(!hub_states(&admin).contains_key("p1"));
    // Merged: executed, results pushed.
    admin.git(&["merge", "-q", "--no-ff", "-m", "merge pr-1", "pr-1"]);
    admin.git(&["push", "-q", "origin", "main"]);
    runner
        .stella(&["daemon", "--once", "--repo", ".", "--remote", "origin"])
        .ok();
    assert_eq!(hub_states(&admin).get("p1").map(String::as_str), Some("succeeded"));
    admin.stella(&["ledger", "verify"]).ok();
}

/// A pull request as a forge holds it: on a new branch `branch`, one commit adding run `id`'s
/// request (`request`, its text), pushed to the hub as `head_ref`.
fn open_pull_request(admin: &Repo, branch: &str, id: &str, request: &str, head_ref: &str) {
    admin.git(&["checkout", "-q", "-b", branch]);
    admin
        .write(&format!("{}/request.yaml", run_path(id)), request)
        .commit_all(&format!("request {id}"));
    admin.git(&["push", "-q", "origin", &format!("HEAD:{head_ref}")]);
}

#[test]
fn a_gitlab_merge_request_ref_gets_its_plan_note() {
    let (_hub, admin, runners) = hub_with_runners(1);
    admin.git(&["checkout", "-q", "-b", "mr-7"]);
    admin
        .write(
            &format!("{}/request.yaml", run_path("m7")),
            "apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\ninputs: { who: gitlab }\n",
        )
        .commit_all("request m7");
    // GitLab publishes merge request 7's head here; the default patterns cover it.
    admin.git(&["push", "-q", "origin", "HEAD:refs/merge-requests/7/head"]);
    let head = admin.git(&["rev-parse", "HEAD"]);
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    runners[0]
        .stella(&["daemon", "--once", "--repo", ".", "--remote", "origin"])
        .ok();
    admin.git(&["fetch", "-q", "origin", "refs/notes/stella:refs/notes/stella"]);
    let log = admin.git(&["log", "--notes=stella", "-1", &head]);
    let log = String::from_utf8_lossy(&log.stdout).into_owned();
    assert!(
        log.contains("stella plan for runs/m7") && log.contains("planHash: sha256:"),
        "{log}"
    );
    admin.git(&["checkout", "-q", "main"]);
    assert!(
        !hub_states(&admin).contains_key("m7"),
        "a merge request's head is never executed"
    );
}

#[test]
fn a_pull_request_note_names_its_requester_and_warns_of_an_unsigned_request() {
    let (_hub, admin, runners) = hub_with_runners(1);
    let keys = tempfile::tempdir().unwrap();
    let alice = crate::support::keygen(keys.path(), "alice");
    let signers = std::fs::read_to_string(admin.path().join(".stella/allowed_signers")).unwrap();
    admin.write(
        ".stella/allowed_signers",
        &format!("{signers}alice namespaces=\"git\" {alice}\n"),
    );
    admin.write(
        ".stella/config.yaml",
        "branch: main\ncommit: { batchMs: 200 }\nrequests: { signed: true }\n",
    );
    admin.commit_all("signed requests from alice");
    admin.git(&["push", "-q", "origin", "main"]);
    admin.git(&["checkout", "-q", "-b", "pr-8"]);
    let request = "apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\n";
    admin.write(&format!("{}/request.yaml", run_path("s1")), request);
    admin.git(&["add", "-A"]);
    let out = admin.commit_signed(&keys.path().join("alice"), "request s1");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    admin
        .write(&format!("{}/request.yaml", run_path("u1")), request)
        .commit_all("request u1");
    admin.git(&["push", "-q", "origin", "HEAD:refs/pull/8/head"]);
    let head = admin.git(&["rev-parse", "HEAD"]);
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    runners[0]
        .stella(&["daemon", "--once", "--repo", ".", "--remote", "origin"])
        .ok();
    admin.git(&["fetch", "-q", "origin", "refs/notes/stella:refs/notes/stella"]);
    let note = admin.git(&["notes", "--ref=stella", "show", &head]);
    let note = String::from_utf8_lossy(&note.stdout).into_owned();
    let section = |id: &str| {
        let start = note
            .find(&format!("stella plan for runs/{id}"))
            .unwrap_or_else(|| panic!("{note}"));
        let rest = &note[start + 1..];
        rest[..rest.find("stella plan for").unwrap_or(rest.len())].to_string()
    };
    assert!(section("s1").contains("requestedBy: alice"), "{note}");
    let u1 = section("u1");
    assert!(
        u1.contains("requestedBy: none") && u1.contains("ERR_REQUEST_UNSIGNED"),
        "{note}"
    );
}

#[test]
fn a_live_runner_keeps_its_claim_past_the_lease() {
    let (_hub, admin, runners) = hub_with_runners(2);
    push_slow_request(&admin, 4);
    let first = start(&runners[0], &["--lease", "1s"]);
    wait_for_step(&first, &runners[0], "r1", "greet");
    // The lease is 1 s and the step takes 4 s: only renewal keeps the second runner out.
    let second = start(&runners[1], &["--lease", "1s"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = hub_states(&admin);
        if states.get("r1").is_some_and(|s| s == "succeeded") {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not finish: {states:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    first.kill();
    second.kill();
    let events = admin.events("r1");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "step.started" && e["step"] == "greet")
            .count(),
        1,
        "executed once"
    );
    assert!(
        !events.iter().any(|e| e["type"] == "run.claimed"),
        "no takeover while the runner was alive"
    );
}

/// As `start`, logging at level info (on stderr), for reading what it did.
fn start_logged(r: &Repo, extra: &[&str]) -> Daemon {
    let mut args = vec!["--repo", ".", "--remote", "origin", "--poll", "1s"];
    args.extend_from_slice(extra);
    let mut cmd = r.daemon_command(&args);
    cmd.env("STELLA_LOG", "info");
    Daemon::start(cmd)
}

/// What a daemon said, on stdout and stderr.
fn said(d: &Daemon) -> String {
    d.stdout() + &d.stderr()
}

/// Waits until `daemon`, the runner of `r`, has started `step` of `run`.
fn wait_for_step(daemon: &Daemon, r: &Repo, run: &str, step: &str) {
    let journal = r.journal(run);
    let needle = format!("\"step.started\",\"step\":\"{step}\"");
    daemon.wait_for(&format!("{step} of {run} to start"), Duration::from_secs(30), || {
        std::fs::read_to_string(&journal).unwrap_or_default().contains(&needle)
    });
}

fn wait_for_state(admin: &Repo, run: &str, want: &[&str], secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let states = hub_states(admin);
        if let Some(s) = states.get(run).filter(|s| want.contains(&s.as_str())) {
            return s.clone();
        }
        assert!(Instant::now() < deadline, "{run} never reached {want:?}: {states:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_runner_paused_past_its_lease_stops_and_writes_nothing_over_the_takeover() {
    use nix::sys::signal::Signal;
    let (hub, admin, runners) = hub_with_runners(2);
    push_slow_request(&admin, 4);
    let a = start_logged(&runners[0], &["--lease", "2s"]);
    wait_for_step(&a, &runners[0], "r1", "greet");
    // Runner A freezes (a VM pause, a stuck disk): its claim goes silent.
    a.signal(Signal::SIGSTOP);
    let b = start(&runners[1], &["--lease", "2s"]);
    wait_for_state(&admin, "r1", &["succeeded"], 90);
    // A wakes up: its renewal finds the claim taken, so it stops and drops what it did.
    a.signal(Signal::SIGCONT);
    a.wait_for("runner A to notice the takeover", Duration::from_secs(30), || {
        said(&a).contains("taken over")
    });
    let stale = || {
        std::fs::read_dir(runners[0].path().join(".git/stella/journal"))
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("r1.ndjson.stale-"))
    };
    let tip = |dir: &Path| git(dir, &["rev-parse", "refs/heads/main"]);
    a.wait_for(
        "runner A to set its journal aside and take the hub's branch",
        Duration::from_secs(30),
        || stale() && tip(runners[0].path()) == tip(hub.path()),
    );
    a.kill();
    b.kill();
    // The hub holds B's run, whole: one takeover, one end, and a ledger that verifies.
    let events = admin.events("r1");
    let count = |t: &str| events.iter().filter(|e| e["type"] == t).count();
    assert_eq!(count("run.succeeded"), 1, "{events:?}");
    assert_eq!(count("run.claimed"), 1);
    assert_eq!(events.last().unwrap()["type"], "run.succeeded");
    assert!(!events.iter().any(|e| e["type"] == "run.cancelled"));
    admin.stella(&["ledger", "verify"]).ok();
    // A kept its own record aside, and its branch is the hub's again.
    let kept = stale();
    assert!(kept, "the stale journal is set aside");
    runners[0].git(&["fetch", "-q", "origin"]);
    let ahead = runners[0].git(&["rev-list", "--count", "origin/main..main"]);
    assert_eq!(String::from_utf8_lossy(&ahead.stdout).trim(), "0");
}

#[test]
fn an_unreachable_remote_is_waited_out_not_fatal() {
    let (hub, admin, runners) = hub_with_runners(1);
    let d = start_logged(&runners[0], &[]);
    d.wait_for("the daemon to be ready", Duration::from_secs(30), || {
        d.stdout().contains("stella daemon: ready")
    });
    let away = hub.path().with_extension("away");
    std::fs::rename(hub.path(), &away).unwrap();
    // Two failed exchanges: the daemon went on after the first.
    d.wait_for("two failed exchanges", Duration::from_secs(30), || {
        said(&d).matches("cannot exchange with the remote").count() >= 2
    });
    assert!(d.exited().is_none(), "the daemon stopped:\n{}", said(&d));
    assert!(said(&d).contains("cannot exchange with the remote"));
    std::fs::rename(&away, hub.path()).unwrap();
    admin.write(
        &format!("{}/request.yaml", run_path("r1")),
        "apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\n",
    );
    admin.commit_all("request");
    admin.git(&["push", "-q", "origin", "main"]);
    wait_for_state(&admin, "r1", &["succeeded"], 90);
    let text = said(&d);
    d.kill();
    assert!(text.contains("the remote answers again"));
}

#[test]
fn a_diverged_branch_is_refused_never_merged() {
    let (_hub, admin, runners) = hub_with_runners(1);
    let runner = &runners[0];
    runner
        .write("notes.txt", "a local change\n")
        .commit_all("local, unpushed");
    let before = runner.git(&["rev-parse", "HEAD"]).stdout;
    admin.write("other.txt", "meanwhile\n").commit_all("on the hub");
    admin.git(&["push", "-q", "origin", "main"]);
    let out = runner.stella(&["daemon", "--once", "--repo", ".", "--remote", "origin"]);
    assert_eq!(out.code(), Some(1), "{}", out.stderr());
    assert!(out.stderr().contains("ERR_BRANCH_DIVERGED"), "{}", out.stderr());
    assert!(out.stderr().contains("notes.txt"), "{}", out.stderr());
    assert_eq!(runner.git(&["rev-parse", "HEAD"]).stdout, before, "never merged");
}

#[test]
fn a_request_that_plans_differently_after_the_merge_than_its_note_fails() {
    let (_hub, admin, runners) = hub_with_runners(1);
    let runner = &runners[0];
    open_pull_request(
        &admin,
        "pr-2",
        "p2",
        "apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\n",
        "refs/pull/2/head",
    );
    runner
        .stella(&["daemon", "--once", "--repo", ".", "--remote", "origin"])
        .ok();
    // Meanwhile the pack changes on main: the reviewed plan is not what would run.
    admin.git(&["checkout", "-q", "main"]);
    admin
        .write("packs/hello/pack.yaml", &HELLO.replace("echo hello", "echo goodbye"))
        .commit_all("change the pack");
    admin.git(&["merge", "-q", "--no-ff", "-m", "merge pr-2", "pr-2"]);
    admin.git(&["push", "-q", "origin", "main"]);
    runner
        .stella(&["daemon", "--once", "--repo", ".", "--remote", "origin"])
        .ok();
    assert_eq!(hub_states(&admin).get("p2").map(String::as_str), Some("failed"));
    let events = admin.events("p2");
    let failed = events.iter().find(|e| e["type"] == "run.failed").unwrap();
    assert_eq!(failed["data"]["code"], "ERR_PACK_HASH_MISMATCH", "{failed}");
    assert!(
        failed["msg"].as_str().unwrap().contains("noted on pull request"),
        "{failed}"
    );
    assert!(!events.iter().any(|e| e["type"] == "step.started"));
}

#[test]
fn pull_request_notes_judge_by_the_branch_policy_and_closed_pull_requests_are_dropped() {
    let (_hub, admin, runners) = hub_with_runners(1);
    let runner = &runners[0];
    admin.git(&["checkout", "-q", "-b", "pr-3"]);
    // The pull request tries to loosen the policy for itself: the note must not believe it.
    let net = HELLO.replace(
        "    - id: after\n",
        "    - id: fetch\n      network: [evil.example.com]\n      run: { uses: builtin:exec, with: { argv: [\"true\"] } }\n    - id: after\n",
    );
    admin
        .write(
            ".stella/config.yaml",
            "branch: main\nsealed: true\nnetwork: { allow: [evil.example.com] }\n",
        )
        .write("packs/net/pack.yaml", &net.replace("name: hello", "name: net"))
        .write(
            &format!("{}/request.yaml", run_path("p3")),
            "apiVersion: stella/v1\nkind: RunRequest\npack: packs/net\n",
        )
        .commit_all("request p3");
    admin.git(&["checkout", "-q", "main"]);
    admin
        .write(
            ".stella/config.yaml",
            "branch: main\nsealed: true\ncommit: { batchMs: 200 }\n",
        )
        .commit_all("seal the site");
    admin.git(&["push", "-q", "origin", "main"]);
    admin.git(&["push", "-q", "origin", "pr-3:refs/pull/3/head"]);
    runner
        .stella(&["daemon", "--once", "--repo", ".", "--remote", "origin"])
        .ok();
    admin.git(&["fetch", "-q", "origin", "+refs/notes/stella:refs/notes/stella"]);
    let note = admin.git(&["notes", "--ref=stella", "show", "pr-3"]);
    let note = String::from_utf8_lossy(&note.stdout).into_owned();
    assert!(
        note.contains("does not plan") && note.contains("ERR_PACK_NETWORK_BLOCKED"),
        "{note}"
    );
    // Closed: the ref is gone from the hub, and the runner forgets it.
    admin.git(&["push", "-q", "origin", ":refs/pull/3/head"]);
    runner
        .stella(&["daemon", "--once", "--repo", ".", "--remote", "origin"])
        .ok();
    let left = runner.git(&["for-each-ref", "refs/stella/pulls/"]);
    assert!(left.stdout.is_empty(), "{}", String::from_utf8_lossy(&left.stdout));
}

#[test]
fn a_runner_machine_without_a_git_identity_notes_and_pushes() {
    let (_hub, admin, runners) = hub_with_runners(1);
    open_pull_request(
        &admin,
        "pr-4",
        "p4",
        "apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\n",
        "refs/pull/4/head",
    );
    admin.git(&["checkout", "-q", "main"]);
    admin.request("r1", "hello", "{}\n");
    admin.git(&["push", "-q", "origin", "main"]);
    // No user.name or user.email anywhere: notes and runner commits carry the runner's identity.
    let home = tempfile::tempdir().unwrap();
    let out = crate::support::stella()
        .current_dir(runners[0].path())
        .args(["daemon", "--once", "--repo", ".", "--remote", "origin"])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("EMAIL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(hub_states(&admin).get("r1").map(String::as_str), Some("succeeded"));
    admin.git(&["fetch", "-q", "origin", "+refs/notes/stella:refs/notes/stella"]);
    let note = admin.git(&["notes", "--ref=stella", "show", "pr-4"]);
    assert!(String::from_utf8_lossy(&note.stdout).contains("stella plan for runs/p4"));
}

#[test]
fn approvals_committed_in_the_pull_request_count_after_the_merge() {
    let (_hub, admin, runners) = hub_with_runners(1);
    let keys = tempfile::tempdir().unwrap();
    let alice = keys.path().join("alice");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f"])
        .arg(&alice)
        .status()
        .unwrap();
    assert!(ok.success());
    let public = std::fs::read_to_string(alice.with_extension("pub")).unwrap();
    let mut signers = std::fs::read_to_string(admin.path().join(".stella/allowed_signers")).unwrap();
    signers.push_str(&format!("alice namespaces=\"stella-approval\" {}\n", public.trim()));
    let gated = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: gated, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: review, grants: [Packs.Approve], requiredCount: 1 }\n  steps:\n    - { id: gate, gate: { approval: { id: review } } }\n    - { id: after, run: { uses: builtin:exec, with: { argv: [echo, done] } } }\n";
    admin
        .write(".stella/allowed_signers", &signers)
        .write(".stella/approvers.yaml", "grants:\n  Packs.Approve: [alice]\n")
        .write("packs/gated/pack.yaml", gated)
        .commit_all("alice approves");
    admin.git(&["push", "-q", "origin", "main"]);
    // The pull request brings the request and alice's approval of its plan.
    admin.git(&["checkout", "-q", "-b", "pr-5"]);
    admin.request("g1", "gated", "{}\n");
    admin
        .stella(&["approve", "g1", "--gate", "review", "--key", alice.to_str().unwrap()])
        .ok();
    admin.commit_all("approve g1");
    admin.git(&["push", "-q", "origin", "HEAD:refs/pull/5/head"]);
    let runner = &runners[0];
    runner
        .stella(&["daemon", "--once", "--repo", ".", "--remote", "origin"])
        .ok();
    admin.git(&["checkout", "-q", "main"]);
    assert!(!hub_states(&admin).contains_key("g1"), "planned only, never executed");
    admin.git(&["fetch", "-q", "origin", "+refs/notes/stella:refs/notes/stella"]);
    let note = admin.git(&["notes", "--ref=stella", "show", "pr-5"]);
    let note = String::from_utf8_lossy(&note.stdout).into_owned();
    assert!(note.contains("approval review: 1 of [Packs.Approve] (alice)"), "{note}");
    admin.git(&["merge", "-q", "--no-ff", "-m", "merge pr-5", "pr-5"]);
    admin.git(&["push", "-q", "origin", "main"]);
    runner
        .stella(&["daemon", "--once", "--repo", ".", "--remote", "origin"])
        .ok();
    assert_eq!(hub_states(&admin).get("g1").map(String::as_str), Some("succeeded"));
    admin.stella(&["ledger", "verify"]).ok();
}

#[test]
fn an_idle_runner_fetches_at_its_poll_not_at_its_own_fetches() {
    let (_hub, _admin, runners) = hub_with_runners(1);
    // A clone has packed-refs; every fetch touches it (and FETCH_HEAD, lock files): none of
    // that may wake the daemon to fetch again.
    assert!(runners[0].path().join(".git/packed-refs").exists());
    let mut cmd = runners[0].daemon_command(&["--repo", ".", "--remote", "origin", "--poll", "5s"]);
    cmd.env("STELLA_LOG", "debug");
    let d = Daemon::start(cmd);
    // The scenario: 4 s of an idle daemon, less than one poll.
    std::thread::sleep(Duration::from_secs(4));
    let text = said(&d);
    d.kill();
    let exchanges = text.matches("exchange with the remote").count();
    assert!(
        (1..=2).contains(&exchanges),
        "{exchanges} exchanges in 4 s with --poll 5s:\n{text}"
    );
}

#[test]
fn hand_made_commits_ahead_of_the_remote_are_pushed_with_the_runners() {
    let (_hub, admin, runners) = hub_with_runners(1);
    let runner = &runners[0];
    runner
        .write("notes.md", "written on the runner\n")
        .commit_all("by hand");
    runner.request("r1", "hello", "{}\n");
    runner
        .stella(&["daemon", "--once", "--repo", ".", "--remote", "origin"])
        .ok();
    assert_eq!(hub_states(&admin).get("r1").map(String::as_str), Some("succeeded"));
    assert!(admin.path().join("notes.md").exists());
}

#[test]
fn a_waiting_run_is_released_not_taken_over_from_a_live_runner() {
    let (hub, admin, runners) = hub_with_runners(2);
    let gated = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: gated, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: review, grants: [Packs.Approve], requiredCount: 1 }\n  steps:\n    - { id: before, run: { uses: builtin:exec, with: { argv: [\"true\"] } } }\n    - { id: gate, gate: { approval: { id: review } } }\n";
    admin.write("packs/gated/pack.yaml", gated).commit_all("gated pack");
    admin.request("g1", "gated", "{}\n");
    admin.git(&["push", "-q", "origin", "main"]);
    let daemons: Vec<Daemon> = runners.iter().map(|r| start(r, &["--lease", "1s"])).collect();
    wait_for_state(&admin, "g1", &["waiting"], 60);
    // The scenario: past the lease several times over, both runners alive and polling.
    std::thread::sleep(Duration::from_secs(4));
    drop(daemons);
    let events = admin.events("g1");
    assert!(
        !events.iter().any(|e| e["type"] == "run.claimed"),
        "a waiting run was taken over: {events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| e["type"] == "step.started").count(),
        1,
        "the step before the gate ran once"
    );
    let claims = git(hub.path(), &["for-each-ref", "refs/stella/claims/g1"]);
    assert!(
        claims.trim().is_empty(),
        "the claim of a waiting run is released: {claims}"
    );
}

#[test]
fn a_journal_is_pruned_only_once_the_servers_branch_holds_its_events() {
    let (hub, admin, runners) = hub_with_runners(1);
    let r = &runners[0];
    admin.write(
        &format!("{}/request.yaml", run_path("r1")),
        "apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\n",
    );
    admin.commit_all("request");
    admin.git(&["push", "-q", "origin", "main"]);
    r.stella(&["daemon", "--once", "--repo", ".", "--remote", "origin"])
        .ok();
    wait_for_state(&admin, "r1", &["succeeded"], 60);
    // As if nothing were known pushed: the server's branch unknown here, the server away.
    r.git(&["update-ref", "-d", "refs/remotes/origin/main"]);
    let away = hub.path().with_extension("away");
    std::fs::rename(hub.path(), &away).unwrap();
    let journal = r.journal("r1");
    let f = std::fs::File::options().append(true).open(&journal).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let d = start_logged(r, &[]);
    // Three failed exchanges (1 s, then 2 s apart): housekeeping, at each 1 s poll, looked.
    d.wait_for("three failed exchanges", Duration::from_secs(30), || {
        said(&d).matches("cannot exchange with the remote").count() >= 3
    });
    assert!(journal.exists(), "r1's events are not known to be on the server: kept");
    std::fs::rename(&away, hub.path()).unwrap();
    d.wait_for(
        "r1's journal to go once the server's branch is fetched",
        Duration::from_secs(60),
        || !journal.exists(),
    );
}
