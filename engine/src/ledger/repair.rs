//! Making the index and the working tree agree with the branch tip for every runner path (and
//! the requests the runner writes for schedules), at start. A runner killed between moving the branch and updating the index (see `worktree`)
//! leaves an index that still describes the old tip; a person's next ordinary commit would
//! then revert the runner's files. Touches runner paths only, never a person's other work,
//! and never loses a person's bytes: an edited runner file is set aside before it is rewritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gix::ObjectId;
use gix::bstr::{BStr, ByteSlice};
use gix::index::entry::{Flags, Mode, Stage};

use super::worktree::{lock_index, read_index, stat_of, write_file, write_index};
use super::{Error, is_runner_path};

/// One runner path brought in line with the tip, and what was done to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    pub path: String,
    pub what: String,
}

/// A runner file at the tip: its blob and whether it is executable.
type Wanted = BTreeMap<String, (ObjectId, bool)>;

/// Brings the index and working tree in line with `tip` for every runner path; returns what
/// it changed (nothing when they already agree, and then the index is not rewritten).
pub fn repair(repo: &gix::Repository, workdir: &Path, tip: ObjectId) -> Result<Vec<Repaired>, Error> {
    let tree = repo
        .find_commit(tip)
        .and_then(|c| c.tree_id())
        .map_err(|e| Error::Tree(e.into()))?;
    let mut wanted = Wanted::new();
    collect(repo, tree.detach(), "", &mut wanted)?;
    let index_path = repo.index_path();
    if agrees(repo, workdir, &read_index(repo, &index_path)?, &wanted)? {
        return Ok(Vec::new());
    }
    let (lock, _mark) = lock_index(repo)?;
    let mut index = read_index(repo, &index_path)?;
    let set_aside = repo.git_dir().join("stella").join("repaired");
    let mut done = Vec::new();
    let mut missing = Vec::new();
    for (path, &(want, executable)) in &wanted {
        let key: &BStr = path.as_str().into();
        if has_conflict(&index, key) {
            tracing::warn!(path = %path, "a runner path is in conflict in the index; left for the person resolving it");
            continue;
        }
        let old = index.entry_by_path_and_stage(key, Stage::Unconflicted).map(|e| e.id);
        let file = workdir.join(path);
        let current = content_id(repo, &file)?;
        let mut what = Vec::new();
        if current != Some(want) {
            if current.is_some() && current != old {
                let kept = keep_aside(&file, &set_aside, path)?;
                what.push(format!("a person's edit kept at {}", kept.display()));
            }
            let blob = repo.find_blob(want).map_err(|e| Error::Object {
                path: path.clone(),
                source: e.into(),
            })?;
            write_file(&file, &blob.data)?;
            set_executable(&file, executable)?;
            what.push(
                if current.is_none() {
                    "file restored"
                } else {
                    "file rewritten"
                }
                .to_string(),
            );
        }
        if old != Some(want) || !what.is_empty() {
            let stat = stat_of(&file)?;
            let mode = if executable { Mode::FILE_EXECUTABLE } else { Mode::FILE };
            match index.entry_mut_by_path_and_stage(key, Stage::Unconflicted) {
                Some(e) => {
                    e.id = want;
                    e.stat = stat;
                    e.mode = mode;
                }
                // Appended after the loop: lookups bisect the index, which must stay sorted.
                None => missing.push((stat, want, mode, key)),
            }
            if old != Some(want) {
                what.push(
                    if old.is_none() {
                        "added to the index"
                    } else {
                        "index entry updated"
                    }
                    .to_string(),
                );
            }
        }
        if !what.is_empty() {
            done.push(Repaired {
                path: path.clone(),
                what: what.join(", "),
            });
        }
    }
    if !missing.is_empty() {
        for (stat, want, mode, key) in missing {
            index.dangerously_push_entry(stat, want, Flags::empty(), mode, key);
        }
        index.sort_entries();
    }
    // Runner paths the index holds but the tip does not: out of the index, and out of the
    // working tree only when nobody changed the file since it was staged.
    let mut removed = Vec::new();
    index.remove_entries(|_, path, entry| {
        let path = path.to_str_lossy();
        let gone = entry.stage() == Stage::Unconflicted && is_runner_path(&path) && !wanted.contains_key(path.as_ref());
        if gone {
            removed.push((path.into_owned(), entry.id));
        }
        gone
    });
    for (path, id) in removed {
        let file = workdir.join(&path);
        let what = if content_id(repo, &file)? == Some(id) {
            std::fs::remove_file(&file).map_err(Error::file(&file))?;
            "not at the tip: removed from the index and the working tree"
        } else {
            "not at the tip: removed from the index (the working tree file, changed since, is left untracked)"
        };
        done.push(Repaired {
            path,
            what: what.into(),
        });
    }
    if done.is_empty() {
        return Ok(done);
    }
    // A repair may touch any runner directory: the cached trees are dropped (git rebuilds them).
    index.remove_tree();
    write_index(repo, index, lock)?;
    Ok(done)
}

/// Whether every runner path already agrees: index entry and file content as at the tip,
/// and no runner path staged that the tip lacks. A file whose stat matches its entry is
/// taken as unchanged (as git does); any other is hashed.
fn agrees(repo: &gix::Repository, workdir: &Path, index: &gix::index::File, wanted: &Wanted) -> Result<bool, Error> {
    for (path, &(want, _)) in wanted {
        let key: &BStr = path.as_str().into();
        let Some(entry) = index.entry_by_path_and_stage(key, Stage::Unconflicted) else {
            return Ok(false);
        };
        let file = workdir.join(path);
        if entry.id != want || has_conflict(index, key) {
            return Ok(false);
        }
        if stat_of(&file).ok() != Some(entry.stat) && content_id(repo, &file)? != Some(want) {
            return Ok(false);
        }
    }
    Ok(index.entries().iter().all(|e| {
        let path = e.path(index).to_str_lossy();
        !is_runner_path(&path) || wanted.contains_key(path.as_ref())
    }))
}

fn has_conflict(index: &gix::index::File, key: &BStr) -> bool {
    [Stage::Base, Stage::Ours, Stage::Theirs]
        .into_iter()
        .any(|s| index.entry_by_path_and_stage(key, s).is_some())
}

/// Every runner file under `runs/` in `tree`.
fn collect(repo: &gix::Repository, tree: ObjectId, prefix: &str, out: &mut Wanted) -> Result<(), Error> {
    let tree = repo.find_tree(tree).map_err(|e| Error::Tree(e.into()))?;
    for entry in tree.iter() {
        let entry = entry.map_err(|e| Error::Tree(e.into()))?;
        let name = entry.filename().to_str_lossy();
        let path = if prefix.is_empty() {
            name.into_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let mode = entry.mode();
        if mode.is_tree() {
            // Only `runs/` holds runner files: the rest of the tree is never read.
            if !prefix.is_empty() || path == "runs" {
                collect(repo, entry.oid().to_owned(), &path, out)?;
            }
        } else if mode.is_blob() && (is_runner_path(&path) || scheduled_request(&path)) {
            out.insert(path, (entry.oid().to_owned(), mode.is_executable()));
        }
    }
    Ok(())
}

/// Whether `path` is the request of a schedule's slot (`runs/…/<id>-<yyyymmddthhmmssz>/request.yaml`),
/// which the runner commits itself (`Ledger::commit_scheduled`) and so repairs like its own files.
fn scheduled_request(path: &str) -> bool {
    match crate::layout::classify(path) {
        Some((crate::layout::Area::Runs, dir, "request.yaml")) => dir
            .id
            .rsplit_once('-')
            .is_some_and(|(_, stamp)| crate::schedule::parse_stamp(stamp).is_some()),
        _ => false,
    }
}

/// The blob id of the file's content, or `None` when there is no regular file.
fn content_id(repo: &gix::Repository, file: &Path) -> Result<Option<ObjectId>, Error> {
    match std::fs::symlink_metadata(file) {
        Ok(m) if m.is_file() => {}
        _ => return Ok(None),
    }
    let bytes = std::fs::read(file).map_err(Error::file(file))?;
    gix::objs::compute_hash(repo.object_hash(), gix::objs::Kind::Blob, &bytes)
        .map(Some)
        .map_err(|e| Error::Tree(e.into()))
}

/// Copies a person's version of a runner file to `.git/stella/repaired/<stamp>/<path>`.
fn keep_aside(file: &Path, dir: &Path, path: &str) -> Result<PathBuf, Error> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let dest = dir.join(stamp.to_string()).join(path);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(Error::file(parent))?;
    }
    std::fs::copy(file, &dest).map_err(Error::file(&dest))?;
    Ok(dest)
}

fn set_executable(file: &Path, executable: bool) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).map_err(Error::file(file))
}

/// Removes the ref lock files a killed git process leaves behind (`packed-refs.lock`,
/// `HEAD.lock`, `refs/**/*.lock`): git and gitoxide write a ref by renaming its lock into
/// place, so a process killed between the two leaves a lock that makes every later ref update
/// (a fetch, a claim, a runner commit) fail for good. Called once at start, before this runner
/// fetches or commits anything; a person's git command that holds a lock at that very moment
/// fails and can be run again. `index.lock` has its own owner check (`worktree`). Returns
/// what was removed.
pub fn remove_stale_ref_locks(git_dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = ["packed-refs.lock", "HEAD.lock"]
        .iter()
        .map(|f| git_dir.join(f))
        .filter(|p| p.is_file())
        .collect();
    found.extend(
        walkdir::WalkDir::new(git_dir.join("refs"))
            .follow_links(false)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file() && e.file_name().to_string_lossy().ends_with(".lock"))
            .map(|e| e.into_path()),
    );
    found.retain(|p| std::fs::remove_file(p).is_ok());
    found
}
