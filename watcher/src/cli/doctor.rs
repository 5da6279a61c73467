//! `stella doctor`: checks that this machine and repository are ready for Stella, and says
//! how to fix what is not (tools, configuration, signers, runner key, pre-commit hook, watch
//! limits, the step sandbox), and how big the ledger's repository has grown. `--check ID` runs one group of checks; `--json` prints them as
//! data. Only reads: never changes the repository or the machine.

use std::path::Path;
use std::process::Command;

use stella_engine::Code;
use stella_engine::allowed_signers::AllowedSigners;
use stella_engine::approvals::{APPROVERS_PATH, Approvers, NAMESPACE};
use stella_engine::config::{CONFIG_PATH, Config, SandboxPolicy};
use stella_engine::exec::sandbox::{self, Feature};

use crate::failure::{Failure, Outcome};
use crate::repo;

#[derive(PartialEq, Clone, Copy)]
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

/// The groups `--check` takes, in the order plain `stella doctor` runs them.
pub const CHECKS: [&str; 3] = ["tools", "sandbox", "repository"];

fn tool(name: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(name).args(args).output().ok()?;
    let text = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .lines()
    .next()
    .unwrap_or("")
    .to_string();
    Some(text)
}

/// Runs every check group, or only `check`; prints the results (as JSON with `json`). The
/// outcome is `ChecksFailed` when a check failed.
pub fn doctor(repo_dir: &Path, key: Option<&Path>, check: Option<&str>, json: bool) -> Result<Outcome, Failure> {
    if let Some(id) = check
        && !CHECKS.contains(&id)
    {
        return Err(Failure::one(
            Code::Usage,
            format!("unknown check `{id}`; expected one of: {}", CHECKS.join(", ")),
        ));
    }
    let mut results: Vec<(&'static str, Level, String)> = Vec::new();
    let mut ledger = None;
    for group in CHECKS.into_iter().filter(|g| check.is_none_or(|c| c == *g)) {
        let found = match group {
            "tools" => tools(),
            "sandbox" => sandbox_check(repo_dir),
            _ => {
                let mut found = repository(repo_dir, key)?;
                if let Some(size) = super::ledger::size(repo_dir) {
                    let level = |warn: bool| if warn { Level::Warn } else { Level::Ok };
                    found.extend(size.lines().into_iter().map(|(w, m)| (level(w), m)));
                    ledger = Some(size);
                }
                found
            }
        };
        results.extend(found.into_iter().map(|(l, m)| (group, l, m)));
    }
    Ok(print(&results, ledger.as_ref(), json))
}

fn tools() -> Vec<(Level, String)> {
    let mut results: Vec<(Level, String)> = Vec::new();
    let mut say = |l: Level, m: String| results.push((l, m));
    match tool("git", &["--version"]) {
        Some(v) => say(Level::Ok, v),
        None => say(
            Level::Fail,
            "git is not installed (needed for push, bundles and people's commits)".into(),
        ),
    }
    match tool("ssh-keygen", &["-Y", "help"]).or_else(|| tool("ssh-keygen", &["-?"])) {
        Some(_) => say(
            Level::Ok,
            "ssh-keygen is installed (for signing approvals by hand)".into(),
        ),
        None => say(
            Level::Warn,
            "ssh-keygen is not installed; approvers can still use `stella approve`".into(),
        ),
    }
    if let Some(limit) = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        let level = if limit < 1024 { Level::Warn } else { Level::Ok };
        say(
            level,
            format!(
                "inotify watch limit {limit} (the daemon needs a handful; raise fs.inotify.max_user_watches if it cannot watch)"
            ),
        );
    }
    results
}

/// The repository's configuration, signers, runner key, hook, approvers and runs.
fn repository(repo_dir: &Path, key: Option<&Path>) -> Result<Vec<(Level, String)>, Failure> {
    let mut results: Vec<(Level, String)> = Vec::new();
    let mut say = |l: Level, m: String| results.push((l, m));
    let root = match repo::find_root(repo_dir) {
        Ok(r) => r,
        Err(_) => {
            say(
                Level::Fail,
                format!("{}: not a git repository; run `stella init`", repo_dir.display()),
            );
            return Ok(results);
        }
    };
    say(Level::Ok, format!("repository {}", root.display()));
    let config = match repo::config_at_head(&root) {
        Ok(c) => {
            say(
                Level::Ok,
                format!(
                    "{CONFIG_PATH} at HEAD: branch {}, maxRuns {}, commit batch {} ms",
                    c.branch, c.max_runs, c.batch_ms
                ),
            );
            c
        }
        Err(f) => {
            say(
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
            say(
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
            say(
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
            say(
                Level::Ok,
                format!(".stella/allowed_signers: {} entries", s.entries().len()),
            );
            Some(s)
        }
        Err(d) => {
            say(Level::Fail, format!(".stella/allowed_signers does not parse: {d}"));
            None
        }
    };
    match repo::load_key(&root, key) {
        Ok(k) => {
            say(
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
                        say(
                            Level::Fail,
                            format!(
                                "the runner key is not in .stella/allowed_signers for namespace {ns}: its commits would not verify (run `stella init` and commit)"
                            ),
                        );
                    }
                }
            }
        }
        Err(f) => say(Level::Fail, f.describe()),
    }
    match super::hook::problem(&repo::git_dir(&root)) {
        None => say(
            Level::Ok,
            "pre-commit hook installed (refuses commits that change runner files)".into(),
        ),
        Some(why) => say(Level::Warn, why),
    }
    match std::fs::read_to_string(root.join(APPROVERS_PATH)).map(|t| Approvers::parse(APPROVERS_PATH, &t)) {
        Ok(Ok(a)) => {
            say(Level::Ok, format!("{APPROVERS_PATH} parses"));
            if let Some(s) = &signers {
                let listed: Vec<String> = s
                    .entries()
                    .iter()
                    .filter(|e| e.allows_namespace(NAMESPACE))
                    .flat_map(|e| e.principals.clone())
                    .collect();
                for p in a.holders(&a.grant_names()) {
                    if !listed.contains(&p) {
                        say(
                            Level::Warn,
                            format!(
                                "approver `{p}` has no key in .stella/allowed_signers for namespace {NAMESPACE}; their approvals cannot count"
                            ),
                        );
                    }
                }
            }
        }
        Ok(Err(d)) => say(Level::Fail, format!("{APPROVERS_PATH} does not parse: {d}")),
        Err(_) => say(Level::Warn, format!("no {APPROVERS_PATH}: no approval gate can pass")),
    }
    for (level, msg) in run_checks(&root, &config) {
        say(level, msg);
    }
    Ok(results)
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
                            v.id, why.code, config.branch
                        ),
                    ))
                })
                .collect();
            if bad.is_empty() {
                vec![(
                    Level::Ok,
                    format!("{} run(s) on `{}` read cleanly", views.len(), config.branch),
                )]
            } else {
                bad
            }
        }
        Err(e) => vec![(Level::Fail, format!("runs/ on `{}` cannot be read: {e}", config.branch))],
    }
}

/// `--check sandbox`: which kernel features the step sandbox needs this host has (each
/// probed by starting a real sandboxed process), and whether the repository's `sandbox:`
/// policy can work here. Only what the policy in effect needs can fail the check.
fn sandbox_check(repo_dir: &Path) -> Vec<(Level, String)> {
    let mut results: Vec<(Level, String)> = Vec::new();
    let (policy, sealed, source) = match repo::find_root(repo_dir) {
        Ok(root) => match repo::config_at_head(&root) {
            Ok(c) => (c.sandbox, c.sealed, format!("{CONFIG_PATH} at HEAD")),
            Err(_) => (
                SandboxPolicy::Required,
                false,
                format!("the default: {CONFIG_PATH} at HEAD does not parse"),
            ),
        },
        Err(_) => (
            SandboxPolicy::Required,
            false,
            "the default: not in a repository".into(),
        ),
    };
    // Each probe starts a real process in a sandbox; a later feature is only known once the
    // ones before it work.
    let required = sandbox::probe(&SandboxPolicy::Required, false);
    let network = required
        .as_ref()
        .ok()
        .map(|()| sandbox::probe(&SandboxPolicy::Required, true));
    let strict = SandboxPolicy::Strict {
        read: Vec::new(),
        write: Vec::new(),
    };
    let landlock = required.as_ref().ok().map(|()| sandbox::probe(&strict, false));
    let needed = |f: Feature| match f {
        _ if policy == SandboxPolicy::Off => false,
        Feature::NetworkNamespaces => sealed,
        Feature::Landlock => matches!(policy, SandboxPolicy::Strict { .. }),
        _ => true,
    };
    let rank = |f: Feature| Feature::ALL.iter().position(|g| *g == f);
    let mut missing: Vec<Feature> = Vec::new();
    for feature in Feature::ALL {
        let outcome = match feature {
            Feature::NetworkNamespaces => network.as_ref(),
            Feature::Landlock => landlock.as_ref(),
            _ => Some(&required),
        };
        let (level, msg) = match outcome {
            None => (
                Level::Warn,
                format!(
                    "sandbox: {} not checked (needs user, mount and PID namespaces first)",
                    feature.name()
                ),
            ),
            // The required probe stops at the first missing namespace: those before it work,
            // those after it are unknown.
            Some(Err(u))
                if matches!(
                    feature,
                    Feature::UserNamespaces | Feature::MountNamespaces | Feature::PidNamespaces
                ) && rank(feature) < rank(u.feature) =>
            {
                (Level::Ok, format!("sandbox: {} work", feature.name()))
            }
            Some(Err(u))
                if matches!(
                    feature,
                    Feature::UserNamespaces | Feature::MountNamespaces | Feature::PidNamespaces
                ) && rank(feature) > rank(u.feature) =>
            {
                (
                    Level::Warn,
                    format!(
                        "sandbox: {} not checked (needs {} first)",
                        feature.name(),
                        u.feature.name()
                    ),
                )
            }
            Some(Err(u)) => {
                missing.push(feature);
                let level = if needed(feature) { Level::Fail } else { Level::Warn };
                (
                    level,
                    format!("sandbox: {} missing ({}); {}", feature.name(), u.detail, feature.hint()),
                )
            }
            Some(Ok(())) if feature == Feature::Landlock => (
                Level::Ok,
                format!("sandbox: Landlock works (ABI {})", sandbox::landlock_abi()),
            ),
            Some(Ok(())) => (Level::Ok, format!("sandbox: {} work", feature.name())),
        };
        results.push((level, msg));
    }
    let blocking: Vec<&str> = missing.iter().filter(|f| needed(**f)).map(|f| f.name()).collect();
    let mode = policy.mode();
    if policy == SandboxPolicy::Off {
        results.push((
            Level::Warn,
            format!(
                "sandbox: policy `off` in effect ({source}): steps run unisolated: they can read the runner key, the repository's .git and journal, other runs' workspaces and the runner's memory, signal the runner and outlive it; set `sandbox: required` in {CONFIG_PATH}"
            ),
        ));
    } else if blocking.is_empty() {
        let extra = match &policy {
            SandboxPolicy::Strict { read, write } => format!(
                "; a Landlock allowlist narrows each step to its workspace, /tmp, the read-only system, /dev{}{}",
                if read.is_empty() {
                    String::new()
                } else {
                    format!(", read: {}", read.join(" "))
                },
                if write.is_empty() {
                    String::new()
                } else {
                    format!(", write: {}", write.join(" "))
                },
            ),
            _ => String::new(),
        };
        results.push((
            Level::Ok,
            format!(
                "sandbox: policy `{mode}` in effect ({source}): every step runs isolated from the runner{}{extra}",
                if sealed { " and without network" } else { "" }
            ),
        ));
    } else {
        results.push((
            Level::Fail,
            format!(
                "sandbox: policy `{mode}` in effect ({source}) cannot work on this host: {} missing, so every step would fail with ERR_SANDBOX_UNAVAILABLE; fix the host (see above) or, knowingly, set `sandbox: off` in {CONFIG_PATH}",
                blocking.join(", ")
            ),
        ));
    }
    results
}

/// Prints the results (with the ledger's sizes as data under `--json`); a failed check makes
/// the outcome `ChecksFailed`.
fn print(results: &[(&str, Level, String)], ledger: Option<&super::ledger::Size>, json: bool) -> Outcome {
    let failed = results.iter().any(|(_, l, _)| *l == Level::Fail);
    if json {
        let checks: Vec<serde_json::Value> = results
            .iter()
            .map(|(group, level, msg)| serde_json::json!({ "check": group, "level": level.as_str(), "message": msg }))
            .collect();
        let mut out = serde_json::json!({ "ok": !failed, "checks": checks });
        if let Some(l) = ledger {
            out["ledger"] = l.json();
        }
        println!("{out}");
    } else {
        for (_, level, msg) in results {
            let tag = match level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            println!("{tag} {msg}");
        }
    }
    if failed { Outcome::ChecksFailed } else { Outcome::Done }
}
