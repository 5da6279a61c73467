//! `stella ledger verify`: the append-only proof over the branch's history, reported per
//! problem with the commit and path.

use std::path::Path;

use stella_engine::Code;
use stella_engine::ledger::verify;

use super::{Failure, repo};

pub fn verify(repo_dir: &Path, as_json: bool) -> Result<u8, Failure> {
    let root = repo::find_root(repo_dir)?;
    let config = repo::config_at_head(&root)?;
    let ledger = repo::open_ledger(&root, &config)?;
    let report = verify::verify(&ledger).map_err(|e| Failure::one(e.code(), e.to_string()))?;
    if as_json {
        let mut v = serde_json::to_value(&report).expect("JSON");
        v["ok"] = serde_json::json!(report.problems.is_empty());
        if !report.problems.is_empty() {
            v["code"] = serde_json::json!(Code::LedgerTampered.as_str());
        }
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
    }
    if report.problems.is_empty() {
        if !as_json {
            println!(
                "ledger ok: {} commits, {} runner commits, {} runs; append-only and signed",
                report.commits, report.runner_commits, report.runs
            );
        }
        return Ok(0);
    }
    for p in &report.problems {
        eprintln!(
            "error[{}]: commit {}: {}: {}",
            Code::LedgerTampered,
            p.commit,
            p.path,
            p.message
        );
    }
    eprintln!("{} problems in {} commits", report.problems.len(), report.commits);
    Ok(1)
}
