//! Requests the runner writes itself, for a schedule's slot (DESIGN section 12): committing
//! one (`Ledger::commit_scheduled`, the one runner commit that adds a `request.yaml`), and the
//! rule `ledger verify` holds every request with a `trigger` to. Never decides what is due.

use gix::ObjectId;
use jiff::Timestamp;

use super::{CommitSigner, Error, FileWrite, Ledger};
use crate::layout::RunDir;
use crate::request::Request;
use crate::schedule::{self, Schedule, Schedules};

impl Ledger {
    /// Commits the request of `schedule`'s `slot` on the branch tip, unless the slot's run is
    /// there already. Returns the new commit, or `None` when the run existed.
    pub fn commit_scheduled(
        &mut self,
        schedule: &Schedule,
        slot: Timestamp,
        signer: &dyn CommitSigner,
    ) -> Result<Option<ObjectId>, Error> {
        let id = schedule.run_id(slot);
        if let Some(tip) = self.tip()?
            && self.locate(tip, &id)?.is_some()
        {
            return Ok(None);
        }
        let write = FileWrite {
            path: RunDir::new(&id).file("request.yaml"),
            bytes: schedule.request(slot).into_bytes(),
        };
        let message = format!(
            "stella: schedule {} fires slot {}: request {id}",
            schedule.id,
            schedule::slot_text(slot)
        );
        self.commit_paths(&[write], &message, signer).map(Some)
    }

    /// The schedules file of `commit` (empty when it has none).
    pub fn schedules_at(&self, commit: ObjectId) -> Result<Schedules, Error> {
        Ok(match self.read(commit, schedule::SCHEDULES_PATH)? {
            Some(bytes) => Schedules::parse(schedule::SCHEDULES_PATH, &String::from_utf8_lossy(&bytes)),
            None => Schedules::default(),
        })
    }

    /// A commit's committer time.
    pub fn commit_time(&self, commit: ObjectId) -> Result<i64, Error> {
        let c = self.repo.find_commit(commit).map_err(super::git)?;
        Ok(c.time().map(|t| t.seconds).unwrap_or(0))
    }
}

/// Why a request added by `commit` in `run` is not one the runner may have written, if it
/// carries a `trigger`. `signed` says whether the commit is a trusted runner commit. A
/// runner-written request stands only where the commit before it held the schedule (same id,
/// pack, inputs, enabled), the slot is one of its slots and was due by the commit's time (with
/// `CLOCK_SKEW_SECS`), and the run id, run token and trigger are the slot's.
pub(super) fn check(
    ledger: &Ledger,
    commit: ObjectId,
    parent: Option<ObjectId>,
    run: &RunDir,
    text: &[u8],
    signed: &mut dyn FnMut() -> Result<(), String>,
) -> Result<Option<String>, Error> {
    // Most requests are people's: only one that names a trigger, or could spell it with a
    // YAML escape, is parsed.
    if !text.windows(7).any(|w| w == b"trigger") && !text.contains(&b'\\') {
        return Ok(None);
    }
    let Ok(request) = Request::parse(&run.file("request.yaml"), &String::from_utf8_lossy(text)) else {
        return Ok(None);
    };
    let Some(trigger) = &request.trigger else {
        return Ok(None);
    };
    let forged = |why: String| {
        Ok(Some(format!(
            "request with trigger schedule `{}`: {why}",
            trigger.schedule
        )))
    };
    if let Err(why) = signed() {
        return forged(format!("not written by a trusted runner ({why})"));
    }
    let Some(parent) = parent else {
        return forged("no commit before it holds .stella/schedules.yaml".into());
    };
    let schedules = ledger.schedules_at(parent)?;
    let Some(s) = schedules.get(&trigger.schedule) else {
        return forged("the schedule is not in .stella/schedules.yaml of the commit before it".into());
    };
    if !s.enabled {
        return forged("the schedule is disabled in the commit before it".into());
    }
    let inputs = request.inputs.as_ref().map_or(serde_json::json!({}), |n| n.to_json());
    if request.pack != s.pack || inputs != s.inputs {
        return forged("its pack or inputs differ from the schedule's".into());
    }
    let Ok(slot) = trigger.slot.parse::<Timestamp>() else {
        return forged(format!("`{}` is no time", trigger.slot));
    };
    if !s.cron.is_slot(&s.tz, slot) || schedule::slot_text(slot) != trigger.slot {
        return forged(format!(
            "`{}` is not a slot of `{}` in {}",
            trigger.slot, s.cron_text, s.timezone
        ));
    }
    let time = ledger.commit_time(commit)?;
    if slot.as_second() > time + schedule::CLOCK_SKEW_SECS {
        return forged(format!(
            "slot {} was not due when the request was committed",
            trigger.slot
        ));
    }
    if run.id != s.run_id(slot) || request.run_token.as_deref() != Some(s.run_token(slot).as_str()) {
        return forged(format!(
            "its run id or run token is not the slot's ({} with runToken {})",
            s.run_id(slot),
            s.run_token(slot)
        ));
    }
    Ok(None)
}
