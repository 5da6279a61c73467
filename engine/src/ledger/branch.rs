//! A separate ledger branch (`ledger.branch` other than `branch`, DESIGN section 13): taking
//! the watched branch's new commits into the ledger branch by a runner-signed merge whose
//! tree is made by one deterministic rule (`merged_tree`), and the checks `ledger verify`
//! adds for the commits only the ledger branch has. Never touches the watched branch, the
//! index or the working tree: the merge is objects and one reference update.
//!
//! The rule: the merge of watched commit `W` into ledger commit `L` holds `W`'s tree for every
//! path outside `runs/`, and under `runs/` the ledger's tree with the files that are not runner
//! paths (requests, cancels, READMEs) brought level with `W`: each such file that changed
//! between the watched commit `L` took in last (`taken`) and `W` is set to `W`'s version or
//! removed. Runner paths always come from `L`; a runner path changed on the watched branch is
//! never taken in (it is damage there, reported by `ledger verify` as on a single branch).

use std::collections::HashSet;

use gix::ObjectId;
use gix::objs::tree::EntryKind;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::{FullName, Target};

use super::diff::{self, Diff};
use super::{CommitSigner, Error, Ledger, git, is_runner_path};

impl Ledger {
    /// Reads requests, approvals, cancels, policy and trust from the reference `watched`
    /// (`refs/heads/main`, or `refs/remotes/origin/main` for a runner with a remote) and takes
    /// them into this ledger's branch with `take_in`.
    pub fn watching(mut self, watched: &str) -> Result<Ledger, Error> {
        self.set_watched(watched)?;
        Ok(self)
    }

    /// As `watching`, on an open ledger (the daemon learns its remote after opening).
    pub fn set_watched(&mut self, watched: &str) -> Result<(), Error> {
        let name = FullName::try_from(watched).map_err(git)?;
        self.watched = (name != self.branch).then_some(name);
        Ok(())
    }

    /// The watched reference, when it is not the ledger branch itself.
    pub fn watched(&self) -> Option<&str> {
        use gix::bstr::ByteSlice;
        self.watched.as_ref().and_then(|n| n.as_bstr().to_str().ok())
    }

    /// The watched branch's tip, when there is a separate one and it exists.
    pub fn watched_tip(&self) -> Option<ObjectId> {
        self.resolve(self.watched()?)
    }

    /// Takes the watched branch's new commits into the ledger branch: creates the ledger
    /// branch at the watched tip when it does not exist yet, else commits a runner-signed merge
    /// (first parent the ledger tip, second the watched tip; tree by `merged_tree`) when the
    /// watched tip is not the commit taken in last. Returns the new ledger tip, if it moved.
    pub fn take_in(&mut self, signer: &dyn CommitSigner) -> Result<Option<ObjectId>, Error> {
        let Some(watched) = self.watched_tip() else {
            return Ok(None);
        };
        for attempt in 0..5u32 {
            let tip = self.tip()?;
            let (new, expected) = match tip {
                None => (watched, PreviousValue::MustNotExist),
                Some(tip) => {
                    if tip == watched || self.taken(tip)? == watched {
                        return Ok(None);
                    }
                    let tree = self.merged_tree(tip, watched)?;
                    let message = format!(
                        "stella: take in {} at {}",
                        short_name(self.watched().unwrap_or("?")),
                        watched.to_hex_with_len(12)
                    );
                    let commit = self.signed_commit(tree, vec![tip, watched], &message, signer)?;
                    (commit, PreviousValue::MustExistAndMatch(Target::Object(tip)))
                }
            };
            let edit = RefEdit {
                change: Change::Update {
                    log: LogChange {
                        mode: RefLog::AndReference,
                        force_create_reflog: false,
                        message: "stella: take in the watched branch".into(),
                    },
                    expected,
                    new: Target::Object(new),
                },
                name: self.branch.clone(),
                deref: false,
            };
            match self.repo.edit_reference(edit) {
                Ok(_) => return Ok(Some(new)),
                Err(e) => {
                    self.refresh();
                    if self.tip()? == tip {
                        return Err(git(e));
                    }
                    tracing::debug!(attempt, error = %e, "ledger branch moved while taking in; retrying");
                }
            }
        }
        Err(Error::Contended {
            branch: self.branch().to_string(),
            attempts: 5,
        })
    }

    /// The watched commit that `commit` took in, when it is a runner's take-in merge on a
    /// separate ledger branch (its second parent).
    pub fn taken_by_merge(&self, commit: ObjectId) -> Option<ObjectId> {
        self.watched.as_ref()?;
        let c = self.repo.find_commit(commit).ok()?;
        let by_runner = c
            .committer()
            .ok()?
            .email
            .eq_ignore_ascii_case(self.identity.email.as_bytes());
        let parents: Vec<ObjectId> = c.parent_ids().map(|p| p.detach()).collect();
        match parents.as_slice() {
            [_, second] if by_runner => Some(*second),
            _ => None,
        }
    }

    /// The watched commit that ledger commit `commit` holds the non-runner files of: going
    /// back along first parents over the runner's own commits, the second parent of the first
    /// runner merge met, or the first commit that is not the runner's (where the ledger branch
    /// left the watched branch).
    pub fn taken(&self, commit: ObjectId) -> Result<ObjectId, Error> {
        Ok(self.taken_how(commit)?.0)
    }

    /// As `taken`, when a runner merge took it in (not the point where the ledger branch
    /// left the watched branch): the watched branch as the runner last saw it.
    pub fn last_taken_in(&self, commit: ObjectId) -> Result<Option<ObjectId>, Error> {
        let (taken, by_merge) = self.taken_how(commit)?;
        Ok(by_merge.then_some(taken))
    }

    /// `taken`, and whether a runner merge took it in.
    fn taken_how(&self, commit: ObjectId) -> Result<(ObjectId, bool), Error> {
        // The walk from one tip to the next stops at the last answer's tip: a runner busy
        // while the watched branch is quiet would otherwise walk back over all its commits.
        let last = self.taken.get();
        let mut at = commit;
        let found = loop {
            if let Some((tip, taken)) = last
                && tip == at
            {
                break taken;
            }
            let c = self.repo.find_commit(at).map_err(git)?;
            let by_runner = c
                .committer()
                .map_err(git)?
                .email
                .eq_ignore_ascii_case(self.identity.email.as_bytes());
            let parents: Vec<ObjectId> = c.parent_ids().map(|p| p.detach()).collect();
            match (by_runner, parents.as_slice()) {
                (true, [_, second]) => break (*second, true),
                (true, [first]) => at = *first,
                _ => break (at, false),
            }
        };
        self.taken.set(Some((commit, found)));
        Ok(found)
    }

    /// The tree of the merge of watched commit `watched` into ledger commit `ledger` (see the
    /// rule at the top of this file). Costs what changed on the watched branch since the
    /// commit the ledger took in last.
    pub fn merged_tree(&self, ledger: ObjectId, watched: ObjectId) -> Result<ObjectId, Error> {
        let base = self.taken(ledger)?;
        let runs_of = |c: ObjectId| -> Result<Option<ObjectId>, Error> {
            let root = self.repo.find_commit(c).map_err(git)?.tree().map_err(git)?;
            Ok(root
                .lookup_entry_by_path("runs")
                .map_err(git)?
                .filter(|e| e.mode().is_tree())
                .map(|e| e.oid().to_owned()))
        };
        let (base_runs, ledger_runs, watched_runs) = (runs_of(base)?, runs_of(ledger)?, runs_of(watched)?);
        let mut found = Diff {
            all: true,
            ..Diff::default()
        };
        diff::changes(self, "runs", base_runs, watched_runs, &mut found)?;
        let empty = ObjectId::empty_tree(self.repo.object_hash());
        let mut runs = self.repo.edit_tree(ledger_runs.unwrap_or(empty)).map_err(git)?;
        let watched_root = self.repo.find_commit(watched).map_err(git)?.tree().map_err(git)?;
        for (path, _, new) in &found.files {
            if is_runner_path(path) {
                continue;
            }
            let rel = path.strip_prefix("runs/").unwrap_or(path);
            match new {
                Some(id) => {
                    let kind = watched_root
                        .lookup_entry_by_path(path)
                        .map_err(git)?
                        .map_or(EntryKind::Blob, |e| e.mode().kind());
                    runs.upsert(rel, kind, *id).map_err(git)?;
                }
                None => {
                    runs.remove(rel).map_err(git)?;
                }
            }
        }
        let runs = runs.write().map_err(git)?.detach();
        let mut root = self.repo.edit_tree(watched_root.id).map_err(git)?;
        if runs == empty {
            root.remove("runs").map_err(git)?;
        } else {
            root.upsert("runs", EntryKind::Tree, runs).map_err(git)?;
        }
        Ok(root.write().map_err(git)?.detach())
    }
}

/// A branch's name as people say it: `main` for `refs/heads/main` and `refs/remotes/origin/main`.
fn short_name(full: &str) -> &str {
    if let Some(rest) = full.strip_prefix("refs/heads/") {
        return rest;
    }
    full.strip_prefix("refs/remotes/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(full, |(_, branch)| branch)
}

/// What `ledger verify` adds with a separate ledger branch: every commit on the ledger
/// branch's first-parent chain that the watched branch does not hold must be the runner's: a
/// merge signed by a trusted runner whose tree is exactly `merged_tree` of its parents, or a
/// trusted runner commit that changes nothing outside `runs/`. The watched commits themselves
/// are checked by the walk over the whole history, as persons' commits always are. The walk
/// stops at `from` (a proven checkpoint's tip) when given. `trusted(commit, trust_from)` says
/// why a commit is not signed by a runner that `trust_from`'s signers trust, if it is not.
/// Returns (commit, problem) for each breach.
pub(super) fn check(
    ledger: &Ledger,
    tip: ObjectId,
    from: Option<ObjectId>,
    trusted: &mut dyn FnMut(ObjectId, ObjectId) -> Result<(), String>,
) -> Result<Vec<(String, String)>, Error> {
    let mut problems = Vec::new();
    if ledger.watched.is_none() {
        return Ok(problems);
    }
    // The first-parent chain, and what the watched branch holds: everything reachable from
    // its tip and from the second parents of the chain's merges (a runner's clone may hold
    // an old `main`; the merges name the newer ones).
    let mut chain = Vec::new();
    let mut at = Some(tip);
    while let Some(commit) = at.filter(|c| Some(*c) != from) {
        let parents = ledger.parents(commit)?;
        at = parents.first().copied();
        chain.push((commit, parents));
    }
    let seeds: Vec<ObjectId> = ledger
        .watched_tip()
        .into_iter()
        .chain(chain.iter().filter_map(|(_, p)| p.get(1).copied()))
        .collect();
    let mut on_watched = HashSet::new();
    if !seeds.is_empty() {
        for info in ledger.repo.rev_walk(seeds).all().map_err(git)? {
            on_watched.insert(info.map_err(git)?.id);
        }
    }
    for (commit, parents) in chain {
        if on_watched.contains(&commit) {
            break;
        }
        let mut problem = |message: String| problems.push((commit.to_hex_with_len(12).to_string(), message));
        let Some(&first) = parents.first() else {
            problem(
                "a root commit only the ledger branch has: the ledger branch must start on the watched branch".into(),
            );
            continue;
        };
        if let Err(why) = trusted(commit, first) {
            problem(format!(
                "a commit on the ledger branch that is not a trusted runner commit ({why}); only the runner writes the ledger branch"
            ));
        }
        match parents.as_slice() {
            [_, second] => {
                let tree = ledger
                    .repo
                    .find_commit(commit)
                    .map_err(git)?
                    .tree_id()
                    .map_err(git)?
                    .detach();
                if ledger.merged_tree(first, *second)? != tree {
                    problem(format!(
                        "the merge of {} is not the runner's: its tree is not the watched commit's files with the ledger's runner files",
                        second.to_hex_with_len(12)
                    ));
                }
            }
            [_] => {
                if outside_runs(ledger, first)? != outside_runs(ledger, commit)? {
                    problem("a commit only the ledger branch has changes files outside runs/ (the runner writes only run directories there)".into());
                }
            }
            _ => problem("a merge of more than two parents on the ledger branch".into()),
        }
    }
    Ok(problems)
}

/// A commit's root entries other than `runs`, as (name, id).
fn outside_runs(ledger: &Ledger, commit: ObjectId) -> Result<Vec<(Vec<u8>, ObjectId)>, Error> {
    let tree = ledger.repo.find_commit(commit).map_err(git)?.tree().map_err(git)?;
    let mut out = Vec::new();
    for e in tree.iter() {
        let e = e.map_err(git)?;
        if e.filename() != "runs" {
            out.push((e.filename().to_vec(), e.oid().to_owned()));
        }
    }
    Ok(out)
}
