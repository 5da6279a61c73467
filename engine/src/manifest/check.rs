//! Cross-field rules of a decoded manifest: unique names, gates that name declared approvals,
//! template syntax and references (inputs that exist, outputs of steps that run earlier),
//! files that exist inside the pack, and safe artifact paths. Reports; never changes anything.

use std::collections::{BTreeSet, HashMap};

use crate::code::Code;
use crate::diag::{Diagnostic, Diagnostics, Pos, did_you_mean};
use crate::expr;
use crate::pack::{PackFiles, normalise};

use super::values::is_simple_name;
use super::*;

struct Checker<'a> {
    file: &'a str,
    files: &'a PackFiles,
    diags: &'a mut Diagnostics,
    inputs: BTreeSet<String>,
    /// Every step id in the pack, so "not declared" and "not earlier" can be told apart.
    all_ids: BTreeSet<String>,
    approvals: Vec<String>,
    steps: &'a [Step],
}

/// What a template may see where it is written.
#[derive(Clone, Copy)]
struct Scope<'v> {
    /// Ids of steps that have finished before this point.
    earlier: &'v [String],
    in_map: bool,
    /// Plan-time fields (map items, approval reasons) may not read step outputs.
    plan_time: bool,
}

pub(super) fn check(m: &Manifest, files: &PackFiles, diags: &mut Diagnostics) {
    let mut c = Checker {
        file: &m.file,
        files,
        diags,
        inputs: m.input_names(files).into_iter().collect(),
        all_ids: BTreeSet::new(),
        approvals: m.approvals.iter().map(|a| a.id.clone()).collect(),
        steps: &m.steps,
    };
    c.metadata(&m.metadata);
    c.inputs(m);
    c.secrets(&m.secrets);
    c.approval_decls(&m.approvals);
    c.step_ids(m);
    let mut earlier = Vec::new();
    for step in &m.steps {
        c.step(
            step,
            Scope {
                earlier: &earlier,
                in_map: false,
                plan_time: false,
            },
        );
        earlier.extend(addressable_ids(step));
    }
}

impl Checker<'_> {
    fn error(&mut self, pos: Pos, field: &str, message: impl Into<String>) -> &mut Diagnostic {
        self.diags
            .push(Diagnostic::new(Code::PackInvalid, self.file, pos, field, message));
        self.diags.0.last_mut().expect("just pushed")
    }

    fn metadata(&mut self, md: &Metadata) {
        let ok = !md.name.is_empty()
            && md.name.len() <= 64
            && md
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && md.name.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            self.error(
                md.name_pos,
                "metadata.name",
                format!("`{}` is not a valid pack name", md.name),
            )
            .hint = Some("use lowercase letters, digits and -, e.g. sbom-remediation".into());
        }
        if md.version.trim().is_empty() {
            self.error(md.version_pos, "metadata.version", "version must not be empty");
        }
    }

    fn inputs(&mut self, m: &Manifest) {
        match &m.inputs {
            Inputs::Schema { path, pos } => {
                self.schema_file(path, *pos, "spec.inputs.schema");
            }
            Inputs::List(list) => {
                let mut seen = HashMap::new();
                for input in list {
                    let field = format!("{}.name", input.field);
                    if !is_identifier(&input.name) {
                        self.error(input.pos, &field, format!("`{}` is not a valid input name", input.name))
                            .hint = Some(
                            "use letters, digits and _, not starting with a digit, so templates can say inputs.<name>"
                                .into(),
                        );
                    }
                    if let Some(first) = seen.insert(input.name.clone(), input.pos) {
                        self.error(
                            input.pos,
                            &field,
                            format!(
                                "duplicate input `{}` (first declared at line {})",
                                input.name, first.line
                            ),
                        );
                    }
                    if let (Some(ty), Some(default)) = (input.ty, &input.default)
                        && !ty.accepts(default)
                    {
                        self.error(
                            input.pos,
                            &format!("{}.default", input.field),
                            format!("default is not of type {}", ty.as_str()),
                        );
                    }
                    if let Some(schema) = &input.schema
                        && let Some(validator) = self.schema_file(schema, input.pos, &format!("{}.schema", input.field))
                        && let Some(default) = &input.default
                        && let Some(err) = validator.iter_errors(default).next()
                    {
                        self.error(
                            input.pos,
                            &format!("{}.default", input.field),
                            format!("default does not match its schema: {err}"),
                        );
                    }
                }
            }
        }
    }

    /// A JSON Schema file named by the pack: inside the pack, JSON, a valid 2020-12 schema.
    fn schema_file(&mut self, path: &str, pos: Pos, field: &str) -> Option<jsonschema::Validator> {
        match crate::schema::compile(self.files, path) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(pos, field, e.to_string());
                None
            }
        }
    }

    /// A Rego policy named by a gate: inside the pack, parsed (errors located in the `.rego`
    /// file itself), and a query that is a rule path.
    fn rego_file(&mut self, path: &Tpl, query: Option<&Tpl>) {
        match crate::rego::check(self.files, &path.src) {
            Ok(_) => {}
            Err(crate::rego::Error::Syntax { pos, message }) => {
                let shown = normalise(&path.src).map_or_else(|| path.src.clone(), |p| self.files.display_path(&p));
                self.diags.push(
                    Diagnostic::new(Code::PackInvalid, &shown, pos, "", message)
                        .hint(format!("the policy named by {} does not parse as Rego", path.field)),
                );
            }
            Err(e) => {
                self.error(path.pos, &path.field, e.to_string());
            }
        }
        if let Some(q) = query
            && let Err(e) = crate::rego::check_query(&q.src)
        {
            self.error(q.pos, &q.field, e.to_string()).hint = Some(format!("e.g. {}", crate::rego::DEFAULT_QUERY));
        }
    }

    fn secrets(&mut self, secrets: &[SecretDecl]) {
        let mut seen = BTreeSet::new();
        for (i, s) in secrets.iter().enumerate() {
            let field = format!("spec.secrets[{i}].name");
            if !is_identifier(&s.name) {
                self.error(s.pos, &field, format!("`{}` is not a valid secret name", s.name))
                    .hint = Some("use letters, digits and _; the step sees it as STELLA_SECRET_<NAME>".into());
            }
            if !seen.insert(s.name.to_ascii_uppercase()) {
                self.error(s.pos, &field, format!("duplicate secret `{}`", s.name));
            }
        }
    }

    fn approval_decls(&mut self, approvals: &[ApprovalDecl]) {
        let mut seen = BTreeSet::new();
        for a in approvals {
            if !is_simple_name(&a.id) {
                self.error(
                    a.pos,
                    &format!("{}.id", a.field),
                    format!("`{}` is not a valid approval id", a.id),
                );
            }
            if !seen.insert(a.id.clone()) {
                self.error(
                    a.pos,
                    &format!("{}.id", a.field),
                    format!("duplicate approval `{}`", a.id),
                );
            }
            if let Some(reason) = &a.reason {
                self.template(
                    reason,
                    Scope {
                        earlier: &[],
                        in_map: false,
                        plan_time: true,
                    },
                    false,
                );
            }
        }
    }

    fn step_ids(&mut self, m: &Manifest) {
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        for step in m.all_steps() {
            let field = format!("{}.id", step.field);
            if !is_simple_name(&step.id) {
                self.error(step.pos, &field, format!("`{}` is not a valid step id", step.id))
                    .hint = Some("use letters, digits, `.`, `_` and `-`, at most 64 characters".into());
            }
            if let Some(first) = seen.insert(&step.id, step.pos) {
                self.error(
                    step.pos,
                    &field,
                    format!("duplicate step id `{}` (first used at line {})", step.id, first.line),
                )
                .hint = Some("step ids are unique across the whole pack, nested steps included".into());
            }
            self.all_ids.insert(step.id.clone());
        }
    }

    fn step(&mut self, step: &Step, scope: Scope) {
        if let Some(when) = &step.when {
            self.template(when, scope, true);
        }
        for t in step.env.values() {
            self.template(t, scope, false);
        }
        for (name, path) in &step.outputs {
            if normalise(path).is_none() {
                self.error(
                    step.pos,
                    &format!("{}.outputs.{name}", step.field),
                    format!("output path `{path}` leaves the workspace"),
                )
                .hint = Some("outputs are files relative to the step's workspace".into());
            }
        }
        for (i, host) in step.network.iter().enumerate() {
            if !is_host(host) {
                self.error(
                    step.pos,
                    &format!("{}.network[{i}]", step.field),
                    format!("`{host}` is not a host name"),
                );
            }
        }
        if !step.outputs.is_empty() && !matches!(step.kind, StepKind::Run(_)) {
            self.error(
                step.pos,
                &format!("{}.outputs", step.field),
                "only run steps can declare outputs",
            );
        }
        match &step.kind {
            StepKind::Run(Run::Shell { script }) => self.template(script, scope, false),
            StepKind::Run(Run::Exec { argv }) => argv.iter().for_each(|a| self.template(a, scope, false)),
            StepKind::Run(Run::BundleIngest { path, checksum }) => {
                self.template(path, scope, false);
                self.template(checksum, scope, false);
                if !expr::is_template(&checksum.src) && !is_sha256_hex(&checksum.src) {
                    self.error(
                        checksum.pos,
                        &checksum.field,
                        "checksumSha256 must be 64 hexadecimal digits",
                    );
                }
            }
            StepKind::Parallel(p) => {
                for child in &p.steps {
                    // Siblings run at the same time: none of them is earlier than another.
                    self.step(child, scope);
                }
            }
            StepKind::Map(map) => {
                if let MapItems::Expr(items) = &map.items {
                    self.template(
                        items,
                        Scope {
                            plan_time: true,
                            ..scope
                        },
                        true,
                    );
                }
                self.step(&map.step, Scope { in_map: true, ..scope });
            }
            StepKind::Approval(gate) => {
                if !self.approvals.contains(&gate.id) {
                    let hint = match did_you_mean(&gate.id, self.approvals.iter().map(String::as_str)) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None if self.approvals.is_empty() => "declare it under spec.approvals".to_string(),
                        None => format!("declared approvals: {}", self.approvals.join(", ")),
                    };
                    let field = format!("{}.gate.approval.id", step.field);
                    self.error(
                        gate.id_pos,
                        &field,
                        format!("gate names approval `{}`, which the pack does not declare", gate.id),
                    )
                    .hint = Some(hint);
                }
                if let Some(m) = &gate.message {
                    self.template(m, scope, false);
                }
            }
            StepKind::Policy(policy) => {
                if let Some(e) = &policy.expr {
                    self.template(e, scope, true);
                }
                if let Some(r) = &policy.rego {
                    self.rego_file(r, policy.query.as_ref());
                }
                if let Some(m) = &policy.message {
                    self.template(m, scope, false);
                }
            }
        }
    }

    /// Syntax and references of one template (`expression`: a `{{ expr }}` field).
    fn template(&mut self, t: &Tpl, scope: Scope, expression: bool) {
        if !expr::is_template(&t.src) && !expression {
            return;
        }
        let refs = if expression {
            expr::expression_refs(&t.src)
        } else {
            expr::template_refs(&t.src)
        };
        let refs = match refs {
            Ok(r) => r,
            Err(msg) => {
                self.error(t.pos, &t.field, msg);
                return;
            }
        };
        for r in refs {
            if let Err((msg, hint)) = self.reference(&r, scope) {
                let d = self.error(t.pos, &t.field, msg);
                d.hint = hint;
            }
        }
    }

    fn reference(&self, r: &str, scope: Scope) -> Result<(), (String, Option<String>)> {
        let mut parts = r.split('.');
        let root = parts.next().unwrap_or_default();
        match root {
            "inputs" => match parts.next() {
                Some(name) if !self.inputs.contains(name) => Err((
                    format!("unknown input `{name}`"),
                    Some(match did_you_mean(name, self.inputs.iter().map(String::as_str)) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "declare it under spec.inputs".into(),
                    }),
                )),
                _ => Ok(()),
            },
            "steps" => {
                let Some(id) = parts.next() else {
                    return Ok(());
                };
                if scope.plan_time {
                    return Err((
                        format!("`steps.{id}` is not known when the run is planned"),
                        Some("this field may only read inputs".into()),
                    ));
                }
                if !self.all_ids.contains(id) {
                    let hint = did_you_mean(id, self.all_ids.iter().map(String::as_str))
                        .map(|s| format!("did you mean `{s}`?"));
                    return Err((format!("unknown step `{id}`"), hint));
                }
                if let Some(map) = map_of_template(self.steps, id) {
                    return Err((
                        format!(
                            "`{id}` is the template of map `{}`; it has no outputs of its own",
                            map.id
                        ),
                        Some(format!(
                            "each item's step is `{}[<index>]::{id}`, e.g. steps['{}[0]::{id}'].outputs",
                            map.id, map.id
                        )),
                    ));
                }
                if !scope.earlier.iter().any(|e| e == id) {
                    return Err((
                        format!("step `{id}` does not run before this step, so its outputs are not available"),
                        None,
                    ));
                }
                match parts.next() {
                    None | Some("outputs") => Ok(()),
                    Some(other) => Err((
                        format!("unknown step attribute `{other}`"),
                        Some(format!("write steps.{id}.outputs.<key>")),
                    )),
                }
            }
            "item" if scope.in_map => Ok(()),
            "item" => Err(("`item` is only available inside a map step".into(), None)),
            "secrets" => Err((
                "secrets are not available to templates".into(),
                Some("a step reads them from its environment as $STELLA_SECRET_<NAME>".into()),
            )),
            other => Err((
                format!("unknown variable `{other}`"),
                Some(
                    if scope.in_map {
                        "available: inputs, steps, item"
                    } else {
                        "available: inputs, steps"
                    }
                    .into(),
                ),
            )),
        }
    }
}

/// Ids whose outputs later steps can read as `steps.<id>`: a map's template step is not one
/// of them (its children are `<map>[<i>]::<id>`).
fn addressable_ids(step: &Step) -> Vec<String> {
    let mut out = vec![step.id.clone()];
    if let StepKind::Parallel(p) = &step.kind {
        out.extend(p.steps.iter().flat_map(addressable_ids));
    }
    out
}

/// The map whose template step (or a step nested in it) has this id, if any.
fn map_of_template<'m>(steps: &'m [Step], id: &str) -> Option<&'m Step> {
    steps.iter().find_map(|s| match &s.kind {
        StepKind::Map(m) if m.step.walk().iter().any(|t| t.id == id) => Some(s),
        StepKind::Parallel(p) => map_of_template(&p.steps, id),
        _ => None,
    })
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_host(s: &str) -> bool {
    let host = s
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
        .map_or(s, |(h, _)| h);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        })
}
