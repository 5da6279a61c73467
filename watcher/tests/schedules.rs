//! Schedules end to end: slots fired by the runner's own signed request commits, once each
//! across two runners on one hub and across restarts; catchUp and concurrency; a malformed
//! schedules file reported everywhere while the good schedules run; `ledger verify` accepting
//! the runner's requests and catching forged ones.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::remote::{hub_states, hub_with_runners};
use crate::support::http::get;
use crate::support::{Daemon, HELLO, Repo, stella};

/// A pack whose one step sleeps `secs` seconds.
fn sleeper(secs: u32) -> String {
    format!(
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: {{ name: nap, version: 1.0.0 }}\nspec:\n  steps:\n    - id: nap\n      run: {{ uses: builtin:exec, with: {{ argv: [sleep, \"{secs}\"] }} }}\n"
    )
}

/// The schedule's runs (`<id>-<stamp>`) among `ids`.
fn of<'a>(schedule: &str, ids: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let prefix = format!("{schedule}-");
    ids.into_iter()
        .filter(|id| {
            id.strip_prefix(&prefix)
                .is_some_and(|s| s.len() == 16 && s.ends_with('z'))
        })
        .cloned()
        .collect()
}

fn list_json(r: &Repo) -> serde_json::Value {
    let out = r.stella(&["runs", "list", "--json"]).ok();
    serde_json::from_str(&out.stdout()).unwrap()
}

/// Run ids on the branch with their state.
fn states(r: &Repo) -> BTreeMap<String, String> {
    list_json(r)
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A commit of everything, dated `when` (author and committer), as if made then.
fn commit_dated(r: &Repo, msg: &str, when: &str) {
    r.git(&["add", "-A"]);
    let out = Command::new("git")
        .current_dir(r.path())
        .env("GIT_AUTHOR_DATE", when)
        .env("GIT_COMMITTER_DATE", when)
        .args([
            "-c",
            "user.name=Alice",
            "-c",
            "user.email=alice@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(["commit", "-q", "-m", msg])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_slot_runs_exactly_once_with_two_runners_on_one_hub() {
    let (_hub, admin, runners) = hub_with_runners(2);
    admin.write(
        ".stella/schedules.yaml",
        "schedules:\n  - id: tick\n    cron: \"*/3 * * * * *\"\n    pack: packs/hello\n    inputs: { who: clock }\n    concurrency: allow\n",
    );
    admin.commit_all("schedule tick every 3 s");
    admin.git(&["push", "-q", "origin", "main"]);
    let daemons: Vec<Daemon> = runners
        .iter()
        .map(|r| {
            let mut cmd = r.daemon_command(&["--repo", ".", "--remote", "origin", "--poll", "1s"]);
            cmd.env("STELLA_LOG", "info");
            Daemon::start(cmd)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = hub_states(&admin);
        let ticks = of("tick", done.keys());
        if ticks.len() >= 5 && ticks.iter().take(4).all(|id| done[id] == "succeeded") {
            break;
        }
        if Instant::now() >= deadline {
            for (i, d) in daemons.iter().enumerate() {
                eprintln!("--- runner {i}\n{}\n{}", d.stdout(), d.stderr());
            }
            panic!("the schedule did not fire five times: {done:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let said: String = daemons.iter().map(|d| d.stderr()).collect();
    drop(daemons);
    // Both runners fire each slot; the push race's loser drops its request, never diverges.
    let lost = said.matches("requested this schedule slot first").count();
    eprintln!("races for a slot lost: {lost}");
    assert!(
        !said.contains("never merged") && !said.contains("ERR_BRANCH_DIVERGED"),
        "{said}"
    );
    let done = hub_states(&admin);
    let ticks = of("tick", done.keys());
    for id in ticks.iter().filter(|id| done[*id] == "succeeded") {
        let events = admin.events(id);
        let starts = events.iter().filter(|e| e["type"] == "run.started").count();
        assert_eq!(starts, 1, "{id} executed more than once");
        let request = admin.at_head(&format!("{}/request.yaml", admin.run_dir(id))).unwrap();
        assert!(request.contains("trigger: { schedule: tick"), "{request}");
    }
    // One request commit per slot on the hub's branch: the race's loser dropped its own.
    let log = admin.git(&["log", "--format=%s"]);
    let fired: Vec<String> = String::from_utf8_lossy(&log.stdout)
        .lines()
        .filter(|l| l.starts_with("stella: schedule tick fires slot"))
        .map(str::to_string)
        .collect();
    let distinct: BTreeSet<&String> = fired.iter().collect();
    assert_eq!(fired.len(), distinct.len(), "a slot was requested twice: {fired:?}");
    assert!(fired.len() >= ticks.len());
    // The slots are three seconds apart, and consecutive slots were not skipped.
    let stamps: Vec<&str> = ticks.iter().map(|id| &id[id.len() - 16..]).collect();
    assert!(
        stamps.iter().all(|s| s[13..15].parse::<u32>().unwrap() % 3 == 0),
        "{stamps:?}"
    );
    admin.stella(&["ledger", "verify"]).ok();
}

#[test]
fn catch_up_last_runs_the_latest_missed_slot_once_and_none_runs_nothing() {
    let r = Repo::new();
    r.write(".stella/config.yaml", "branch: main\nsandbox: off\n");
    r.pack("hello", HELLO);
    // On the branch since 2025: a yearly slot (2026-01-01) was missed while no runner ran.
    r.write(
        ".stella/schedules.yaml",
        "schedules:\n  - id: yearly-last\n    cron: \"@yearly\"\n    pack: packs/hello\n    catchUp: last\n  - id: yearly-none\n    cron: \"@yearly\"\n    pack: packs/hello\n    catchUp: none\n",
    );
    commit_dated(&r, "schedules since 2025", "2025-12-30T12:00:00Z");
    // Added today: the same missed slot is from before it was on the branch.
    r.write(
        ".stella/schedules.yaml",
        "schedules:\n  - id: yearly-last\n    cron: \"@yearly\"\n    pack: packs/hello\n    catchUp: last\n  - id: yearly-none\n    cron: \"@yearly\"\n    pack: packs/hello\n    catchUp: none\n  - id: new-last\n    cron: \"@yearly\"\n    pack: packs/hello\n    catchUp: last\n",
    );
    r.commit_all("a new schedule");
    let mut cmd = r.daemon_command(&["--once", "--repo", "."]);
    cmd.env("STELLA_LOG", "info");
    let first = Daemon::start(cmd).wait(Duration::from_secs(120));
    let year = jiff_year();
    let caught = format!("yearly-last-{year}0101t000000z");
    let runs = states(&r);
    assert_eq!(
        runs.get(&caught).map(String::as_str),
        Some("succeeded"),
        "{runs:?}\n{}",
        first.stderr()
    );
    assert_eq!(of("yearly-none", runs.keys()), Vec::<String>::new());
    assert_eq!(of("new-last", runs.keys()), Vec::<String>::new());
    assert!(first.stderr().contains("catchUp: none"), "{}", first.stderr());
    // A restart finds the slot's run in the ledger: nothing fires again.
    let head = r.git(&["rev-parse", "HEAD"]).stdout;
    r.daemon_once().ok();
    assert_eq!(r.git(&["rev-parse", "HEAD"]).stdout, head);
    assert_eq!(of("yearly-last", states(&r).keys()), [caught]);
    r.stella(&["ledger", "verify"]).ok();
}

/// This year, as the runner's slot stamps spell it (`@yearly`'s latest slot is its 1 January).
fn jiff_year() -> String {
    let out = Command::new("date").args(["-u", "+%Y"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn concurrency_forbid_skips_slots_while_the_last_run_is_unfinished() {
    let r = Repo::new();
    r.write(
        ".stella/config.yaml",
        "branch: main\nsandbox: off\ncommit: { batchMs: 200 }\n",
    );
    r.pack("nap", &sleeper(4));
    r.write(
        ".stella/schedules.yaml",
        "schedules:\n  - id: naps\n    cron: \"*/2 * * * * *\"\n    pack: packs/nap\n    concurrency: forbid\n",
    );
    let mut cmd = r.daemon_command(&["--repo", ".", "--poll", "5s"]);
    cmd.env("STELLA_LOG", "info");
    let d = Daemon::start(cmd);
    // Committed to a branch the daemon has already seen: its runs are judged by the
    // schedules of the commit the runner built on.
    d.wait_for("ready", Duration::from_secs(30), || d.stdout().contains("ready"));
    std::thread::sleep(Duration::from_secs(1));
    r.commit_all("schedule naps");
    d.wait_for("two naps finished", Duration::from_secs(90), || {
        let s = states(&r);
        of("naps", s.keys()).iter().filter(|id| s[*id] == "succeeded").count() >= 2
    });
    d.wait_for("a skipped slot said", Duration::from_secs(10), || {
        d.stderr().contains("concurrency: forbid")
    });
    d.kill();
    // No two runs of the schedule overlapped.
    let rows = list_json(&r);
    let mut spans: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["id"].as_str().unwrap().starts_with("naps-") && v["state"] == "succeeded")
        .map(|v| {
            let show = r.show(v["id"].as_str().unwrap());
            (
                show["started"].as_str().unwrap_or_default().to_string(),
                show["finished"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "runs overlapped: {spans:?}");
    }
}

#[test]
fn a_malformed_schedule_is_reported_everywhere_and_the_others_run() {
    let r = Repo::new();
    r.write(".stella/config.yaml", "branch: main\nsandbox: off\n");
    r.pack("hello", HELLO);
    r.write(
        ".stella/schedules.yaml",
        "schedules:\n  - id: every-second\n    cron: \"* * * * * *\"\n    timezone: Europe/Berlin\n    pack: packs/hello\n  - id: broken\n    cron: \"0 2 * * *\"\n    timezone: Europe/Berlín\n    pack: packs/hello\n",
    );
    r.commit_all("schedules, one broken");
    let listed = r.stella(&["schedules", "list"]);
    assert_eq!(listed.code(), Some(2));
    assert!(listed.stdout().contains("every-second  enabled"), "{}", listed.stdout());
    assert!(
        listed.stderr().contains(
            "error[ERR_SCHEDULE_INVALID]: .stella/schedules.yaml:8:15: schedules[1].timezone: unknown time zone"
        ),
        "{}",
        listed.stderr()
    );
    let doctor = r.stella(&["doctor", "--check", "check.schedules"]);
    assert!(
        doctor
            .stdout()
            .contains("ERR_SCHEDULE_INVALID: .stella/schedules.yaml:8:15: schedules[1].timezone"),
        "{}",
        doctor.stdout()
    );
    let once = r.daemon_once();
    assert!(
        once.stderr().contains("schedules[1].timezone") && once.stderr().contains("the others run"),
        "{}",
        once.stderr()
    );
    let runs = states(&r);
    let fired = of("every-second", runs.keys());
    assert_eq!(fired.len(), 1, "{runs:?}");
    assert_eq!(runs[&fired[0]], "succeeded");
    // The JSON and the workspace tell the same: next slots, the last run, the problem.
    let json = r.stella(&["schedules", "list", "--json"]);
    let table: serde_json::Value = serde_json::from_str(&json.stdout()).unwrap();
    let row = &table["schedules"][0];
    assert_eq!(row["lastRun"]["id"], fired[0].as_str());
    assert_eq!(row["lastRun"]["state"], "succeeded");
    assert_eq!(row["next"].as_array().unwrap().len(), 3);
    assert!(row["next"][0]["local"].as_str().unwrap().ends_with("+01:00"));
    assert_eq!(table["problems"][0]["field"], "schedules[1].timezone");
    assert_eq!(table["problems"][0]["line"], 8);
    let mut cmd = stella();
    cmd.current_dir(r.path())
        .args(["serve", "--repo", ".", "--http", "127.0.0.1:0"]);
    let serve = Daemon::start(cmd);
    let base = crate::support::http::base_of(&serve);
    let api = get(&base, "/api/v1/schedules").json();
    assert_eq!(api["schedules"][0]["id"], "every-second");
    assert_eq!(api["problems"][0]["code"], "ERR_SCHEDULE_INVALID");
    let page = get(&base, "/").text();
    assert!(
        page.contains("id=\"schedules\"") && page.contains("every-second"),
        "{page}"
    );
    // The fired run says which schedule and slot it came from, in the API and on its page.
    let run = get(&base, &format!("/api/v1/runs/{}", fired[0])).json();
    assert_eq!(run["trigger"]["schedule"], "every-second", "{run}");
    assert!(run["trigger"]["slot"].as_str().unwrap().ends_with('Z'), "{run}");
    let page = get(&base, &format!("/runs/{}", fired[0])).text();
    assert!(page.contains("schedule every-second, slot"), "{page}");
    r.stella(&["ledger", "verify"]).ok();
}

/// Commits everything signed with the runner's own key, as a runner commit is.
fn commit_as_runner(r: &Repo, msg: &str) {
    r.git(&["add", "-A"]);
    let out = r.commit_signed(&r.path().join(".git/stella/runner_ed25519"), msg);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn ledger_verify_catches_forged_schedule_requests() {
    let forge = |setup: &dyn Fn(&Repo), says: &str| {
        let r = Repo::new();
        r.write(".stella/config.yaml", "branch: main\nsandbox: off\n");
        r.pack("hello", HELLO);
        r.write(
            ".stella/schedules.yaml",
            "schedules:\n  - id: nightly\n    cron: \"0 2 * * *\"\n    pack: packs/hello\n",
        );
        r.commit_all("schedule nightly");
        setup(&r);
        let v = r.stella(&["ledger", "verify"]);
        assert_eq!(v.code(), Some(1), "{}", v.stdout());
        assert!(
            v.stderr().contains("ERR_LEDGER_TAMPERED") && v.stderr().contains(says),
            "{says}: {}",
            v.stderr()
        );
    };
    let request = |schedule: &str, slot: &str| {
        format!(
            "apiVersion: stella/v1\nkind: RunRequest\npack: \"packs/hello\"\ninputs: {{}}\nrunToken: \"schedule:{schedule}:{slot}\"\ntrigger: {{ schedule: {schedule}, slot: \"{slot}\" }}\n"
        )
    };
    let path = |id: &str| format!("{}/request.yaml", crate::support::run_path(id));
    // A person's commit claiming to be the runner's.
    forge(
        &|r| {
            let id = "nightly-20260101t020000z";
            r.write(&path(id), &request("nightly", "2026-01-01T02:00:00Z"));
            r.commit_all("a request that says it was scheduled");
        },
        "not written by a trusted runner",
    );
    // The same, with the key spelled by a YAML escape.
    forge(
        &|r| {
            let id = "nightly-20260101t020000z";
            let text = request("nightly", "2026-01-01T02:00:00Z").replace("trigger:", "\"\\x74rigger\":");
            assert!(!text.contains("trigger"));
            r.write(&path(id), &text);
            r.commit_all("a request that says it was scheduled, quietly");
        },
        "not written by a trusted runner",
    );
    // Signed with the runner's key, for a slot still to come.
    forge(
        &|r| {
            let id = "nightly-20991231t020000z";
            r.write(&path(id), &request("nightly", "2099-12-31T02:00:00Z"));
            commit_as_runner(r, "a slot in the future");
        },
        "was not due",
    );
    // Signed with the runner's key, for a schedule the branch never had.
    forge(
        &|r| {
            let id = "hourly-20260101t020000z";
            r.write(&path(id), &request("hourly", "2026-01-01T02:00:00Z"));
            commit_as_runner(r, "a schedule that was not there");
        },
        "not in .stella/schedules.yaml",
    );
    // Not one of the schedule's slots.
    forge(
        &|r| {
            let id = "nightly-20260101t030000z";
            r.write(&path(id), &request("nightly", "2026-01-01T03:00:00Z"));
            commit_as_runner(r, "not a slot");
        },
        "is not a slot of",
    );
    // The right slot, but written to another run id.
    forge(
        &|r| {
            let id = "nightly-other";
            r.write(&path(id), &request("nightly", "2026-01-01T02:00:00Z"));
            commit_as_runner(r, "another id");
        },
        "run id or run token",
    );
    // And the real thing verifies: the runner-signed request of a slot that was due.
    let r = Repo::new();
    r.pack("hello", HELLO);
    r.write(
        ".stella/schedules.yaml",
        "schedules:\n  - id: nightly\n    cron: \"0 2 * * *\"\n    pack: packs/hello\n",
    );
    r.commit_all("schedule nightly");
    let id = "nightly-20260101t020000z";
    r.write(&path(id), &request("nightly", "2026-01-01T02:00:00Z"));
    commit_as_runner(&r, "the runner's request");
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn a_kill_between_branch_move_and_index_update_of_a_scheduled_request_loses_nothing() {
    let r = Repo::new();
    r.write(".stella/config.yaml", "branch: main\nsandbox: off\n");
    r.pack("hello", HELLO);
    r.write(
        ".stella/schedules.yaml",
        "schedules:\n  - id: sec\n    cron: \"* * * * * *\"\n    pack: packs/hello\n",
    );
    r.commit_all("schedule sec");
    let chaos = r.outside("chaos.yaml");
    std::fs::write(
        &chaos,
        "rules:\n  - { action: kill-runner, point: between-branch-move-and-index-update, run: \"sec-*\", times: 1 }\n",
    )
    .unwrap();
    let killed = r.stella(&["daemon", "--once", "--repo", ".", "--chaos", chaos.to_str().unwrap()]);
    assert!(!killed.0.status.success(), "{}", killed.stderr());
    let fired = of("sec", states(&r).keys());
    assert_eq!(fired.len(), 1, "the request commit moved the branch before the kill");
    // The restart brings the index and working tree level with the runner's request: a
    // person's next `git commit -a` cannot delete it.
    r.daemon_once().ok();
    assert_eq!(r.status_porcelain(), "", "the scheduled request is as committed");
    let runs = states(&r);
    assert_eq!(runs[&fired[0]], "succeeded", "{runs:?}");
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn the_runner_refuses_a_request_that_claims_a_schedule_it_does_not_match() {
    let r = Repo::new();
    r.write(".stella/config.yaml", "branch: main\nsandbox: off\n");
    r.pack("hello", HELLO);
    r.write(
        ".stella/schedules.yaml",
        "schedules:\n  - id: nightly\n    cron: \"0 2 * * *\"\n    pack: packs/hello\n    inputs: { who: night }\n    enabled: false\n",
    );
    r.commit_all("schedule nightly, disabled");
    let id = "nightly-20260101t020000z";
    r.write(
        &format!("{}/request.yaml", crate::support::run_path(id)),
        "apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\ninputs: { who: \"someone else\" }\nrunToken: \"schedule:nightly:2026-01-01T02:00:00Z\"\ntrigger: { schedule: nightly, slot: \"2026-01-01T02:00:00Z\" }\n",
    );
    r.commit_all("a request dressed as the schedule's");
    r.daemon_once();
    let run = r.show(id);
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["code"], "ERR_REQUEST_INVALID", "{run}");
}
