//! Ledger checkpoints: `.git/stella/checkpoint`, a runner's signed record that the branch's
//! history up to a tip verified clean, so `ledger verify --since-checkpoint` (and the
//! daemon's check at start) verifies only the commits after it. A checkpoint is trusted only
//! as far as it proves itself: its SSH signature (namespace `stella-checkpoint`) must be made
//! by a key that the checkpointed tip's own `.stella/allowed_signers` trusts as a runner
//! (namespace `git`), and that tip must be in the branch's history. A local file, like the
//! journal: never committed, pushed or read from the repository's objects.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gix::ObjectId;
use serde::{Deserialize, Serialize};

use super::verify::{self, Report};
use super::{Ledger, git};
use crate::allowed_signers::AllowedSigners;
use crate::code::Code;
use crate::keys::SshKey;

/// The SSH signature namespace of checkpoints: no commit or evidence signature can pass for
/// one, nor one for them.
pub const NAMESPACE: &str = "stella-checkpoint";

/// What a checkpoint records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    /// The branch it is for (`refs/heads/main`).
    pub branch: String,
    /// The verified tip (full hex id).
    pub tip: String,
    /// The commits, and runner commits, verified up to and including the tip.
    pub commits: usize,
    pub runner_commits: usize,
    /// When it was written (RFC 3339, UTC); the signing key must be trusted at that time.
    pub time: String,
}

/// The file: the record and the signature over its canonical JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Signed {
    checkpoint: Checkpoint,
    signature: String,
}

/// A checkpoint that cannot be used. Every one but `Io` and `Ledger` says the file is not what
/// a runner wrote for this history.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a checkpoint ({why}); remove it to verify the whole history", path.display())]
    Malformed { path: PathBuf, why: String },
    #[error(
        "{}: {why}: the checkpoint is forged or damaged; remove it after review to verify the whole history",
        path.display()
    )]
    Forged { path: PathBuf, why: String },
    #[error(
        "{}: the checkpointed tip {tip} is not in the history of {branch}: history was rewritten past a verified tip (force-push?); remove it after review to verify the whole history",
        path.display()
    )]
    Unreachable { path: PathBuf, tip: String, branch: String },
    #[error("{0}")]
    Ledger(#[from] super::Error),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Io { .. } => Code::Io,
            Error::Ledger(e) => e.code(),
            Error::Malformed { .. } | Error::Forged { .. } | Error::Unreachable { .. } => Code::LedgerTampered,
        }
    }
}

/// Where the checkpoint lives: `<git-dir>/stella/checkpoint`.
pub fn path(git_dir: &Path) -> PathBuf {
    git_dir.join("stella").join("checkpoint")
}

/// The checkpoint for the ledger's branch, proven: `None` when there is none, or only one for
/// another branch.
pub fn read(ledger: &Ledger) -> Result<Option<Checkpoint>, Error> {
    let path = path(ledger.git_dir());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path, source }),
    };
    let signed: Signed = serde_json::from_str(&text).map_err(|e| Error::Malformed {
        path: path.clone(),
        why: e.to_string(),
    })?;
    let cp = signed.checkpoint;
    if cp.branch != ledger.branch() {
        return Ok(None);
    }
    let forged = |why: String| Error::Forged {
        path: path.clone(),
        why,
    };
    let key = crate::sshsig::verify(
        &signed.signature,
        NAMESPACE,
        crate::canonical::to_string(&cp).as_bytes(),
    )
    .map_err(|e| forged(format!("its signature does not verify ({e})")))?;
    let at = humantime::parse_rfc3339(&cp.time).map_err(|e| forged(format!("time {}: {e}", cp.time)))?;
    let unreachable = || Error::Unreachable {
        path: path.clone(),
        tip: cp.tip.clone(),
        branch: ledger.branch().to_string(),
    };
    let tip = ObjectId::from_hex(cp.tip.as_bytes()).map_err(|e| forged(format!("tip {}: {e}", cp.tip)))?;
    if ledger.repo.find_commit(tip).is_err() {
        return Err(unreachable());
    }
    // Trust as the checkpointed tip has it: the checkpoint vouches for that history only.
    let signers = ledger
        .read(tip, ".stella/allowed_signers")?
        .map(|t| AllowedSigners::parse(".stella/allowed_signers", &String::from_utf8_lossy(&t)))
        .and_then(Result::ok)
        .ok_or_else(|| forged("the checkpointed tip has no .stella/allowed_signers that parses".into()))?;
    if signers.find_principals(&key, "git", at).is_empty() {
        return Err(forged(format!(
            "it is signed by {}, which .stella/allowed_signers at {} does not trust as a runner (namespace git)",
            crate::keys::fingerprint_of(&key),
            &cp.tip[..12.min(cp.tip.len())]
        )));
    }
    Ok(Some(cp))
}

/// Writes a checkpoint at `tip`, signed with `key`, if that key is a runner the tip trusts
/// (otherwise a later read would refuse it): `None` then.
pub fn write(
    ledger: &Ledger,
    tip: ObjectId,
    commits: usize,
    runner_commits: usize,
    key: &SshKey,
) -> Result<Option<Checkpoint>, Error> {
    let now = SystemTime::now();
    let trusted = ledger
        .read(tip, ".stella/allowed_signers")?
        .and_then(|t| AllowedSigners::parse(".stella/allowed_signers", &String::from_utf8_lossy(&t)).ok())
        .is_some_and(|s| !s.find_principals(&key.public_key(), "git", now).is_empty());
    if !trusted {
        return Ok(None);
    }
    let cp = Checkpoint {
        branch: ledger.branch().to_string(),
        tip: tip.to_hex().to_string(),
        commits,
        runner_commits,
        time: humantime::format_rfc3339_seconds(now).to_string(),
    };
    let signature = key.sign(NAMESPACE, crate::canonical::to_string(&cp).as_bytes());
    let text = serde_json::to_string_pretty(&Signed {
        checkpoint: cp.clone(),
        signature,
    })
    .expect("JSON");
    let path = path(ledger.git_dir());
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let tmp = path.with_extension("tmp");
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io(&path))?;
    std::fs::write(&tmp, text + "\n").map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(Some(cp))
}

/// Verifies the commits of `tip`'s history after the checkpoint, with every check of a full
/// verify: `None` when there is no checkpoint for the branch. A checkpoint that does not
/// prove itself, or whose tip `tip` does not contain, is an error.
pub fn verify_since(ledger: &Ledger, tip: ObjectId) -> Result<Option<(Checkpoint, Report)>, Error> {
    let Some(cp) = read(ledger)? else {
        return Ok(None);
    };
    let from = ObjectId::from_hex(cp.tip.as_bytes()).map_err(super::git)?;
    if !ledger.is_ancestor(from, tip)? {
        return Err(Error::Unreachable {
            path: path(ledger.git_dir()),
            tip: cp.tip.clone(),
            branch: ledger.branch().to_string(),
        });
    }
    let report = verify_after(ledger, from, tip)?;
    Ok(Some((cp, report)))
}

/// Checks the commits of `tip`'s history that `from` (a proven checkpoint's tip, in that
/// history) does not contain, with every check of a full verify. `ledger` may be another
/// repository than the checkpoint's, sharing its objects (a bundle's quarantine).
pub fn verify_after(ledger: &Ledger, from: ObjectId, tip: ObjectId) -> Result<Report, Error> {
    let mut after = Vec::new();
    for info in ledger.repo.rev_walk([tip]).with_hidden([from]).all().map_err(git)? {
        after.push(info.map_err(git)?.id);
    }
    after.reverse();
    let mut report = verify::check(ledger, &after)?;
    verify::check_ledger_branch(ledger, tip, Some(from), &mut report)?;
    Ok(report)
}

/// What `tip`'s history verifies to: from this repository's checkpoint when there is a good
/// one that `tip` contains, else from the start. A checkpoint that is missing, forged or
/// unreachable only costs the full walk here (`stella ledger verify` reports it).
pub fn verify_quickly(ledger: &Ledger, tip: ObjectId) -> Result<Report, super::Error> {
    match verify_since(ledger, tip) {
        Ok(Some((_, report))) => Ok(report),
        Ok(None) | Err(_) => verify::verify_at(ledger, tip),
    }
}

/// After a clean verification of `tip` (from `since`, or the whole history): records a
/// checkpoint there with the counts so far. `None` when the report has problems or the key
/// is not a runner the tip trusts.
pub fn record(
    ledger: &Ledger,
    tip: ObjectId,
    report: &Report,
    since: Option<&Checkpoint>,
    key: &SshKey,
) -> Result<Option<Checkpoint>, Error> {
    if !report.problems.is_empty() {
        return Ok(None);
    }
    let (commits, runner) = since.map_or((0, 0), |c| (c.commits, c.runner_commits));
    write(
        ledger,
        tip,
        commits + report.commits,
        runner + report.runner_commits,
        key,
    )
}
