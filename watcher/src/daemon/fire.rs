//! The daemon's schedule clock: fires the slots due now (`runs::fire`, on a blocking worker),
//! says once what it skipped and what is wrong in the schedules file, and knows when the next
//! slot comes so the loop wakes for it. Never starts a run (the scan that follows does).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use stella_engine::runs::Environment;
use stella_engine::runs::fire::{Memo, fire};
use tracing::{info, warn};

use crate::failure::Failure;

/// What the clock keeps between cycles.
#[derive(Default)]
pub struct Clock {
    memo: Option<Memo>,
    /// When the next slot of any enabled schedule comes.
    pub next: Option<SystemTime>,
    said: HashSet<String>,
    /// `--once`: the moment slots are judged at, fixed at start, so the slots due then fire
    /// and the daemon ends however long their runs take.
    at: Option<jiff::Timestamp>,
}

impl Clock {
    /// A clock judging slots at `at` for good (`--once`), or at each firing's now.
    pub fn new(at: Option<jiff::Timestamp>) -> Clock {
        Clock { at, ..Clock::default() }
    }

    /// Fires what is due; `live` are the runs not settled. Returns how many requests were
    /// committed. A ledger that cannot be written is logged and tried at the next cycle.
    pub async fn fire(&mut self, env: &Arc<Environment>, live: Vec<String>) -> Result<usize, Failure> {
        let (env, mut memo) = (env.clone(), self.memo.take().unwrap_or_default());
        let at = self.at.unwrap_or_else(jiff::Timestamp::now);
        let (done, memo) = tokio::task::spawn_blocking(move || {
            let done = fire(&env, &live, at, &mut memo);
            (done, memo)
        })
        .await
        .map_err(|e| Failure::one(stella_engine::Code::Io, e.to_string()))?;
        self.memo = Some(memo);
        let fired = match done {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "cannot fire schedules; tried again at the next cycle");
                self.next = Some(SystemTime::now() + Duration::from_secs(1));
                return Ok(0);
            }
        };
        for d in fired.problems.iter() {
            if self.said.insert(d.to_string()) {
                warn!(code = %d.code, "{d}; this schedule is skipped, the others run");
            }
        }
        for (run, why) in &fired.skipped {
            if self.said.insert(format!("{run} {why}")) {
                info!(run = %run, "schedule slot skipped: {why}");
            }
        }
        self.next = fired.next.map(SystemTime::from);
        Ok(fired.requested.len())
    }

    /// How long until the next slot (a few ms past it, so it is due when the loop wakes).
    pub fn until_next(&self) -> Option<Duration> {
        self.next
            .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_millis(5))
    }
}
