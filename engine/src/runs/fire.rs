//! Firing schedules (DESIGN section 12): at a moment `now`, which slot of each schedule on the
//! branch tip is due, and committing its request (`Ledger::commit_scheduled`). Stateless: a
//! slot's run id is deterministic, so the ledger says whether it has run; what this runner
//! keeps in `Memo` is a cache a crash may lose. Never executes a run (the scan starts it).

use std::collections::HashMap;

use gix::ObjectId;
use jiff::Timestamp;

use super::{Environment, Error};
use crate::diag::Diagnostics;
use crate::ledger::Ledger;
use crate::schedule::{self, CatchUp, Concurrency, Schedule};

/// What one firing did and found.
#[derive(Debug, Default)]
pub struct Fired {
    /// Runs whose request this runner committed now.
    pub requested: Vec<String>,
    /// Slots due but not fired, with why (said once by the caller).
    pub skipped: Vec<(String, String)>,
    /// The problems of the schedules file (its bad schedules are skipped).
    pub problems: Diagnostics,
    /// The next slot of any enabled schedule after `now`: when to wake up.
    pub next: Option<Timestamp>,
}

/// What a runner remembers between firings: whether a schedule was on the branch at a slot
/// (a walk of history, made once per missed slot).
#[derive(Debug, Default)]
pub struct Memo {
    existed: HashMap<(String, i64), bool>,
    /// The tip the last firing read, and the next slot it found: until the branch moves or
    /// that slot comes, a firing would find what it found then.
    last: Option<(ObjectId, Option<Timestamp>)>,
}

/// Commits the request of every slot due at `now` that has no run yet. `live` are the runs
/// the last scan found not settled (for `concurrency: forbid`).
pub fn fire(env: &Environment, live: &[String], now: Timestamp, memo: &mut Memo) -> Result<Fired, Error> {
    let mut ledger = env.ledger();
    ledger.refresh();
    let Some(tip) = ledger.tip()? else {
        return Ok(Fired::default());
    };
    if let Some((seen, next)) = memo.last
        && seen == tip
        && next.is_some_and(|n| now < n)
    {
        return Ok(Fired {
            next,
            ..Fired::default()
        });
    }
    let schedules = ledger.schedules_at(tip)?;
    let mut fired = Fired {
        problems: schedules.problems.clone(),
        ..Fired::default()
    };
    // Whether a slot waits for a run to end (then the next firing must look again).
    let mut held = false;
    for s in schedules.schedules.iter().filter(|s| s.enabled) {
        if let Some(next) = s.next_after(now) {
            fired.next = Some(fired.next.map_or(next, |n: Timestamp| n.min(next)));
        }
        let Some(slot) = s.last_at_or_before(now) else {
            continue;
        };
        let id = s.run_id(slot);
        if ledger.locate(tip, &id)?.is_some() {
            continue;
        }
        if let Some((why, for_now)) = hold_back(&ledger, tip, s, slot, now, live, memo)? {
            held |= for_now;
            fired.skipped.push((id, why));
            continue;
        }
        if ledger.commit_scheduled(s, slot, env.key.as_ref())?.is_some() {
            tracing::info!(schedule = %s.id, slot = %schedule::slot_text(slot), run = %id, "schedule fired");
            fired.requested.push(id);
        }
    }
    memo.last = (fired.requested.is_empty() && !held).then_some((tip, fired.next));
    Ok(fired)
}

/// Why the slot, due and without a run, is not fired now, if it is not; and whether only for
/// now (a run it waits for may end), not for good.
fn hold_back(
    ledger: &Ledger,
    tip: ObjectId,
    s: &Schedule,
    slot: Timestamp,
    now: Timestamp,
    live: &[String],
    memo: &mut Memo,
) -> Result<Option<(String, bool)>, Error> {
    let late = now.as_second() - slot.as_second() > schedule::GRACE_SECS;
    if late {
        match s.catch_up {
            CatchUp::None => return Ok(Some(("missed (more than 60 s late; catchUp: none)".into(), false))),
            CatchUp::Last => {
                let key = (s.id.clone(), slot.as_second());
                let existed = match memo.existed.get(&key) {
                    Some(e) => *e,
                    None => {
                        let e = existed_at(ledger, tip, &s.id, slot.as_second())?;
                        memo.existed.insert(key, e);
                        e
                    }
                };
                if !existed {
                    let why = "missed before the schedule was on the branch (not caught up)";
                    return Ok(Some((why.into(), false)));
                }
            }
        }
    }
    if s.concurrency == Concurrency::Forbid {
        for other in live.iter().filter(|r| s.owns(r)) {
            if let Some(dir) = ledger.locate(tip, other)?
                && !super::view_for_state(ledger, tip, &dir).state().state.is_terminal()
            {
                let why = format!("run {other} of this schedule is unfinished (concurrency: forbid)");
                return Ok(Some((why, true)));
            }
        }
    }
    Ok(None)
}

/// Whether schedule `id` was in the schedules file of the branch as it stood at `at` (unix
/// seconds): the newest commit on the first-parent line committed by then.
fn existed_at(ledger: &Ledger, tip: ObjectId, id: &str, at: i64) -> Result<bool, Error> {
    let mut commit = tip;
    for _ in 0..100_000 {
        if ledger.commit_time(commit)? <= at {
            return Ok(ledger.schedules_at(commit)?.get(id).is_some());
        }
        match ledger.parents(commit)?.first() {
            Some(p) => commit = *p,
            None => return Ok(false),
        }
    }
    Ok(false)
}
