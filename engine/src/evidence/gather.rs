//! A finished run's evidence gathered from the ledger: every file an auditor needs (the run's
//! ledger files, its request, its pack as planned, the approvals the evidence covers, the
//! trusted signers), read as they stood when the evidence was written, and packed into the
//! deterministic archive. The one function behind `stella runs export` and the HTTP export,
//! so both give the same bytes. Reads through a `Ledger` only; never writes.

use std::collections::BTreeMap;

use gix::ObjectId;

use super::{ATTESTATION, Error, MANIFEST, export_archive};
use crate::ledger::Ledger;

/// A run's evidence archive.
pub struct Exported {
    pub bytes: Vec<u8>,
    /// How many files it holds.
    pub files: usize,
}

/// The archive `stella runs export RUN` writes, for run `run` on the branch at `tip`.
pub fn export_run(ledger: &Ledger, tip: ObjectId, run: &str) -> Result<Exported, Error> {
    let files = gather(ledger, tip, run)?;
    let bytes = export_archive(&files).map_err(Error::Archive)?;
    Ok(Exported {
        bytes,
        files: files.len(),
    })
}

/// Every file an auditor needs for `run`, by repository path.
pub fn gather(ledger: &Ledger, tip: ObjectId, run: &str) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let dir = ledger
        .locate(tip, run)?
        .ok_or_else(|| Error::RunNotFound(run.to_string()))?;
    let attestation = dir.file(ATTESTATION);
    if ledger.read(tip, &attestation)?.is_none() {
        return Err(Error::NoEvidence(run.to_string()));
    }
    // Everything is read as it stood when the evidence was written: approval files changed or
    // re-signed after the run ended are not what it covered.
    let at = written_at(ledger, tip, &attestation)?;
    let run_dir = dir.dir();
    let mut files = BTreeMap::new();
    for (rel, bytes, _) in ledger.files_under(at, &run_dir)? {
        files.insert(format!("{run_dir}/{rel}"), bytes);
    }
    let prefix = format!("{run_dir}/");
    let events_bytes = crate::ledger::events::concat(
        files
            .iter()
            .filter_map(|(p, b)| p.strip_prefix(&prefix).map(|rel| (rel, b.as_slice()))),
    )
    .unwrap_or_default();
    let events = crate::event::read_ndjson_for_state(&String::from_utf8_lossy(&events_bytes)).map_err(Error::Events)?;
    let planned = events
        .iter()
        .find(|e| e.kind == "run.planned")
        .ok_or_else(|| Error::Events("the run has no run.planned event".into()))?;
    let commit_of = |k: &str| {
        planned
            .get(k)
            .and_then(|v| v.as_str())
            .and_then(|h| ObjectId::from_hex(h.as_bytes()).ok())
    };
    let request_commit = commit_of("requestCommit").unwrap_or(tip);
    let trust_commit = commit_of("trustCommit").unwrap_or(tip);
    let pack = planned
        .get("pack")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    for (rel, bytes, _) in ledger.files_under(request_commit, &pack)? {
        files.insert(format!("{pack}/{rel}"), bytes);
    }
    // The approval files the evidence covers (files committed after the run ended are not its).
    let manifest: serde_json::Value = files
        .get(&dir.file(MANIFEST))
        .and_then(|m| serde_json::from_slice(m).ok())
        .unwrap_or_default();
    let covered: Vec<String> = manifest["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect();
    let approvals = dir.approvals();
    for (rel, bytes, _) in ledger.files_under(at, &approvals)? {
        let path = format!("{approvals}/{rel}");
        if covered.contains(&path) {
            files.insert(path, bytes);
        }
    }
    if let Some(signers) = ledger.read(trust_commit, ".stella/allowed_signers")? {
        files.insert(".stella/allowed_signers".into(), signers);
    }
    Ok(files)
}

/// The oldest commit on the first-parent line from `tip` whose `path` is what it is at `tip`:
/// where the file got its present content.
fn written_at(ledger: &Ledger, tip: ObjectId, path: &str) -> Result<ObjectId, crate::ledger::Error> {
    let now = ledger.read(tip, path)?;
    let mut at = tip;
    while let Some(&parent) = ledger.parents(at)?.first() {
        if ledger.read(parent, path)? != now {
            break;
        }
        at = parent;
    }
    Ok(at)
}
