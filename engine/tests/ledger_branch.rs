//! The merge that takes the watched branch into a separate ledger branch, file by file: what
//! people changed comes in (packs, requests, cancels, deletions), runner files come only
//! from the ledger side, a second take-in of the same commit does nothing, and `verify`
//! finds nothing to say about the merge itself.

use stella_engine::keys::SshKey;
use stella_engine::layout::RunDir;
use stella_engine::ledger::{FileWrite, Ledger, verify};

use crate::support::git;

fn write(dir: &std::path::Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn show(dir: &std::path::Path, rev: &str, path: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["show", &format!("{rev}:{path}")])
        .current_dir(dir)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_take_in_brings_what_people_changed_and_keeps_the_runners_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = SshKey::generate("runner");
    git(d, &["init", "-q", "-b", "main"]);
    write(
        d,
        ".stella/allowed_signers",
        &format!("runner namespaces=\"git\" {}\n", key.public_openssh()),
    );
    let (r1, r2) = (RunDir::new("r1"), RunDir::new("r2"));
    write(d, "packs/p/pack.yaml", "one\n");
    write(d, "runs/README.md", "readme\n");
    write(d, &r1.file("request.yaml"), "request r1\n");
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", "A"]);
    let a = git(d, &["rev-parse", "HEAD"]);
    let mut ledger = Ledger::open(d, "stella/ledger")
        .unwrap()
        .watching("refs/heads/main")
        .unwrap();
    // The ledger branch does not exist yet: it starts at main's tip.
    assert_eq!(ledger.take_in(&key).unwrap().map(|c| c.to_string()), Some(a.clone()));
    let output = r1.file("artifacts/out.txt");
    let runner = FileWrite {
        path: output.clone(),
        bytes: b"runner output\n".to_vec(),
    };
    ledger.commit(&[runner], "stella: run r1 planned", &key).unwrap();
    // People change main: a pack, a new request, a cancel, a deleted README, and a runner
    // file written by hand (damage, never taken in).
    write(d, "packs/p/pack.yaml", "two\n");
    write(d, &r2.file("request.yaml"), "request r2\n");
    write(d, &r1.file("cancel.yaml"), "cancel r1\n");
    write(d, &output, "forged\n");
    std::fs::remove_file(d.join("runs/README.md")).unwrap();
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", "B"]);
    let b = git(d, &["rev-parse", "HEAD"]);
    let merge = ledger.take_in(&key).unwrap().expect("a merge").to_string();
    let parents = git(d, &["log", "-1", "--format=%P", &merge]);
    assert!(parents.ends_with(&b), "second parent is main's tip: {parents}");
    assert_eq!(show(d, &merge, "packs/p/pack.yaml").as_deref(), Some("two\n"));
    assert_eq!(
        show(d, &merge, &r2.file("request.yaml")).as_deref(),
        Some("request r2\n")
    );
    assert_eq!(show(d, &merge, &r1.file("cancel.yaml")).as_deref(), Some("cancel r1\n"));
    assert_eq!(
        show(d, &merge, &r1.file("request.yaml")).as_deref(),
        Some("request r1\n")
    );
    assert_eq!(show(d, &merge, "runs/README.md"), None);
    assert_eq!(show(d, &merge, &output).as_deref(), Some("runner output\n"));
    // main itself never moved, and the same commit is not taken in twice.
    assert_eq!(git(d, &["rev-parse", "main"]), b);
    assert_eq!(ledger.take_in(&key).unwrap(), None);
    // verify: the hand-written runner file on main is the only problem.
    let report = verify::verify(&ledger).unwrap();
    assert!(!report.problems.is_empty());
    assert!(
        report.problems.iter().all(|p| p.path == output && p.commit == b[..12]),
        "{:#?}",
        report.problems
    );
}
