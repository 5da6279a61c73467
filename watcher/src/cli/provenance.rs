//! Whom a repository trusts to publish packs (`.stella/allowed_signers` as committed on HEAD,
//! never the working tree's), and the re-check of an imported pack for the commands that plan
//! in the working tree (`pack validate|plan|run`, `run request`). Only reads.

use std::path::Path;
use std::time::SystemTime;

use stella_engine::Code;
use stella_engine::allowed_signers::AllowedSigners;
use stella_engine::bundle;
use stella_engine::pack::PackFiles;

use crate::failure::Failure;
use crate::repo;

const SIGNERS: &str = ".stella/allowed_signers";

/// `.stella/allowed_signers` as committed on HEAD of the repository at `root`.
pub fn signers_at_head(root: &Path) -> Result<Option<AllowedSigners>, Failure> {
    let repo = gix::open(root).map_err(|e| Failure::one(Code::Usage, format!("{}: {e}", root.display())))?;
    let Ok(commit) = repo.head_commit() else {
        return Ok(None);
    };
    let tree = commit.tree().map_err(|e| Failure::one(Code::Io, e.to_string()))?;
    let Some(entry) = tree
        .lookup_entry_by_path(SIGNERS)
        .map_err(|e| Failure::one(Code::Io, e.to_string()))?
    else {
        return Ok(None);
    };
    let blob = repo
        .find_blob(entry.oid())
        .map_err(|e| Failure::one(Code::Io, e.to_string()))?;
    Ok(Some(AllowedSigners::parse(
        SIGNERS,
        &String::from_utf8_lossy(&blob.data),
    )?))
}

/// For commands that plan a pack in the working tree: an imported pack must still be what its
/// publisher signed, and HEAD's allowed_signers must still trust that publisher.
pub fn check_local(files: &PackFiles, dir: &Path) -> Result<(), Failure> {
    if !files.contains(bundle::PROVENANCE) {
        return Ok(());
    }
    let signers = match repo::find_root(dir) {
        Ok(root) => signers_at_head(&root)?,
        Err(_) => None,
    };
    bundle::check_installed(files, signers.as_ref(), SystemTime::now())?;
    Ok(())
}
