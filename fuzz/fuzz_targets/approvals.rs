//! Approval files and `.stella/approvers.yaml`: `Approval::parse`, `Approvers::parse`, and
//! `approvals::evaluate` of a gate whose one approval file is the input, signed by the fixed
//! key that allowed_signers trusts for `alice`, who holds the gate's grant.
//! Invariants: nothing panics; a parsed approval rendered again parses to the same approval;
//! the gate judges exactly one file, and an approval for this run, gate and plan counts
//! (or rejects) while anything else leaves the gate waiting.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stella_engine::allowed_signers::AllowedSigners;
use stella_engine::approvals::{self, Approval, ApprovalFile, Approvers, Decision, GateInput, Outcome};
use stella_engine::plan::PlanApproval;

const RUN: &str = "r1";
const GATE: &str = "approve";
const PLAN: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(approvers) = Approvers::parse(approvals::APPROVERS_PATH, &text) {
        for g in approvers.grant_names() {
            for p in approvers.holders(std::slice::from_ref(&g)) {
                assert!(approvers.holds_any(&p, &[g.clone()]));
            }
        }
    }
    let parsed = Approval::parse(&text);
    if let Ok(a) = &parsed {
        let back = Approval::parse(&a.render())
            .unwrap_or_else(|e| panic!("a rendered approval does not parse: {e}\n{}", a.render()));
        assert_eq!(&back, a);
    }

    let signers = AllowedSigners::parse("allowed_signers", &stella_fuzz::signers_line("alice")).unwrap();
    let approvers = Approvers::parse("approvers.yaml", "grants:\n  Packs.Approve: [alice]\n").unwrap();
    let rule = PlanApproval {
        id: GATE.into(),
        grants: vec!["Packs.Approve".into()],
        required_count: 1,
        expires_after_ms: Some(3_600_000),
        reason: None,
        allow_self_approval: false,
    };
    let files = [ApprovalFile::new(
        "alice",
        &format!("approvals/{RUN}/{GATE}/alice.yaml"),
        data.to_vec(),
        Some(stella_fuzz::sign(stella_fuzz::NAMESPACE, data).into_bytes()),
    )];
    let input = GateInput {
        run: RUN,
        gate: GATE,
        plan_hash: PLAN,
        rule: &rule,
        signers: &signers,
        approvers: &approvers,
        files: &files,
        waiting_since: Some(stella_fuzz::at()),
        now: stella_fuzz::at(),
        requested_by: None,
    };
    let (outcome, verdicts) = approvals::evaluate(&input);
    assert_eq!(verdicts.len(), 1);
    let fits = |a: &Approval| a.run == RUN && a.gate == GATE && a.plan_hash == PLAN;
    match (std::str::from_utf8(data).ok().map(Approval::parse), &outcome) {
        (Some(Ok(a)), Outcome::Approved { .. }) => assert!(fits(&a) && a.decision == Decision::Approve),
        (Some(Ok(a)), Outcome::Rejected { .. }) => assert!(fits(&a) && a.decision == Decision::Reject),
        (Some(Ok(a)), Outcome::Waiting { counted: 0 }) => assert!(!fits(&a), "{verdicts:?}"),
        (_, Outcome::Waiting { counted: 0 }) => {}
        (a, o) => panic!("unexpected outcome {o:?} for {a:?}"),
    }
});
