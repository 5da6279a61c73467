//! Who requested a run, and separation of duties (DESIGN section 13): requests committed with
//! git's own SSH signing (`gpg.format=ssh`, keys from ssh-keygen), judged by the trust
//! commit's allowed_signers; the requester's own approval recorded as not counting.

use std::path::PathBuf;

use base64::Engine;

use crate::support::http::{base_of, get};
use crate::support::{Daemon, Repo, keygen, run_path, stella};

fn gated(allow_self: bool) -> String {
    let extra = if allow_self { ", allowSelfApproval: true" } else { "" };
    format!(
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: {{ name: gated, version: 1.0.0 }}\nspec:\n  approvals:\n    - {{ id: change-review, grants: [Packs.Approve], requiredCount: 1{extra} }}\n  steps:\n    - {{ id: before, run: {{ uses: builtin:exec, with: {{ argv: [\"true\"] }} }} }}\n    - {{ id: review, gate: {{ approval: {{ id: change-review, message: please review }} }} }}\n    - {{ id: after, run: {{ uses: builtin:exec, with: {{ argv: [echo, done] }} }} }}\n"
    )
}

/// A repository where alice signs commits and approvals, bob approves, and mallory has a key
/// nobody trusts.
struct Team {
    repo: Repo,
    keys: tempfile::TempDir,
}

impl Team {
    fn new(config: &str, allow_self: bool) -> Team {
        let repo = Repo::new();
        let keys = tempfile::tempdir().unwrap();
        let mut signers = std::fs::read_to_string(repo.path().join(".stella/allowed_signers")).unwrap();
        for name in ["alice", "bob", "mallory"] {
            let public = keygen(keys.path(), name);
            match name {
                "alice" => signers.push_str(&format!("alice namespaces=\"git,stella-approval\" {public}\n")),
                "bob" => signers.push_str(&format!("bob namespaces=\"stella-approval\" {public}\n")),
                _ => {}
            }
        }
        repo.write(".stella/allowed_signers", &signers);
        repo.write(".stella/approvers.yaml", "grants:\n  Packs.Approve: [alice, bob]\n");
        repo.write(
            ".stella/config.yaml",
            &format!("branch: main\ncommit: {{ batchMs: 200 }}\n{config}"),
        );
        repo.commit_all("trust alice and bob");
        repo.pack("gated", &gated(allow_self));
        Team { repo, keys }
    }

    fn key(&self, name: &str) -> PathBuf {
        self.keys.path().join(name)
    }

    /// `stella run request`, the files staged, not committed.
    fn stage_request(&self, id: &str) {
        self.repo.stella(&["run", "request", "packs/gated", "--id", id]).ok();
        self.repo.git(&["add", "-A"]);
    }

    /// A commit of what is staged, signed by `who` through git's SSH signing.
    fn signed_commit(&self, who: &str, msg: &str) {
        let out = self.repo.commit_signed(&self.key(who), msg);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    fn signed_request(&self, id: &str, who: &str) -> &Team {
        self.stage_request(id);
        self.signed_commit(who, &format!("request {id}"));
        self
    }

    fn approve(&self, run: &str, who: &str) -> &Team {
        let key = self.key(who);
        self.repo
            .stella(&[
                "approve",
                run,
                "--gate",
                "change-review",
                "--key",
                key.to_str().unwrap(),
            ])
            .ok();
        self.repo.commit_all(&format!("{who} approves {run}"));
        self
    }

    fn once(&self) -> &Team {
        self.repo.daemon_once().ok();
        self
    }

    fn verdict(&self, run: &str, principal: &str) -> serde_json::Value {
        self.repo.show(run)["gates"][0]["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["principal"] == principal)
            .cloned()
            .unwrap_or_else(|| panic!("no verdict for {principal}"))
    }

    fn step_started(&self, run: &str) -> bool {
        self.repo.events(run).iter().any(|e| e["type"] == "step.started")
    }
}

#[test]
fn a_signed_request_approved_by_its_requester_waits_until_a_second_approver_passes_it() {
    let t = Team::new("requests: { signed: true }\n", false);
    t.signed_request("r1", "alice").once();
    assert_eq!(t.repo.state("r1"), "waiting");
    assert_eq!(t.repo.show("r1")["requestedBy"], "alice");
    t.approve("r1", "alice").once();
    assert_eq!(t.repo.state("r1"), "waiting", "the requester's approval does not count");
    let alice = t.verdict("r1", "alice");
    assert_eq!(
        (&alice["verdict"], &alice["code"]),
        (&"ignored".into(), &"ERR_APPROVAL_SELF".into())
    );
    assert!(
        alice["reason"].as_str().unwrap().contains("requested this run"),
        "{alice}"
    );
    let text = t.repo.stella(&["runs", "show", "r1"]).ok().stdout();
    assert!(
        text.contains("ERR_APPROVAL_SELF") && text.contains("requestedBy: alice"),
        "{text}"
    );
    t.approve("r1", "bob").once();
    assert_eq!(t.repo.state("r1"), "succeeded");
    // The requester is in run.planned and in the signed evidence.
    let planned = t
        .repo
        .events("r1")
        .into_iter()
        .find(|e| e["type"] == "run.planned")
        .unwrap();
    assert_eq!(planned["data"]["requestedBy"], "alice");
    let att = t
        .repo
        .at_head(&format!("{}/evidence/attestation.dsse.json", run_path("r1")))
        .unwrap();
    let env: serde_json::Value = serde_json::from_str(&att).unwrap();
    let statement = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&statement).unwrap();
    assert_eq!(statement["predicate"]["requestedBy"], "alice");
    t.repo.stella(&["ledger", "verify"]).ok();
    // And the API, in the detail and in the list.
    let mut cmd = stella();
    cmd.current_dir(t.repo.path())
        .args(["serve", "--repo", ".", "--http", "127.0.0.1:0"]);
    let serve = Daemon::start(cmd);
    let base = base_of(&serve);
    assert_eq!(get(&base, "/api/v1/runs/r1").json()["requestedBy"], "alice");
    let list = get(&base, "/api/v1/runs").json();
    assert!(list.to_string().contains("\"requestedBy\":\"alice\""), "{list}");
    let page = get(&base, "/runs/r1").text();
    assert!(page.contains("<dt>Requested by</dt><dd>alice</dd>"), "{page}");
}

#[test]
fn allow_self_approval_lets_the_requesters_approval_count() {
    let t = Team::new("requests: { signed: true }\n", true);
    t.signed_request("r1", "alice").once();
    t.approve("r1", "alice").once();
    assert_eq!(t.repo.state("r1"), "succeeded");
    assert_eq!(t.verdict("r1", "alice")["verdict"], "counted");
}

#[test]
fn an_unsigned_request_fails_with_err_request_unsigned_before_any_step() {
    let t = Team::new("requests: { signed: true }\n", false);
    t.stage_request("r1");
    t.repo.git(&["commit", "-q", "-m", "request r1, unsigned"]);
    t.once();
    let show = t.repo.show("r1");
    assert_eq!(
        (&show["state"], &show["code"]),
        (&"failed".into(), &"ERR_REQUEST_UNSIGNED".into()),
        "{show}"
    );
    assert!(show["error"].as_str().unwrap().contains("not signed"), "{show}");
    assert!(!t.step_started("r1"));
    let text = t.repo.stella(&["runs", "show", "r1"]).stdout();
    assert!(text.contains("ERR_REQUEST_UNSIGNED"), "{text}");
}

#[test]
fn a_request_signed_by_an_untrusted_key_fails_likewise() {
    let t = Team::new("requests: { signed: true }\n", false);
    t.signed_request("r1", "mallory").once();
    let show = t.repo.show("r1");
    assert_eq!(show["code"], "ERR_REQUEST_UNSIGNED", "{show}");
    assert!(show["error"].as_str().unwrap().contains("does not trust"), "{show}");
    assert!(show.get("requestedBy").is_none());
    assert!(!t.step_started("r1"));
}

#[test]
fn requested_by_is_recorded_without_signed_true_when_the_commit_is_signed() {
    let t = Team::new("", false);
    t.signed_request("r1", "alice").once();
    assert_eq!(t.repo.show("r1")["requestedBy"], "alice");
    // Unsigned, and signed by an untrusted key: planned all the same, nobody named.
    t.stage_request("r2");
    t.repo.git(&["commit", "-q", "-m", "request r2"]);
    t.signed_request("r3", "mallory").once();
    for id in ["r2", "r3"] {
        let show = t.repo.show(id);
        assert_eq!(show["state"], "waiting", "{show}");
        assert!(show.get("requestedBy").is_none(), "{show}");
    }
    // Without requestedBy, separation of duties has nobody to exclude.
    t.approve("r2", "alice").once();
    assert_eq!(t.repo.state("r2"), "succeeded");
}

#[test]
fn the_commit_that_added_the_request_signs_it_not_the_merge_that_brought_it() {
    let t = Team::new("requests: { signed: true }\n", false);
    // Signed by alice on a branch, merged by an unsigned merge commit: alice requested it.
    t.repo.git(&["checkout", "-q", "-b", "feature"]);
    t.signed_request("r1", "alice");
    t.repo
        .git(&["commit", "-q", "--allow-empty", "-m", "more work, unsigned"]);
    t.repo.git(&["checkout", "-q", "main"]);
    t.repo.git(&["commit", "-q", "--allow-empty", "-m", "main moves on"]);
    t.repo
        .git(&["merge", "-q", "--no-ff", "-m", "merge feature", "feature"]);
    t.once();
    assert_eq!(t.repo.show("r1")["requestedBy"], "alice");
    // Added unsigned on a branch: a merge commit alice signs does not make it hers.
    t.repo.git(&["checkout", "-q", "-b", "other"]);
    t.stage_request("r2");
    t.repo.git(&["commit", "-q", "-m", "request r2, unsigned"]);
    t.repo.git(&["checkout", "-q", "main"]);
    t.repo
        .git(&["commit", "-q", "--allow-empty", "-m", "main moves on again"]);
    let key = t.key("alice");
    let signing_key = format!("user.signingkey={}", key.display());
    t.repo.git(&[
        "-c",
        "gpg.format=ssh",
        "-c",
        &signing_key,
        "merge",
        "-q",
        "-S",
        "--no-ff",
        "-m",
        "merge other",
        "other",
    ]);
    t.once();
    let show = t.repo.show("r2");
    assert_eq!(show["code"], "ERR_REQUEST_UNSIGNED", "{show}");
    assert!(!t.step_started("r2"));
}

#[test]
fn the_requester_under_another_principal_with_the_same_key_is_still_the_requester() {
    let t = Team::new("requests: { signed: true }\n", false);
    let alice_public = std::fs::read_to_string(t.key("alice").with_extension("pub")).unwrap();
    let signers = std::fs::read_to_string(t.repo.path().join(".stella/allowed_signers")).unwrap();
    t.repo.write(
        ".stella/allowed_signers",
        &format!(
            "{signers}alice-ops namespaces=\"stella-approval\" {}\n",
            alice_public.trim()
        ),
    );
    t.repo
        .write(".stella/approvers.yaml", "grants:\n  Packs.Approve: [alice-ops, bob]\n");
    t.repo.commit_all("alice approves as alice-ops");
    t.signed_request("r1", "alice").once();
    let key = t.key("alice");
    t.repo
        .stella(&[
            "approve",
            "r1",
            "--gate",
            "change-review",
            "--key",
            key.to_str().unwrap(),
            "--principal",
            "alice-ops",
        ])
        .ok();
    t.repo.commit_all("alice-ops approves r1");
    t.once();
    assert_eq!(t.repo.state("r1"), "waiting");
    assert_eq!(t.verdict("r1", "alice-ops")["code"], "ERR_APPROVAL_SELF");
}
