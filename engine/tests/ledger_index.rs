//! git's index after runner commits: however the runner batches its updates, each runner file
//! is in the index once, with the committed blob, so git's own next commit writes the same tree.

use stella_engine::keys::SshKey;
use stella_engine::ledger::{FileWrite, Ledger};

use crate::support::git;

fn writes(files: &[(String, &str)]) -> Vec<FileWrite> {
    files
        .iter()
        .map(|(path, text)| FileWrite {
            path: path.clone(),
            bytes: text.as_bytes().to_vec(),
        })
        .collect()
}

#[test]
fn a_commit_that_rewrites_files_the_index_has_and_adds_others_lists_each_path_once() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    let mut ledger = Ledger::open(dir.path(), "main").unwrap();
    let key = SshKey::generate("runner");
    let runs: Vec<String> = (0..40).map(|i| format!("r{i:02}")).collect();
    let first: Vec<(String, &str)> = runs
        .iter()
        .flat_map(|r| {
            [
                (format!("runs/{r}/plan.json"), "{}\n"),
                (format!("runs/{r}/events/000000000000.ndjson"), "a\n"),
            ]
        })
        .collect();
    ledger.commit(&writes(&first), "stella: planned", &key).unwrap();
    ledger.flush_index().unwrap();
    // Each run's plan again (unchanged, as every commit of a run carries it) beside new files:
    // the index holds the plans and lacks the rest.
    let second: Vec<(String, &str)> = runs
        .iter()
        .flat_map(|r| {
            [
                (format!("runs/{r}/plan.json"), "{}\n"),
                (format!("runs/{r}/evidence/attestation.dsse.json"), "{\"a\":1}\n"),
                (format!("runs/{r}/evidence/manifest.json"), "{\"m\":1}\n"),
                (format!("runs/{r}/events/000000000001.ndjson"), "b\n"),
            ]
        })
        .collect();
    ledger.commit(&writes(&second), "stella: finished", &key).unwrap();
    ledger.flush_index().unwrap();
    let staged = git(dir.path(), &["ls-files", "--stage"]);
    let mut paths: Vec<&str> = staged.lines().map(|l| l.split('\t').nth(1).unwrap()).collect();
    let listed = paths.len();
    paths.dedup();
    assert_eq!(listed, paths.len(), "a path twice in the index:\n{staged}");
    assert_eq!(listed, 40 * 5);
    assert_eq!(
        git(dir.path(), &["write-tree"]),
        git(dir.path(), &["rev-parse", "HEAD^{tree}"])
    );
    assert_eq!(git(dir.path(), &["status", "--porcelain"]), "");
}
