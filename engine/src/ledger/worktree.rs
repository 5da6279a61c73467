//! Bringing the working tree and the index up to date for the files the runner committed, and
//! nothing else: a person's edits and staged work stay exactly as they were, so `git status`
//! reads the same before and after a runner commit. The working tree is written at every
//! commit; git's index (one file listing every file of the checkout, so it grows with the
//! ledger) is rewritten at most every `COALESCE` while commits come faster than that, and at
//! once when they stop (`Ledger::flush_index`): its cost per run then no longer grows with the
//! history. A runner killed with entries pending leaves what `repair` puts right at start.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use gix::ObjectId;
use gix::bstr::BStr;

use super::{Error, FileWrite};

/// The shortest time between two rewrites of git's index while runner commits keep coming.
pub const COALESCE: Duration = Duration::from_millis(250);

/// Index entries of runner commits that git's index does not hold yet.
#[derive(Default)]
pub struct Pending {
    entries: BTreeMap<String, (ObjectId, gix::index::entry::Stat)>,
    last: Option<Instant>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the index was rewritten too recently to rewrite it again now.
    pub fn recent(&self) -> bool {
        self.last.is_some_and(|t| t.elapsed() < COALESCE)
    }

    /// Forgets the entries (the index is not the branch's any more: HEAD moved elsewhere).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Writes each file into the working tree and takes its stat data; the index entries wait in
/// `pending` for the next `flush`.
pub fn write(workdir: &Path, writes: &[FileWrite], blobs: &[ObjectId], pending: &mut Pending) -> Result<(), Error> {
    for (w, id) in writes.iter().zip(blobs) {
        let file = workdir.join(&w.path);
        write_file(&file, &w.bytes)?;
        pending.entries.insert(w.path.clone(), (*id, stat_of(&file)?));
    }
    Ok(())
}

/// Records every pending entry in the index with its blob id, under the index lock (the same
/// `index.lock` git takes, so neither side loses an update), held only to read, update and
/// write the index. On failure the entries stay pending.
pub fn flush(repo: &gix::Repository, pending: &mut Pending) -> Result<(), Error> {
    if pending.entries.is_empty() {
        return Ok(());
    }
    let index_path = repo.index_path();
    let (lock, _mark) = lock_index(repo)?;
    let mut index = read_index(repo, &index_path)?;
    // Entries already there are updated first, while the index is still sorted (lookups
    // bisect it); the new ones are appended afterwards and sorted once. Appending while
    // looking up would let a later lookup miss an entry and add the path twice: an index that
    // makes git write trees with duplicate entries.
    let mut missing = Vec::new();
    for (path, (id, stat)) in &pending.entries {
        let key: &BStr = path.as_str().into();
        match index.entry_mut_by_path_and_stage(key, gix::index::entry::Stage::Unconflicted) {
            Some(entry) => {
                entry.id = *id;
                entry.stat = *stat;
                entry.mode = gix::index::entry::Mode::FILE;
            }
            None => missing.push((key, *id, *stat)),
        }
    }
    if !missing.is_empty() {
        for (key, id, stat) in missing {
            index.dangerously_push_entry(
                stat,
                id,
                gix::index::entry::Flags::empty(),
                gix::index::entry::Mode::FILE,
                key,
            );
        }
        index.sort_entries();
    }
    // The directories the runner wrote into are no longer what the cached tree says; the
    // rest of the cache stays valid, so git's next `commit` or `status` rebuilds only those.
    if let Some(tree) = index.tree_mut() {
        for path in pending.entries.keys() {
            let dirs: Vec<&[u8]> = path.split('/').map(str::as_bytes).collect();
            invalidate(tree, &dirs[..dirs.len().saturating_sub(1)]);
        }
    }
    write_index(repo, index, lock)?;
    pending.entries.clear();
    pending.last = Some(Instant::now());
    Ok(())
}

/// Marks the cached tree of `dirs` (a directory path, as components) and of every directory
/// above it as out of date.
fn invalidate(tree: &mut gix::index::extension::Tree, dirs: &[&[u8]]) {
    tree.num_entries = None;
    if let Some((first, rest)) = dirs.split_first()
        && let Some(child) = tree.children.iter_mut().find(|c| c.name.as_slice() == *first)
    {
        invalidate(child, rest);
    }
}

/// Takes the index lock and marks it as this process's (see `acquire`). Keep the mark no
/// longer than the lock: bind the lock first, so the mark is dropped before it.
pub(super) fn lock_index(repo: &gix::Repository) -> Result<(IndexLock, OwnerMark), Error> {
    let owner = repo.git_dir().join("stella").join("index-lock-owner");
    let lock = acquire(&repo.index_path(), &owner)?;
    Ok((lock, OwnerMark(owner)))
}

pub(super) type IndexLock = std::io::BufWriter<gix::lock::File>;

/// The index as it is on disk (an empty one when there is none yet).
pub(super) fn read_index(repo: &gix::Repository, index_path: &Path) -> Result<gix::index::File, Error> {
    if index_path.exists() {
        // The checksum is not verified: the file is only ever replaced whole (under the lock,
        // by rename), and hashing megabytes of index at every runner commit is most of its cost.
        gix::index::File::at(
            index_path,
            repo.object_hash(),
            true,
            gix::index::decode::Options::default(),
        )
        .map_err(|e| Error::ReadIndex(e.into()))
    } else {
        Ok(gix::index::File::from_state(
            gix::index::State::new(repo.object_hash()),
            index_path.to_path_buf(),
        ))
    }
}

/// Writes `index` through the lock and puts it in place, in the version it had on disk
/// (`index_file`), with no trailing checksum when the repository asks for none
/// (`index.skipHash`, set by git's `feature.manyFiles`).
pub(super) fn write_index(repo: &gix::Repository, index: gix::index::File, mut lock: IndexLock) -> Result<(), Error> {
    let config = repo.config_snapshot();
    let skip_hash = config
        .boolean("index.skipHash")
        .or_else(|| config.boolean("feature.manyFiles"))
        .unwrap_or(false);
    let on_disk = repo.index_path().exists().then(|| index.version());
    if super::index_file::wanted(repo, on_disk) == gix::index::Version::V4 {
        // gix writes version 2 or 3: written to memory, re-encoded, then through the lock.
        let options = gix::index::write::Options {
            extensions: gix::index::write::Extensions::Given {
                tree_cache: true,
                end_of_index_entry: false,
            },
            skip_hash: true,
        };
        let mut v2 = Vec::new();
        index
            .write_to(&mut v2, options)
            .map_err(|e| Error::WriteIndex(e.into()))?;
        let v4 =
            super::index_file::to_v4(&v2, repo.object_hash(), skip_hash).map_err(|e| Error::WriteIndex(Box::new(e)))?;
        lock.write_all(&v4).map_err(|e| Error::WriteIndex(e.into()))?;
    } else {
        let options = gix::index::write::Options {
            skip_hash,
            ..Default::default()
        };
        index
            .write_to(&mut lock, options)
            .map_err(|e| Error::WriteIndex(e.into()))?;
    }
    lock.flush().map_err(|e| Error::WriteIndex(e.into()))?;
    lock.into_inner()
        .map_err(|e| Error::WriteIndex(e.into_error().into()))?
        .commit()
        .map_err(|e| Error::ReplaceIndex(e.error))?;
    Ok(())
}

/// Replaces a working tree file atomically (a temporary file beside it, then rename).
pub(super) fn write_file(dest: &Path, bytes: &[u8]) -> Result<(), Error> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(Error::file(dir))?;
    }
    let tmp = dest.with_extension("stella-tmp");
    std::fs::write(&tmp, bytes).map_err(Error::file(&tmp))?;
    std::fs::rename(&tmp, dest).map_err(Error::file(dest))
}

/// The index entry's stat for a file as it is now.
pub(super) fn stat_of(path: &Path) -> Result<gix::index::entry::Stat, Error> {
    let meta = gix::index::fs::Metadata::from_path_no_follow(path).map_err(Error::file(path))?;
    gix::index::entry::Stat::from_fs(&meta).map_err(|e| Error::Object {
        path: path.display().to_string(),
        source: e.into(),
    })
}

/// Removes the lock owner's mark when the lock is given up.
pub(super) struct OwnerMark(std::path::PathBuf);

impl Drop for OwnerMark {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Takes `index.lock`, waiting a little while a person's git command holds it. While this
/// process holds it, `owner` names it: a lock left by a runner that was killed (its process
/// gone) is removed instead of blocking every later commit, as git's own leftover lock would.
fn acquire(index: &Path, owner: &Path) -> Result<std::io::BufWriter<gix::lock::File>, Error> {
    const ATTEMPTS: u64 = 100;
    let mut attempt = 0;
    loop {
        let last =
            match gix::lock::File::acquire_to_update_resource(index, gix::lock::acquire::Fail::Immediately, None, 0) {
                Ok(lock) => {
                    if let Some(dir) = owner.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    let _ = std::fs::write(owner, std::process::id().to_string());
                    return Ok(std::io::BufWriter::new(lock));
                }
                Err(e) => e,
            };
        if left_by_a_dead_runner(owner, &index.with_extension("lock")) {
            tracing::warn!(lock = %index.with_extension("lock").display(), "removing the index lock a killed runner left");
            let _ = std::fs::remove_file(index.with_extension("lock"));
            let _ = std::fs::remove_file(owner);
        } else {
            std::thread::sleep(std::time::Duration::from_millis(10 + attempt * 2));
        }
        attempt += 1;
        if attempt == ATTEMPTS {
            return Err(Error::IndexLocked(last.into()));
        }
    }
}

/// Whether `lock` is the one `owner` marks (the mark written just after the lock, so not
/// older than it) and `owner` names a process that no longer exists (and is not this one).
fn left_by_a_dead_runner(owner: &Path, lock: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(owner), modified(lock)) {
        (Some(marked), Some(locked)) if marked >= locked => {}
        _ => return false,
    }
    let Some(pid) = std::fs::read_to_string(owner)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return false;
    };
    if pid <= 0 || pid as u32 == std::process::id() {
        return false;
    }
    // SAFETY: signal 0 only asks whether the process exists.
    (unsafe { libc::kill(pid, 0) } != 0) && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}
