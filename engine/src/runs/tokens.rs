//! Which requests carry a run token: a map from token to the runs whose request names it,
//! kept by one daemon and brought to each commit it plans at by diffing that commit's
//! `runs/` tree with the last one it saw (`Ledger::requests_added`), so checking a request's
//! token costs what arrived since, not a read of every request on the branch. Only a list of
//! candidates: planning reads each candidate's request at the commit it judges before
//! believing it, so a request gone since (or a rewritten branch) is never trusted.

use std::collections::HashMap;
use std::sync::Mutex;

use gix::ObjectId;

use crate::layout::RunDir;
use crate::ledger::Ledger;
use crate::request::Request;

/// Run tokens to the runs whose request carries them, as of commit `at`.
#[derive(Default)]
pub struct Tokens(Mutex<Known>);

#[derive(Default)]
struct Known {
    at: Option<ObjectId>,
    runs: HashMap<String, Vec<RunDir>>,
}

impl Tokens {
    /// The runs that may carry `token` at `commit`: every one that does, and perhaps some
    /// that no longer do there (the caller reads them). `None` when the branch cannot be read.
    pub fn candidates(&self, ledger: &Ledger, commit: ObjectId, token: &str) -> Option<Vec<RunDir>> {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if known.at != Some(commit) {
            let arrived = match known.at {
                Some(before) => ledger.requests_added(Some(before), commit).ok()?,
                None => ledger
                    .run_dirs(commit)
                    .ok()?
                    .runs
                    .into_iter()
                    .map(|(dir, _)| dir)
                    .collect(),
            };
            for dir in arrived {
                if let Some(t) = token_of(ledger, commit, &dir) {
                    let holders = known.runs.entry(t).or_default();
                    if !holders.contains(&dir) {
                        holders.push(dir);
                    }
                }
            }
            known.at = Some(commit);
        }
        Some(known.runs.get(token).cloned().unwrap_or_default())
    }
}

/// The run token of `dir`'s request at `commit`, if it has a request that parses and names one.
pub fn token_of(ledger: &Ledger, commit: ObjectId, dir: &RunDir) -> Option<String> {
    let text = ledger.read(commit, &dir.file("request.yaml")).ok().flatten()?;
    Request::parse("request.yaml", &String::from_utf8_lossy(&text))
        .ok()?
        .run_token
}
