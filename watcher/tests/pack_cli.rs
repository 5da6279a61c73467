//! `stella pack validate` and `stella pack plan` as a user sees them: messages, JSON, exit codes.

use crate::support::{Scratch, stella};

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn example_packs_validate_and_plan() {
    for pack in ["sbom-remediation", "parallel-checks", "bundle-ingest"] {
        let out = stella()
            .current_dir(repo_root())
            .args(["pack", "validate", pack])
            .output()
            .unwrap();
        assert!(out.status.success(), "{pack}: {}", String::from_utf8_lossy(&out.stderr));
        let inputs = format!("examples/{pack}.inputs.yaml");
        let out = stella()
            .current_dir(repo_root())
            .args(["pack", "plan", pack, "--inputs", &inputs, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{pack}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["planHash"].as_str().unwrap().starts_with("sha256:"));
        assert!(v["steps"].as_u64().unwrap() >= 2);
        assert!(v["approvals"].is_array() && v["secrets"].is_array() && v["plan"]["steps"].is_array());
    }
}

#[test]
fn plan_summary_names_hash_approvals_secrets_and_steps() {
    let out = stella()
        .current_dir(repo_root())
        .args([
            "pack",
            "plan",
            "packs/sbom-remediation",
            "--inputs",
            "examples/sbom-remediation.inputs.yaml",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "planHash:  sha256:",
        "security-review: 1 of [Packs.Approve], expires 4h",
        "registryToken (scope registry), required",
        "steps:     7",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
}

#[test]
fn invalid_pack_prints_each_problem_once_and_exits_2() {
    let s = Scratch::new().pack("    - id: a\n      run: { uses: builtin:shel, with: { script: ls } }\n    - id: a\n      gate: { approval: { id: reveiw } }\n");
    let out = stella()
        .current_dir(s.path())
        .args(["pack", "validate", "pack"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error[ERR_PACK_INVALID]: pack/pack.yaml:15:20: spec.steps[0].run.uses: unknown step runner"),
        "{err}"
    );
    assert!(err.contains("did you mean `builtin:shell`?"), "{err}");
    assert!(
        err.contains("pack/pack.yaml:17:31: spec.steps[1].gate.approval.id"),
        "{err}"
    );
    assert!(err.contains("did you mean `review`?"), "{err}");
    assert!(err.contains("2 problems found"), "{err}");
    assert_eq!(err.matches("error[").count(), 2, "each problem once: {err}");
}

#[test]
fn bad_inputs_exit_2_with_the_input_file_line() {
    let s = Scratch::new()
        .pack("    - { id: a, run: { uses: builtin:exec, with: { argv: [true] } } }\n")
        .inputs("name: x\nflag: notbool\n");
    let out = stella()
        .current_dir(s.path())
        .args(["pack", "plan", "pack", "--inputs", "inputs.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error[ERR_PACK_INPUT_INVALID]: inputs.yaml:2:7: inputs.flag: expected boolean, found string"),
        "{err}"
    );
}

#[test]
fn a_missing_pack_is_a_clear_error() {
    let out = stella()
        .args(["pack", "validate", "/nonexistent/pack"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pack here"));
}

#[test]
fn the_readme_quotes_the_current_plan_hash() {
    let out = stella()
        .current_dir(repo_root())
        .args([
            "pack",
            "plan",
            "sbom-remediation",
            "--inputs",
            "examples/sbom-remediation.inputs.yaml",
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hash = v["planHash"].as_str().unwrap();
    for doc in ["README.md", "docs/plan.md"] {
        let text = std::fs::read_to_string(repo_root().join(doc)).unwrap();
        assert!(
            text.contains(hash),
            "{doc} quotes a stale planHash; the current one is {hash}"
        );
    }
}

#[test]
fn usage_errors_carry_err_usage_and_exit_2() {
    let out = stella().args(["pack", "plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error[ERR_USAGE]: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn json_output_reports_failures_as_json_too() {
    let s = Scratch::new()
        .pack("    - { id: a, run: { uses: builtin:exec, with: { argv: [true] } } }\n")
        .inputs("name: 5\nbogus: 1\n");
    let out = stella()
        .current_dir(s.path())
        .args(["pack", "plan", "pack", "--inputs", "inputs.yaml", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "ERR_PACK_INPUT_INVALID");
    let problems = v["error"]["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["field"] == "inputs.bogus" && p["line"] == 2),
        "{v}"
    );
    assert!(
        problems.iter().any(|p| p["field"] == "inputs.name" && p["line"] == 1),
        "{v}"
    );
}
