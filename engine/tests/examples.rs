//! Every example pack validates and plans with its example inputs, and its canonical plan
//! matches the golden file (rewrite with `STELLA_BLESS=1 cargo test` after a deliberate change).

use stella_engine::pack::{PackFiles, PackLimits};
use stella_engine::plan::{self, Plan, PlanConfig, StepKind};
use stella_engine::{inputs, manifest};

use crate::golden_file::assert_golden;
use crate::support::packs_dir;

const EXAMPLES: [&str; 3] = ["sbom-remediation", "parallel-checks", "bundle-ingest"];

fn plan_example(name: &str) -> Plan {
    let dir = packs_dir().join(name);
    let inputs_file = packs_dir().join(format!("../examples/{name}.inputs.yaml"));
    let given = inputs::read_file(&inputs_file).unwrap();
    plan::from_dir(
        &dir,
        &format!("packs/{name}"),
        Some(&given),
        &format!("examples/{name}.inputs.yaml"),
        &PlanConfig::default(),
    )
    .unwrap_or_else(|d| panic!("{name} does not plan:\n{d}"))
}

#[test]
fn every_example_pack_validates() {
    for name in EXAMPLES {
        let files = PackFiles::read_dir(&packs_dir().join(name), name, PackLimits::default()).unwrap();
        manifest::load(&files).unwrap_or_else(|d| panic!("{name}:\n{d}"));
    }
}

#[test]
fn examples_together_use_every_step_kind_and_builtin() {
    let mut kinds = std::collections::BTreeSet::new();
    for name in EXAMPLES {
        for step in plan_example(name).all_steps() {
            kinds.insert(step.kind.name().to_string());
            if let StepKind::Run(run) = &step.kind {
                kinds.insert(run.uses().to_string());
            }
        }
    }
    let want = [
        "run",
        "parallel",
        "map",
        "gate.approval",
        "gate.policy",
        "builtin:shell",
        "builtin:exec",
        "builtin:bundle.ingest",
    ];
    for k in want {
        assert!(kinds.contains(k), "no example uses {k}");
    }
}

#[test]
fn plans_match_their_golden_files() {
    for name in EXAMPLES {
        let plan = plan_example(name);
        let canonical = plan.to_plan_json();
        let value: serde_json::Value = serde_json::from_str(&canonical).unwrap();
        let pretty = serde_json::to_string_pretty(&value).unwrap() + "\n";
        assert_golden(
            &format!("{name}.plan.json"),
            &pretty,
            "cargo test -p stella-engine --test lib plans_match_their_golden_files",
        );
        let (reread, hash) = Plan::from_plan_json(&canonical).unwrap();
        assert_eq!((reread, hash), (plan.clone(), plan.hash()), "plan.json round-trips");
    }
}

#[test]
fn plan_json_with_an_edited_body_is_detected() {
    let canonical = plan_example("parallel-checks").to_plan_json();
    let edited = canonical.replace("payments", "pavments");
    let err = Plan::from_plan_json(&edited).unwrap_err();
    assert!(err.contains("hashes to"), "{err}");
}
