//! Offline verification of an exported run: the DSSE signature (by a key allowed_signers
//! trusts for namespace `stella-evidence`), every digest of the statement and the manifest,
//! the plan hash recomputed from the exported pack and request, and the approvals' signatures.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value as Json;

use super::dsse::Envelope;
use super::export::read_archive;
use super::{ATTESTATION, Error, MANIFEST, PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE};
use crate::allowed_signers::AllowedSigners;

/// One check and its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub ok: bool,
    pub what: String,
}

fn sha256(b: &[u8]) -> String {
    crate::pack::sha256_hex(b)
}

/// Verifies an archive; `signers` overrides the archive's own `.stella/allowed_signers`.
/// Every check is reported; the archive is good when all are ok.
pub fn verify_archive(bytes: &[u8], signers: Option<&str>) -> Result<Vec<Check>, Error> {
    let files = read_archive(bytes, 1 << 30)?;
    let mut checks = Vec::new();
    let mut check = |ok: bool, what: String| checks.push(Check { ok, what });
    let runs: Vec<&String> = files.keys().filter(|p| p.ends_with(ATTESTATION)).collect();
    let [att_path] = runs.as_slice() else {
        return Err(Error::Attestations(runs.len()));
    };
    // The run's place follows from the attestation's path, in either layout.
    let (run_dir, run_id, approvals_dir) = match crate::layout::classify(att_path) {
        Some((crate::layout::Area::Runs, dir, _)) => (dir.dir(), dir.id.clone(), dir.approvals()),
        _ => {
            let run_dir = att_path.trim_end_matches(ATTESTATION).trim_end_matches('/').to_string();
            let run_id = run_dir.trim_start_matches("runs/").to_string();
            let approvals_dir = format!("approvals/{run_id}");
            (run_dir, run_id, approvals_dir)
        }
    };
    let signers_text = match signers {
        Some(t) => t.to_string(),
        None => String::from_utf8_lossy(files.get(".stella/allowed_signers").ok_or(Error::NoSigners)?).into_owned(),
    };
    let signers = AllowedSigners::parse(".stella/allowed_signers", &signers_text).map_err(Error::Signers)?;

    // 1. The envelope and its signature.
    let env: Envelope = serde_json::from_slice(&files[*att_path]).map_err(|source| Error::NotAnEnvelope {
        path: att_path.to_string(),
        source,
    })?;
    check(
        env.payload_type == PAYLOAD_TYPE,
        format!("payloadType is {PAYLOAD_TYPE}"),
    );
    let mut signed = false;
    for s in &env.signatures {
        let entry = signers
            .entries()
            .iter()
            .find(|e| crate::keys::fingerprint_of(&e.key) == s.keyid && e.allows_namespace("stella-evidence"));
        let Some(entry) = entry else { continue };
        let Some(pk) = entry.key.key_data().ed25519() else {
            continue;
        };
        let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&pk.0) else {
            continue;
        };
        if env.verify(&s.keyid, &vk).is_ok() {
            signed = true;
        }
    }
    check(
        signed,
        "the attestation is signed by a key allowed_signers trusts for stella-evidence".into(),
    );
    let body = env.body()?;
    let stmt: Json = serde_json::from_slice(&body).map_err(Error::PayloadNotJson)?;
    check(
        stmt["_type"] == STATEMENT_TYPE && stmt["predicateType"] == PREDICATE_TYPE,
        "the payload is a Stella pack-run in-toto Statement v1".into(),
    );
    let pred = &stmt["predicate"];
    check(
        pred["runId"] == run_id.as_str(),
        format!("the statement is about run {run_id}"),
    );

    // 2. Subjects: every artifact, by digest.
    for s in stmt["subject"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or_default();
        let want = s["digest"]["sha256"].as_str().unwrap_or_default();
        let got = files.get(&format!("{run_dir}/{name}")).map(|b| sha256(b));
        check(
            got.as_deref() == Some(want),
            format!("subject {name} matches its sha256"),
        );
    }

    // 3. The signed file list: every covered file, by digest, and nothing covered left out.
    let signed_files: BTreeMap<String, String> = pred["files"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(p, d)| Some((p.clone(), d.as_str()?.to_string())))
        .collect();
    check(!signed_files.is_empty(), "the attestation lists the run's files".into());
    for (path, want) in &signed_files {
        let got = files.get(path).map(|b| sha256(b));
        check(
            got.as_deref() == Some(want.as_str()),
            format!("{path} matches the signed attestation"),
        );
    }
    for path in files.keys() {
        let covered = path.starts_with(&format!("{run_dir}/")) || path.starts_with(&format!("{approvals_dir}/"));
        let evidence = path.starts_with(&format!("{run_dir}/evidence/"));
        if covered && !evidence && !signed_files.contains_key(path) {
            check(
                false,
                format!("{path} is in the archive but not in the signed attestation"),
            );
        }
    }

    // 4. The manifest: every file of the run and its approvals, by digest, and nothing unlisted.
    let manifest: Json = files
        .get(&format!("{run_dir}/{MANIFEST}"))
        .and_then(|m| serde_json::from_slice(m).ok())
        .unwrap_or_default();
    let listed: BTreeMap<String, String> = manifest["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| Some((f["path"].as_str()?.to_string(), f["sha256"].as_str()?.to_string())))
        .collect();
    check(
        !listed.is_empty(),
        format!("{run_dir}/{MANIFEST} lists the run's files"),
    );
    for (path, want) in &listed {
        let got = files.get(path).map(|b| sha256(b));
        check(
            got.as_deref() == Some(want.as_str()),
            format!("{path} matches the manifest"),
        );
    }
    let manifest_path = format!("{run_dir}/{MANIFEST}");
    for path in files.keys() {
        let covered = path.starts_with(&format!("{run_dir}/")) || path.starts_with(&format!("{approvals_dir}/"));
        if covered && *path != manifest_path && !listed.contains_key(path) {
            check(false, format!("{path} is in the archive but not in the manifest"));
        }
    }

    // 5. The plan: self-consistent, and what the exported pack and request plan to.
    let plan_hash = pred["planHash"].as_str().unwrap_or_default();
    match files
        .get(&format!("{run_dir}/plan.json"))
        .map(|b| crate::plan::Plan::from_plan_json(&String::from_utf8_lossy(b)))
    {
        Some(Ok((_, h))) => check(
            h == plan_hash,
            "plan.json matches its hash and the attestation's planHash".into(),
        ),
        Some(Err(e)) => check(false, format!("plan.json: {e}")),
        None => check(false, "plan.json is missing".into()),
    }
    let pack_path = pred["pack"]["path"].as_str().unwrap_or_default().to_string();
    let pack_files: Vec<(String, Vec<u8>)> = files
        .iter()
        .filter_map(|(p, b)| {
            p.strip_prefix(&format!("{pack_path}/"))
                .map(|rel| (rel.to_string(), b.clone()))
        })
        .collect();
    let request_text = files
        .get(&format!("{run_dir}/request.yaml"))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let recomputed = (|| -> Result<String, String> {
        let pack = crate::pack::PackFiles::from_entries(
            &pack_path,
            pack_files.into_iter().map(|(p, b)| {
                let exec = is_executable(&files, &p);
                (p, b, exec)
            }),
        )
        .map_err(|d| d.to_string())?;
        let request = crate::request::Request::parse("request.yaml", &request_text).map_err(|d| d.to_string())?;
        let config = crate::plan::PlanConfig {
            sealed: pred["sealed"].as_bool().unwrap_or(false),
            allow: pred["network"]["allow"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str().map(str::to_string))
                .collect(),
        };
        Ok(
            crate::plan::from_files(&pack, request.inputs.as_ref(), "request.yaml", &config)
                .map_err(|d| d.to_string())?
                .hash(),
        )
    })();
    match recomputed {
        Ok(h) => check(
            h == plan_hash,
            format!("the exported pack and request plan to {plan_hash}"),
        ),
        Err(e) => check(false, format!("cannot re-plan the exported pack and request: {e}")),
    }

    // 6. The approvals that counted: present, signed by their principal for stella-approval.
    for a in pred["approvals"].as_array().into_iter().flatten() {
        let (Some(path), Some(principal)) = (a["path"].as_str(), a["principal"].as_str()) else {
            continue;
        };
        let (yaml, sig) = (files.get(path), files.get(&format!("{path}.sig")));
        let ok = match (yaml, sig) {
            (Some(y), Some(s)) => {
                sha256(s) == a["signatureSha256"].as_str().unwrap_or_default()
                    && signers
                        .verify(
                            principal,
                            crate::approvals::NAMESPACE,
                            y,
                            &String::from_utf8_lossy(s),
                            std::time::SystemTime::now(),
                        )
                        .is_ok()
            }
            _ => false,
        };
        check(
            ok,
            format!("approval by {principal} ({path}) is present and its signature verifies"),
        );
    }
    Ok(checks)
}

/// Exported files carry no modes; the plan records which pack files are executable.
fn is_executable(files: &BTreeMap<String, Vec<u8>>, rel: &str) -> bool {
    files
        .iter()
        .find(|(p, _)| p.ends_with("/plan.json"))
        .and_then(|(_, b)| serde_json::from_slice::<Json>(b).ok())
        .and_then(|plan| {
            plan["pack"]["files"]
                .as_array()?
                .iter()
                .find(|f| f["path"] == rel)
                .map(|f| f["executable"].as_bool().unwrap_or(false))
        })
        .unwrap_or(false)
}
