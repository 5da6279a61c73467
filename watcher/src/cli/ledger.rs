//! `stella ledger verify`: the append-only proof over the branch's history, reported per
//! problem with the commit and path; `stella ledger heal`: one signed runner commit restoring
//! what a person's commit changed or deleted; and the ledger's size that `stella doctor`
//! reports (objects, the last maintenance, journals, the checkpoint).

use std::path::Path;

use stella_engine::Code;
use stella_engine::ledger::checkpoint::{self, Checkpoint};
use stella_engine::ledger::maintenance;
use stella_engine::ledger::verify::{self, Report};
use stella_engine::ledger::{Ledger, heal};

use crate::failure::{Failure, Outcome};
use crate::repo;

pub fn verify(repo_dir: &Path, as_json: bool, since_checkpoint: bool) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let config = repo::config_at_head(&root)?;
    let ledger = repo::open_ledger(&root, &config)?;
    let Some(tip) = ledger.tip()? else {
        return print_verified(&Report::default(), None, None, as_json);
    };
    let (report, since) = match since_checkpoint {
        false => (verify::verify_at(&ledger, tip)?, None),
        true => match checkpoint::verify_since(&ledger, tip)? {
            Some((cp, report)) => (report, Some(cp)),
            None => {
                // A clone that never verified has nothing to start from: the whole history is
                // checked (slower, never less strict), and leaves a checkpoint for next time.
                eprintln!(
                    "warning: no checkpoint for {} in {}; verifying the whole history",
                    ledger.branch(),
                    checkpoint::path(ledger.git_dir()).display()
                );
                (verify::verify_at(&ledger, tip)?, None)
            }
        },
    };
    // Only a runner can sign a checkpoint: without its key, or when the tip does not trust
    // it, none is written, and verifying says nothing of it.
    let recorded = match repo::load_key(&root, None) {
        Ok(key) => checkpoint::record(&ledger, tip, &report, since.as_ref(), &key).unwrap_or_else(|e| {
            eprintln!("warning: cannot write the checkpoint: {e}");
            None
        }),
        Err(_) => None,
    };
    print_verified(&report, since.as_ref(), recorded.as_ref(), as_json)
}

fn print_verified(
    report: &Report,
    since: Option<&Checkpoint>,
    recorded: Option<&Checkpoint>,
    as_json: bool,
) -> Result<Outcome, Failure> {
    if as_json {
        let mut v = serde_json::to_value(report).expect("JSON");
        v["ok"] = serde_json::json!(report.problems.is_empty());
        if let Some(cp) = since {
            v["sinceCheckpoint"] = serde_json::to_value(cp).expect("JSON");
        }
        if let Some(cp) = recorded {
            v["checkpoint"] = serde_json::to_value(cp).expect("JSON");
        }
        if !report.problems.is_empty() {
            v["code"] = serde_json::json!(Code::LedgerTampered.as_str());
        }
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
    }
    if report.problems.is_empty() {
        if !as_json {
            let after = since.map_or(String::new(), |cp| {
                format!(" after checkpoint {} ({} commits before)", &cp.tip[..12], cp.commits)
            });
            println!(
                "ledger ok: {} commits{after}, {} runner commits, {} runs; append-only and signed{}",
                report.commits,
                report.runner_commits,
                report.runs,
                healed(report)
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

/// The ledger's repository as `--check repository` reports it: its objects now, the last
/// maintenance, the journals, the checkpoint.
pub struct Size {
    now: maintenance::Sizes,
    last: Option<maintenance::Record>,
    journals: (u64, u64),
    checkpoint: Result<Option<checkpoint::Checkpoint>, String>,
}

pub fn size(repo_dir: &Path) -> Option<Size> {
    let root = repo::find_root(repo_dir).ok()?;
    let now = maintenance::sizes(&root).ok()?;
    let git_dir = repo::git_dir(&root);
    let journals = std::fs::read_dir(stella_engine::journal::dir(&git_dir))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
        })
        .unwrap_or((0, 0));
    let checkpoint = repo::config_at_head(&root)
        .ok()
        .and_then(|c| repo::open_ledger(&root, &c).ok())
        .map_or(Ok(None), |l| checkpoint::read(&l).map_err(|e| e.to_string()));
    Some(Size {
        now,
        last: maintenance::last(&git_dir),
        journals,
        checkpoint,
    })
}

impl Size {
    /// One line each, with whether it is a warning.
    pub fn lines(&self) -> Vec<(bool, String)> {
        let (now, mb) = (&self.now, |b: u64| format!("{:.1} MB", b as f64 / 1e6));
        let mut out = vec![(
            false,
            format!(
                "ledger objects: {} loose ({}), {} packed in {} pack(s) ({})",
                now.loose_objects,
                mb(now.loose_bytes),
                now.packed_objects,
                now.packs,
                mb(now.packed_bytes)
            ),
        )];
        match &self.last {
            Some(r) => {
                let grown = now.bytes() as i64 - r.after.bytes() as i64;
                out.push((
                    false,
                    format!(
                        "ledger growth since the last maintenance: {}{} ({} loose objects now)",
                        if grown < 0 { "-" } else { "+" },
                        mb(grown.unsigned_abs()),
                        now.loose_objects
                    ),
                ));
                out.push((
                    r.error.is_some(),
                    format!(
                        "last maintenance {} ({} ago): {:.1} s, objects {} -> {}, {} journal(s) pruned{}",
                        r.time,
                        humantime::parse_rfc3339(&r.time)
                            .ok()
                            .and_then(|t| t.elapsed().ok())
                            .map_or("?".into(), |d| humantime::format_duration(
                                std::time::Duration::from_secs(d.as_secs())
                            )
                            .to_string()),
                        r.duration_ms as f64 / 1000.0,
                        mb(r.before.bytes()),
                        mb(r.after.bytes()),
                        r.journals_pruned,
                        r.error.as_ref().map_or(String::new(), |e| format!("; git failed: {e}"))
                    ),
                ));
            }
            None => out.push((
                false,
                format!(
                    "no maintenance recorded yet (the daemon runs it past {} loose objects)",
                    maintenance::LOOSE_THRESHOLD
                ),
            )),
        }
        if now.loose_objects > maintenance::LOOSE_THRESHOLD {
            out.push((
                true,
                format!(
                    "{} loose objects: maintenance is due (a running daemon does it at its next poll)",
                    now.loose_objects
                ),
            ));
        }
        out.push((
            false,
            format!(
                "journals: {} file(s), {} (pruned once the ledger holds their events)",
                self.journals.0,
                mb(self.journals.1)
            ),
        ));
        match &self.checkpoint {
            Ok(Some(cp)) => out.push((
                false,
                format!(
                    "ledger checkpoint at {} ({} commits verified, {})",
                    &cp.tip[..12],
                    cp.commits,
                    cp.time
                ),
            )),
            Ok(None) => out.push((
                false,
                "no ledger checkpoint yet (`stella ledger verify` writes one with the runner key)".into(),
            )),
            Err(e) => out.push((true, format!("ledger checkpoint unusable: {e}"))),
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let growth = self.last.as_ref().map(|r| {
            serde_json::json!({
                "bytes": self.now.bytes() as i64 - r.after.bytes() as i64,
                "looseObjects": self.now.loose_objects as i64 - r.after.loose_objects as i64,
            })
        });
        serde_json::json!({
            "objects": self.now,
            "lastMaintenance": self.last,
            "growthSinceMaintenance": growth,
            "maintenanceDue": self.now.loose_objects > maintenance::LOOSE_THRESHOLD,
            "journals": { "files": self.journals.0, "bytes": self.journals.1 },
            "checkpoint": self.checkpoint.as_ref().ok().cloned().flatten(),
        })
    }
}
