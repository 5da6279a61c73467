//! The ledger's defences: `stella ledger verify` names every kind of tampering (a deleted,
//! rewritten or appended runner file, a forged run, an edited request, a key trusted in the
//! commit it signs), a merge is not tampering, and the daemon refuses rewritten history and
//! forged events instead of carrying on from them.

use crate::support::{HELLO, Repo, run_path};

fn verify_fails_naming(r: &Repo, path_part: &str, message_part: &str) {
    let out = r.stella(&["ledger", "verify"]);
    assert_eq!(
        out.code(),
        Some(1),
        "verify should fail:\n{}{}",
        out.stdout(),
        out.stderr()
    );
    let err = out.stderr();
    assert!(
        err.lines().any(|l| l.starts_with("error[ERR_LEDGER_TAMPERED]: commit ")
            && l.contains(path_part)
            && l.contains(message_part)),
        "expected a problem at {path_part} ({message_part}):\n{err}"
    );
}

#[test]
fn ledger_verify_finds_a_deleted_runner_file() {
    let r = Repo::with_finished_run();
    r.git(&["rm", "-q", &format!("{}/artifacts/greet/greeting", run_path("r1"))]);
    r.tamper("hide the evidence");
    verify_fails_naming(&r, &format!("{}/artifacts/greet/greeting", run_path("r1")), "deleted");
}

#[test]
fn ledger_verify_finds_rewritten_events() {
    let r = Repo::with_finished_run();
    let segment = r.event_file_with("r1", "run.succeeded");
    let events = r.at_head(&segment).unwrap().replace("succeeded", "failed");
    r.write(&segment, &events).tamper("rewrite history");
    verify_fails_naming(&r, &segment, "rewritten");
}

#[test]
fn ledger_verify_finds_an_append_by_someone_else() {
    let r = Repo::with_finished_run();
    let next = r.events("r1").len();
    let segment = format!("{}/events/{next:012}.ndjson", run_path("r1"));
    let event = format!("{{\"seq\":{next},\"ts\":\"2026-01-01T00:00:00.000Z\",\"type\":\"run.succeeded\"}}\n");
    r.write(&segment, &event).tamper("append, unsigned");
    verify_fails_naming(&r, &segment, "not a trusted runner commit");
}

#[test]
fn ledger_verify_finds_a_forged_run_and_an_edited_plan() {
    let r = Repo::with_finished_run();
    r.write(
        &format!("{}/plan.json", run_path("forged")),
        "{\"planHash\":\"sha256:00\"}",
    )
    .commit_all("forge a run");
    verify_fails_naming(
        &r,
        &format!("{}/plan.json", run_path("forged")),
        "not a trusted runner commit",
    );
    verify_fails_naming(
        &r,
        &format!("{}/plan.json", run_path("forged")),
        "does not match its hash",
    );
}

#[test]
fn ledger_verify_refuses_a_key_added_in_the_same_commit() {
    let r = Repo::with_finished_run();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("mallory");
    assert!(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "mallory", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let signers = std::fs::read_to_string(r.path().join(".stella/allowed_signers")).unwrap();
    r.write(
        ".stella/allowed_signers",
        &format!("{signers}mallory namespaces=\"git\" {public}"),
    );
    r.write(&format!("{}/extra.txt", run_path("r1")), "forged\n");
    r.git(&["add", "-A"]);
    let out = r.commit_signed(&key, "signed by a key added right here");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    verify_fails_naming(&r, &format!("{}/extra.txt", run_path("r1")), "does not trust");
}

#[test]
fn the_daemon_refuses_to_go_on_after_history_was_rewritten() {
    let r = Repo::with_finished_run();
    let first = String::from_utf8_lossy(&r.git(&["rev-list", "--max-parents=0", "HEAD"]).stdout)
        .trim()
        .to_string();
    r.git(&["reset", "-q", "--hard", &first]);
    let out = r.daemon_once();
    assert_eq!(out.code(), Some(1), "{}{}", out.stdout(), out.stderr());
    assert!(
        out.stderr().contains("error[ERR_LEDGER_TAMPERED]") && out.stderr().contains("history was rewritten"),
        "{}",
        out.stderr()
    );
}

#[test]
fn ledger_verify_finds_a_request_edited_after_planning() {
    let r = Repo::with_finished_run();
    r.write(
        &format!("{}/request.yaml", run_path("r1")),
        "apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\ninputs: { who: mallory }\n",
    )
    .commit_all("edit the request afterwards");
    verify_fails_naming(&r, &format!("{}/request.yaml", run_path("r1")), "immutable");
}

#[test]
fn a_merge_of_the_branch_into_a_feature_branch_is_not_tampering() {
    let r = Repo::with_finished_run();
    r.git(&["checkout", "-q", "-b", "feature", "HEAD~1"]);
    r.write("notes.md", "feature work\n").commit_all("feature work");
    r.git(&["merge", "-q", "--no-edit", "main"]);
    r.git(&["checkout", "-q", "main"]);
    r.git(&["merge", "-q", "--ff-only", "feature"]);
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn forged_events_in_a_merged_request_are_never_continued() {
    let r = Repo::new();
    r.pack("hello", HELLO);
    r.write(
        &format!("{}/request.yaml", run_path("f1")),
        "apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\n",
    );
    r.write(
        &format!("{}/events.ndjson", run_path("f1")),
        "{\"seq\":0,\"ts\":\"2026-01-01T00:00:00.000Z\",\"type\":\"run.planned\",\"data\":{\"planHash\":\"sha256:00\",\"requestCommit\":\"0000000000000000000000000000000000000000\"}}\n{\"seq\":1,\"ts\":\"2026-01-01T00:00:00.000Z\",\"type\":\"step.succeeded\",\"step\":\"greet\"}\n",
    );
    r.commit_all("a request with a head start");
    let out = r.daemon_once();
    assert!(
        out.stderr().contains("refusing to continue run f1") && out.stderr().contains("ERR_LEDGER_TAMPERED"),
        "{}",
        out.stderr()
    );
    assert!(
        r.runner_commits().is_empty(),
        "the runner signed nothing of the forged run"
    );
}
