//! Who requested a run (DESIGN section 13): the principal whose SSH signature, trusted for
//! namespace `git` by the trust commit's allowed_signers, is on the commit that added the
//! request file: on the first-parent line, or on the merged side when a merge brought it.
//! Reads history and trust files through the ledger; decides nothing about refusing the run.

use gix::ObjectId;

use super::Environment;
use super::trust::{FirstParents, arrival};
use crate::allowed_signers::AllowedSigners;
use crate::approvals::MAX_TRUST_FILE_BYTES;
use crate::ledger::{Ledger, Within};

/// How many merges deep the search for the adding commit follows merged sides.
const MAX_MERGES: usize = 64;

/// The principal who signed the commit that added `request_path`, or why there is none
/// (a sentence naming the commit). `arrived` is the commit of the branch's first-parent line
/// that brought the request; `trust` the commit whose allowed_signers judge the signature.
pub fn requested_by(
    env: &Environment,
    request_path: &str,
    trust: ObjectId,
    arrived: ObjectId,
) -> Result<String, String> {
    let ledger = env.ledger();
    signed_in(&ledger, &env.first_parents, request_path, trust, arrived)
}

/// Who a pull request's head `head` names as the requester of `request_path`, judged by the
/// allowed_signers of `trust` (the branch it would merge into): what `requested_by` will find
/// after a merge commit brings it. For the pull-request notes.
pub fn requested_on_pull_request(
    ledger: &Ledger,
    head: ObjectId,
    trust: ObjectId,
    request_path: &str,
) -> Result<String, String> {
    let parents = FirstParents::default();
    let has = |c: ObjectId| ledger.read(c, request_path).ok().flatten().is_some();
    let arrived = arrival(ledger, &parents, head, has).arrived;
    signed_in(ledger, &parents, request_path, trust, arrived)
}

fn signed_in(
    ledger: &Ledger,
    parents: &FirstParents,
    request_path: &str,
    trust: ObjectId,
    arrived: ObjectId,
) -> Result<String, String> {
    let added = adding_commit(ledger, parents, arrived, request_path);
    let short = &added.to_string()[..12];
    let signers = signers_at(ledger, trust)?;
    crate::ledger::verify::signer(ledger, added, &signers)
        .map_err(|why| format!("commit {short}, which added {request_path}: {why}"))
}

/// The commit that added the request as it is at `arrived`: `arrived` itself, unless it is a
/// merge whose other parent already held the same file; then the commit on that side that
/// added it (followed through further merges, at most `MAX_MERGES` deep).
fn adding_commit(ledger: &Ledger, parents: &FirstParents, arrived: ObjectId, path: &str) -> ObjectId {
    let Some(content) = ledger.read(arrived, path).ok().flatten() else {
        return arrived;
    };
    let same = |c: ObjectId| ledger.read(c, path).ok().flatten().as_deref() == Some(&content[..]);
    let mut at = arrived;
    for _ in 0..MAX_MERGES {
        let of = ledger.parents(at).unwrap_or_default();
        if of.len() < 2 || same(of[0]) {
            return at;
        }
        // A merge that brought the file from another parent: the file was added on that side.
        let Some(&side) = of[1..].iter().find(|&&p| same(p)) else {
            return at;
        };
        at = arrival(ledger, parents, side, same).arrived;
    }
    at
}

/// The allowed_signers of `commit`, read within the trust files' limit (none: an empty list).
fn signers_at(ledger: &Ledger, commit: ObjectId) -> Result<AllowedSigners, String> {
    const PATH: &str = ".stella/allowed_signers";
    let text = match ledger.read_within(commit, PATH, MAX_TRUST_FILE_BYTES) {
        Ok(Some(Within::Read(b))) => String::from_utf8_lossy(&b).into_owned(),
        Ok(Some(Within::TooLarge(size))) => {
            return Err(format!(
                "{PATH} at the trust commit is {size} bytes; at most {MAX_TRUST_FILE_BYTES} are read"
            ));
        }
        Ok(None) | Err(_) => String::new(),
    };
    AllowedSigners::parse(PATH, &text).map_err(|d| format!("{PATH} at the trust commit does not parse: {d}"))
}
