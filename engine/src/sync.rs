//! Air-gap sync (DESIGN section 9): git bundles of the branch and `refs/notes/stella`, made and
//! applied with the git CLI (gix does not write bundles). An import is checked in quarantine —
//! bundle verified, fast-forward only, the incoming ledger proven by the rules of
//! `ledger verify` — before the branch moves; on any failure the repository is as it was.

use std::path::{Path, PathBuf};
use std::process::Command;

use gix::ObjectId;

use crate::code::Code;
use crate::ledger::{Ledger, verify};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Tampered(String),
    #[error("{0}")]
    Refused(String),
    #[error("git: {0}")]
    Git(String),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Invalid(_) => Code::BundleInvalid,
            Error::Tampered(_) => Code::LedgerTampered,
            Error::Refused(_) => Code::Usage,
            Error::Git(_) => Code::Io,
        }
    }
}

const NOTES: &str = "refs/notes/stella";

fn git(root: &Path, args: &[&str]) -> Result<String, Error> {
    crate::remote::git_in(root, args).map_err(|e| Error::Git(e.to_string().trim_start_matches("git: ").to_string()))
}

fn rev(root: &Path, name: &str) -> Option<String> {
    git(
        root,
        &["rev-parse", "--verify", "--quiet", &format!("{name}^{{commit}}")],
    )
    .ok()
    .filter(|s| !s.is_empty())
}

/// What an export holds.
#[derive(Debug, Clone)]
pub struct Exported {
    pub path: PathBuf,
    pub branch: String,
    pub tip: String,
    pub since: Option<String>,
    pub commits: usize,
}

/// Writes a bundle of `branch` (and the notes) holding what was added since the last export to
/// `target` (or since `since`), and records the export in `refs/stella/sync/<target>`.
pub fn export(root: &Path, branch: &str, target: &str, since: Option<&str>, out: &Path) -> Result<Exported, Error> {
    let branch_ref = format!("refs/heads/{branch}");
    let tip = rev(root, &branch_ref).ok_or_else(|| Error::Refused(format!("branch {branch} has no commits")))?;
    let mark = format!("refs/stella/sync/{target}");
    let since = match since {
        Some(s) => Some(rev(root, s).ok_or_else(|| Error::Refused(format!("--since {s}: no such commit")))?),
        None => rev(root, &mark),
    };
    if since.as_deref() == Some(tip.as_str()) {
        return Err(Error::Refused(format!(
            "nothing new on {branch} since the last export to `{target}` ({})",
            &tip[..12]
        )));
    }
    let mut args: Vec<String> = vec![
        "bundle".into(),
        "create".into(),
        "-q".into(),
        out.display().to_string(),
        branch_ref.clone(),
    ];
    if rev(root, NOTES).is_some() {
        args.push(NOTES.into());
    }
    if let Some(s) = &since {
        args.push(format!("^{s}"));
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    git(root, &arg_refs)?;
    let range = match &since {
        Some(s) => format!("{s}..{tip}"),
        None => tip.clone(),
    };
    let commits = git(root, &["rev-list", "--count", &range])?.parse().unwrap_or(0);
    git(root, &["update-ref", &mark, &tip])?;
    Ok(Exported {
        path: out.to_path_buf(),
        branch: branch.into(),
        tip,
        since,
        commits,
    })
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct Imported {
    pub from: Option<String>,
    pub to: String,
    pub commits: usize,
    pub worktree_updated: bool,
}

/// Applies a bundle: verify it, fetch into quarantine, accept only a fast-forward of `branch`
/// whose whole history passes `ledger verify`, then move the branch (and the working tree when
/// it is clean). Any failure leaves the repository exactly as it was.
pub fn import(root: &Path, branch: &str, bundle: &Path) -> Result<Imported, Error> {
    let bundle_s = bundle.display().to_string();
    if !bundle.is_file() {
        return Err(Error::Invalid(format!("{bundle_s}: no such file")));
    }
    git(root, &["bundle", "verify", "-q", &bundle_s])
        .map_err(|e| Error::Invalid(format!("{bundle_s}: not a valid bundle for this repository ({e})")))?;
    let branch_ref = format!("refs/heads/{branch}");
    let heads = git(root, &["bundle", "list-heads", &bundle_s]).map_err(|e| Error::Invalid(e.to_string()))?;
    if !heads.lines().any(|l| l.ends_with(&format!(" {branch_ref}"))) {
        return Err(Error::Invalid(format!("{bundle_s} does not carry {branch_ref}")));
    }
    let quarantine = format!("refs/stella/quarantine/{}", std::process::id());
    let notes_q = format!("{quarantine}-notes");
    let cleanup = |root: &Path| {
        let _ = git(root, &["update-ref", "-d", &quarantine]);
        let _ = git(root, &["update-ref", "-d", &notes_q]);
    };
    let mut refspecs = vec![format!("{branch_ref}:{quarantine}")];
    if heads.lines().any(|l| l.ends_with(&format!(" {NOTES}"))) {
        refspecs.push(format!("{NOTES}:{notes_q}"));
    }
    let mut args = vec!["fetch", "-q", "--no-tags", "--no-write-fetch-head", bundle_s.as_str()];
    args.extend(refspecs.iter().map(String::as_str));
    if let Err(e) = git(root, &args) {
        cleanup(root);
        return Err(Error::Invalid(format!("{bundle_s}: cannot be read ({e})")));
    }
    let result = (|| {
        let incoming =
            rev(root, &quarantine).ok_or_else(|| Error::Invalid("the bundle's branch did not arrive".into()))?;
        let current = rev(root, &branch_ref);
        if current.as_deref() == Some(incoming.as_str()) {
            return Ok(Imported {
                from: current,
                to: incoming,
                commits: 0,
                worktree_updated: false,
            });
        }
        if let Some(cur) = &current {
            let ff = Command::new("git")
                .current_dir(root)
                .args(["merge-base", "--is-ancestor", cur, &incoming])
                .status()
                .map_err(|e| Error::Git(e.to_string()))?;
            if !ff.success() {
                return Err(Error::Invalid(format!(
                    "{bundle_s}: {branch} diverged (the bundle's {} does not contain this repository's {}); only fast-forwards are accepted",
                    &incoming[..12],
                    &cur[..12]
                )));
            }
        }
        // Prove the incoming history before it becomes the branch.
        let ledger = Ledger::open(root, branch).map_err(|e| Error::Git(e.to_string()))?;
        let tip = ObjectId::from_hex(incoming.as_bytes()).map_err(|e| Error::Git(e.to_string()))?;
        let report = verify::verify_at(&ledger, tip).map_err(|e| Error::Git(e.to_string()))?;
        if let Some(p) = report.problems.first() {
            return Err(Error::Tampered(format!(
                "{bundle_s}: the incoming ledger does not verify ({} problems; first: commit {} {}: {})",
                report.problems.len(),
                p.commit,
                p.path,
                p.message
            )));
        }
        let head_is_branch = git(root, &["symbolic-ref", "-q", "HEAD"]).ok().as_deref() == Some(branch_ref.as_str());
        let dirty = head_is_branch && !git(root, &["status", "--porcelain", "--untracked-files=no"])?.is_empty();
        if dirty {
            return Err(Error::Refused(format!(
                "the working tree has uncommitted changes to tracked files; commit or stash them, then import {bundle_s} again"
            )));
        }
        let commits = match &current {
            Some(c) => git(root, &["rev-list", "--count", &format!("{c}..{incoming}")])?
                .parse()
                .unwrap_or(0),
            None => git(root, &["rev-list", "--count", &incoming])?.parse().unwrap_or(0),
        };
        let old = current.clone().unwrap_or_else(|| "0".repeat(40));
        if head_is_branch {
            // Moves the branch and the working tree together; refuses rather than overwrite.
            git(root, &["merge", "-q", "--ff-only", &incoming])?;
        } else {
            git(root, &["update-ref", &branch_ref, &incoming, &old])?;
        }
        if rev(root, &notes_q).is_some() {
            let _ = git(root, &["update-ref", NOTES, &notes_q]);
        }
        Ok(Imported {
            from: current,
            to: incoming,
            commits,
            worktree_updated: head_is_branch,
        })
    })();
    cleanup(root);
    result
}
