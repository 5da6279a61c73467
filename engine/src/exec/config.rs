//! How to run one plan: `ExecConfig` (directories, limits, secrets, isolation, chaos hooks) and
//! the small environment a step starts from. Only describes a run; never starts one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::event::output::LogLimits;
use crate::secrets::Secrets;

use super::control::CancelToken;
use super::sandbox::Sandbox;

/// How to run one plan.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    pub run_id: String,
    /// Where artifacts (`artifacts/<step>/<name>`) and scratch files go.
    pub run_dir: PathBuf,
    /// The steps' working directory; the pack's files are materialised here.
    pub workspace: PathBuf,
    /// Most steps running at once; 0 means the number of cores.
    pub max_steps: usize,
    pub artifact_bytes: u64,
    /// How much output becomes `step.log` events, per step and per run (`limits.logBytes`,
    /// `limits.runLogBytes`); the rest is counted and hashed in `step.log.truncated`.
    pub log_limits: LogLimits,
    /// Time between SIGTERM and SIGKILL when a step is stopped.
    pub kill_grace: Duration,
    pub secrets: Secrets,
    /// Where a step's `as: file` secrets are written (a directory per attempt, wiped when it
    /// ends): outside the workspace; the daemon's is `.git/stella/secret-files/<run>`.
    pub secret_files: PathBuf,
    pub cancel: CancelToken,
    /// The environment steps start from (a small allowlist of the runner's, by default).
    pub base_env: Vec<(String, String)>,
    /// Sealed mode: a step that declares no host runs in a network namespace of its own with
    /// only loopback (DESIGN section 9).
    pub sealed: bool,
    /// How steps are kept from the runner (`sandbox:` in the config, DESIGN section 9).
    pub sandbox: Sandbox,
    /// Chaos hooks (`stella daemon --chaos`): faults injected at the step points.
    pub chaos: Option<Arc<crate::chaos::Chaos>>,
    /// `resumeOf`: the succeeded run steps of an earlier run, reused instead of run again.
    pub reuse: Option<Arc<super::Reuse>>,
    /// How long and how much memory one Rego policy evaluation may take.
    pub policy_limits: crate::rego::bounded::Limits,
}

impl ExecConfig {
    pub fn new(run_id: &str, run_dir: &Path) -> ExecConfig {
        // Steps run in the workspace, so every path handed to them must be absolute.
        let run_dir = std::path::absolute(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
        let run_dir = run_dir.as_path();
        ExecConfig {
            run_id: run_id.into(),
            run_dir: run_dir.into(),
            workspace: run_dir.join("workspace"),
            max_steps: 0,
            artifact_bytes: 10 << 20,
            log_limits: LogLimits::default(),
            kill_grace: Duration::from_secs(5),
            secrets: Secrets::default(),
            secret_files: run_dir.join("secret-files"),
            cancel: CancelToken::new(),
            base_env: base_env(),
            sealed: false,
            sandbox: Sandbox::default(),
            chaos: None,
            reuse: None,
            policy_limits: Default::default(),
        }
    }
}

/// The runner's variables a step may see; everything else (and every other secret) stays out.
fn base_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    env
}
