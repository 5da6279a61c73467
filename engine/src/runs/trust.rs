//! Which commit's trust files judge a request: the branch as it was before the request
//! arrived (so a pull request cannot bring its own approver, signer or policy and be judged by
//! them). Reads history through the ledger and the tips this runner saw; writes nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use gix::ObjectId;

use super::Environment;
use crate::ledger::{Ledger, seen};

/// Commits' first parents (`None`: a root commit), remembered by one daemon. Bounded: past
/// `REMEMBERED` entries it starts afresh.
#[derive(Default)]
pub struct FirstParents(Mutex<HashMap<ObjectId, Option<ObjectId>>>);

const REMEMBERED: usize = 1 << 20;

impl FirstParents {
    fn of(&self, ledger: &Ledger, commit: ObjectId) -> Option<ObjectId> {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&parent) = known.get(&commit) {
            return parent;
        }
        let parent = ledger.parents(commit).ok()?.first().copied();
        if known.len() >= REMEMBERED {
            known.clear();
        }
        known.insert(commit, parent);
        parent
    }
}

/// The commit whose trust files judge a request: the first parent of the commit that brought
/// the request onto the branch (or that commit itself when it has no parent), or an older tip
/// this runner saw; and the commit of the first-parent line from `tip` that brought it (a
/// merge, when a merge brought it).
pub fn trust_and_arrival(env: &Environment, tip: ObjectId, request_path: &str) -> (ObjectId, ObjectId) {
    let ledger = env.ledger();
    let has = |c: ObjectId| ledger.read(c, request_path).ok().flatten().is_some();
    let found = arrival(&ledger, &env.first_parents, tip, has);
    let mut before_request = found.before;
    // On a separate ledger branch a runner's merge brought it: the branch people commit to
    // is judged as it was before the request arrived there, or as the runner took it in
    // last before the merge (the ledger's "last seen"), whichever is older.
    if let Some(watched) = ledger.taken_by_merge(found.arrived) {
        before_request = arrival(&ledger, &env.first_parents, watched, has).before;
        if let Ok(Some(last)) = ledger.last_taken_in(found.before)
            && !has(last)
            && ledger.is_ancestor(last, before_request).unwrap_or(false)
        {
            return (last, found.arrived);
        }
        return (before_request, found.arrived);
    }
    // A pull request merged by fast-forward puts its own earlier commits (say, one adding an
    // approver) before the request on the branch. The branch as this runner last saw it
    // before the request arrived is older than all of them: trust that when it is known.
    for seen in seen::tips(&env.git_dir).into_iter().rev() {
        let lacks = ledger.read(seen, request_path).ok().flatten().is_none();
        if lacks && ledger.is_ancestor(seen, before_request).unwrap_or(false) {
            return (seen, found.arrived);
        }
    }
    (before_request, found.arrived)
}

/// The commit whose trust files judge a request (see `trust_and_arrival`).
pub fn trust_commit(env: &Environment, tip: ObjectId, request_path: &str) -> ObjectId {
    trust_and_arrival(env, tip, request_path).0
}

/// The first parent of the commit that brought `request_path` onto the branch: the tip a
/// runner built on when it wrote the request itself (a schedule's slot).
pub fn before_request(env: &Environment, tip: ObjectId, request_path: &str) -> ObjectId {
    let ledger = env.ledger();
    let has = |c: ObjectId| ledger.read(c, request_path).ok().flatten().is_some();
    arrival(&ledger, &env.first_parents, tip, has).before
}

/// Where, on the first-parent line from a tip, a property of commits became true.
pub struct Arrival {
    /// The oldest commit of the line with the property since it last lacked it.
    pub arrived: ObjectId,
    /// Its first parent, which lacks the property (`arrived` itself when it is the root).
    pub before: ObjectId,
}

/// The newest commit on the first-parent line from `tip` for which `has` is false, and the
/// one after it (or the root twice, when `has` holds all the way). A request, once on the
/// branch, stays there unchanged (`ledger verify` holds it to that), so along the line "has
/// it" turns into "lacks it" exactly once: found by galloping then bisecting, calling `has`
/// O(log n) times, not once per runner commit made since the request arrived (which made
/// planning quadratic on a busy ledger). On a line where `has` flips more than once, one of
/// the flips is found.
pub fn arrival(ledger: &Ledger, parents: &FirstParents, tip: ObjectId, has: impl Fn(ObjectId) -> bool) -> Arrival {
    let mut chain = vec![tip];
    // Extends the chain to hold index `i` if the history is that long; false at the root.
    let reach = |chain: &mut Vec<ObjectId>, i: usize| {
        while chain.len() <= i {
            let last = *chain.last().expect("non-empty");
            match parents.of(ledger, last) {
                Some(parent) => chain.push(parent),
                None => return false,
            }
        }
        true
    };
    // Invariant: chain[lo] has the path; chain[hi] lacks it (once found).
    let (mut lo, mut hi) = (0, 1);
    loop {
        if !reach(&mut chain, hi) {
            let root = chain.len() - 1;
            if has(chain[root]) {
                return Arrival {
                    arrived: chain[root],
                    before: chain[root],
                };
            }
            hi = root;
            break;
        }
        if !has(chain[hi]) {
            break;
        }
        lo = hi;
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if has(chain[mid]) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Arrival {
        arrived: chain[hi - 1],
        before: chain[hi],
    }
}
