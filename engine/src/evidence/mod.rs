//! Evidence (DESIGN section 8): the in-toto Statement of a finished run, signed as a DSSE
//! envelope with the runner key, and the manifest of every file of the run. Built from the
//! run's events, plan, artifacts and the approvals that counted; pure apart from the inputs given.

pub mod dsse;

mod export;
mod gather;
mod verify;

pub use export::{export_archive, read_archive};
pub use gather::{Exported, export_run, gather};
pub use verify::{Check, verify_archive};

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use crate::code::Code;
use crate::event::Event;
use crate::layout::RunDir;
use crate::plan::Plan;
use crate::state::fold;

/// Why an exported run cannot be read or verified (a failed check is a `Check`, not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a tar.gz archive: {0}")]
    NotAnArchive(#[source] std::io::Error),
    #[error("damaged archive: {0}")]
    Damaged(#[source] std::io::Error),
    #[error("bad path in archive: {0}")]
    BadPath(#[source] std::io::Error),
    #[error("{0}: only regular files are allowed in an evidence archive")]
    NotAFile(String),
    #[error("{0}: path escapes the archive")]
    Escapes(String),
    #[error("archive holds more than {0} bytes")]
    TooLarge(u64),
    #[error("{path}: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: appears twice")]
    Twice(String),
    #[error("expected exactly one {ATTESTATION} in the archive, found {0}")]
    Attestations(usize),
    #[error("the archive has no .stella/allowed_signers; pass --allowed-signers")]
    NoSigners,
    #[error("{0}")]
    Signers(crate::diag::Diagnostics),
    #[error("{path}: not a DSSE envelope: {source}")]
    NotAnEnvelope {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("payload is not base64: {0}")]
    PayloadNotBase64(#[source] base64::DecodeError),
    #[error("the payload is not JSON: {0}")]
    PayloadNotJson(#[source] serde_json::Error),
    #[error("no signature by {0}")]
    NoSignature(String),
    #[error("signature is not base64: {0}")]
    SignatureNotBase64(#[source] base64::DecodeError),
    #[error("not an Ed25519 signature: {0}")]
    NotEd25519(#[source] ed25519_dalek::SignatureError),
    #[error("the signature does not verify")]
    DoesNotVerify,
    /// Gathering a run for export: no run of that id on the branch.
    #[error("no run {0} on the branch")]
    RunNotFound(String),
    #[error("run {0} has no evidence yet (evidence is written when a run finishes)")]
    NoEvidence(String),
    #[error("the run's events: {0}")]
    Events(String),
    #[error("{0}")]
    Ledger(#[from] crate::ledger::Error),
    #[error("cannot build the archive: {0}")]
    Archive(#[source] std::io::Error),
}

impl Error {
    /// Every failure to read or verify an archive is `ERR_EVIDENCE_INVALID` (a broken
    /// allowed_signers included: the archive cannot be verified with it); gathering a run
    /// has the codes of what went wrong.
    pub fn code(&self) -> Code {
        match self {
            Error::RunNotFound(_) => Code::RunNotFound,
            Error::NoEvidence(_) => Code::Usage,
            Error::Events(_) => Code::LedgerTampered,
            Error::Ledger(e) => e.code(),
            Error::Archive(_) => Code::Io,
            _ => Code::EvidenceInvalid,
        }
    }
}

pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://stella.dev/attestations/pack-run/v1";
pub const ATTESTATION: &str = "evidence/attestation.dsse.json";
pub const MANIFEST: &str = "evidence/manifest.json";

/// What the evidence of one run is made from.
pub struct RunRecord<'a> {
    pub run_id: &'a str,
    /// Where the run's files are: the paths the manifest and the attestation name.
    pub dir: &'a RunDir,
    pub pack_path: &'a str,
    pub plan: &'a Plan,
    pub events: &'a [Event],
    /// Files of the run's ledger directory, relative to it (plan.json, events.ndjson, artifacts/...).
    pub run_files: &'a BTreeMap<String, Vec<u8>>,
    pub request: &'a [u8],
    /// The cancel request, when the run was cancelled by one.
    pub cancel: Option<&'a [u8]>,
    /// Approval files the run used (repository paths), with their signatures.
    pub approvals: &'a BTreeMap<String, Vec<u8>>,
    pub sealed: bool,
    pub network_allow: &'a [String],
    /// The sandbox the steps ran in (`Sandbox::describe`).
    pub sandbox: serde_json::Value,
    /// Where each secret came from (`file` or `env`); never a value.
    pub secret_sources: &'a BTreeMap<String, String>,
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Every file the evidence covers, by repository path: the run's ledger files (not the
/// evidence itself), its request (and cancel request), and the approval files of its gates.
fn covered_files(r: &RunRecord) -> BTreeMap<String, String> {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for (p, b) in r.run_files {
        if !p.starts_with("evidence/") {
            files.insert(r.dir.file(p), sha256(b));
        }
    }
    files.insert(r.dir.file("request.yaml"), sha256(r.request));
    if let Some(c) = r.cancel {
        files.insert(r.dir.file("cancel.yaml"), sha256(c));
    }
    for (p, b) in r.approvals {
        files.insert(p.clone(), sha256(b));
    }
    files
}

/// The in-toto Statement of a finished run.
pub fn statement(r: &RunRecord) -> Json {
    let st = fold(r.events);
    let subject: Vec<Json> = r
        .run_files
        .iter()
        .filter(|(p, _)| p.starts_with("artifacts/"))
        .map(|(p, b)| json!({ "name": p, "digest": { "sha256": sha256(b) } }))
        .collect();
    let inputs: BTreeMap<&String, String> = r
        .plan
        .inputs
        .iter()
        .map(|(k, v)| (k, sha256(crate::canonical::to_string(v).as_bytes())))
        .collect();
    let secrets: Vec<Json> = r
        .plan
        .secrets
        .iter()
        .map(|s| json!({ "name": s.name, "scope": s.scope, "source": r.secret_sources.get(&s.name).cloned().unwrap_or_else(|| "unset".into()) }))
        .collect();
    let steps: Vec<Json> = st
        .steps
        .iter()
        .map(|s| {
            let mut step = json!({ "id": s.id, "status": s.status, "attempts": s.attempts, "started": s.started, "finished": s.finished, "code": s.code });
            if let Some(from) = &s.reused_from {
                step["reusedFrom"] = json!(from);
            }
            step
        })
        .collect();
    let approvals: Vec<Json> = r
        .events
        .iter()
        .filter(|e| e.kind == "gate.approved")
        .flat_map(|e| {
            let gate = e.get("gate").cloned().unwrap_or(json!(e.step));
            let local = e.get("local").cloned();
            e.get("approvals")
                .and_then(|a| a.as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .map(move |a| json!({ "gate": gate, "principal": a["principal"], "signatureSha256": a["signatureSha256"], "path": a["path"] }))
                .chain(local.map(|_| json!({ "gate": e.get("gate").cloned().unwrap_or(json!(e.step)), "principal": "local", "note": "approved with --approve-local" })))
        })
        .collect();
    let mut statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "runId": r.run_id,
            "pack": { "name": r.plan.pack.name, "version": r.plan.pack.version, "path": r.pack_path },
            "planHash": r.plan.hash(),
            "request": { "path": r.dir.file("request.yaml"), "sha256": sha256(r.request) },
            "inputs": inputs,
            "secrets": secrets,
            "sealed": r.sealed,
            "network": { "allow": r.network_allow },
            "sandbox": r.sandbox,
            "state": st.state.as_str(),
            "code": st.code,
            "steps": steps,
            "approvals": approvals,
            "startedAt": st.started,
            "completedAt": st.finished,
            // Signed digests of every covered file, so nothing of the run can change unnoticed.
            "files": covered_files(r),
        },
    });
    // A retry names the run it retries; a resume also the digest of that run's attestation;
    // a request added by a trusted signed commit, its signer.
    // Rego policy gates: each decision with the policy's and the input's digests.
    let policies = crate::state::policies(r.events);
    if !policies.is_empty() {
        statement["predicate"]["policies"] = json!(policies);
    }
    let planned = r.events.iter().find(|e| e.kind == "run.planned");
    for field in ["retryOf", "resumeOf", "requestedBy"] {
        if let Some(of) = planned.and_then(|e| e.get(field)) {
            statement["predicate"][field] = of.clone();
        }
    }
    // An imported pack: who published it, and the bundle it came in.
    if let Some(p) = &r.plan.pack.provenance {
        statement["predicate"]["pack"]["provenance"] = serde_json::to_value(p).expect("JSON");
    }
    statement
}

/// The signed attestation (DSSE envelope as pretty JSON) and the manifest, as ledger files.
pub fn build(r: &RunRecord, key: &crate::keys::SshKey) -> (Vec<u8>, Vec<u8>) {
    let body = crate::canonical::to_string(&statement(r)).into_bytes();
    let env = dsse::sign(PAYLOAD_TYPE, &body, &key.signing_key(), &key.fingerprint());
    let attestation = serde_json::to_vec_pretty(&env).expect("JSON");
    let mut files = covered_files(r);
    files.insert(r.dir.file(ATTESTATION), sha256(&attestation));
    let manifest = json!({ "run": r.run_id, "files": files.iter().map(|(p, d)| json!({ "path": p, "sha256": d })).collect::<Vec<_>>() });
    (attestation, serde_json::to_vec_pretty(&manifest).expect("JSON"))
}
