//! What every run of one daemon shares (`Environment`): the ledger, the runner key, secrets,
//! paths the steps must not see, the fenced runs, the observer, and the reads every room of
//! `runs` makes through the shared ledger. Decides nothing about a run.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gix::ObjectId;

use super::Error;
use crate::config::{CONFIG_PATH, Config};
use crate::layout::RunDir;
use crate::ledger::Ledger;

/// What every run of one daemon shares.
pub struct Environment {
    pub ledger: Mutex<Ledger>,
    pub git_dir: PathBuf,
    /// The runner key: signs ledger commits (namespace git) and evidence (DSSE).
    pub key: Arc<crate::keys::SshKey>,
    /// Secrets from `--secrets FILE`; others come from `STELLA_SECRET_<NAME>`.
    pub file_secrets: BTreeMap<String, String>,
    pub kill_grace: Duration,
    /// Runs this runner must not write any more: another runner took over their claim.
    pub fenced: Mutex<HashSet<String>>,
    /// Where run workspaces live (`runs::default_work_root` unless `--work-dir`).
    pub work_root: PathBuf,
    /// The runner's own paths no step may see: the repository, `.git`, the work root, the key
    /// and secrets files (the sandbox covers them).
    pub hidden: Vec<PathBuf>,
    /// Keep the workspace of a failed run (`--keep-work`); others are removed after the final commit.
    pub keep_work: bool,
    /// Chaos hooks (`--chaos FILE`), handed to the executor and the gates.
    pub chaos: Option<Arc<crate::chaos::Chaos>>,
    /// Told of every event this runner records (the watcher's metrics).
    pub observer: Option<Arc<dyn super::Observer>>,
    /// Commits' first parents, as read once (a commit never changes): finding where each of
    /// a batch of requests arrived walks the same stretch of history (`trust`).
    pub first_parents: super::trust::FirstParents,
    /// Which requests carry which run token, brought up to date commit by commit (`planning`).
    pub tokens: super::tokens::Tokens,
    /// Runs' ledger commits falling due together, made as one (`group`).
    pub commits: super::group::Group,
}

impl Environment {
    /// Whether another runner took run `id` over (see `fenced`).
    pub fn is_fenced(&self, id: &str) -> bool {
        self.fenced.lock().unwrap_or_else(|p| p.into_inner()).contains(id)
    }

    /// Lets this runner write run `id` again (it holds the claim anew).
    pub fn unfence(&self, id: &str) {
        self.fenced.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Stops this runner writing run `id`: its results from now on stay out of the ledger.
    pub fn fence(&self, id: &str) {
        self.fenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
    }

    /// The shared ledger, held until the guard is dropped (a panicked holder does not poison it).
    pub(super) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The branch tip now (references written by others re-read first).
    pub(super) fn tip(&self) -> Result<ObjectId, Error> {
        let mut ledger = self.ledger();
        ledger.refresh();
        ledger.tip()?.ok_or(Error::NoCommits)
    }

    /// Where run `id` lives at the branch tip now (or goes, when it has no directory yet).
    pub fn run_dir(&self, id: &str) -> Result<RunDir, Error> {
        let tip = self.tip()?;
        Ok(self.ledger().run_dir(tip, id)?)
    }

    /// The text of `path` at `commit`, if it is a file there and can be read.
    pub(super) fn read_text(&self, commit: ObjectId, path: &str) -> Option<String> {
        self.ledger()
            .read(commit, path)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The repository policy at `commit` (defaults when there is none or it is broken; a broken
    /// config is reported by `stella doctor` and the daemon's start-up, not per run).
    pub(super) fn config_at(&self, commit: ObjectId) -> Config {
        self.read_text(commit, CONFIG_PATH)
            .and_then(|t| Config::parse(CONFIG_PATH, &t).ok())
            .unwrap_or_default()
    }
}
