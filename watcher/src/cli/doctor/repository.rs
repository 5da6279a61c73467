//! The repository's checks of `stella doctor`: the repository, its configuration at HEAD,
//! the trust files (allowed signers, approvers), the runner key, the pre-commit hook, git's
//! identity for people's commits, every run on the branch, and the ledger's size. Only reads;
//! says each finding to the `Report`.

use std::path::Path;

use stella_engine::allowed_signers::AllowedSigners;
use stella_engine::approvals::{APPROVERS_PATH, Approvers, NAMESPACE};
use stella_engine::config::{CONFIG_PATH, Config};

use super::super::ledger::Size;
use super::{Level, Report};
use crate::failure::Failure;
use crate::repo;

/// The repository's configuration, signers, runner key, hook, approvers and runs, and the
/// ledger's size (returned for `--json` when that check was asked for).
pub(super) fn check(r: &mut Report, repo_dir: &Path, key: Option<&Path>) -> Result<Option<Size>, Failure> {
    let root = match repo::find_root(repo_dir) {
        Ok(root) => root,
        Err(_) => {
            r.say(
                "check.repository",
                Level::Fail,
                format!("{}: not a git repository; run `stella init`", repo_dir.display()),
            );
            return Ok(None);
        }
    };
    r.say("check.repository", Level::Ok, format!("repository {}", root.display()));
    let config = match repo::config_at_head(&root) {
        Ok(c) => {
            r.say(
                "check.config",
                Level::Ok,
                format!(
                    "{CONFIG_PATH} at HEAD: branch {}, maxRuns {}, commit batch {} ms",
                    c.branch, c.max_runs, c.batch_ms
                ),
            );
            c
        }
        Err(f) => {
            r.say(
                "check.config",
                Level::Fail,
                format!("{CONFIG_PATH} at HEAD does not parse: {}", f.describe()),
            );
            Config::default()
        }
    };
    if let Ok(head) = std::fs::read_to_string(root.join(".git/HEAD")) {
        let branch = head
            .trim()
            .strip_prefix("ref: refs/heads/")
            .unwrap_or("(detached)")
            .to_string();
        if branch != config.branch {
            r.say(
                "check.branch",
                Level::Warn,
                format!(
                    "HEAD is on `{branch}` but the config watches `{}`; the daemon executes only that branch",
                    config.branch
                ),
            );
        }
    }
    let signers_text = std::fs::read_to_string(root.join(".stella/allowed_signers")).unwrap_or_default();
    // Verification trusts the committed file, never the working tree's.
    {
        let committed = stella_engine::git_cli::run(
            &root,
            &["show", &format!("refs/heads/{}:.stella/allowed_signers", config.branch)],
        )
        .unwrap_or_default();
        if committed.trim() != signers_text.trim() {
            r.say(
                "check.signers.committed",
                Level::Warn,
                format!(
                    ".stella/allowed_signers differs from the one committed on `{}`: runners and `ledger verify` trust only what is committed (commit it)",
                    config.branch
                ),
            );
        }
    }
    let signers = match AllowedSigners::parse(".stella/allowed_signers", &signers_text) {
        Ok(s) => {
            r.say(
                "check.signers",
                Level::Ok,
                format!(".stella/allowed_signers: {} entries", s.entries().len()),
            );
            Some(s)
        }
        Err(d) => {
            r.say(
                "check.signers",
                Level::Fail,
                format!(".stella/allowed_signers does not parse: {d}"),
            );
            None
        }
    };
    match repo::load_key(&root, key) {
        Ok(k) => {
            r.say(
                "check.runner.key",
                Level::Ok,
                format!(
                    "runner key {} ({})",
                    k.fingerprint(),
                    repo::key_path(&root, key).display()
                ),
            );
            if let Some(s) = &signers {
                let now = std::time::SystemTime::now();
                for ns in ["git", "stella-evidence"] {
                    if s.find_principals(&k.public_key(), ns, now).is_empty() {
                        r.say(
                            "check.runner.signers",
                            Level::Fail,
                            format!(
                                "the runner key is not in .stella/allowed_signers for namespace {ns}: its commits would not verify (run `stella init` and commit)"
                            ),
                        );
                    }
                }
            }
        }
        Err(f) => r.say("check.runner.key", Level::Fail, f.describe()),
    }
    match super::super::hook::problem(&repo::git_dir(&root)) {
        None => r.say(
            "check.hook",
            Level::Ok,
            "pre-commit hook installed (refuses commits that change runner files)",
        ),
        Some(why) => r.say("check.hook", Level::Warn, why),
    }
    match std::fs::read_to_string(root.join(APPROVERS_PATH)).map(|t| Approvers::parse(APPROVERS_PATH, &t)) {
        Ok(Ok(a)) => {
            r.say("check.approvers", Level::Ok, format!("{APPROVERS_PATH} parses"));
            if let Some(s) = &signers {
                let listed: Vec<String> = s
                    .entries()
                    .iter()
                    .filter(|e| e.allows_namespace(NAMESPACE))
                    .flat_map(|e| e.principals.clone())
                    .collect();
                for p in a.holders(&a.grant_names()) {
                    if !listed.contains(&p) {
                        r.say(
                            "check.approvers.keys",
                            Level::Warn,
                            format!(
                                "approver `{p}` has no key in .stella/allowed_signers for namespace {NAMESPACE}; their approvals cannot count"
                            ),
                        );
                    }
                }
            }
        }
        Ok(Err(d)) => r.say(
            "check.approvers",
            Level::Fail,
            format!("{APPROVERS_PATH} does not parse: {d}"),
        ),
        Err(_) => r.say(
            "check.approvers",
            Level::Warn,
            format!("no {APPROVERS_PATH}: no approval gate can pass"),
        ),
    }
    if r.wants("check.git.identity") {
        git_identity(r, &root);
    }
    if r.wants("check.schedules") {
        schedules(r, &root, &config);
    }
    if r.wants("check.secrets.sources") {
        let key = repo::load_key(&root, key).ok();
        super::secrets::check(r, &root, &config, key.as_ref());
    }
    if r.wants("check.runs") {
        for (level, msg) in run_checks(&root, &config) {
            r.say("check.runs", level, msg);
        }
    }
    if r.wants("check.packs.provenance") {
        super::packs::provenance(r, &root);
    }
    let size = r
        .wants("check.ledger.maintenance")
        .then(|| super::super::ledger::size(&root))
        .flatten();
    for (warn, msg) in size.iter().flat_map(Size::lines) {
        r.say(
            "check.ledger.maintenance",
            if warn { Level::Warn } else { Level::Ok },
            msg,
        );
    }
    Ok(size)
}

/// The schedules file committed on the branch: each malformed schedule is a failure (it
/// does not fire; the others do).
fn schedules(r: &mut Report, root: &Path, config: &Config) {
    use stella_engine::schedule::SCHEDULES_PATH;
    let Ok(ledger) = repo::open_ledger(root, config) else {
        return;
    };
    let Some(tip) = ledger.tip().ok().flatten() else { return };
    let Ok(s) = ledger.schedules_at(tip) else { return };
    for d in s.problems.iter() {
        r.say("check.schedules", Level::Fail, format!("{}: {d}", d.code));
    }
    if s.problems.is_empty() {
        let enabled = s.schedules.iter().filter(|s| s.enabled).count();
        r.say(
            "check.schedules",
            Level::Ok,
            format!(
                "{SCHEDULES_PATH} on `{}`: {enabled} schedule(s) enabled",
                config.ledger_branch()
            ),
        );
    }
}

/// Whether git knows who commits here: people's commits of requests and approvals need a
/// `user.name` and `user.email` (the runner's own commits carry their own identity).
fn git_identity(r: &mut Report, root: &Path) {
    // git's configuration, or the environment variables git reads before it.
    let get = |k: &str, vars: &[&str]| {
        vars.iter()
            .find_map(|v| std::env::var(v).ok())
            .or_else(|| stella_engine::git_cli::run(root, &["config", "--get", k]).ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let name = get("user.name", &["GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"]);
    let email = get("user.email", &["GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL", "EMAIL"]);
    match (name, email) {
        (Some(name), Some(email)) => r.say(
            "check.git.identity",
            Level::Ok,
            format!("git identity {name} <{email}>"),
        ),
        (name, email) => {
            let missing: Vec<&str> = [("user.name", name.is_none()), ("user.email", email.is_none())]
                .into_iter()
                .filter_map(|(k, m)| m.then_some(k))
                .collect();
            r.say(
                "check.git.identity",
                Level::Warn,
                format!(
                    "git has no {} here: people's commits (requests, approvals) need one (`git config {} …`)",
                    missing.join(" and "),
                    missing[0]
                ),
            );
        }
    }
}

/// A warning per run directory the daemon skips because it cannot be read as a run.
fn run_checks(root: &Path, config: &Config) -> Vec<(Level, String)> {
    let Ok(ledger) = repo::open_ledger(root, config) else {
        return Vec::new();
    };
    let Ok(Some(tip)) = ledger.tip() else {
        return Vec::new();
    };
    match stella_engine::runs::scan(
        &ledger,
        tip,
        &mut repo::runs_index(root, &ledger),
        stella_engine::runs::Select::All,
    ) {
        Ok(stella_engine::runs::Scanned { runs: views, .. }) => {
            let bad: Vec<(Level, String)> = views
                .iter()
                .filter_map(|v| {
                    let why = v.invalid.as_ref()?;
                    Some((
                        Level::Warn,
                        format!(
                            "run {} is invalid and the daemon skips it: {why} [{}]; fix or remove the file on `{}` (`stella ledger verify` tells who changed it)",
                            v.id, why.code, config.ledger_branch()
                        ),
                    ))
                })
                .collect();
            if bad.is_empty() {
                vec![(
                    Level::Ok,
                    format!("{} run(s) on `{}` read cleanly", views.len(), config.ledger_branch()),
                )]
            } else {
                bad
            }
        }
        Err(e) => vec![(
            Level::Fail,
            format!("runs/ on `{}` cannot be read: {e}", config.ledger_branch()),
        )],
    }
}
