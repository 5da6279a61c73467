//! The host's checks of `stella doctor`: the tools Stella calls (git, ssh-keygen), the
//! inotify watch limit, and the step sandbox, each kernel feature probed by starting a real
//! sandboxed process. Only reads; says each finding to the `Report`.

use std::path::Path;
use std::process::Command;

use stella_engine::config::{CONFIG_PATH, SandboxPolicy};
use stella_engine::exec::sandbox::{self, Feature};

use super::{Level, Report};
use crate::repo;

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

/// git, ssh-keygen and the inotify watch limit.
pub(super) fn tools(r: &mut Report) {
    match tool("git", &["--version"]) {
        Some(v) => r.say("check.git.installed", Level::Ok, v),
        None => r.say(
            "check.git.installed",
            Level::Fail,
            "git is not installed (needed for push, bundles and people's commits)",
        ),
    }
    match tool("ssh-keygen", &["-Y", "help"]).or_else(|| tool("ssh-keygen", &["-?"])) {
        Some(_) => r.say(
            "check.ssh-keygen",
            Level::Ok,
            "ssh-keygen is installed (for signing approvals by hand)",
        ),
        None => r.say(
            "check.ssh-keygen",
            Level::Warn,
            "ssh-keygen is not installed; approvers can still use `stella approve`",
        ),
    }
    if let Some(limit) = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        let level = if limit < 1024 { Level::Warn } else { Level::Ok };
        r.say(
            "check.inotify",
            level,
            format!(
                "inotify watch limit {limit} (the daemon needs a handful; raise fs.inotify.max_user_watches if it cannot watch)"
            ),
        );
    }
}

/// `--check sandbox`: which kernel features the step sandbox needs this host has (each
/// probed by starting a real sandboxed process), and whether the repository's `sandbox:`
/// policy can work here. Only what the policy in effect needs can fail the check.
pub(super) fn sandbox(r: &mut Report, repo_dir: &Path) {
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
        r.say(feature_id(feature), level, msg);
    }
    let blocking: Vec<&str> = missing.iter().filter(|f| needed(**f)).map(|f| f.name()).collect();
    let mode = policy.mode();
    if policy == SandboxPolicy::Off {
        r.say(
            "check.sandbox.policy",
            Level::Warn,
            format!(
                "sandbox: policy `off` in effect ({source}): steps run unisolated: they can read the runner key, the repository's .git and journal, other runs' workspaces and the runner's memory, signal the runner and outlive it; set `sandbox: required` in {CONFIG_PATH}"
            ),
        );
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
        r.say(
            "check.sandbox.policy",
            Level::Ok,
            format!(
                "sandbox: policy `{mode}` in effect ({source}): every step runs isolated from the runner{}{extra}",
                if sealed { " and without network" } else { "" }
            ),
        );
    } else {
        r.say(
            "check.sandbox.policy",
            Level::Fail,
            format!(
                "sandbox: policy `{mode}` in effect ({source}) cannot work on this host: {} missing, so every step would fail with ERR_SANDBOX_UNAVAILABLE; fix the host (see above) or, knowingly, set `sandbox: off` in {CONFIG_PATH}",
                blocking.join(", ")
            ),
        );
    }
}

/// The check id of a sandbox feature: `check.sandbox.` and the word
/// `STELLA_SANDBOX_SIMULATE_MISSING` takes for it.
fn feature_id(f: Feature) -> &'static str {
    match f {
        Feature::UserNamespaces => "check.sandbox.user",
        Feature::MountNamespaces => "check.sandbox.mount",
        Feature::PidNamespaces => "check.sandbox.pid",
        Feature::NetworkNamespaces => "check.sandbox.net",
        Feature::Landlock => "check.sandbox.landlock",
    }
}
