//! `stella pack mirror pull`: a pack taken from another repository at the commit a ref
//! resolves to (a tag to its commit), through a cache of that repository under
//! `~/.stella/packs/` (or `$STELLA_PACK_CACHE`): one bare repository per URL, fetched with gix.
//! A ref that is a commit the cache holds needs no fetch; when the remote cannot be reached,
//! the cache's refs answer. The one place outside `ledger`, `remote` and `sync` that touches
//! git; it reads only its own cache and never writes the repository it runs in.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Error, Source};
use crate::pack::{PackFiles, PackLimits};

/// A pack pulled from another repository.
pub struct Pulled {
    pub files: PackFiles,
    pub source: Source,
    /// Whether the remote was asked: false when the cache answered alone.
    pub fetched: bool,
    /// Why the remote was not used though it was asked, when the cache answered instead.
    pub offline: Option<String>,
}

/// The cache directory: `$STELLA_PACK_CACHE`, else `$HOME/.stella/packs`.
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("STELLA_PACK_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".stella").join("packs")))
}

/// The pack at `path` of `url`'s repository, at the commit `reference` resolves to.
pub fn pull(cache: &Path, url: &str, reference: &str, path: &str) -> Result<Pulled, Error> {
    let fail = |m: String| Error::Mirror(m);
    let path = crate::pack::normalise(path)
        .filter(|p| p.starts_with("packs/") && p.matches('/').count() == 1)
        .ok_or_else(|| fail(format!("--path {path}: expected packs/NAME")))?;
    let repo_dir = cache.join(format!("{}.git", &hex::encode(Sha256::digest(url.as_bytes()))[..24]));
    let repo = if repo_dir.join("HEAD").exists() {
        crate::ledger::open_repo(&repo_dir).map_err(|e| fail(format!("{}: {e}", repo_dir.display())))?
    } else {
        std::fs::create_dir_all(cache).map_err(|source| Error::Io {
            path: cache.display().to_string(),
            source,
        })?;
        gix::init_bare(&repo_dir).map_err(|e| fail(format!("{}: {e}", repo_dir.display())))?
    };
    // A full commit id the cache already holds needs nothing from the remote.
    let held = gix::ObjectId::from_hex(reference.as_bytes())
        .ok()
        .filter(|id| repo.find_commit(*id).is_ok());
    let (mut fetched, mut offline) = (false, None);
    if held.is_none() {
        match fetch(&repo, url) {
            Ok(()) => fetched = true,
            Err(why) => offline = Some(why),
        }
    }
    let repo = crate::ledger::open_repo(&repo_dir).map_err(|e| fail(format!("{}: {e}", repo_dir.display())))?;
    let commit = resolve(&repo, reference).map_err(|why| match &offline {
        Some(unreachable) => fail(format!(
            "cannot fetch {url} ({unreachable}), and the cache does not know `{reference}`"
        )),
        None => fail(format!("{url}: {why}")),
    })?;
    let files = read_pack(&repo, commit, &path).map_err(|m| fail(format!("{url} at {commit}: {m}")))?;
    Ok(Pulled {
        files,
        source: Source {
            url: url.to_string(),
            reference: reference.to_string(),
            commit: commit.to_string(),
            path,
        },
        fetched,
        offline,
    })
}

/// Fetches every branch and tag of `url` into the cache repository, as they are there.
fn fetch(repo: &gix::Repository, url: &str) -> Result<(), String> {
    use gix::remote::Direction;
    let remote = repo
        .remote_at(url)
        .map_err(|e| e.to_string())?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs(
            ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
            Direction::Fetch,
        )
        .map_err(|e| e.to_string())?;
    remote
        .connect(Direction::Fetch)
        .map_err(|e| e.to_string())?
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| e.to_string())?
        .receive(gix::progress::Discard, &std::sync::atomic::AtomicBool::new(false))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The commit `reference` names: a tag (peeled to its commit), a branch, a full ref or a commit id.
fn resolve(repo: &gix::Repository, reference: &str) -> Result<gix::ObjectId, String> {
    if reference.starts_with('-') || reference.contains("..") || reference.contains(['^', '~', ':', '@', '{']) {
        return Err(format!("`{reference}` is not a plain ref name or commit id"));
    }
    let candidates = [
        format!("refs/tags/{reference}"),
        format!("refs/heads/{reference}"),
        reference.to_string(),
    ];
    for name in &candidates {
        if let Ok(Some(mut r)) = repo.try_find_reference(name.as_str()) {
            let id = r.peel_to_id().map_err(|e| e.to_string())?;
            let commit = id
                .object()
                .map_err(|e| e.to_string())?
                .peel_to_commit()
                .map_err(|e| format!("{name} does not point at a commit: {e}"))?;
            return Ok(commit.id);
        }
    }
    gix::ObjectId::from_hex(reference.as_bytes())
        .ok()
        .filter(|id| repo.find_commit(*id).is_ok())
        .ok_or_else(|| format!("no tag, branch or commit `{reference}`"))
}

/// The files under `path` at `commit`, within the pack limits; links and submodules refused.
fn read_pack(repo: &gix::Repository, commit: gix::ObjectId, path: &str) -> Result<PackFiles, String> {
    let limits = PackLimits::default();
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(|e| e.to_string())?;
    let entry = tree
        .lookup_entry_by_path(path)
        .map_err(|e| e.to_string())?
        .filter(|e| e.mode().is_tree())
        .ok_or_else(|| format!("no directory {path}"))?;
    let sub = repo.find_tree(entry.oid()).map_err(|e| e.to_string())?;
    let mut recorder = gix::traverse::tree::Recorder::default();
    sub.traverse().breadthfirst(&mut recorder).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    let mut total = 0u64;
    for e in recorder.records {
        let rel = e.filepath.to_string();
        if e.mode.is_tree() {
            continue;
        }
        if e.mode.is_link() || e.mode.is_commit() {
            return Err(format!("{path}/{rel}: only regular files are allowed in packs"));
        }
        if files.len() >= limits.max_files {
            return Err(format!("more than {} files", limits.max_files));
        }
        let blob = repo.find_blob(e.oid).map_err(|e| e.to_string())?;
        total += blob.data.len() as u64;
        if total > limits.max_total_bytes {
            return Err(format!("larger than {} bytes", limits.max_total_bytes));
        }
        files.push((rel, blob.data.clone(), e.mode.is_executable()));
    }
    if files.is_empty() {
        return Err(format!("{path} is empty"));
    }
    PackFiles::from_entries(path, files).map_err(|d| d.message)
}
