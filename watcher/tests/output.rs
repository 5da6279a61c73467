//! Step output out of the steps' reach (issue 11): a step that prints far more than
//! `limits.logBytes` keeps running, its log is cut with one `step.log.truncated`, the runner's
//! memory does not grow with the output, a run's ledger grows with its length (segments, not
//! rewrites), and a run recorded in the old single `events.ndjson` still reads and verifies.

use std::process::Command;

use sha2::Digest;

use crate::support::{HELLO, Repo, run_path, stella};

/// A pack whose one step prints `mb` MiB of 99-byte lines (and says so on stderr).
const LOUD: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: loud, version: 1.0.0 }\nspec:\n  inputs: [{ name: mb, type: string, default: \"1\" }]\n  steps:\n    - id: shout\n      run: { uses: builtin:shell, with: { script: \"head -c $((STELLA_INPUT_MB * 1048576)) /dev/zero | tr '\\\\0' x | fold -w 99; echo done >&2\" } }\n";

/// A pack whose step prints a line every 10 ms for about two seconds.
const SLOW: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: slow, version: 1.0.0 }\nspec:\n  steps:\n    - id: drip\n      run: { uses: builtin:shell, with: { script: \"for i in $(seq 200); do echo line $i; sleep 0.01; done\" } }\n";

fn config(r: &Repo, extra: &str) {
    r.write(".stella/config.yaml", &format!("branch: main\n{extra}"))
        .commit_all("config");
}

fn kinds(events: &[serde_json::Value], kind: &str) -> Vec<serde_json::Value> {
    events.iter().filter(|e| e["type"] == kind).cloned().collect()
}

/// Runs `cmd` to its end and returns (success, peak RSS in KiB of it and what it waited for).
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also reports its usage"
)]
fn peak_rss(mut cmd: Command) -> (bool, i64) {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for the child we spawned.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child by pid; the pointers are to live locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    (
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        usage.ru_maxrss,
    )
}

#[test]
fn a_step_printing_past_log_bytes_keeps_running_and_records_one_truncation() {
    let r = Repo::new();
    config(&r, "limits: { logBytes: 20000 }\n");
    r.pack("loud", LOUD).request("r1", "loud", "mb: \"2\"\n");
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "succeeded");
    let events = r.events("r1");
    let logs = kinds(&events, "step.log");
    let cut = kinds(&events, "step.log.truncated");
    assert_eq!(cut.len(), 1, "exactly one truncation event");
    let cut = &cut[0];
    assert_eq!(cut["step"], "shout");
    assert_eq!(cut["level"], "warn");
    assert_eq!(cut["data"]["limit"], "logBytes");
    // fold ends the output without a newline after its last, shorter, line.
    let stdout = "x"
        .repeat(2 * 1048576)
        .into_bytes()
        .chunks(99)
        .collect::<Vec<_>>()
        .join(&b'\n');
    assert_eq!(cut["data"]["bytesSeen"], stdout.len() + "done\n".len());
    let kept: u64 = logs.iter().map(|l| l["msg"].as_str().unwrap().len() as u64 + 1).sum();
    assert_eq!(cut["data"]["bytesKept"], kept);
    assert!(kept > 0 && kept < 20000, "kept {kept}");
    let stored: usize = r
        .event_files("r1")
        .iter()
        .map(|f| r.at_head(f).unwrap())
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| l.contains("\"type\":\"step.log\""))
        .map(|l| l.len() + 1)
        .sum();
    assert!(stored <= 20000, "the stored log lines take {stored} bytes");
    assert_eq!(
        cut["data"]["sha256"]["stdout"],
        hex::encode(sha2::Sha256::digest(&stdout))
    );
    assert_eq!(
        cut["data"]["sha256"]["stderr"],
        hex::encode(sha2::Sha256::digest(b"done\n"))
    );
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn output_under_log_bytes_is_kept_whole_with_no_truncation() {
    let r = Repo::new();
    r.pack("hello", HELLO).request("r1", "hello", "who: ada\n");
    r.daemon_once().ok();
    assert!(kinds(&r.events("r1"), "step.log.truncated").is_empty());
    assert_eq!(kinds(&r.events("r1"), "step.log").len(), 2);
}

#[test]
fn the_run_log_limit_cuts_the_steps_that_come_after_it_is_spent() {
    let r = Repo::new();
    config(&r, "limits: { logBytes: 0, runLogBytes: 30000 }\n");
    let two = LOUD.replace(
        "    - id: shout\n",
        "    - id: first\n      run: { uses: builtin:shell, with: { script: \"seq 100\" } }\n    - id: shout\n",
    );
    r.pack("loud", &two).request("r1", "loud", "mb: \"1\"\n");
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "succeeded");
    let cut = kinds(&r.events("r1"), "step.log.truncated");
    assert_eq!(cut.len(), 1, "{cut:?}");
    assert_eq!(cut[0]["step"], "shout");
    assert_eq!(cut[0]["data"]["limit"], "runLogBytes");
}

#[test]
fn the_runner_memory_does_not_grow_with_a_steps_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("loud")).unwrap();
    std::fs::write(dir.path().join("loud/pack.yaml"), LOUD).unwrap();
    let run = |mb: u32| {
        let inputs = dir.path().join(format!("in-{mb}.yaml"));
        std::fs::write(&inputs, format!("mb: \"{mb}\"\n")).unwrap();
        let mut cmd = stella();
        cmd.current_dir(dir.path()).args([
            "pack",
            "run",
            "loud",
            "--inputs",
            inputs.to_str().unwrap(),
            "--dir",
            dir.path().join(format!("run-{mb}")).to_str().unwrap(),
        ]);
        let (ok, rss) = peak_rss(cmd);
        assert!(ok, "the run of {mb} MiB succeeds");
        rss
    };
    let small = run(10);
    let large = run(300);
    assert!(
        large < small + 30 * 1024,
        "peak RSS {large} KiB for 300 MiB of output against {small} KiB for 10 MiB"
    );
}

#[test]
fn the_daemon_memory_does_not_grow_with_a_steps_output() {
    let run = |mb: u32| {
        let r = Repo::new();
        config(&r, "limits: { logBytes: 65536 }\n");
        r.pack("loud", LOUD).request("r1", "loud", &format!("mb: \"{mb}\"\n"));
        let mut cmd = stella();
        cmd.current_dir(r.path()).args(["daemon", "--once", "--repo", "."]);
        let (ok, rss) = peak_rss(cmd);
        assert!(ok);
        assert_eq!(r.state("r1"), "succeeded");
        rss
    };
    let small = run(4);
    let large = run(200);
    assert!(
        large < small + 30 * 1024,
        "daemon peak RSS {large} KiB for 200 MiB of output against {small} KiB for 4 MiB"
    );
}

#[test]
fn ledger_storage_grows_linearly_with_a_long_runs_events() {
    let r = Repo::new();
    config(&r, "commit: { batchMs: 50 }\n");
    r.pack("slow", SLOW).request("r1", "slow", "{}\n");
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "succeeded");
    let batches = r.runner_commits().len();
    assert!(batches >= 5, "the run was committed in {batches} batches");
    // Every version of every event file ever committed, each blob counted once.
    let objects = r.git(&["rev-list", "--objects", "--all"]);
    let mut ids = String::new();
    for line in String::from_utf8_lossy(&objects.stdout).lines() {
        if let Some((id, path)) = line.split_once(' ')
            && path.starts_with(&format!("{}/events", run_path("r1")))
            && path.ends_with(".ndjson")
        {
            ids.push_str(id);
            ids.push('\n');
        }
    }
    let mut check = Command::new("git")
        .current_dir(r.path())
        .args(["cat-file", "--batch-check=%(objectsize)"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check.stdin.take().unwrap().write_all(ids.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    let stored: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse::<u64>().unwrap())
        .sum();
    let events: u64 = r
        .event_files("r1")
        .iter()
        .map(|f| r.at_head(f).unwrap().len() as u64)
        .sum();
    assert_eq!(stored, events, "each event is stored once, over {batches} commits");
}

#[test]
fn a_run_recorded_in_one_events_file_by_an_older_runner_still_reads_verifies_and_continues() {
    let r = Repo::new();
    r.pack("hello", HELLO).request("r1", "hello", "who: ada\n");
    let before = String::from_utf8_lossy(&r.git(&["rev-parse", "HEAD"]).stdout)
        .trim()
        .to_string();
    r.daemon_once().ok();
    let events = r.events("r1");
    let plan = r.at_head(&format!("{}/plan.json", run_path("r1"))).unwrap();
    // The older runner stopped after the first step: its ledger is one events.ndjson.
    let upto = events.iter().position(|e| e["type"] == "step.succeeded").unwrap() + 1;
    let legacy: String = events[..upto].iter().map(|e| format!("{e}\n")).collect();
    r.git(&["reset", "-q", "--hard", &before]);
    std::fs::remove_file(r.path().join(".git/stella/last-seen")).ok();
    std::fs::remove_dir_all(r.path().join(".git/stella/journal")).unwrap();
    std::fs::remove_dir_all(r.path().join(".git/stella/work")).ok();
    r.write(&format!("{}/events.ndjson", run_path("r1")), &legacy)
        .write(&format!("{}/plan.json", run_path("r1")), &plan);
    r.git(&["add", "-A"]);
    let out = r.commit_signed(
        std::path::Path::new(".git/stella/runner_ed25519"),
        "stella: run r1 in progress (1 step done)",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    r.stella(&["ledger", "verify"]).ok();
    assert_eq!(r.show("r1")["state"], "running");
    assert!(r.stella(&["runs", "logs", "r1"]).ok().stdout().contains("hello ada"));

    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "succeeded");
    assert_eq!(
        r.at_head(&format!("{}/events.ndjson", run_path("r1"))).unwrap(),
        legacy,
        "the old file is never rewritten"
    );
    let files = r.event_files("r1");
    assert!(
        files.len() >= 2 && files[1].starts_with(&format!("{}/events/", run_path("r1"))),
        "{files:?}"
    );
    let seqs: Vec<u64> = r.events("r1").iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (seqs[0]..seqs[0] + seqs.len() as u64).collect::<Vec<_>>());
    r.stella(&["ledger", "verify"]).ok();
    r.stella(&["evidence", "verify", "r1"]).ok();
}

#[test]
fn ledger_verify_finds_a_segment_that_skips_events() {
    let r = Repo::new();
    r.pack("hello", HELLO).request("r1", "hello", "who: ada\n");
    r.daemon_once().ok();
    let next = r.events("r1").len() as u64 + 5;
    let segment = format!("{}/events/{next:012}.ndjson", run_path("r1"));
    r.write(
        &segment,
        &format!("{{\"seq\":{next},\"ts\":\"2026-01-01T00:00:00.000Z\",\"type\":\"run.note\"}}\n"),
    )
    .commit_all("a gap");
    let out = r.stella(&["ledger", "verify"]);
    assert!(
        out.stderr().contains(&segment) && out.stderr().contains("go on at"),
        "{}",
        out.stderr()
    );
}
