//! `stella runs export RUN -o FILE.tar.gz` and `stella evidence verify FILE.tar.gz|RUN`: a run's
//! evidence packed deterministically, and checked offline with nothing but the archive (and,
//! optionally, an allowed_signers file the auditor trusts).

use std::collections::BTreeMap;
use std::path::Path;

use stella_engine::Code;
use stella_engine::evidence;

use crate::failure::{Failure, Outcome};
use crate::repo;

/// Every file an auditor needs for `run`, by repository path.
fn gather(root: &Path, run: &str) -> Result<BTreeMap<String, Vec<u8>>, Failure> {
    if !stella_engine::run_id::is_valid(run) {
        return Err(Failure::one(Code::Usage, format!("`{run}` is not a valid run id")));
    }
    let config = repo::config_at_head(root)?;
    let ledger = repo::open_ledger(root, &config)?;
    let tip = ledger
        .tip()?
        .ok_or_else(|| Failure::one(Code::Usage, "the branch has no commits"))?;
    // Everything is read as it stood when the evidence was written: approval files changed or
    // re-signed after the run ended are not what it covered.
    let dir = ledger.run_dir(tip, run)?;
    let at = written_at(&ledger, tip, &dir.file(evidence::ATTESTATION))?;
    let mut files = BTreeMap::new();
    for (rel, bytes, _) in ledger.files_under(at, &dir.dir())? {
        files.insert(dir.file(&rel), bytes);
    }
    if !files.contains_key(&dir.file(evidence::ATTESTATION)) {
        return Err(Failure::one(
            Code::Usage,
            format!("run {run} has no evidence yet (evidence is written when a run finishes)"),
        ));
    }
    let prefix = format!("{}/", dir.dir());
    let events_bytes = stella_engine::ledger::events::concat(
        files
            .iter()
            .filter_map(|(p, b)| p.strip_prefix(&prefix).map(|rel| (rel, b.as_slice()))),
    )
    .unwrap_or_default();
    let events = stella_engine::event::read_ndjson_for_state(&String::from_utf8_lossy(&events_bytes))
        .map_err(|e| Failure::one(Code::LedgerTampered, e))?;
    let planned = events
        .iter()
        .find(|e| e.kind == "run.planned")
        .ok_or_else(|| Failure::one(Code::LedgerTampered, "the run has no run.planned event"))?;
    let commit_of = |k: &str| {
        planned
            .get(k)
            .and_then(|v| v.as_str())
            .and_then(|h| gix::ObjectId::from_hex(h.as_bytes()).ok())
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
        .get(&dir.file(evidence::MANIFEST))
        .and_then(|m| serde_json::from_slice(m).ok())
        .unwrap_or_default();
    let covered: Vec<String> = manifest["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect();
    for (rel, bytes, _) in ledger.files_under(at, &dir.approvals())? {
        let path = format!("{}/{rel}", dir.approvals());
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
fn written_at(
    ledger: &stella_engine::ledger::Ledger,
    tip: gix::ObjectId,
    path: &str,
) -> Result<gix::ObjectId, stella_engine::ledger::Error> {
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

pub fn export(repo_dir: &Path, run: &str, out: &Path) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let files = gather(&root, run)?;
    let bytes = evidence::export_archive(&files)
        .map_err(|e| Failure::one(Code::Io, format!("cannot build the archive: {e}")))?;
    super::init::write_replace(out, "")?;
    std::fs::write(out, &bytes).map_err(|e| Failure::io(out, e))?;
    println!("{}", out.display());
    eprintln!(
        "exported run {run}: {} files, {} bytes, sha256 {}",
        files.len(),
        bytes.len(),
        stella_engine::pack::sha256_hex(&bytes)
    );
    Ok(Outcome::Done)
}

pub fn verify(target: &str, signers: Option<&Path>, repo_dir: &Path, as_json: bool) -> Result<Outcome, Failure> {
    let path = Path::new(target);
    let bytes = if path.is_file() {
        std::fs::read(path).map_err(|e| Failure::io(path, e))?
    } else {
        let root = repo::find_root(repo_dir)?;
        evidence::export_archive(&gather(&root, target)?).map_err(|e| Failure::one(Code::Io, e.to_string()))?
    };
    let signers_text = signers
        .map(|p| std::fs::read_to_string(p).map_err(|e| Failure::io(p, e)))
        .transpose()?;
    let checks = evidence::verify_archive(&bytes, signers_text.as_deref())
        .map_err(|e| Failure::one(Code::EvidenceInvalid, format!("{target}: {e}")))?;
    let failed: Vec<&evidence::Check> = checks.iter().filter(|c| !c.ok).collect();
    if as_json {
        println!(
            "{}",
            serde_json::json!({ "ok": failed.is_empty(), "checks": checks, "code": (!failed.is_empty()).then_some(Code::EvidenceInvalid.as_str()) })
        );
    } else {
        for c in &checks {
            println!("{} {}", if c.ok { "ok  " } else { "FAIL" }, c.what);
        }
    }
    if failed.is_empty() {
        if !as_json {
            println!("evidence verified: {} checks passed", checks.len());
        }
        return Ok(Outcome::Done);
    }
    Ok(Outcome::Failed {
        code: Code::EvidenceInvalid,
        problems: failed.iter().map(|c| format!("{target}: {}", c.what)).collect(),
        summary: None,
    })
}
