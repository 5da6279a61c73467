//! `stella schedules list [--json]`: the schedules committed on the branch, each with its next
//! slots and its last run, then the malformed ones' problems (exit 2 when there are any).
//! Only reads.

use std::path::Path;

use stella_engine::Code;
use stella_engine::runs::{self, timetable};

use crate::failure::{Failure, Outcome};
use crate::repo;

/// How many next slots each schedule shows.
const NEXT: usize = 3;

pub fn list(repo_dir: &Path, as_json: bool) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let config = repo::config_at_head(&root)?;
    let ledger = repo::open_ledger(&root, &config)?;
    let Some(tip) = ledger.tip()? else {
        return Err(Failure::one(Code::Usage, "the branch has no commits"));
    };
    let schedules = ledger.schedules_at(tip)?;
    let mut index = repo::runs_index(&root, &ledger);
    let found = runs::scan(&ledger, tip, &mut index, runs::Select::All)?;
    let table = timetable::timetable(&schedules, &found.runs, jiff::Timestamp::now(), NEXT);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&table).expect("JSON"));
    } else if table.schedules.is_empty() && table.problems.is_empty() {
        println!("no schedules in {}", table.file);
    } else {
        for s in &table.schedules {
            let state = if s.enabled { "enabled" } else { "disabled" };
            println!("{}  {state}  \"{}\" {}  {}", s.id, s.cron, s.timezone, s.pack);
            for slot in &s.next {
                println!("  next  {}  ({})  {}", slot.local, slot.utc, slot.run);
            }
            match &s.last_run {
                Some(r) => println!("  last  {}  {}", r.id, r.state),
                None => println!("  last  -"),
            }
        }
    }
    if table.problems.is_empty() {
        return Ok(Outcome::Done);
    }
    Ok(Outcome::Failed {
        code: Code::ScheduleInvalid,
        problems: table.problems.iter().map(ToString::to_string).collect(),
        summary: Some(format!(
            "{} problem(s) in {}: those schedules do not fire, the others do",
            table.problems.len(),
            table.file
        )),
    })
}
