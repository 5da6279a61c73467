//! Air-gap sync (DESIGN section 9): git bundles of the branch and `refs/notes/stella`, made and
//! applied with the git CLI (gix does not write bundles). An import is checked in quarantine —
//! bundle verified, fast-forward only, the incoming ledger proven by the rules of
//! `ledger verify` — before the branch moves; on any failure the repository is as it was.

use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::code::Code;
use crate::git_cli::{self, is_ancestor as is_ancestor_in};
use crate::ledger::notes::NOTES_REF as NOTES;
use crate::ledger::{Ledger, checkpoint, verify};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    /// `git bundle verify` refused the file.
    #[error("{bundle}: not a valid bundle for this repository (git: {source})")]
    NotABundle {
        bundle: String,
        #[source]
        source: git_cli::Error,
    },
    /// The bundle's heads could not be listed.
    #[error("git: {0}")]
    NoHeads(#[source] git_cli::Error),
    /// Fetching from the bundle into the quarantine failed.
    #[error("{bundle}: cannot be read (git: {source})")]
    Unreadable {
        bundle: String,
        #[source]
        source: git_cli::Error,
    },
    #[error("{0}")]
    Tampered(String),
    #[error("{0}")]
    Refused(String),
    #[error("git: {0}")]
    Cli(#[from] git_cli::Error),
    /// The quarantine repository could not be made.
    #[error("git: {}: {source}", path.display())]
    Quarantine {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The incoming history could not be read to be proven.
    #[error("git: {0}")]
    Ledger(#[from] crate::ledger::Error),
    #[error("git: {0}")]
    Tip(#[from] gix::Error),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Invalid(_) | Error::NotABundle { .. } | Error::NoHeads(_) | Error::Unreadable { .. } => {
                Code::BundleInvalid
            }
            Error::Tampered(_) => Code::LedgerTampered,
            Error::Refused(_) => Code::Usage,
            Error::Ledger(e) => e.code(),
            Error::Cli(_) | Error::Quarantine { .. } | Error::Tip(_) => Code::Io,
        }
    }
}

/// git's empty tree, to diff a first import against.
const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

fn git(root: &Path, args: &[&str]) -> Result<String, Error> {
    Ok(git_cli::run(root, args)?)
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
    /// Whether the bundle carries `refs/notes/stella` (it does when the notes moved).
    pub notes: bool,
}

/// Writes a bundle of `branch` and the notes holding what was added since the last export to
/// `target` (or since `since`), and records the export in `refs/stella/sync/<target>` (and
/// `refs/stella/sync-notes/<target>` for the notes). A bundle may hold notes alone, when only
/// they moved (plan notes written after the last export).
pub fn export(root: &Path, branch: &str, target: &str, since: Option<&str>, out: &Path) -> Result<Exported, Error> {
    let branch_ref = format!("refs/heads/{branch}");
    let tip = rev(root, &branch_ref).ok_or_else(|| Error::Refused(format!("branch {branch} has no commits")))?;
    let mark = format!("refs/stella/sync/{target}");
    let notes_mark = format!("refs/stella/sync-notes/{target}");
    let explicit = since.is_some();
    let since = match since {
        Some(s) => Some(rev(root, s).ok_or_else(|| Error::Refused(format!("--since {s}: no such commit")))?),
        None => rev(root, &mark),
    };
    let notes_tip = rev(root, NOTES);
    // An explicit --since redoes an export (a bundle lost on the way): the notes go whole.
    let notes_since = if explicit { None } else { rev(root, &notes_mark) };
    let branch_moved = since.as_deref() != Some(tip.as_str());
    let notes_moved = notes_tip.is_some() && notes_tip != notes_since;
    if !branch_moved && !notes_moved {
        return Err(Error::Refused(format!(
            "nothing new on {branch} or {NOTES} since the last export to `{target}` ({})",
            &tip[..12]
        )));
    }
    let mut args: Vec<String> = vec!["bundle".into(), "create".into(), "-q".into(), out.display().to_string()];
    if branch_moved {
        args.push(branch_ref.clone());
        if let Some(s) = &since {
            args.push(format!("^{s}"));
        }
    }
    if notes_moved {
        args.push(NOTES.into());
        if let Some(n) = &notes_since {
            args.push(format!("^{n}"));
        }
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    git(root, &arg_refs)?;
    let commits = if branch_moved {
        let range = match &since {
            Some(s) => format!("{s}..{tip}"),
            None => tip.clone(),
        };
        git(root, &["rev-list", "--count", &range])?.parse().unwrap_or(0)
    } else {
        0
    };
    git(root, &["update-ref", &mark, &tip])?;
    if let Some(n) = &notes_tip {
        git(root, &["update-ref", &notes_mark, n])?;
    }
    Ok(Exported {
        path: out.to_path_buf(),
        branch: branch.into(),
        tip,
        since,
        commits,
        notes: notes_moved,
    })
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct Imported {
    pub from: Option<String>,
    pub to: String,
    pub commits: usize,
    pub worktree_updated: bool,
    /// Whether notes arrived (merged into `refs/notes/stella`).
    pub notes: bool,
}

/// A scratch repository that borrows this one's objects (git alternates): a bundle is fetched
/// and proven there, so a refused bundle leaves not even objects behind. Removed on drop.
struct Quarantine {
    dir: PathBuf,
}

impl Quarantine {
    fn new(root: &Path) -> Result<Quarantine, Error> {
        let objects = git(root, &["rev-parse", "--path-format=absolute", "--git-path", "objects"])?;
        let git_dir = git(root, &["rev-parse", "--path-format=absolute", "--git-dir"])?;
        let dir = Path::new(&git_dir)
            .join("stella")
            .join(format!("import-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Quarantine {
            path: dir.clone(),
            source,
        })?;
        let q = Quarantine { dir };
        git(&q.dir, &["init", "-q", "--template="])?;
        let alternates = q.dir.join(".git/objects/info/alternates");
        std::fs::write(&alternates, format!("{objects}\n")).map_err(|source| Error::Quarantine {
            path: alternates.clone(),
            source,
        })?;
        Ok(q)
    }
}

impl Drop for Quarantine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes what imports killed mid-way left behind: quarantine repositories
/// (`.git/stella/import-<pid>`) and landing refs (`refs/stella/quarantine/<pid>`, `…-notes`)
/// whose process is gone or is not a stella process. Those of a live import are left alone.
/// Returns what was removed; a failure to remove one is logged, never fatal.
pub fn sweep_leftovers(root: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(git_dir) = git(root, &["rev-parse", "--path-format=absolute", "--git-dir"]) {
        let stella = Path::new(&git_dir).join("stella");
        for entry in std::fs::read_dir(&stella).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("import-").and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if import_alive(pid) {
                continue;
            }
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => removed.push(entry.path().display().to_string()),
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove the quarantine of a killed import")
                }
            }
        }
    }
    let refs = git(
        root,
        &["for-each-ref", "--format=%(refname)", "refs/stella/quarantine/"],
    )
    .unwrap_or_default();
    for name in refs.lines() {
        let last = name.rsplit('/').next().unwrap_or_default();
        let Ok(pid) = last.strip_suffix("-notes").unwrap_or(last).parse::<u32>() else {
            continue;
        };
        if import_alive(pid) {
            continue;
        }
        match git(root, &["update-ref", "-d", name]) {
            Ok(_) => removed.push(name.to_string()),
            Err(e) => tracing::warn!(reference = %name, error = %e, "cannot remove the landing ref of a killed import"),
        }
    }
    for what in &removed {
        tracing::warn!(left = %what, "removed what a killed `stella sync import` left behind");
    }
    removed
}

/// Whether process `pid` may still be the import that made a quarantine: this process, or a
/// live process named `stella…` (a pid reused by something else does not hold it). When it
/// cannot be told, the quarantine is kept.
fn import_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(raw) = i32::try_from(pid) else { return false };
    if raw <= 0 {
        return false;
    }
    // SAFETY: signal 0 only asks whether the process exists.
    let gone =
        unsafe { libc::kill(raw, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    if gone {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.trim().starts_with("stella"),
        Err(_) => true,
    }
}

/// Applies a bundle: verify it, fetch it into a quarantine repository, accept only a
/// fast-forward of `branch` whose whole history passes `ledger verify`, then bring the objects
/// in and move the branch (and the working tree when it is clean); notes are merged. Any
/// failure leaves the repository exactly as it was: refs, working tree and object store.
pub fn import(root: &Path, branch: &str, bundle: &Path) -> Result<Imported, Error> {
    sweep_leftovers(root);
    let bundle_s = std::path::absolute(bundle)
        .unwrap_or_else(|_| bundle.to_path_buf())
        .display()
        .to_string();
    if !bundle.is_file() {
        return Err(Error::Invalid(format!("{}: no such file", bundle.display())));
    }
    git_cli::run(root, &["bundle", "verify", "-q", &bundle_s]).map_err(|source| Error::NotABundle {
        bundle: bundle.display().to_string(),
        source,
    })?;
    let bundle_name = bundle.display().to_string();
    let branch_ref = format!("refs/heads/{branch}");
    let heads = git_cli::run(root, &["bundle", "list-heads", &bundle_s]).map_err(Error::NoHeads)?;
    let carries = |r: &str| heads.lines().any(|l| l.ends_with(&format!(" {r}")));
    let (has_branch, has_notes) = (carries(&branch_ref), carries(NOTES));
    if !has_branch && !has_notes {
        return Err(Error::Invalid(format!(
            "{bundle_name} carries neither {branch_ref} nor {NOTES}"
        )));
    }
    let q = Quarantine::new(root)?;
    let (incoming_ref, notes_ref) = ("refs/stella/incoming", "refs/stella/incoming-notes");
    let mut args = vec!["fetch", "-q", "--no-tags", "--no-write-fetch-head", bundle_s.as_str()];
    let branch_spec = format!("{branch_ref}:{incoming_ref}");
    let notes_spec = format!("{NOTES}:{notes_ref}");
    if has_branch {
        args.push(&branch_spec);
    }
    if has_notes {
        args.push(&notes_spec);
    }
    git_cli::run(&q.dir, &args).map_err(|source| Error::Unreadable {
        bundle: bundle_name.clone(),
        source,
    })?;
    let current = rev(root, &branch_ref);
    let incoming = if has_branch {
        rev(&q.dir, incoming_ref).ok_or_else(|| Error::Invalid("the bundle's branch did not arrive".into()))?
    } else {
        current
            .clone()
            .ok_or_else(|| Error::Invalid(format!("{bundle_name} carries notes only, and {branch} has no commits")))?
    };
    // A bundle older than the branch (already imported, or overtaken) brings nothing new.
    let behind = current
        .as_deref()
        .is_some_and(|cur| cur != incoming && is_ancestor_in(&q.dir, &incoming, cur));
    let incoming = if behind {
        current.clone().expect("behind implies a branch")
    } else {
        incoming
    };
    let moves = current.as_deref() != Some(incoming.as_str());
    if moves {
        if let Some(cur) = &current
            && !is_ancestor_in(&q.dir, cur, &incoming)
        {
            return Err(Error::Invalid(format!(
                "{bundle_name}: {branch} diverged (the bundle's {} does not contain this repository's {}); only fast-forwards are accepted",
                &incoming[..12],
                &cur[..12]
            )));
        }
        // Prove the incoming history before it becomes the branch: the commits after this
        // repository's checkpoint when it has a good one the bundle contains, else all.
        let ledger = Ledger::open(&q.dir, branch)?;
        let tip = ObjectId::from_hex(incoming.as_bytes())?;
        let home = Ledger::open(root, branch)?;
        let proven = match checkpoint::read(&home) {
            Ok(Some(cp)) => ObjectId::from_hex(cp.tip.as_bytes())
                .ok()
                .filter(|from| is_ancestor_in(&q.dir, &from.to_string(), &incoming)),
            Ok(None) | Err(_) => None,
        };
        let report = match proven.map(|from| (from, checkpoint::verify_after(&ledger, from, tip))) {
            Some((from, Ok(report))) => {
                tracing::debug!(from = %from, commits = report.commits, "incoming history verified after the checkpoint");
                report
            }
            Some((_, Err(_))) | None => verify::verify_at(&ledger, tip)?,
        };
        if let Some(p) = report.problems.first() {
            return Err(Error::Tampered(format!(
                "{bundle_name}: the incoming ledger does not verify ({} problems; first: commit {} {}: {})",
                report.problems.len(),
                p.commit,
                p.path,
                p.message
            )));
        }
    }
    let head_is_branch = git(root, &["symbolic-ref", "-q", "HEAD"]).ok().as_deref() == Some(branch_ref.as_str());
    let dirty = moves && head_is_branch && !git(root, &["status", "--porcelain", "--untracked-files=no"])?.is_empty();
    if dirty {
        return Err(Error::Refused(format!(
            "the working tree has uncommitted changes to tracked files; commit or stash them, then import {bundle_name} again"
        )));
    }
    if moves && head_is_branch {
        // The working tree follows the branch: a file the import would add must not be there
        // already untracked (git would refuse at the very end, after the objects came in).
        let from = current.clone().unwrap_or_else(|| EMPTY_TREE.to_string());
        let added = git(&q.dir, &["diff", "--name-only", "--diff-filter=A", &from, &incoming])?;
        // The path itself, or a file where the import needs one of its directories.
        let in_the_way = |p: &str| {
            root.join(p).exists()
                || std::path::Path::new(p)
                    .ancestors()
                    .skip(1)
                    .filter(|a| !a.as_os_str().is_empty())
                    .any(|a| root.join(a).is_file())
        };
        if let Some(p) = added.lines().find(|p| !p.is_empty() && in_the_way(p)) {
            return Err(Error::Refused(format!(
                "{p} is in the working tree but not committed, and {bundle_name} adds it; move it away, then import again"
            )));
        }
    }
    // Proven: bring the objects in (from the quarantine, all local) under a temporary ref.
    let landing = format!("refs/stella/quarantine/{}", std::process::id());
    let landing_notes = format!("{landing}-notes");
    let q_dir = q.dir.display().to_string();
    let mut specs = vec![format!("{incoming_ref}:{landing}")];
    if has_notes {
        specs.push(format!("{notes_ref}:{landing_notes}"));
    }
    let result = (|| {
        let mut args = vec!["fetch", "-q", "--no-tags", "--no-write-fetch-head", q_dir.as_str()];
        if has_branch {
            args.push(&specs[0]);
        }
        if has_notes {
            args.push(specs.last().expect("notes spec"));
        }
        git(root, &args)?;
        let commits = match (&current, moves) {
            (_, false) => 0,
            (Some(c), true) => git(root, &["rev-list", "--count", &format!("{c}..{incoming}")])?
                .parse()
                .unwrap_or(0),
            (None, true) => git(root, &["rev-list", "--count", &incoming])?.parse().unwrap_or(0),
        };
        if moves {
            let old = current.clone().unwrap_or_else(|| "0".repeat(40));
            if head_is_branch {
                // Moves the branch and the working tree together; refuses rather than overwrite.
                git(root, &["merge", "-q", "--ff-only", &incoming])?;
            } else {
                git(root, &["update-ref", &branch_ref, &incoming, &old])?;
            }
        }
        if has_notes {
            merge_notes(root, &landing_notes)?;
        }
        Ok(Imported {
            from: current.clone(),
            to: incoming.clone(),
            commits,
            worktree_updated: moves && head_is_branch,
            notes: has_notes,
        })
    })();
    let _ = git(root, &["update-ref", "-d", &landing]);
    let _ = git(root, &["update-ref", "-d", &landing_notes]);
    result
}

/// Brings `incoming` notes into `refs/notes/stella`: taken as they are when they contain ours,
/// merged otherwise (theirs win on the same commit: a note is a plan summary, re-made at will).
fn merge_notes(root: &Path, incoming: &str) -> Result<(), Error> {
    let Some(theirs) = rev(root, incoming) else {
        return Ok(());
    };
    match rev(root, NOTES) {
        None => git(root, &["update-ref", NOTES, &theirs]).map(|_| ()),
        Some(ours) if is_ancestor_in(root, &ours, &theirs) => {
            git(root, &["update-ref", NOTES, &theirs, &ours]).map(|_| ())
        }
        Some(ours) if is_ancestor_in(root, &theirs, &ours) => Ok(()),
        Some(_) => git(
            root,
            &[
                "-c",
                "user.name=stella",
                "-c",
                "user.email=stella@stella.invalid",
                "notes",
                "--ref=stella",
                "merge",
                "-q",
                "-s",
                "theirs",
                incoming,
            ],
        )
        .map(|_| ()),
    }
}
