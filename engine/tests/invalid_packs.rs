//! Invalid packs: each case asserts the error code, the field path and the line, so a user
//! is pointed at the exact place to fix. Lines 1-10 are the header of `with_steps`; the
//! spliced steps start on line 11.

use stella_engine::{Code, Diagnostic};

use crate::support::{TestPack, with_steps};

/// Validates `manifest` and returns the one diagnostic whose field is `field`.
fn problem(manifest: &str, field: &str) -> Diagnostic {
    let diags = TestPack::new(manifest).validate().expect_err("pack should be invalid");
    diags
        .iter()
        .find(|d| d.field == field)
        .cloned()
        .unwrap_or_else(|| panic!("no problem at field `{field}`; got:\n{diags}"))
}

macro_rules! invalid {
    ($name:ident, $manifest:expr, field: $field:expr, line: $line:expr, contains: $text:expr) => {
        #[test]
        fn $name() {
            let d = problem(&$manifest, $field);
            assert_eq!(d.code, Code::PackInvalid, "{d}");
            assert_eq!(d.line, $line, "wrong line: {d}");
            assert_eq!(d.file, "packs/t/pack.yaml");
            let shown = d.to_string();
            assert!(shown.contains($text), "`{shown}` should mention `{}`", $text);
        }
    };
}

invalid!(unknown_field_gets_a_suggestion,
    with_steps("    - id: checks\n      parallel:\n        maxParalel: 2\n        steps:\n          - { id: a, run: { uses: builtin:exec, with: { argv: [true] } } }\n"),
    field: "spec.steps[0].parallel.maxParalel", line: 13, contains: "did you mean `maxParallel`?");

invalid!(unknown_step_kind_is_named,
    with_steps("    - id: a\n      shell: { script: ls }\n"),
    field: "spec.steps[0].shell", line: 12, contains: "unknown field `shell`");

invalid!(step_without_a_kind,
    with_steps("    - id: a\n      timeout: 1m\n"),
    field: "spec.steps[0]", line: 11, contains: "step has no kind");

invalid!(step_with_two_kinds,
    with_steps("    - id: a\n      run: { uses: builtin:exec, with: { argv: [true] } }\n      gate: { policy: { expr: \"{{ true }}\" } }\n"),
    field: "spec.steps[0]", line: 13, contains: "more than one kind");

invalid!(missing_step_id,
    with_steps("    - run: { uses: builtin:exec, with: { argv: [true] } }\n"),
    field: "spec.steps[0].id", line: 11, contains: "missing required field `id`");

invalid!(missing_script,
    with_steps("    - id: a\n      run: { uses: builtin:shell, with: {} }\n"),
    field: "spec.steps[0].run.with.script", line: 12, contains: "missing required field `script`");

invalid!(duplicate_top_level_ids,
    with_steps("    - { id: a, run: { uses: builtin:exec, with: { argv: [true] } } }\n    - { id: a, run: { uses: builtin:exec, with: { argv: [true] } } }\n"),
    field: "spec.steps[1].id", line: 12, contains: "duplicate step id `a` (first used at line 11)");

invalid!(duplicate_ids_inside_parallel,
    with_steps("    - id: group\n      parallel:\n        steps:\n          - { id: x, run: { uses: builtin:exec, with: { argv: [true] } } }\n          - { id: x, run: { uses: builtin:exec, with: { argv: [true] } } }\n"),
    field: "spec.steps[0].parallel.steps[1].id", line: 15, contains: "duplicate step id `x`");

invalid!(duplicate_id_inside_map,
    with_steps("    - { id: fix, run: { uses: builtin:exec, with: { argv: [true] } } }\n    - id: all\n      map:\n        items: [a]\n        step: { id: fix, run: { uses: builtin:exec, with: { argv: [true] } } }\n"),
    field: "spec.steps[1].map.step.id", line: 15, contains: "duplicate step id `fix`");

invalid!(gate_names_an_undeclared_approval,
    with_steps("    - id: g\n      gate: { approval: { id: reveiw } }\n"),
    field: "spec.steps[0].gate.approval.id", line: 12, contains: "did you mean `review`?");

invalid!(bad_step_timeout,
    with_steps("    - id: a\n      timeout: 10x\n      run: { uses: builtin:exec, with: { argv: [true] } }\n"),
    field: "spec.steps[0].timeout", line: 12, contains: "invalid duration");

invalid!(bad_approval_expiry,
    "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: r, grants: [a], expiresAfter: PT4X }\n  steps:\n    - { id: g, gate: { approval: { id: r } } }\n",
    field: "spec.approvals[0].expiresAfter", line: 6, contains: "ISO 8601");

invalid!(bad_allow_self_approval,
    "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: r, grants: [a], allowSelfApproval: \"yes\" }\n  steps:\n    - { id: g, gate: { approval: { id: r } } }\n",
    field: "spec.approvals[0].allowSelfApproval", line: 6, contains: "true or false");

invalid!(misspelt_allow_self_approval,
    "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: r, grants: [a], allowSelfApprovals: true }\n  steps:\n    - { id: g, gate: { approval: { id: r } } }\n",
    field: "spec.approvals[0].allowSelfApprovals", line: 6, contains: "unknown field");

invalid!(bad_backoff,
    with_steps("    - id: a\n      retries: { maxAttempts: 2, backoff: soon }\n      run: { uses: builtin:exec, with: { argv: [true] } }\n"),
    field: "spec.steps[0].retries.backoff", line: 12, contains: "invalid duration");

invalid!(template_syntax_error,
    with_steps("    - id: a\n      run: { uses: builtin:shell, with: { script: \"echo {{ inputs.image \" } }\n"),
    field: "spec.steps[0].run.with.script", line: 12, contains: "template syntax error");

invalid!(unknown_input_reference,
    with_steps("    - id: a\n      run: { uses: builtin:shell, with: { script: \"echo {{ inputs.imagee }}\" } }\n"),
    field: "spec.steps[0].run.with.script", line: 12, contains: "unknown input `imagee` (did you mean `image`?)");

invalid!(outputs_of_a_later_step,
    with_steps("    - id: a\n      run: { uses: builtin:shell, with: { script: \"echo {{ steps.b.outputs.x }}\" } }\n    - { id: b, run: { uses: builtin:exec, with: { argv: [true] } } }\n"),
    field: "spec.steps[0].run.with.script", line: 12, contains: "step `b` does not run before this step");

invalid!(outputs_of_a_parallel_sibling,
    with_steps("    - id: g\n      parallel:\n        steps:\n          - { id: a, run: { uses: builtin:exec, with: { argv: [true] } } }\n          - { id: b, run: { uses: builtin:shell, with: { script: \"echo {{ steps.a.outputs.x }}\" } } }\n"),
    field: "spec.steps[0].parallel.steps[1].run.with.script", line: 15, contains: "step `a` does not run before");

invalid!(outputs_of_an_unknown_step,
    with_steps("    - id: a\n      when: \"{{ steps.nope.outputs.ok }}\"\n      run: { uses: builtin:exec, with: { argv: [true] } }\n"),
    field: "spec.steps[0].when", line: 12, contains: "unknown step `nope`");

invalid!(map_items_not_a_list,
    with_steps("    - id: m\n      map:\n        items: 5\n        step: { id: f, run: { uses: builtin:exec, with: { argv: [true] } } }\n"),
    field: "spec.steps[0].map.items", line: 13, contains: "map items must be a list");

invalid!(map_items_from_step_outputs,
    with_steps("    - { id: a, run: { uses: builtin:exec, with: { argv: [true] } } }\n    - id: m\n      map:\n        items: \"{{ steps.a.outputs.list }}\"\n        step: { id: f, run: { uses: builtin:exec, with: { argv: [true] } } }\n"),
    field: "spec.steps[1].map.items", line: 14, contains: "not known when the run is planned");

invalid!(item_outside_a_map,
    with_steps("    - id: a\n      run: { uses: builtin:shell, with: { script: \"echo {{ item }}\" } }\n"),
    field: "spec.steps[0].run.with.script", line: 12, contains: "only available inside a map");

invalid!(secrets_in_templates,
    with_steps("    - id: a\n      run: { uses: builtin:shell, with: { script: \"echo {{ secrets.token }}\" } }\n"),
    field: "spec.steps[0].run.with.script", line: 12, contains: "STELLA_SECRET_");

invalid!(schema_path_escapes_the_pack,
    "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nspec:\n  inputs:\n    - { name: a, type: string, schema: ../../../etc/passwd }\n  steps:\n    - { id: s, run: { uses: builtin:exec, with: { argv: [true] } } }\n",
    field: "spec.inputs[0].schema", line: 6, contains: "leaves the pack directory");

invalid!(whole_inputs_schema_missing,
    "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nspec:\n  inputs:\n    schema: schemas/nope.json\n  steps:\n    - { id: s, run: { uses: builtin:exec, with: { argv: [true] } } }\n",
    field: "spec.inputs.schema", line: 6, contains: "not found in the pack");

invalid!(output_path_escapes_the_workspace,
    with_steps("    - id: a\n      outputs: { report: ../../etc/shadow }\n      run: { uses: builtin:exec, with: { argv: [true] } }\n"),
    field: "spec.steps[0].outputs.report", line: 11, contains: "leaves the workspace");

invalid!(unknown_builtin_gets_a_suggestion,
    with_steps("    - id: a\n      run: { uses: builtin:shel, with: { script: ls } }\n"),
    field: "spec.steps[0].run.uses", line: 12, contains: "did you mean `builtin:shell`?");

invalid!(wrong_api_version,
    "apiVersion: stella/v2\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nspec:\n  steps:\n    - { id: s, run: { uses: builtin:exec, with: { argv: [true] } } }\n",
    field: "apiVersion", line: 1, contains: "expected `stella/v1`");

invalid!(unknown_spec_field,
    "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nspec:\n  step:\n    - { id: s, run: { uses: builtin:exec, with: { argv: [true] } } }\n",
    field: "spec.step", line: 5, contains: "did you mean `steps`?");

invalid!(bad_fail_action,
    with_steps("    - id: p\n      gate: { policy: { expr: \"{{ true }}\", failAction: ignore } }\n"),
    field: "spec.steps[0].gate.policy.failAction", line: 12, contains: "halt or continue");

invalid!(reserved_env_name,
    with_steps("    - id: a\n      env: { STELLA_OUTPUT: /tmp/x }\n      run: { uses: builtin:exec, with: { argv: [true] } }\n"),
    field: "spec.steps[0].env.STELLA_OUTPUT", line: 12, contains: "reserved");

invalid!(zero_attempts,
    with_steps("    - id: a\n      retries: { maxAttempts: 0 }\n      run: { uses: builtin:exec, with: { argv: [true] } }\n"),
    field: "spec.steps[0].retries.maxAttempts", line: 12, contains: "out of range");

invalid!(required_count_of_the_wrong_type,
    "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: r, grants: [a], requiredCount: two }\n  steps:\n    - { id: g, gate: { approval: { id: r } } }\n",
    field: "spec.approvals[0].requiredCount", line: 6, contains: "expected a whole number");

invalid!(unknown_input_type,
    "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nspec:\n  inputs:\n    - { name: a, type: strng }\n  steps:\n    - { id: s, run: { uses: builtin:exec, with: { argv: [true] } } }\n",
    field: "spec.inputs[0].type", line: 6, contains: "did you mean `string`?");

invalid!(default_of_the_wrong_type,
    "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nspec:\n  inputs:\n    - { name: n, type: integer, default: many }\n  steps:\n    - { id: s, run: { uses: builtin:exec, with: { argv: [true] } } }\n",
    field: "spec.inputs[0].default", line: 6, contains: "not of type integer");

invalid!(empty_argv,
    with_steps("    - id: a\n      run: { uses: builtin:exec, with: { argv: [] } }\n"),
    field: "spec.steps[0].run.with.argv", line: 12, contains: "at least the program");

invalid!(bundle_checksum_not_hex,
    with_steps("    - id: a\n      run: { uses: builtin:bundle.ingest, with: { path: b.tar, checksumSha256: abc } }\n"),
    field: "spec.steps[0].run.with.checksumSha256", line: 12, contains: "64 hexadecimal");

invalid!(yaml_syntax_error_names_its_line,
    with_steps("    - id: a\n      run: { uses: builtin:exec, with: { argv: [true] }\n    - id: b\n"),
    field: "", line: 13, contains: "invalid YAML");

invalid!(duplicate_yaml_keys,
    with_steps("    - id: a\n      id: b\n      run: { uses: builtin:exec, with: { argv: [true] } }\n"),
    field: "", line: 12, contains: "duplicate");

invalid!(policy_gate_without_expr_or_rego,
    with_steps("    - id: a\n      gate: { policy: { failAction: halt } }\n"),
    field: "spec.steps[0].gate.policy", line: 12, contains: "a policy gate needs `expr` or `rego`");

invalid!(policy_gate_with_expr_and_rego,
    with_steps("    - id: a\n      gate: { policy: { expr: \"{{ true }}\", rego: p.rego } }\n"),
    field: "spec.steps[0].gate.policy", line: 12, contains: "either `expr` or `rego`, not both");

invalid!(policy_query_without_rego,
    with_steps("    - id: a\n      gate: { policy: { expr: \"{{ true }}\", query: data.stella.allow } }\n"),
    field: "spec.steps[0].gate.policy.query", line: 12, contains: "`query` belongs to a `rego` policy");

invalid!(policy_file_missing_from_the_pack,
    with_steps("    - id: a\n      gate: { policy: { rego: policies/none.rego } }\n"),
    field: "spec.steps[0].gate.policy.rego", line: 12, contains: "policy file `policies/none.rego` not found in the pack");

#[test]
fn billion_laughs_is_refused_with_a_clear_error() {
    let mut bomb = String::from(
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..10 {
        bomb.push_str(&format!(
            "x{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 9].join(", ")
        ));
    }
    bomb.push_str("spec: { steps: [] }\n");
    let diags = TestPack::new(&bomb).validate().unwrap_err();
    let d = diags.iter().next().unwrap();
    assert_eq!(d.code, Code::PackInvalid);
    assert!(d.message.contains("safety limits"), "{d}");
    assert!(d.line > 0, "{d}");
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let manifest = with_steps(concat!(
        "    - id: a\n      timeout: forever\n      run: { uses: builtin:exec, with: { argv: [true] } }\n",
        "    - id: a\n      run: { uses: builtin:shell, with: { script: \"{{ inputs.nope }}\" } }\n",
        "    - id: g\n      gate: { approval: { id: missing } }\n",
        "    - id: m\n      map: { items: nope, step: { id: f, run: { uses: builtin:exec, with: { argv: [true] } } } }\n",
    ));
    let diags = TestPack::new(&manifest).validate().unwrap_err();
    let fields: Vec<&str> = diags.iter().map(|d| d.field.as_str()).collect();
    for want in [
        "spec.steps[0].timeout",
        "spec.steps[1].id",
        "spec.steps[1].run.with.script",
        "spec.steps[2].gate.approval.id",
        "spec.steps[3].map.items",
    ] {
        assert!(fields.contains(&want), "missing {want} in {fields:?}");
    }
    let lines: Vec<u64> = diags.iter().map(|d| d.line).collect();
    assert!(
        lines.windows(2).all(|w| w[0] <= w[1]),
        "problems are reported top to bottom: {lines:?}"
    );
}

invalid!(outputs_of_a_map_template_step,
    with_steps("    - id: all\n      map:\n        items: [a]\n        step: { id: fix, run: { uses: builtin:exec, with: { argv: [true] } } }\n    - { id: after, run: { uses: builtin:shell, with: { script: \"echo {{ steps.fix.outputs.x }}\" } } }\n"),
    field: "spec.steps[1].run.with.script", line: 15, contains: "template of map `all`");

invalid!(a_float_where_text_is_expected_must_be_quoted,
    "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.10 }\nspec:\n  steps:\n    - { id: s, run: { uses: builtin:exec, with: { argv: [true] } } }\n",
    field: "metadata.version", line: 3, contains: "quote it");

invalid!(bad_pack_name_points_at_the_name,
    "apiVersion: stella/v1\nkind: TaskPack\nmetadata:\n  version: 1.0.0\n  name: Not_Valid\nspec:\n  steps:\n    - { id: s, run: { uses: builtin:exec, with: { argv: [true] } } }\n",
    field: "metadata.name", line: 5, contains: "not a valid pack name");

#[test]
fn yaml_1_1_booleans_are_plain_strings_in_packs() {
    // `n`, `no`, `on` are strings in YAML 1.2; an input named `n` is an input named `n`.
    let pack = TestPack::new(
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nspec:\n  inputs: [{ name: n, type: string, default: no }]\n  steps:\n    - { id: s, run: { uses: builtin:exec, with: { argv: [echo, \"{{ inputs.n }}\"] } } }\n",
    );
    let plan = pack.plan("").unwrap();
    assert_eq!(plan.inputs["n"], "no");
}
