//! Evidence of finished runs: signed attestations that verify offline with Stella and with an
//! independent DSSE implementation, deterministic exports, and no secret anywhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use stella_engine::evidence::{export_archive, read_archive};

use crate::support::{HELLO, Repo, run_path};

fn export(r: &Repo, run: &str) -> (PathBuf, Vec<u8>) {
    let out = r.outside(&format!("{run}-evidence.tar.gz"));
    r.stella(&["runs", "export", run, "-o", out.to_str().unwrap()]).ok();
    let bytes = std::fs::read(&out).unwrap();
    (out, bytes)
}

fn verify_bytes(r: &Repo, bytes: &[u8], extra: &[&str]) -> crate::support::Stella {
    let path = r.outside("candidate.tar.gz");
    std::fs::write(&path, bytes).unwrap();
    let mut args = vec!["evidence", "verify", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    r.stella(&args)
}

fn finished(pack: &str, inputs: &str) -> Repo {
    let r = Repo::new();
    r.pack("p", pack).request("r1", "p", inputs);
    r.daemon_once().ok();
    r
}

#[test]
fn a_succeeded_run_has_evidence_that_verifies_and_exports_identically() {
    let r = finished(HELLO, "{}\n");
    assert_eq!(r.state("r1"), "succeeded");
    let (_, first) = export(&r, "r1");
    let (_, second) = export(&r, "r1");
    assert_eq!(first, second, "two exports of the same run are byte-identical");
    let out = verify_bytes(&r, &first, &[]).ok();
    assert!(out.stdout().contains("evidence verified"), "{}", out.stdout());
    assert!(
        out.stdout()
            .contains("subject artifacts/greet/greeting matches its sha256"),
        "{}",
        out.stdout()
    );
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn failed_and_cancelled_runs_have_evidence_too() {
    let failing = HELLO.replace("echo said=yes >> $STELLA_OUTPUT", "exit 7");
    let r = finished(&failing, "{}\n");
    assert_eq!(r.state("r1"), "failed");
    let (_, bytes) = export(&r, "r1");
    verify_bytes(&r, &bytes, &[]).ok();

    let gated = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: g, version: 1.0.0 }\nspec:\n  approvals: [{ id: ok, grants: [Packs.Approve] }]\n  steps:\n    - { id: wait, gate: { approval: { id: ok } } }\n";
    let r = finished(gated, "{}\n");
    assert_eq!(r.state("r1"), "waiting");
    r.stella(&["runs", "cancel", "r1"]).ok();
    r.commit_all("cancel");
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "cancelled");
    let (_, bytes) = export(&r, "r1");
    verify_bytes(&r, &bytes, &[]).ok();
}

#[test]
fn changing_any_file_of_an_export_fails_verification() {
    let r = finished(HELLO, "who: ada\n");
    let (_, bytes) = export(&r, "r1");
    let files = read_archive(&bytes, 1 << 30).unwrap();
    // The allowed_signers file is the auditor's trust anchor, not evidence (see the_wrong_key_…).
    for path in files.keys().filter(|p| *p != ".stella/allowed_signers") {
        let mut changed: BTreeMap<String, Vec<u8>> = files.clone();
        let content = changed.get_mut(path).unwrap();
        let i = content.len() / 2;
        content[i] = if content[i] == b'A' { b'B' } else { b'A' };
        let out = verify_bytes(&r, &export_archive(&changed).unwrap(), &[]);
        assert_eq!(
            out.code(),
            Some(1),
            "changing {path} must fail verification:\n{}",
            out.stdout()
        );
        assert!(out.stderr().contains("error[ERR_EVIDENCE_INVALID]"), "{}", out.stderr());
    }
}

#[test]
fn the_wrong_key_fails_verification() {
    let r = finished(HELLO, "{}\n");
    let (_, bytes) = export(&r, "r1");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("other");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let signers = dir.path().join("signers");
    std::fs::write(
        &signers,
        format!("runner@stella namespaces=\"git,stella-evidence\" {public}"),
    )
    .unwrap();
    let out = verify_bytes(&r, &bytes, &["--allowed-signers", signers.to_str().unwrap()]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr().contains("signed by a key allowed_signers trusts"),
        "{}",
        out.stderr()
    );
}

#[test]
fn no_secret_value_reaches_the_ledger_or_an_export() {
    let secret = "s3cr3t-T0ken/value";
    let pack = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: s, version: 1.0.0 }\nspec:\n  secrets: [{ name: token, scope: registry }]\n  steps:\n    - id: use\n      outputs: { out: out.txt }\n      run: { uses: builtin:shell, with: { script: \"echo using $STELLA_SECRET_TOKEN; echo t=$STELLA_SECRET_TOKEN >> $STELLA_OUTPUT; echo done > out.txt\" } }\n";
    let r = Repo::new();
    r.pack("s", pack).request("r1", "s", "{}\n");
    let secrets = r.outside("secrets.yaml");
    std::fs::write(&secrets, format!("token: \"{secret}\"\n")).unwrap();
    r.stella(&[
        "daemon",
        "--once",
        "--repo",
        ".",
        "--secrets",
        secrets.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(r.state("r1"), "succeeded");
    let grep = r.git_try(&["grep", "-F", "-e", secret, "HEAD"]);
    assert!(
        grep.stdout.is_empty(),
        "the secret is in the ledger: {}",
        String::from_utf8_lossy(&grep.stdout)
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let (_, bytes) = export(&r, "r1");
    for (path, content) in read_archive(&bytes, 1 << 30).unwrap() {
        let text = String::from_utf8_lossy(&content);
        assert!(
            !text.contains(secret) && !text.contains(&b64),
            "{path} holds the secret"
        );
    }
    let journal = std::fs::read_to_string(r.journal("r1")).unwrap();
    assert!(!journal.contains(secret));
    let att = r
        .at_head(&format!("{}/evidence/attestation.dsse.json", run_path("r1")))
        .unwrap();
    let env: serde_json::Value = serde_json::from_str(&att).unwrap();
    let statement = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&statement).unwrap();
    assert_eq!(
        statement["predicate"]["secrets"][0],
        serde_json::json!({ "name": "token", "scope": "registry", "source": "file" })
    );
}

/// How to prepare the Python the DSSE check runs (what `.ci/run` does).
const PREPARE_PYTHON: &str = "python3 -m venv target/ci-venv && target/ci-venv/bin/pip install securesystemslib cryptography && export STELLA_PYTHON=\"$PWD/target/ci-venv/bin/python\"";

/// The Python with securesystemslib that `STELLA_PYTHON` names. The tests install nothing:
/// without it they fail saying how to prepare it.
pub(crate) fn python() -> PathBuf {
    let Some(py) = std::env::var_os("STELLA_PYTHON") else {
        panic!(
            "STELLA_PYTHON is not set: the attestation is checked with securesystemslib from a Python you prepare once, at the workspace root:\n  {PREPARE_PYTHON}\n(`bash test.sh` does this itself)"
        );
    };
    let py = PathBuf::from(py);
    let has = Command::new(&py)
        .args(["-c", "import securesystemslib, cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has,
        "STELLA_PYTHON={} cannot import securesystemslib and cryptography; prepare it at the workspace root with:\n  {PREPARE_PYTHON}",
        py.display()
    );
    py
}

/// securesystemslib verifies the attestation `att` of run `run` with the runner key of `r`.
pub(crate) fn dsse_verifies(r: &Repo, att: &Path, run: &str) {
    let signers = std::fs::read_to_string(r.path().join(".stella/allowed_signers")).unwrap();
    let line = signers.lines().find(|l| l.starts_with("runner@stella")).unwrap();
    let stdout = securesystemslib_verifies("dsse_check.py", att, line);
    assert!(stdout.contains(&format!("verified {run}")), "{stdout}");
}

/// `tests/<script>` (securesystemslib) verifies the DSSE envelope in `file` with the Ed25519
/// key of the public key line `public` (`[principal …] ssh-ed25519 AAAA…`); its stdout.
pub(crate) fn securesystemslib_verifies(script: &str, file: &Path, public: &str) -> String {
    let blob = public.split_whitespace().find(|w| w.starts_with("AAAA")).unwrap();
    let wire = base64::engine::general_purpose::STANDARD.decode(blob).unwrap();
    let env: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(script))
        .arg(file)
        .arg(hex::encode(&wire[wire.len() - 32..]))
        .arg(env["signatures"][0]["keyid"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "securesystemslib refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn securesystemslib_verifies_the_attestation() {
    let r = finished(HELLO, "{}\n");
    let att = r
        .path()
        .join(format!("{}/evidence/attestation.dsse.json", run_path("r1")));
    let signers = std::fs::read_to_string(r.path().join(".stella/allowed_signers")).unwrap();
    let line = signers.lines().find(|l| l.starts_with("runner@stella")).unwrap();
    let blob = line.split_whitespace().find(|w| w.starts_with("AAAA")).unwrap();
    let wire = base64::engine::general_purpose::STANDARD.decode(blob).unwrap();
    let public_hex = hex::encode(&wire[wire.len() - 32..]);
    let env: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&att).unwrap()).unwrap();
    let keyid = env["signatures"][0]["keyid"].as_str().unwrap().to_string();
    assert!(keyid.starts_with("SHA256:"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dsse_check.py");
    let out = Command::new(python())
        .arg(script)
        .arg(&att)
        .arg(&public_hex)
        .arg(&keyid)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "securesystemslib refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified r1"));
    // And refuses a tampered payload.
    let mut env = env;
    env["payload"] = serde_json::json!(base64::engine::general_purpose::STANDARD.encode(b"{\"_type\":\"forged\"}"));
    let forged = r.outside("forged.json");
    std::fs::write(&forged, env.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dsse_check.py");
    let out = Command::new(python())
        .arg(script)
        .arg(&forged)
        .arg(&public_hex)
        .arg(&keyid)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a forged payload must not verify");
}

#[test]
fn an_edited_log_with_a_recomputed_manifest_still_fails() {
    let r = finished(HELLO, "{}\n");
    let (_, bytes) = export(&r, "r1");
    let mut files = read_archive(&bytes, 1 << 30).unwrap();
    let (segment, events) = files
        .iter()
        .find(|(p, b)| {
            p.starts_with(&format!("{}/events/", run_path("r1"))) && String::from_utf8_lossy(b).contains("hello world")
        })
        .map(|(p, b)| (p.clone(), String::from_utf8(b.clone()).unwrap()))
        .expect("a segment holds the log line");
    files.insert(
        segment.clone(),
        events.replace("hello world", "hello forged").into_bytes(),
    );
    let manifest_path = format!("{}/evidence/manifest.json", run_path("r1"));
    let mut manifest: serde_json::Value = serde_json::from_slice(&files[&manifest_path]).unwrap();
    for f in manifest["files"].as_array_mut().unwrap() {
        let p = f["path"].as_str().unwrap().to_string();
        f["sha256"] = serde_json::json!(stella_engine::pack::sha256_hex(&files[&p]));
    }
    files.insert(manifest_path, serde_json::to_vec_pretty(&manifest).unwrap());
    let out = verify_bytes(&r, &export_archive(&files).unwrap(), &[]);
    assert_eq!(out.code(), Some(1), "{}", out.stdout());
    assert!(
        out.stderr()
            .contains(&format!("{segment} matches the signed attestation")),
        "{}",
        out.stderr()
    );
}
