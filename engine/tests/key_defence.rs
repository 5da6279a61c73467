//! Defence in depth for the runner key: a ledger commit holding a private key (the runner's
//! own, in any of its forms, or any PEM/OpenSSH private key block) is refused, and the line
//! splitter masks a key block however its lines arrive.

use stella_engine::Code;
use stella_engine::keys::SshKey;
use stella_engine::ledger::{FileWrite, Ledger};
use stella_engine::redact::{LineSplitter, Redactor};

fn ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("git")
        .args(["init", "-q", "-b", "main"])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let ledger = Ledger::open(dir.path(), "main").unwrap();
    (dir, ledger)
}

fn write(path: &str, text: &str) -> Vec<FileWrite> {
    vec![FileWrite {
        path: path.into(),
        bytes: text.as_bytes().to_vec(),
    }]
}

#[test]
fn a_commit_holding_a_private_key_block_is_refused() {
    let (_dir, mut ledger) = ledger();
    let key = SshKey::generate("runner");
    let block = "step said:\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBfakebody\n-----END EC PRIVATE KEY-----\n";
    let e = ledger
        .commit(&write("runs/r1/artifacts/s/out", block), "stella: leak", &key)
        .unwrap_err();
    assert_eq!(e.code(), Code::LedgerSecret);
    assert_eq!(e.code().as_str(), "ERR_LEDGER_SECRET");
    assert!(
        e.to_string().contains("runs/r1/artifacts/s/out") && e.to_string().contains("private key block"),
        "{e}"
    );
    assert!(ledger.tip().unwrap().is_none(), "nothing was committed");
    // A script that merely looks for the BEGIN line holds no key.
    ledger
        .commit(
            &write(
                "runs/r1/plan.json",
                "grep -- '-----BEGIN RSA PRIVATE KEY-----' dump.txt",
            ),
            "stella: plan",
            &key,
        )
        .unwrap();
}

#[test]
fn a_commit_holding_the_runner_key_in_any_form_is_refused() {
    let (_dir, mut ledger) = ledger();
    let key = SshKey::generate("runner");
    for form in key.secret_forms() {
        let e = ledger
            .commit(
                &write("runs/r1/events.ndjson", &format!("{{\"msg\":\"{form}\"}}\n")),
                "stella: leak",
                &key,
            )
            .unwrap_err();
        assert_eq!(e.code(), Code::LedgerSecret, "{form}");
        assert!(e.to_string().contains("runner's private key"), "{e}");
    }
}

#[test]
fn a_key_block_arriving_line_by_line_with_pauses_is_masked_from_begin_to_end() {
    let mut s = LineSplitter::new(Redactor::new(["unrelated-secret"]), 256);
    let mut out = Vec::new();
    for chunk in [
        "before\n-----BEGIN OPENSSH PRIV",
        "ATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",
        "BG5vbmUAAAAEbm9uZQ\n",
        "AAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\nafter\n",
    ] {
        out.extend(s.push(chunk.as_bytes()));
    }
    assert_eq!(out, ["before", "***", "***", "***", "***", "after"]);
    let one_line = Redactor::default()
        .redact("a -----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIx\n-----END ENCRYPTED PRIVATE KEY----- b");
    assert_eq!(one_line, "a *** b");
}
