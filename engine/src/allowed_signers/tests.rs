//! Tests of allowed_signers: the grammar with positions, pattern matching, times and
//! validity, the furthest failure, find_principals and `line_for`.

use std::time::SystemTime;

use ssh_key::PublicKey;

use super::matching::{Validity, match_pattern_list};
use super::time::parse_time;
use super::*;

const KEY_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPG322m2kteqfffWx2Vg0pt7OFwYs8rbt3OG+UebRq6k";

fn at(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}

fn key_a() -> PublicKey {
    PublicKey::from_openssh(KEY_A).unwrap()
}

#[test]
fn patterns_match_as_in_ssh_config() {
    let list = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
    assert!(match_pattern_list("alice@x.com", &list("*@x.com")));
    assert!(match_pattern_list("alice@x.com", &list("bob,alice@x.com")));
    assert!(!match_pattern_list("bad@x.com", &list("*@x.com,!bad@x.com")));
    assert!(!match_pattern_list("bad@x.com", &list("!bad@x.com,*@x.com")));
    assert!(!match_pattern_list("anyone", &list("!bad")));
    assert!(match_pattern_list("a1", &list("a?")));
    assert!(!match_pattern_list("a12", &list("a?")));
    assert!(match_pattern_list("abcbd", &list("a*b?")));
    assert!(!match_pattern_list("Alice", &list("alice")), "case-sensitive");
    assert!(match_pattern_list("", &list("*")));
}

#[test]
fn parses_principals_options_key_and_comment() {
    let text = format!(
        "# approvers\n\n  alice@x.com,\"bob smith@x.com\" {KEY_A} alice's laptop\n\
         *@x.com,!eve@x.com NAMESPACES=\"git,stella-*\",Valid-After=\"20240101\",valid-before=\"20300101120000Z\" {KEY_A}\n\
         ca@x.com cert-authority {KEY_A}\n"
    );
    let signers = AllowedSigners::parse(".stella/allowed_signers", &text).unwrap();
    let [a, b, c] = signers.entries() else {
        panic!("{signers:?}")
    };
    assert_eq!((a.line, b.line, c.line), (3, 4, 5));
    assert_eq!(a.principals, ["alice@x.com", "bob smith@x.com"]);
    assert_eq!(a.key.comment(), "alice's laptop");
    assert_eq!(a.namespaces, None);
    assert_eq!(
        b.namespaces.as_deref(),
        Some(&["git".to_string(), "stella-*".to_string()][..])
    );
    assert_eq!(b.valid_before, Some(at("2030-01-01T12:00:00Z")));
    assert!(b.valid_after.is_some());
    assert!(c.cert_authority && !c.holds(key_a().key_data()));
}

#[test]
fn every_bad_line_is_reported_with_its_position() {
    let text = format!(
        "alice {KEY_A}\n\
         bob\n\
         carol namespaces=git {KEY_A}\n\
         dave valid-before=\"2030-01-01\" {KEY_A}\n\
         erin ssh-ed25519 AAAA!!\n\
         frank colour=\"red\" {KEY_A}\n\
         gina {KEY_A} namespaces=\"git\"\n\
         \"hank {KEY_A}\n\
         ivan ssh-ed25519-cert-v01@openssh.com AAAA\n\
         jo valid-after=\"20300101Z\",valid-before=\"20200101Z\" {KEY_A}\n"
    );
    let diags = AllowedSigners::parse("signers", &text).unwrap_err();
    let got: Vec<(u64, u64)> = diags.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(
        got,
        [
            (2, 4),
            (3, 18),
            (4, 19),
            (5, 18),
            (6, 7),
            (7, 87),
            (8, 1),
            (9, 6),
            (10, 28)
        ],
        "{diags}"
    );
    assert!(
        diags
            .iter()
            .all(|d| d.code == Code::SignersInvalid && d.field == format!("line {}", d.line))
    );
    assert_eq!(diags.code().exit_code(), 2);
    let carol = diags.iter().find(|d| d.line == 3).unwrap();
    assert_eq!(carol.hint.as_deref(), Some("write namespaces=\"git\""));
    assert!(
        diags
            .to_string()
            .contains("signers:6:7: line 6: unknown option or key type `colour`"),
        "{diags}"
    );
}

#[test]
fn times_follow_ssh_keygen() {
    assert_eq!(parse_time("20240229Z").unwrap(), at("2024-02-29T00:00:00Z"));
    assert_eq!(parse_time("202402291230z").unwrap(), at("2024-02-29T12:30:00Z"));
    assert_eq!(parse_time("20240229123059UTC").unwrap(), at("2024-02-29T12:30:59Z"));
    for bad in [
        "20230229Z",
        "2024010",
        "20241301",
        "202401011260",
        "19691231Z",
        "2024-01-01",
        "",
    ] {
        assert!(parse_time(bad).is_err(), "{bad}");
    }
    assert!(parse_time("20240101").is_ok(), "local time");
}

#[test]
fn validity_is_inclusive_to_the_second() {
    let text = format!("a valid-after=\"20240101Z\",valid-before=\"20250101Z\" {KEY_A}\n");
    let signers = AllowedSigners::parse("f", &text).unwrap();
    let e = &signers.entries()[0];
    assert_eq!(e.validity(at("2024-01-01T00:00:00Z")), Validity::Valid);
    assert_eq!(e.validity(at("2025-01-01T00:00:00.9Z")), Validity::Valid);
    assert!(matches!(e.validity(at("2023-12-31T23:59:59.9Z")), Validity::NotYet(_)));
    assert!(matches!(e.validity(at("2025-01-01T00:00:01Z")), Validity::Expired(_)));
}

#[test]
fn check_key_reports_the_furthest_failure() {
    let text = format!(
        "alice namespaces=\"git\" {KEY_A}\n\
         alice namespaces=\"stella-approval\",valid-before=\"20200101Z\" {KEY_A}\n"
    );
    let signers = AllowedSigners::parse("f", &text).unwrap();
    let now = at("2026-01-01T00:00:00Z");
    assert_eq!(signers.check_key("alice", "git", &key_a(), now).unwrap().line, 1);
    let err = signers
        .check_key("alice", "stella-approval", &key_a(), now)
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::Expired { .. }) && err.signer().unwrap().line == 2,
        "{err}"
    );
    assert_eq!(err.code(), Code::SignerExpired);
    let err = signers.check_key("alice", "file", &key_a(), now).unwrap_err();
    assert!(
        matches!(err, VerifyError::NamespaceNotAllowed { .. }) && err.signer().unwrap().line == 1,
        "{err}"
    );
    let err = signers.check_key("bob", "git", &key_a(), now).unwrap_err();
    assert_eq!(err.code(), Code::SignerUnknown);
    assert!(
        err.to_string()
            .ends_with("for principal `bob` (it is listed for alice)"),
        "{err}"
    );
}

#[test]
fn find_principals_lists_literal_names_that_would_verify() {
    let text = format!(
        "*@x.com,!eve@x.com,eve@x.com,alice@x.com {KEY_A}\n\
         bob@y.com namespaces=\"git\" {KEY_A}\n\
         carol@y.com valid-before=\"20200101Z\" {KEY_A}\n\
         alice@x.com,dan@y.com {KEY_A}\n"
    );
    let signers = AllowedSigners::parse("f", &text).unwrap();
    let now = at("2026-01-01T00:00:00Z");
    assert_eq!(
        signers.find_principals(&key_a(), "git", now),
        ["alice@x.com", "bob@y.com", "dan@y.com"]
    );
    assert_eq!(
        signers.find_principals(&key_a(), "stella-approval", now),
        ["alice@x.com", "dan@y.com"]
    );
}

#[test]
fn line_for_round_trips() {
    let key = key_a();
    let line = AllowedSigners::line_for("runner@host", &["git", "stella-evidence"], &key);
    assert_eq!(line, format!("runner@host namespaces=\"git,stella-evidence\" {KEY_A}"));
    let signers = AllowedSigners::parse("f", &line).unwrap();
    let e = &signers.entries()[0];
    assert!(e.holds(key.key_data()) && e.allows_namespace("git") && !e.allows_namespace("stella-approval"));
    let quoted = AllowedSigners::line_for("Jo Bloggs", &[], &key);
    assert_eq!(
        AllowedSigners::parse("f", &quoted).unwrap().entries()[0].principals,
        ["Jo Bloggs"]
    );
    assert_eq!(check_principal("a,b"), Some("a principal cannot contain `\"` or `,`"));
}
