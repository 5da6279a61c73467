//! The working tree after a crash, people's commits on runner files, and healing: a runner
//! killed between moving the branch and updating the index is repaired at restart, the
//! pre-commit hook keeps people's commits off runner files, and damage done anyway is healed.

use std::collections::BTreeMap;

use crate::support::{HELLO, Repo, approvals_path, run_path};

/// `path -> blob` of every file under the run directory of `id` at HEAD.
fn run_files_at_head(r: &Repo, id: &str) -> BTreeMap<String, String> {
    let out = r.git(&["ls-tree", "-r", "HEAD", &format!("{}/", run_path(id))]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (meta, path) = l.split_once('\t').unwrap();
            (path.to_string(), meta.split_whitespace().nth(2).unwrap().to_string())
        })
        .collect()
}

fn short_head(r: &Repo) -> String {
    String::from_utf8_lossy(&r.git(&["rev-parse", "--short=12", "HEAD"]).stdout)
        .trim()
        .to_string()
}

fn finished_run() -> Repo {
    let r = Repo::new();
    r.pack("hello", HELLO).request("r1", "hello", "{}\n");
    r.daemon_once().ok();
    r.stella(&["ledger", "verify"]).ok();
    r
}

/// A person's ordinary commit of a new request, with the hook in place.
fn request_r2_by_hand(r: &Repo) {
    r.request_uncommitted("r2", "hello", "{}\n").ok();
    r.git(&["add", &format!("{}/request.yaml", run_path("r2"))]);
    r.git(&["commit", "-q", "-m", "request r2"]);
}

#[test]
fn a_stale_index_left_by_a_kill_between_branch_move_and_index_update_is_repaired_at_restart() {
    let r = Repo::new();
    r.pack("hello", HELLO).request("r1", "hello", "{}\n");
    // The index as it was before the runner's commits: what a runner killed right after
    // moving the branch (before updating the index) leaves behind.
    let index = r.path().join(".git/index");
    let before = std::fs::read(&index).unwrap();
    r.daemon_once().ok();
    let committed = run_files_at_head(&r, "r1");
    assert!(
        committed.contains_key(&format!("{}/evidence/manifest.json", run_path("r1"))),
        "{committed:?}"
    );
    std::fs::write(&index, before).unwrap();
    // Killed mid-way through writing the working tree, too.
    std::fs::remove_file(r.path().join(format!("{}/evidence/manifest.json", run_path("r1")))).unwrap();
    assert!(!r.status_porcelain().is_empty(), "the index is stale");

    let restart = r.daemon_once().ok();
    assert!(
        restart
            .stdout()
            .contains(&format!("repaired {}/evidence/manifest.json", run_path("r1"))),
        "{}",
        restart.stdout()
    );
    assert!(r.status_porcelain().is_empty(), "{}", r.status_porcelain());

    request_r2_by_hand(&r);
    assert_eq!(run_files_at_head(&r, "r1"), committed, "every runner file kept");
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn the_pre_commit_hook_refuses_deleting_or_changing_runner_files() {
    let r = finished_run();
    let hook = r.path().join(".git/hooks/pre-commit");
    let script = std::fs::read_to_string(&hook).unwrap();
    assert!(script.starts_with("#!/bin/sh\n"), "{script}");
    assert!(
        r.stella(&["doctor"])
            .ok()
            .stdout()
            .contains("ok   pre-commit hook installed")
    );

    r.git(&["rm", "-q", &format!("{}/evidence/manifest.json", run_path("r1"))]);
    let deleted = r.git_try(&["commit", "-q", "-m", "tidy up"]);
    let err = String::from_utf8_lossy(&deleted.stderr);
    assert!(!deleted.status.success(), "{err}");
    assert!(
        err.contains(&format!("deleted:  {}/evidence/manifest.json", run_path("r1"))),
        "{err}"
    );
    assert!(
        err.contains("git commit --no-verify") && err.contains("stella ledger verify"),
        "{err}"
    );
    r.git(&["reset", "-q", "--hard"]);

    let segment = r.event_file_with("r1", "run.succeeded");
    let events = r.at_head(&segment).unwrap().replace("succeeded", "failed");
    r.write(&segment, &events);
    r.git(&["add", "-A"]);
    let changed = r.git_try(&["commit", "-q", "-m", "fix the events"]);
    let err = String::from_utf8_lossy(&changed.stderr);
    assert!(!changed.status.success(), "{err}");
    assert!(err.contains(&format!("changed:  {segment}")), "{err}");
    r.git(&["reset", "-q", "--hard"]);

    // What people write goes through: requests, cancels, approvals.
    request_r2_by_hand(&r);
    r.write(
        &format!("{}/cancel.yaml", run_path("r1")),
        "apiVersion: stella/v1\nkind: RunCancel\nrun: r1\n",
    )
    .write(
        &format!("{}/review/alice.yaml", approvals_path("r1")),
        "decision: approve\n",
    )
    .commit_all("a cancel and an approval");
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn init_leaves_a_different_pre_commit_hook_alone_and_doctor_warns() {
    let r = Repo::new();
    let hook = r.path().join(".git/hooks/pre-commit");
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    let out = r.stella(&["init", "."]).ok();
    assert!(
        out.stdout().contains("already exists and is not Stella's"),
        "{}",
        out.stdout()
    );
    assert_eq!(std::fs::read_to_string(&hook).unwrap(), "#!/bin/sh\nexit 0\n");
    assert!(r.path().join(".git/hooks/pre-commit.stella").exists());
    let doctor = r.stella(&["doctor"]).ok();
    assert!(
        doctor.stdout().contains("warn") && doctor.stdout().contains("pre-commit"),
        "{}",
        doctor.stdout()
    );
    std::fs::remove_file(&hook).unwrap();
    let missing = r.stella(&["doctor"]).ok();
    assert!(
        missing.stdout().contains("warn no pre-commit hook"),
        "{}",
        missing.stdout()
    );
}

/// A person's `--no-verify` commit that deletes the evidence and truncates the events.
fn damage(r: &Repo) -> String {
    std::fs::remove_file(r.path().join(format!("{}/evidence/manifest.json", run_path("r1")))).unwrap();
    let segment = r.event_file_with("r1", "run.succeeded");
    let events = r.at_head(&segment).unwrap();
    r.write(&segment, &format!("{}\n", events.lines().next().unwrap()));
    r.tamper("tidy up the run");
    short_head(r)
}

#[test]
fn damage_by_a_persons_no_verify_commit_fails_verify_until_healed() {
    let r = finished_run();
    let committed = run_files_at_head(&r, "r1");
    let damaging = damage(&r);

    let out = r.stella(&["ledger", "verify"]);
    assert_eq!(out.code(), Some(1), "{}", out.stdout());
    assert!(
        out.stderr().contains("error[ERR_LEDGER_TAMPERED]: commit ")
            && out.stderr().contains(&format!(
                "{}/evidence/manifest.json: runner file deleted",
                run_path("r1")
            ))
            && out.stderr().contains("run `stella ledger heal`"),
        "{}",
        out.stderr()
    );

    let healed = r.stella(&["ledger", "heal", "--repo", "."]).ok();
    assert!(
        healed.stdout().contains("healed: 2 runner files"),
        "{}",
        healed.stdout()
    );
    let healing = short_head(&r);
    assert_eq!(run_files_at_head(&r, "r1"), committed, "the runner's content is back");
    assert!(r.status_porcelain().is_empty(), "{}", r.status_porcelain());

    let ok = r.stella(&["ledger", "verify"]).ok();
    assert!(
        ok.stdout().contains(&format!(
            "1 damage healed: {damaging} (by a person) restored by {healing}"
        )),
        "{}",
        ok.stdout()
    );
    let again = r.stella(&["ledger", "heal"]).ok();
    assert!(again.stdout().contains("nothing to heal"), "{}", again.stdout());
}

#[test]
fn the_daemon_heals_damage_at_start() {
    let r = finished_run();
    let committed = run_files_at_head(&r, "r1");
    damage(&r);
    let out = r.daemon_once().ok();
    assert!(
        out.stdout().contains("ledger healed: 2 runner files"),
        "{}",
        out.stdout()
    );
    assert_eq!(run_files_at_head(&r, "r1"), committed);
    let ok = r.stella(&["ledger", "verify"]).ok();
    assert!(ok.stdout().contains("1 damage healed: "), "{}", ok.stdout());
}

#[test]
fn a_private_key_block_and_the_runner_key_printed_by_a_step_are_masked() {
    let r = Repo::new();
    let key = stella_engine::keys::SshKey::load(&r.path().join(".git/stella/runner_ed25519")).unwrap();
    let forms = key.secret_forms();
    let body = forms[2].clone();
    let seed = forms
        .iter()
        .find(|f| f.len() == 64 && f.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap()
        .clone();
    // What the step prints comes from outside the repository: a pack holding a key could
    // not even be planned into the ledger.
    // Outside /tmp too: each step's /tmp is its own.
    let outside = crate::support::shared_dir();
    let part = |name: &str, text: &str| {
        let p = outside.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let one = part(
        "one",
        "before-block\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAfakeKeyBodyLineOneMIIEpAIBAAKCAQEA\n",
    );
    let two = part(
        "two",
        "fakeKeyBodyLineTwofakeKeyBodyLineTwofakeKeyBody\n-----END RSA PRIVATE KEY-----\nafter-block\n-----BEGIN OPENSSH PRIV",
    );
    let three = part(
        "three",
        &format!(
            "ATE KEY-----\nsplitBodyLineAcrossChunks0123456789\n-----END OPENSSH PRIVATE KEY-----\nseed {seed}\nline {body}\ndone\n"
        ),
    );
    let pack = format!(
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: {{ name: leak, version: 1.0.0 }}\nspec:\n  steps:\n    - id: leak\n      run: {{ uses: builtin:shell, with: {{ script: \"cat {one}; sleep 0.5; cat {two}; sleep 0.3; cat {three}\" }} }}\n"
    );
    r.pack("leak", &pack).request("r1", "leak", "{}\n");
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "succeeded");
    let logs = r.stella(&["runs", "logs", "r1"]).ok().stdout();
    let events: String = r.event_files("r1").iter().map(|f| r.at_head(f).unwrap()).collect();
    let journal = std::fs::read_to_string(r.journal("r1")).unwrap_or_default();
    for text in [&logs, &events, &journal] {
        for leaked in ["fakeKeyBodyLine", "splitBodyLine", &seed, &body] {
            assert!(!text.contains(leaked), "{leaked} leaked:\n{text}");
        }
    }
    for kept in ["before-block", "after-block", "done", "***"] {
        assert!(logs.contains(kept), "{kept} missing:\n{logs}");
    }
}

#[test]
fn ref_locks_left_by_a_killed_runner_are_removed_at_start() {
    // A runner killed while git renamed a ref into place leaves its lock; every later fetch or
    // ref update would fail on it.
    let r = Repo::new();
    r.pack("hello", HELLO).request("r1", "hello", "{}\n");
    let git = r.path().join(".git");
    std::fs::write(git.join("packed-refs.lock"), "").unwrap();
    std::fs::create_dir_all(git.join("refs/remotes/origin")).unwrap();
    std::fs::write(git.join("refs/remotes/origin/main.lock"), "").unwrap();
    let out = r.daemon_once();
    assert!(
        out.stdout().contains("removed a stale ref lock") && out.stdout().contains("packed-refs.lock"),
        "{}",
        out.stdout()
    );
    assert!(!git.join("packed-refs.lock").exists());
    assert!(!git.join("refs/remotes/origin/main.lock").exists());
    assert_eq!(r.state("r1"), "succeeded");
}

#[test]
fn with_feature_many_files_the_runner_writes_the_index_without_its_checksum_and_git_reads_it() {
    let r = Repo::new();
    r.git(&["config", "feature.manyFiles", "true"]);
    r.pack("hello", HELLO).request("r1", "hello", "{}\n");
    r.daemon_once().ok();
    let index = std::fs::read(r.path().join(".git/index")).unwrap();
    assert_eq!(&index[index.len() - 20..], &[0u8; 20], "index.skipHash: a zero trailer");
    assert!(r.status_porcelain().is_empty(), "{}", r.status_porcelain());
    assert_eq!(
        r.git(&["write-tree"]).stdout,
        r.git(&["rev-parse", "HEAD^{tree}"]).stdout
    );
    r.request("r2", "hello", "{}\n");
    r.daemon_once().ok();
    r.stella(&["ledger", "verify"]).ok();
}

/// Requests `ids` of the hello pack in one person's commit.
fn request_together(r: &Repo, ids: &[String]) {
    for id in ids {
        r.request_uncommitted(id, "hello", "{}\n").ok();
    }
    r.commit_all("a burst of requests");
}

fn index_matches_head(r: &Repo) -> bool {
    r.status_porcelain().is_empty() && r.git(&["write-tree"]).stdout == r.git(&["rev-parse", "HEAD^{tree}"]).stdout
}

#[test]
fn after_a_burst_of_runner_commits_gits_index_catches_up_while_the_daemon_keeps_running() {
    let r = Repo::new();
    r.pack("hello", HELLO);
    let ids: Vec<String> = (0..8).map(|i| format!("b{i}")).collect();
    request_together(&r, &ids);
    let d = r.daemon(&["--repo", ".", "--poll", "30s"]);
    d.wait_for(
        "every run of the burst to finish",
        std::time::Duration::from_secs(120),
        || ids.iter().all(|id| r.state(id) == "succeeded"),
    );
    // A run's state is told from its journal; its commit may still wait for the others of
    // its group: wait for every attestation to be on the branch.
    d.wait_for("every run's commit", std::time::Duration::from_secs(10), || {
        let tree = r.git(&["ls-tree", "-r", "--name-only", "HEAD", "runs"]).stdout;
        let tree = String::from_utf8_lossy(&tree).into_owned();
        tree.matches("evidence/attestation.dsse.json").count() == ids.len()
    });
    // The runner's commits came faster than it rewrites the index; once no run is under way
    // the index holds every file of them, with the daemon still running.
    d.wait_for("git's index to match HEAD", std::time::Duration::from_secs(10), || {
        index_matches_head(&r)
    });
    assert!(d.exited().is_none(), "the daemon is still running");
    d.kill();
    // `--once` leaves it matching too, and the next person's commit keeps every runner file.
    let more: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
    request_together(&r, &more);
    r.daemon_once().ok();
    assert!(index_matches_head(&r), "{}", r.status_porcelain());
    r.write("notes.txt", "a person's file\n")
        .commit_all("a person's commit");
    r.stella(&["ledger", "verify"]).ok();
}
