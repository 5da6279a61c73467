//! Resuming an earlier run (`resumeOf`, DESIGN section 12): a run step that succeeded there is
//! recorded as `step.reused`, with that run's id, outputs and artifacts, instead of running
//! again. The caller stages the earlier run's artifacts (read from its ledger); each is checked
//! against the sha256 that run recorded before it joins this run's artifacts. Gates, policies
//! and groups are never reused (a group runs again, reusing its children one by one). Never
//! runs a step and never reads git.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use serde_json::{Value as Json, json};

use crate::code::Code;
use crate::event::Event;
use crate::pack::sha256_hex;
use crate::plan::{PlanStep, StepKind};
use crate::state::{StepState, StepStatus};

use super::artifacts::StepError;
use super::{Res, Runner};

/// What a resumed run may reuse of the run it resumes.
#[derive(Debug, Clone)]
pub struct Reuse {
    /// The run resumed.
    pub from: String,
    /// Its steps as its events fold, by id; only run steps that succeeded are reused.
    pub steps: BTreeMap<String, StepState>,
    /// Where the caller staged that run's artifacts, under their paths in its run directory
    /// (`artifacts/<step>/<name>`).
    pub staged: PathBuf,
}

impl Reuse {
    /// The step of the earlier run that `s` reuses, if any: a run step that succeeded there.
    pub fn step(&self, s: &PlanStep) -> Option<&StepState> {
        if !matches!(s.kind, StepKind::Run(_)) {
            return None;
        }
        self.steps.get(&s.id).filter(|p| p.status == StepStatus::Succeeded)
    }
}

impl Runner<'_> {
    /// Reuses `s` from the run resumed when it succeeded there: its artifacts carried over, its
    /// outputs as later steps see them, one `step.reused` event. `None`: `s` runs as usual.
    pub(super) fn reuse(&self, s: &PlanStep) -> Option<Res> {
        let reuse = self.cfg.reuse.as_deref()?;
        let prev = reuse.step(s)?;
        if let Err(e) = self.carry(reuse, prev) {
            return Some(self.fail(s, e, 0));
        }
        let outputs = self.emitter.redactor().redact_json(&Json::Object(prev.outputs.clone()));
        self.emit(
            Event::new("step.reused")
                .step(&s.id)
                .msg(format!("reused: succeeded in run {}", reuse.from))
                .data(json!({
                    "from": reuse.from, "attempts": prev.attempts, "outputs": outputs,
                    "artifacts": prev.artifacts,
                })),
        );
        if let Json::Object(o) = outputs {
            self.outputs
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(s.id.clone(), o);
        }
        Some(Res::Ok)
    }

    /// Copies the staged artifacts of `prev` into this run's directory, each checked against
    /// the size and sha256 the earlier run recorded.
    fn carry(&self, reuse: &Reuse, prev: &StepState) -> Result<(), StepError> {
        for a in &prev.artifacts {
            let inside =
                a.path.starts_with("artifacts/") && crate::pack::normalise(&a.path).as_deref() == Some(a.path.as_str());
            if !inside {
                return Err(StepError::new(
                    Code::ArtifactPath,
                    format!("run {}: artifact path `{}` is not under artifacts/", reuse.from, a.path),
                ));
            }
            let tampered = |why: String| {
                StepError::new(
                    Code::LedgerTampered,
                    format!("cannot reuse {} of run {}: {why}", a.path, reuse.from),
                )
            };
            let mut bytes = Vec::new();
            std::fs::File::open(reuse.staged.join(&a.path))
                .and_then(|f| f.take(a.size.saturating_add(1)).read_to_end(&mut bytes))
                .map_err(|e| tampered(format!("not in its ledger ({e})")))?;
            if bytes.len() as u64 != a.size || sha256_hex(&bytes) != a.sha256 {
                return Err(tampered("its bytes differ from the sha256 the run recorded".into()));
            }
            let dest = self.cfg.run_dir.join(&a.path);
            let io = |e: std::io::Error| StepError::new(Code::StepFailed, format!("cannot carry {} over: {e}", a.path));
            std::fs::create_dir_all(dest.parent().expect("under artifacts/")).map_err(io)?;
            std::fs::write(&dest, &bytes).map_err(io)?;
        }
        Ok(())
    }
}
