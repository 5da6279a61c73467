//! Reading plan notes (DESIGN section 9): the summary a runner wrote on a pull request's head
//! commit in `refs/notes/stella` (or fetched into `refs/stella/remote-notes`), and the plan
//! hash it binds a merged request to. Reads through the `Ledger` only; writing and pushing
//! notes is `remote`'s.

use std::collections::{HashSet, VecDeque};

use gix::ObjectId;

use super::Ledger;
use crate::layout::RunDir;

/// The notes runners write plan summaries in.
pub const NOTES_REF: &str = "refs/notes/stella";
/// Where the remote's notes land when fetched.
pub const REMOTE_NOTES_REF: &str = "refs/stella/remote-notes";
/// How many commits the search for a run's note walks back at most.
const MAX_WALK: usize = 500;

/// The note on `commit` in the notes whose tip is `notes` (flat or fanned-out layout).
fn note_at(ledger: &Ledger, notes: ObjectId, commit: ObjectId) -> Option<String> {
    let hex = commit.to_string();
    let paths = [
        hex.clone(),
        format!("{}/{}", &hex[..2], &hex[2..]),
        format!("{}/{}/{}", &hex[..2], &hex[2..4], &hex[4..]),
    ];
    paths
        .iter()
        .find_map(|p| ledger.read(notes, p).ok().flatten())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The plan hash noted for run `id` on the pull request that brought it: the newest commit
/// holding the request, walking back from `commit`, whose note (local or fetched) has a plan
/// for the run. `(noted commit, planHash)`.
pub fn noted_plan_hash(ledger: &Ledger, commit: ObjectId, dir: &RunDir) -> Option<(ObjectId, String)> {
    let id = dir.id.as_str();
    let stores: Vec<ObjectId> = [NOTES_REF, REMOTE_NOTES_REF]
        .iter()
        .filter_map(|r| ledger.resolve(r))
        .collect();
    if stores.is_empty() {
        return None;
    }
    let request_path = dir.file("request.yaml");
    let header = format!("stella plan for runs/{id}\n");
    let mut queue = VecDeque::from([commit]);
    let mut seen = HashSet::new();
    while let Some(c) = queue.pop_front() {
        if !seen.insert(c) || seen.len() > MAX_WALK {
            continue;
        }
        if ledger.read(c, &request_path).ok().flatten().is_none() {
            continue;
        }
        for notes in &stores {
            let Some(text) = note_at(ledger, *notes, c) else {
                continue;
            };
            let Some(start) = text.find(&header) else { continue };
            let section = &text[start + header.len()..];
            let section = section.split("\nstella plan for ").next().unwrap_or(section);
            if let Some(hash) = section.lines().find_map(|l| l.trim().strip_prefix("planHash: ")) {
                return Some((c, hash.trim().to_string()));
            }
        }
        queue.extend(ledger.parents(c).unwrap_or_default());
    }
    None
}
