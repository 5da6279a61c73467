//! What `stella pack plan` reports about a plan: its hash, the approvals, secrets and policy
//! gates it needs, how many steps it has. Only reads a built plan.

use serde::Serialize;

use super::{Plan, PlanApproval, PlanSecret, StepKind, Text};

/// What `stella pack plan` reports: the hash and what the plan needs before it can run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub plan_hash: String,
    pub approvals: Vec<PlanApproval>,
    pub secrets: Vec<PlanSecret>,
    /// Policy gates, in plan order (absent when there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicySummary>,
    pub steps: usize,
    pub plan: Plan,
}

impl Summary {
    pub fn of(plan: Plan) -> Summary {
        Summary {
            plan_hash: plan.hash(),
            approvals: plan.approvals.clone(),
            secrets: plan.secrets.clone(),
            policies: policies(&plan),
            steps: plan.all_steps().len(),
            plan,
        }
    }
}

/// One policy gate: a Rego file (with its sha256 and query) or an expression.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySummary {
    pub step: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
    pub fail_action: String,
}

fn policies(plan: &Plan) -> Vec<PolicySummary> {
    plan.all_steps()
        .into_iter()
        .filter_map(|s| match &s.kind {
            StepKind::Policy(p) => Some(PolicySummary {
                step: s.id.clone(),
                file: p.rego.as_ref().map(|r| r.file.clone()),
                sha256: p.rego.as_ref().map(|r| r.sha256.clone()),
                query: p.rego.as_ref().map(|r| r.query.clone()),
                expr: p.expr.as_ref().map(|e| match e {
                    Text::Resolved(v) => v.clone(),
                    Text::Template { template, .. } => template.clone(),
                }),
                fail_action: p.fail_action.clone(),
            }),
            _ => None,
        })
        .collect()
}
