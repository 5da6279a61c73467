//! Keys and signatures both ways: Stella's keys and signatures read by `ssh-keygen` and `git
//! verify-commit`, theirs read by Stella, byte for byte where the format is fixed.

use super::*;

#[test]
fn our_saved_key_is_read_by_ssh_keygen() {
    let s = Scratch::new();
    let key = SshKey::generate("runner@ci");
    let path = s.path(".git/stella/runner_ed25519");
    key.save(&path).unwrap();

    let listed = s.ssh_keygen(&["-l", "-f", keys::pub_path(&path).to_str().unwrap()]);
    assert_eq!(listed, format!("256 {} runner@ci (ED25519)\n", key.fingerprint()));
    let derived = s.ssh_keygen(&["-y", "-f", path.to_str().unwrap()]);
    assert_eq!(derived, format!("{}\n", key.public_openssh()));
    assert_eq!(SshKey::load(&path).unwrap().public_openssh(), key.public_openssh());
}

#[test]
fn a_key_made_by_ssh_keygen_loads() {
    let s = Scratch::new();
    let path = s.keygen("approver", "");
    let key = SshKey::load(&path).unwrap();
    let listed = s.ssh_keygen(&["-l", "-f", path.to_str().unwrap()]);
    assert_eq!(listed, format!("256 {} approver (ED25519)\n", key.fingerprint()));
    assert_eq!(
        format!("{}\n", key.public_openssh()),
        std::fs::read_to_string(keys::pub_path(&path)).unwrap()
    );
}

#[test]
fn an_encrypted_key_is_refused_with_what_to_do() {
    let s = Scratch::new();
    let path = s.keygen("locked", "secret");
    let err = SshKey::load(&path).unwrap_err();
    assert!(matches!(err, keys::Error::Encrypted { .. }), "{err}");
    assert_eq!(err.code(), Code::KeyInvalid);
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{} is protected by a passphrase", path.display())),
        "{msg}"
    );
    assert!(
        msg.contains("ssh-keygen -p -N ''") && msg.contains("ssh-agent"),
        "{msg}"
    );
}

#[test]
fn other_key_types_are_refused() {
    let s = Scratch::new();
    let path = s.path("ecdsa");
    s.ssh_keygen(&["-q", "-t", "ecdsa", "-N", "", "-f", path.to_str().unwrap()]);
    let err = SshKey::load(&path).unwrap_err();
    assert!(
        err.to_string()
            .contains("is an ecdsa-sha2-nistp256 key; Stella signs only with Ed25519"),
        "{err}"
    );

    s.ssh_keygen(&["-q", "-p", "-N", "", "-m", "PEM", "-f", path.to_str().unwrap()]);
    let err = SshKey::load(&path).unwrap_err();
    assert_eq!(err.code(), Code::KeyInvalid, "{err}");
    assert!(
        err.to_string()
            .contains("is not an OpenSSH private key (it is a PEM/PKCS#8 private key)"),
        "{err}"
    );
}

#[test]
fn our_signatures_are_byte_for_byte_what_ssh_keygen_writes() {
    // Ed25519 signatures are deterministic, so the same key and message give the same bytes.
    let s = Scratch::new();
    let path = s.keygen("runner", "");
    let key = SshKey::load(&path).unwrap();
    for (namespace, msg) in [
        ("git", &b"tree 4b825dc6\n\nmessage\n"[..]),
        ("stella-approval", MSG),
        ("n", b""),
    ] {
        assert_eq!(
            key.sign(namespace, msg),
            s.keygen_sign(&path, namespace, msg),
            "namespace {namespace}"
        );
    }
}

#[test]
fn ssh_keygen_accepts_our_signature() {
    let k = Signers::new();
    let signers = format!("alice@example.com {}\n", k.our_key());
    let line = Verdict::new(
        &signers,
        "alice@example.com",
        "stella-approval",
        MSG,
        &k.our_sig("stella-approval"),
    )
    .accepted(&k.scratch);
    assert_eq!(line, 1);
}

#[test]
fn we_accept_ssh_keygens_signature() {
    let k = Signers::new();
    let sig = k.scratch.keygen_sign(&k.theirs, "stella-approval", MSG);
    let signer = sshsig::verify(&sig, "stella-approval", MSG).unwrap();
    assert_eq!(public_of(&signer.to_openssh().unwrap()), k.their_key());
    let signers = format!("bob@example.com {}\n", k.their_key());
    Verdict::new(&signers, "bob@example.com", "stella-approval", MSG, &sig).accepted(&k.scratch);
}

#[test]
fn we_accept_sha256_signatures_as_ssh_keygen_does() {
    let k = Signers::new();
    let out = k.scratch.run(
        "ssh-keygen",
        &[
            "-Y",
            "sign",
            "-f",
            k.theirs.to_str().unwrap(),
            "-n",
            "git",
            "-O",
            "hashalg=sha256",
        ],
        MSG,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sig = String::from_utf8(out.stdout).unwrap();
    let signers = format!("bob@example.com {}\n", k.their_key());
    Verdict::new(&signers, "bob@example.com", "git", MSG, &sig).accepted(&k.scratch);
}

#[test]
fn other_key_types_may_be_listed_but_their_signatures_are_unsupported() {
    let s = Scratch::new();
    let mut lines = String::new();
    for (name, kind) in [("rsa", "rsa"), ("ecdsa", "ecdsa")] {
        let path = s.path(name);
        s.ssh_keygen(&["-q", "-t", kind, "-N", "", "-C", name, "-f", path.to_str().unwrap()]);
        let public = std::fs::read_to_string(keys::pub_path(&path)).unwrap();
        lines.push_str(&format!("{name}@example.com {public}"));
        let sig = s.keygen_sign(&path, "git", MSG);
        let err = sshsig::verify(&sig, "git", MSG).unwrap_err();
        assert!(matches!(err, sshsig::Error::Unsupported { .. }), "{err}");
        assert_eq!(err.code(), Code::SignatureInvalid);
    }
    let signers = AllowedSigners::parse("allowed_signers", &lines).unwrap();
    assert_eq!(signers.entries().len(), 2);
}

#[test]
fn git_verify_commit_accepts_a_commit_we_sign() {
    // The ledger signs commits itself; prove git (gpg.format=ssh) takes our signature.
    let s = Scratch::new();
    let key = SshKey::generate("runner@ci");
    s.write(
        "allowed_signers",
        AllowedSigners::line_for("runner@ci", &["git"], &key.public_key()) + "\n",
    );
    let git = |args: &[&str], stdin: &[u8]| {
        let out = s.run("git", args, stdin);
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    git(&["init", "-q", "."], b"");
    let tree = git(&["hash-object", "-t", "tree", "-w", "--stdin"], b"");
    let unsigned = format!(
        "tree {}\nauthor Stella <runner@ci> 1764000000 +0000\ncommitter Stella <runner@ci> 1764000000 +0000\n\nstella: run r1 succeeded\n",
        tree.trim()
    );
    let sig = key.sign("git", unsigned.as_bytes());
    let header = format!("gpgsig {}", sig.trim_end().replace('\n', "\n "));
    let (head, body) = unsigned.split_once("\n\n").unwrap();
    let signed = format!("{head}\n{header}\n\n{body}");
    let commit = git(&["hash-object", "-t", "commit", "-w", "--stdin"], signed.as_bytes());
    let config = [
        "-c",
        "gpg.format=ssh",
        "-c",
        "gpg.ssh.allowedSignersFile=allowed_signers",
    ];
    let out = s.run(
        "git",
        &[&config[..], &["verify-commit", "-v", commit.trim()]].concat(),
        b"",
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("Good \"git\" signature for runner@ci with ED25519 key"),
        "{said}"
    );
}
