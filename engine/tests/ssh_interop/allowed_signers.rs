//! allowed_signers cases (namespaces, principals and their patterns, validity times,
//! cert-authority lines, parse errors), each decided by Stella and by `ssh-keygen -Y verify`,
//! which must agree.

use super::*;

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
