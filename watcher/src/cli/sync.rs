//! `stella sync export|import`: carry the repository across an air gap as git bundles.

use std::path::Path;

use stella_engine::sync;

use crate::failure::{Failure, Outcome};
use crate::repo;

pub fn export(repo_dir: &Path, out: &Path, since: Option<&str>, target: &str) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let config = repo::config_at_head(&root)?;
    let e = sync::export(&root, config.ledger_branch(), target, since, out)?;
    println!("{}", e.path.display());
    let from = e
        .since
        .as_deref()
        .map_or("the beginning".to_string(), |s| s[..12].to_string());
    let notes = if e.notes {
        " and refs/notes/stella"
    } else {
        " (refs/notes/stella unchanged, not included)"
    };
    if e.commits > 0 {
        eprintln!(
            "bundle holds {}{notes}: {} commits from {from} to {}",
            e.branch,
            e.commits,
            &e.tip[..12]
        );
    } else {
        eprintln!(
            "bundle holds refs/notes/stella only: {} has not moved since {from}",
            e.branch
        );
    }
    eprintln!("recorded as the last export to `{target}` (refs/stella/sync/{target})");
    Ok(Outcome::Done)
}

pub fn import(repo_dir: &Path, bundle: &Path) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let config = repo::config_at_head(&root)?;
    let i = sync::import(&root, config.ledger_branch(), bundle)?;
    if i.commits == 0 {
        println!("{}: already up to date ({})", config.ledger_branch(), &i.to[..12]);
    } else {
        let from = i.from.as_deref().map_or("nothing".to_string(), |s| s[..12].to_string());
        println!(
            "{}: {from} -> {} ({} commits, ledger verified)",
            config.ledger_branch(),
            &i.to[..12],
            i.commits
        );
        if !i.worktree_updated {
            println!("the branch is not checked out here; the working tree was left alone");
        }
    }
    if i.notes {
        println!("refs/notes/stella: merged");
    }
    Ok(Outcome::Done)
}
