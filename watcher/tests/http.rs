//! The HTTP edge end to end: `stella daemon --http` executing real runs and `stella serve` on
//! the same repository, asked with a plain HTTP client. The API's lists, filters and pages,
//! one run's steps, gates, artifacts and evidence, bytes equal to the CLI's, errors with their
//! codes, the event streams (replay across a daemon restart with no gap and no duplicate),
//! the token and the non-loopback refusal, and no secret in any answer.

use std::time::Duration;

use crate::support::http::{Frame, base_of, get, get_with, stream};
use crate::support::{Daemon, HELLO, Repo, keygen, stella};

const FAILING: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: failing, version: 1.0.0 }\nspec:\n  steps:\n    - { id: boom, run: { uses: builtin:shell, with: { script: \"echo about to fail; exit 3\" } } }\n";

/// Prints `lines` numbered lines, `pause` seconds apart.
fn chatty(lines: u32, pause: &str) -> String {
    format!(
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: {{ name: chatty, version: 1.0.0 }}\nspec:\n  steps:\n    - id: talk\n      run: {{ uses: builtin:shell, with: {{ script: \"for i in $(seq 1 {lines}); do echo line $i; sleep {pause}; done\" }} }}\n    - {{ id: end, run: {{ uses: builtin:exec, with: {{ argv: [echo, over] }} }} }}\n"
    )
}

/// Commits everything as a person would while a daemon may be committing too: git refuses a
/// commit whose HEAD moved meanwhile (or whose index is locked), and the person tries again.
fn commit_beside_daemon(r: &Repo, msg: &str) {
    for _ in 0..50 {
        let added = r.git_try(&["add", "-A"]).status.success();
        if added && r.git_try(&["commit", "-q", "-m", msg]).status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("could not commit {msg} beside the daemon");
}

/// `stella run request` of `pack` with no inputs, committed beside a running daemon.
fn request_beside_daemon(r: &Repo, id: &str, pack: &str) {
    r.request_uncommitted(id, pack, "{}\n").ok();
    commit_beside_daemon(r, &format!("request {id}"));
}

/// `stella serve` on the repository, in the background.
fn serve(r: &Repo, extra: &[&str]) -> Daemon {
    let mut cmd = stella();
    cmd.current_dir(r.path()).args(["serve", "--repo", "."]).args(extra);
    if !extra.contains(&"--http") {
        cmd.args(["--http", "127.0.0.1:0"]);
    }
    Daemon::start(cmd)
}

fn ids(page: &serde_json::Value) -> Vec<String> {
    page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// Three succeeded runs of hello and one failed run, executed by the daemon.
fn four_runs() -> Repo {
    let r = Repo::new();
    r.pack("hello", HELLO).pack("failing", FAILING);
    for id in ["r1", "r2", "r3"] {
        r.request(id, "hello", "{}\n");
    }
    r.request("f1", "failing", "{}\n");
    let _ = r.daemon_once();
    r
}

#[test]
fn the_runs_list_filters_and_pages() {
    let r = four_runs();
    let s = serve(&r, &[]);
    let base = base_of(&s);
    let all = get(&base, "/api/v1/runs").json();
    assert_eq!(ids(&all), ["r3", "r2", "r1", "f1"], "newest id first: {all:#}");
    assert_eq!(all["next"], serde_json::Value::Null);
    let r1 = &all["runs"][2];
    assert_eq!(
        (r1["state"].as_str(), r1["pack"].as_str()),
        (Some("succeeded"), Some("packs/hello"))
    );
    assert_eq!(r1["progress"], serde_json::json!({"done": 2, "total": 2}));
    assert!(r1["planHash"].as_str().unwrap().starts_with("sha256:"));
    assert!(r1["durationMs"].as_u64().is_some() && r1["startedAt"].is_string() && r1["finishedAt"].is_string());
    assert_eq!(r1["error"], serde_json::Value::Null);
    let failed = get(&base, "/api/v1/runs?state=failed").json();
    assert_eq!(ids(&failed), ["f1"]);
    assert_eq!(failed["runs"][0]["error"]["code"], "ERR_STEP_FAILED");
    assert_eq!(ids(&get(&base, "/api/v1/runs?code=ERR_STEP_FAILED").json()), ["f1"]);
    assert_eq!(
        ids(&get(&base, "/api/v1/runs?pack=hello&state=succeeded,failed").json()),
        ["r3", "r2", "r1"]
    );
    assert_eq!(
        ids(&get(&base, "/api/v1/runs?since=2999-01-01T00:00:00Z").json()).len(),
        0
    );
    assert_eq!(
        ids(&get(&base, "/api/v1/runs?until=2999-01-01T00:00:00Z").json()).len(),
        4
    );
    // Pages of two, by the opaque cursor, see every run once.
    let first = get(&base, "/api/v1/runs?limit=2").json();
    assert_eq!(ids(&first), ["r3", "r2"]);
    let cursor = first["next"].as_str().unwrap().to_string();
    let second = get(&base, &format!("/api/v1/runs?limit=2&cursor={cursor}")).json();
    assert_eq!(ids(&second), ["r1", "f1"]);
    assert_eq!(second["next"], serde_json::Value::Null);
    for bad in [
        "/api/v1/runs?limit=0",
        "/api/v1/runs?limit=many",
        "/api/v1/runs?state=sleeping",
        "/api/v1/runs?code=ERR_NOPE",
        "/api/v1/runs?since=yesterday",
        "/api/v1/runs?cursor=r1",
        "/api/v1/runs?colour=red",
    ] {
        let got = get(&base, bad);
        assert_eq!(got.status, 400, "{bad}: {}", got.text());
        assert_eq!(got.json()["code"], "ERR_USAGE", "{bad}");
    }
}

#[test]
fn one_run_with_its_steps_artifacts_and_evidence_and_bytes_equal_to_the_cli() {
    let r = four_runs();
    let s = serve(&r, &[]);
    let base = base_of(&s);
    let run = get(&base, "/api/v1/runs/r1").json();
    let steps: Vec<(&str, &str, &str)> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap(),
                s["kind"].as_str().unwrap(),
                s["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(steps, [("greet", "run", "succeeded"), ("after", "run", "succeeded")]);
    assert_eq!(run["steps"][0]["attempts"], 1);
    assert_eq!(run["steps"][0]["exitCode"], 0);
    assert_eq!(run["evidence"]["present"], true);
    assert_eq!(run["evidence"]["verified"], true);
    let artifact = &run["artifacts"][0];
    assert_eq!(
        (artifact["step"].as_str(), artifact["name"].as_str()),
        (Some("greet"), Some("greeting"))
    );
    let bytes = get(&base, "/api/v1/runs/r1/artifacts/greet/greeting");
    assert_eq!((bytes.status, bytes.text().as_str()), (200, "hello world\n"));
    assert_eq!(
        artifact["sha256"].as_str().unwrap(),
        stella_engine::pack::sha256_hex(&bytes.body)
    );
    assert_eq!(artifact["size"], 12);
    let failed = get(&base, "/api/v1/runs/f1").json();
    assert_eq!(failed["steps"][0]["error"]["code"], "ERR_STEP_FAILED");
    assert_eq!(failed["evidence"]["present"], true);
    // The export is the CLI's, byte for byte.
    let file = r.outside("r1.tar.gz");
    r.stella(&["runs", "export", "r1", "-o", file.to_str().unwrap()]).ok();
    let export = get(&base, "/api/v1/runs/r1/export");
    assert_eq!(export.status, 200);
    assert_eq!(export.content_type, "application/gzip");
    assert!(
        export.body == std::fs::read(&file).unwrap(),
        "the export differs from `stella runs export`"
    );
    // The logs are what `stella runs logs` prints; one step's are its lines as printed.
    let logs = get(&base, "/api/v1/runs/r1/logs");
    assert!(logs.content_type.starts_with("text/plain"), "{}", logs.content_type);
    assert_eq!(logs.text(), r.stella(&["runs", "logs", "r1"]).ok().stdout());
    assert_eq!(get(&base, "/api/v1/runs/r1/logs?step=greet").text(), "hello world\n");
    assert_eq!(get(&base, "/api/v1/runs/r1/logs?step=nope").status, 404);
    // Path parameters are keys among the recorded artifacts, never a path to follow.
    for escape in [
        "/api/v1/runs/r1/artifacts/greet/..%2F..%2Fplan.json",
        "/api/v1/runs/r1/artifacts/..%2F..%2F..%2F.stella/allowed_signers",
        "/api/v1/runs/r1/artifacts/greet/nope",
        "/api/v1/runs/r1/artifacts/%2E%2E/greeting",
    ] {
        let got = get(&base, escape);
        assert_eq!(got.status, 404, "{escape}: {}", got.text());
        assert!(!got.text().contains("apiVersion"), "{escape}");
    }
}

#[test]
fn a_missing_run_is_err_run_not_found_in_the_api_and_the_cli() {
    let r = Repo::with_finished_run();
    // A directory under runs/ holding no run file is listed, but is no run.
    r.write("runs/odd/notes.txt", "not a run\n").tamper("a stray directory");
    let s = serve(&r, &[]);
    let base = base_of(&s);
    let list = get(&base, "/api/v1/runs");
    assert_eq!(
        (list.status, ids(&list.json())),
        (200, vec!["r1".to_string(), "odd".to_string()])
    );
    assert_eq!(get(&base, "/api/v1/runs/odd").status, 404);
    for path in [
        "/api/v1/runs/nope",
        "/api/v1/runs/nope/logs",
        "/api/v1/runs/nope/export",
        "/api/v1/runs/nope/events",
        "/api/v1/runs/nope/artifacts/a/b",
    ] {
        let got = get(&base, path);
        assert_eq!(got.status, 404, "{path}");
        assert_eq!(got.json()["code"], "ERR_RUN_NOT_FOUND", "{path}");
    }
    for path in [
        "/api/v1/runs/Bad_Id",
        "/api/v1/runs/..%2Fr1",
        "/api/v1/runs/-x/logs",
        "/api/v1/runs/r1/events?after=x",
    ] {
        let got = get(&base, path);
        assert_eq!(
            (got.status, got.json()["code"].as_str()),
            (400, Some("ERR_USAGE")),
            "{path}"
        );
    }
    let post = ureq::post(format!("{base}/api/v1/runs/r1/export")).send("x");
    assert!(matches!(post, Err(ureq::Error::StatusCode(405))), "{post:?}");
    let other = get(&base, "/nothing/here");
    assert_eq!((other.status, other.json()["code"].as_str()), (404, Some("ERR_USAGE")));
    let out = r.outside("x.tar.gz");
    for args in [
        vec!["runs", "show", "nope"],
        vec!["runs", "logs", "nope"],
        vec!["runs", "export", "nope", "-o", out.to_str().unwrap()],
    ] {
        let got = r.stella(&args);
        assert_eq!(got.code(), Some(2), "{args:?}");
        assert!(
            got.stderr().contains("error[ERR_RUN_NOT_FOUND]"),
            "{args:?}: {}",
            got.stderr()
        );
    }
}

#[test]
fn a_waiting_gate_shows_who_counted_and_why_others_did_not() {
    const GATED: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: gated, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: change-review, grants: [Packs.Approve], requiredCount: 2, expiresAfter: PT1H }\n  steps:\n    - { id: before, run: { uses: builtin:exec, with: { argv: [\"true\"] } } }\n    - { id: review, gate: { approval: { id: change-review, message: please review } } }\n    - { id: after, run: { uses: builtin:exec, with: { argv: [echo, done] } } }\n";
    let r = Repo::new();
    let keys = tempfile::tempdir().unwrap();
    let mut signers = std::fs::read_to_string(r.path().join(".stella/allowed_signers")).unwrap();
    for name in ["alice", "carol"] {
        signers.push_str(&format!(
            "{name} namespaces=\"stella-approval\" {}\n",
            keygen(keys.path(), name)
        ));
    }
    r.write(".stella/allowed_signers", &signers);
    r.write(
        ".stella/approvers.yaml",
        "grants:\n  Packs.Approve: [alice]\n  Ops.Observe: [carol]\n",
    );
    r.commit_all("approvers");
    r.pack("gated", GATED).request("g1", "gated", "{}\n");
    let d = r.daemon(&["--repo", ".", "--http", "127.0.0.1:0"]);
    let base = base_of(&d);
    d.wait_for("g1 to wait", Duration::from_secs(30), || {
        get(&base, "/api/v1/runs/g1").json()["state"] == "waiting"
    });
    for who in ["alice", "carol"] {
        let key = keys.path().join(who);
        r.stella(&[
            "approve",
            "g1",
            "--gate",
            "change-review",
            "--key",
            key.to_str().unwrap(),
        ])
        .ok();
    }
    commit_beside_daemon(&r, "alice and carol approve");
    let mut run = serde_json::Value::Null;
    d.wait_for("both verdicts", Duration::from_secs(30), || {
        run = get(&base, "/api/v1/runs/g1").json();
        run["gates"][0]["ignored"].as_array().is_some_and(|i| !i.is_empty())
    });
    assert_eq!(run["state"], "waiting");
    assert_eq!(run["gate"], "review");
    let gate = &run["gates"][0];
    assert_eq!(
        (gate["id"].as_str(), gate["state"].as_str()),
        (Some("change-review"), Some("waiting"))
    );
    assert_eq!(gate["requiredCount"], 2);
    assert_eq!(gate["counted"], serde_json::json!(["alice"]));
    let ignored = &gate["ignored"][0];
    assert_eq!(ignored["code"], "ERR_APPROVAL_UNAUTHORIZED", "{gate:#}");
    assert!(
        ignored["file"].as_str().unwrap().ends_with("change-review/carol.yaml"),
        "{gate:#}"
    );
    assert!(ignored["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(gate["deadline"].is_string());
    let waiting = get(&base, "/api/v1/runs?state=waiting").json();
    assert_eq!(ids(&waiting), ["g1"]);
    assert_eq!(
        waiting["runs"][0]["evidence"],
        serde_json::Value::Null,
        "lists carry headlines only"
    );
    assert_eq!(get(&base, "/api/v1/runs/g1").json()["evidence"]["present"], false);
    let export = get(&base, "/api/v1/runs/g1/export");
    assert_eq!(
        (export.status, export.json()["code"].as_str()),
        (409, Some("ERR_USAGE"))
    );
}

#[test]
fn a_cancelled_run_ends_its_stream_with_run_cancelled() {
    let r = Repo::new();
    r.pack("chatty", &chatty(600, "0.05")).request("c1", "chatty", "{}\n");
    let d = r.daemon(&["--repo", ".", "--http", "127.0.0.1:0"]);
    let base = base_of(&d);
    let mut events = stream(&base, "/api/v1/runs/c1/events", &[]);
    assert_eq!(events.status, 200);
    // Live lines arrive before any cancel.
    let mut seen = Vec::new();
    while !seen.iter().any(|f: &Frame| f.event == "step.log") {
        seen.push(events.next(Duration::from_secs(30)).expect("the stream goes on"));
    }
    r.stella(&["runs", "cancel", "c1"]).ok();
    commit_beside_daemon(&r, "cancel c1");
    seen.extend(events.until_end(Duration::from_secs(60)));
    let last = seen.iter().rev().find(|f| !f.event.starts_with(':')).unwrap();
    assert_eq!(last.event, "run.cancelled", "the stream ends after the final event");
    let run = get(&base, "/api/v1/runs/c1").json();
    assert_eq!(run["state"], "cancelled");
    assert_eq!(run["error"]["code"], "ERR_RUN_CANCELLED");
    assert_eq!(ids(&get(&base, "/api/v1/runs?state=cancelled").json()), ["c1"]);
}

/// The seqs of frames that are events (not comments).
fn seqs(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| !f.event.starts_with(':'))
        .map(|f| f.id.as_deref().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn a_stream_resumes_after_last_event_id_across_a_daemon_restart_without_gap_or_duplicate() {
    let r = Repo::new();
    r.pack("chatty", &chatty(60, "0.05")).request("s1", "chatty", "{}\n");
    let d = r.daemon(&["--repo", ".", "--http", "127.0.0.1:0"]);
    let base = base_of(&d);
    let mut first = stream(&base, "/api/v1/runs/s1/events", &[]);
    let mut got = Vec::new();
    while got.iter().filter(|f: &&Frame| f.event == "step.log").count() < 10 {
        got.push(first.next(Duration::from_secs(30)).expect("live lines"));
    }
    // Every frame's data is the event, its seq the id.
    for f in got.iter().filter(|f| !f.event.starts_with(':')) {
        let e: serde_json::Value = serde_json::from_str(&f.data).unwrap();
        assert_eq!(
            (e["seq"].to_string(), e["type"].as_str().unwrap()),
            (f.id.clone().unwrap(), f.event.as_str())
        );
    }
    d.kill();
    drop(first);
    let before = seqs(&got);
    assert_eq!(
        before,
        (0..before.len() as u64).collect::<Vec<_>>(),
        "live, in order, from 0"
    );
    let last = before.last().unwrap().to_string();
    let d = r.daemon(&["--repo", ".", "--http", "127.0.0.1:0"]);
    let base = base_of(&d);
    let mut again = stream(&base, "/api/v1/runs/s1/events", &[("Last-Event-ID", &last)]);
    let after = again.until_end(Duration::from_secs(120));
    let resumed = seqs(&after);
    let all: Vec<u64> = before.iter().chain(&resumed).copied().collect();
    assert_eq!(
        all,
        (0..all.len() as u64).collect::<Vec<_>>(),
        "no gap and no duplicate"
    );
    assert_eq!(
        after.iter().rev().find(|f| !f.event.starts_with(':')).unwrap().event,
        "run.succeeded"
    );
    // The ledger, once it holds the whole run, holds exactly the events streamed.
    d.wait_for("the ledger to hold the whole run", Duration::from_secs(30), || {
        r.events("s1").last().is_some_and(|e| e["type"] == "run.succeeded")
    });
    let ledger: Vec<u64> = r.events("s1").iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(ledger, all, "the stream held every event of the ledger");
    // `?after=` is the same as the header; a finished run's stream ends.
    let tail = stream(&base, &format!("/api/v1/runs/s1/events?after={}", all.len() - 3), &[])
        .until_end(Duration::from_secs(10));
    assert_eq!(seqs(&tail), [all.len() as u64 - 2, all.len() as u64 - 1]);
}

#[test]
fn a_line_reaches_the_stream_from_the_journal_before_the_ledger_commits_it() {
    let r = Repo::new();
    r.write(".stella/config.yaml", "branch: main\ncommit: { batchMs: 600000 }\n");
    r.commit_all("slow commits");
    let pack = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: slow, version: 1.0.0 }\nspec:\n  steps:\n    - { id: talk, run: { uses: builtin:shell, with: { script: \"echo early-line; sleep 4\" } } }\n";
    r.pack("slow", pack);
    // `stella serve --watch` beside the daemon follows the same journal.
    let viewer = serve(&r, &["--watch"]);
    let viewer = base_of(&viewer);
    let mut beside = stream(&viewer, "/api/v1/events", &[]);
    let d = r.daemon(&["--repo", ".", "--http", "127.0.0.1:0"]);
    let base = base_of(&d);
    let mut all = stream(&base, "/api/v1/events", &[]);
    // Requested only once both streams listen: `/api/v1/events` replays nothing, so a line
    // printed before a client connects is not that client's to see.
    r.request("j1", "slow", "{}\n");
    for stream in [&mut all, &mut beside] {
        let mut line = None;
        while line.is_none() {
            let f = stream.next(Duration::from_secs(30)).expect("the stream goes on");
            if f.event == "step.log" {
                line = Some(f);
            }
        }
        let line = line.unwrap();
        let data: serde_json::Value = serde_json::from_str(&line.data).unwrap();
        assert_eq!(
            (data["run"].as_str(), data["msg"].as_str()),
            (Some("j1"), Some("early-line"))
        );
        assert_eq!(line.id.as_deref(), Some(format!("j1:{}", data["seq"]).as_str()));
    }
    assert!(
        !r.events("j1").iter().any(|e| e["type"] == "step.log"),
        "the ledger does not hold the line yet"
    );
    // The run's own stream replays it from the journal too.
    let mut one = stream(&base, "/api/v1/runs/j1/events", &[]);
    let mut replayed = Vec::new();
    while !replayed.iter().any(|f: &Frame| f.event == "step.log") {
        replayed.push(one.next(Duration::from_secs(10)).expect("the replay"));
    }
}

#[test]
fn a_non_loopback_address_needs_a_token_and_the_token_is_checked() {
    let r = Repo::with_finished_run();
    let refused = r.stella(&["serve", "--repo", ".", "--http", "0.0.0.0:0"]);
    assert_eq!(refused.code(), Some(2));
    assert!(
        refused.stderr().contains("error[ERR_USAGE]") && refused.stderr().contains("--http-token-file"),
        "{}",
        refused.stderr()
    );
    let refused = r.stella(&["daemon", "--once", "--repo", ".", "--http", "[::]:0"]);
    assert_eq!(refused.code(), Some(2), "{}", refused.stderr());
    let token = r.outside("token");
    std::fs::write(&token, "s3cret-token-value\n").unwrap();
    let s = serve(
        &r,
        &["--http", "0.0.0.0:0", "--http-token-file", token.to_str().unwrap()],
    );
    let base = base_of(&s).replace("0.0.0.0", "127.0.0.1");
    for path in [
        "/api/v1/runs",
        "/api/v1/runs/r1",
        "/api/v1/runs/r1/events",
        "/api/v1/openapi.json",
        "/nothing",
    ] {
        let none = get(&base, path);
        assert_eq!(
            (none.status, none.json()["code"].as_str()),
            (401, Some("ERR_USAGE")),
            "{path}"
        );
        assert!(!none.text().contains("s3cret"));
        let wrong = get_with(&base, path, &[("Authorization", "Bearer s3cret-token-valuE")]);
        assert_eq!(wrong.status, 401, "{path}");
    }
    let right = get_with(&base, "/api/v1/runs", &[("Authorization", "Bearer s3cret-token-value")]);
    assert_eq!(right.status, 200);
    assert_eq!(ids(&right.json()), ["r1"]);
    // Limits hold before anything is read.
    let big = "x".repeat(20 << 10);
    let got = get_with(
        &base,
        "/api/v1/runs",
        &[("Authorization", "Bearer s3cret-token-value"), ("X-Big", &big)],
    );
    assert_eq!(got.status, 431);
    let got = get_with(
        &base,
        &format!("/api/v1/runs?pack={big}"),
        &[("Authorization", "Bearer s3cret-token-value")],
    );
    assert_eq!(got.status, 414);
    drop(s);
    let open = serve(&r, &["--http", "0.0.0.0:0", "--http-insecure"]);
    let base = base_of(&open).replace("0.0.0.0", "127.0.0.1");
    assert_eq!(get(&base, "/api/v1/runs").status, 200);
}

#[test]
fn no_secret_a_step_prints_appears_in_any_http_answer() {
    let secret = "s3cr3t-T0ken/value";
    let pack = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: s, version: 1.0.0 }\nspec:\n  secrets: [{ name: token, scope: registry }]\n  steps:\n    - id: use\n      outputs: { out: out.txt }\n      run: { uses: builtin:shell, with: { script: \"echo using $STELLA_SECRET_TOKEN; sleep 1; echo t=$STELLA_SECRET_TOKEN >> $STELLA_OUTPUT; echo $STELLA_SECRET_TOKEN > out.txt; echo done >> out.txt; echo again $STELLA_SECRET_TOKEN\" } }\n";
    let r = Repo::new();
    r.pack("s", pack);
    let secrets = r.outside("secrets.yaml");
    std::fs::write(&secrets, format!("token: \"{secret}\"\n")).unwrap();
    let d = r.daemon(&[
        "--repo",
        ".",
        "--http",
        "127.0.0.1:0",
        "--secrets",
        secrets.to_str().unwrap(),
    ]);
    let base = base_of(&d);
    let mut answers = Vec::new();
    // Live, from the journal: both streams while the step prints. Requested once the stream of
    // all runs listens, as it replays nothing.
    let mut live = stream(&base, "/api/v1/events", &[]);
    r.request("x1", "s", "{}\n");
    d.wait_for("the run to be planned", Duration::from_secs(30), || {
        get(&base, "/api/v1/runs/x1").status == 200
    });
    let mut one = stream(&base, "/api/v1/runs/x1/events", &[]);
    let frames = one.until_end(Duration::from_secs(60));
    assert!(
        frames.iter().any(|f| f.data.contains("using ***")),
        "the line is there, redacted"
    );
    answers.extend(frames.iter().map(|f| f.data.clone()));
    while let Some(f) = live.next(Duration::from_secs(30)) {
        answers.push(f.data.clone());
        if f.event == "run.succeeded" || f.event == "run.failed" {
            break;
        }
    }
    d.wait_for("the ledger to hold the run's evidence", Duration::from_secs(30), || {
        get(&base, "/api/v1/runs/x1/export").status == 200
    });
    let run = get(&base, "/api/v1/runs/x1").json();
    for path in [
        "/api/v1/runs".to_string(),
        "/api/v1/runs/x1".to_string(),
        "/api/v1/runs/x1/logs".to_string(),
        "/api/v1/runs/x1/logs?step=use".to_string(),
        "/api/v1/runs/x1/export".to_string(),
        "/api/v1/openapi.json".to_string(),
    ]
    .into_iter()
    .chain(run["artifacts"].as_array().unwrap().iter().map(|a| {
        format!(
            "/api/v1/runs/x1/artifacts/{}/{}",
            a["step"].as_str().unwrap(),
            a["name"].as_str().unwrap()
        )
    })) {
        let got = get(&base, &path);
        answers.push(got.text());
        if path.ends_with("/export") {
            for (_, content) in stella_engine::evidence::read_archive(&got.body, 1 << 30).unwrap() {
                answers.push(String::from_utf8_lossy(&content).into_owned());
            }
        }
    }
    answers.push(
        stream(&base, "/api/v1/runs/x1/events", &[])
            .until_end(Duration::from_secs(10))
            .into_iter()
            .map(|f| f.data)
            .collect(),
    );
    for a in &answers {
        assert!(!a.contains(secret), "a secret in an answer: {a}");
    }
}

#[test]
fn the_openapi_document_names_every_route_and_each_answers() {
    let r = Repo::with_finished_run();
    let s = serve(&r, &[]);
    let base = base_of(&s);
    let doc = get(&base, "/api/v1/openapi.json").json();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/v1/events",
            "/api/v1/notifications",
            "/api/v1/openapi.json",
            "/api/v1/runs",
            "/api/v1/runs/{id}",
            "/api/v1/runs/{id}/artifacts/{step}/{name}",
            "/api/v1/runs/{id}/events",
            "/api/v1/runs/{id}/export",
            "/api/v1/runs/{id}/logs",
            "/api/v1/schedules",
            "/healthz",
            "/metrics",
            "/readyz",
        ]
    );
    for path in paths {
        let concrete = path
            .replace("{id}", "r1")
            .replace("{step}", "greet")
            .replace("{name}", "greeting");
        if concrete == "/api/v1/events" {
            assert_eq!(stream(&base, &concrete, &[]).status, 200);
            continue;
        }
        let got = get(&base, &concrete);
        assert_eq!(got.status, 200, "{concrete}: {}", got.text());
    }
}

/// Whether `promtool check metrics` accepts `text`: `None` when promtool is not installed
/// (then the test fails under CI=true, where .ci/run installs it).
fn promtool_accepts(text: &str) -> Option<String> {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        assert!(std::env::var_os("CI").is_none(), "promtool is missing; CI installs it");
        return None;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused it:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_probes_and_metrics_beside_the_daemon_and_under_serve() {
    let r = Repo::new();
    r.pack("hello", HELLO).pack("failing", FAILING);
    let d = r.daemon(&["--repo", ".", "--http", "127.0.0.1:0", "--poll", "200ms"]);
    let base = base_of(&d);
    assert_eq!(get(&base, "/healthz").json(), serde_json::json!({"status": "ok"}));
    d.wait_for("ready", Duration::from_secs(30), || get(&base, "/readyz").status == 200);
    request_beside_daemon(&r, "m1", "hello");
    request_beside_daemon(&r, "m2", "failing");
    d.wait_for("both runs finished", Duration::from_secs(60), || {
        let m = get(&base, "/metrics").text();
        m.contains("pack_runs_total{pack=\"hello\",outcome=\"succeeded\"} 1")
            && m.contains("pack_runs_total{pack=\"failing\",outcome=\"failed\"} 1")
    });
    let got = get(&base, "/metrics");
    assert_eq!(got.status, 200);
    assert!(
        got.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        got.content_type
    );
    let text = got.text();
    for name in [
        "pack_run_active 0",
        "pack_runs_waiting 0",
        "pack_queue_depth 0",
        "pack_run_success_ratio 0.5",
    ] {
        assert!(text.lines().any(|l| l == name), "{name} missing:\n{text}");
    }
    promtool_accepts(&text);
    let ready = get(&base, "/readyz").json();
    assert_eq!(ready["ready"], true, "{ready:#}");
    assert_eq!(ready["activeRuns"], 0, "{ready:#}");
    d.kill();

    // `stella serve`: no daemon, its probes read the branch; nothing ran here, so no counters.
    let s = serve(&r, &[]);
    let base = base_of(&s);
    assert_eq!(get(&base, "/readyz").status, 200);
    let text = get(&base, "/metrics").text();
    assert!(text.lines().any(|l| l == "pack_run_active 0"), "{text}");
    assert!(!text.contains("outcome=\"succeeded\"} 1"), "{text}");
    promtool_accepts(&text);
}

/// The types of run `id`'s event frames, read until its event `last` came.
fn events_of(s: &mut crate::support::http::Stream, id: &str, last: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let f = s.next(Duration::from_secs(60)).expect("the stream goes on");
        if f.event.starts_with(':') {
            continue;
        }
        let data: serde_json::Value = serde_json::from_str(&f.data).unwrap();
        if data["run"] == id {
            got.push(f.event.clone());
            if f.event == last {
                return got;
            }
        }
    }
}

#[test]
fn serve_on_another_clone_streams_the_runs_each_pull_brings_and_nothing_twice() {
    let a = Repo::new();
    a.pack("hello", HELLO).request("x1", "hello", "{}\n");
    a.daemon_once().ok();
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("b");
    let cloned = std::process::Command::new("git")
        .args(["clone", "-q", a.path().to_str().unwrap(), b.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(cloned.success());
    let mut cmd = stella();
    cmd.current_dir(&b)
        .args(["serve", "--repo", ".", "--http", "127.0.0.1:0"]);
    let d = Daemon::start(cmd);
    let base = base_of(&d);
    let mut all = stream(&base, "/api/v1/events", &[]);
    assert_eq!(all.status, 200);
    // x1 is history to this clone: a pull brings x2, whose events are news, read from the
    // branch (this clone has no journal of it), and x1's are not sent again.
    a.request("x2", "hello", "{}\n");
    a.daemon_once().ok();
    let pull = |b: &std::path::Path| {
        let ok = std::process::Command::new("git")
            .current_dir(b)
            .args(["pull", "-q", "--ff-only"])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    pull(&b);
    let x2 = events_of(&mut all, "x2", "run.succeeded");
    let ledger: Vec<String> = a
        .events("x2")
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(x2, ledger, "every event of x2, once, in order");
    a.request("x3", "hello", "{}\n");
    a.daemon_once().ok();
    pull(&b);
    let mut seen = Vec::new();
    loop {
        let f = all.next(Duration::from_secs(60)).expect("the stream goes on");
        if f.event.starts_with(':') {
            continue;
        }
        let data: serde_json::Value = serde_json::from_str(&f.data).unwrap();
        let run = data["run"].as_str().unwrap().to_string();
        seen.push((run.clone(), f.event.clone()));
        if run == "x3" && f.event == "run.succeeded" {
            break;
        }
    }
    assert!(
        seen.iter().all(|(run, _)| run == "x3"),
        "only the pulled run's events: {seen:?}"
    );
    d.kill();
}
