//! The plan (DESIGN section 5): a pack plus resolved inputs turned into the normalised
//! execution graph, serialised as canonical JSON (RFC 8785) and hashed. Plan-time values
//! (inputs, map items) are rendered here; run-time templates stay unresolved, marked so a
//! rendered value is never rendered again (an input cannot smuggle in a template).
//! This file owns the format (the types of `plan.json`, its hash) and the way in (`from_dir`,
//! `from_files`); building is `build`'s, the on-disk shape of steps and runs `wire`'s. Never runs a
//! step.

mod build;
pub mod summary;
mod wire;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::diag::Diagnostics;
use crate::pack::{PackFiles, PackLimits};
use crate::yaml;

pub const API_VERSION: &str = "stella/v1";

/// Reads a pack directory, checks it, resolves `inputs` and builds its plan: what
/// `stella pack plan` and `stella run request` do. `inputs_file` names the inputs in messages.
pub fn from_dir(
    dir: &Path,
    display_root: &str,
    inputs: Option<&yaml::Node>,
    inputs_file: &str,
    config: &PlanConfig,
) -> Result<Plan, Diagnostics> {
    let files = PackFiles::read_dir(dir, display_root, PackLimits::default())?;
    from_files(&files, inputs, inputs_file, config)
}

/// As `from_dir`, for pack files already in memory (e.g. read from a commit).
pub fn from_files(
    files: &PackFiles,
    inputs: Option<&yaml::Node>,
    inputs_file: &str,
    config: &PlanConfig,
) -> Result<Plan, Diagnostics> {
    let manifest = crate::manifest::load(files)?;
    let resolved = crate::inputs::resolve(&manifest, files, inputs, inputs_file)?;
    build::build(&manifest, files, &resolved, config)
}

/// Repository policy that shapes a plan.
#[derive(Debug, Clone, Default)]
pub struct PlanConfig {
    /// Sealed mode: steps may only declare hosts in `allow`.
    pub sealed: bool,
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plan {
    pub api_version: String,
    pub kind: String,
    pub pack: PackRef,
    pub inputs: serde_json::Map<String, Json>,
    pub secrets: Vec<PlanSecret>,
    pub approvals: Vec<PlanApproval>,
    pub steps: Vec<PlanStep>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackRef {
    pub name: String,
    pub version: String,
    /// sha256 of the manifest as canonical JSON (its formatting does not count).
    pub manifest_sha256: String,
    /// sha256 of every other file of the pack, sorted by path.
    pub files: Vec<PlanFile>,
    /// Who published an imported pack (its `.provenance.json`, checked before planning);
    /// absent for a pack written in the repository, so such plans hash as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<PlanProvenance>,
}

/// An imported pack's publisher and bundle, as its `.provenance.json` names them: part of
/// the plan, so approving the plan approves who published the pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanProvenance {
    pub publisher: String,
    pub keyid: String,
    pub bundle_sha256: String,
    /// A mirrored pack's `{url, ref, commit, path}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Json>,
}

impl PlanProvenance {
    /// The provenance named by the pack's `.provenance.json`, if it has one that reads.
    pub fn of(files: &PackFiles) -> Option<PlanProvenance> {
        let v = files.json(PROVENANCE_FILE)?;
        let text = |k: &str| v.get(k).and_then(Json::as_str).map(str::to_string);
        Some(PlanProvenance {
            publisher: text("publisher")?,
            keyid: text("keyid")?,
            bundle_sha256: text("bundleSha256")?,
            source: v.get("source").cloned(),
        })
    }
}

/// The file an import of a signed pack bundle leaves in the pack directory.
pub const PROVENANCE_FILE: &str = ".provenance.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub path: String,
    pub sha256: String,
    /// The file's executable bit (a `chmod +x` changes what runs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanSecret {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub required: bool,
    /// `as: file`: the step gets `STELLA_SECRET_FILE_<NAME>`, a file, not the variable.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
}

impl PlanSecret {
    /// Whether the step gets this secret as a file (`as: file`).
    pub fn as_file(&self) -> bool {
        self.delivery.as_deref() == Some("file")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanApproval {
    pub id: String,
    pub grants: Vec<String>,
    pub required_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Absent (false) unless the pack says so, so plans without it hash as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_self_approval: bool,
}

/// A text value: rendered at plan time, or a template the runner renders when the step starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Text {
    Resolved(String),
    Template {
        template: String,
        #[serde(default, skip_serializing_if = "is_text")]
        flavor: TemplateFlavor,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateFlavor {
    #[default]
    Text,
    Shell,
}

fn is_text(f: &TemplateFlavor) -> bool {
    *f == TemplateFlavor::Text
}

/// A condition: known at plan time, or an expression evaluated when the step is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cond {
    Known(bool),
    Template { template: String },
}

/// One step of the plan: what every kind has, and `kind` with what only that kind has. In
/// `plan.json` it is one object, `kind` naming the kind and one key holding its body (see `wire`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "wire::StepWire")]
pub struct PlanStep {
    pub id: String,
    pub name: Option<String>,
    pub when: Option<Cond>,
    pub timeout_ms: Option<u64>,
    /// Set on run steps (the step's, its group's, `failure:`'s, or one attempt).
    pub retries: Option<PlanRetries>,
    pub continue_on_error: bool,
    /// Set on run steps: the step's variables over those of the groups around it.
    pub env: BTreeMap<String, Text>,
    pub outputs: BTreeMap<String, String>,
    pub network: Vec<String>,
    pub kind: StepKind,
}

/// What a step does, with what only that kind of step has.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Run(PlanRun),
    Parallel(PlanGroup),
    Map(PlanMap),
    Approval(PlanApprovalGate),
    Policy(PlanPolicy),
}

impl StepKind {
    /// The `kind` of `plan.json` and of `step.started` events.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Run(_) => "run",
            StepKind::Parallel(_) => "parallel",
            StepKind::Map(_) => "map",
            StepKind::Approval(_) => "gate.approval",
            StepKind::Policy(_) => "gate.policy",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanRetries {
    pub max_attempts: u32,
    pub backoff_ms: u64,
}

/// What a run step runs, by its builtin. In `plan.json`: `uses` and the builtin's fields.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "wire::RunWire")]
pub enum PlanRun {
    /// `builtin:shell`: a bash script.
    Shell { script: Text },
    /// `builtin:exec`: an argv, run without a shell.
    Exec { argv: Vec<Text> },
    /// `builtin:bundle.ingest`: a file to verify against its sha256 and stage as an artifact.
    BundleIngest { path: Text, checksum_sha256: Text },
}

impl PlanRun {
    /// The builtin's name, as the pack and `plan.json` write it.
    pub fn uses(&self) -> &'static str {
        match self {
            PlanRun::Shell { .. } => "builtin:shell",
            PlanRun::Exec { .. } => "builtin:exec",
            PlanRun::BundleIngest { .. } => "builtin:bundle.ingest",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanGroup {
    pub max_parallel: u32,
    pub continue_on_error: bool,
    pub steps: Vec<PlanStep>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanMap {
    pub max_parallel: u32,
    pub items: Vec<Json>,
    pub steps: Vec<PlanStep>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanApprovalGate {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanPolicy {
    /// The `expr:` form (absent for a Rego policy, so older plans hash as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rego: Option<PlanRego>,
    pub fail_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Text>,
}

/// A Rego policy gate: the pack file (normalised; its digest is also in `files`), its sha256
/// and the query asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanRego {
    pub file: String,
    pub sha256: String,
    pub query: String,
}

impl Plan {
    /// The canonical JSON text (RFC 8785) the hash is taken over.
    pub fn canonical_json(&self) -> String {
        crate::canonical::to_string(self)
    }

    /// `sha256:<hex>` of the canonical JSON.
    pub fn hash(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(self.canonical_json().as_bytes()))
        )
    }

    /// The plan with its hash, as written to `plan.json` (canonical JSON, `planHash` added).
    pub fn to_plan_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("a plan is always representable as JSON");
        v["planHash"] = Json::String(self.hash());
        crate::canonical::to_string(&v)
    }

    /// Reads `plan.json` and checks that its `planHash` matches its content.
    pub fn from_plan_json(text: &str) -> Result<(Plan, String), String> {
        let mut v: Json = serde_json::from_str(text).map_err(|e| format!("plan.json is not JSON: {e}"))?;
        let stated = v
            .as_object_mut()
            .and_then(|o| o.remove("planHash"))
            .and_then(|h| h.as_str().map(str::to_string));
        let stated = stated.ok_or("plan.json has no planHash")?;
        let plan: Plan = serde_json::from_value(v).map_err(|e| format!("plan.json is not a plan: {e}"))?;
        let actual = plan.hash();
        if actual != stated {
            return Err(format!("plan.json states {stated} but its content hashes to {actual}"));
        }
        Ok((plan, stated))
    }

    /// Every step, nested ones and map children included, depth first.
    pub fn all_steps(&self) -> Vec<&PlanStep> {
        fn walk<'a>(s: &'a PlanStep, out: &mut Vec<&'a PlanStep>) {
            out.push(s);
            for c in s.children() {
                walk(c, out);
            }
        }
        let mut out = Vec::new();
        self.steps.iter().for_each(|s| walk(s, &mut out));
        out
    }
}

impl PlanStep {
    /// The steps nested in a parallel or map step.
    pub fn children(&self) -> &[PlanStep] {
        match &self.kind {
            StepKind::Parallel(p) => &p.steps,
            StepKind::Map(m) => &m.steps,
            StepKind::Run(_) | StepKind::Approval(_) | StepKind::Policy(_) => &[],
        }
    }
}
