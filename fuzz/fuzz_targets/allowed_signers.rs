//! OpenSSH allowed_signers files through `AllowedSigners::parse`, and lookups in what parses:
//! `find_principals` and `check_key` for every key listed, and `verify` of a fixed signature.
//! Invariants: nothing panics; every principal `find_principals` names passes `check_key`
//! (its documented promise); a literal principal written with `line_for` parses back and is
//! found again; a signature `verify` accepts was made by a key the file lists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stella_engine::allowed_signers::{AllowedSigners, check_principal};

const NAMESPACES: &[&str] = &["stella-approval", "git"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(signers) = AllowedSigners::parse("allowed_signers", &text) else {
        return;
    };
    let at = stella_fuzz::at();
    for entry in signers.entries() {
        for ns in NAMESPACES {
            for p in signers.find_principals(&entry.key, ns, at) {
                signers
                    .check_key(&p, ns, &entry.key, at)
                    .unwrap_or_else(|e| panic!("find_principals named {p:?}, check_key refused: {e}"));
                if check_principal(&p).is_none() {
                    let line = AllowedSigners::line_for(&p, &[ns], &entry.key);
                    let again = AllowedSigners::parse("line", &line)
                        .unwrap_or_else(|d| panic!("line_for wrote a line that does not parse: {d}\n{line}"));
                    assert!(again.find_principals(&entry.key, ns, at).contains(&p), "{line}");
                }
            }
        }
    }
    let sig = stella_fuzz::sign(stella_fuzz::NAMESPACE, stella_fuzz::MESSAGE);
    if let Ok(entry) = signers.verify("alice", stella_fuzz::NAMESPACE, stella_fuzz::MESSAGE, &sig, at) {
        assert_eq!(entry.key.key_data(), stella_fuzz::public().key_data());
    }
});
