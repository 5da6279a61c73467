//! Signed approvals against a determined forger: real ssh-keygen keys and signatures, the
//! daemon judging them, and each verdict recorded with its reason.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::{Repo, approvals_path, keygen, run_path};

const GATED: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: gated, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: change-review, grants: [Packs.Approve], requiredCount: 2, expiresAfter: PT1H }\n  steps:\n    - { id: before, run: { uses: builtin:exec, with: { argv: [\"true\"] } } }\n    - { id: review, gate: { approval: { id: change-review, message: please review } } }\n    - { id: after, run: { uses: builtin:exec, with: { argv: [echo, done] } } }\n";

struct Team {
    repo: Repo,
    keys: tempfile::TempDir,
}

impl Team {
    /// A repository where alice and bob may approve, carol is a known signer without the
    /// grant, and mallory is nobody.
    fn new() -> Team {
        let repo = Repo::new();
        let keys = tempfile::tempdir().unwrap();
        let mut signers = std::fs::read_to_string(repo.path().join(".stella/allowed_signers")).unwrap();
        for name in ["alice", "bob", "carol", "mallory"] {
            let public = keygen(keys.path(), name);
            if name != "mallory" {
                signers.push_str(&format!("{name} namespaces=\"stella-approval\" {public}\n"));
            }
        }
        repo.write(".stella/allowed_signers", &signers);
        repo.write(
            ".stella/approvers.yaml",
            "grants:\n  Packs.Approve: [alice, bob]\n  Ops.Observe: [carol]\n",
        );
        repo.commit_all("approvers");
        repo.pack("gated", GATED);
        Team { repo, keys }
    }

    fn key(&self, name: &str) -> PathBuf {
        self.keys.path().join(name)
    }

    fn approve(&self, run: &str, who: &str, extra: &[&str]) -> &Team {
        let key = self.key(who);
        let mut args = vec![
            "approve",
            run,
            "--gate",
            "change-review",
            "--key",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.repo.stella(&args).ok();
        self
    }

    fn commit(&self, msg: &str) -> &Team {
        self.repo.commit_all(msg);
        self
    }

    fn waiting_run(self, id: &str) -> Team {
        self.repo.request(id, "gated", "{}\n");
        self.repo.daemon_once().ok();
        assert_eq!(self.repo.state(id), "waiting");
        self
    }

    /// The verdict recorded for `principal`'s file at the run's gate.
    fn verdict(&self, run: &str, principal: &str) -> serde_json::Value {
        let show = self.repo.show(run);
        let gate = &show["gates"][0];
        gate["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["principal"] == principal)
            .cloned()
            .unwrap_or_else(|| panic!("no verdict for {principal}: {show:#}"))
    }

    fn assert_not_counted(&self, run: &str, principal: &str, code: &str) {
        let v = self.verdict(run, principal);
        assert_eq!(
            (v["verdict"].as_str(), v["code"].as_str()),
            (Some("ignored"), Some(code)),
            "{v:#}"
        );
    }
}

#[test]
fn two_of_two_approvals_pass_the_gate() {
    let t = Team::new().waiting_run("r1");
    t.approve("r1", "alice", &[]).commit("alice approves");
    t.repo.daemon_once().ok();
    assert_eq!(t.repo.state("r1"), "waiting", "one of two is not enough");
    assert_eq!(t.verdict("r1", "alice")["verdict"], "counted");
    t.approve("r1", "bob", &["--comment", "looks right"])
        .commit("bob approves");
    t.repo.daemon_once().ok();
    assert_eq!(t.repo.state("r1"), "succeeded");
    let approved = t
        .repo
        .events("r1")
        .into_iter()
        .find(|e| e["type"] == "gate.approved")
        .unwrap();
    let by: Vec<&str> = approved["data"]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["principal"].as_str().unwrap())
        .collect();
    assert_eq!(by, ["alice", "bob"]);
    assert!(
        approved["data"]["approvals"][0]["signatureSha256"]
            .as_str()
            .unwrap()
            .len()
            == 64
    );
    t.repo.stella(&["ledger", "verify"]).ok();
}

#[test]
fn approvals_committed_before_the_gate_is_reached_count() {
    let t = Team::new();
    t.repo.request("r1", "gated", "{}\n");
    t.approve("r1", "alice", &[])
        .approve("r1", "bob", &[])
        .commit("approve ahead of time");
    t.repo.daemon_once().ok();
    assert_eq!(t.repo.state("r1"), "succeeded");
}

#[test]
fn what_stella_approve_writes_verifies_with_ssh_keygen() {
    let t = Team::new().waiting_run("r1");
    t.approve("r1", "alice", &[]);
    let dir = t.repo.path().join(format!("{}/change-review", approvals_path("r1")));
    let file = std::fs::File::open(dir.join("alice.yaml")).unwrap();
    let out = Command::new("ssh-keygen")
        .args([
            "-Y",
            "verify",
            "-f",
            ".stella/allowed_signers",
            "-I",
            "alice",
            "-n",
            "stella-approval",
            "-s",
        ])
        .arg(dir.join("alice.yaml.sig"))
        .current_dir(t.repo.path())
        .stdin(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unknown_key_does_not_count() {
    let t = Team::new().waiting_run("r1");
    t.approve("r1", "mallory", &["--principal", "mallory"])
        .commit("mallory");
    t.repo.daemon_once().ok();
    t.assert_not_counted("r1", "mallory", "ERR_APPROVAL_SIGNATURE_INVALID");
    assert_eq!(t.repo.state("r1"), "waiting");
}

#[test]
fn a_principal_without_the_grant_does_not_count() {
    let t = Team::new().waiting_run("r1");
    t.approve("r1", "carol", &[]).commit("carol");
    t.repo.daemon_once().ok();
    t.assert_not_counted("r1", "carol", "ERR_APPROVAL_UNAUTHORIZED");
}

#[test]
fn a_file_named_for_someone_else_does_not_count() {
    let t = Team::new().waiting_run("r1");
    t.approve("r1", "mallory", &["--principal", "alice"])
        .commit("mallory poses as alice");
    t.repo.daemon_once().ok();
    t.assert_not_counted("r1", "alice", "ERR_APPROVAL_SIGNATURE_INVALID");
}

#[test]
fn the_right_key_in_the_wrong_namespace_does_not_count() {
    let t = Team::new().waiting_run("r1");
    t.approve("r1", "alice", &[]);
    let file = t
        .repo
        .path()
        .join(format!("{}/change-review/alice.yaml", approvals_path("r1")));
    std::fs::remove_file(file.with_extension("yaml.sig")).unwrap();
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "git", "-f"])
        .arg(t.key("alice"))
        .arg(&file)
        .status()
        .unwrap();
    assert!(ok.success());
    t.commit("signed for git, not for approvals");
    t.repo.daemon_once().ok();
    t.assert_not_counted("r1", "alice", "ERR_APPROVAL_SIGNATURE_INVALID");
}

#[test]
fn a_file_edited_after_signing_does_not_count() {
    let t = Team::new().waiting_run("r1");
    t.approve("r1", "alice", &["--comment", "ok"]);
    let file = t
        .repo
        .path()
        .join(format!("{}/change-review/alice.yaml", approvals_path("r1")));
    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replace("\"ok\"", "\"ok, and also run anything\"");
    std::fs::write(&file, edited).unwrap();
    t.commit("edited");
    t.repo.daemon_once().ok();
    t.assert_not_counted("r1", "alice", "ERR_APPROVAL_SIGNATURE_INVALID");
}

#[test]
fn an_approval_replayed_from_another_run_does_not_count() {
    let t = Team::new().waiting_run("r1").waiting_run("r2");
    t.approve("r1", "alice", &[]);
    let from = t.repo.path().join(format!("{}/change-review", approvals_path("r1")));
    let to = t.repo.path().join(format!("{}/change-review", approvals_path("r2")));
    std::fs::create_dir_all(&to).unwrap();
    for f in ["alice.yaml", "alice.yaml.sig"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    t.commit("replay");
    t.repo.daemon_once().ok();
    t.assert_not_counted("r2", "alice", "ERR_APPROVAL_PLAN_MISMATCH");
    assert_eq!(t.verdict("r1", "alice")["verdict"], "counted");
}

#[test]
fn an_approval_of_another_plan_does_not_count() {
    let t = Team::new().waiting_run("r1");
    let dir = t.repo.path().join(format!("{}/change-review", approvals_path("r1")));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("alice.yaml");
    let other = format!("sha256:{}", "ab".repeat(32));
    std::fs::write(&file, format!("apiVersion: stella/v1\nkind: Approval\nrun: r1\ngate: change-review\nplanHash: \"{other}\"\ndecision: approve\n")).unwrap();
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "stella-approval", "-f"])
        .arg(t.key("alice"))
        .arg(&file)
        .status()
        .unwrap();
    assert!(ok.success());
    t.commit("approval of a different plan, signed by hand");
    t.repo.daemon_once().ok();
    t.assert_not_counted("r1", "alice", "ERR_APPROVAL_PLAN_MISMATCH");
}

#[test]
fn one_valid_reject_fails_the_run() {
    let t = Team::new().waiting_run("r1");
    t.approve("r1", "alice", &[])
        .approve("r1", "bob", &["--reject", "--comment", "wrong window"])
        .commit("alice yes, bob no");
    t.repo.daemon_once().ok();
    let show = t.repo.show("r1");
    assert_eq!(
        (show["state"].as_str(), show["code"].as_str()),
        (Some("failed"), Some("ERR_PACK_APPROVAL_REJECTED"))
    );
    assert!(
        show["error"].as_str().unwrap().contains("bob: wrong window"),
        "{show:#}"
    );
}

#[test]
fn one_key_under_two_principals_counts_once() {
    let t = Team::new();
    let signers = std::fs::read_to_string(t.repo.path().join(".stella/allowed_signers")).unwrap();
    let alice_line = signers
        .lines()
        .find(|l| l.starts_with("alice "))
        .unwrap()
        .replacen("alice ", "alice2 ", 1);
    t.repo
        .write(".stella/allowed_signers", &format!("{signers}{alice_line}\n"));
    t.repo.write(
        ".stella/approvers.yaml",
        "grants:\n  Packs.Approve: [alice, alice2, bob]\n",
    );
    t.commit("alice gets a second name");
    let t = t.waiting_run("r1");
    t.approve("r1", "alice", &[])
        .approve("r1", "alice", &["--principal", "alice2"])
        .commit("alice twice");
    t.repo.daemon_once().ok();
    assert_eq!(t.repo.state("r1"), "waiting");
    let counted = [t.verdict("r1", "alice"), t.verdict("r1", "alice2")];
    assert_eq!(
        counted.iter().filter(|v| v["verdict"] == "counted").count(),
        1,
        "{counted:#?}"
    );
    assert!(counted.iter().any(|v| v["code"] == "ERR_APPROVAL_DUPLICATE"));
}

#[test]
fn an_approver_added_with_the_request_does_not_count() {
    let t = Team::new();
    let mallory = std::fs::read_to_string(t.key("mallory").with_extension("pub")).unwrap();
    let signers = std::fs::read_to_string(t.repo.path().join(".stella/allowed_signers")).unwrap();
    t.repo.write(
        ".stella/allowed_signers",
        &format!("{signers}mallory namespaces=\"stella-approval\" {mallory}"),
    );
    t.repo.write(
        ".stella/approvers.yaml",
        "grants:\n  Packs.Approve: [alice, bob, mallory]\n",
    );
    t.repo.write(
        &format!("{}/request.yaml", run_path("r1")),
        "apiVersion: stella/v1\nkind: RunRequest\npack: packs/gated\n",
    );
    t.commit("request, and make mallory an approver in the same pull request");
    mallory_and_alice_approve_and_only_alice_counts(&t);
}

#[test]
fn a_gate_expires_without_any_further_commit() {
    let t = Team::new();
    t.repo
        .pack("gated", &GATED.replace("expiresAfter: PT1H", "expiresAfter: 2s"));
    t.repo.request("r1", "gated", "{}\n");
    let daemon = t.repo.daemon(&["--repo", ".", "--poll", "60s"]);
    let journal = t.repo.journal("r1");
    daemon.wait_for("the gate to expire", Duration::from_secs(20), || {
        std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .contains("ERR_PACK_APPROVAL_TIMEOUT")
    });
    daemon.wait_for("the run to fail", Duration::from_secs(20), || {
        std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .contains("\"type\":\"run.failed\"")
    });
    daemon.kill();
    let show = t.repo.show("r1");
    assert_eq!(
        (show["state"].as_str(), show["code"].as_str()),
        (Some("failed"), Some("ERR_PACK_APPROVAL_TIMEOUT"))
    );
}

#[test]
fn a_fast_forwarded_pull_request_cannot_add_its_own_approver_in_an_earlier_commit() {
    let t = Team::new();
    t.repo.daemon_once().ok(); // the runner has seen the branch before the pull request
    let mallory = std::fs::read_to_string(t.key("mallory").with_extension("pub")).unwrap();
    let signers = std::fs::read_to_string(t.repo.path().join(".stella/allowed_signers")).unwrap();
    t.repo.write(
        ".stella/allowed_signers",
        &format!("{signers}mallory namespaces=\"stella-approval\" {mallory}"),
    );
    t.repo.write(
        ".stella/approvers.yaml",
        "grants:\n  Packs.Approve: [alice, bob, mallory]\n",
    );
    t.commit("first commit of the pull request: mallory becomes an approver");
    t.repo.write(
        &format!("{}/request.yaml", run_path("r1")),
        "apiVersion: stella/v1\nkind: RunRequest\npack: packs/gated\n",
    );
    t.commit("second commit of the pull request: the request");
    mallory_and_alice_approve_and_only_alice_counts(&t);
}

#[test]
fn evidence_exports_the_approvals_as_they_were_when_the_run_ended() {
    let t = Team::new().waiting_run("r1");
    t.approve("r1", "alice", &[])
        .approve("r1", "bob", &[])
        .commit("both approve");
    t.repo.daemon_once().ok();
    assert_eq!(t.repo.state("r1"), "succeeded");
    // Afterwards bob's approval is re-signed with a comment and alice's is removed: neither
    // is what the evidence covered, and the export must still be the run's.
    t.approve("r1", "bob", &["--comment", "signed again later"]);
    t.repo.git(&[
        "rm",
        "-q",
        "-r",
        &format!("{}/change-review/alice.yaml", approvals_path("r1")),
    ]);
    t.repo.commit_all("later edits");
    let out = t.repo.outside("r1.tar.gz");
    t.repo
        .stella(&["runs", "export", "r1", "-o", out.to_str().unwrap()])
        .ok();
    let verified = t.repo.stella(&["evidence", "verify", out.to_str().unwrap()]);
    assert_eq!(verified.code(), Some(0), "{}{}", verified.stdout(), verified.stderr());
}

#[test]
fn the_trust_files_are_those_before_the_request_however_far_back_it_is() {
    // The request is far below the tip (found by bisecting the history, not by walking it):
    // a grant given to carol in commit 20 of 37 after it must not count for it.
    let t = Team::new();
    t.repo.write(
        &format!("{}/request.yaml", run_path("r1")),
        "apiVersion: stella/v1\nkind: RunRequest\npack: packs/gated\n",
    );
    t.commit("the request");
    for i in 0..37 {
        if i == 20 {
            t.repo.write(
                ".stella/approvers.yaml",
                "grants:\n  Packs.Approve: [alice, bob, carol]\n",
            );
        }
        t.repo.write("notes.md", &format!("change {i}\n"));
        t.commit(&format!("unrelated {i}"));
    }
    t.approve("r1", "carol", &[])
        .approve("r1", "alice", &[])
        .commit("approvals");
    t.repo.daemon_once().ok();
    assert_eq!(t.repo.state("r1"), "waiting");
    t.assert_not_counted("r1", "carol", "ERR_APPROVAL_UNAUTHORIZED");
    t.approve("r1", "bob", &[]).commit("bob approves");
    t.repo.daemon_once().ok();
    assert_eq!(t.repo.state("r1"), "succeeded");
}

#[test]
fn a_watching_daemon_says_once_that_a_run_waits() {
    let t = Team::new();
    let d = t.repo.daemon(&["--repo", "."]);
    t.repo.request("r1", "gated", "{}\n");
    d.wait_for("the run to wait", Duration::from_secs(30), || {
        d.stdout().contains("waiting at gate")
    });
    // The branch moves twice more; each move re-checks the gate, and nothing new is said.
    let last_seen = t.repo.path().join(".git/stella/last-seen");
    for i in 0..2 {
        t.repo.write("notes.md", &format!("{i}\n")).commit_all("unrelated");
        let tip = t.repo.git(&["rev-parse", "HEAD"]).stdout;
        d.wait_for("the daemon to scan the new tip", Duration::from_secs(30), || {
            std::fs::read(&last_seen).is_ok_and(|seen| seen.trim_ascii() == tip.trim_ascii())
        });
    }
    // The re-check after the scan leaves no trace to wait for: the time it is given to say
    // something again is the scenario (nothing must be said).
    std::thread::sleep(Duration::from_millis(800));
    let text = d.stdout();
    d.kill();
    assert_eq!(text.matches("waiting at gate").count(), 1, "{text}");
}

/// Mallory (made an approver too late) and alice approve r1: alice counts, mallory does not,
/// and the reason says that mallory is trusted only from after the request.
fn mallory_and_alice_approve_and_only_alice_counts(t: &Team) {
    t.approve("r1", "mallory", &[])
        .approve("r1", "alice", &[])
        .commit("mallory and alice approve");
    t.repo.daemon_once().ok();
    assert_eq!(t.repo.state("r1"), "waiting", "mallory's approval must not count");
    t.assert_not_counted("r1", "mallory", "ERR_APPROVAL_SIGNATURE_INVALID");
    let reason = t.verdict("r1", "mallory")["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("mallory is trusted at the branch tip, but"), "{reason}");
    let alice = t.verdict("r1", "alice");
    assert_eq!(alice["verdict"], "counted", "{alice}");
}

#[test]
fn a_valid_signature_followed_by_junk_does_not_count() {
    let t = Team::new().waiting_run("r1");
    t.approve("r1", "alice", &[]).approve("r1", "bob", &[]);
    let dir = t.repo.path().join(format!("{}/change-review", approvals_path("r1")));
    let alice = std::fs::read_to_string(dir.join("alice.yaml.sig")).unwrap();
    std::fs::write(dir.join("alice.yaml.sig"), format!("{alice}and then some\n")).unwrap();
    let bob = std::fs::read_to_string(dir.join("bob.yaml.sig")).unwrap();
    std::fs::write(dir.join("bob.yaml.sig"), format!("{bob}\n{}", "A".repeat(30 << 20))).unwrap();
    t.commit("two good signatures, with junk after each");
    t.repo.daemon_once().ok();
    assert_eq!(t.repo.state("r1"), "waiting");
    t.assert_not_counted("r1", "alice", "ERR_APPROVAL_SIGNATURE_INVALID");
    let why = t.verdict("r1", "alice")["reason"].as_str().unwrap().to_string();
    assert!(
        why.contains("data follows the `-----END SSH SIGNATURE-----` line"),
        "{why}"
    );
    t.assert_not_counted("r1", "bob", "ERR_APPROVAL_SIGNATURE_INVALID");
    let why = t.verdict("r1", "bob")["reason"].as_str().unwrap().to_string();
    assert!(why.contains("bytes; at most 16384 are read"), "{why}");
}

#[test]
fn an_approval_file_past_its_limit_does_not_count() {
    let t = Team::new().waiting_run("r1");
    t.approve("r1", "alice", &[]);
    let file = t
        .repo
        .path()
        .join(format!("{}/change-review/alice.yaml", approvals_path("r1")));
    let padded = format!(
        "{}# {}\n",
        std::fs::read_to_string(&file).unwrap(),
        "x".repeat(70 * 1024)
    );
    std::fs::write(&file, padded).unwrap();
    t.commit("a long approval");
    t.repo.daemon_once().ok();
    t.assert_not_counted("r1", "alice", "ERR_APPROVAL_MALFORMED");
    let why = t.verdict("r1", "alice")["reason"].as_str().unwrap().to_string();
    assert!(why.contains("at most 65536 are read"), "{why}");
}

#[test]
fn an_allowed_signers_file_past_its_limit_fails_the_gate() {
    let t = Team::new();
    let path = t.repo.path().join(".stella/allowed_signers");
    let mut signers = std::fs::read_to_string(&path).unwrap();
    signers.push_str(&format!("# {}\n", "x".repeat(1 << 20)));
    std::fs::write(&path, signers).unwrap();
    t.commit("a very long comment in allowed_signers");
    t.repo.request("r1", "gated", "{}\n");
    t.repo.daemon_once().ok();
    let show = t.repo.show("r1");
    assert_eq!(
        (show["state"].as_str(), show["code"].as_str()),
        (Some("failed"), Some("ERR_SIGNERS_INVALID")),
        "{show:#}"
    );
    assert!(
        show["error"].as_str().unwrap().contains("at most 1048576 are read"),
        "{show:#}"
    );
}

#[test]
fn a_run_requested_in_the_flat_layout_is_approved_in_its_flat_directory() {
    let t = Team::new();
    // An older `stella` (or a person) put the request straight under runs/.
    t.repo.write(
        "runs/f1/request.yaml",
        "apiVersion: stella/v1\nkind: RunRequest\npack: packs/gated\n",
    );
    t.commit("request f1, flat");
    t.repo.daemon_once().ok();
    assert_eq!(t.repo.state("f1"), "waiting");
    t.approve("f1", "alice", &[]).approve("f1", "bob", &[]);
    assert!(t.repo.path().join("approvals/f1/change-review/alice.yaml").exists());
    assert!(!t.repo.path().join(approvals_path("f1")).exists());
    t.commit("f1 approved");
    t.repo.daemon_once().ok();
    assert_eq!(t.repo.state("f1"), "succeeded");
    assert!(t.repo.at_head("runs/f1/evidence/manifest.json").is_some());
    t.repo.stella(&["ledger", "verify"]).ok();
    let export = t.repo.outside("f1.tar.gz");
    t.repo
        .stella(&["runs", "export", "f1", "--output", export.to_str().unwrap()])
        .ok();
    t.repo.stella(&["evidence", "verify", export.to_str().unwrap()]).ok();
}
