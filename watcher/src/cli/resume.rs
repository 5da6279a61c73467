//! `stella runs retry|resume RUN [--id ID]`: a new request for RUN's pack and inputs (read from
//! the ledger, planned from this working tree, plan pinned) with `retryOf` or `resumeOf`. A
//! resume is refused here when the ledger says RUN succeeded or has not finished, or when the
//! plan changed; the runner checks all of it again. Writes the request file only.

use std::path::Path;

use stella_engine::Code;
use stella_engine::request::Request;
use stella_engine::state::{RunStatus, fold};

use super::request::{new_request_path, written};
use crate::failure::{Failure, Outcome};
use crate::repo;

/// Which kind of request to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Of {
    Retry,
    Resume,
}

pub fn request(repo_dir: &Path, run: &str, id: Option<&str>, of: Of) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let view = super::runs::one(&root, run)?;
    if let Some(why) = &view.invalid {
        return Err(Failure::one(why.code, format!("run {run} is invalid: {why}")));
    }
    // What the ledger holds, never this machine's journal: the runner decides on the ledger.
    let st = fold(&view.ledger_events);
    if of == Of::Resume {
        refuse_resume(run, &view.ledger_events, st.state)?;
    }
    let config = repo::config_at_head(&root)?;
    let ledger = repo::open_ledger(&root, &config)?;
    let tip = ledger
        .tip()?
        .ok_or_else(|| Failure::one(Code::RunNotFound, format!("no run {run}: the branch has no commits")))?;
    let request_path = view.dir.file("request.yaml");
    let text = ledger.read(tip, &request_path)?.ok_or_else(|| {
        Failure::one(
            Code::RunNotFound,
            format!("run {run} has no {request_path} on the branch"),
        )
    })?;
    let original = Request::parse(&request_path, &String::from_utf8_lossy(&text))?;
    let pack_dir = root.join(&original.pack);
    let plan_config = repo::config_in_worktree(&root)?.plan_config();
    let plan = stella_engine::plan::from_dir(
        &pack_dir,
        &original.pack,
        original.inputs.as_ref(),
        &request_path,
        &plan_config,
    )?;
    let field = match of {
        Of::Retry => "retryOf",
        Of::Resume => "resumeOf",
    };
    if of == Of::Resume && st.plan_hash.as_deref() != Some(plan.hash().as_str()) {
        return Err(Failure::one(
            Code::PackHashMismatch,
            format!(
                "run {run} was planned as {}, but {} with its inputs plans to {} now; a resume needs the same plan (`stella runs retry {run}` runs the new one from the start)",
                st.plan_hash.as_deref().unwrap_or("nothing"),
                original.pack,
                plan.hash()
            ),
        ));
    }
    let (id, request_rel, path) = new_request_path(&root, id, &plan.pack.name)?;
    let inputs = original.inputs.as_ref().map_or(serde_json::json!({}), |n| n.to_json());
    let text = Request::render_of(&original.pack, &inputs, &plan.hash(), Some((field, run)));
    written(&path, &text, &id, &request_rel, &plan)
}

/// Only a failed or cancelled run is resumed.
fn refuse_resume(run: &str, events: &[stella_engine::event::Event], state: RunStatus) -> Result<(), Failure> {
    let why = match state {
        RunStatus::Failed | RunStatus::Cancelled => return Ok(()),
        RunStatus::Succeeded => format!(
            "run {run} succeeded; only a failed or cancelled run can be resumed (`stella runs retry {run}` runs it again)"
        ),
        _ if events.is_empty() => format!("run {run} has not started; only a failed or cancelled run can be resumed"),
        other => format!(
            "run {run} is still {}; only a failed or cancelled run can be resumed: wait for it to end, or cancel it (`stella runs cancel {run}`) and resume it then",
            other.as_str()
        ),
    };
    Err(Failure::one(Code::RunNotResumable, why))
}
