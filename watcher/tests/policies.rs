//! Rego policy gates: checked at `pack validate`, listed by `pack plan`, decided by the daemon
//! from the input document, their decisions (deny messages, digests) in `runs show` and in the
//! signed attestation; a policy that loops or builds a huge value fails its gate and the
//! runner goes on; and the same decisions as an independent Rego implementation (regopy).

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use serde_json::{Value as Json, json};

use crate::support::{Repo, run_path};

/// A pack: `build` sets an output, `policy` asks `policies/release.rego`, `ship` runs after.
fn pack(gate: &str) -> String {
    format!(
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: {{ name: rel, version: 1.0.0 }}\nspec:\n  inputs: [{{ name: env, type: string, default: dev }}]\n  steps:\n    - id: build\n      run: {{ uses: builtin:shell, with: {{ script: \"echo version=1.2.3 >> $STELLA_OUTPUT\" }} }}\n    - id: policy\n      gate: {{ policy: {gate} }}\n    - id: ship\n      run: {{ uses: builtin:exec, with: {{ argv: [echo, shipped] }} }}\n"
    )
}

const RELEASE: &str = r#"package stella

default allow := false

allow if {
    count(deny) == 0
    input.steps.build.state == "succeeded"
    input.steps.build.outputs.version == "1.2.3"
    input.pack.name == "rel"
    input.run.id != ""
}

deny contains msg if {
    input.inputs.env == "prod"
    msg := sprintf("no release to %s from pack %s", [input.inputs.env, input.pack.name])
}

deny contains msg if {
    input.steps.ship.state != "pending"
    msg := "the ship step must not have run yet"
}
"#;

fn repo_with(policy: &str, gate: &str) -> Repo {
    let r = Repo::new();
    r.write("packs/rel/policies/release.rego", policy);
    r.pack("rel", &pack(gate));
    r
}

#[test]
fn a_policy_syntax_error_fails_pack_validate_at_its_file_and_line() {
    let r = repo_with(
        "package stella\n\nallow if {\n    input.x ==\n}\n",
        "{ rego: policies/release.rego }",
    );
    let out = r.stella(&["pack", "validate", "packs/rel"]);
    assert_eq!(out.code(), Some(2), "{}", out.stderr());
    assert!(out.stderr().contains("error[ERR_PACK_INVALID]"), "{}", out.stderr());
    assert!(out.stderr().contains("policies/release.rego:5:"), "{}", out.stderr());
    // A path out of the pack, a missing file and a query that is no rule path: all at once.
    let r = repo_with(RELEASE, "{ rego: ../../.stella/x.rego }");
    let out = r.stella(&["pack", "validate", "packs/rel"]);
    assert_eq!(out.code(), Some(2));
    assert!(out.stderr().contains("leaves the pack directory"), "{}", out.stderr());
    let r = repo_with(RELEASE, "{ rego: policies/none.rego, query: \"input.x\" }");
    let out = r.stella(&["pack", "validate", "packs/rel"]);
    assert!(out.stderr().contains("not found in the pack"), "{}", out.stderr());
    assert!(out.stderr().contains("is not a rule path"), "{}", out.stderr());
    let r = repo_with(RELEASE, "{ rego: policies/release.rego, expr: \"true\" }");
    assert_eq!(r.stella(&["pack", "validate", "packs/rel"]).code(), Some(2));
    // A policy is a pack file like any other: no symlink out of the pack.
    let r = repo_with(RELEASE, "{ rego: policies/release.rego }");
    let outside = r.outside("outside.rego");
    std::fs::write(&outside, RELEASE).unwrap();
    let link = r.path().join("packs/rel/policies/release.rego");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let out = r.stella(&["pack", "validate", "packs/rel"]);
    assert_eq!(out.code(), Some(2));
    assert!(out.stderr().contains("symlinks are not allowed"), "{}", out.stderr());
}

#[test]
fn pack_plan_lists_policy_gates_and_their_files() {
    let r = repo_with(RELEASE, "{ rego: policies/release.rego }");
    let out = r.stella(&["pack", "plan", "packs/rel"]).ok();
    let sha = stella_engine::pack::sha256_hex(RELEASE.as_bytes());
    assert!(
        out.stdout().contains(&format!(
            "policy: rego policies/release.rego (sha256 {sha}), data.stella.allow, halt"
        )),
        "{}",
        out.stdout()
    );
    let out = r.stella(&["pack", "plan", "packs/rel", "--json"]).ok();
    let v: Json = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(v["policies"][0]["file"], "policies/release.rego");
    assert_eq!(v["policies"][0]["query"], "data.stella.allow");
    // The policy is a pack file: changing it changes the plan's hash.
    let before = v["planHash"].clone();
    r.write("packs/rel/policies/release.rego", &format!("{RELEASE}\n# changed\n"));
    let out = r.stella(&["pack", "plan", "packs/rel", "--json"]).ok();
    let v: Json = serde_json::from_str(&out.stdout()).unwrap();
    assert_ne!(v["planHash"], before);
}

#[test]
fn a_policy_reads_the_input_document_and_allows() {
    let r = repo_with(RELEASE, "{ rego: policies/release.rego }");
    r.request("r1", "rel", "env: dev\n");
    r.daemon_once().ok();
    let show = r.show("r1");
    assert_eq!(show["state"], "succeeded", "{show:#}");
    let p = &show["policies"][0];
    assert_eq!(p["step"], "policy");
    assert_eq!(p["allow"], true);
    assert_eq!(p["result"], true);
    assert_eq!(p["deny"], json!([]));
    assert_eq!(p["sha256"], stella_engine::pack::sha256_hex(RELEASE.as_bytes()));
    assert!(p["inputSha256"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn a_policy_that_denies_shows_its_messages_in_runs_show_and_the_attestation() {
    let r = repo_with(RELEASE, "{ rego: policies/release.rego, failAction: halt }");
    r.request("r1", "rel", "env: prod\n");
    r.daemon_once().ok();
    let show = r.show("r1");
    assert_eq!(show["state"], "failed");
    assert_eq!(show["code"], "ERR_POLICY_FAILED");
    assert_eq!(show["policies"][0]["deny"], json!(["no release to prod from pack rel"]));
    assert_eq!(show["policies"][0]["result"], false);
    let text = r.stella(&["runs", "show", "r1"]).ok().stdout();
    assert!(
        text.contains("policy policy (policies/release.rego data.stella.allow): denied"),
        "{text}"
    );
    assert!(text.contains("deny: no release to prod from pack rel"), "{text}");
    assert!(text.contains("[ERR_POLICY_FAILED]"), "{text}");
    let steps: Vec<&str> = show["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(!steps.contains(&"ship"), "a halting policy stops the run: {steps:?}");

    // The signed attestation carries the decision; it verifies with Stella and securesystemslib.
    let att = r
        .path()
        .join(format!("{}/evidence/attestation.dsse.json", run_path("r1")));
    let env: Json = serde_json::from_str(&std::fs::read_to_string(&att).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    let statement: Json = serde_json::from_slice(&payload).unwrap();
    let policies = &statement["predicate"]["policies"];
    assert_eq!(policies[0]["deny"], json!(["no release to prod from pack rel"]));
    assert_eq!(policies[0]["query"], "data.stella.allow");
    assert_eq!(policies[0]["inputSha256"], show["policies"][0]["inputSha256"]);
    assert_eq!(
        policies[0]["sha256"],
        stella_engine::pack::sha256_hex(RELEASE.as_bytes())
    );
    let out = r.outside("r1.tar.gz");
    r.stella(&["runs", "export", "r1", "-o", out.to_str().unwrap()]).ok();
    r.stella(&["evidence", "verify", out.to_str().unwrap()]).ok();
    crate::evidence::dsse_verifies(&r, &att, "r1");
}

#[test]
fn a_denying_policy_with_continue_lets_the_run_go_on() {
    let r = repo_with(RELEASE, "{ rego: policies/release.rego, failAction: continue }");
    r.request("r1", "rel", "env: prod\n");
    r.daemon_once().ok();
    let show = r.show("r1");
    assert_eq!(show["state"], "succeeded", "{show:#}");
    assert_eq!(show["policies"][0]["allow"], false);
}

#[test]
fn a_policy_that_loops_or_builds_a_huge_value_fails_its_gate_and_the_runner_goes_on() {
    let huge = "package stella\nallow if count(numbers.range(1, 200000000)) > 0\n";
    let slow = "package stella\nallow if {\n  n := count([1 | some i in numbers.range(1, 20000); some j in numbers.range(1, 20000)])\n  n > 0\n}\n";
    let r = Repo::new();
    for (name, policy) in [("huge", huge), ("slow", slow), ("fine", RELEASE)] {
        r.write(&format!("packs/{name}/policies/release.rego"), policy);
        r.write(
            &format!("packs/{name}/pack.yaml"),
            &pack("{ rego: policies/release.rego }").replace("name: rel", &format!("name: {name}")),
        );
    }
    r.write(
        "packs/fine/policies/release.rego",
        &RELEASE.replace("\"rel\"", "\"fine\""),
    );
    r.commit_all("packs");
    r.request("r1", "huge", "{}\n")
        .request("r2", "slow", "{}\n")
        .request("r3", "fine", "{}\n");
    let started = std::time::Instant::now();
    // One daemon process decides all three: the bad policies cost their evaluator, not it.
    r.daemon_once().ok();
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let huge = r.show("r1");
    assert_eq!(huge["code"], "ERR_POLICY_FAILED", "{huge:#}");
    let why = huge["policies"][0]["error"].as_str().unwrap();
    assert!(why.starts_with("evaluation exceeded its memory limit"), "{why}");
    let slow = r.show("r2");
    assert_eq!(slow["code"], "ERR_POLICY_FAILED", "{slow:#}");
    let why = slow["policies"][0]["error"].as_str().unwrap();
    assert!(why.starts_with("evaluation exceeded its time limit"), "{why}");
    assert_eq!(r.state("r3"), "succeeded");
    r.stella(&["ledger", "verify"]).ok();
}

/// Policies and inputs decided by both Stella (regorus) and regopy (rego-cpp).
fn cases() -> Vec<(&'static str, Json)> {
    vec![
        ("package stella\nallow := true\n", json!({})),
        ("package stella\nallow := false\n", json!({})),
        ("package stella\nallow if input.x > 1\n", json!({"x": 2})),
        ("package stella\nallow if input.x > 1\n", json!({"x": 0})),
        (
            "package stella\ndefault allow := false\nallow if input.x > 1\n",
            json!({"x": 0}),
        ),
        ("package stella\nallow := input.name\n", json!({"name": "ada"})),
        (
            RELEASE,
            json!({"inputs": {"env": "prod"}, "pack": {"name": "rel"}, "steps": {"build": {"state": "succeeded", "outputs": {"version": "1.2.3"}}, "ship": {"state": "pending"}}, "run": {"id": "r1"}}),
        ),
        (
            RELEASE,
            json!({"inputs": {"env": "dev"}, "pack": {"name": "rel"}, "steps": {"build": {"state": "succeeded", "outputs": {"version": "1.2.3"}}, "ship": {"state": "pending"}}, "run": {"id": "r1"}}),
        ),
        (
            RELEASE,
            json!({"inputs": {"env": "dev"}, "pack": {"name": "rel"}, "steps": {"build": {"state": "failed", "outputs": {}}, "ship": {"state": "succeeded"}}, "run": {"id": "r1"}}),
        ),
        (
            "package stella\nallow if {\n  every s in input.steps { s.state == \"succeeded\" }\n}\n",
            json!({"steps": {"a": {"state": "succeeded"}, "b": {"state": "succeeded"}}}),
        ),
        (
            "package stella\nallow if {\n  every s in input.steps { s.state == \"succeeded\" }\n}\n",
            json!({"steps": {"a": {"state": "succeeded"}, "b": {"state": "failed"}}}),
        ),
        (
            "package stella\ndefault allow := false\nallow if {\n  some a in input.approvals\n  a.approved\n}\n",
            json!({"approvals": {"ok": {"approved": true, "by": ["ada"]}}}),
        ),
        (
            "package stella\ndefault allow := false\nallow if count(input.approvals.ok.by) >= 2\n",
            json!({"approvals": {"ok": {"approved": true, "by": ["ada"]}}}),
        ),
        (
            "package stella\nallow if startswith(input.requestedBy, \"ops-\")\ndeny contains \"not from ops\" if not startswith(input.requestedBy, \"ops-\")\n",
            json!({"requestedBy": "dev-bob"}),
        ),
        (
            "package stella\nallow if startswith(input.requestedBy, \"ops-\")\n",
            json!({"requestedBy": "ops-ada"}),
        ),
        (
            "package stella\ndeny contains msg if { some name, s in input.steps; s.state == \"failed\"; msg := sprintf(\"step %s failed\", [name]) }\nallow if count(deny) == 0\n",
            json!({"steps": {"a": {"state": "failed"}, "b": {"state": "failed"}, "c": {"state": "succeeded"}}}),
        ),
        (
            "package stella\nallow if regex.match(`^v[0-9]+\\.[0-9]+\\.[0-9]+$`, input.inputs.tag)\n",
            json!({"inputs": {"tag": "v1.20.3"}}),
        ),
        (
            "package stella\nallow if regex.match(`^v[0-9]+\\.[0-9]+\\.[0-9]+$`, input.inputs.tag)\n",
            json!({"inputs": {"tag": "1.20"}}),
        ),
        (
            "package stella\nallowed := {\"dev\", \"stage\"}\nallow if input.inputs.env in allowed\ndeny contains sprintf(\"env %v is not allowed\", [input.inputs.env]) if not input.inputs.env in allowed\n",
            json!({"inputs": {"env": "prod"}}),
        ),
        (
            "package stella\nallow := count([x | some x in input.xs; x > 2]) == 2\n",
            json!({"xs": [1, 2, 3, 4]}),
        ),
        (
            "package stella\nallow := {k | input.o[k]} == {\"a\", \"c\"}\n",
            json!({"o": {"a": true, "b": false, "c": true}}),
        ),
        (
            "package stella\nallow := object.get(input, [\"a\", \"b\"], \"none\")\n",
            json!({"a": {}}),
        ),
        (
            "package stella\nallow := sum(input.xs) / count(input.xs)\n",
            json!({"xs": [1, 2, 3, 4]}),
        ),
        (
            "package stella\nallow := upper(concat(\"-\", input.xs))\n",
            json!({"xs": ["a", "b"]}),
        ),
        (
            "package stella\nf(x) := x * 2\nallow := f(input.n) == 8\n",
            json!({"n": 4}),
        ),
        (
            "package stella\nallow if input.x == 1\nelse := \"maybe\" if input.x == 2\n",
            json!({"x": 2}),
        ),
        (
            "package stella\nallow := {\"n\": count(input.xs), \"first\": input.xs[0]}\n",
            json!({"xs": ["a", "b", "c"]}),
        ),
        (
            "package stella\ndeny contains m if { some m in input.problems }\nallow if not deny[_]\n",
            json!({"problems": ["one", "two"]}),
        ),
        (
            "package stella\ndeny contains m if { some m in input.problems }\ndefault allow := false\nallow if count(deny) == 0\n",
            json!({"problems": []}),
        ),
        (
            "package stella\nallow := trim_space(input.s) == \"ok\"\n",
            json!({"s": "  ok \n"}),
        ),
        (
            "package stella\nallow := split(input.s, \",\")[1] == \"b\"\n",
            json!({"s": "a,b,c"}),
        ),
        (
            "package stella\nallow := base64.decode(input.b) == \"stella\"\n",
            json!({"b": "c3RlbGxh"}),
        ),
    ]
}

#[test]
fn regorus_and_regopy_decide_the_same_policies_alike() {
    let Some(py) = std::env::var_os("STELLA_PYTHON").map(std::path::PathBuf::from) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI needs STELLA_PYTHON with regopy"
        );
        println!("skipped: STELLA_PYTHON is not set (bash test.sh prepares it with regopy)");
        return;
    };
    let has = Command::new(&py)
        .args(["-c", "import regopy"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI needs regopy in {} (pip install regopy)",
            py.display()
        );
        println!("skipped: {} cannot import regopy (pip install regopy)", py.display());
        return;
    }
    let cases = cases();
    assert!(cases.len() >= 20);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.json");
    let doc: Vec<Json> = cases
        .iter()
        .map(|(policy, input)| json!({ "policy": policy, "input": input, "query": "data.stella.allow" }))
        .collect();
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regopy_check.py");
    let out = Command::new(&py).arg(script).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "regopy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // rego-cpp prints its own diagnostics on stdout too: the answers are the marked line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ANSWERS "))
        .expect("regopy's answers");
    let theirs: Vec<Json> = serde_json::from_str(line).unwrap();
    assert_eq!(theirs.len(), cases.len());
    let (mut allowed, mut denied) = (0, 0);
    for (i, ((policy, input), their)) in cases.iter().zip(&theirs).enumerate() {
        let files = stella_engine::pack::PackFiles::from_entries(
            "p",
            vec![("p.rego".to_string(), policy.as_bytes().to_vec(), false)],
        )
        .unwrap();
        let p = stella_engine::rego::check(&files, "p.rego").unwrap_or_else(|e| panic!("case {i}: {e:?}\n{policy}"));
        let ours = stella_engine::rego::evaluate(&p, "data.stella.allow", input, std::time::Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("case {i}: {e}\n{policy}"));
        assert!(
            their.get("error").is_none(),
            "case {i}: regopy: {}\n{policy}",
            their["error"]
        );
        let mut deny = ours.deny.clone();
        deny.sort();
        assert_eq!(
            (json!(ours.result), json!(deny)),
            (their["result"].clone(), their["deny"].clone()),
            "case {i} decided differently:\n{policy}\ninput {input}"
        );
        if ours.allow { allowed += 1 } else { denied += 1 }
    }
    assert!(
        allowed >= 5 && denied >= 5,
        "the cases both allow and deny: {allowed} / {denied}"
    );
}

#[test]
fn the_run_page_and_the_api_show_the_decision_with_its_messages_escaped() {
    let hostile = "package stella\ndeny contains \"<b>bold</b> & \\\"q\\\"\" if true\nallow if count(deny) == 0\n";
    let r = repo_with(hostile, "{ rego: policies/release.rego }");
    r.request("r1", "rel", "{}\n");
    r.daemon_once().ok();
    let mut cmd = crate::support::stella();
    cmd.current_dir(r.path())
        .args(["serve", "--repo", ".", "--http", "127.0.0.1:0"]);
    let s = crate::support::Daemon::start(cmd);
    let base = crate::support::http::base_of(&s);
    let api = crate::support::http::get(&base, "/api/v1/runs/r1").json();
    assert_eq!(api["policies"][0]["deny"], json!(["<b>bold</b> & \"q\""]));
    assert_eq!(api["policies"][0]["file"], "policies/release.rego");
    let page = crate::support::http::get(&base, "/runs/r1").text();
    assert!(page.contains("<section id=\"policies\""), "{page}");
    assert!(
        page.contains("&lt;b&gt;bold&lt;&#x2f;b&gt;") || page.contains("&lt;b&gt;bold&lt;/b&gt;"),
        "{page}"
    );
    assert!(!page.contains("<b>bold</b>"));
    assert!(page.contains(&stella_engine::pack::sha256_hex(hostile.as_bytes())));
}

#[test]
fn a_policy_reads_who_approved_the_run() {
    let r = Repo::new();
    let keys = tempfile::tempdir().unwrap();
    let mut signers = std::fs::read_to_string(r.path().join(".stella/allowed_signers")).unwrap();
    let public = crate::support::keygen(keys.path(), "alice");
    signers.push_str(&format!("alice namespaces=\"stella-approval\" {public}\n"));
    r.write(".stella/allowed_signers", &signers);
    r.write(".stella/approvers.yaml", "grants:\n  Packs.Approve: [alice]\n");
    let policy = "package stella\n\ndefault allow := false\n\nallow if {\n    \"alice\" in input.approvals.ok.by\n    input.requestedBy == null\n    input.steps.review.state == \"succeeded\"\n}\n";
    r.write("packs/ap/policies/release.rego", policy);
    r.pack(
        "ap",
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: ap, version: 1.0.0 }\nspec:\n  approvals: [{ id: ok, grants: [Packs.Approve] }]\n  steps:\n    - { id: review, gate: { approval: { id: ok } } }\n    - { id: policy, gate: { policy: { rego: policies/release.rego } } }\n",
    );
    r.request("r1", "ap", "{}\n");
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "waiting");
    let key = keys.path().join("alice");
    r.stella(&["approve", "r1", "--gate", "ok", "--key", key.to_str().unwrap()])
        .ok();
    r.commit_all("alice approves");
    r.daemon_once().ok();
    let show = r.show("r1");
    assert_eq!(show["state"], "succeeded", "{show:#}");
    assert_eq!(show["policies"][0]["allow"], true);
}
