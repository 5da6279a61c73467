//! `stella ledger verify`: the append-only proof over the branch's history, reported per
//! problem with the commit and path; `stella ledger heal`: one signed runner commit restoring
//! what a person's commit changed or deleted.

use std::path::Path;

use stella_engine::Code;
use stella_engine::ledger::verify::{self, Report};
use stella_engine::ledger::{Ledger, heal};

use crate::failure::{Failure, Outcome};
use crate::repo;

pub fn verify(repo_dir: &Path, as_json: bool) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let config = repo::config_at_head(&root)?;
    let ledger = repo::open_ledger(&root, &config)?;
    let report = verify::verify(&ledger)?;
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
                "ledger ok: {} commits, {} runner commits, {} runs; append-only and signed{}",
                report.commits,
                report.runner_commits,
                report.runs,
                healed(&report)
            );
        }
        return Ok(Outcome::Done);
    }
    Ok(Outcome::Failed {
        code: Code::LedgerTampered,
        problems: report
            .problems
            .iter()
            .map(|p| format!("commit {}: {}: {}", p.commit, p.path, p.message))
            .collect(),
        summary: Some(format!(
            "{} problems in {} commits",
            report.problems.len(),
            report.commits
        )),
    })
}

/// `; 1 damage healed: <damaging> (by a person) restored by <healing>`, one entry per
/// damaging commit; empty when nothing was ever damaged.
fn healed(report: &Report) -> String {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for d in &report.damages {
        if let Some(by) = &d.healed_by
            && !pairs.contains(&(d.commit.as_str(), by.as_str()))
        {
            pairs.push((&d.commit, by));
        }
    }
    if pairs.is_empty() {
        return String::new();
    }
    let list: Vec<String> = pairs
        .iter()
        .map(|(damaged, by)| format!("{damaged} (by a person) restored by {by}"))
        .collect();
    format!(
        "; {} damage{} healed: {}",
        pairs.len(),
        if pairs.len() == 1 { "" } else { "s" },
        list.join(", ")
    )
}

pub fn heal(repo_dir: &Path, key: Option<&Path>) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let config = repo::config_at_head(&root)?;
    let key = repo::load_key(&root, key)?;
    let mut ledger = repo::open_ledger(&root, &config)?;
    for r in ledger.repair_worktree()? {
        println!("repaired {}: {}", r.path, r.what);
    }
    match heal::heal(&mut ledger, &key)? {
        None => println!("nothing to heal: every runner file is as the runner wrote it"),
        Some(h) => print_healing(&h),
    }
    remaining(&ledger)
}

/// What a healing commit did, one line.
pub fn print_healing(h: &heal::Healing) {
    println!(
        "healed: {} runner file{} ({}) restored by {} after {}",
        h.paths.len(),
        if h.paths.len() == 1 { "" } else { "s" },
        h.paths.join(", "),
        h.commit.to_hex_with_len(12),
        h.damaged_by.join(", ")
    );
}

/// Failed when problems remain that healing cannot fix (forged files, rewritten history).
fn remaining(ledger: &Ledger) -> Result<Outcome, Failure> {
    let report = verify::verify(ledger)?;
    if report.problems.is_empty() {
        return Ok(Outcome::Done);
    }
    Ok(Outcome::Failed {
        code: Code::LedgerTampered,
        problems: vec![format!(
            "{} problems remain that healing cannot fix; see `stella ledger verify`",
            report.problems.len()
        )],
        summary: None,
    })
}
