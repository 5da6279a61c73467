//! The local runs index (`.git/stella/index/runs.json`) is only a cache: deleting or
//! corrupting it changes no answer, a forged entry never makes a run look finished, and a
//! commit costs reads of the runs it touched only. Waiting runs are re-checked when what
//! they wait on changed, not at every commit.

use std::time::Duration;

use sha2::Digest;

use crate::support::{HELLO, Repo, run_path, stella};

const INDEX: &str = ".git/stella/index/runs.json";

const GATED: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: gated, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: change-review, grants: [Packs.Approve], requiredCount: 1, expiresAfter: PT1H }\n  steps:\n    - { id: review, gate: { approval: { id: change-review, message: please review } } }\n";

/// What every reader answers about the repository's runs.
fn answers(r: &Repo) -> Vec<String> {
    let mut out = vec![
        r.stella(&["runs", "list"]).ok().stdout(),
        r.stella(&["runs", "list", "--json"]).ok().stdout(),
        r.stella(&["daemon", "--once", "--repo", "."]).ok().stdout(),
    ];
    for id in ["r1", "r2", "r3"] {
        out.push(r.stella(&["runs", "show", id, "--json"]).ok().stdout());
    }
    out
}

/// The text without terminal colours.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

/// How many runs each scan in `log` read from git (the others came from the index).
fn reads(log: &str) -> Vec<usize> {
    plain(log)
        .lines()
        .filter(|l| l.contains("runs scanned"))
        .filter_map(|l| l.split(" read=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

/// `stella runs list` with the scan's debug log; how many runs it read.
fn list_reads(r: &Repo) -> usize {
    let out = stella()
        .current_dir(r.path())
        .env("STELLA_LOG", "stella_engine::runs=debug")
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let read = reads(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(read.len(), 1, "one scan per list");
    read[0]
}

const FAILS: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: fails, version: 1.0.0 }\nspec:\n  steps:\n    - { id: no, run: { uses: builtin:exec, with: { argv: [\"false\"] } } }\n";

/// Three runs: r1 and r2 succeeded, r3 failed.
fn three_runs() -> Repo {
    let r = Repo::new();
    r.pack("hello", HELLO).pack("fails", FAILS);
    r.request("r1", "hello", "{}\n")
        .request("r2", "hello", "{}\n")
        .request("r3", "fails", "{}\n");
    r.daemon_once();
    r
}

#[test]
fn deleting_or_corrupting_the_index_changes_no_answer() {
    let r = three_runs();
    let truth = answers(&r);
    assert!(
        truth[0].contains("succeeded") && truth[0].contains("failed"),
        "{}",
        truth[0]
    );
    let index = r.path().join(INDEX);
    let good = std::fs::read(&index).expect("the readers wrote the index");
    assert_eq!(list_reads(&r), 0, "a warm index spares every read");
    let header_end = good.iter().position(|&b| b == b'\n').unwrap();
    let wrong_version = [b"stella-runs-index 2".as_slice(), &good[b"stella-runs-index 1".len()..]].concat();
    let corruptions: [(&str, Option<Vec<u8>>); 5] = [
        ("deleted", None),
        ("truncated", Some(good[..good.len() / 2].to_vec())),
        ("garbage", Some(b"\x00\xffnot an index at all\n{}".to_vec())),
        ("of another version", Some(wrong_version)),
        ("without its header", Some(good[header_end + 1..].to_vec())),
    ];
    for (what, bytes) in corruptions {
        match bytes {
            None => std::fs::remove_file(&index).unwrap(),
            Some(b) => std::fs::write(&index, b).unwrap(),
        }
        assert_eq!(
            list_reads(&r),
            3,
            "an index {what} is not used: every run is read from git"
        );
        assert_eq!(answers(&r), truth, "the answers with an index {what}");
        assert_eq!(
            std::fs::read(&index).unwrap(),
            good,
            "an index {what} is rebuilt as it was"
        );
    }
}

#[test]
fn a_forged_index_entry_never_makes_a_run_look_finished() {
    let r = Repo::with_finished_run();
    r.request("r2", "hello", "{}\n");
    r.stella(&["runs", "list"]).ok();
    let index = r.path().join(INDEX);
    let text = std::fs::read_to_string(&index).unwrap();
    let (_, body) = text.split_once('\n').unwrap();
    let mut entries: serde_json::Value = serde_json::from_str(body).unwrap();
    // r2 claims r1's facts (succeeded, with its events), under r2's own tree: a checksum of
    // the new body, but no key to authenticate it.
    entries["r2"]["facts"] = entries["r1"]["facts"].clone();
    let body = serde_json::to_string(&entries).unwrap();
    let checksum = hex::encode(sha2::Sha256::digest(body.as_bytes()));
    std::fs::write(&index, format!("stella-runs-index 1 {checksum}\n{body}")).unwrap();

    let rows: serde_json::Value = serde_json::from_str(&r.stella(&["runs", "list", "--json"]).ok().stdout()).unwrap();
    assert_eq!(rows[1]["id"], "r2");
    assert_eq!(rows[1]["state"], "planned", "no events: {rows}");
    std::fs::write(&index, format!("stella-runs-index 1 {checksum}\n{body}")).unwrap();
    let ran = r.daemon_once().ok();
    assert!(ran.stdout().contains("1 run(s) started"), "{}", ran.stdout());
    assert_eq!(r.state("r2"), "succeeded");
    assert!(!r.events("r2").is_empty(), "r2 really ran");
}

#[test]
fn a_commit_costs_reads_of_the_runs_it_touched_only() {
    let r = three_runs();
    assert_eq!(list_reads(&r), 0, "the daemon's last scan left every run in the index");
    r.write("notes.md", "unrelated\n").commit_all("an unrelated commit");
    assert_eq!(list_reads(&r), 0, "a commit touching no run reads none");
    r.write(&format!("{}/notes.md", run_path("r2")), "a stray file\n")
        .commit_all("touch r2");
    assert_eq!(list_reads(&r), 1, "a commit touching r2 reads r2 only");
    assert_eq!(list_reads(&r), 0);
    let out = stella()
        .current_dir(r.path())
        .env("STELLA_LOG", "stella_engine::runs=debug")
        .args(["daemon", "--once", "--repo", "."])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        reads(&String::from_utf8_lossy(&out.stderr)),
        [0],
        "an idle --once reads no run"
    );
}

#[test]
fn a_run_without_a_runner_key_is_read_from_git() {
    let r = three_runs();
    let truth = answers(&r);
    std::fs::remove_file(r.path().join(INDEX)).unwrap();
    let out = stella()
        .current_dir(r.path())
        .env("STELLA_RUNNER_KEY", r.outside("no-such-key"))
        .args(["runs", "list"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), truth[0]);
    assert!(!r.path().join(INDEX).exists(), "no key, no index");
}

#[test]
fn unrelated_commits_do_not_re_check_a_waiting_run() {
    let r = Repo::new();
    r.pack("gated", GATED).request("w1", "gated", "{}\n");
    let mut cmd = r.daemon_command(&["--repo", ".", "--poll", "1h"]);
    cmd.env("STELLA_LOG", "stella=info,stella_engine::runs=debug");
    let d = crate::support::Daemon::start(cmd);
    let log = || plain(&d.stderr());
    let rechecks = || log().matches("need=Waiting").count();
    d.wait_for("w1 to wait at its gate", Duration::from_secs(30), || {
        r.state("w1") == "waiting"
    });
    for n in 0..3 {
        let scans = reads(&log()).len();
        r.write("notes.md", &format!("unrelated {n}\n"))
            .commit_all("an unrelated commit");
        d.wait_for("the daemon to scan the commit", Duration::from_secs(30), || {
            reads(&log()).len() > scans
        });
    }
    r.write(
        &format!("{}/cancel.yaml", run_path("w1")),
        "reason: \"no longer needed\"\n",
    )
    .commit_all("cancel w1");
    d.wait_for("w1 to be cancelled", Duration::from_secs(30), || {
        r.state("w1") == "cancelled"
    });
    // Once after its own commit at the gate, at most; never per unrelated commit.
    assert!(rechecks() <= 1, "{} re-checks:\n{}", rechecks(), log());
}
