//! The git ledger: reading the watched branch (commits, trees, files) and committing runner
//! files back as signed commits, built from the branch tip's tree (never the index), moved
//! by compare-and-swap, with the index and working tree updated for the runner's paths only.
//! Every repository the engine opens with gix is opened here (`open_repo`).

mod branch;
pub mod checkpoint;
mod diff;
pub mod events;
pub mod heal;
mod index_file;
pub mod maintenance;
pub mod notes;
mod open;
mod repair;
pub mod run_dirs;
pub mod scheduled;
pub mod seen;
pub mod verify;
mod worktree;

pub use open::open_repo;
pub use repair::{Repaired, remove_stale_ref_locks};

use std::path::{Path, PathBuf};

use gix::ObjectId;
use gix::bstr::ByteSlice;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::{FullName, Target};

use crate::code::Code;
use crate::layout::{Area, RunDir};

/// A gix failure: gix has an error type per operation; the ledger keeps it whole as the source.
pub type GitError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A ledger failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: not a git repository with a working tree ({source})")]
    NotARepo {
        path: String,
        #[source]
        source: GitError,
    },
    #[error("{path}: not a git repository with a working tree (bare repository)")]
    Bare { path: String },
    #[error("git: {0}")]
    Git(#[source] GitError),
    #[error("git: {path}: symlinks are not allowed in packs")]
    Symlink { path: String },
    #[error("branch {branch} moved {attempts} times while committing; giving up")]
    Contended { branch: String, attempts: u32 },
    #[error("`{0}` is not a runner path; the runner only writes under runs/<run-id>/")]
    NotRunnerPath(String),
    #[error("{path}: {what}; a private key is never committed (the file is not written)")]
    PrivateKey { path: String, what: &'static str },
    /// A working tree file (or directory) could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An object the working tree needs could not be read from the repository.
    #[error("{path}: {source}")]
    Object {
        path: String,
        #[source]
        source: GitError,
    },
    /// The tip's tree could not be walked to bring the working tree in line with it.
    #[error("{0}")]
    Tree(#[source] GitError),
    #[error("cannot read the index: {0}")]
    ReadIndex(#[source] GitError),
    #[error("cannot write the index: {0}")]
    WriteIndex(#[source] GitError),
    #[error("cannot replace the index: {0}")]
    ReplaceIndex(#[source] std::io::Error),
    #[error("the index is locked by another process ({0}); if no git command is running, remove .git/index.lock")]
    IndexLocked(#[source] GitError),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::NotARepo { .. } | Error::Bare { .. } | Error::NotRunnerPath(_) => Code::Usage,
            Error::PrivateKey { .. } => Code::LedgerSecret,
            Error::Git(_)
            | Error::Symlink { .. }
            | Error::Contended { .. }
            | Error::File { .. }
            | Error::Object { .. }
            | Error::Tree(_)
            | Error::ReadIndex(_)
            | Error::WriteIndex(_)
            | Error::ReplaceIndex(_)
            | Error::IndexLocked(_) => Code::Io,
        }
    }

    /// A working tree file that could not be read or written.
    pub(crate) fn file(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::File {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A file read within a size limit (`Ledger::read_within`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Within {
    Read(Vec<u8>),
    /// Larger than the limit: not read; its size in bytes.
    TooLarge(u64),
}

fn git(e: impl Into<GitError>) -> Error {
    Error::Git(e.into())
}

/// Produces the armored SSH signature (namespace `git`) for a commit's bytes.
pub trait CommitSigner {
    fn sign_commit(&self, payload: &[u8]) -> String;

    /// Forms of the signer's private key that no commit may hold (see `SshKey::secret_forms`).
    fn secret_forms(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One file the runner writes: its repository path and full new content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Who runner commits are by.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            name: "Stella Runner".into(),
            email: "runner@stella.invalid".into(),
        }
    }
}

/// An open repository and the branch the runner reads and writes.
pub struct Ledger {
    repo: gix::Repository,
    workdir: PathBuf,
    branch: FullName,
    /// The branch requests come from, when it is not `branch` (see `branch.rs`).
    watched: Option<FullName>,
    /// The last answer of `taken`: (ledger commit, (watched commit it holds, by a merge)).
    taken: std::cell::Cell<Option<(ObjectId, (ObjectId, bool))>>,
    identity: Identity,
    /// Index entries of this runner's commits not yet in git's index (see `worktree`).
    index: worktree::Pending,
    /// When the pack directory last changed, as of the last (re)open (see `refresh`).
    packs_changed: Option<std::time::SystemTime>,
}

/// Paths the runner may write: files in a run directory (`runs/_<xx>/<id>/<file>` or a flat
/// `runs/<id>/<file>`) but the request and the cancel file, nothing else.
pub fn is_runner_path(path: &str) -> bool {
    if path.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        return false;
    }
    match crate::layout::classify(path) {
        Some((Area::Runs, _, rest)) => {
            let first = rest.split('/').next().unwrap_or_default();
            !first.is_empty() && first != "request.yaml" && first != "cancel.yaml"
        }
        _ => false,
    }
}

impl Ledger {
    /// Opens the repository at `dir` (its working tree) and the branch `branch` (e.g. `main`).
    pub fn open(dir: &Path, branch: &str) -> Result<Ledger, Error> {
        let path = || dir.display().to_string();
        let not = |source: GitError| Error::NotARepo { path: path(), source };
        let repo = open_repo(dir).map_err(|e| not(e.into()))?;
        let workdir = repo
            .workdir()
            .map(Path::to_path_buf)
            .ok_or_else(|| Error::Bare { path: path() })?;
        let branch = FullName::try_from(format!("refs/heads/{branch}")).map_err(|e| not(e.into()))?;
        Ok(Ledger {
            repo,
            workdir,
            branch,
            watched: None,
            taken: std::cell::Cell::new(None),
            identity: Identity::default(),
            index: worktree::Pending::default(),
            packs_changed: None,
        })
    }

    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    pub fn git_dir(&self) -> &Path {
        self.repo.git_dir()
    }

    pub fn branch(&self) -> &str {
        self.branch.as_bstr().to_str().unwrap_or("refs/heads/?")
    }

    /// Makes sure references and objects written by others are seen. References and loose
    /// objects are read from disk at every lookup anyway; the object store's list of packs is
    /// what an open repository holds on to, so the repository is re-opened when the pack
    /// directory changed since (a repack, a fetch), and kept otherwise, with its cache of
    /// decoded objects (re-opening at every call cost a runner more than its commits).
    pub fn refresh(&mut self) {
        let changed = std::fs::metadata(self.repo.common_dir().join("objects").join("pack"))
            .and_then(|m| m.modified())
            .ok();
        if changed.is_some() && changed == self.packs_changed {
            return;
        }
        if let Ok(repo) = open_repo(&self.workdir) {
            self.repo = repo;
            self.packs_changed = changed;
        }
    }

    /// The commit a reference (`refs/notes/stella`, ...) points at, if it exists.
    pub fn resolve(&self, name: &str) -> Option<ObjectId> {
        let mut r = self.repo.try_find_reference(name).ok().flatten()?;
        Some(r.peel_to_id().ok()?.detach())
    }

    /// The branch tip, if the branch exists.
    pub fn tip(&self) -> Result<Option<ObjectId>, Error> {
        match self.repo.try_find_reference(self.branch.as_ref()).map_err(git)? {
            Some(mut r) => Ok(Some(r.peel_to_id().map_err(git)?.detach())),
            None => Ok(None),
        }
    }

    /// The content of `path` in `commit`, if it is a file there.
    pub fn read(&self, commit: ObjectId, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let tree = self.repo.find_commit(commit).map_err(git)?.tree().map_err(git)?;
        let Some(entry) = tree.lookup_entry_by_path(path).map_err(git)? else {
            return Ok(None);
        };
        if !entry.mode().is_blob() {
            return Ok(None);
        }
        let blob = self.repo.find_blob(entry.oid()).map_err(git)?;
        Ok(Some(blob.data.clone()))
    }

    /// The content of `path` in `commit` if it is a file of at most `limit` bytes; for a larger
    /// one only its size, taken from the object's header without inflating it.
    pub fn read_within(&self, commit: ObjectId, path: &str, limit: u64) -> Result<Option<Within>, Error> {
        let tree = self.repo.find_commit(commit).map_err(git)?.tree().map_err(git)?;
        let Some(entry) = tree.lookup_entry_by_path(path).map_err(git)? else {
            return Ok(None);
        };
        if !entry.mode().is_blob() {
            return Ok(None);
        }
        let size = self.repo.find_header(entry.oid()).map_err(git)?.size();
        if size > limit {
            return Ok(Some(Within::TooLarge(size)));
        }
        let blob = self.repo.find_blob(entry.oid()).map_err(git)?;
        Ok(Some(Within::Read(blob.data.clone())))
    }

    /// Names of the entries of directory `path` in `commit` (empty when absent), with whether each is a tree.
    pub fn list(&self, commit: ObjectId, path: &str) -> Result<Vec<(String, bool)>, Error> {
        Ok(self
            .entries(commit, path)?
            .into_iter()
            .map(|(name, is_tree, _)| (name, is_tree))
            .collect())
    }

    /// Where run `id` lives in `commit`: its flat directory `runs/<id>` when there is one (an
    /// older run; it wins over a later sharded request of the same id), else its shard's
    /// `runs/_<xx>/<id>`, else `None`.
    pub fn locate(&self, commit: ObjectId, id: &str) -> Result<Option<RunDir>, Error> {
        let root = self.repo.find_commit(commit).map_err(git)?.tree().map_err(git)?;
        for dir in [RunDir::flat(id), RunDir::new(id)] {
            if let Some(e) = root.lookup_entry_by_path(dir.dir()).map_err(git)?
                && e.mode().is_tree()
            {
                return Ok(Some(dir));
            }
        }
        Ok(None)
    }

    /// Where run `id` lives in `commit` (`locate`), or where a new run of that id goes (its shard).
    pub fn run_dir(&self, commit: ObjectId, id: &str) -> Result<RunDir, Error> {
        Ok(self.locate(commit, id)?.unwrap_or_else(|| RunDir::new(id)))
    }

    /// As `list`, with each entry's object id: what a cache keys a directory's content by.
    pub fn entries(&self, commit: ObjectId, path: &str) -> Result<Vec<(String, bool, ObjectId)>, Error> {
        let root = self.repo.find_commit(commit).map_err(git)?.tree().map_err(git)?;
        let tree = if path.is_empty() {
            root
        } else {
            match root.lookup_entry_by_path(path).map_err(git)? {
                Some(e) if e.mode().is_tree() => self.repo.find_tree(e.oid()).map_err(git)?,
                _ => return Ok(Vec::new()),
            }
        };
        let mut out = Vec::new();
        for entry in tree.iter() {
            let entry = entry.map_err(git)?;
            out.push((
                entry.filename().to_str_lossy().into_owned(),
                entry.mode().is_tree(),
                entry.oid().to_owned(),
            ));
        }
        Ok(out)
    }

    /// Every file under `dir` in `commit`, as (path relative to `dir`, content, executable).
    pub fn files_under(&self, commit: ObjectId, dir: &str) -> Result<Vec<(String, Vec<u8>, bool)>, Error> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let full = if rel.is_empty() {
                dir.to_string()
            } else {
                format!("{dir}/{rel}")
            };
            for (name, is_tree) in self.list(commit, &full)? {
                let child = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                if is_tree {
                    stack.push(child);
                } else {
                    let path = format!("{dir}/{child}");
                    let tree = self.repo.find_commit(commit).map_err(git)?.tree().map_err(git)?;
                    let entry = tree.lookup_entry_by_path(&path).map_err(git)?.expect("listed just now");
                    if entry.mode().is_link() {
                        return Err(Error::Symlink { path });
                    }
                    let executable = entry.mode().is_executable();
                    let blob = self.repo.find_blob(entry.oid()).map_err(git)?;
                    out.push((child, blob.data.clone(), executable));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Whether `ancestor` is reachable from `descendant` (history not rewritten past it).
    pub fn is_ancestor(&self, ancestor: ObjectId, descendant: ObjectId) -> Result<bool, Error> {
        if ancestor == descendant {
            return Ok(true);
        }
        let walk = self.repo.rev_walk([descendant]).all().map_err(git)?;
        for info in walk {
            if info.map_err(git)?.id == ancestor {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every commit reachable from `tip`, oldest first.
    pub fn history_of(&self, tip: ObjectId) -> Result<Vec<ObjectId>, Error> {
        let mut out = Vec::new();
        for info in self.repo.rev_walk([tip]).all().map_err(git)? {
            out.push(info.map_err(git)?.id);
        }
        out.reverse();
        Ok(out)
    }

    /// A commit's raw object (headers and message), for signature checks.
    pub fn raw_commit(&self, id: ObjectId) -> Result<Vec<u8>, Error> {
        Ok(self.repo.find_object(id).map_err(git)?.data.clone())
    }

    /// The parents of a commit.
    pub fn parents(&self, id: ObjectId) -> Result<Vec<ObjectId>, Error> {
        let c = self.repo.find_commit(id).map_err(git)?;
        Ok(c.parent_ids().map(|p| p.detach()).collect())
    }

    /// Commits `writes` on top of the branch tip as one signed commit, retrying when someone
    /// else moves the branch meanwhile, then brings the index and working tree up to date for
    /// exactly those paths. Returns the new commit.
    pub fn commit(
        &mut self,
        writes: &[FileWrite],
        message: &str,
        signer: &dyn CommitSigner,
    ) -> Result<ObjectId, Error> {
        for w in writes {
            if !is_runner_path(&w.path) {
                return Err(Error::NotRunnerPath(w.path.clone()));
            }
        }
        self.commit_paths(writes, message, signer)
    }

    /// As `commit`, for paths the caller has checked (`commit` or `commit_scheduled`).
    fn commit_paths(
        &mut self,
        writes: &[FileWrite],
        message: &str,
        signer: &dyn CommitSigner,
    ) -> Result<ObjectId, Error> {
        let key = signer.secret_forms();
        for w in writes {
            // A plan is made of the pack's files, which the repository already holds: a key
            // block written into a pack's script is no leak of the runner's, and refusing it
            // would leave that run uncommittable for good. The runner key itself never passes.
            let forms_only = w.path.ends_with("/plan.json");
            let found = if forms_only {
                crate::redact::runner_key_in(&w.bytes, &key)
            } else {
                crate::redact::private_key_in(&w.bytes, &key)
            };
            if let Some(what) = found {
                return Err(Error::PrivateKey {
                    path: w.path.clone(),
                    what,
                });
            }
        }
        const ATTEMPTS: u32 = 20;
        for attempt in 0..ATTEMPTS {
            let tip = self.tip()?;
            let base_tree = match tip {
                Some(t) => self.repo.find_commit(t).map_err(git)?.tree_id().map_err(git)?.detach(),
                None => ObjectId::empty_tree(self.repo.object_hash()),
            };
            let mut editor = self.repo.edit_tree(base_tree).map_err(git)?;
            let mut blobs = Vec::with_capacity(writes.len());
            for w in writes {
                let id = self.repo.write_blob(&w.bytes).map_err(git)?.detach();
                editor
                    .upsert(w.path.as_str(), gix::objs::tree::EntryKind::Blob, id)
                    .map_err(git)?;
                blobs.push(id);
            }
            let tree = editor.write().map_err(git)?.detach();
            let commit = self.signed_commit(tree, tip.into_iter().collect(), message, signer)?;
            crate::chaos::at_commit(crate::chaos::Point::MidCommit, writes.iter().map(|w| w.path.as_str()));
            let expected = match tip {
                Some(t) => PreviousValue::MustExistAndMatch(Target::Object(t)),
                None => PreviousValue::MustNotExist,
            };
            let edit = RefEdit {
                change: Change::Update {
                    log: LogChange {
                        mode: RefLog::AndReference,
                        force_create_reflog: false,
                        message: format!("stella: {}", first_line(message)).into(),
                    },
                    expected,
                    new: Target::Object(commit),
                },
                name: self.branch.clone(),
                deref: false,
            };
            match self.repo.edit_reference(edit) {
                Ok(_) => {
                    crate::chaos::at_commit(
                        crate::chaos::Point::BetweenBranchMoveAndIndexUpdate,
                        writes.iter().map(|w| w.path.as_str()),
                    );
                    if self.head_is_branch() {
                        worktree::write(&self.workdir, writes, &blobs, &mut self.index)?;
                        if !self.index.recent()
                            && let Err(e) = self.flush_index()
                        {
                            tracing::warn!(error = %e, "git's index not updated yet; tried again at the next commit");
                        }
                    }
                    return Ok(commit);
                }
                Err(e) => {
                    // Only a moved branch is worth another attempt; anything else is the error.
                    self.refresh();
                    if self.tip()? == tip {
                        return Err(git(e));
                    }
                    tracing::debug!(attempt, error = %e, "branch moved while committing; retrying");
                    std::thread::sleep(std::time::Duration::from_millis(5 * u64::from(attempt + 1)));
                    self.refresh();
                }
            }
        }
        Err(Error::Contended {
            branch: self.branch().to_string(),
            attempts: ATTEMPTS,
        })
    }

    /// Records in git's index the files of this runner's commits it does not hold yet (commits
    /// coming faster than `worktree::COALESCE` leave them pending). Call when the commits stop;
    /// dropping the ledger does it too. Nothing to do when HEAD is another branch.
    pub fn flush_index(&mut self) -> Result<(), Error> {
        if self.index.is_empty() {
            return Ok(());
        }
        if !self.head_is_branch() {
            self.index.clear();
            return Ok(());
        }
        worktree::flush(&self.repo, &mut self.index)
    }

    /// Makes the index and working tree agree with the branch tip for every runner path (what
    /// a runner killed between moving the branch and updating the index leaves behind). Does
    /// nothing when HEAD is another branch: then the index is not the ledger's.
    pub fn repair_worktree(&self) -> Result<Vec<Repaired>, Error> {
        match self.tip()? {
            Some(tip) if self.head_is_branch() => repair::repair(&self.repo, &self.workdir, tip),
            _ => Ok(Vec::new()),
        }
    }

    /// Whether HEAD is the ledger branch (then the working tree shows what the runner commits).
    fn head_is_branch(&self) -> bool {
        self.repo.head_name().ok().flatten().is_some_and(|n| n == self.branch)
    }

    fn signed_commit(
        &self,
        tree: ObjectId,
        parents: Vec<ObjectId>,
        message: &str,
        signer: &dyn CommitSigner,
    ) -> Result<ObjectId, Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let sig = gix::actor::Signature {
            name: self.identity.name.clone().into(),
            email: self.identity.email.clone().into(),
            time: gix::date::Time {
                seconds: now,
                offset: 0,
            },
        };
        let mut commit = gix::objs::Commit {
            tree,
            parents: parents.into(),
            author: sig.clone(),
            committer: sig,
            encoding: None,
            message: message.into(),
            extra_headers: Vec::new(),
        };
        let mut payload = Vec::new();
        gix::objs::WriteTo::write_to(&commit, &mut payload).map_err(git)?;
        let armored = signer.sign_commit(&payload);
        commit.extra_headers.push(("gpgsig".into(), armored.trim_end().into()));
        Ok(self.repo.write_object(&commit).map_err(git)?.detach())
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if let Err(e) = self.flush_index() {
            tracing::warn!(error = %e, "git's index not updated for the runner's last commits; `stella daemon` repairs it at start");
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
