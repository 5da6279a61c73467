//! What every story of the `stella` binary is told with: a scratch directory for `stella
//! pack run` (`scratch`), a git repository for the daemon and the ledger (`repo`), a daemon
//! started in the background that cannot outlive its test (`daemon`), and processes seen from
//! outside a step (`procs`). Nothing here asserts a product behaviour; the stories do.

mod daemon;
pub mod http;
mod procs;
mod repo;
mod scratch;
pub mod servers;
pub mod webdriver;

pub use daemon::Daemon;
pub use procs::{all_gone, marker, pids_with, shared_dir, wait_for_process};
pub use repo::{HELLO, Repo, Stella};
pub use scratch::{Ran, Scratch};

use std::process::Command;
use std::time::{Duration, Instant};

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(20);

/// Where `stella run request` puts run `id`: its shard's directory, `runs/_<xx>/<id>`.
pub fn run_path(id: &str) -> String {
    stella_engine::layout::RunDir::new(id).dir()
}

/// Where `stella approve` puts the approvals of a run in its shard: `approvals/_<xx>/<id>`.
pub fn approvals_path(id: &str) -> String {
    stella_engine::layout::RunDir::new(id).approvals()
}

/// A new passphrase-less Ed25519 key `dir/name` made by ssh-keygen; its public line.
pub fn keygen(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(name);
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// git in `dir` as a person (Ops) would run it, with `env` set; asserts success; its stdout.
pub fn git_env(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .envs(env.iter().copied())
        .args([
            "-c",
            "user.name=Ops",
            "-c",
            "user.email=ops@example.com",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `git_env` with the environment as it is.
pub fn git_in(dir: &std::path::Path, args: &[&str]) -> String {
    git_env(dir, &[], args)
}

/// The binary under test.
pub fn stella() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stella"));
    cmd.env_remove("STELLA_LOG");
    cmd
}

/// Looks at `until` every 20 ms for up to `within`; whether it came true.
pub fn poll(within: Duration, mut until: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if until() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Waits up to `within` for `until` to come true; panics naming `what` was awaited if it
/// does not. The way to wait for something to happen: never a fixed sleep.
pub fn wait_for(what: &str, within: Duration, until: impl FnMut() -> bool) {
    assert!(poll(within, until), "waited {within:?} for {what}, in vain");
}
