//! Which runs a scan returns, from the index brought to the tip: the head's runs, the settled
//! runs of the log (all of them, or the newest read from the log's end). Reads the log; never
//! git, never writes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use gix::ObjectId;

use super::super::Summary;
use super::super::index::log::{Log, Record, Settled};
use super::super::index::{Facts, Head};
use crate::layout::{Layout, RunDir};

/// What a scan read of runs that cannot be read as runs (the head keeps no facts of them).
pub type Invalid = HashMap<String, (Facts, super::super::Invalid)>;

pub fn newest_first(runs: &mut [Summary]) {
    runs.sort_by(|a, b| (b.facts.order(), &b.id).cmp(&(a.facts.order(), &a.id)));
}

pub fn summary(id: &str, layout: Layout, tree: &str, approvals: Option<&str>, facts: Facts) -> Option<Summary> {
    let oid = |s: &str| ObjectId::from_hex(s.as_bytes()).ok();
    Some(Summary {
        id: id.to_string(),
        dir: RunDir {
            id: id.to_string(),
            layout,
        },
        facts,
        invalid: None,
        tree: oid(tree)?,
        approvals: approvals.and_then(oid),
    })
}

/// The runs the head holds, by id.
pub fn live(head: &Head, invalid: &Invalid) -> Vec<Summary> {
    head.live
        .iter()
        .filter_map(|(id, l)| {
            let (facts, invalid) = match (&l.facts, invalid.get(id)) {
                (Some(f), _) => (f.clone(), None),
                (None, Some((f, why))) => (f.clone(), Some(why.clone())),
                (None, None) => return None,
            };
            let mut s = summary(id, l.layout, &l.tree, l.approvals.as_deref(), facts)?;
            s.invalid = invalid;
            Some(s)
        })
        .collect()
}

/// The head's runs and the settled ones, by id.
pub fn everything(head: &Head, invalid: &Invalid, settled: Vec<(String, Settled)>) -> Vec<Summary> {
    let mut runs = live(head, invalid);
    runs.extend(
        settled
            .into_iter()
            .filter_map(|(id, r)| summary(&id, r.layout, &r.tree, r.approvals.as_deref(), r.facts)),
    );
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    runs
}

/// The `n` newest runs: the head's, and the log's read from its end until nothing earlier
/// can be newer than the `n`th found.
pub fn newest(log: &Log<'_>, head: &Head, invalid: &Invalid, n: usize) -> std::io::Result<Vec<Summary>> {
    let mut best: BinaryHeap<Reverse<(u64, String)>> = BinaryHeap::new();
    let mut chosen: HashMap<String, Summary> = HashMap::new();
    let mut keep = |s: Summary, best: &mut BinaryHeap<Reverse<(u64, String)>>| {
        best.push(Reverse((s.facts.order(), s.id.clone())));
        chosen.insert(s.id.clone(), s);
        if best.len() > n
            && let Some(Reverse((_, id))) = best.pop()
        {
            chosen.remove(&id);
        }
    };
    for s in live(head, invalid) {
        keep(s, &mut best);
    }
    let mut seen: HashSet<String> = head.live.keys().cloned().collect();
    log.tail(&head.log, |r| {
        if n == 0 || (best.len() >= n && best.peek().is_some_and(|Reverse((order, _))| *order > r.upto)) {
            return false;
        }
        if seen.insert(r.id.clone())
            && let Some(run) = &r.run
            && let Some(s) = summary(
                &r.id,
                run.layout,
                &run.tree,
                run.approvals.as_deref(),
                run.facts.clone(),
            )
        {
            keep(s, &mut best);
        }
        true
    })?;
    let mut runs: Vec<Summary> = chosen.into_values().collect();
    newest_first(&mut runs);
    runs.truncate(n);
    Ok(runs)
}

/// The settled runs of a log's records: the latest record of each id, but those the head holds.
pub fn latest(records: Vec<Record>, head: &Head) -> Vec<(String, Settled)> {
    let mut last: BTreeMap<String, Option<Settled>> = BTreeMap::new();
    for r in records {
        last.insert(r.id, r.run);
    }
    last.into_iter()
        .filter(|(id, _)| !head.live.contains_key(id))
        .filter_map(|(id, r)| Some((id, r?)))
        .collect()
}
