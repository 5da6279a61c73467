//! What the HTTP edge reads: the repository's branch at its tip, opened afresh for each
//! request (so every answer is the branch as it is now), through the engine's own readers:
//! `runs::scan` for lists (with the runs index read, never written), `runs::view` and the
//! fold for one run, `Ledger::locate` for where a run's files are. Blocking; called on the
//! runtime's blocking threads. Never writes anything.

use std::path::PathBuf;

use gix::ObjectId;
use stella_engine::layout::RunDir;
use stella_engine::ledger::Ledger;
use stella_engine::runs::{self, RunView, Summary};

use super::errors::ApiError;
use crate::failure::Failure;
use crate::repo;

/// The repository served: its root, its branch (fixed at start, as the daemon's is), and the
/// runner key that authenticates the runs index, when there is one.
#[derive(Debug, Clone)]
pub struct Source {
    pub root: PathBuf,
    pub git_dir: PathBuf,
    config: stella_engine::config::Config,
    key: Option<PathBuf>,
}

/// The branch at one tip.
pub struct At {
    pub ledger: Ledger,
    pub tip: Option<ObjectId>,
}

impl Source {
    pub fn open(root: PathBuf, key: Option<PathBuf>) -> Result<Source, Failure> {
        let config = repo::config_at_head(&root)?;
        // Fails early on a ledger branch the readers cannot follow.
        repo::open_ledger(&root, &config)?;
        Ok(Source {
            git_dir: repo::git_dir(&root),
            root,
            config,
            key,
        })
    }

    /// The ledger, opened now, and its tip.
    pub fn at(&self) -> Result<At, ApiError> {
        let ledger = repo::open_ledger(&self.root, &self.config)?;
        let tip = ledger.tip().map_err(Failure::from)?;
        Ok(At { ledger, tip })
    }

    /// Every run on the branch, as the scan summarises it (the runs index, if this clone has
    /// one, spares reading unchanged runs; it is never written here).
    pub fn summaries(&self, at: &At) -> Result<Vec<Summary>, ApiError> {
        let Some(tip) = at.tip else { return Ok(Vec::new()) };
        let index = match stella_engine::keys::SshKey::load(&repo::key_path(&self.root, self.key.as_deref())) {
            Ok(key) => runs::Index::open(at.ledger.git_dir(), &key),
            Err(_) => runs::Index::none(),
        };
        let mut index = index.read_only();
        Ok(runs::scan(&at.ledger, tip, &mut index).map_err(Failure::from)?.runs)
    }
}

impl At {
    /// Run `id` (already checked against the run id rule) as the branch and the local journal
    /// tell it, every event whole (`full`) or `step.log` lines left out; 404 when the branch has
    /// no such run.
    pub fn run(&self, id: &str, full: bool) -> Result<RunView, ApiError> {
        let tip = self.tip.ok_or_else(|| ApiError::no_run(id))?;
        let view = view(&self.ledger, tip, id, full);
        if view.invalid.is_none() && !view.has_request && view.events().is_empty() {
            return Err(ApiError::no_run(id));
        }
        Ok(view)
    }

    /// As `run`, for a run the scan listed: whatever its directory holds, it is shown.
    pub fn listed(&self, id: &str) -> Result<RunView, ApiError> {
        let tip = self.tip.ok_or_else(|| ApiError::no_run(id))?;
        Ok(view(&self.ledger, tip, id, false))
    }

    /// Where run `id`'s files are, if it has a directory on the branch.
    pub fn locate(&self, id: &str) -> Result<Option<RunDir>, ApiError> {
        let Some(tip) = self.tip else { return Ok(None) };
        Ok(self.ledger.locate(tip, id).map_err(Failure::from)?)
    }

    /// A file of the branch at the tip.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, ApiError> {
        let Some(tip) = self.tip else { return Ok(None) };
        Ok(self.ledger.read(tip, path).map_err(Failure::from)?)
    }
}

fn view(ledger: &Ledger, tip: ObjectId, id: &str, full: bool) -> RunView {
    if full {
        runs::view(ledger, tip, id)
    } else {
        runs::view_for_state(ledger, tip, id)
    }
}

/// A run id from a path or a cursor, by its rule: 400 otherwise.
pub fn run_id(id: &str) -> Result<&str, ApiError> {
    if stella_engine::run_id::is_valid(id) {
        Ok(id)
    } else {
        Err(ApiError::bad(format!(
            "`{}` is not a run id (^[a-z0-9][a-z0-9._-]{{0,99}}$)",
            id.escape_default().take(120).collect::<String>()
        )))
    }
}
