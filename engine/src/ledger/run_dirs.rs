//! Every run directory of a commit, in both layouts (`crate::layout`): the shards'
//! `runs/_<xx>/<id>` and the flat `runs/<id>` of older runs. A walk of the whole `runs/` tree,
//! for what must see every run at one commit (a pull request's notes, a token's owner, a
//! scan without its index); what follows a branch commit by commit diffs instead
//! (`requests_added`).

use gix::ObjectId;

use super::diff::{Diff, changes};
use super::{Error, Ledger};
use crate::layout::{self, RunDir};

/// What `run_dirs` found: each run directory with its tree id (flat ones first, then by
/// shard), and the paths under `runs/` that are neither a run nor a shard, or a run in a
/// shard it does not hash to, or a sharded run whose id a flat run already has.
#[derive(Debug, Default)]
pub struct RunDirs {
    pub runs: Vec<(RunDir, ObjectId)>,
    pub ignored: Vec<String>,
}

impl Ledger {
    /// Every run directory under `runs/` at `commit`. A `README.md` is neither reported nor a run.
    pub fn run_dirs(&self, commit: ObjectId) -> Result<RunDirs, Error> {
        let mut found = RunDirs::default();
        let mut shards = Vec::new();
        for (name, is_dir, oid) in self.entries(commit, "runs")? {
            if is_dir && layout::is_shard(&name) {
                shards.push(name);
            } else if is_dir && crate::run_id::is_valid(&name) {
                found.runs.push((RunDir::flat(&name), oid));
            } else if name != "README.md" {
                found.ignored.push(format!("runs/{name}"));
            }
        }
        let flat: std::collections::HashSet<String> = found.runs.iter().map(|(d, _)| d.id.clone()).collect();
        for shard in shards {
            for (name, is_dir, oid) in self.entries(commit, &format!("runs/{shard}"))? {
                let dir = RunDir::new(&name);
                if !is_dir || !crate::run_id::is_valid(&name) || layout::shard(&name) != shard || flat.contains(&name) {
                    found.ignored.push(format!("runs/{shard}/{name}"));
                    continue;
                }
                found.runs.push((dir, oid));
            }
        }
        Ok(found)
    }

    /// The runs with any file that differs between `base` and `head` (added, changed or
    /// removed), each once: only the shards that differ are read.
    pub fn runs_changed(&self, base: ObjectId, head: ObjectId) -> Result<Vec<RunDir>, Error> {
        let runs_tree = |commit: ObjectId| super::verify::entry_at(self, commit, "runs", true);
        let mut diff = Diff::default();
        changes(self, "runs", runs_tree(base)?, runs_tree(head)?, &mut diff)?;
        let mut dirs: Vec<RunDir> = diff
            .files
            .into_iter()
            .filter_map(|(path, _, _)| match layout::classify(&path) {
                Some((layout::Area::Runs, dir, rest)) if !rest.is_empty() => Some(dir),
                _ => None,
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        Ok(dirs)
    }

    /// The runs whose request `head` has and `base` has not (a pull request's new requests),
    /// found by diffing the two `runs/` trees: only the shards that differ are read.
    pub fn requests_added(&self, base: Option<ObjectId>, head: ObjectId) -> Result<Vec<RunDir>, Error> {
        let runs_tree = |commit: ObjectId| super::verify::entry_at(self, commit, "runs", true);
        let old = base.map(runs_tree).transpose()?.flatten();
        let mut diff = Diff::default();
        changes(self, "runs", old, runs_tree(head)?, &mut diff)?;
        Ok(diff
            .files
            .into_iter()
            .filter(|(_, before, after)| before.is_none() && after.is_some())
            .filter_map(|(path, _, _)| match layout::classify(&path) {
                Some((layout::Area::Runs, dir, "request.yaml")) => Some(dir),
                _ => None,
            })
            .collect())
    }
}
