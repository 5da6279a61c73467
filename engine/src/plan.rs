//! The plan (DESIGN section 5): a pack plus resolved inputs turned into the normalised
//! execution graph, serialised as canonical JSON (RFC 8785) and hashed. Plan-time values
//! (inputs, map items) are rendered here; run-time templates stay unresolved, marked so a
//! rendered value is never rendered again (an input cannot smuggle in a template).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::code::Code;
use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::expr::{self, Ctx, Flavor};
use crate::inputs::Resolved;
use crate::manifest::{self, Manifest, MapItems, Run, Step, StepKind, Tpl};
use crate::pack::{FileDigest, PackFiles};

pub const API_VERSION: &str = "stella/v1";
/// Most children a map may expand to.
pub const MAX_MAP_ITEMS: usize = 100_000;

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
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanStep {
    pub id: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Cond>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<PlanRetries>,
    pub continue_on_error: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, Text>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<PlanRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<PlanGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<PlanMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<PlanApprovalGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PlanPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanRetries {
    pub max_attempts: u32,
    pub backoff_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanRun {
    pub uses: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_sha256: Option<Text>,
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
    pub expr: Text,
    pub fail_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Text>,
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
        if let Some(p) = &self.parallel {
            &p.steps
        } else if let Some(m) = &self.map {
            &m.steps
        } else {
            &[]
        }
    }
}

/// Builds the plan of `m` with `inputs` (already resolved by `inputs::resolve`).
pub fn build(m: &Manifest, files: &PackFiles, inputs: &Resolved, config: &PlanConfig) -> Result<Plan, Diagnostics> {
    let mut b = Builder {
        reads_steps: Default::default(),
        templates: Default::default(),
        file: &m.file,
        config,
        diags: Diagnostics::default(),
        failure: m.failure,
    };
    let inputs_value = expr::value(&Json::Object(inputs.clone()));
    let ctx = expr::ctx([("inputs", inputs_value.clone())]);
    let approvals = m
        .approvals
        .iter()
        .map(|a| PlanApproval {
            id: a.id.clone(),
            grants: a.grants.clone(),
            required_count: a.required_count,
            expires_after_ms: a.expires_after_ms,
            reason: a.reason.as_ref().and_then(|r| b.render_now(r, Flavor::Text, &ctx)),
        })
        .collect();
    let scope = Inherited {
        prefix: String::new(),
        retries: None,
        env: BTreeMap::new(),
    };
    let steps = m.steps.iter().filter_map(|s| b.step(s, &ctx, &scope)).collect();
    let plan = Plan {
        api_version: API_VERSION.into(),
        kind: "Plan".into(),
        pack: PackRef {
            name: m.metadata.name.clone(),
            version: m.metadata.version.clone(),
            manifest_sha256: m.content_sha256.clone(),
            files: files
                .digests()
                .into_iter()
                .filter(|d| d.path != manifest::MANIFEST_FILE)
                .map(
                    |FileDigest {
                         path,
                         sha256,
                         executable,
                     }| PlanFile {
                        path,
                        sha256,
                        executable,
                    },
                )
                .collect(),
        },
        inputs: inputs.clone(),
        secrets: m
            .secrets
            .iter()
            .map(|s| PlanSecret {
                name: s.name.clone(),
                scope: s.scope.clone(),
                required: s.required,
            })
            .collect(),
        approvals,
        steps,
    };
    b.diags.into_result(plan)
}

/// What a nested step takes from the steps around it.
struct Inherited {
    /// `<mapId>[<index>]::` for map children, empty elsewhere.
    prefix: String,
    retries: Option<manifest::Retries>,
    env: BTreeMap<String, Text>,
}

struct Builder<'a> {
    file: &'a str,
    /// Whether a template (by source) reads step outputs; map children repeat the same sources.
    reads_steps: std::collections::HashMap<(&'a str, bool), bool>,
    /// Templates compiled once per source and flavor.
    templates: expr::TemplateCache,
    config: &'a PlanConfig,
    diags: Diagnostics,
    failure: Option<manifest::Retries>,
}

impl<'a> Builder<'a> {
    fn error(&mut self, code: Code, pos: Pos, field: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic::new(code, self.file, pos, field, msg));
    }

    /// Renders a plan-time template (the checker made sure it reads no step outputs).
    fn render_now(&mut self, t: &'a Tpl, flavor: Flavor, ctx: &Ctx) -> Option<String> {
        match self.templates.render(&t.src, flavor, ctx) {
            Ok(s) => Some(s),
            Err(msg) => {
                self.error(Code::PackInputInvalid, t.pos, &t.field, msg);
                None
            }
        }
    }

    /// Renders a template now when it reads only plan-time values; keeps it otherwise.
    fn text(&mut self, t: &'a Tpl, flavor: Flavor, ctx: &Ctx) -> Option<Text> {
        if !expr::is_template(&t.src) {
            return Some(Text::Resolved(t.src.clone()));
        }
        if self.reads_steps(&t.src, false) {
            let flavor = if flavor == Flavor::Shell {
                TemplateFlavor::Shell
            } else {
                TemplateFlavor::Text
            };
            return Some(Text::Template {
                template: t.src.clone(),
                flavor,
            });
        }
        self.render_now(t, flavor, ctx).map(Text::Resolved)
    }

    fn cond(&mut self, t: &'a Tpl, ctx: &Ctx) -> Option<Cond> {
        if self.reads_steps(&t.src, true) {
            return Some(Cond::Template {
                template: t.src.clone(),
            });
        }
        match expr::eval_bool(&t.src, ctx) {
            Ok(b) => Some(Cond::Known(b)),
            Err(msg) => {
                self.error(Code::PackInputInvalid, t.pos, &t.field, msg);
                None
            }
        }
    }

    fn reads_steps(&mut self, src: &'a str, expression: bool) -> bool {
        *self
            .reads_steps
            .entry((src, expression))
            .or_insert_with(|| reads_steps(src, expression))
    }

    fn step(&mut self, s: &'a Step, ctx: &Ctx, inh: &Inherited) -> Option<PlanStep> {
        let id = format!("{}{}", inh.prefix, s.id);
        let mut env = inh.env.clone();
        for (k, t) in &s.env {
            if let Some(v) = self.text(t, Flavor::Text, ctx) {
                env.insert(k.clone(), v);
            }
        }
        let retries = s.retries.or(inh.retries);
        if self.config.sealed {
            for host in &s.network {
                if !self.config.allow.iter().any(|a| host_allowed(a, host)) {
                    let msg = format!("step declares host `{host}`, which sealed mode does not allow");
                    self.diags.push(
                        Diagnostic::new(
                            Code::PackNetworkBlocked,
                            self.file,
                            s.pos,
                            &format!("{}.network", s.field),
                            msg,
                        )
                        .hint("add it to network.allow in .stella/config.yaml, or run unsealed"),
                    );
                }
            }
        }
        let mut out = PlanStep {
            id,
            kind: s.kind.name().into(),
            name: s.name.clone(),
            when: match &s.when {
                Some(w) => Some(self.cond(w, ctx)?),
                None => None,
            },
            timeout_ms: s.timeout_ms,
            retries: None,
            continue_on_error: s.continue_on_error,
            env: BTreeMap::new(),
            outputs: s.outputs.clone(),
            network: s.network.clone(),
            run: None,
            parallel: None,
            map: None,
            approval: None,
            policy: None,
        };
        let child_scope = Inherited {
            prefix: inh.prefix.clone(),
            retries,
            env: env.clone(),
        };
        match &s.kind {
            StepKind::Run(run) => {
                let r = retries.or(self.failure).unwrap_or(manifest::Retries {
                    max_attempts: 1,
                    backoff_ms: 0,
                });
                out.retries = Some(PlanRetries {
                    max_attempts: r.max_attempts,
                    backoff_ms: r.backoff_ms,
                });
                out.env = env;
                out.run = Some(match run {
                    Run::Shell { script } => PlanRun {
                        uses: run.uses().into(),
                        script: Some(self.text(script, Flavor::Shell, ctx)?),
                        argv: None,
                        path: None,
                        checksum_sha256: None,
                    },
                    Run::Exec { argv } => {
                        let argv: Vec<Option<Text>> = argv.iter().map(|a| self.text(a, Flavor::Text, ctx)).collect();
                        PlanRun {
                            uses: run.uses().into(),
                            script: None,
                            argv: Some(argv.into_iter().collect::<Option<Vec<_>>>()?),
                            path: None,
                            checksum_sha256: None,
                        }
                    }
                    Run::BundleIngest { path, checksum } => PlanRun {
                        uses: run.uses().into(),
                        script: None,
                        argv: None,
                        path: Some(self.text(path, Flavor::Text, ctx)?),
                        checksum_sha256: Some(self.text(checksum, Flavor::Text, ctx)?),
                    },
                });
            }
            StepKind::Parallel(p) => {
                let steps = p.steps.iter().filter_map(|c| self.step(c, ctx, &child_scope)).collect();
                out.parallel = Some(PlanGroup {
                    max_parallel: p.max_parallel,
                    continue_on_error: p.continue_on_error,
                    steps,
                });
            }
            StepKind::Map(map) => {
                let items = match &map.items {
                    MapItems::List(items) => items.clone(),
                    MapItems::Expr(t) => match expr::eval(&t.src, ctx) {
                        Ok(Json::Array(items)) => items,
                        Ok(other) => {
                            let kind = crate::inputs::json_kind(&other);
                            self.error(
                                Code::PackInputInvalid,
                                t.pos,
                                &t.field,
                                format!("map items must evaluate to a list, found {kind}"),
                            );
                            return None;
                        }
                        Err(msg) => {
                            self.error(Code::PackInputInvalid, t.pos, &t.field, msg);
                            return None;
                        }
                    },
                };
                if items.len() > MAX_MAP_ITEMS {
                    let msg = format!("map has {} items; the limit is {MAX_MAP_ITEMS}", items.len());
                    self.error(Code::PackInputInvalid, s.pos, &format!("{}.map.items", s.field), msg);
                    return None;
                }
                let mut steps = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let inputs = ctx.get_attr("inputs").unwrap_or_default();
                    let item_ctx = expr::ctx([("inputs", inputs), ("item", expr::value(item))]);
                    let scope = Inherited {
                        prefix: format!("{}{}[{i}]::", inh.prefix, s.id),
                        retries,
                        env: env.clone(),
                    };
                    steps.push(self.step(&map.step, &item_ctx, &scope)?);
                }
                out.map = Some(PlanMap {
                    max_parallel: map.max_parallel,
                    items,
                    steps,
                });
            }
            StepKind::Approval(g) => {
                let message = match &g.message {
                    Some(m) => Some(self.text(m, Flavor::Text, ctx)?),
                    None => None,
                };
                out.approval = Some(PlanApprovalGate {
                    id: g.id.clone(),
                    message,
                });
            }
            StepKind::Policy(p) => {
                let expr = if self.reads_steps(&p.expr.src, true) {
                    Text::Template {
                        template: p.expr.src.clone(),
                        flavor: TemplateFlavor::Text,
                    }
                } else {
                    match expr::eval_bool(&p.expr.src, ctx) {
                        Ok(b) => Text::Resolved(b.to_string()),
                        Err(msg) => {
                            self.error(Code::PackInputInvalid, p.expr.pos, &p.expr.field, msg);
                            return None;
                        }
                    }
                };
                let message = match &p.message {
                    Some(m) => Some(self.text(m, Flavor::Text, ctx)?),
                    None => None,
                };
                out.policy = Some(PlanPolicy {
                    expr,
                    fail_action: p.fail_action.as_str().into(),
                    message,
                });
            }
        }
        Some(out)
    }
}

/// Whether a template (or expression field) reads step outputs, i.e. must wait for run time.
fn reads_steps(src: &str, expression: bool) -> bool {
    let refs = if expression {
        expr::expression_refs(src)
    } else {
        expr::template_refs(src)
    };
    refs.map(|r| r.iter().any(|v| v == "steps" || v.starts_with("steps.")))
        .unwrap_or(false)
}

/// `allow` entries are exact hosts or `*.suffix` wildcards; a port in `host` is ignored.
fn host_allowed(allow: &str, host: &str) -> bool {
    let host = host
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map_or(host, |(h, _)| h);
    match allow.strip_prefix("*.") {
        Some(suffix) => host.ends_with(&format!(".{suffix}")),
        None => allow.eq_ignore_ascii_case(host),
    }
}

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
