//! Finding the repository a command works on, its runner key, its policy and the ledger:
//! shared by the commands and the daemon. Only finds and opens; never writes (the runs index
//! it opens is written by `runs::scan`).

use std::path::{Path, PathBuf};

use stella_engine::Code;
use stella_engine::config::{CONFIG_PATH, Config};
use stella_engine::keys::SshKey;
use stella_engine::ledger::Ledger;

use crate::failure::Failure;

/// The working tree of the repository containing `start` (searching upwards).
pub fn find_root(start: &Path) -> Result<PathBuf, Failure> {
    let start = std::path::absolute(start).unwrap_or_else(|_| start.to_path_buf());
    let mut dir = start.as_path();
    loop {
        if dir.join(".git").exists() {
            return Ok(dir.to_path_buf());
        }
        match dir.parent() {
            Some(p) => dir = p,
            None => {
                return Err(Failure::one(
                    Code::Usage,
                    format!(
                        "{}: not inside a git repository (run `stella init` first)",
                        start.display()
                    ),
                ));
            }
        }
    }
}

/// The git directory of the repository at `root`.
pub fn git_dir(root: &Path) -> PathBuf {
    root.join(".git")
}

/// Where the runner key lives: `--key`, else `STELLA_RUNNER_KEY`, else `.git/stella/runner_ed25519`.
pub fn key_path(root: &Path, key: Option<&Path>) -> PathBuf {
    key.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("STELLA_RUNNER_KEY").map(PathBuf::from))
        .unwrap_or_else(|| git_dir(root).join("stella").join("runner_ed25519"))
}

pub fn load_key(root: &Path, key: Option<&Path>) -> Result<SshKey, Failure> {
    let path = key_path(root, key);
    SshKey::load(&path).map_err(|e| {
        let hint = if path.exists() {
            String::new()
        } else {
            " (run `stella init` to create the runner key, or pass --key)".into()
        };
        Failure::one(e.code(), format!("{e}{hint}"))
    })
}

/// The local runs index of `ledger`'s repository, authenticated with the runner key (`--key`
/// is the daemon's; readers use `STELLA_RUNNER_KEY` or the default path). Without a readable
/// key there is none and every scan reads git.
pub fn runs_index(root: &Path, ledger: &Ledger) -> stella_engine::runs::Index {
    match SshKey::load(&key_path(root, None)) {
        Ok(key) => stella_engine::runs::Index::open(ledger.git_dir(), &key),
        Err(_) => stella_engine::runs::Index::none(),
    }
}

/// The repository policy as committed on HEAD (defaults when absent); broken config is an error.
pub fn config_at_head(root: &Path) -> Result<Config, Failure> {
    let repo = gix::open(root).map_err(|e| Failure::one(Code::Usage, format!("{}: {e}", root.display())))?;
    let Ok(commit) = repo.head_commit() else {
        return Ok(Config::default());
    };
    let tree = commit.tree().map_err(|e| Failure::one(Code::Io, e.to_string()))?;
    let Some(entry) = tree
        .lookup_entry_by_path(CONFIG_PATH)
        .map_err(|e| Failure::one(Code::Io, e.to_string()))?
    else {
        return Ok(Config::default());
    };
    let blob = repo
        .find_blob(entry.oid())
        .map_err(|e| Failure::one(Code::Io, e.to_string()))?;
    Ok(Config::parse(CONFIG_PATH, &String::from_utf8_lossy(&blob.data))?)
}

/// The policy in the working tree (for `run request`, which plans what is about to be committed).
pub fn config_in_worktree(root: &Path) -> Result<Config, Failure> {
    match std::fs::read_to_string(root.join(CONFIG_PATH)) {
        Ok(text) => Ok(Config::parse(CONFIG_PATH, &text)?),
        Err(_) => Ok(Config::default()),
    }
}

/// The ledger: the ledger branch, taking in `branch` when it is a separate one (DESIGN
/// section 13). Every reader of runs goes through here, so all read the ledger branch.
pub fn open_ledger(root: &Path, config: &Config) -> Result<Ledger, Failure> {
    let ledger = Ledger::open(root, config.ledger_branch())?;
    if config.ledger_branch() == config.branch {
        return Ok(ledger);
    }
    Ok(ledger.watching(&format!("refs/heads/{}", config.branch))?)
}
