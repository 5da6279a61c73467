//! The policy checks and one evaluation: located parse errors, queries, decisions, deny
//! messages, the time bound.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::pack::PackFiles;

fn files(rego: &str) -> PackFiles {
    PackFiles::from_entries(
        "packs/p",
        vec![("policies/p.rego".to_string(), rego.as_bytes().to_vec(), false)],
    )
    .unwrap()
}

const POLICY: &str = r#"package stella

default allow := false

allow if count(deny) == 0

deny contains msg if {
    input.inputs.env == "prod"
    not input.approvals.release
    msg := "prod needs the release approval"
}
"#;

#[test]
fn a_parse_error_is_located_in_the_rego_file() {
    let bad = "package stella\n\nallow if {\n    input.x ==\n}\n";
    let Err(Error::Syntax { pos, message }) = check(&files(bad), "policies/p.rego") else {
        panic!("a syntax error is an error");
    };
    assert_eq!(pos.line, 5, "{message}");
    assert!(!message.is_empty());
}

#[test]
fn paths_outside_the_pack_and_missing_files_are_refused() {
    assert!(matches!(check(&files(POLICY), "../x.rego"), Err(Error::LeavesPack(_))));
    assert!(matches!(
        check(&files(POLICY), "/etc/x.rego"),
        Err(Error::LeavesPack(_))
    ));
    assert!(matches!(
        check(&files(POLICY), "policies/q.rego"),
        Err(Error::NotFound(_))
    ));
    let p = check(&files(POLICY), "./policies//p.rego").expect("a good policy");
    assert_eq!(p.path, "policies/p.rego");
    assert_eq!(p.sha256, crate::pack::sha256_hex(POLICY.as_bytes()));
}

#[test]
fn queries_are_rule_paths() {
    for q in ["data.stella.allow", "data.x", "data.a_b.c1"] {
        assert!(check_query(q).is_ok(), "{q}");
    }
    for q in [
        "",
        "data",
        "input.x",
        "data.stella.allow == true",
        "data..x",
        "data.1x",
        "x.data",
    ] {
        assert!(check_query(q).is_err(), "{q}");
    }
}

#[test]
fn the_decision_follows_the_query_and_the_deny_messages() {
    let p = check(&files(POLICY), "policies/p.rego").unwrap();
    let t = Duration::from_secs(5);
    let ok = evaluate(&p, DEFAULT_QUERY, &json!({"inputs": {"env": "dev"}}), t).unwrap();
    assert_eq!(
        ok,
        Decision {
            result: json!(true),
            allow: true,
            deny: vec![]
        }
    );
    let no = evaluate(
        &p,
        DEFAULT_QUERY,
        &json!({"inputs": {"env": "prod"}, "approvals": {}}),
        t,
    )
    .unwrap();
    assert_eq!(no.result, json!(false));
    assert!(!no.allow);
    assert_eq!(no.deny, vec!["prod needs the release approval".to_string()]);
    let undefined = evaluate(&p, "data.stella.missing", &json!({}), t).unwrap();
    assert_eq!(undefined.result, Json::Null);
    assert!(!undefined.allow);
    let other = evaluate(&p, "data.other.allow", &json!({}), t).unwrap();
    assert!(!other.allow, "a package the policy does not define is undefined");
}

#[test]
fn a_true_result_with_deny_messages_fails() {
    let p = check(
        &files("package stella\nallow := true\ndeny contains \"no\"\n"),
        "policies/p.rego",
    )
    .unwrap();
    let d = evaluate(&p, DEFAULT_QUERY, &json!({}), Duration::from_secs(5)).unwrap();
    assert_eq!(
        (d.result, d.allow, d.deny),
        (json!(true), false, vec!["no".to_string()])
    );
}

#[test]
fn a_non_boolean_result_fails() {
    let p = check(&files("package stella\nallow := \"yes\"\n"), "policies/p.rego").unwrap();
    let d = evaluate(&p, DEFAULT_QUERY, &json!({}), Duration::from_secs(5)).unwrap();
    assert_eq!((d.result, d.allow), (json!("yes"), false));
}

#[test]
fn a_long_evaluation_is_stopped() {
    let slow = "package stella\nallow if {\n  n := count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000)])\n  n > 0\n}\n";
    let p = check(&files(slow), "policies/p.rego").unwrap();
    let started = std::time::Instant::now();
    let e = evaluate(&p, DEFAULT_QUERY, &json!({}), Duration::from_millis(200)).unwrap_err();
    assert!(matches!(e, Error::Exceeded(_)), "{e}");
    assert!(e.to_string().starts_with("evaluation exceeded its time limit"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn the_input_digest_is_of_the_canonical_json() {
    assert_eq!(
        input_digest(&json!({"b": 1, "a": 2})),
        input_digest(&json!({"a": 2, "b": 1}))
    );
    assert_ne!(input_digest(&json!({"a": 1})), input_digest(&json!({"a": 2})));
    assert!(input_digest(&json!({})).starts_with("sha256:"));
}

#[test]
fn without_a_program_the_bound_is_a_worker_thread_with_a_deadline() {
    let p = check(&files(POLICY), "policies/p.rego").unwrap();
    let limits = bounded::Limits {
        time: Duration::from_millis(200),
        memory: 64 << 20,
    };
    let d = bounded::evaluate(&p, DEFAULT_QUERY, &json!({"inputs": {"env": "dev"}}), limits).unwrap();
    assert!(d.allow);
    let slow = "package stella\nallow if {\n  n := count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000)])\n  n > 0\n}\n";
    let p = check(&files(slow), "policies/p.rego").unwrap();
    let e = bounded::evaluate(&p, DEFAULT_QUERY, &json!({}), limits).unwrap_err();
    assert!(e.to_string().starts_with("evaluation exceeded"), "{e}");
    assert!(matches!(
        bounded::evaluate(&p, "input.x", &json!({}), limits),
        Err(Error::Query(_))
    ));
    let huge = json!({ "steps": { "s": { "outputs": { "x": "x".repeat(64 << 20) } } } });
    let e = bounded::evaluate(&p, DEFAULT_QUERY, &huge, limits).unwrap_err();
    assert_eq!(e.to_string(), "evaluation exceeded its input bound of 64 MiB");
}
