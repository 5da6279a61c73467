//! The git command-line tool, for what gix does not do (bundles, push, notes, moving a
//! checked-out branch with its working tree): one command run in a repository, its trimmed
//! stdout or a typed failure. Knows nothing of Stella's refs or files; callers decide what to run.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use crate::code::Code;

/// A git command that could not run, or that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    /// git ran and exited unsuccessfully: the command and what it said on stderr.
    #[error("git {args}: {stderr}")]
    Failed { args: String, stderr: String },
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Spawn(_) | Error::Failed { .. } => Code::Io,
        }
    }

    /// What git said on stderr, when it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Error::Failed { stderr, .. } => Some(stderr),
            Error::Spawn(_) => None,
        }
    }
}

/// Runs git with `args` in `root`; its trimmed stdout, or its trimmed stderr as the error.
pub fn run(root: &Path, args: &[&str]) -> Result<String, Error> {
    run_env(root, args, &[])
}

/// As `run`, with `env` added to git's environment.
pub fn run_env(root: &Path, args: &[&str], env: &[(&str, &OsStr)]) -> Result<String, Error> {
    let out = Command::new("git")
        .current_dir(root)
        .envs(env.iter().copied())
        // Nobody is there to type a password: a missing credential fails, never waits.
        .env("GIT_TERMINAL_PROMPT", "0")
        .args(args)
        .output()
        .map_err(Error::Spawn)?;
    if !out.status.success() {
        return Err(Error::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether commit `a` is an ancestor of (or is) `b` in the repository at `root`; false when
/// git cannot tell (an unknown commit, git missing), which every caller reads as "no".
pub fn is_ancestor(root: &Path, a: &str, b: &str) -> bool {
    Command::new("git")
        .current_dir(root)
        .args(["merge-base", "--is-ancestor", a, b])
        .status()
        .is_ok_and(|s| s.success())
}
