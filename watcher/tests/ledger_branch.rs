//! A separate ledger branch (`ledger.branch`, DESIGN section 13): requests committed by people
//! on `main`, every runner commit on the ledger branch only (locally, without touching the
//! working tree of `main`; with a remote, against a hub whose `main` refuses the runner), a
//! kill -9 in the middle losing nothing, `ledger verify` on a fresh clone, and moving a
//! repository between the two modes.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{HELLO, Repo, git_in as git};

const LEDGER: &str = "stella/ledger";

/// A repository whose `main` names the ledger branch (set up by `stella init --ledger-branch`),
/// with the hello pack.
fn with_ledger_branch() -> Repo {
    let r = Repo::new();
    let out = r.stella(&["init", ".", "--ledger-branch", LEDGER]).ok();
    assert!(out.stdout().contains("ledger branch"), "{}", out.stdout());
    r.commit_all("separate ledger branch");
    r.pack("hello", HELLO);
    r
}

/// Committer emails of the commits of `rev`.
fn committers(dir: &Path, rev: &str) -> Vec<String> {
    git(dir, &["log", "--format=%ce", rev])
        .lines()
        .map(str::to_string)
        .collect()
}

/// The states of runs on the ledger branch, from `runs list --json` in `r`.
fn states(r: &Repo) -> std::collections::BTreeMap<String, String> {
    r.states()
}

#[test]
fn init_names_the_ledger_branch_once_and_refuses_the_watched_branch() {
    let r = Repo::new();
    r.stella(&["init", ".", "--ledger-branch", LEDGER]).ok();
    let config = std::fs::read_to_string(r.path().join(".stella/config.yaml")).unwrap();
    assert!(config.contains("ledger: { branch: stella/ledger }"), "{config}");
    assert!(!git(r.path(), &["rev-parse", "--verify", "refs/heads/stella/ledger"]).is_empty());
    let again = r.stella(&["init", ".", "--ledger-branch", LEDGER]).ok();
    assert!(again.stdout().contains("nothing changed"), "{}", again.stdout());
    let other = r.stella(&["init", ".", "--ledger-branch", "other"]);
    assert_eq!(other.code(), Some(2), "{}", other.stderr());
    assert!(other.stderr().contains("stella/ledger"), "{}", other.stderr());
    let fresh = Repo::new();
    let same = fresh.stella(&["init", ".", "--ledger-branch", "main"]);
    assert_eq!(same.code(), Some(2), "{}", same.stderr());
}

#[test]
fn local_mode_runs_on_the_ledger_branch_and_never_touches_main() {
    let r = with_ledger_branch();
    r.request("r1", "hello", "{ who: ledger }\n");
    let main_before = git(r.path(), &["rev-parse", "main"]);
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "succeeded");
    assert_eq!(states(&r).get("r1").map(String::as_str), Some("succeeded"));
    // main: not moved, no runner commit, HEAD still on it, nothing changed in the working tree.
    assert_eq!(git(r.path(), &["rev-parse", "main"]), main_before);
    assert!(
        !committers(r.path(), "main")
            .iter()
            .any(|c| c == "runner@stella.invalid")
    );
    assert_eq!(git(r.path(), &["symbolic-ref", "HEAD"]).trim(), "refs/heads/main");
    assert_eq!(r.status_porcelain(), "");
    assert!(!r.path().join(format!("{}/plan.json", r.run_dir("r1"))).exists());
    // The ledger branch holds the request (taken in by a runner merge) and the results.
    let merges = git(r.path(), &["log", "--merges", "--first-parent", "--format=%s", LEDGER]);
    assert!(merges.contains("stella: take in main"), "{merges}");
    let files = git(r.path(), &["ls-tree", "-r", "--name-only", LEDGER]);
    assert!(
        files.contains("/r1/request.yaml") && files.contains("/r1/plan.json"),
        "{files}"
    );
    let verify = r.stella(&["ledger", "verify", "--json"]).ok();
    let report: serde_json::Value = serde_json::from_str(&verify.stdout()).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert!(report["runnerCommits"].as_u64().unwrap() > 0, "{report}");
    let archive = r.outside("r1.tar.gz");
    r.stella(&["runs", "export", "r1", "-o", archive.to_str().unwrap()])
        .ok();
    r.stella(&["evidence", "verify", archive.to_str().unwrap()]).ok();
    // The HTTP API reads the ledger branch too.
    let mut cmd = crate::support::stella();
    cmd.current_dir(r.path())
        .args(["serve", "--repo", ".", "--http", "127.0.0.1:0"]);
    let serve = crate::support::Daemon::start(cmd);
    let base = crate::support::http::base_of(&serve);
    let run = crate::support::http::get(&base, "/api/v1/runs/r1").json();
    assert_eq!(
        (&run["state"], &run["evidence"]["verified"]),
        (&serde_json::json!("succeeded"), &serde_json::json!(true)),
        "{run}"
    );
    serve.kill();
    // A second request on main is taken in by a second merge and runs too.
    r.request("r2", "hello", "{}\n");
    r.daemon_once().ok();
    assert_eq!(r.state("r2"), "succeeded");
    assert_eq!(r.status_porcelain(), "");
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn a_merge_that_is_not_the_runners_or_a_person_on_the_ledger_branch_fails_verify() {
    let r = with_ledger_branch();
    r.request("r1", "hello", "{}\n");
    r.daemon_once().ok();
    // A person commits on the ledger branch (a pack change no runner makes there).
    git(r.path(), &["checkout", "-q", LEDGER]);
    r.write("packs/hello/extra.txt", "sneaked in\n");
    r.commit_all("a person on the ledger branch");
    git(r.path(), &["checkout", "-q", "main"]);
    let out = r.stella(&["ledger", "verify", "--json"]);
    assert_ne!(out.code(), Some(0), "{}", out.stdout());
    assert!(out.stdout().contains("not a trusted runner commit"), "{}", out.stdout());
    assert!(out.stdout().contains("outside runs/"), "{}", out.stdout());
}

#[test]
fn a_kill_9_in_the_middle_then_restart_loses_nothing() {
    let r = with_ledger_branch();
    r.request("k1", "hello", "{}\n");
    let mut killed = 0;
    for (i, point) in ["before-step-start", "mid-commit"].iter().enumerate() {
        let file = r.outside(&format!("chaos{i}.yaml"));
        std::fs::write(
            &file,
            format!("rules:\n  - {{ action: kill-runner, point: {point}, run: k1, times: 1 }}\n"),
        )
        .unwrap();
        let out = r.stella(&["daemon", "--once", "--repo", ".", "--chaos", file.to_str().unwrap()]);
        use std::os::unix::process::ExitStatusExt;
        if out.0.status.signal() == Some(libc::SIGKILL) {
            killed += 1;
        } else {
            // The run finished before the point came: nothing to recover.
            assert!(out.0.status.success(), "{}", out.stderr());
        }
    }
    assert!(killed > 0, "no kill happened");
    r.daemon_once().ok();
    assert_eq!(r.state("k1"), "succeeded");
    let types = ledger_event_types(&r, "k1");
    assert!(types.iter().any(|t| t == "run.recovered"), "{types:?}");
    assert_eq!(types.iter().filter(|t| *t == "step.succeeded").count(), 2, "{types:?}");
    assert_eq!(types.iter().filter(|t| *t == "run.succeeded").count(), 1, "{types:?}");
    assert_eq!(r.status_porcelain(), "");
    assert!(
        !committers(r.path(), "main")
            .iter()
            .any(|c| c == "runner@stella.invalid")
    );
    r.stella(&["ledger", "verify"]).ok();
}

/// The types of run `id`'s events on the ledger branch, in order.
fn ledger_event_types(r: &Repo, id: &str) -> Vec<String> {
    let dir = stella_engine::layout::RunDir::new(id).dir();
    let mut files: Vec<String> = git(r.path(), &["ls-tree", "-r", "--name-only", LEDGER, &format!("{dir}/")])
        .lines()
        .filter(|p| p.ends_with("/events.ndjson") || p.contains("/events/"))
        .map(str::to_string)
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            git(r.path(), &["show", &format!("{LEDGER}:{f}")])
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["type"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn moving_to_a_ledger_branch_and_back_keeps_history_and_verifies() {
    // Same branch first: a run on main.
    let r = Repo::with_finished_run();
    let before = git(r.path(), &["rev-parse", "main"]);
    // To a separate ledger branch: init names it and creates it at main's tip.
    r.stella(&["init", ".", "--ledger-branch", LEDGER]).ok();
    r.commit_all("move the ledger to stella/ledger");
    r.request("r2", "hello", "{}\n");
    r.daemon_once().ok();
    assert_eq!(
        (r.state("r1").as_str(), r.state("r2").as_str()),
        ("succeeded", "succeeded")
    );
    r.stella(&["ledger", "verify"]).ok();
    assert_eq!(r.status_porcelain(), "");
    // And back: a person merges the ledger branch into main, and the config names main again.
    git(r.path(), &["merge", "-q", "--no-edit", "--no-ff", LEDGER]);
    r.write(".stella/config.yaml", "branch: main\ncommit: { batchMs: 2000 }\n");
    r.commit_all("back to one branch");
    r.request("r3", "hello", "{}\n");
    r.daemon_once().ok();
    assert_eq!(r.state("r3"), "succeeded");
    assert!(r.at_head(&format!("{}/plan.json", r.run_dir("r3"))).is_some());
    r.stella(&["ledger", "verify"]).ok();
    // History never rewritten: the first tip is still in main's history.
    git(r.path(), &["merge-base", "--is-ancestor", before.trim(), "main"]);
}

/// A bare hub whose `main` refuses any push carrying a commit by the runner, or rewriting it;
/// refused pushes are logged to `refused.log` in the hub.
fn protected_hub() -> tempfile::TempDir {
    let hub = tempfile::tempdir().unwrap();
    git(hub.path(), &["init", "-q", "--bare", "-b", "main"]);
    let hook = hub.path().join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\nzero=0000000000000000000000000000000000000000\n\
         while read old new ref; do\n\
         [ \"$ref\" = refs/heads/main ] || continue\n\
         if [ \"$new\" = $zero ]; then echo \"main: deletion refused\" >&2; echo \"$ref delete\" >> refused.log; exit 1; fi\n\
         if git log --format=%ce \"$new\" --not --all | grep -qi 'runner@stella.invalid'; then\n\
         echo \"main is protected: no runner commits\" >&2; echo \"$ref runner\" >> refused.log; exit 1; fi\n\
         if [ \"$old\" != $zero ] && ! git merge-base --is-ancestor \"$old\" \"$new\"; then\n\
         echo \"main: no force-push\" >&2; echo \"$ref force\" >> refused.log; exit 1; fi\n\
         done\nexit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    hub
}

#[test]
fn a_hub_whose_main_refuses_the_runner_gets_every_run_executed_on_the_ledger_branch() {
    let hub = protected_hub();
    let hub_path = hub.path().to_str().unwrap().to_string();
    let admin = with_ledger_branch();
    admin.write(
        ".stella/config.yaml",
        &format!("branch: main\ncommit: {{ batchMs: 200 }}\nledger: {{ branch: {LEDGER} }}\n"),
    );
    admin.commit_all("fast commits");
    admin.git(&["remote", "add", "origin", &hub_path]);
    admin.git(&["push", "-q", "origin", "main"]);
    // The runner's clone: its own key, trusted by a person's commit on main.
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["clone", "-q", &hub_path, "."]);
    let runner = Repo { dir };
    runner.stella(&["init", "."]).ok();
    runner.commit_all("trust this runner");
    runner.git(&["push", "-q", "origin", "main"]);
    // The hook itself works: a runner-made commit on main is refused.
    let probe = Repo::new();
    probe.git(&["remote", "add", "origin", &hub_path]);
    probe.git(&["fetch", "-q", "origin"]);
    probe.git(&["checkout", "-q", "-B", "probe", "origin/main"]);
    probe.git(&[
        "-c",
        "user.email=runner@stella.invalid",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "stella: forged",
    ]);
    assert!(!probe.git_try(&["push", "-q", "origin", "probe:main"]).status.success());
    std::fs::remove_file(hub.path().join("refused.log")).unwrap();

    admin.git(&["pull", "-q", "--ff-only", "origin", "main"]);
    admin.request("h1", "hello", "{ who: one }\n");
    admin.git(&["push", "-q", "origin", "main"]);
    let daemon = runner.daemon(&["--repo", ".", "--remote", "origin", "--poll", "1s"]);
    // The observer: a clone that reads the hub's ledger branch.
    let observer = Repo::new();
    observer.git(&["remote", "add", "origin", &hub_path]);
    let hub_states = |observer: &Repo| {
        observer.git(&["fetch", "-q", "origin", "+main:refs/remotes/origin/main"]);
        observer.git(&["reset", "-q", "--hard", "origin/main"]);
        if !observer
            .git_try(&["fetch", "-q", "origin", &format!("+{LEDGER}:{LEDGER}")])
            .status
            .success()
        {
            return Default::default();
        }
        states(observer)
    };
    let wait = |ids: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = hub_states(&observer);
            if ids.iter().all(|id| s.get(*id).map(String::as_str) == Some("succeeded")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "runs not done on the hub: {s:?}\nstderr:\n{}",
                daemon.stderr()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    wait(&["h1"]);
    // A second request while the runner is up: a second merge, pushed.
    admin.request("h2", "hello", "{ who: two }\n");
    admin.git(&["push", "-q", "origin", "main"]);
    wait(&["h1", "h2"]);
    daemon.kill();

    assert!(
        !hub.path().join("refused.log").exists(),
        "the runner tried to push main: {}",
        std::fs::read_to_string(hub.path().join("refused.log")).unwrap_or_default()
    );
    assert!(
        !committers(hub.path(), "main")
            .iter()
            .any(|c| c == "runner@stella.invalid")
    );
    // The runner's clone, whose own `main` is older than the hub's, verifies too.
    runner.stella(&["ledger", "verify"]).ok();
    // A fresh clone of the hub verifies the ledger branch.
    let fresh = tempfile::tempdir().unwrap();
    git(fresh.path(), &["clone", "-q", &hub_path, "."]);
    git(fresh.path(), &["branch", LEDGER, &format!("origin/{LEDGER}")]);
    let out = crate::support::stella()
        .current_dir(fresh.path())
        .args(["ledger", "verify", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["runs"], 2, "{report}");
}

#[test]
fn two_runners_share_the_ledger_branch_and_each_run_executes_once() {
    let (hub, admin, runners) = crate::remote::hub_with_runners(2);
    admin.write(
        ".stella/config.yaml",
        &format!(
            "branch: main\ncommit: {{ batchMs: 200 }}\nlimits: {{ maxRuns: 2 }}\nledger: {{ branch: {LEDGER} }}\n"
        ),
    );
    admin.commit_all("separate ledger branch");
    for i in 0..8 {
        admin.request(&format!("t{i}"), "hello", &format!("{{ who: t{i} }}\n"));
    }
    admin.git(&["push", "-q", "origin", "main"]);
    for r in &runners {
        r.git(&["pull", "-q", "--ff-only", "origin", "main"]);
    }
    let daemons: Vec<_> = runners
        .iter()
        .map(|r| r.daemon(&["--repo", ".", "--remote", "origin", "--poll", "1s"]))
        .collect();
    let ids: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let fetched = admin
            .git_try(&["fetch", "-q", "origin", &format!("+{LEDGER}:{LEDGER}")])
            .status
            .success();
        let s = if fetched { states(&admin) } else { Default::default() };
        if ids.iter().all(|id| s.get(id).map(String::as_str) == Some("succeeded")) {
            break;
        }
        if Instant::now() >= deadline {
            for (i, d) in daemons.iter().enumerate() {
                eprintln!("--- runner {i}\n{}{}", d.stdout(), d.stderr());
            }
            panic!("not all runs finished: {s:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for d in daemons {
        d.kill();
    }
    for id in &ids {
        let types = ledger_event_types(&admin, id);
        assert_eq!(
            types.iter().filter(|t| *t == "step.succeeded").count(),
            2,
            "{id}: {types:?}"
        );
        assert_eq!(
            types.iter().filter(|t| *t == "run.planned").count(),
            1,
            "{id}: {types:?}"
        );
    }
    assert!(
        !committers(hub.path(), "main")
            .iter()
            .any(|c| c == "runner@stella.invalid")
    );
    admin.stella(&["ledger", "verify"]).ok();
}

#[test]
fn a_runner_file_a_person_commits_on_main_is_never_taken_in_and_verify_reports_it() {
    let r = with_ledger_branch();
    r.request("r1", "hello", "{}\n");
    r.daemon_once().ok();
    let plan = format!("{}/plan.json", r.run_dir("r1"));
    let runner_plan = git(r.path(), &["show", &format!("{LEDGER}:{plan}")]);
    r.write(&plan, "{\"forged\": true}\n");
    r.tamper("a person writes a runner file on main");
    r.request("r2", "hello", "{}\n");
    r.daemon_once().ok();
    assert_eq!(r.state("r2"), "succeeded", "the request after it is still taken in");
    assert_eq!(git(r.path(), &["show", &format!("{LEDGER}:{plan}")]), runner_plan);
    let out = r.stella(&["ledger", "verify", "--json"]);
    assert_ne!(out.code(), Some(0), "{}", out.stdout());
    let report: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems.iter().all(|p| p["path"] == plan.as_str()),
        "only the forged file is a problem: {report}"
    );
    assert!(!problems.is_empty(), "{report}");
}

const GATED: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: gated, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: change-review, grants: [Packs.Approve], requiredCount: 1, expiresAfter: PT1H }\n  steps:\n    - { id: review, gate: { approval: { id: change-review, message: please review } } }\n    - { id: after, run: { uses: builtin:exec, with: { argv: [echo, done] } } }\n";

#[test]
fn approvals_and_cancels_committed_on_main_reach_the_runs_on_the_ledger_branch() {
    let r = with_ledger_branch();
    let keys = tempfile::tempdir().unwrap();
    let public = crate::support::keygen(keys.path(), "alice");
    let mut signers = std::fs::read_to_string(r.path().join(".stella/allowed_signers")).unwrap();
    signers.push_str(&format!("alice namespaces=\"stella-approval\" {public}\n"));
    r.write(".stella/allowed_signers", &signers);
    r.write(".stella/approvers.yaml", "grants:\n  Packs.Approve: [alice]\n");
    r.commit_all("alice approves");
    r.pack("gated", GATED);
    // An approval: the run waits, alice's approval is committed on main, the run goes on.
    r.request("g1", "gated", "{}\n");
    r.daemon_once().ok();
    assert_eq!(r.state("g1"), "waiting");
    let key = keys.path().join("alice");
    r.stella(&[
        "approve",
        "g1",
        "--gate",
        "change-review",
        "--key",
        key.to_str().unwrap(),
    ])
    .ok();
    r.commit_all("alice approves g1");
    let out = r.daemon_once().ok();
    assert_eq!(
        r.state("g1"),
        "succeeded",
        "{:#}\n{}",
        r.show("g1")["gates"],
        out.stderr()
    );
    // A cancel: a running run is cancelled by a cancel committed on main.
    let slow = HELLO.replace("echo said=yes >> $STELLA_OUTPUT", "sleep 60");
    r.pack("slow", &slow.replace("name: hello", "name: slow"));
    r.request("c1", "slow", "{}\n");
    let daemon = r.daemon(&["--repo", ".", "--poll", "30s"]);
    daemon.wait_for("the step to start", Duration::from_secs(30), || {
        std::fs::read_to_string(r.journal("c1"))
            .unwrap_or_default()
            .contains("\"step.started\",\"step\":\"greet\"")
    });
    r.stella(&["runs", "cancel", "c1", "--reason", "wrong target"]).ok();
    r.commit_all("cancel c1");
    daemon.wait_for("the cancel to be committed", Duration::from_secs(30), || {
        ledger_event_types(&r, "c1").iter().any(|t| t == "run.cancelled")
    });
    daemon.kill();
    assert_eq!(r.state("c1"), "cancelled");
    assert_eq!(r.status_porcelain(), "");
    r.stella(&["ledger", "verify"]).ok();
}
