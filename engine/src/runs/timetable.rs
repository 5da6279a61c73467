//! What `stella schedules list` and the workspace's `GET /api/v1/schedules` show: each
//! schedule with its next slots (in its zone and in UTC) and its last run, and the problems of
//! the malformed ones. A pure function of the schedules file, the runs and a moment.

use jiff::Timestamp;
use serde::Serialize;

use super::Summary;
use crate::diag::Diagnostic;
use crate::schedule::{self, CatchUp, Concurrency, Schedules};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timetable {
    pub file: &'static str,
    pub schedules: Vec<Row>,
    /// The malformed schedules' problems (`ERR_SCHEDULE_INVALID`, file:line:field).
    pub problems: Vec<Diagnostic>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub id: String,
    pub cron: String,
    pub timezone: String,
    pub pack: String,
    pub enabled: bool,
    pub concurrency: Concurrency,
    pub catch_up: CatchUp,
    /// The next slots (none while disabled).
    pub next: Vec<Slot>,
    pub last_run: Option<LastRun>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Slot {
    /// RFC 3339 in UTC.
    pub utc: String,
    /// RFC 3339 with the zone's offset at the slot.
    pub local: String,
    /// The run id the slot gets.
    pub run: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub id: String,
    pub state: &'static str,
}

/// The timetable at `now`, with `n` next slots per enabled schedule; `runs` are the runs on
/// the branch (any selection holding each schedule's newest).
pub fn timetable(schedules: &Schedules, runs: &[Summary], now: Timestamp, n: usize) -> Timetable {
    let rows = schedules
        .schedules
        .iter()
        .map(|s| {
            let mut next = Vec::new();
            let mut t = now;
            while s.enabled && next.len() < n {
                let Some(slot) = s.next_after(t) else { break };
                next.push(Slot {
                    utc: schedule::slot_text(slot),
                    local: slot.to_zoned(s.tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
                    run: s.run_id(slot),
                });
                t = slot;
            }
            // A slot's run id sorts with its time: the greatest is the newest.
            let last_run = runs
                .iter()
                .filter(|r| s.owns(&r.id))
                .max_by(|a, b| a.id.cmp(&b.id))
                .map(|r| LastRun {
                    id: r.id.clone(),
                    state: r.facts.status.as_str(),
                });
            Row {
                id: s.id.clone(),
                cron: s.cron_text.clone(),
                timezone: s.timezone.clone(),
                pack: s.pack.clone(),
                enabled: s.enabled,
                concurrency: s.concurrency,
                catch_up: s.catch_up,
                next,
                last_run,
            }
        })
        .collect();
    Timetable {
        file: schedule::SCHEDULES_PATH,
        schedules: rows,
        problems: schedules.problems.0.clone(),
    }
}
