//! `stella runs export RUN -o FILE.tar.gz` and `stella evidence verify FILE.tar.gz|RUN`: a run's
//! evidence packed deterministically, and checked offline with nothing but the archive (and,
//! optionally, an allowed_signers file the auditor trusts).

use std::path::Path;

use stella_engine::Code;
use stella_engine::evidence;

use crate::failure::{Failure, Outcome};
use crate::repo;

/// The archive `stella runs export` writes for `run` (`evidence::export_run`, the function
/// the HTTP export serves too).
fn archive(root: &Path, run: &str) -> Result<evidence::Exported, Failure> {
    if !stella_engine::run_id::is_valid(run) {
        return Err(Failure::one(Code::Usage, format!("`{run}` is not a valid run id")));
    }
    let config = repo::config_at_head(root)?;
    let ledger = repo::open_ledger(root, &config)?;
    let tip = ledger
        .tip()?
        .ok_or_else(|| Failure::one(Code::RunNotFound, format!("no run {run}: the branch has no commits")))?;
    Ok(evidence::export_run(&ledger, tip, run)?)
}

pub fn export(repo_dir: &Path, run: &str, out: &Path) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let archive = archive(&root, run)?;
    let bytes = archive.bytes;
    super::init::write_replace(out, "")?;
    std::fs::write(out, &bytes).map_err(|e| Failure::io(out, e))?;
    println!("{}", out.display());
    eprintln!(
        "exported run {run}: {} files, {} bytes, sha256 {}",
        archive.files,
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
        archive(&root, target)?.bytes
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
