//! The ledger over time: `ledger verify --since-checkpoint` starts from the runner's signed
//! checkpoint and refuses one that is forged or that history no longer contains; the daemon
//! packs loose objects itself and the repository still verifies; journals go once the ledger
//! holds all their events, never before; `stella doctor` says how big the ledger has grown.

use std::time::{Duration, SystemTime};

use crate::support::{HELLO, Repo, run_path};

fn checkpoint(r: &Repo) -> serde_json::Value {
    let text = std::fs::read_to_string(r.path().join(".git/stella/checkpoint")).expect("a checkpoint");
    serde_json::from_str(&text).unwrap()
}

fn head(r: &Repo) -> String {
    String::from_utf8(r.git(&["rev-parse", "HEAD"]).stdout)
        .unwrap()
        .trim()
        .to_string()
}

fn verify_json(r: &Repo, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut all = vec!["ledger", "verify", "--json"];
    all.extend(args);
    let out = r.stella(&all);
    (out.code(), serde_json::from_str(&out.stdout()).unwrap(), out.stderr())
}

#[test]
fn a_full_verify_leaves_a_checkpoint_and_the_next_verify_starts_after_it() {
    let r = Repo::with_finished_run();
    assert_eq!(
        checkpoint(&r)["checkpoint"]["tip"],
        head(&r),
        "the verified tip is checkpointed"
    );
    r.request("r2", "hello", "{}\n");
    r.daemon_once().ok();
    // The daemon verified the request's commit at its start, from that checkpoint, and
    // checkpointed it; its own commits came after.
    let first = checkpoint(&r)["checkpoint"].clone();
    assert_ne!(first["tip"], head(&r));
    let total = first["commits"].as_u64().unwrap();
    let after: u64 = String::from_utf8(
        r.git(&[
            "rev-list",
            "--count",
            &format!("{}..HEAD", first["tip"].as_str().unwrap()),
        ])
        .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let (code, report, _) = verify_json(&r, &["--since-checkpoint"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(
        report["commits"], after,
        "only the commits after the checkpoint: {report}"
    );
    assert_eq!(report["sinceCheckpoint"]["tip"], first["tip"]);
    assert_eq!(
        report["checkpoint"]["tip"],
        head(&r),
        "the checkpoint moves to the new tip"
    );
    assert_eq!(report["checkpoint"]["commits"], total + after);
    let plain = r.stella(&["ledger", "verify", "--since-checkpoint"]).ok().stdout();
    assert!(
        plain.starts_with("ledger ok: 0 commits after checkpoint "),
        "nothing after the tip it just checkpointed: {plain}"
    );
}

#[test]
fn tampering_after_the_checkpoint_is_found_from_it() {
    let r = Repo::with_finished_run();
    let before = checkpoint(&r);
    r.git(&["rm", "-q", &format!("{}/artifacts/greet/greeting", run_path("r1"))]);
    r.tamper("hide the evidence");
    let out = r.stella(&["ledger", "verify", "--since-checkpoint"]);
    assert_eq!(out.code(), Some(1), "{}", out.stderr());
    assert!(
        out.stderr().contains(&format!(
            "{}/artifacts/greet/greeting: runner file deleted in a commit that is not a trusted runner commit",
            run_path("r1")
        )),
        "{}",
        out.stderr()
    );
    assert_eq!(checkpoint(&r), before, "a tip with problems is never checkpointed");
}

#[test]
fn a_forged_or_unsigned_checkpoint_is_an_error_not_a_shortcut() {
    let r = Repo::with_finished_run();
    let path = r.path().join(".git/stella/checkpoint");
    let mut cp = checkpoint(&r);
    cp["checkpoint"]["commits"] = serde_json::json!(1);
    std::fs::write(&path, cp.to_string()).unwrap();
    let out = r.stella(&["ledger", "verify", "--since-checkpoint"]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr().contains("error[ERR_LEDGER_TAMPERED]")
            && out.stderr().contains("its signature does not verify")
            && out.stderr().contains("the checkpoint is forged or damaged"),
        "{}",
        out.stderr()
    );
    let unsigned = serde_json::json!({ "checkpoint": cp["checkpoint"] });
    std::fs::write(&path, unsigned.to_string()).unwrap();
    let out = r.stella(&["ledger", "verify", "--since-checkpoint"]);
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr().contains("not a checkpoint"), "{}", out.stderr());
    // The full verify does not read it, and replaces it with a good one.
    r.stella(&["ledger", "verify"]).ok();
    r.stella(&["ledger", "verify", "--since-checkpoint"]).ok();
}

#[test]
fn a_checkpoint_that_history_no_longer_contains_is_refused() {
    let r = Repo::with_finished_run();
    r.git(&["reset", "-q", "--hard", "HEAD~1"]);
    let out = r.stella(&["ledger", "verify", "--since-checkpoint"]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr()
            .contains("is not in the history of refs/heads/main: history was rewritten"),
        "{}",
        out.stderr()
    );
}

#[test]
fn without_a_checkpoint_the_whole_history_is_verified_with_a_warning() {
    let r = Repo::with_finished_run();
    std::fs::remove_file(r.path().join(".git/stella/checkpoint")).unwrap();
    let (code, report, err) = verify_json(&r, &["--since-checkpoint"]);
    assert_eq!(code, Some(0));
    assert!(err.contains("warning: no checkpoint for refs/heads/main"), "{err}");
    let full = verify_json(&r, &[]).1;
    assert_eq!(report["commits"], full["commits"], "every commit was checked");
    assert!(report.get("sinceCheckpoint").is_none());
    assert_eq!(
        checkpoint(&r)["checkpoint"]["tip"],
        head(&r),
        "and a checkpoint is left"
    );
}

#[test]
fn a_key_the_ledger_does_not_trust_writes_no_checkpoint() {
    let r = Repo::new();
    let stranger = r.outside("stranger");
    r.stella(&["init", "--key", stranger.to_str().unwrap(), "."]).ok();
    r.git(&["checkout", "-q", "--", ".stella/allowed_signers"]);
    let out = crate::support::stella()
        .current_dir(r.path())
        .args(["ledger", "verify"])
        .env("STELLA_RUNNER_KEY", &stranger)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!r.path().join(".git/stella/checkpoint").exists());
}

/// `n` loose objects nobody refers to, written by git itself.
fn loose_objects(r: &Repo, n: usize) {
    let dir = r.outside("blobs");
    std::fs::create_dir_all(&dir).unwrap();
    let paths: Vec<String> = (0..n)
        .map(|i| {
            let p = dir.join(format!("b{i}"));
            std::fs::write(&p, format!("blob {i}\n")).unwrap();
            p.display().to_string()
        })
        .collect();
    let mut git = std::process::Command::new("git")
        .current_dir(r.path())
        .args(["hash-object", "-w", "--stdin-paths"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    git.stdin
        .take()
        .unwrap()
        .write_all(paths.join("\n").as_bytes())
        .unwrap();
    assert!(git.wait().unwrap().success());
}

fn count_objects(r: &Repo, key: &str) -> u64 {
    let text = String::from_utf8(r.git(&["count-objects", "-v"]).stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_daemon_packs_the_loose_objects_itself_and_the_ledger_still_verifies() {
    let r = Repo::new();
    r.pack("hello", HELLO);
    loose_objects(&r, 1500);
    assert!(count_objects(&r, "count") > 1024);
    let daemon = r.daemon(&["--repo", ".", "--poll", "200ms"]);
    r.request("r1", "hello", "{}\n");
    let record = r.path().join(".git/stella/maintenance.json");
    daemon.wait_for("the maintenance record", Duration::from_secs(60), || record.exists());
    daemon.wait_for("run r1 to succeed", Duration::from_secs(60), || {
        daemon.stdout().contains("run r1 succeeded")
    });
    drop(daemon);
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert!(m["before"]["looseObjects"].as_u64().unwrap() > 1024, "{m}");
    assert!(m["after"]["looseObjects"].as_u64().unwrap() < 100, "{m}");
    assert!(m["after"]["packedObjects"].as_u64().unwrap() >= 1500, "{m}");
    assert!(m.get("error").is_none(), "{m}");
    assert!(count_objects(&r, "count") < 1024);
    let fsck = r.git_try(&["fsck", "--no-dangling"]);
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stderr));
    r.stella(&["ledger", "verify"]).ok();
    let doctor = r.stella(&["doctor", "--check", "repository"]).ok().stdout();
    for line in [
        "ok   ledger objects: ",
        "ok   ledger growth since the last maintenance: ",
        "ok   last maintenance ",
        "ok   journals: ",
        "ok   ledger checkpoint at ",
    ] {
        assert!(doctor.contains(line), "`{line}` in\n{doctor}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&r.stella(&["doctor", "--check", "repository", "--json"]).ok().stdout()).unwrap();
    assert_eq!(json["ledger"]["lastMaintenance"], m);
    assert_eq!(json["ledger"]["maintenanceDue"], false);
}

#[test]
fn doctor_says_maintenance_is_due_before_any_ran() {
    let r = Repo::new();
    loose_objects(&r, 1100);
    let doctor = r.stella(&["doctor", "--check", "repository"]).ok().stdout();
    assert!(doctor.contains("ok   no maintenance recorded yet"), "{doctor}");
    assert!(doctor.contains("loose objects: maintenance is due"), "{doctor}");
}

/// Makes a file look last written an hour ago.
fn age(path: &std::path::Path) {
    let f = std::fs::File::options().append(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600)).unwrap();
}

#[test]
fn a_finished_runs_journal_goes_once_the_ledger_holds_every_event_and_not_before() {
    let r = Repo::with_finished_run();
    r.request("r2", "hello", "{}\n");
    r.daemon_once().ok();
    assert!(
        r.journal("r1").exists(),
        "a journal written in the last ten minutes is kept"
    );
    let shown = r.show("r1");
    // r2's journal lost its last newline mid-write (a kill -9): the ledger has a byte it lacks.
    let torn = r.journal("r2");
    let mut text = std::fs::read(&torn).unwrap();
    text.extend_from_slice(b"{\"seq\":");
    std::fs::write(&torn, &text).unwrap();
    age(&r.journal("r1"));
    age(&torn);
    r.daemon_once().ok();
    assert!(!r.journal("r1").exists(), "the ledger holds all of r1's events");
    assert!(torn.exists(), "r2's journal differs from the ledger: kept");
    assert_eq!(r.show("r1"), shown, "r1 reads the same from the ledger alone");
    let again = r.daemon_once().ok().stdout();
    assert!(!again.contains("run r1"), "nothing to do for r1: {again}");
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn a_journal_holding_events_the_ledger_lacks_is_committed_before_it_is_pruned() {
    // A runner killed before the run's final commit: the journal alone holds the end.
    let r = Repo::with_finished_run();
    r.git(&["reset", "-q", "--hard", "HEAD~1"]);
    std::fs::remove_file(r.path().join(".git/stella/last-seen")).unwrap();
    std::fs::remove_file(r.path().join(".git/stella/checkpoint")).unwrap();
    age(&r.journal("r1"));
    let journal = std::fs::read(r.journal("r1")).unwrap();
    let out = r.daemon_once().ok().stdout();
    assert!(out.contains("ready (1 run(s) started)"), "r1 is flushed: {out}");
    let ledger: Vec<u8> = r
        .event_files("r1")
        .iter()
        .flat_map(|f| r.at_head(f).unwrap().into_bytes())
        .collect();
    assert_eq!(ledger, journal, "every event the journal held is in the ledger");
    assert!(!r.journal("r1").exists(), "and only then is the journal gone");
    r.stella(&["ledger", "verify"]).ok();
}
