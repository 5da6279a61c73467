//! Planning a run from the repository: a new request planned from the objects of the commit
//! that holds it (never the working tree), under the policy of its trust commit, held to its
//! pin, its run token and the plan noted on its pull request; an interrupted run re-planned
//! from the commit it was planned at. Decides refusals; never writes the journal or the ledger.

use gix::ObjectId;
use serde_json::json;

use super::Environment;
use super::trust::trust_and_arrival;
use crate::code::Code;
use crate::diag::Diagnostics;
use crate::event::Event;
use crate::layout::RunDir;
use crate::pack::{PackFiles, sha256_hex};
use crate::plan::Plan;
use crate::request::Request;

/// A failure decided before execution, recorded as `run.failed`.
pub struct Refusal {
    pub code: Code,
    pub message: String,
    pub problems: Option<Diagnostics>,
}

impl From<Diagnostics> for Refusal {
    fn from(d: Diagnostics) -> Self {
        let message = d.iter().next().map(ToString::to_string).unwrap_or_default();
        Refusal {
            code: d.code(),
            message,
            problems: Some(d),
        }
    }
}

pub(super) fn refuse(code: Code, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        problems: None,
    }
}

/// A new request planned: the plan, the pack files it was made from, and the `run.planned`
/// event to record.
pub struct Planned {
    pub plan: Plan,
    pub files: PackFiles,
    pub event: Event,
}

/// Plans a new request from the objects of `commit`.
pub fn plan_new(env: &Environment, dir: &RunDir, commit: ObjectId) -> Result<Planned, Refusal> {
    let id = dir.id.as_str();
    let request_path = dir.file("request.yaml");
    let text = env
        .read_text(commit, &request_path)
        .ok_or_else(|| refuse(Code::RequestInvalid, format!("{request_path} is missing")))?;
    let request = Request::parse(&request_path, &text)?;
    if let Some(token) = &request.run_token
        && let Some(first) = first_with_token(env, commit, token, id)
    {
        return Err(refuse(
            Code::RunDuplicate,
            format!("duplicate of run {first} (same runToken); not executed"),
        ));
    }
    // Repository policy (sealed, network.allow) is trusted only from before the request.
    let (trust, arrived) = trust_and_arrival(env, commit, &request_path);
    let config = &env.config_at(trust);
    if let Some(t) = &request.trigger {
        // Judged as `ledger verify` does: by the schedules of the tip the runner built on.
        let parent = super::trust::before_request(env, commit, &request_path);
        scheduled(env, parent, id, &request, t)?;
    }
    // Who asked: required to be a trusted signer with `requests: { signed: true }`.
    let requested_by = match super::requester::requested_by(env, &request_path, trust, arrived) {
        Ok(principal) => Some(principal),
        Err(why) if config.requests_signed => {
            return Err(refuse(
                Code::RequestUnsigned,
                format!(
                    "{why}; .stella/config.yaml says requests: {{ signed: true }}: commit the request signed (git commit -S, gpg.format=ssh) with a key .stella/allowed_signers trusts for namespace git"
                ),
            ));
        }
        Err(_) => None,
    };
    let files = pack_at(env, commit, &request.pack)?;
    imported_pack_holds(env, trust, &files)?;
    let plan = crate::plan::from_files(&files, request.inputs.as_ref(), &request_path, &config.plan_config())?;
    let hash = plan.hash();
    if let Some(pinned) = &request.plan_hash
        && *pinned != hash
    {
        return Err(refuse(
            Code::PackHashMismatch,
            format!("the request pins {pinned}, but the pack and inputs at this commit plan to {hash}"),
        ));
    }
    // A request reviewed on a pull request must run the plan its note showed.
    let noted = crate::ledger::notes::noted_plan_hash(&env.ledger(), commit, dir);
    if let Some((at, noted)) = noted
        && noted != hash
    {
        return Err(refuse(
            Code::PackHashMismatch,
            format!(
                "after the merge the request plans to {hash}, but the plan noted on pull request commit {} was {noted}",
                &at.to_string()[..12]
            ),
        ));
    }
    // A retry or a resume names a run of the branch; a resume reuses only what it can prove.
    let origin = super::resume::origin(env, commit, &request, &hash).map_err(|(code, m)| refuse(code, m))?;
    let mut data = json!({
        "planHash": hash, "pack": request.pack, "version": plan.pack.version, "requestCommit": commit.to_string(),
        "requestSha256": sha256_hex(text.as_bytes()), "trustCommit": trust.to_string(),
    });
    if let Some(t) = &request.run_token {
        data["runToken"] = json!(t);
    }
    if let Some(principal) = requested_by {
        data["requestedBy"] = json!(principal);
    }
    if let Some((field, of)) = origin {
        data[field] = of;
    }
    if let Some(t) = &request.trigger {
        data["trigger"] = json!({ "schedule": t.schedule, "slot": t.slot });
    }
    let event = Event::new("run.planned")
        .msg(format!("planned {} {}", plan.pack.name, plan.pack.version))
        .data(data);
    Ok(Planned { plan, files, event })
}

/// A request with a `trigger` runs only as its schedule in the commit before it would have
/// written it: the same pack and inputs, a slot of the schedule that is due, the slot's run id and token.
fn scheduled(
    env: &Environment,
    before: ObjectId,
    id: &str,
    request: &Request,
    t: &crate::request::Trigger,
) -> Result<(), Refusal> {
    let schedules = env
        .ledger()
        .schedules_at(before)
        .map_err(|e| refuse(Code::Io, e.to_string()))?;
    let slot = t.slot.parse::<jiff::Timestamp>().ok();
    let inputs = request.inputs.as_ref().map_or(json!({}), |n| n.to_json());
    let fits = schedules.get(&t.schedule).zip(slot).is_some_and(|(s, slot)| {
        s.enabled
            && s.pack == request.pack
            && s.inputs == inputs
            && s.cron.is_slot(&s.tz, slot)
            && slot.as_second() <= jiff::Timestamp::now().as_second() + crate::schedule::CLOCK_SKEW_SECS
            && s.run_id(slot) == id
            && request.run_token.as_deref() == Some(s.run_token(slot).as_str())
    });
    if fits {
        return Ok(());
    }
    Err(refuse(
        Code::RequestInvalid,
        format!(
            "the request says schedule `{}` wrote it for slot {}, but no schedule in .stella/schedules.yaml before it has that slot due with this pack, inputs, id and runToken; a request with `trigger` is the runner's to write",
            t.schedule, t.slot
        ),
    ))
}

/// Re-plans an interrupted run from the commit it was planned at, and checks it is the same plan.
pub fn replan(env: &Environment, dir: &RunDir, prior: &[Event]) -> Result<(Plan, PackFiles), Refusal> {
    let planned = prior
        .iter()
        .find(|e| e.kind == "run.planned")
        .ok_or_else(|| refuse(Code::RequestInvalid, "the journal has no run.planned event"))?;
    let field = |k: &str| {
        planned
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_default()
    };
    let commit = ObjectId::from_hex(field("requestCommit").as_bytes())
        .map_err(|e| refuse(Code::LedgerTampered, format!("bad requestCommit: {e}")))?;
    let trust = ObjectId::from_hex(field("trustCommit").as_bytes()).unwrap_or(commit);
    let config = env.config_at(trust);
    let request_path = dir.file("request.yaml");
    let text = env
        .read_text(commit, &request_path)
        .ok_or_else(|| refuse(Code::RequestInvalid, format!("{request_path} is missing")))?;
    // Requests are immutable: the request at the tip must still be the one that was planned.
    let tip_text = env.tip().ok().and_then(|t| env.read_text(t, &request_path));
    if tip_text
        .as_deref()
        .is_some_and(|t| sha256_hex(t.as_bytes()) != field("requestSha256"))
    {
        return Err(refuse(
            Code::PackHashMismatch,
            format!("{request_path} changed after the run was planned; requests are immutable"),
        ));
    }
    let request = Request::parse(&request_path, &text)?;
    let files = pack_at(env, commit, &request.pack)?;
    imported_pack_holds(env, trust, &files)?;
    let plan = crate::plan::from_files(&files, request.inputs.as_ref(), &request_path, &config.plan_config())?;
    if plan.hash() != field("planHash") {
        return Err(refuse(
            Code::PackHashMismatch,
            format!("re-planning gives {} instead of {}", plan.hash(), field("planHash")),
        ));
    }
    Ok((plan, files))
}

fn pack_at(env: &Environment, commit: ObjectId, pack: &str) -> Result<PackFiles, Refusal> {
    let files = env
        .ledger()
        .files_under(commit, pack)
        .map_err(|e| refuse(Code::PackInvalid, e.to_string()))?;
    if files.is_empty() {
        return Err(refuse(Code::PackInvalid, format!("{pack}: no pack at commit {commit}")));
    }
    PackFiles::from_entries(pack, files).map_err(|d| Refusal::from(Diagnostics::from(d)))
}

/// An imported pack (one with `.provenance.json`) is still the one its publisher signed, and
/// the trust commit's allowed_signers still trust that publisher for `stella-pack`.
fn imported_pack_holds(env: &Environment, trust: ObjectId, files: &PackFiles) -> Result<(), Refusal> {
    if !files.contains(crate::plan::PROVENANCE_FILE) {
        return Ok(());
    }
    let signers = env
        .read_text(trust, ".stella/allowed_signers")
        .map(|t| crate::allowed_signers::AllowedSigners::parse(".stella/allowed_signers", &t))
        .transpose()
        .map_err(|d| refuse(Code::PackProvenance, format!("cannot judge the pack's publisher: {d}")))?;
    crate::bundle::check_installed(files, signers.as_ref(), std::time::SystemTime::now())
        .map(drop)
        .map_err(|e| refuse(e.code(), e.to_string()))
}

/// The run that owns `token`, if it is not `id`: a run already planned in the ledger at
/// `commit` owns it; among unplanned ones the smallest id does. Deterministic, so two runners
/// (or two workers of one) reach the same verdict.
fn first_with_token(env: &Environment, commit: ObjectId, token: &str, id: &str) -> Option<String> {
    let ledger = env.ledger();
    let mut holders = Vec::new();
    for other in env.tokens.candidates(&ledger, commit, token)? {
        // A candidate is only a hint: the run at this commit (flat wins, a run in the wrong
        // shard is none) and its request there are what count.
        let is_run = ledger.locate(commit, &other.id).ok().flatten().as_ref() == Some(&other);
        if is_run && super::tokens::token_of(&ledger, commit, &other).as_deref() == Some(token) {
            let planned = ledger.has_run_events(commit, &other).unwrap_or(false);
            holders.push((!planned, other.id));
        }
    }
    holders.sort();
    holders
        .into_iter()
        .next()
        .map(|(_, owner)| owner)
        .filter(|owner| owner != id)
}
