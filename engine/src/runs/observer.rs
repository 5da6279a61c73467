//! `Observer`: whoever wants to be told, as it happens, of every event this runner records for
//! a run in a repository (the watcher's metrics). Told by the run's `LedgerSink` after the
//! journal holds the event, on the executor's threads; an observer never changes a run, never
//! blocks, and is never told of events it did not see happen (a journal rebuilt from the
//! ledger, a replay).

use crate::event::Event;
use crate::plan::Plan;

/// Told of the work on runs as it happens. Calls for one run come from one piece of work at a
/// time, `begin` first and `end` last; events of parallel steps may come from several threads.
pub trait Observer: Send + Sync {
    /// Work on run `run` begins; `prior` are its events so far (`step.log` lines stripped).
    fn begin(&self, run: &str, prior: &[Event]);
    /// The run's plan is known (it may be told more than once, always the same plan).
    fn planned(&self, run: &str, plan: &Plan);
    /// `event` was just recorded in the run's journal.
    fn recorded(&self, run: &str, event: &Event);
    /// The work on the run ended for now (finished, waiting, stopped or failed).
    fn end(&self, run: &str);
}
