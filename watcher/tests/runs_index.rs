//! The local runs index (`.git/stella/index/`: a head and a log of settled runs) is only a
//! cache: deleting, corrupting or truncating either part changes no answer, a forged entry
//! never makes a run look finished, a commit costs reads of the runs it touched only, and an
//! idle daemon reads nothing of the settled runs. Waiting runs are re-checked when what they
//! wait on changed, not at every commit. Sharded and flat run directories are both found.

use std::path::PathBuf;
use std::time::Duration;

use sha2::Digest;

use crate::support::{HELLO, Repo, run_path, stella};

const INDEX: &str = ".git/stella/index";
const HEAD: &str = ".git/stella/index/head";

const GATED: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: gated, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: change-review, grants: [Packs.Approve], requiredCount: 1, expiresAfter: PT1H }\n  steps:\n    - { id: review, gate: { approval: { id: change-review, message: please review } } }\n";

/// Every reader's question about the repository's runs.
const READERS: [&[&str]; 8] = [
    &["runs", "list"],
    &["runs", "list", "--json"],
    &["runs", "list", "--limit", "1"],
    &["runs", "list", "--limit", "2", "--json"],
    &["daemon", "--once", "--repo", "."],
    &["runs", "show", "r1", "--json"],
    &["runs", "show", "r2", "--json"],
    &["runs", "show", "r3", "--json"],
];

/// What every reader answers about the repository's runs.
fn answers(r: &Repo) -> Vec<String> {
    READERS.iter().map(|args| r.stella(args).ok().stdout()).collect()
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

/// `stella ARGS` with the scan's debug log: its stdout and how many runs its one scan read.
fn with_reads(r: &Repo, args: &[&str]) -> (String, usize) {
    let out = stella()
        .current_dir(r.path())
        .env("STELLA_LOG", "stella_engine::runs=debug")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = reads(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(read.len(), 1, "one scan per command");
    (String::from_utf8_lossy(&out.stdout).into_owned(), read[0])
}

/// `stella runs list` with the scan's debug log; how many runs it read.
fn list_reads(r: &Repo) -> usize {
    with_reads(r, &["runs", "list"]).1
}

/// The log of settled runs (one generation at a time).
fn log_file(r: &Repo) -> PathBuf {
    let logs: Vec<PathBuf> = std::fs::read_dir(r.path().join(INDEX))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    logs[0].clone()
}

/// The index's files, to put back between corruptions.
fn snapshot(r: &Repo) -> Files {
    std::fs::read_dir(r.path().join(INDEX))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect()
}

fn restore(r: &Repo, files: &Files) {
    std::fs::remove_dir_all(r.path().join(INDEX)).unwrap();
    std::fs::create_dir_all(r.path().join(INDEX)).unwrap();
    for (p, bytes) in files {
        std::fs::write(p, bytes).unwrap();
    }
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

/// The shard directory of a run id: `_` and the first two hex digits of its SHA-256.
fn shard(id: &str) -> String {
    format!("_{}", &hex::encode(sha2::Sha256::digest(id.as_bytes()))[..2])
}

/// A request for `id` committed at `dir` (`runs/<id>` or `runs/_<xx>/<id>`), by hand.
fn request_at(r: &Repo, id: &str, dir: &str) {
    let staging = r.outside(&format!("staging-{id}"));
    r.request_uncommitted(id, "hello", "{}\n").ok();
    // Wherever `run request` put it, it goes where the test says.
    let written = [format!("runs/{id}"), format!("runs/{}/{id}", shard(id))]
        .into_iter()
        .find(|d| r.path().join(d).join("request.yaml").exists())
        .expect("run request wrote a request");
    std::fs::rename(r.path().join(&written), &staging).unwrap();
    std::fs::create_dir_all(r.path().join(dir).parent().unwrap()).unwrap();
    std::fs::rename(&staging, r.path().join(dir)).unwrap();
    r.commit_all(&format!("request {id} at {dir}"));
}

#[test]
fn deleting_or_corrupting_the_head_changes_no_answer() {
    let r = three_runs();
    let truth = answers(&r);
    assert!(
        truth[0].contains("succeeded") && truth[0].contains("failed"),
        "{}",
        truth[0]
    );
    let head = r.path().join(HEAD);
    let good = std::fs::read(&head).expect("the readers wrote the index");
    assert_eq!(list_reads(&r), 0, "a warm index spares every read");
    let header_end = good.iter().position(|&b| b == b'\n').unwrap();
    let wrong_version = [b"stella-runs-index 3".as_slice(), &good[b"stella-runs-index 2".len()..]].concat();
    let corruptions: [(&str, Option<Vec<u8>>); 5] = [
        ("deleted", None),
        ("truncated", Some(good[..good.len() / 2].to_vec())),
        ("garbage", Some(b"\x00\xffnot an index at all\n{}".to_vec())),
        ("of another version", Some(wrong_version)),
        ("without its header", Some(good[header_end + 1..].to_vec())),
    ];
    for (what, bytes) in corruptions {
        match bytes {
            None => std::fs::remove_file(&head).unwrap(),
            Some(b) => std::fs::write(&head, b).unwrap(),
        }
        assert_eq!(
            list_reads(&r),
            3,
            "a head {what} is not used: every run is read from git"
        );
        assert_eq!(list_reads(&r), 0, "a head {what} is rebuilt");
        assert_eq!(answers(&r), truth, "the answers with a head {what}");
    }
}

#[test]
fn deleting_corrupting_or_truncating_the_log_changes_no_answer() {
    let r = three_runs();
    let truth = answers(&r);
    let files = snapshot(&r);
    let log = log_file(&r);
    let good = std::fs::read(&log).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&good).lines().count(),
        3,
        "the three finished runs are settled in the log"
    );
    let text = String::from_utf8(good.clone()).unwrap();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let corruptions: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("deleted", None),
        ("emptied", Some(Vec::new())),
        ("cut short by a byte", Some(good[..good.len() - 1].to_vec())),
        ("cut to its first line", Some(lines[0].as_bytes().to_vec())),
        ("cut in half", Some(good[..good.len() / 2].to_vec())),
        (
            "with a record edited",
            Some(text.replace("\"failed\"", "\"succeeded\"").into_bytes()),
        ),
        (
            "with its lines reordered",
            Some([lines[1], lines[0], lines[2]].concat().into_bytes()),
        ),
        (
            "with its last line repeated",
            Some([text.as_str(), lines[2]].concat().into_bytes()),
        ),
    ];
    for (what, bytes) in corruptions {
        for (args, truth) in READERS.iter().zip(&truth) {
            restore(&r, &files);
            match &bytes {
                None => std::fs::remove_file(&log).unwrap(),
                Some(b) => std::fs::write(&log, b).unwrap(),
            }
            assert_eq!(
                &r.stella(args).ok().stdout(),
                truth,
                "`stella {}` with a log {what}",
                args.join(" ")
            );
        }
        // Whoever meets it rebuilds it; then nothing is read again.
        r.stella(&["runs", "list"]).ok();
        assert_eq!(list_reads(&r), 0, "a log {what} is rebuilt");
        assert_eq!(answers(&r), truth, "after a log {what} was rebuilt");
    }
}

/// r1 finished (settled in the log), r2 requested (in the head), the index written; and the
/// index forged: r2 given r1's facts in the head, and in the log.
/// The index's files, as `snapshot` takes them.
type Files = Vec<(PathBuf, Vec<u8>)>;

/// A forgery: what it is, the file, its bytes.
type Forgery = (&'static str, PathBuf, String);

fn forged() -> (Repo, Files, [Forgery; 3]) {
    let r = Repo::with_finished_run();
    r.request("r2", "hello", "{}\n");
    r.stella(&["runs", "list"]).ok();
    let files = snapshot(&r);
    let head = r.path().join(HEAD);
    let text = std::fs::read_to_string(&head).unwrap();
    let (_, body) = text.split_once('\n').unwrap();
    let mut parsed: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(parsed["live"]["r2"].is_object(), "r2 waits to start: {parsed}");
    let log = log_file(&r);
    let log_text = std::fs::read_to_string(&log).unwrap();
    let (mac, rest) = log_text.trim_end().split_once(' ').unwrap();
    let (_, r1) = rest.split_once(' ').unwrap();
    let mut record: serde_json::Value = serde_json::from_str(r1).unwrap();
    assert_eq!(record["id"], "r1", "r1 finished: settled in the log");

    // In the head: r2 claims r1's facts (succeeded, with its events), under r2's own tree,
    // with a checksum of the new body but no key to authenticate it.
    parsed["live"]["r2"]["facts"] = record["run"]["facts"].clone();
    let body = serde_json::to_string(&parsed).unwrap();
    let checksum = hex::encode(sha2::Sha256::digest(body.as_bytes()));
    // In the log: a record for r2, settled with r1's facts, after r1's or in its place.
    record["id"] = "r2".into();
    record["upto"] = u64::MAX.into();
    let line = format!("{} {mac} {record}\n", "0".repeat(64));
    let forgeries = [
        ("a head entry", head, format!("stella-runs-index 2 {checksum}\n{body}")),
        ("a log record appended", log.clone(), format!("{log_text}{line}")),
        ("a log record in place of r1's", log, line),
    ];
    (r, files, forgeries)
}

#[test]
fn a_forged_index_entry_never_makes_a_run_look_finished() {
    let (r, files, forgeries) = forged();
    for (what, file, bytes) in &forgeries {
        for args in [
            &["runs", "list", "--json"][..],
            &["runs", "list", "--limit", "1", "--json"],
            &["runs", "list", "--limit", "5", "--json"],
        ] {
            restore(&r, &files);
            std::fs::write(file, bytes).unwrap();
            let rows: serde_json::Value = serde_json::from_str(&r.stella(args).ok().stdout()).unwrap();
            let r2 = rows
                .as_array()
                .unwrap()
                .iter()
                .find(|row| row["id"] == "r2")
                .unwrap_or_else(|| panic!("r2 listed by {args:?} with {what}: {rows}"));
            assert_eq!(r2["state"], "planned", "{what}, {args:?}: no events: {rows}");
        }
    }
    for forgery in [0, 2] {
        let (r, _, forgeries) = forged();
        let (what, file, bytes) = &forgeries[forgery];
        std::fs::write(file, bytes).unwrap();
        let ran = r.daemon_once().ok();
        assert!(ran.stdout().contains("1 run(s) started"), "{what}: {}", ran.stdout());
        assert_eq!(r.state("r2"), "succeeded");
        assert!(!r.events("r2").is_empty(), "r2 really ran");
    }
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
    assert_eq!(with_reads(&r, &["runs", "list", "--limit", "1"]).1, 0);
    assert_eq!(
        with_reads(&r, &["daemon", "--once", "--repo", "."]).1,
        0,
        "an idle --once reads no run"
    );
}

#[test]
fn an_idle_daemon_reads_nothing_of_the_settled_runs() {
    let r = three_runs();
    r.write("notes.md", "unrelated\n").commit_all("an unrelated commit");
    // The log of settled runs gone: a daemon that read it would rebuild (and read every run).
    std::fs::remove_file(log_file(&r)).unwrap();
    let (out, read) = with_reads(&r, &["daemon", "--once", "--repo", "."]);
    assert!(out.contains("0 run(s) started"), "{out}");
    assert_eq!(
        read, 0,
        "an idle --once and an unrelated commit read no run, and not the log"
    );
    // The next reader that needs the settled runs finds the log missing and rebuilds it.
    let (_, read) = with_reads(&r, &["runs", "list", "--limit", "3"]);
    assert_eq!(read, 3);
    assert_eq!(list_reads(&r), 0);
}

#[test]
fn runs_list_limit_shows_the_newest_runs_first() {
    let r = three_runs();
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&r.stella(&["runs", "list", "--json"]).ok().stdout()).unwrap();
    let ids = |rows: &[serde_json::Value]| -> Vec<String> {
        rows.iter().map(|row| row["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ids(&all), ["r1", "r2", "r3"], "without --limit: every run, by id");
    let mut newest = all.clone();
    let started = |row: &serde_json::Value| humantime::parse_rfc3339(row["started"].as_str().unwrap()).unwrap();
    newest.sort_by(|a, b| (started(b), b["id"].as_str()).cmp(&(started(a), a["id"].as_str())));
    let limited: Vec<serde_json::Value> =
        serde_json::from_str(&r.stella(&["runs", "list", "--limit", "2", "--json"]).ok().stdout()).unwrap();
    assert_eq!(limited, newest[..2], "the two newest, newest first, with every field");
    // A request not started yet is the newest of all.
    r.request("r0", "hello", "{}\n");
    let text = r.stella(&["runs", "list", "--limit", "2"]).ok().stdout();
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("RUN "), "{text}");
    assert!(rows[1].starts_with("r0 ") && rows[1].contains("requested"), "{text}");
    assert!(rows[2].starts_with(&format!("{} ", ids(&newest)[0])), "{text}");
    assert_eq!(rows.len(), 3, "{text}");
    let refused = r.stella(&["runs", "list", "--limit", "0"]);
    assert_eq!(refused.code(), Some(2), "{}", refused.stderr());
}

#[test]
fn sharded_and_flat_runs_are_found_and_a_flat_duplicate_wins() {
    let r = Repo::new();
    r.pack("hello", HELLO);
    let sharded = format!("runs/{}/s1", shard("s1"));
    request_at(&r, "s1", &sharded);
    request_at(&r, "f1", "runs/f1");
    let listed = |args: &[&str]| -> Vec<String> {
        let rows: serde_json::Value = serde_json::from_str(&r.stella(args).ok().stdout()).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|row| format!("{} {}", row["id"].as_str().unwrap(), row["state"].as_str().unwrap()))
            .collect()
    };
    assert_eq!(listed(&["runs", "list", "--json"]), ["f1 planned", "s1 planned"]);
    assert_eq!(list_reads(&r), 0);
    assert!(r.stella(&["runs", "show", "s1"]).ok().stdout().contains("requested"));
    // A second sharded run: the commit costs that run's read only.
    request_at(&r, "s2", &format!("runs/{}/s2", shard("s2")));
    assert_eq!(list_reads(&r), 1);
    assert_eq!(
        listed(&["runs", "list", "--limit", "5", "--json"]),
        ["f1 planned", "s1 planned", "s2 planned"]
            .map(str::to_string)
            .into_iter()
            .rev()
            .collect::<Vec<_>>(),
        "not started: newest of all, by id descending"
    );
    // A flat run of the same id as a sharded one: the flat one is the run, the sharded one is
    // reported and ignored.
    r.write(
        "runs/s1/request.yaml",
        &std::fs::read_to_string(r.path().join(&sharded).join("request.yaml")).unwrap(),
    );
    r.write("runs/s1/notes.md", "the flat one\n").commit_all("a flat s1");
    let out = stella().current_dir(r.path()).args(["runs", "list"]).output().unwrap();
    let warned = plain(&String::from_utf8_lossy(&out.stderr));
    assert!(warned.contains(&sharded), "{warned}");
    assert_eq!(
        listed(&["runs", "list", "--json"]),
        ["f1 planned", "s1 planned", "s2 planned"]
    );
    let ignored = |args: &[&str]| {
        let out = stella()
            .current_dir(r.path())
            .env("STELLA_LOG", "stella=info,stella_engine=info")
            .args(args)
            .output()
            .unwrap();
        plain(&String::from_utf8_lossy(&out.stderr))
    };
    let said = ignored(&["runs", "list", "--limit", "1"]);
    assert!(said.contains(&sharded) && said.contains("runs/s1/notes.md"), "{said}");
    // Without the flat one, the sharded one is the run again.
    r.git(&["rm", "-rq", "runs/s1"]);
    r.tamper("no flat s1");
    assert_eq!(list_reads(&r), 1, "s1 read again, from its shard");
    let said = ignored(&["runs", "list"]);
    assert!(!said.contains(&sharded), "{said}");
    // From scratch, the same.
    std::fs::remove_dir_all(r.path().join(INDEX)).unwrap();
    assert_eq!(
        listed(&["runs", "list", "--json"]),
        ["f1 planned", "s1 planned", "s2 planned"]
    );
}

#[test]
fn a_run_without_a_runner_key_is_read_from_git() {
    let r = three_runs();
    let truth = answers(&r);
    std::fs::remove_dir_all(r.path().join(INDEX)).unwrap();
    for (args, truth) in READERS[..4].iter().zip(&truth) {
        let out = stella()
            .current_dir(r.path())
            .env("STELLA_RUNNER_KEY", r.outside("no-such-key"))
            .args(*args)
            .output()
            .unwrap();
        assert_eq!(&String::from_utf8_lossy(&out.stdout), truth, "{args:?}");
    }
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
    // Said once its work on the run ended: its commit is made, and the next is the test's.
    d.wait_for("w1 to wait at its gate", Duration::from_secs(30), || {
        d.stdout().contains("run w1 waiting at gate review")
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
