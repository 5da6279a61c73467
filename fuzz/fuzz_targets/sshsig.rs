//! Armored SSH signatures through `sshsig::parse` and `sshsig::verify`, with one fixed key.
//! The first byte picks a mode: the rest is an armored signature of the fixed message; or a
//! message the fixed key signs; or edits (position, byte) applied to a good signature.
//! Invariants: nothing panics; whatever verifies was made by the fixed key (nothing else
//! signed the message); a fresh signature verifies for its namespace and message only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stella_engine::sshsig::{self, Error};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let ns = stella_fuzz::NAMESPACE;
    let fixed = stella_fuzz::public();
    match mode % 3 {
        0 => {
            let armored = String::from_utf8_lossy(rest);
            let _ = sshsig::parse(&armored);
            if let Ok(key) = sshsig::verify(&armored, ns, stella_fuzz::MESSAGE) {
                assert_eq!(key.key_data(), fixed.key_data());
            }
        }
        1 => {
            let sig = stella_fuzz::sign(ns, rest);
            let key = sshsig::verify(&sig, ns, rest).expect("a fresh signature verifies");
            assert_eq!(key.key_data(), fixed.key_data());
            assert!(matches!(
                sshsig::verify(&sig, "git", rest),
                Err(Error::WrongNamespace { .. })
            ));
            let mut other = rest.to_vec();
            other.push(b'!');
            assert_eq!(sshsig::verify(&sig, ns, &other), Err(Error::BadSignature));
        }
        _ => {
            let mut sig = stella_fuzz::sign(ns, stella_fuzz::MESSAGE).into_bytes();
            for edit in rest.chunks_exact(3) {
                let at = u16::from_le_bytes([edit[0], edit[1]]) as usize;
                if at < sig.len() {
                    sig[at] = edit[2];
                } else {
                    sig.push(edit[2]);
                }
            }
            let armored = String::from_utf8_lossy(&sig);
            if let Ok(key) = sshsig::verify(&armored, ns, stella_fuzz::MESSAGE) {
                assert_eq!(key.key_data(), fixed.key_data());
            }
        }
    }
});
