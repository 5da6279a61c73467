//! The daemon and the ledger on real git repositories: requests executed, results committed
//! as signed runner commits, people's work left alone, crashes and signals recovered from.
//! Tampering with the ledger is `tampering.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{Daemon, HELLO, Repo, all_gone, marker, run_path, shared_dir, wait_for_process};

#[test]
fn a_request_runs_and_its_ledger_is_committed() {
    let r = Repo::new();
    r.pack("hello", HELLO).request("r1", "hello", "who: ada\n");
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "succeeded");
    let plan = r
        .at_head(&format!("{}/plan.json", run_path("r1")))
        .expect("plan.json committed");
    assert!(plan.contains("\"planHash\":\"sha256:"));
    assert_eq!(
        r.at_head(&format!("{}/artifacts/greet/greeting", run_path("r1")))
            .unwrap(),
        "hello ada\n"
    );
    let kinds: Vec<String> = r
        .events("r1")
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("run.planned"));
    assert_eq!(kinds.last().map(String::as_str), Some("run.succeeded"));
    assert!(
        r.status_porcelain().is_empty(),
        "git status is clean: {}",
        r.status_porcelain()
    );
    let commits = r.runner_commits();
    assert!(
        !commits.is_empty() && commits.len() <= 3,
        "at most 3 runner commits for a run without gates: {commits:?}"
    );
    let last = r.git(&["log", "-1", "--format=%s"]);
    assert!(
        String::from_utf8_lossy(&last.stdout).starts_with("stella: run r1 succeeded (2 steps"),
        "{}",
        String::from_utf8_lossy(&last.stdout)
    );
    // A second daemon pass executes nothing again.
    r.daemon_once().ok();
    assert_eq!(r.runner_commits().len(), commits.len());
}

#[test]
fn runner_commits_verify_with_stock_git() {
    let r = Repo::new();
    r.pack("hello", HELLO).request("r1", "hello", "{}\n");
    r.daemon_once().ok();
    for commit in r.runner_commits() {
        let out = r.git_try(&[
            "-c",
            "gpg.format=ssh",
            "-c",
            "gpg.ssh.allowedSignersFile=.stella/allowed_signers",
            "verify-commit",
            &commit,
        ]);
        assert!(
            out.status.success(),
            "git verify-commit {commit}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn staged_work_is_never_swallowed() {
    let r = Repo::new();
    r.pack("hello", HELLO).request("r1", "hello", "{}\n");
    r.write("notes.txt", "work in progress\n");
    r.git(&["add", "notes.txt"]);
    r.write("unstaged.txt", "scratch\n");
    let before = r.status_porcelain();
    r.daemon_once().ok();
    assert_eq!(r.status_porcelain(), before, "git status is as it was");
    assert!(
        r.at_head("notes.txt").is_none(),
        "the runner did not commit staged work"
    );
}

#[test]
fn a_person_committing_during_a_run_loses_nothing() {
    let r = Repo::new();
    let slow = HELLO.replace(
        "echo said=yes >> $STELLA_OUTPUT",
        "echo said=yes >> $STELLA_OUTPUT; sleep 1.5",
    );
    r.write(".stella/config.yaml", "branch: main\ncommit: { batchMs: 100 }\n");
    r.pack("hello", &slow).request("r1", "hello", "{}\n");
    let daemon = r.daemon(&["--once", "--repo", "."]);
    daemon.wait_for("the slow step to start", Duration::from_secs(20), || {
        std::fs::read_to_string(r.journal("r1"))
            .unwrap_or_default()
            .contains("\"step.started\",\"step\":\"greet\"")
    });
    r.write("docs.md", "a person's commit\n");
    // git refuses a commit while the runner holds the branch's lock; a person tries again.
    commit_beside(&r, "docs while the run goes");
    let out = daemon.wait(Duration::from_secs(60));
    assert!(out.0.status.success());
    assert_eq!(r.state("r1"), "succeeded");
    assert_eq!(r.at_head("docs.md").as_deref(), Some("a person's commit\n"));
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn a_request_that_does_not_validate_is_recorded_as_failed() {
    let r = Repo::new();
    r.pack("hello", HELLO);
    r.write(
        &format!("{}/request.yaml", run_path("bad")),
        "apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\ninputs: { whom: x }\n",
    )
    .commit_all("bad request");
    r.daemon_once().ok();
    let show = r.show("bad");
    assert_eq!(show["state"], "failed");
    assert_eq!(show["code"], "ERR_PACK_INPUT_INVALID");
    let failed = r.events("bad").into_iter().find(|e| e["type"] == "run.failed").unwrap();
    assert_eq!(failed["data"]["problems"][0]["field"], "inputs.whom");
}

#[test]
fn a_pinned_plan_hash_that_no_longer_matches_is_refused() {
    let r = Repo::new();
    r.pack("hello", HELLO).request("r1", "hello", "{}\n");
    r.write("packs/hello/pack.yaml", &HELLO.replace("echo hello", "echo bye"))
        .commit_all("change the pack after the request");
    r.daemon_once().ok();
    assert_eq!(r.show("r1")["code"], "ERR_PACK_HASH_MISMATCH");
}

#[test]
fn a_repeated_run_token_is_not_executed() {
    let r = Repo::new();
    r.pack("hello", HELLO);
    for id in ["a1", "a2"] {
        r.write(
            &format!("runs/{id}/request.yaml"),
            "apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\nrunToken: deploy-42\n",
        );
    }
    r.commit_all("two requests, one token");
    r.daemon_once().ok();
    assert_eq!(r.state("a1"), "succeeded");
    let dup = r.show("a2");
    assert_eq!(
        (dup["state"].as_str(), dup["code"].as_str()),
        (Some("failed"), Some("ERR_RUN_DUPLICATE"))
    );
    assert!(r.events("a2").iter().all(|e| e["type"] != "step.started"));
}

#[test]
fn run_tokens_that_arrive_after_the_runner_learnt_the_branch_still_count() {
    let r = Repo::new();
    r.pack("hello", HELLO);
    let request = |id: &str, token: &str| {
        r.write(
            &format!("{}/request.yaml", run_path(id)),
            &format!("apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\nrunToken: {token}\n"),
        );
    };
    let d = r.daemon(&["--repo", ".", "--poll", "200ms"]);
    request("t0", "warm-up");
    commit_beside(&r, "t0");
    d.wait_for("t0 to succeed", Duration::from_secs(60), || {
        r.state("t0") == "succeeded"
    });
    // The runner learnt the branch's tokens at t0's commit; these arrive a commit later.
    request("t1", "deploy-7");
    request("t2", "deploy-7");
    request("t3", "deploy-8");
    commit_beside(&r, "t1, t2 and t3");
    d.wait_for("t1, t2 and t3 to finish", Duration::from_secs(60), || {
        ["t1", "t2", "t3"]
            .iter()
            .all(|id| matches!(r.state(id).as_str(), "succeeded" | "failed"))
    });
    request("t4", "deploy-7");
    commit_beside(&r, "t4");
    d.wait_for("t4 to finish", Duration::from_secs(60), || r.state("t4") == "failed");
    d.kill();
    assert_eq!(r.state("t1"), "succeeded", "the smallest id owns a new token");
    for dup in ["t2", "t4"] {
        assert_eq!(r.show(dup)["code"], "ERR_RUN_DUPLICATE", "{dup}: the token of t1");
        assert!(r.events(dup).iter().all(|e| e["type"] != "step.started"));
    }
    assert_eq!(r.state("t3"), "succeeded", "its own token");
}

/// Commits everything beside a running daemon, trying again while the runner's commit wins.
fn commit_beside(r: &Repo, msg: &str) {
    for _ in 0..50 {
        if r.git_try(&["add", "-A"]).status.success() && r.git_try(&["commit", "-q", "-m", msg]).status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("could not commit {msg} beside the daemon");
}

#[test]
fn kill_9_in_a_step_then_restart_recovers_the_run() {
    let r = Repo::new();
    let (m, shared) = (marker(), shared_dir());
    let once = HELLO.replace(
        "echo said=yes >> $STELLA_OUTPUT",
        &format!(
            "echo said=yes >> $STELLA_OUTPUT; if [ ! -f {0}/once ]; then touch {0}/once; sleep 30; fi # {m}",
            shared.display()
        ),
    );
    r.pack("hello", &once).request("r1", "hello", "{}\n");
    let daemon = r.daemon(&["--once", "--repo", "."]);
    daemon.wait_for("the step to start", Duration::from_secs(20), || {
        std::fs::read_to_string(r.journal("r1"))
            .unwrap_or_default()
            .contains("\"step.started\",\"step\":\"greet\"")
    });
    wait_for_process(&m);
    daemon.wait_for("the step to begin its long sleep", Duration::from_secs(20), || {
        shared.join("once").exists()
    });
    daemon.kill();
    // The step dies with its runner, so the restarted runner never runs it beside an orphan.
    assert!(all_gone(&m, Duration::from_secs(10)), "the step outlived its runner");
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "succeeded");
    let kinds: Vec<String> = r
        .events("r1")
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"run.recovered".to_string()), "{kinds:?}");
    let greet_starts = r
        .events("r1")
        .iter()
        .filter(|e| e["type"] == "step.started" && e["step"] == "greet")
        .count();
    assert_eq!(greet_starts, 2, "the interrupted step ran again (at-least-once)");
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn a_committed_cancel_stops_a_running_run_within_two_seconds() {
    let r = Repo::new();
    let slow = HELLO.replace("echo said=yes >> $STELLA_OUTPUT", "sleep 60");
    r.pack("hello", &slow).request("r1", "hello", "{}\n");
    let daemon = r.daemon(&["--repo", ".", "--poll", "30s"]);
    daemon.wait_for("the step to start", Duration::from_secs(20), || {
        std::fs::read_to_string(r.journal("r1"))
            .unwrap_or_default()
            .contains("\"step.started\",\"step\":\"greet\"")
    });
    r.stella(&["runs", "cancel", "r1", "--reason", "wrong target"]).ok();
    r.commit_all("cancel r1");
    let asked = Instant::now();
    while !std::fs::read_to_string(r.journal("r1"))
        .unwrap_or_default()
        .contains("\"type\":\"run.cancelled\"")
    {
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "not cancelled within 2 seconds"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.wait_for("the cancelled run to be committed", Duration::from_secs(20), || {
        r.event_files("r1")
            .iter()
            .any(|f| r.at_head(f).is_some_and(|e| e.contains("\"type\":\"run.cancelled\"")))
    });
    daemon.kill();
    assert_eq!(r.state("r1"), "cancelled");
    let again = r.stella(&["runs", "cancel", "r1"]).ok();
    assert!(
        again.stdout().contains("nothing"),
        "a second cancel is a no-op: {}",
        again.stdout()
    );
}

#[test]
fn init_twice_changes_nothing() {
    let r = Repo::new();
    let before = r.status_porcelain();
    let key = std::fs::read(r.path().join(".git/stella/runner_ed25519")).unwrap();
    let out = r.stella(&["init", "."]).ok();
    assert!(out.stdout().contains("nothing changed"), "{}", out.stdout());
    assert_eq!(r.status_porcelain(), before);
    assert_eq!(std::fs::read(r.path().join(".git/stella/runner_ed25519")).unwrap(), key);
}

#[test]
fn runs_list_and_logs_read_the_ledger() {
    let r = Repo::with_finished_run();
    let list = r.stella(&["runs", "list", "--json"]).ok();
    let rows: serde_json::Value = serde_json::from_str(&list.stdout()).unwrap();
    assert_eq!(rows[0]["id"], "r1");
    assert_eq!(rows[0]["state"], "succeeded");
    assert_eq!(rows[0]["pack"], "packs/hello");
    let logs = r.stella(&["runs", "logs", "r1"]).ok();
    assert!(logs.stdout().contains("[greet] hello world"), "{}", logs.stdout());
    let bad = r.stella(&["runs", "show", "../etc"]);
    assert_eq!(bad.code(), Some(2));
    assert!(bad.stderr().contains("error[ERR_USAGE]"));
}

#[test]
fn doctor_finds_a_broken_setup() {
    let r = Repo::new();
    let ok = r.stella(&["doctor"]).ok();
    assert!(ok.stdout().contains("ok   runner key SHA256:"), "{}", ok.stdout());
    assert!(
        !ok.stdout().contains("differs from the one committed"),
        "{}",
        ok.stdout()
    );
    let signers = std::fs::read_to_string(r.path().join(".stella/allowed_signers")).unwrap();
    r.write(
        ".stella/allowed_signers",
        &format!("{signers}# a change not committed yet\n"),
    );
    let uncommitted = r.stella(&["doctor"]).ok();
    assert!(
        uncommitted
            .stdout()
            .contains("warn .stella/allowed_signers differs from the one committed on `main`"),
        "{}",
        uncommitted.stdout()
    );
    r.write(".stella/allowed_signers", "alice not-a-key\n");
    let bad = r.stella(&["doctor"]);
    assert_eq!(bad.code(), Some(1));
    assert!(
        bad.stdout().contains("FAIL .stella/allowed_signers does not parse"),
        "{}",
        bad.stdout()
    );
}

#[test]
fn doctor_checks_have_ids_one_runs_alone_and_json_lists_them() {
    let r = Repo::new();
    let doctor = |args: &[&str]| {
        let out = crate::support::stella()
            .current_dir(r.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("EMAIL")
            .args(["doctor", "--check"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = doctor(&["check.runner.key"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.lines().count(), 1, "one check, one line:\n{out}");
    assert!(out.starts_with("ok   runner key SHA256:"), "{out}");
    let (_, out, _) = doctor(&["check.git.identity"]);
    assert!(
        out.starts_with("warn git has no user.name and user.email here"),
        "{out}"
    );
    r.git(&["config", "user.name", "Ada"]);
    r.git(&["config", "user.email", "ada@example.com"]);
    let (_, out, _) = doctor(&["check.git.identity", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"checks": [{"id": "check.git.identity", "level": "ok", "message": "git identity Ada <ada@example.com>"}], "ok": true})
    );
    let (code, _, err) = doctor(&["check.nope"]);
    assert_eq!(code, Some(2));
    assert!(err.starts_with("error[ERR_USAGE]: unknown check `check.nope`"), "{err}");
    // Every line of a whole run has an id; a failing check fails the whole (exit 1).
    r.write(".stella/allowed_signers", "alice not-a-key\n");
    let all = r.stella(&["doctor", "--json"]);
    assert_eq!(all.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&all.stdout()).unwrap();
    assert_eq!(json["ok"], false);
    let checks = json["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .all(|c| c["id"].as_str().is_some_and(|id| id.starts_with("check."))),
        "{json}"
    );
    assert!(
        checks
            .iter()
            .any(|c| c["id"] == "check.signers" && c["level"] == "fail"),
        "{json}"
    );
    for id in [
        "check.git.installed",
        "check.sandbox.policy",
        "check.config",
        "check.runs",
        "check.ledger.maintenance",
    ] {
        assert!(checks.iter().any(|c| c["id"] == id), "{id} in {json}");
    }
}

#[test]
fn kill_9_at_many_points_then_restart_always_finishes_with_a_verifiable_ledger() {
    let m = marker();
    let three = format!(
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: {{ name: three, version: 1.0.0 }}\nspec:\n  steps:\n    - {{ id: one, run: {{ uses: builtin:shell, with: {{ script: \"sleep 0.3; echo one # {m}\" }} }} }}\n    - {{ id: two, run: {{ uses: builtin:shell, with: {{ script: \"sleep 0.3; echo two # {m}\" }} }} }}\n    - {{ id: three, run: {{ uses: builtin:shell, with: {{ script: \"sleep 0.3; echo three # {m}\" }} }} }}\n"
    );
    for delay_ms in [40u64, 250, 450, 700, 950, 1300] {
        let r = Repo::new();
        r.write(".stella/config.yaml", "branch: main\ncommit: { batchMs: 100 }\n");
        r.pack("three", &three).request("r1", "three", "{}\n");
        let daemon = r.daemon(&["--once", "--repo", "."]);
        // The scenario: the runner dies after this long, wherever it is then.
        std::thread::sleep(Duration::from_millis(delay_ms));
        daemon.kill();
        assert!(
            all_gone(&m, Duration::from_secs(2)),
            "killed after {delay_ms} ms: a step outlived its runner"
        );
        r.daemon_once().ok();
        let show = r.show("r1");
        assert_eq!(show["state"], "succeeded", "killed after {delay_ms} ms: {show:#}");
        for step in show["steps"].as_array().unwrap() {
            assert_eq!(step["status"], "succeeded", "killed after {delay_ms} ms: {show:#}");
        }
        let seqs: Vec<u64> = r.events("r1").iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "killed after {delay_ms} ms: seqs {seqs:?}"
        );
        r.stella(&["ledger", "verify"]).ok();
        r.stella(&["evidence", "verify", "r1"]).ok();
    }
}

/// A watching daemon whose run r1 is in a step that sleeps 30 s the first time only; the
/// step's pid (its process group).
fn daemon_in_a_long_step(r: &Repo) -> (Daemon, i32) {
    let (m, shared) = (marker(), shared_dir());
    let once = HELLO.replace(
        "echo said=yes >> $STELLA_OUTPUT",
        &format!(
            "echo said=yes >> $STELLA_OUTPUT; if [ ! -f {0}/once ]; then touch {0}/once; sleep 30; fi # {m}",
            shared.display()
        ),
    );
    r.pack("hello", &once).request("r1", "hello", "{}\n");
    let daemon = r.daemon(&["--repo", ".", "--kill-grace", "1s"]);
    let step = wait_for_process(&m);
    daemon.wait_for("the step to begin its long sleep", Duration::from_secs(20), || {
        shared.join("once").exists()
    });
    (daemon, step)
}

#[test]
fn sigterm_ends_the_steps_and_the_run_resumes_at_the_next_start() {
    let r = Repo::new();
    let (daemon, step) = daemon_in_a_long_step(&r);
    let started = Instant::now();
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let ended = daemon.wait(Duration::from_secs(30));
    let status = ended.0.status;
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        started.elapsed()
    );
    let out = ended.stdout();
    assert!(out.contains("stopped on SIGTERM; 1 step(s) ended"), "{out}");
    // Nothing of the step outlives the daemon.
    assert!(
        !Path::new(&format!("/proc/{step}")).exists(),
        "the step process {step} survived"
    );
    // Its end was not taken for a failure: the run is resumed and finishes.
    assert!(
        !std::fs::read_to_string(r.journal("r1"))
            .unwrap()
            .contains("step.failed"),
        "the killed step was recorded as failed"
    );
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "succeeded");
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn a_service_stop_signalling_every_process_at_once_does_not_fail_the_run() {
    // systemd's default KillMode sends SIGTERM to the daemon and to the step together.
    let r = Repo::new();
    let (daemon, step) = daemon_in_a_long_step(&r);
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    let group = nix::unistd::getpgid(Some(Pid::from_raw(step))).unwrap();
    killpg(group, Signal::SIGTERM).unwrap();
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(30)).0.status.success());
    let journal = std::fs::read_to_string(r.journal("r1")).unwrap();
    assert!(
        !journal.contains("step.failed") && !journal.contains("run.failed"),
        "{journal}"
    );
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "succeeded");
}

#[test]
fn a_daemon_whose_reader_went_away_goes_on() {
    // `stella daemon | head -1`: the reader closes the pipe after the first line.
    let r = Repo::new();
    r.pack("hello", HELLO).request("r1", "hello", "{}\n");
    let daemon = Daemon::start_unread(r.daemon_command(&["--once", "--repo", "."]));
    let out = daemon.wait(Duration::from_secs(60)).0;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("panicked"),
        "{:?}\n{err}",
        out.status
    );
    assert_eq!(r.state("r1"), "succeeded");
}

#[test]
fn sealed_steps_see_only_loopback_unless_they_declare_an_allowed_host() {
    let r = Repo::new();
    r.write(
        ".stella/config.yaml",
        "branch: main\nsealed: true\nnetwork: { allow: [mirror.internal] }\n",
    );
    r.commit_all("seal the site");
    let pack = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: net, version: 1.0.0 }\nspec:\n  steps:\n    - id: offline\n      run: { uses: builtin:shell, with: { script: \"awk -F: 'NR>2 {gsub(/ /, \\\"\\\", $1); print \\\"iface \\\" $1}' /proc/net/dev; cat /sys/class/net/lo/operstate\" } }\n    - id: mirror\n      network: [mirror.internal]\n      run: { uses: builtin:shell, with: { script: \"awk -F: 'NR>2 {gsub(/ /, \\\"\\\", $1); print \\\"iface \\\" $1}' /proc/net/dev\" } }\n";
    r.pack("net", pack).request("n1", "net", "{}\n");
    r.daemon_once().ok();
    assert_eq!(r.state("n1"), "succeeded");
    let lines = |step: &str| -> Vec<String> {
        r.events("n1")
            .iter()
            .filter(|e| e["type"] == "step.log" && e["step"] == step)
            .map(|e| e["msg"].as_str().unwrap().to_string())
            .collect()
    };
    let offline = lines("offline");
    assert_eq!(
        offline.iter().filter(|l| l.starts_with("iface ")).collect::<Vec<_>>(),
        ["iface lo"],
        "{offline:?}"
    );
    assert!(
        offline.iter().any(|l| l == "unknown" || l == "up"),
        "lo is up: {offline:?}"
    );
    // The host this test runs on has more than loopback; a step with an allowed host sees it.
    let host: Vec<String> = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .map(|l| format!("iface {}", l.split(':').next().unwrap().trim()))
        .collect();
    let mirror = lines("mirror");
    assert_eq!(mirror.len(), host.len(), "{mirror:?} vs {host:?}");
}

#[test]
fn an_index_lock_left_by_a_killed_runner_does_not_block_the_next() {
    let r = Repo::new();
    r.pack("hello", HELLO).request("r1", "hello", "{}\n");
    // A runner killed while it held the index lock: the lock stays, marked with its pid.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(r.path().join(".git/index.lock"), b"").unwrap();
    std::fs::create_dir_all(r.path().join(".git/stella")).unwrap();
    std::fs::write(r.path().join(".git/stella/index-lock-owner"), pid.to_string()).unwrap();
    let started = Instant::now();
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "succeeded");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "waited on the lock: {:?}",
        started.elapsed()
    );
    assert!(!r.path().join(".git/index.lock").exists());
    assert!(r.status_porcelain().is_empty(), "{}", r.status_porcelain());
}
