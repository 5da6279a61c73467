//! The task pack manifest (DESIGN section 3) as typed data, and `load`, which turns a pack's
//! files into a checked `Manifest` or every problem found in them. Owns what a pack *says*;
//! what a run *does* with it is decided by `plan`.

mod check;
mod decode;
mod steps;
mod values;

use std::collections::BTreeMap;

use crate::diag::{Diagnostics, Pos};
use crate::pack::PackFiles;

/// A checked pack manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The display path of the manifest, e.g. `packs/hello/pack.yaml`.
    pub file: String,
    pub metadata: Metadata,
    pub inputs: Inputs,
    pub secrets: Vec<SecretDecl>,
    pub approvals: Vec<ApprovalDecl>,
    pub steps: Vec<Step>,
    /// Default retry policy for `run` steps that set none.
    pub failure: Option<Retries>,
    /// sha256 of the manifest's content as canonical JSON (RFC 8785): blind to formatting,
    /// comments, key order and flow/block style; sensitive to every value.
    pub content_sha256: String,
}

#[derive(Debug, Clone)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub name_pos: Pos,
    pub version_pos: Pos,
}

/// How a pack declares its inputs.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// A list of named inputs, each with a type or its own schema file.
    List(Vec<InputDecl>),
    /// One JSON Schema (2020-12) file, relative to the pack, describing the whole inputs object.
    Schema { path: String, pos: Pos },
}

#[derive(Debug, Clone)]
pub struct InputDecl {
    pub name: String,
    pub ty: Option<InputType>,
    pub required: bool,
    pub default: Option<serde_json::Value>,
    /// A JSON Schema file, relative to the pack, for this input's value.
    pub schema: Option<String>,
    pub description: Option<String>,
    pub pos: Pos,
    pub field: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    String,
    Number,
    Integer,
    Boolean,
    Array,
    Object,
}

impl InputType {
    pub const NAMES: [&'static str; 6] = ["string", "number", "integer", "boolean", "array", "object"];

    pub fn parse(s: &str) -> Option<InputType> {
        Some(match s {
            "string" => InputType::String,
            "number" => InputType::Number,
            "integer" => InputType::Integer,
            "boolean" => InputType::Boolean,
            "array" => InputType::Array,
            "object" => InputType::Object,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Whether a JSON value is of this type.
    pub fn accepts(self, v: &serde_json::Value) -> bool {
        use serde_json::Value as J;
        match self {
            InputType::String => v.is_string(),
            InputType::Number => v.is_number(),
            InputType::Integer => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
            InputType::Boolean => v.is_boolean(),
            InputType::Array => matches!(v, J::Array(_)),
            InputType::Object => matches!(v, J::Object(_)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SecretDecl {
    pub name: String,
    pub scope: Option<String>,
    pub required: bool,
    pub description: Option<String>,
    /// `as: file`: given to steps as a file (`STELLA_SECRET_FILE_<NAME>`), not a variable.
    pub as_file: bool,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct ApprovalDecl {
    pub id: String,
    pub grants: Vec<String>,
    pub required_count: u32,
    pub expires_after_ms: Option<u64>,
    pub reason: Option<Tpl>,
    /// Whether the run's requester may approve it (separation of duties otherwise).
    pub allow_self_approval: bool,
    pub pos: Pos,
    pub field: String,
}

/// A string that may hold template syntax, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Tpl {
    pub src: String,
    pub pos: Pos,
    pub field: String,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub name: Option<String>,
    pub kind: StepKind,
    pub when: Option<Tpl>,
    pub timeout_ms: Option<u64>,
    pub retries: Option<Retries>,
    pub continue_on_error: bool,
    pub env: BTreeMap<String, Tpl>,
    /// Declared output files: artifact name -> path relative to the workspace.
    pub outputs: BTreeMap<String, String>,
    /// Hosts this step needs to reach (checked against `network.allow` in sealed mode).
    pub network: Vec<String>,
    pub pos: Pos,
    pub field: String,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    Run(Run),
    Parallel(Parallel),
    Map(MapStep),
    Approval(ApprovalGate),
    Policy(PolicyGate),
}

impl StepKind {
    /// The kind's name as it appears in plans and events.
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

#[derive(Debug, Clone)]
pub enum Run {
    /// `builtin:shell`: a bash script, run as `bash -euo pipefail`.
    Shell { script: Tpl },
    /// `builtin:exec`: an argv, run without a shell.
    Exec { argv: Vec<Tpl> },
    /// `builtin:bundle.ingest`: verify a file's sha256 and stage it as an artifact.
    BundleIngest { path: Tpl, checksum: Tpl },
}

impl Run {
    pub const BUILTINS: [&'static str; 3] = ["builtin:shell", "builtin:exec", "builtin:bundle.ingest"];

    pub fn uses(&self) -> &'static str {
        match self {
            Run::Shell { .. } => "builtin:shell",
            Run::Exec { .. } => "builtin:exec",
            Run::BundleIngest { .. } => "builtin:bundle.ingest",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Parallel {
    /// 0: no limit of its own (the runner's global limit still applies).
    pub max_parallel: u32,
    pub continue_on_error: bool,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub struct MapStep {
    pub items: MapItems,
    pub max_parallel: u32,
    pub step: Box<Step>,
}

#[derive(Debug, Clone)]
pub enum MapItems {
    /// A literal YAML list.
    List(Vec<serde_json::Value>),
    /// An expression resolved at plan time, e.g. `{{ inputs.targets }}`.
    Expr(Tpl),
}

#[derive(Debug, Clone)]
pub struct ApprovalGate {
    pub id: String,
    pub id_pos: Pos,
    pub message: Option<Tpl>,
}

#[derive(Debug, Clone)]
pub struct PolicyGate {
    /// The `expr:` form; `None` for a Rego policy.
    pub expr: Option<Tpl>,
    /// The `rego:` form: a `.rego` file of the pack (its path, located) and the query asked.
    pub rego: Option<Tpl>,
    pub query: Option<Tpl>,
    pub fail_action: FailAction,
    pub message: Option<Tpl>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailAction {
    Halt,
    Continue,
}

impl FailAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FailAction::Halt => "halt",
            FailAction::Continue => "continue",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    pub max_attempts: u32,
    pub backoff_ms: u64,
}

impl Step {
    /// This step and every step nested in it, depth first, in document order.
    pub fn walk(&self) -> Vec<&Step> {
        let mut out = vec![self];
        match &self.kind {
            StepKind::Parallel(p) => p.steps.iter().for_each(|s| out.extend(s.walk())),
            StepKind::Map(m) => out.extend(m.step.walk()),
            _ => {}
        }
        out
    }
}

impl Manifest {
    /// Every step of the pack, nested ones included, in document order.
    pub fn all_steps(&self) -> Vec<&Step> {
        self.steps.iter().flat_map(Step::walk).collect()
    }

    /// Names of the declared inputs (for the schema form: the schema's top-level properties).
    pub fn input_names(&self, files: &PackFiles) -> Vec<String> {
        match &self.inputs {
            Inputs::List(list) => list.iter().map(|i| i.name.clone()).collect(),
            Inputs::Schema { path, .. } => files
                .json(path)
                .and_then(|s| {
                    s.get("properties")
                        .and_then(|p| p.as_object())
                        .map(|p| p.keys().cloned().collect())
                })
                .unwrap_or_default(),
        }
    }
}

/// The manifest file's name inside a pack directory.
pub const MANIFEST_FILE: &str = "pack.yaml";

/// Reads, decodes and checks the manifest of `files`. Every problem is reported, not just the first.
pub fn load(files: &PackFiles) -> Result<Manifest, Diagnostics> {
    let file = files.display_path(MANIFEST_FILE);
    let src = files.text(MANIFEST_FILE).map_err(Diagnostics::from)?;
    let root = crate::yaml::parse(&file, src, crate::yaml::Limits::default()).map_err(Diagnostics::from)?;
    let (mut manifest, mut diags) = decode::decode(&file, &root);
    if let Some(m) = manifest.as_mut() {
        let canonical = crate::canonical::to_string(&root.to_json());
        m.content_sha256 = crate::pack::sha256_hex(canonical.as_bytes());
    }
    if let Some(manifest) = &manifest {
        check::check(manifest, files, &mut diags);
    }
    match manifest {
        Some(m) if diags.is_empty() => Ok(m),
        _ => Err(diags.sorted()),
    }
}
