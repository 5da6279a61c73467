//! What `stella pack plan` reports about a plan: its hash, the approvals and secrets it needs,
//! how many steps it has. Only reads a built plan.

use serde::Serialize;

use super::{Plan, PlanApproval, PlanSecret};

/// What `stella pack plan` reports: the hash and what the plan needs before it can run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub plan_hash: String,
    pub approvals: Vec<PlanApproval>,
    pub secrets: Vec<PlanSecret>,
    pub steps: usize,
    pub plan: Plan,
}

impl Summary {
    pub fn of(plan: Plan) -> Summary {
        Summary {
            plan_hash: plan.hash(),
            approvals: plan.approvals.clone(),
            secrets: plan.secrets.clone(),
            steps: plan.all_steps().len(),
            plan,
        }
    }
}
