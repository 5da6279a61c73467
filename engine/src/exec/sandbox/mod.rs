//! The step sandbox: every step process starts in user, mount and PID namespaces of its own
//! (and a network namespace in sealed mode), where the runner's repository, state, work
//! directories and key are covered by empty read-only mounts, `/tmp` is private, `/proc` shows
//! only the step's processes, and no capability is left. In `strict` mode a Landlock ruleset
//! narrows the step further to its workspace, its temporary directory, the read-only system and
//! the listed paths. Owns the set-up between fork and exec; never decides policy (that is
//! `config::SandboxPolicy`) and never runs a step itself (that is `process::run`).
//!
//! The process tree of a sandboxed step, all in the step's process group:
//!
//! ```text
//! runner ─ keeper (runner's PID namespace; dies with the runner thread: PR_SET_PDEATHSIG)
//!            └ init (PID 1 of the step's namespace; dies with the keeper; forwards stop signals)
//!                └ step (exec'd: bash, or the program of builtin:exec)
//! ```
//! When init dies, the kernel kills every process of the namespace, so nothing a step started,
//! not even one that left its process group, outlives the step or the runner. The keeper and
//! init are copies of the runner that never exec; they are made non-dumpable, so the step
//! cannot read their memory, and they live outside what the step can name.

mod feature;
mod fork;
mod landlock;
mod probe;
mod status;

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::SandboxPolicy;

pub use feature::{Feature, Unavailable};
pub use landlock::landlock_abi;
pub use probe::probe;
pub use status::{Guard, Outcome};

use feature::simulated_missing;
use fork::{Setup, install};
use landlock::ruleset;
use status::{Stage, pipe};

/// What a run's steps are kept from, and how.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    pub policy: SandboxPolicy,
    /// The runner's own paths a step must not see: the repository, its `.git`, state and work
    /// directories, the key and secrets files. Missing paths are skipped.
    pub hide: Vec<PathBuf>,
}

impl Sandbox {
    pub fn off() -> Sandbox {
        Sandbox {
            policy: SandboxPolicy::Off,
            hide: Vec::new(),
        }
    }

    pub fn is_off(&self) -> bool {
        self.policy == SandboxPolicy::Off
    }

    /// What is recorded in events and evidence about the sandbox.
    pub fn describe(&self) -> serde_json::Value {
        let mut d = serde_json::json!({ "mode": self.policy.mode() });
        if !self.is_off() {
            d["namespaces"] = serde_json::json!(["user", "mount", "pid"]);
        }
        if let SandboxPolicy::Strict { read, write } = &self.policy {
            d["landlockAbi"] = serde_json::json!(landlock_abi());
            d["read"] = serde_json::json!(read);
            d["write"] = serde_json::json!(write);
        }
        d
    }

    /// Makes `cmd` start inside the sandbox: `workspace` and `output` (the `$STELLA_OUTPUT`
    /// file) stay visible at their paths; `network` gives the step a network namespace with
    /// only loopback. Fails before any process starts when a feature is known to be missing.
    pub fn apply(
        &self,
        cmd: &mut Command,
        workspace: &Path,
        output: &Path,
        network: bool,
    ) -> Result<Guard, Unavailable> {
        self.apply_with(cmd, workspace, output, network, None)
    }

    /// As `apply`; `secrets`, the directory of the step's `as: file` secrets, stays visible
    /// (and readable under Landlock) at its path too, wherever it lives.
    pub fn apply_with(
        &self,
        cmd: &mut Command,
        workspace: &Path,
        output: &Path,
        network: bool,
        secrets: Option<&Path>,
    ) -> Result<Guard, Unavailable> {
        let missing = simulated_missing();
        let simulate = missing
            .iter()
            .copied()
            .filter(|f| *f != Feature::NetworkNamespaces || network)
            .filter(|f| *f != Feature::Landlock || matches!(self.policy, SandboxPolicy::Strict { .. }))
            .map(Stage::of)
            .next();
        let landlock = match &self.policy {
            SandboxPolicy::Strict { read, write } if !missing.contains(&Feature::Landlock) => {
                let mut read = read.clone();
                read.extend(secrets.map(|d| d.to_string_lossy().into_owned()));
                Some(ruleset(workspace, output, &read, write)?)
            }
            _ => None,
        };
        let (status_read, status_write) = pipe()?;
        // SAFETY: geteuid/getegid/getpid cannot fail.
        let (uid, gid, runner) = unsafe { (libc::geteuid(), libc::getegid(), libc::getpid()) };
        let setup = Setup {
            runner,
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            network,
            hide_dirs: Vec::new(),
            hide_files: Vec::new(),
            keep: [(workspace, true), (output, false)]
                .into_iter()
                .chain(secrets.map(|d| (d, true)))
                .map(|(p, dir)| (cstr(p), dir, ancestors(p)))
                .collect(),
            landlock,
            simulate,
            status: status_write.as_raw_fd(),
        };
        let setup = self.covers(setup);
        install(cmd, setup, status_write);
        Ok(Guard {
            status: status_read,
            mode: self.policy.mode(),
        })
    }

    /// Fills in what to cover: the runner's paths and `/tmp`, outermost first, nested ones
    /// dropped (covering the outer one hides them).
    fn covers(&self, mut setup: Setup) -> Setup {
        let mut dirs: Vec<PathBuf> = vec![PathBuf::from("/tmp")];
        let mut files: Vec<PathBuf> = Vec::new();
        for p in &self.hide {
            let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            // Covered where it leads: a key given as a symlink is read through its target's
            // path as well, and a mount on the symlink's path would land on the target anyway.
            let p = std::fs::canonicalize(&p).unwrap_or(p);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() && p != Path::new("/") => dirs.push(p),
                Ok(m) if m.is_file() => files.push(p),
                _ => {}
            }
        }
        dirs.sort();
        dirs.dedup();
        let outer: Vec<PathBuf> = dirs
            .iter()
            .filter(|d| !dirs.iter().any(|o| o != *d && d.starts_with(o)))
            .cloned()
            .collect();
        files.retain(|f| !outer.iter().any(|o| f.starts_with(o)));
        setup.hide_dirs = outer.iter().map(|p| cstr(p)).collect();
        setup.hide_files = files.iter().map(|p| cstr(p)).collect();
        setup
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_else(|_| c"/nonexistent".into())
}

/// `/a`, `/a/b`, … up to and excluding `p`.
fn ancestors(p: &Path) -> Vec<CString> {
    let mut v: Vec<CString> = p
        .ancestors()
        .skip(1)
        .filter(|a| a.parent().is_some())
        .map(cstr)
        .collect();
    v.reverse();
    v
}
