//! Keys, SSH signatures and allowed_signers checked against the real `ssh-keygen` (and `git
//! verify-commit`): what Stella writes they read, what they write Stella reads, and for every
//! allowed_signers case both must reach the same verdict.

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
fn wrong_namespace() {
    let k = Signers::new();
    let signers = format!("alice@example.com {}\n", k.our_key());
    let err = Verdict::new(&signers, "alice@example.com", "stella-approval", MSG, &k.our_sig("git"))
        .refused(&k.scratch, Code::SignatureInvalid);
    assert!(
        matches!(err, VerifyError::Signature(sshsig::Error::WrongNamespace { .. })),
        "{err}"
    );
}

#[test]
fn edited_message() {
    let k = Signers::new();
    let signers = format!("alice@example.com {}\n", k.our_key());
    let edited = MSG
        .to_vec()
        .into_iter()
        .chain(*b"# one more line\n")
        .collect::<Vec<_>>();
    let err = Verdict::new(
        &signers,
        "alice@example.com",
        "stella-approval",
        &edited,
        &k.our_sig("stella-approval"),
    )
    .refused(&k.scratch, Code::SignatureInvalid);
    assert_eq!(err, VerifyError::Signature(sshsig::Error::BadSignature));
}

#[test]
fn wrong_principal() {
    let k = Signers::new();
    let signers = format!("alice@example.com {}\nbob@example.com {}\n", k.our_key(), k.their_key());
    let err = Verdict::new(
        &signers,
        "bob@example.com",
        "stella-approval",
        MSG,
        &k.our_sig("stella-approval"),
    )
    .refused(&k.scratch, Code::SignerUnknown);
    assert!(
        err.to_string().contains("(it is listed for alice@example.com)"),
        "{err}"
    );
}

#[test]
fn key_not_listed() {
    let k = Signers::new();
    let signers = format!("alice@example.com {}\n", k.their_key());
    Verdict::new(
        &signers,
        "alice@example.com",
        "stella-approval",
        MSG,
        &k.our_sig("stella-approval"),
    )
    .refused(&k.scratch, Code::SignerUnknown);
}

#[test]
fn expired_key() {
    let k = Signers::new();
    let signers = format!("alice@example.com valid-before=\"20260101Z\" {}\n", k.our_key());
    let err = Verdict::new(
        &signers,
        "alice@example.com",
        "stella-approval",
        MSG,
        &k.our_sig("stella-approval"),
    )
    .refused(&k.scratch, Code::SignerExpired);
    assert!(err.to_string().ends_with("expired at 2026-01-01T00:00:00Z"), "{err}");
}

#[test]
fn not_yet_valid_key() {
    let k = Signers::new();
    let signers = format!("alice@example.com valid-after=\"20270101120000Z\" {}\n", k.our_key());
    let err = Verdict::new(
        &signers,
        "alice@example.com",
        "stella-approval",
        MSG,
        &k.our_sig("stella-approval"),
    )
    .refused(&k.scratch, Code::SignerExpired);
    assert!(
        matches!(err, VerifyError::NotYetValid { .. }) && err.signer().unwrap().line == 1,
        "{err}"
    );
}

#[test]
fn validity_boundaries_are_inclusive_in_both() {
    let k = Signers::new();
    let signers = format!(
        "alice@example.com valid-after=\"20260101Z\",valid-before=\"20270101Z\" {}\n",
        k.our_key()
    );
    let sig = k.our_sig("stella-approval");
    let case = |t: &str| Verdict::new(&signers, "alice@example.com", "stella-approval", MSG, &sig).at(at(t));
    case("2026-01-01T00:00:00Z").accepted(&k.scratch);
    case("2027-01-01T00:00:00Z").accepted(&k.scratch);
    case("2025-12-31T23:59:59Z").refused(&k.scratch, Code::SignerExpired);
    case("2027-01-01T00:00:01Z").refused(&k.scratch, Code::SignerExpired);
}

#[test]
fn local_times_are_read_as_ssh_keygen_reads_them() {
    // No Z: the host's time zone, through the same mktime ssh-keygen uses. Probe one second on
    // either side of where Stella places the boundary; ssh-keygen must flip there too.
    let k = Signers::new();
    let signers = format!("alice@example.com valid-after=\"202607011230\" {}\n", k.our_key());
    let parsed = AllowedSigners::parse("allowed_signers", &signers).unwrap();
    let boundary = parsed.entries()[0].valid_after.unwrap();
    let sig = k.our_sig("stella-approval");
    let case = |t: SystemTime| Verdict::new(&signers, "alice@example.com", "stella-approval", MSG, &sig).at(t);
    case(boundary).accepted(&k.scratch);
    case(boundary - std::time::Duration::from_secs(1)).refused(&k.scratch, Code::SignerExpired);
}

#[test]
fn namespace_not_allowed() {
    let k = Signers::new();
    let signers = format!("alice@example.com namespaces=\"git,stella-evidence\" {}\n", k.our_key());
    let err = Verdict::new(
        &signers,
        "alice@example.com",
        "stella-approval",
        MSG,
        &k.our_sig("stella-approval"),
    )
    .refused(&k.scratch, Code::SignerNamespace);
    assert!(
        err.to_string().contains("may not sign for namespace `stella-approval`"),
        "{err}"
    );
    Verdict::new(&signers, "alice@example.com", "git", MSG, &k.our_sig("git")).accepted(&k.scratch);
}

#[test]
fn namespace_patterns() {
    let k = Signers::new();
    let signers = format!(
        "alice@example.com namespaces=\"stella-*,!stella-evidence\" {}\n",
        k.our_key()
    );
    let case = |ns: &str| Verdict::new(&signers, "alice@example.com", ns, MSG, &k.our_sig(ns));
    case("stella-approval").accepted(&k.scratch);
    case("stella-evidence").refused(&k.scratch, Code::SignerNamespace);
    case("git").refused(&k.scratch, Code::SignerNamespace);
}

#[test]
fn negated_principal_pattern() {
    let k = Signers::new();
    let signers = format!("*@example.com,!alice@example.com {}\n", k.our_key());
    let case = |p: &str| Verdict::new(&signers, p, "stella-approval", MSG, &k.our_sig("stella-approval"));
    case("alice@example.com").refused(&k.scratch, Code::SignerUnknown);
    case("carol@example.com").accepted(&k.scratch);
    case("carol@example.org").refused(&k.scratch, Code::SignerUnknown);
}

#[test]
fn wildcard_principal() {
    let k = Signers::new();
    let signers = format!("*@example.com,ops-??@example.org {}\n", k.our_key());
    let case = |p: &str| Verdict::new(&signers, p, "stella-approval", MSG, &k.our_sig("stella-approval"));
    case("anyone@example.com").accepted(&k.scratch);
    case("ops-01@example.org").accepted(&k.scratch);
    case("ops-1@example.org").refused(&k.scratch, Code::SignerUnknown);
    case("anyone@example.com.evil").refused(&k.scratch, Code::SignerUnknown);
}

#[test]
fn quoted_principals_and_case_insensitive_options() {
    let k = Signers::new();
    let signers = format!(
        "\"Alice Smith,alice@example.com\" NameSpaces=\"stella-approval\" {} laptop\n",
        k.our_key()
    );
    let case = |p: &str| Verdict::new(&signers, p, "stella-approval", MSG, &k.our_sig("stella-approval"));
    case("Alice Smith").accepted(&k.scratch);
    case("alice@example.com").accepted(&k.scratch);
    case("alice smith").refused(&k.scratch, Code::SignerUnknown);
}

#[test]
fn a_later_line_can_allow_what_an_earlier_one_does_not() {
    let k = Signers::new();
    let signers = format!(
        "# the runner\nalice@example.com namespaces=\"git\" {key}\n\nalice@example.com valid-before=\"20200101Z\" {key}\nalice@example.com namespaces=\"stella-*\" {key}\n",
        key = k.our_key()
    );
    let line = Verdict::new(
        &signers,
        "alice@example.com",
        "stella-approval",
        MSG,
        &k.our_sig("stella-approval"),
    )
    .accepted(&k.scratch);
    assert_eq!(line, 5);
}

#[test]
fn cert_authority_lines_never_match_a_plain_key() {
    let k = Signers::new();
    let signers = format!("*@example.com cert-authority {}\n", k.our_key());
    Verdict::new(
        &signers,
        "alice@example.com",
        "stella-approval",
        MSG,
        &k.our_sig("stella-approval"),
    )
    .refused(&k.scratch, Code::SignerUnknown);
}

#[test]
fn line_for_writes_what_ssh_keygen_reads() {
    let k = Signers::new();
    let signers = AllowedSigners::line_for("runner@host", &["git", "stella-evidence"], &k.ours.public_key()) + "\n";
    assert!(
        signers.starts_with("runner@host namespaces=\"git,stella-evidence\" ssh-ed25519 AAAA"),
        "{signers}"
    );
    Verdict::new(
        &signers,
        "runner@host",
        "stella-evidence",
        MSG,
        &k.our_sig("stella-evidence"),
    )
    .accepted(&k.scratch);
    Verdict::new(
        &signers,
        "runner@host",
        "stella-approval",
        MSG,
        &k.our_sig("stella-approval"),
    )
    .refused(&k.scratch, Code::SignerNamespace);
}

#[test]
fn find_principals_agrees_with_ssh_keygen_on_literal_lines() {
    let k = Signers::new();
    let signers = format!(
        "bob@example.com {}\nalice@example.com,ops@example.com {}\n",
        k.their_key(),
        k.our_key()
    );
    let file = k.scratch.write("allowed_signers", &signers);
    let sig = k.scratch.write("msg.sig", k.our_sig("git"));
    let theirs = k.scratch.ssh_keygen(&[
        "-Y",
        "find-principals",
        "-f",
        file.to_str().unwrap(),
        "-s",
        sig.to_str().unwrap(),
    ]);
    let parsed = AllowedSigners::parse("allowed_signers", &signers).unwrap();
    let ours = parsed.find_principals(&k.ours.public_key(), "git", SystemTime::now());
    assert_eq!(theirs.lines().collect::<Vec<_>>(), ours);
}

#[test]
fn parse_errors_name_file_line_and_column() {
    let text = "alice@example.com namespaces=git ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPG322m2kteqfffWx2Vg0pt7OFwYs8rbt3OG+UebRq6k\n\
                # fine\n\
                bob@example.com\n";
    let diags = AllowedSigners::parse(".stella/allowed_signers", text).unwrap_err();
    assert_eq!(diags.code(), Code::SignersInvalid);
    assert_eq!(
        diags
            .to_string()
            .lines()
            .map(|l| l.split(" (").next().unwrap())
            .collect::<Vec<_>>(),
        [
            ".stella/allowed_signers:1:30: line 1: the value of `namespaces` must be in double quotes",
            ".stella/allowed_signers:3:16: line 3: missing key after the principals",
        ]
    );
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
