//! Inputs that broke a fuzz target (`fuzz/`), each kept in `fuzz/regressions/<target>/` and
//! tested here by what broke: files Stella writes must read back as what was written.

use stella_engine::approvals::{Approval, Decision};
use stella_engine::request::Request;

const HASH: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn a_rendered_request_whose_pack_path_holds_a_comment_mark_reads_back() {
    for pack in ["packs/a #b", "packs/a: b", "packs/[x]", "packs/é"] {
        let text = Request::render(pack, &serde_json::json!({}), HASH);
        let back = Request::parse("request.yaml", &text).unwrap_or_else(|d| panic!("{d}\n{text}"));
        assert_eq!(back.pack, pack, "{text}");
    }
    let plain = Request::render("packs/sbom-remediation", &serde_json::json!({}), HASH);
    assert!(plain.contains("\npack: packs/sbom-remediation\n"), "{plain}");
}

#[test]
fn a_rendered_request_whose_inputs_hold_del_or_c1_characters_reads_back() {
    let inputs = serde_json::json!({"who": "x\u{7f}\u{85}\u{9f}\u{2028}\u{feff}\u{ffff}y", "\u{80}": 1});
    let text = Request::render("packs/hello", &inputs, HASH);
    let back = Request::parse("request.yaml", &text).unwrap_or_else(|d| panic!("{d}\n{text}"));
    assert_eq!(back.inputs.unwrap().to_json(), inputs);
}

#[test]
fn a_rendered_approval_whose_comment_holds_a_del_character_reads_back() {
    let approval = Approval {
        run: "r1\u{9b}".into(),
        gate: "approve".into(),
        plan_hash: HASH.into(),
        decision: Decision::Approve,
        comment: Some("ok\u{7f}\u{85}\u{2029}\u{feff}".into()),
    };
    let text = approval.render();
    assert_eq!(Approval::parse(&text), Ok(approval), "{text}");
}

#[test]
fn folding_an_event_with_the_largest_sequence_number_does_not_overflow() {
    let text = "{\"seq\":18446744073709551615,\"ts\":\"t\",\"type\":\"run.started\"}\n";
    let events = stella_engine::event::read_ndjson(text).unwrap();
    assert_eq!(stella_engine::state::fold(&events).next_seq, u64::MAX);
}

#[test]
fn folding_a_step_started_again_after_the_largest_attempt_does_not_overflow() {
    let text = "{\"seq\":0,\"ts\":\"t\",\"type\":\"step.started\",\"step\":\"a\",\"data\":{\"attempt\":4294967295}}\n\
                {\"seq\":1,\"ts\":\"t\",\"type\":\"step.started\",\"step\":\"a\"}\n";
    let events = stella_engine::event::read_ndjson(text).unwrap();
    assert_eq!(
        stella_engine::state::fold(&events).step("a").unwrap().attempts,
        u32::MAX
    );
}
