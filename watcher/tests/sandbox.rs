//! The step sandbox from the outside: what a hostile step tries against its runner (the key,
//! `.git`, the working tree, the journal, other runs' workspaces, `/proc`, ptrace, signals,
//! outliving it) and how each attempt ends; strict mode's allowlist; a host that lacks a
//! kernel feature; `sandbox: off`; and `stella doctor --check sandbox`.

use std::path::Path;
use std::time::Duration;

use crate::support::{Daemon, Repo, Scratch, Stella, all_gone, marker, pids_with, run_path, shared_dir, wait_for};

/// A pack `name` with one step `probe` that runs `script` in bash.
fn probe_pack(name: &str, script: &str) -> String {
    let body: String = script.lines().map(|l| format!("            {l}\n")).collect();
    format!(
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: {{ name: {name}, version: 1.0.0 }}\nspec:\n  steps:\n    - id: probe\n      run:\n        uses: builtin:shell\n        with:\n          script: |\n{body}"
    )
}

/// Everything the steps of run `id` printed, one line each.
fn step_output(r: &Repo, id: &str) -> String {
    r.events(id)
        .iter()
        .filter(|e| e["type"] == "step.log")
        .filter_map(|e| e["msg"].as_str().map(str::to_string))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Asserts run `id` ended `want`, showing the run and its events when it did not.
fn assert_state(r: &Repo, id: &str, want: &str) {
    let run = r.show(id);
    assert_eq!(
        run["state"].as_str(),
        Some(want),
        "{run}\n{}",
        r.events(id).iter().map(|e| format!("{e}\n")).collect::<String>()
    );
}

/// A repository whose run `r1` of pack `probe` runs `script`, committed and not yet run.
fn repo_probing(script: &str) -> Repo {
    let r = Repo::outside_tmp();
    r.pack("probe", &probe_pack("probe", script))
        .request("r1", "probe", "{}\n");
    r
}

/// `stella daemon --once` started, not waited for: the runner as a process the test can see.
fn spawn_daemon(r: &Repo) -> Daemon {
    r.daemon(&["--once", "--repo", "."])
}

/// Waits for a spawned daemon to end, asserting it succeeded.
fn finish(daemon: Daemon) -> Stella {
    daemon.wait(Duration::from_secs(120)).ok()
}

/// The lines a step prints that say whether it read `path`: `sealed-<label>` when what it
/// read holds no private key, `LEAK-<label>` when it does.
fn try_read(label: &str, path: &str) -> String {
    format!(
        "if grep -q 'PRIVATE KEY' \"{path}\" 2>/dev/null; then echo LEAK-{label}; else echo sealed-{label}; fi\n{{ cat \"{path}\" 2>&1 || true; }} | head -c 200; echo\n"
    )
}

#[test]
fn a_step_cannot_read_the_runner_key_by_any_path() {
    let r = Repo::outside_tmp();
    let shared = shared_dir();
    let repo_key = r.path().join(".git/stella/runner_ed25519");
    let outside_key = shared.join("keys/runner_ed25519");
    std::fs::create_dir_all(outside_key.parent().unwrap()).unwrap();
    std::fs::copy(&repo_key, &outside_key).unwrap();
    let up = "../".repeat(30);
    let rel = |p: &Path| format!("{up}{}", p.display().to_string().trim_start_matches('/'));
    let script = [
        try_read("abs", &repo_key.display().to_string()),
        try_read("walk", &rel(&repo_key)),
        try_read("short", "../../../runner_ed25519"),
        try_read("short-git", "../../../.git/stella/runner_ed25519"),
        try_read("outside", &outside_key.display().to_string()),
        try_read("outside-walk", &rel(&outside_key)),
    ]
    .concat();
    r.pack("probe", &probe_pack("probe", &script))
        .request("r1", "probe", "{}\n");
    r.stella(&[
        "daemon",
        "--once",
        "--repo",
        ".",
        "--key",
        outside_key.to_str().unwrap(),
    ])
    .ok();
    assert_state(&r, "r1", "succeeded");
    let out = step_output(&r, "r1");
    for label in ["abs", "walk", "short", "short-git", "outside", "outside-walk"] {
        assert!(out.contains(&format!("sealed-{label}\n")), "{label}:\n{out}");
    }
    assert!(!out.contains("LEAK"), "{out}");
    assert!(
        out.contains("No such file"),
        "the repository's key path is empty: {out}"
    );
    // Nothing the run committed holds the key's body.
    let key_text = std::fs::read_to_string(&outside_key).unwrap();
    let body = key_text.lines().nth(1).unwrap();
    let grep = r.git_try(&["grep", "-c", "-F", body, "HEAD", "--", "runs/"]);
    assert!(grep.stdout.is_empty(), "{}", String::from_utf8_lossy(&grep.stdout));
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn a_key_given_as_a_symlink_is_covered_where_it_leads() {
    let r = Repo::outside_tmp();
    let shared = shared_dir();
    let (real, link) = (shared.join("vault/runner_ed25519"), shared.join("keys/runner"));
    for p in [&real, &link] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    }
    std::fs::copy(r.path().join(".git/stella/runner_ed25519"), &real).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let script = [
        try_read("target", &real.display().to_string()),
        try_read("link", &link.display().to_string()),
    ]
    .concat();
    r.pack("probe", &probe_pack("probe", &script))
        .request("r1", "probe", "{}\n");
    r.stella(&["daemon", "--once", "--repo", ".", "--key", link.to_str().unwrap()])
        .ok();
    assert_state(&r, "r1", "succeeded");
    let out = step_output(&r, "r1");
    assert!(
        out.contains("sealed-target\n") && out.contains("sealed-link\n"),
        "{out}"
    );
    assert!(!out.contains("LEAK"), "{out}");
}

#[test]
fn a_step_cannot_see_other_repositories_workspaces_under_the_state_dir() {
    let r = Repo::outside_tmp();
    let state = shared_dir().join("state");
    let other = state.join("stella/work/0123456789abcdef/r9/workspace");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("theirs.txt"), "another-repository\n").unwrap();
    let script = format!(
        "echo \"work=$(ls -A {work} | tr '\\n' ' ')\"\ncat {theirs} 2>&1 || echo no-theirs",
        work = state.join("stella/work").display(),
        theirs = other.join("theirs.txt").display()
    );
    r.pack("probe", &probe_pack("probe", &script))
        .request("r1", "probe", "{}\n");
    let out = Stella(
        crate::support::stella()
            .current_dir(r.path())
            .args(["daemon", "--once", "--repo", "."])
            .env("XDG_STATE_HOME", &state)
            .output()
            .unwrap(),
    );
    out.ok();
    assert_state(&r, "r1", "succeeded");
    let out = step_output(&r, "r1");
    assert!(out.contains("no-theirs"), "{out}");
    assert!(!out.contains("another-repository"), "{out}");
    let listed = out.lines().find(|l| l.starts_with("work=")).unwrap();
    assert!(
        !listed.contains("0123456789abcdef"),
        "only this repository's work root: {out}"
    );
}

#[test]
fn a_step_cannot_see_git_the_working_tree_the_journal_or_another_runs_workspace() {
    let r = Repo::outside_tmp();
    let work = shared_dir().join("work");
    let work_arg = work.to_str().unwrap().to_string();
    let daemon = |r: &Repo| {
        r.stella(&[
            "daemon",
            "--once",
            "--repo",
            ".",
            "--work-dir",
            &work_arg,
            "--keep-work",
        ])
        .ok();
    };
    // r1 fails and leaves its workspace behind (--keep-work) with something of its own in it.
    r.pack("leave", &probe_pack("leave", "echo r1-private > mine.txt\nexit 1"))
        .request("r1", "leave", "{}\n");
    daemon(&r);
    assert_state(&r, "r1", "failed");
    let theirs = work.join("r1/workspace/mine.txt");
    assert!(theirs.exists(), "r1's workspace was kept");
    let repo = r.path().display();
    let script = format!(
        "echo \"git-entries=$(ls -A {repo}/.git 2>/dev/null | wc -l)\"\n\
         cat {repo}/.git/HEAD 2>&1 || echo no-head\n\
         echo \"tree-entries=$(ls -A {repo} 2>/dev/null | wc -l)\"\n\
         cat {repo}/.stella/config.yaml 2>&1 || echo no-config\n\
         echo \"journal=$(ls -A {repo}/.git/stella/journal 2>&1)\"\n\
         cat {theirs} 2>&1 || echo no-r1\n\
         echo \"work-root=$(ls -A {work} | tr '\\n' ' ')\"\n\
         echo \"pwd=$PWD\"",
        theirs = theirs.display(),
        work = work.display()
    );
    r.pack("peek", &probe_pack("peek", &script))
        .request("r2", "peek", "{}\n");
    daemon(&r);
    assert_state(&r, "r2", "succeeded");
    let out = step_output(&r, "r2");
    for seen in [
        "git-entries=0\n",
        "no-head",
        "tree-entries=0\n",
        "no-config",
        "journal=ls: cannot access",
        "no-r1",
        "work-root=r2 \n",
    ] {
        assert!(out.contains(seen), "`{seen}` missing:\n{out}");
    }
    assert!(!out.contains("r1-private"), "{out}");
    assert!(!out.contains("ref: refs/heads"), "{out}");
    // The workspace is where the runner put it, not a path that gives the host layout away.
    assert!(
        out.contains(&format!("pwd={}\n", work.join("r2/workspace").display())),
        "{out}"
    );
}

/// A run `r1` whose step waits for the test to hand it the runner's host pid (written to
/// `<shared>/runner.pid`), then runs `script` with it in `$pid`. Returns the repo and the
/// daemon's output once it ended.
fn against_the_runner(script: &str) -> (Repo, Stella) {
    let shared = shared_dir();
    let pid_file = shared.join("runner.pid");
    let r = repo_probing(&format!(
        "while [ ! -s {f} ]; do sleep 0.05; done\npid=$(cat {f})\n{script}",
        f = pid_file.display()
    ));
    let daemon = spawn_daemon(&r);
    std::fs::write(&pid_file, daemon.pid().to_string()).unwrap();
    let out = finish(daemon);
    (r, out)
}

#[test]
fn a_step_cannot_reach_the_runner_through_proc_or_ptrace() {
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("python3");
    let script = format!(
        "echo \"pids=$(ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' ')\"\n\
         test -e /proc/$pid && echo runner-visible\n\
         cat /proc/$pid/environ >/dev/null 2>&1 && echo LEAK-environ || echo sealed-environ\n\
         cat /proc/$pid/mem >/dev/null 2>&1 && echo LEAK-mem || echo sealed-mem\n\
         # init (pid 1 here) is a copy of the runner that never exec'd: its memory holds the key\n\
         cat /proc/1/environ >/dev/null 2>&1 && echo LEAK-init-environ || echo sealed-init-environ\n\
         dd if=/proc/1/mem bs=1 count=1 skip=4194304 >/dev/null 2>&1 && echo LEAK-init-mem || echo sealed-init-mem\n\
         for target in $pid 1; do\n\
           if {python} -c 'import ctypes' 2>/dev/null; then\n\
             {python} -c 'import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); r = libc.ptrace(16, int(sys.argv[1]), 0, 0); print(\"ptrace-attach\", sys.argv[1], \"LEAK\" if r == 0 else \"refused: \" + os.strerror(ctypes.get_errno()))' $target\n\
           elif command -v strace >/dev/null; then\n\
             timeout 3 strace -p $target -e trace=none 2>&1 | head -1 | grep -q 'attach: ptrace' && echo ptrace-attach $target refused || echo ptrace-attach $target LEAK\n\
           fi\n\
         done"
    );
    let (r, _) = against_the_runner(&script);
    assert_state(&r, "r1", "succeeded");
    let out = step_output(&r, "r1");
    // Only the namespace's own processes: init, the step's bash and its children.
    let pids: Vec<u32> = out
        .lines()
        .find_map(|l| l.strip_prefix("pids="))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(pids.contains(&1) && pids.contains(&2), "{pids:?}");
    assert!(
        pids.iter().all(|p| *p < 50),
        "the runner's namespace shows through: {pids:?}"
    );
    assert!(!out.contains("runner-visible"), "{out}");
    for sealed in ["environ", "mem", "init-environ", "init-mem"] {
        assert!(out.contains(&format!("sealed-{sealed}\n")), "{sealed}:\n{out}");
    }
    let attempts: Vec<&str> = out.lines().filter(|l| l.starts_with("ptrace-attach")).collect();
    assert_eq!(attempts.len(), 2, "one real ptrace attempt per target:\n{out}");
    assert!(attempts.iter().all(|l| l.contains("refused")), "{attempts:?}");
    assert!(!out.contains("LEAK"), "{out}");
}

#[test]
fn a_step_cannot_signal_the_runner_which_lives_on_and_records_the_run() {
    let script = "if kill -TERM $pid 2>&1; then echo kill-term=0; else echo kill-term=1; fi\n\
                  if kill -KILL $pid 2>&1; then echo kill-kill=0; else echo kill-kill=1; fi\n\
                  echo still-here";
    let (r, out) = against_the_runner(script);
    assert!(!out.stdout().contains("stopped on SIGTERM"), "{}", out.stdout());
    assert_state(&r, "r1", "succeeded");
    let logs = step_output(&r, "r1");
    assert!(logs.contains("No such process"), "{logs}");
    assert!(logs.contains("kill-term=1") && logs.contains("kill-kill=1"), "{logs}");
    assert!(logs.contains("still-here"), "{logs}");
    r.stella(&["ledger", "verify"]).ok();
}

/// A step that leaves grandchildren in every way a shell can (a new session, a double fork,
/// a plain background job), each named `marker` in its command line, then sleeps itself.
fn orphan_maker(m: &str, ready: &Path) -> String {
    format!(
        "setsid bash -c 'exec -a {m}-session sleep 300' &\n\
         bash -c '( exec -a {m}-double sleep 300 ) & exit 0'\n\
         setsid -f bash -c 'exec -a {m}-forked sleep 300'\n\
         ( exec -a {m}-job sleep 300 ) &\n\
         touch {ready}\n\
         exec -a {m}-step sleep 300",
        ready = ready.display()
    )
}

/// Waits until the four grandchildren and the step itself are all running.
fn wait_for_orphans(m: &str, ready: &Path) {
    wait_for("the step to start its orphans", Duration::from_secs(20), || {
        ready.exists() && pids_with(m).len() >= 5
    });
}

#[test]
fn a_steps_orphans_die_with_a_killed_daemon() {
    let (m, ready) = (marker(), shared_dir().join("ready"));
    let r = repo_probing(&orphan_maker(&m, &ready));
    let daemon = spawn_daemon(&r);
    wait_for_orphans(&m, &ready);
    daemon.kill();
    assert!(
        all_gone(&m, Duration::from_secs(10)),
        "outlived the runner: {:?}",
        pids_with(&m)
    );
}

#[test]
fn a_steps_orphans_die_with_a_killed_pack_run() {
    let (m, ready) = (marker(), shared_dir().join("ready"));
    let steps: String = probe_pack("t", &orphan_maker(&m, &ready))
        .split_once("  steps:\n")
        .unwrap()
        .1
        .to_string();
    let s = Scratch::new().pack(&steps);
    let mut child = s.spawn_quiet(&[]);
    wait_for_orphans(&m, &ready);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        all_gone(&m, Duration::from_secs(10)),
        "outlived the runner: {:?}",
        pids_with(&m)
    );
}

#[test]
fn strict_mode_refuses_a_write_outside_its_list_and_allows_one_inside() {
    let shared = shared_dir();
    for d in ["allowed", "denied", "readable"] {
        std::fs::create_dir_all(shared.join(d)).unwrap();
    }
    std::fs::write(shared.join("readable/r.txt"), "listed-and-readable\n").unwrap();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let s = shared.display();
    let script = format!(
        "echo yes > {s}/allowed/x && echo wrote-allowed\n\
         echo no > {s}/denied/x 2>&1 || echo refused-denied\n\
         cat {s}/readable/r.txt\n\
         echo no > {s}/readable/w 2>&1 || echo refused-readable\n\
         ls {home} 2>&1 || echo refused-home\n\
         echo private > /tmp/t && cat /tmp/t\n\
         echo mine > here.txt && cat here.txt"
    );
    let r = Repo::outside_tmp();
    r.write(
        ".stella/config.yaml",
        &format!("branch: main\nsandbox: {{ mode: strict, read: [{s}/readable], write: [{s}/allowed] }}\n"),
    );
    r.commit_all("strict sandbox");
    r.pack("probe", &probe_pack("probe", &script))
        .request("r1", "probe", "{}\n");
    r.daemon_once().ok();
    assert_state(&r, "r1", "succeeded");
    let out = step_output(&r, "r1");
    for seen in [
        "wrote-allowed",
        "Permission denied",
        "refused-denied",
        "listed-and-readable",
        "refused-readable",
        "refused-home",
        "private",
        "mine",
    ] {
        assert!(out.contains(seen), "`{seen}` missing:\n{out}");
    }
    assert_eq!(std::fs::read_to_string(shared.join("allowed/x")).unwrap(), "yes\n");
    assert!(!shared.join("denied/x").exists());
    assert!(!shared.join("readable/w").exists());
    let started = r.events("r1").into_iter().find(|e| e["type"] == "run.started").unwrap();
    assert_eq!(started["data"]["sandbox"]["mode"], "strict");
    assert_eq!(started["data"]["sandbox"]["write"][0], format!("{s}/allowed"));
}

#[test]
fn a_missing_kernel_feature_makes_the_step_refuse_to_start() {
    let shared = shared_dir();
    for (missing, name, config) in [
        ("user", "user namespaces", ""),
        ("mount", "mount namespaces", ""),
        ("pid", "PID namespaces", ""),
        ("landlock", "Landlock", "sandbox: { mode: strict }\n"),
    ] {
        let ran = shared.join(format!("ran-{missing}"));
        let r = Repo::outside_tmp();
        r.write(".stella/config.yaml", &format!("branch: main\n{config}"));
        r.commit_all("config");
        r.pack(
            "probe",
            &probe_pack("probe", &format!("touch {}\necho the-step-ran", ran.display())),
        )
        .request("r1", "probe", "{}\n");
        let out = Stella(
            crate::support::stella()
                .current_dir(r.path())
                .args(["daemon", "--once", "--repo", "."])
                .env("STELLA_SANDBOX_SIMULATE_MISSING", missing)
                .output()
                .unwrap(),
        );
        assert!(out.0.status.success(), "{missing}: {}", out.stderr());
        let run = r.show("r1");
        assert_eq!(
            (run["state"].as_str(), run["code"].as_str()),
            (Some("failed"), Some("ERR_SANDBOX_UNAVAILABLE")),
            "{missing}: {run}"
        );
        let events = serde_json::to_string(&r.events("r1")).unwrap();
        assert!(events.contains(name), "{missing}: the message names {name}: {events}");
        assert!(events.contains("stella doctor --check sandbox"), "{missing}: {events}");
        assert!(!ran.exists(), "{missing}: the step ran");
        assert!(!step_output(&r, "r1").contains("the-step-ran"), "{missing}");
    }
}

#[test]
fn sandbox_off_still_runs_and_says_so_in_events_evidence_and_doctor() {
    let r = Repo::outside_tmp();
    r.write(".stella/config.yaml", "branch: main\nsandbox: off\n");
    r.commit_all("sandbox off");
    r.pack("probe", &probe_pack("probe", "echo \"pid=$$\""))
        .request("r1", "probe", "{}\n");
    r.daemon_once().ok();
    assert_state(&r, "r1", "succeeded");
    let started = r.events("r1").into_iter().find(|e| e["type"] == "run.started").unwrap();
    assert_eq!(started["data"]["sandbox"]["mode"], "off");
    assert!(
        !step_output(&r, "r1").contains("pid=2\n"),
        "unisolated steps see the host's pids"
    );
    let att = r
        .at_head(&format!("{}/evidence/attestation.dsse.json", run_path("r1")))
        .unwrap();
    let env: serde_json::Value = serde_json::from_str(&att).unwrap();
    let statement = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        env["payload"].as_str().unwrap(),
    )
    .unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&statement).unwrap();
    assert_eq!(statement["predicate"]["sandbox"]["mode"], "off");
    r.stella(&["evidence", "verify", "r1"]).ok();
    let doctor = r.stella(&["doctor", "--check", "sandbox"]);
    assert_eq!(doctor.code(), Some(0), "{}", doctor.stdout());
    assert!(
        doctor
            .stdout()
            .lines()
            .any(|l| l.starts_with("warn") && l.contains("policy `off`") && l.contains("runner key")),
        "{}",
        doctor.stdout()
    );
}

#[test]
fn doctor_check_sandbox_passes_here_and_fails_naming_a_missing_feature() {
    let r = Repo::outside_tmp();
    let ok = r.stella(&["doctor", "--check", "sandbox"]);
    assert_eq!(ok.code(), Some(0), "{}", ok.stdout());
    for feature in [
        "user namespaces",
        "mount namespaces",
        "PID namespaces",
        "network namespaces",
        "Landlock",
    ] {
        assert!(
            ok.stdout().contains(&format!("ok   sandbox: {feature} work")),
            "{}",
            ok.stdout()
        );
    }
    assert!(ok.stdout().contains("policy `required` in effect"), "{}", ok.stdout());
    // Only the sandbox group ran.
    assert!(!ok.stdout().contains("runner key"), "{}", ok.stdout());

    let missing = Stella(
        crate::support::stella()
            .current_dir(r.path())
            .args(["doctor", "--check", "sandbox"])
            .env("STELLA_SANDBOX_SIMULATE_MISSING", "user")
            .output()
            .unwrap(),
    );
    assert_eq!(missing.code(), Some(1), "{}", missing.stdout());
    assert!(
        missing.stdout().contains("FAIL sandbox: user namespaces missing"),
        "{}",
        missing.stdout()
    );
    assert!(
        missing.stdout().contains("ERR_SANDBOX_UNAVAILABLE"),
        "{}",
        missing.stdout()
    );

    // Plain doctor runs the sandbox check too, and --json says the same as data.
    let all = r.stella(&["doctor", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&all.0.stdout).unwrap();
    let ids: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        [
            "check.git.installed",
            "check.sandbox.user",
            "check.sandbox.policy",
            "check.repository"
        ]
        .iter()
        .all(|id| ids.contains(id)),
        "{report}"
    );

    let unknown = r.stella(&["doctor", "--check", "kernel"]);
    assert_eq!(unknown.code(), Some(2));
    assert!(unknown.stderr().contains("error[ERR_USAGE]"), "{}", unknown.stderr());
}
