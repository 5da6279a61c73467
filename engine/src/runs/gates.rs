//! Approval gates in a repository: the approval files committed on the branch, judged by the
//! allowed_signers and approvers.yaml of the commit *before* the one that brought the request
//! (so a pull request cannot add its own approver and approve itself).

use std::time::SystemTime;

use gix::ObjectId;
use serde_json::json;

use crate::allowed_signers::AllowedSigners;
use crate::approvals::{
    self, APPROVERS_PATH, ApprovalFile, Approvers, GateInput, MAX_APPROVAL_BYTES, MAX_SIGNATURE_BYTES,
    MAX_TRUST_FILE_BYTES, Outcome,
};
use crate::code::Code;
use crate::event::Event;
use crate::exec::{GateDecision, GateVerdict, Gatekeeper};
use crate::ledger::Within;
use crate::plan::{Plan, PlanApprovalGate, PlanStep};

use super::Environment;
use crate::layout::RunDir;

pub struct RepoGates<'a> {
    pub env: &'a Environment,
    pub run: &'a RunDir,
    pub plan: &'a Plan,
    pub plan_hash: String,
    /// Whose trust files judge the approvals.
    pub trust_commit: ObjectId,
    /// The run's `requestedBy` (from `run.planned`): their approvals do not count unless the
    /// rule allows self-approval.
    pub requested_by: Option<String>,
}

impl RepoGates<'_> {
    fn trust(&self) -> Result<(AllowedSigners, Approvers), (Code, String)> {
        self.trust_at(self.trust_commit)
    }

    /// The trust files of `commit`.
    fn trust_at(&self, commit: ObjectId) -> Result<(AllowedSigners, Approvers), (Code, String)> {
        let ledger = self.env.ledger();
        // Read within a limit, checked against the object's size before it is inflated.
        let read = |path: &str, code: Code| match ledger.read_within(commit, path, MAX_TRUST_FILE_BYTES) {
            Ok(Some(Within::Read(b))) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Ok(Some(Within::TooLarge(size))) => Err((
                code,
                format!("{path} at commit {commit} is {size} bytes; at most {MAX_TRUST_FILE_BYTES} are read"),
            )),
            Ok(None) | Err(_) => Ok(String::new()),
        };
        let signers_text = read(".stella/allowed_signers", Code::SignersInvalid)?;
        let signers = AllowedSigners::parse(".stella/allowed_signers", &signers_text).map_err(|d| {
            (
                Code::SignersInvalid,
                format!("the allowed_signers that judge this run do not parse: {d}"),
            )
        })?;
        let approvers_text = read(APPROVERS_PATH, Code::ApproversInvalid)?;
        let approvers = Approvers::parse(APPROVERS_PATH, &approvers_text).map_err(|d| {
            (
                Code::ApproversInvalid,
                format!("the approvers.yaml that judges this run does not parse: {d}"),
            )
        })?;
        Ok((signers, approvers))
    }

    /// The approval files for `gate` on the branch tip now.
    fn files(&self, gate: &str) -> Vec<ApprovalFile> {
        let mut ledger = self.env.ledger();
        ledger.refresh();
        let Ok(Some(tip)) = ledger.tip() else { return Vec::new() };
        let dir = format!("{}/{gate}", self.run.approvals());
        let mut out = Vec::new();
        for (name, is_dir) in ledger.list(tip, &dir).unwrap_or_default() {
            let Some(principal) = name.strip_suffix(".yaml") else {
                continue;
            };
            if is_dir || principal.is_empty() {
                continue;
            }
            let path = format!("{dir}/{name}");
            // Each file read within its limit: a larger one is judged by its size, unread.
            let mut file = ApprovalFile::new(principal, &path, Vec::new(), None);
            match ledger.read_within(tip, &path, MAX_APPROVAL_BYTES) {
                Ok(Some(Within::Read(yaml))) => file.yaml = yaml,
                Ok(Some(Within::TooLarge(size))) => file.yaml_too_large = Some(size),
                Ok(None) | Err(_) => continue,
            }
            match ledger.read_within(tip, &format!("{path}.sig"), MAX_SIGNATURE_BYTES) {
                Ok(Some(Within::Read(sig))) => file.sig = Some(sig),
                Ok(Some(Within::TooLarge(size))) => file.sig_too_large = Some(size),
                Ok(None) | Err(_) => {}
            }
            out.push(file);
        }
        out
    }
}

impl RepoGates<'_> {
    /// An approval that does not count under the trust files in force before the request, but
    /// would under the branch tip's, says so: its signer or grant arrived too late (with the
    /// request, or before the runner saw the branch again), which the bare reason does not tell.
    fn explain_late_trust(&self, input: &GateInput, verdicts: &mut [approvals::Verdict]) {
        let late_codes = [
            Code::ApprovalSignatureInvalid.as_str(),
            Code::ApprovalUnauthorized.as_str(),
        ];
        if !verdicts
            .iter()
            .any(|v| v.code.as_deref().is_some_and(|c| late_codes.contains(&c)))
        {
            return;
        }
        let tip = {
            let ledger = self.env.ledger();
            ledger.tip().ok().flatten()
        };
        let Some(tip) = tip.filter(|t| *t != self.trust_commit) else {
            return;
        };
        let Ok((signers, approvers)) = self.trust_at(tip) else {
            return;
        };
        let (_, at_tip) = approvals::evaluate(&GateInput {
            signers: &signers,
            approvers: &approvers,
            ..*input
        });
        for v in verdicts.iter_mut() {
            let late = v.code.as_deref().is_some_and(|c| late_codes.contains(&c))
                && at_tip
                    .iter()
                    .any(|t| t.path == v.path && (t.verdict == "counted" || t.verdict == "rejected"));
            if late && let Some(reason) = &mut v.reason {
                reason.push_str(&format!(
                    " — {} is trusted at the branch tip, but this run's approvals are judged by the trust files of commit {} (the branch before the request arrived, as this runner saw it); a signer or grant must reach the branch, and the runner, before the request does: request the run again for it to count",
                    v.principal,
                    &self.trust_commit.to_string()[..12]
                ));
            }
        }
    }
}

impl Gatekeeper for RepoGates<'_> {
    fn decide(&self, _step: &PlanStep, gate: &PlanApprovalGate, waiting_since: Option<&str>) -> GateVerdict {
        let Some(rule) = self.plan.approvals.iter().find(|a| a.id == gate.id) else {
            return GateDecision::Failed {
                code: Code::PackInvalid,
                message: format!("no approval rule `{}`", gate.id),
            }
            .into();
        };
        let (signers, approvers) = match self.trust() {
            Ok(t) => t,
            Err((code, message)) => return GateDecision::Failed { code, message }.into(),
        };
        let files = self.files(&gate.id);
        let input = GateInput {
            run: &self.run.id,
            gate: &gate.id,
            plan_hash: &self.plan_hash,
            rule,
            signers: &signers,
            approvers: &approvers,
            files: &files,
            requested_by: self.requested_by.as_deref(),
            waiting_since: waiting_since.and_then(|t| humantime::parse_rfc3339(t).ok()),
            now: SystemTime::now(),
        };
        let (outcome, mut verdicts) = approvals::evaluate(&input);
        self.explain_late_trust(&input, &mut verdicts);
        let notes = verdicts
            .iter()
            .map(|v| {
                let msg = match (&v.verdict[..], &v.reason) {
                    ("counted", _) => format!("approval by {} counted", v.principal),
                    ("rejected", _) => format!("rejected by {}", v.principal),
                    (_, Some(r)) => format!("approval {} does not count: {r}", v.path),
                    _ => format!("approval {} does not count", v.path),
                };
                let level = if v.verdict == "ignored" { "warn" } else { "info" };
                let mut data = serde_json::to_value(v).expect("JSON");
                data["gate"] = json!(gate.id);
                Event::new("approval.verdict").level(level).msg(msg).data(data)
            })
            .collect();
        let decision = match outcome {
            Outcome::Approved { by } => GateDecision::Approved {
                data: json!({
                    "gate": gate.id,
                    "approvals": by.iter().map(|v| json!({ "principal": v.principal, "signatureSha256": v.signature_sha256, "path": v.path })).collect::<Vec<_>>(),
                }),
            },
            Outcome::Waiting { .. } => GateDecision::Waiting,
            Outcome::Rejected { by, comment } => GateDecision::Failed {
                code: Code::PackApprovalRejected,
                message: format!(
                    "gate `{}` rejected by {by}{}",
                    gate.id,
                    comment.map_or(String::new(), |c| format!(": {c}"))
                ),
            },
            Outcome::Expired => {
                let counted = verdicts.iter().filter(|v| v.verdict == "counted").count();
                GateDecision::Failed {
                    code: Code::PackApprovalTimeout,
                    message: format!(
                        "gate `{}` expired with {counted} of {} approvals",
                        gate.id, rule.required_count
                    ),
                }
            }
        };
        GateVerdict { decision, notes }
    }
}
