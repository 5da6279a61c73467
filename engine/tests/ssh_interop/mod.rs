//! Keys, SSH signatures and allowed_signers checked against the real `ssh-keygen` (and `git
//! verify-commit`): what Stella writes they read, what they write Stella reads, and for every
//! allowed_signers case both must reach the same verdict. This file holds the scratch
//! directory and the verdict builder the two stories share.

mod allowed_signers;
mod signatures;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

use stella_engine::Code;
use stella_engine::allowed_signers::{AllowedSigners, VerifyError};
use stella_engine::keys::{self, SshKey};
use stella_engine::sshsig;

/// A scratch directory with `ssh-keygen` at hand.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn run(&self, program: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn ssh_keygen(&self, args: &[&str]) -> String {
        let out = self.run("ssh-keygen", args, b"");
        assert!(
            out.status.success(),
            "ssh-keygen {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `ssh-keygen -t ed25519 -N PASSPHRASE -C COMMENT -f NAME`.
    fn keygen(&self, name: &str, passphrase: &str) -> PathBuf {
        let path = self.path(name);
        self.ssh_keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            passphrase,
            "-C",
            name,
            "-f",
            path.to_str().unwrap(),
        ]);
        path
    }

    /// `ssh-keygen -Y sign -f KEY -n NAMESPACE` over `msg`: the armored signature.
    fn keygen_sign(&self, key: &Path, namespace: &str, msg: &[u8]) -> String {
        let out = self.run(
            "ssh-keygen",
            &["-Y", "sign", "-f", key.to_str().unwrap(), "-n", namespace],
            msg,
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Whether `ssh-keygen -Y verify` accepts, with its messages.
    fn keygen_verify(
        &self,
        signers: &str,
        principal: &str,
        namespace: &str,
        msg: &[u8],
        sig: &str,
        at: SystemTime,
    ) -> (bool, String) {
        let file = self.write("allowed_signers", signers);
        let sig = self.write("msg.sig", sig);
        let time = format!("verify-time={}", keygen_time(at));
        let args = [
            "-Y",
            "verify",
            "-f",
            file.to_str().unwrap(),
            "-I",
            principal,
            "-n",
            namespace,
            "-s",
            sig.to_str().unwrap(),
            "-O",
            &time,
        ];
        let out = self.run("ssh-keygen", &args, msg);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

/// `YYYYMMDDHHMMSSZ`, as ssh-keygen's verify-time takes it.
fn keygen_time(at: SystemTime) -> String {
    let rfc = humantime::format_rfc3339_seconds(at).to_string();
    rfc.chars().filter(|c| c.is_ascii_digit()).chain(['Z']).collect()
}

fn at(rfc3339: &str) -> SystemTime {
    humantime::parse_rfc3339(rfc3339).unwrap()
}

const NOW: &str = "2026-06-01T12:00:00Z";
const MSG: &[u8] = b"apiVersion: stella/v1\nkind: Approval\ndecision: approve\n";

/// One signature checked against one allowed_signers text by Stella and by ssh-keygen.
#[must_use]
struct Verdict {
    signers: String,
    principal: String,
    namespace: String,
    msg: Vec<u8>,
    sig: String,
    at: SystemTime,
}

impl Verdict {
    fn new(signers: &str, principal: &str, namespace: &str, msg: &[u8], sig: &str) -> Verdict {
        Verdict {
            signers: signers.into(),
            principal: principal.into(),
            namespace: namespace.into(),
            msg: msg.into(),
            sig: sig.into(),
            at: at(NOW),
        }
    }

    fn at(mut self, time: SystemTime) -> Verdict {
        self.at = time;
        self
    }

    /// Both decide; they must agree. Stella's answer is returned for a closer look.
    fn decide(&self, scratch: &Scratch) -> Result<u64, VerifyError> {
        let signers = AllowedSigners::parse("allowed_signers", &self.signers).unwrap();
        let ours = signers
            .verify(&self.principal, &self.namespace, &self.msg, &self.sig, self.at)
            .map(|e| e.line);
        let (theirs, said) = scratch.keygen_verify(
            &self.signers,
            &self.principal,
            &self.namespace,
            &self.msg,
            &self.sig,
            self.at,
        );
        assert_eq!(
            ours.is_ok(),
            theirs,
            "stella: {ours:?}\nssh-keygen: {said}\nallowed_signers:\n{}",
            self.signers
        );
        ours
    }

    fn accepted(self, scratch: &Scratch) -> u64 {
        self.decide(scratch).unwrap()
    }

    fn refused(self, scratch: &Scratch, code: Code) -> VerifyError {
        let err = self.decide(scratch).unwrap_err();
        assert_eq!(err.code(), code, "{err}");
        err
    }
}

/// A saved Stella key and a key made by ssh-keygen, for the allowed_signers stories.
struct Signers {
    scratch: Scratch,
    ours: SshKey,
    theirs: PathBuf,
}

impl Signers {
    fn new() -> Signers {
        let scratch = Scratch::new();
        let ours = SshKey::generate("alice@example.com");
        let theirs = scratch.keygen("bob@example.com", "");
        Signers { scratch, ours, theirs }
    }

    fn our_key(&self) -> String {
        public_of(&self.ours.public_openssh())
    }

    fn their_key(&self) -> String {
        public_of(&std::fs::read_to_string(keys::pub_path(&self.theirs)).unwrap())
    }

    fn our_sig(&self, namespace: &str) -> String {
        self.ours.sign(namespace, MSG)
    }
}

/// `keytype base64`, without the comment.
fn public_of(line: &str) -> String {
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}
