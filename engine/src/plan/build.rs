//! Building a plan: a checked manifest and resolved inputs turned into plan steps. Renders what
//! is known at plan time (inputs, map items), keeps run-time templates, expands maps, applies
//! inherited retries and environment, and refuses hosts sealed mode does not allow. Never reads
//! files or runs anything.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::code::Code;
use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::expr::{self, Ctx, Flavor};
use crate::inputs::Resolved;
use crate::manifest::{self, Manifest, MapItems, Run, Step, Tpl};
use crate::pack::{FileDigest, PackFiles};

use super::{
    API_VERSION, Cond, PackRef, Plan, PlanApproval, PlanApprovalGate, PlanConfig, PlanFile, PlanGroup, PlanMap,
    PlanPolicy, PlanProvenance, PlanRego, PlanRetries, PlanRun, PlanSecret, PlanStep, StepKind, TemplateFlavor, Text,
};

/// Most children a map may expand to.
const MAX_MAP_ITEMS: usize = 100_000;

/// Builds the plan of `m` with `inputs` (already resolved by `inputs::resolve`).
pub(super) fn build(
    m: &Manifest,
    files: &PackFiles,
    inputs: &Resolved,
    config: &PlanConfig,
) -> Result<Plan, Diagnostics> {
    let mut b = Builder {
        files,
        rego: Default::default(),
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
            allow_self_approval: a.allow_self_approval,
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
            provenance: PlanProvenance::of(files),
        },
        inputs: inputs.clone(),
        secrets: m
            .secrets
            .iter()
            .map(|s| PlanSecret {
                name: s.name.clone(),
                scope: s.scope.clone(),
                required: s.required,
                delivery: s.as_file.then(|| "file".to_string()),
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
    files: &'a PackFiles,
    /// Rego policies already checked, by path as written: (normalised path, sha256) or why not.
    rego: BTreeMap<String, Result<(String, String), String>>,
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

    /// A gate's Rego policy, checked once per path: its normalised path and sha256.
    fn rego_policy(&mut self, path: &str) -> Result<(String, String), String> {
        let files = self.files;
        self.rego
            .entry(path.to_string())
            .or_insert_with(|| {
                crate::rego::check(files, path)
                    .map(|p| (p.path, p.sha256))
                    .map_err(|e| e.to_string())
            })
            .clone()
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
        let when = match &s.when {
            Some(w) => Some(self.cond(w, ctx)?),
            None => None,
        };
        let child_scope = Inherited {
            prefix: inh.prefix.clone(),
            retries,
            env: env.clone(),
        };
        let (kind, retries, env) = match &s.kind {
            manifest::StepKind::Run(run) => {
                let r = retries.or(self.failure).unwrap_or(manifest::Retries {
                    max_attempts: 1,
                    backoff_ms: 0,
                });
                let retries = PlanRetries {
                    max_attempts: r.max_attempts,
                    backoff_ms: r.backoff_ms,
                };
                let run = match run {
                    Run::Shell { script } => PlanRun::Shell {
                        script: self.text(script, Flavor::Shell, ctx)?,
                    },
                    Run::Exec { argv } => {
                        let argv: Vec<Option<Text>> = argv.iter().map(|a| self.text(a, Flavor::Text, ctx)).collect();
                        PlanRun::Exec {
                            argv: argv.into_iter().collect::<Option<Vec<_>>>()?,
                        }
                    }
                    Run::BundleIngest { path, checksum } => PlanRun::BundleIngest {
                        path: self.text(path, Flavor::Text, ctx)?,
                        checksum_sha256: self.text(checksum, Flavor::Text, ctx)?,
                    },
                };
                (StepKind::Run(run), Some(retries), env)
            }
            manifest::StepKind::Parallel(p) => {
                let steps = p.steps.iter().filter_map(|c| self.step(c, ctx, &child_scope)).collect();
                let group = PlanGroup {
                    max_parallel: p.max_parallel,
                    continue_on_error: p.continue_on_error,
                    steps,
                };
                (StepKind::Parallel(group), None, BTreeMap::new())
            }
            manifest::StepKind::Map(map) => {
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
                let map = PlanMap {
                    max_parallel: map.max_parallel,
                    items,
                    steps,
                };
                (StepKind::Map(map), None, BTreeMap::new())
            }
            manifest::StepKind::Approval(g) => {
                let message = match &g.message {
                    Some(m) => Some(self.text(m, Flavor::Text, ctx)?),
                    None => None,
                };
                let gate = PlanApprovalGate {
                    id: g.id.clone(),
                    message,
                };
                (StepKind::Approval(gate), None, BTreeMap::new())
            }
            manifest::StepKind::Policy(p) => {
                let expr = match &p.expr {
                    None => None,
                    Some(e) if self.reads_steps(&e.src, true) => Some(Text::Template {
                        template: e.src.clone(),
                        flavor: TemplateFlavor::Text,
                    }),
                    Some(e) => match expr::eval_bool(&e.src, ctx) {
                        Ok(b) => Some(Text::Resolved(b.to_string())),
                        Err(msg) => {
                            self.error(Code::PackInputInvalid, e.pos, &e.field, msg);
                            return None;
                        }
                    },
                };
                let rego = match &p.rego {
                    None => None,
                    Some(r) => match self.rego_policy(&r.src) {
                        Ok((file, sha256)) => Some(PlanRego {
                            file,
                            sha256,
                            query: p
                                .query
                                .as_ref()
                                .map_or(crate::rego::DEFAULT_QUERY, |q| q.src.as_str())
                                .into(),
                        }),
                        Err(e) => {
                            self.error(Code::PackInvalid, r.pos, &r.field, e);
                            return None;
                        }
                    },
                };
                let message = match &p.message {
                    Some(m) => Some(self.text(m, Flavor::Text, ctx)?),
                    None => None,
                };
                let policy = PlanPolicy {
                    expr,
                    rego,
                    fail_action: p.fail_action.as_str().into(),
                    message,
                };
                (StepKind::Policy(policy), None, BTreeMap::new())
            }
        };
        Some(PlanStep {
            id,
            name: s.name.clone(),
            when,
            timeout_ms: s.timeout_ms,
            retries,
            continue_on_error: s.continue_on_error,
            env,
            outputs: s.outputs.clone(),
            network: s.network.clone(),
            kind,
        })
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
