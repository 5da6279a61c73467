//! The on-disk shape of a plan step: one JSON object with the common fields, `kind` naming the
//! kind, and one key (`run`, `parallel`, `map`, `approval`, `policy`) holding its body; a run
//! is `uses` and that builtin's fields. Written in the field order `stella pack plan --json`
//! has always shown; read back only when `kind` (or `uses`) and the fields agree. Owns the
//! shape only: never decides what a step means.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::{Cond, PlanApprovalGate, PlanGroup, PlanMap, PlanPolicy, PlanRetries, PlanRun, PlanStep, StepKind, Text};

impl Serialize for PlanStep {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("kind", self.kind.name())?;
        if let Some(name) = &self.name {
            m.serialize_entry("name", name)?;
        }
        if let Some(when) = &self.when {
            m.serialize_entry("when", when)?;
        }
        if let Some(ms) = &self.timeout_ms {
            m.serialize_entry("timeoutMs", ms)?;
        }
        if let Some(retries) = &self.retries {
            m.serialize_entry("retries", retries)?;
        }
        m.serialize_entry("continueOnError", &self.continue_on_error)?;
        if !self.env.is_empty() {
            m.serialize_entry("env", &self.env)?;
        }
        if !self.outputs.is_empty() {
            m.serialize_entry("outputs", &self.outputs)?;
        }
        if !self.network.is_empty() {
            m.serialize_entry("network", &self.network)?;
        }
        match &self.kind {
            StepKind::Run(run) => m.serialize_entry("run", run)?,
            StepKind::Parallel(group) => m.serialize_entry("parallel", group)?,
            StepKind::Map(map) => m.serialize_entry("map", map)?,
            StepKind::Approval(gate) => m.serialize_entry("approval", gate)?,
            StepKind::Policy(policy) => m.serialize_entry("policy", policy)?,
        }
        m.end()
    }
}

/// A step as `plan.json` holds it: every body optional, checked against `kind` on the way in.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct StepWire {
    id: String,
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    when: Option<Cond>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    retries: Option<PlanRetries>,
    continue_on_error: bool,
    #[serde(default)]
    env: BTreeMap<String, Text>,
    #[serde(default)]
    outputs: BTreeMap<String, String>,
    #[serde(default)]
    network: Vec<String>,
    #[serde(default)]
    run: Option<PlanRun>,
    #[serde(default)]
    parallel: Option<PlanGroup>,
    #[serde(default)]
    map: Option<PlanMap>,
    #[serde(default)]
    approval: Option<PlanApprovalGate>,
    #[serde(default)]
    policy: Option<PlanPolicy>,
}

impl TryFrom<StepWire> for PlanStep {
    type Error = String;

    fn try_from(w: StepWire) -> Result<PlanStep, String> {
        let bodies = [
            w.run.is_some(),
            w.parallel.is_some(),
            w.map.is_some(),
            w.approval.is_some(),
            w.policy.is_some(),
        ];
        let one_body = bodies.iter().filter(|b| **b).count() == 1;
        let kind = match w.kind.as_str() {
            "run" => w.run.map(StepKind::Run),
            "parallel" => w.parallel.map(StepKind::Parallel),
            "map" => w.map.map(StepKind::Map),
            "gate.approval" => w.approval.map(StepKind::Approval),
            "gate.policy" => w.policy.map(StepKind::Policy),
            other => return Err(format!("step `{}` has an unknown kind `{other}`", w.id)),
        };
        let kind = kind
            .filter(|_| one_body)
            .ok_or_else(|| format!("step `{}` of kind `{}` must hold its body and no other", w.id, w.kind))?;
        Ok(PlanStep {
            id: w.id,
            name: w.name,
            when: w.when,
            timeout_ms: w.timeout_ms,
            retries: w.retries,
            continue_on_error: w.continue_on_error,
            env: w.env,
            outputs: w.outputs,
            network: w.network,
            kind,
        })
    }
}

impl Serialize for PlanRun {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("uses", self.uses())?;
        match self {
            PlanRun::Shell { script } => m.serialize_entry("script", script)?,
            PlanRun::Exec { argv } => m.serialize_entry("argv", argv)?,
            PlanRun::BundleIngest { path, checksum_sha256 } => {
                m.serialize_entry("path", path)?;
                m.serialize_entry("checksumSha256", checksum_sha256)?;
            }
        }
        m.end()
    }
}

/// A run as `plan.json` holds it: `uses` and every builtin's fields optional, checked on the way in.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RunWire {
    uses: String,
    #[serde(default)]
    script: Option<Text>,
    #[serde(default)]
    argv: Option<Vec<Text>>,
    #[serde(default)]
    path: Option<Text>,
    #[serde(default)]
    checksum_sha256: Option<Text>,
}

impl TryFrom<RunWire> for PlanRun {
    type Error = String;

    fn try_from(w: RunWire) -> Result<PlanRun, String> {
        match (w.uses.as_str(), w.script, w.argv, w.path, w.checksum_sha256) {
            ("builtin:shell", Some(script), None, None, None) => Ok(PlanRun::Shell { script }),
            ("builtin:exec", None, Some(argv), None, None) if !argv.is_empty() => Ok(PlanRun::Exec { argv }),
            ("builtin:bundle.ingest", None, None, Some(path), Some(checksum_sha256)) => {
                Ok(PlanRun::BundleIngest { path, checksum_sha256 })
            }
            (uses, ..) => Err(format!("a run of `{uses}` must hold exactly that builtin's fields")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(extra: &str) -> Result<PlanStep, serde_json::Error> {
        serde_json::from_str(&format!(r#"{{"id":"a","kind":"run","continueOnError":false{extra}}}"#))
    }

    #[test]
    fn a_step_reads_back_only_with_the_body_of_its_kind() {
        let run = r#","run":{"uses":"builtin:exec","argv":["true"]}"#;
        let step = read(run).unwrap();
        assert!(matches!(step.kind, StepKind::Run(PlanRun::Exec { .. })));
        assert_eq!(
            serde_json::to_string(&step).unwrap(),
            format!(r#"{{"id":"a","kind":"run","continueOnError":false{run}}}"#)
        );
        assert!(read("").is_err(), "a run step without `run`");
        let policy = r#","policy":{"expr":"true","failAction":"halt"}"#;
        assert!(read(&format!("{run}{policy}")).is_err(), "a run step with a policy too");
        assert!(read(policy).is_err(), "a run step with only a policy");
        let script_too = r#","run":{"uses":"builtin:exec","argv":["true"],"script":"true"}"#;
        assert!(read(script_too).is_err(), "an exec run with a script too");
        assert!(
            read(r#","run":{"uses":"builtin:exec","argv":[]}"#).is_err(),
            "an exec run without its program"
        );
    }
}
