//! `stella doctor`: checks that this machine and repository are ready for Stella, and says
//! how to fix what is not (tools, configuration, signers, runner key, pre-commit hook, watch
//! limits, the step sandbox, the secret sources), and how big the ledger's repository has grown. Every check has
//! a stable id (`CHECKS`); `--check ID` runs one check (or one group), `--json` prints the
//! results as data. The checks themselves are `host`'s and `repository`'s. Only reads: never
//! changes the repository or the machine.

mod host;
mod packs;
mod repository;
mod secrets;

use std::path::Path;

use stella_engine::Code;

use crate::failure::{Failure, Outcome};

#[derive(PartialEq, Clone, Copy, Debug)]
enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// The groups, in the order plain `stella doctor` runs them; `--check GROUP` runs one.
pub const GROUPS: [&str; 3] = ["tools", "sandbox", "repository"];

/// Every check: its id (stable: scripts and runbooks name it) and its group, in the order
/// they run. One check may say several lines (one per invalid run, per approver, …).
pub const CHECKS: [(&str, &str); 25] = [
    ("check.git.installed", "tools"),
    ("check.ssh-keygen", "tools"),
    ("check.inotify", "tools"),
    ("check.sandbox.user", "sandbox"),
    ("check.sandbox.mount", "sandbox"),
    ("check.sandbox.pid", "sandbox"),
    ("check.sandbox.net", "sandbox"),
    ("check.sandbox.landlock", "sandbox"),
    ("check.sandbox.policy", "sandbox"),
    ("check.repository", "repository"),
    ("check.config", "repository"),
    ("check.branch", "repository"),
    ("check.git.identity", "repository"),
    ("check.signers.committed", "repository"),
    ("check.signers", "repository"),
    ("check.runner.key", "repository"),
    ("check.runner.signers", "repository"),
    ("check.hook", "repository"),
    ("check.approvers", "repository"),
    ("check.approvers.keys", "repository"),
    ("check.schedules", "repository"),
    ("check.secrets.sources", "repository"),
    ("check.runs", "repository"),
    ("check.packs.provenance", "repository"),
    ("check.ledger.maintenance", "repository"),
];

/// What one check found: one line of the report.
struct Found {
    id: &'static str,
    level: Level,
    message: String,
}

/// The lines found so far, keeping only those of the checks asked for.
struct Report<'a> {
    only: Option<&'a str>,
    found: Vec<Found>,
}

impl Report<'_> {
    /// Whether check `id` was asked for (every check, its group, or itself).
    fn wants(&self, id: &str) -> bool {
        match self.only {
            None => true,
            Some(only) => only == id || CHECKS.iter().any(|(c, g)| *c == id && *g == only),
        }
    }

    /// Whether any check of `group` was asked for.
    fn wants_group(&self, group: &str) -> bool {
        CHECKS.iter().any(|(c, g)| *g == group && self.wants(c))
    }

    /// Records a line of check `id`, if it was asked for.
    fn say(&mut self, id: &'static str, level: Level, message: impl Into<String>) {
        debug_assert!(CHECKS.iter().any(|(c, _)| *c == id), "{id} is in CHECKS");
        if self.wants(id) {
            self.found.push(Found {
                id,
                level,
                message: message.into(),
            });
        }
    }
}

/// Runs every check, or only `check` (a check id or a group); prints the results (as JSON
/// with `json`). The outcome is `ChecksFailed` when a check failed.
pub fn doctor(repo_dir: &Path, key: Option<&Path>, check: Option<&str>, json: bool) -> Result<Outcome, Failure> {
    if let Some(id) = check
        && !GROUPS.contains(&id)
        && !CHECKS.iter().any(|(c, _)| *c == id)
    {
        let ids: Vec<&str> = CHECKS.iter().map(|(c, _)| *c).collect();
        return Err(Failure::one(
            Code::Usage,
            format!(
                "unknown check `{id}`; expected a check id ({}) or a group ({})",
                ids.join(", "),
                GROUPS.join(", ")
            ),
        ));
    }
    let mut report = Report {
        only: check,
        found: Vec::new(),
    };
    if report.wants_group("tools") {
        host::tools(&mut report);
    }
    if report.wants_group("sandbox") {
        host::sandbox(&mut report, repo_dir);
    }
    let ledger = if report.wants_group("repository") {
        repository::check(&mut report, repo_dir, key)?
    } else {
        None
    };
    Ok(print(&report.found, ledger.as_ref(), json))
}

/// Prints the results (with the ledger's sizes as data under `--json`); a failed check makes
/// the outcome `ChecksFailed`.
fn print(found: &[Found], ledger: Option<&super::ledger::Size>, json: bool) -> Outcome {
    let failed = found.iter().any(|f| f.level == Level::Fail);
    if json {
        let checks: Vec<serde_json::Value> = found
            .iter()
            .map(|f| serde_json::json!({ "id": f.id, "level": f.level.as_str(), "message": f.message }))
            .collect();
        let mut out = serde_json::json!({ "checks": checks, "ok": !failed });
        if let Some(l) = ledger {
            out["ledger"] = l.json();
        }
        println!("{out}");
    } else {
        for f in found {
            let tag = match f.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            println!("{tag} {}", f.message);
        }
    }
    if failed { Outcome::ChecksFailed } else { Outcome::Done }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_name_their_group() {
        let mut ids: Vec<&str> = CHECKS.iter().map(|(c, _)| *c).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CHECKS.len());
        assert!(
            CHECKS
                .iter()
                .all(|(c, g)| c.starts_with("check.") && GROUPS.contains(g))
        );
        let r = Report {
            only: Some("check.runner.key"),
            found: Vec::new(),
        };
        assert!(r.wants("check.runner.key") && !r.wants("check.signers"));
        assert!(r.wants_group("repository") && !r.wants_group("tools"));
        let g = Report {
            only: Some("sandbox"),
            found: Vec::new(),
        };
        assert!(g.wants("check.sandbox.pid") && !g.wants("check.git.installed"));
    }
}
