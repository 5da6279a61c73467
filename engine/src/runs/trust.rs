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
/// the request onto the branch (or that commit itself when it has no parent).
pub fn trust_commit(env: &Environment, tip: ObjectId, request_path: &str) -> ObjectId {
    let ledger = env.ledger();
    let before_request = before_arrival(&ledger, &env.first_parents, tip, request_path);
    // A pull request merged by fast-forward puts its own earlier commits (say, one adding an
    // approver) before the request on the branch. The branch as this runner last saw it
    // before the request arrived is older than all of them: trust that when it is known.
    for seen in seen::tips(&env.git_dir).into_iter().rev() {
        let lacks = ledger.read(seen, request_path).ok().flatten().is_none();
        if lacks && ledger.is_ancestor(seen, before_request).unwrap_or(false) {
            return seen;
        }
    }
    before_request
}

/// The first parent of the commit that brought `request_path` onto the branch: the tip a
/// runner built on when it wrote the request itself (a schedule's slot).
pub fn before_request(env: &Environment, tip: ObjectId, request_path: &str) -> ObjectId {
    before_arrival(&env.ledger(), &env.first_parents, tip, request_path)
}

/// The newest commit on the first-parent line from `tip` that lacks `path` (or the root, when
/// every commit has it). A request, once on the branch, stays there unchanged (`ledger verify`
/// holds it to that), so along the line "has it" turns into "lacks it" exactly once: found by
/// galloping then bisecting, reading the path O(log n) times, not once per runner commit made
/// since the request arrived (which made planning quadratic on a busy ledger).
fn before_arrival(ledger: &Ledger, parents: &FirstParents, tip: ObjectId, path: &str) -> ObjectId {
    let has = |c: ObjectId| ledger.read(c, path).ok().flatten().is_some();
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
                return chain[root];
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
    chain[hi]
}
