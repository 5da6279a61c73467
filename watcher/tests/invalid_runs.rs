//! One bad run never stops the others: a run directory that cannot be read as a run (garbage
//! events, a plan.json that is not the run's, a runner file that is no file) is reported by
//! the daemon, `runs list`, `runs show` and `doctor`, and skipped; every other run goes on.

use crate::support::{HELLO, Repo, Stella, run_path};

/// A repository with a good request `b` and a run `a` whose files someone broke.
fn with_a_broken_run(break_it: impl FnOnce(&Repo)) -> Repo {
    let r = Repo::new();
    r.pack("hello", HELLO).request("a", "hello", "{}\n");
    break_it(&r);
    r.request("b", "hello", "{}\n");
    r
}

/// The daemon ran `b` and said, once, that `a` was skipped and why.
fn b_ran_and_a_was_skipped(out: &Stella, file: &str) {
    assert_eq!(out.code(), Some(0), "{}\n{}", out.stdout(), out.stderr());
    assert!(out.stdout().contains("run b succeeded"), "{}", out.stdout());
    let warn = out
        .stderr()
        .lines()
        .find(|l| l.contains("run is invalid and skipped"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no warning about run a:\n{}", out.stderr()));
    assert!(
        warn.contains("runs show a") && warn.contains(file) && warn.contains("ERR_LEDGER_TAMPERED"),
        "{warn}"
    );
}

/// Log text without the terminal colours tracing adds.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

fn listed(r: &Repo, id: &str) -> serde_json::Value {
    let out = r.stella(&["runs", "list", "--json"]).ok();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.0.stdout).unwrap();
    rows.into_iter().find(|row| row["id"] == id).unwrap()
}

#[test]
fn garbage_events_in_one_run_do_not_stop_the_daemon() {
    let r = with_a_broken_run(|r| {
        r.write(
            &format!("{}/events.ndjson", run_path("a")),
            "{\"seq\":0,\"ts\":\"2026-01-01T00:00:00.000Z\",\"type\":\"run.planned\"}\nnot an event at all\n",
        )
        .commit_all("garbage events for a");
    });
    let out = r.daemon_once();
    b_ran_and_a_was_skipped(&out, &format!("{}/events.ndjson", run_path("a")));
    assert!(plain(&out.stderr()).contains("line=2"), "{}", out.stderr());
    assert_eq!(r.state("b"), "succeeded");

    let a = listed(&r, "a");
    assert_eq!(a["state"], "invalid");
    assert_eq!(a["code"], "ERR_LEDGER_TAMPERED");
    assert_eq!(a["invalid"]["file"], format!("{}/events.ndjson", run_path("a")));
    assert_eq!(a["invalid"]["line"], 2);
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/events.ndjson line 2: ", run_path("a"))),
        "{a}"
    );
    assert_eq!(listed(&r, "b")["invalid"], serde_json::Value::Null);
    let table = r.stella(&["runs", "list"]).ok().stdout();
    let row = table.lines().find(|l| l.starts_with("a ")).unwrap();
    assert!(
        row.contains("invalid") && row.contains(&format!("{}/events.ndjson line 2", run_path("a"))),
        "{row}"
    );

    let show = r.show("a");
    assert_eq!(
        (show["state"].as_str(), show["invalid"]["line"].as_u64()),
        (Some("invalid"), Some(2))
    );
    let doctor = r.stella(&["doctor"]).stdout();
    assert!(
        doctor.contains(&format!(
            "warn run a is invalid and the daemon skips it: {}/events.ndjson line 2",
            run_path("a")
        )),
        "{doctor}"
    );
    assert!(
        r.runner_commits().len() == 1,
        "the runner committed b only, nothing over a"
    );
}

#[test]
fn a_plan_json_that_is_not_the_runs_does_not_stop_the_daemon() {
    // Written by hand beside the request, before any runner planned it (a runner's own
    // plan.json, changed later, is damage the daemon heals at start instead).
    let r = with_a_broken_run(|r| {
        r.write(
            &format!("{}/plan.json", run_path("a")),
            "{\"planHash\": \"sha256:00\"}\n",
        )
        .tamper("a plan.json by hand");
    });
    let out = r.daemon_once();
    b_ran_and_a_was_skipped(&out, &format!("{}/plan.json", run_path("a")));
    let a = listed(&r, "a");
    assert_eq!(
        (a["state"].as_str(), a["invalid"]["file"].as_str()),
        (Some("invalid"), Some(format!("{}/plan.json", run_path("a")).as_str()))
    );
    assert!(
        r.stella(&["runs", "logs", "a"])
            .stderr()
            .contains("error[ERR_LEDGER_TAMPERED]: run a is invalid"),
        "logs say why there are none"
    );
}

#[test]
fn a_runner_file_that_is_a_directory_does_not_stop_the_daemon() {
    let r = with_a_broken_run(|r| {
        r.write(
            &format!("{}/events.ndjson/x", run_path("a")),
            "a directory where a file belongs\n",
        )
        .commit_all("a directory for events");
    });
    b_ran_and_a_was_skipped(&r.daemon_once(), &format!("{}/events.ndjson", run_path("a")));
    assert_eq!(listed(&r, "a")["invalid"]["message"], "not a regular file");
    assert!(
        r.at_head(&format!("{}/events.ndjson/x", run_path("a"))).is_some(),
        "the runner never wrote over the directory"
    );
}

#[test]
fn junk_in_a_run_directory_is_reported_and_the_run_goes_on() {
    let r = Repo::new();
    r.pack("hello", HELLO).request("a", "hello", "{}\n");
    r.write(&format!("{}/notes.txt", run_path("a")), "a person's notes\n")
        .commit_all("notes in a run dir");
    let out = r.daemon_once().ok();
    assert!(out.stdout().contains("run a succeeded"), "{}", out.stdout());
    assert!(
        out.stderr().contains("not a run file") && out.stderr().contains(&format!("{}/notes.txt", run_path("a"))),
        "{}",
        out.stderr()
    );
    assert_eq!(
        r.at_head(&format!("{}/notes.txt", run_path("a"))).as_deref(),
        Some("a person's notes\n")
    );
}
