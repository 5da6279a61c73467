//! Retry and resume in a repository (`retryOf`, `resumeOf`; DESIGN section 12), decided from
//! the ledger alone: the run named must be on the branch; a run resumed must have failed or
//! been cancelled, have run files a trusted runner wrote (`ledger verify`), evidence, and the
//! plan hash of the new request. Its artifacts are staged for the executor's `Reuse`. Never
//! trusts a local cache (runs index, journal) for the run resumed, and never writes the ledger.

use std::path::Path;
use std::sync::Arc;

use gix::ObjectId;
use serde_json::{Value as Json, json};

use super::Environment;
use crate::code::Code;
use crate::event::Event;
use crate::exec::Reuse;
use crate::layout::RunDir;
use crate::ledger::Ledger;
use crate::pack::sha256_hex;
use crate::request::Request;
use crate::state::{RunStatus, StepStatus, fold};

/// Why a retry or resume is refused: the code and message its `run.failed` records.
pub type Refused = (Code, String);

fn refuse(code: Code, message: impl Into<String>) -> Refused {
    (code, message.into())
}

/// What `run.planned` records of the run retried or resumed: `{"retryOf": {runId}}` or
/// `{"resumeOf": {runId, attestation: {path, sha256}}}`. Refuses a run that is not on the
/// branch at `tip`, and a resume the run cannot give.
pub fn origin(
    env: &Environment,
    tip: ObjectId,
    request: &Request,
    plan_hash: &str,
) -> Result<Option<(&'static str, Json)>, Refused> {
    let (field, run) = match (&request.retry_of, &request.resume_of) {
        (Some(r), _) => ("retryOf", r),
        (None, Some(r)) => ("resumeOf", r),
        (None, None) => return Ok(None),
    };
    let ledger = env.ledger();
    let dir = located(&ledger, tip, run, field)?;
    if field == "retryOf" {
        return Ok(Some((field, json!({ "runId": run }))));
    }
    let view = super::view(&ledger, tip, &dir);
    if let Some(why) = view.invalid {
        return Err(refuse(why.code, format!("cannot resume run {run}: {why}")));
    }
    // The ledger's events only: a journal of this machine is no proof of what the run did.
    let st = fold(&view.ledger_events);
    match st.state {
        RunStatus::Failed | RunStatus::Cancelled => {}
        RunStatus::Succeeded => {
            return Err(refuse(
                Code::RunNotResumable,
                format!(
                    "run {run} succeeded; only a failed or cancelled run can be resumed (`retryOf: {run}` asks for a new run)"
                ),
            ));
        }
        other => {
            return Err(refuse(
                Code::RunNotResumable,
                format!(
                    "run {run} is {} (not finished in the ledger); only a failed or cancelled run can be resumed: wait for it to end or cancel it",
                    if view.ledger_events.is_empty() {
                        "not started"
                    } else {
                        other.as_str()
                    }
                ),
            ));
        }
    }
    if st.plan_hash.as_deref() != Some(plan_hash) {
        return Err(refuse(
            Code::PackHashMismatch,
            format!(
                "run {run} was planned as {}, but this request plans to {plan_hash}; a resume needs the same pack and inputs (`retryOf: {run}` runs the new plan from the start)",
                st.plan_hash.as_deref().unwrap_or("nothing")
            ),
        ));
    }
    let report = crate::ledger::checkpoint::verify_quickly(&ledger, tip)
        .map_err(|e| refuse(e.code(), format!("cannot verify the ledger of run {run}: {e}")))?;
    let prefix = format!("{}/", dir.dir());
    if let Some(p) = report.problems.iter().find(|p| p.path.starts_with(&prefix)) {
        return Err(refuse(
            Code::LedgerTampered,
            format!(
                "refusing to resume run {run}: its ledger does not verify (commit {}: {}: {})",
                p.commit, p.path, p.message
            ),
        ));
    }
    let path = dir.file(crate::evidence::ATTESTATION);
    let attestation = ledger
        .read(tip, &path)
        .map_err(|e| refuse(e.code(), format!("{path}: {e}")))?
        .ok_or_else(|| {
            refuse(
                Code::RunNotResumable,
                format!("run {run} has no evidence ({path}); it cannot be resumed"),
            )
        })?;
    Ok(Some((
        field,
        json!({ "runId": run, "attestation": { "path": path, "sha256": sha256_hex(&attestation) } }),
    )))
}

/// Where `run` is at `tip` (a request or events of its own), or the refusal `ERR_RUN_NOT_FOUND`.
fn located(ledger: &Ledger, tip: ObjectId, run: &str, field: &str) -> Result<RunDir, Refused> {
    ledger
        .locate(tip, run)
        .map_err(|e| refuse(e.code(), format!("{field}: {e}")))?
        .ok_or_else(|| refuse(Code::RunNotFound, format!("{field}: no run {run} on the branch")))
}

/// The run a planned run resumes (`resumeOf` in its `run.planned`), read again from the ledger
/// at `tip`, with the artifacts of its succeeded steps staged under `run_dir/resumed/`.
/// `None` for a run that resumes nothing.
pub fn stage(
    env: &Environment,
    tip: ObjectId,
    planned: Option<&Event>,
    run_dir: &Path,
) -> Result<Option<Arc<Reuse>>, Refused> {
    let Some(run) = planned
        .and_then(|e| e.get("resumeOf"))
        .and_then(|o| o.get("runId"))
        .and_then(Json::as_str)
    else {
        return Ok(None);
    };
    let ledger = env.ledger();
    let dir = located(&ledger, tip, run, "resumeOf")?;
    let view = super::view(&ledger, tip, &dir);
    if let Some(why) = view.invalid {
        return Err(refuse(why.code, format!("cannot resume run {run}: {why}")));
    }
    let staged = run_dir.join("resumed");
    let steps = fold(&view.ledger_events)
        .steps
        .into_iter()
        .filter(|s| s.status == StepStatus::Succeeded)
        .map(|s| (s.id.clone(), s))
        .collect::<std::collections::BTreeMap<_, _>>();
    let io = |e: std::io::Error| refuse(Code::Io, format!("cannot stage the artifacts of run {run}: {e}"));
    for a in steps.values().flat_map(|s| &s.artifacts) {
        let Some(rel) = crate::pack::normalise(&a.path).filter(|p| *p == a.path && p.starts_with("artifacts/")) else {
            continue; // refused by the executor when the step is reused
        };
        let dest = staged.join(&rel);
        if std::fs::read(&dest).is_ok_and(|b| sha256_hex(&b) == a.sha256) {
            continue;
        }
        let Some(bytes) = ledger.read(tip, &dir.file(&rel)).ok().flatten() else {
            continue; // missing: refused by the executor when the step is reused
        };
        std::fs::create_dir_all(dest.parent().expect("under resumed/")).map_err(io)?;
        std::fs::write(&dest, bytes).map_err(io)?;
    }
    Ok(Some(Arc::new(Reuse {
        from: run.to_string(),
        steps,
        staged,
    })))
}
