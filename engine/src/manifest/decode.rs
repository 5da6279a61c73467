//! Turns the YAML tree of a pack manifest into the typed `Manifest`, reporting every shape
//! problem (unknown or missing fields, wrong types, bad durations) with its field path and
//! position. Cross-field rules (references, duplicates, files) live in `check`.

use std::collections::BTreeMap;

use crate::code::Code;
use crate::diag::{Diagnostic, Diagnostics, Pos, did_you_mean};
use crate::duration;
use crate::yaml::{Key, Node, Value};

use super::*;

const TOP_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const METADATA_FIELDS: &[&str] = &["name", "version", "description", "labels"];
const SPEC_FIELDS: &[&str] = &["inputs", "secrets", "approvals", "steps", "failure"];
const INPUT_FIELDS: &[&str] = &["name", "type", "required", "default", "schema", "description"];
const SECRET_FIELDS: &[&str] = &["name", "scope", "required", "description"];
const APPROVAL_FIELDS: &[&str] = &["id", "grants", "requiredCount", "expiresAfter", "reason"];
const STEP_KINDS: &[&str] = &["run", "parallel", "map", "gate"];
const STEP_FIELDS: &[&str] = &[
    "id",
    "name",
    "run",
    "parallel",
    "map",
    "gate",
    "when",
    "timeout",
    "retries",
    "continueOnError",
    "env",
    "outputs",
    "network",
];
const RUN_FIELDS: &[&str] = &["uses", "with"];
const PARALLEL_FIELDS: &[&str] = &["steps", "maxParallel", "continueOnError"];
const MAP_FIELDS: &[&str] = &["items", "step", "maxParallel"];
const GATE_FIELDS: &[&str] = &["approval", "policy"];
const APPROVAL_GATE_FIELDS: &[&str] = &["id", "message"];
const POLICY_GATE_FIELDS: &[&str] = &["expr", "failAction", "message"];
const RETRIES_FIELDS: &[&str] = &["maxAttempts", "backoff"];
const FAILURE_FIELDS: &[&str] = &["retries"];

/// Field-collecting decoder for one file.
pub(super) struct Decoder<'f> {
    file: &'f str,
    pub diags: Diagnostics,
}

/// A mapping being decoded, with the path that names it.
pub(super) struct Obj<'n> {
    node: &'n Node,
    path: String,
}

impl<'n> Obj<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.node.get(key)
    }

    pub fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn pos(&self) -> Pos {
        self.node.pos
    }
}

impl<'f> Decoder<'f> {
    pub fn new(file: &'f str) -> Self {
        Decoder {
            file,
            diags: Diagnostics::default(),
        }
    }

    pub fn error(&mut self, pos: Pos, field: &str, message: impl Into<String>) -> &mut Diagnostic {
        self.diags
            .push(Diagnostic::new(Code::PackInvalid, self.file, pos, field, message));
        self.diags.0.last_mut().expect("just pushed")
    }

    fn type_error(&mut self, node: &Node, field: &str, expected: &str) {
        self.error(node.pos, field, format!("expected {expected}, found {}", node.kind()));
    }

    /// A mapping with only `allowed` keys; unknown keys are reported with a suggestion.
    pub fn obj<'n>(&mut self, node: &'n Node, path: &str, allowed: &[&str]) -> Option<Obj<'n>> {
        let Some(entries) = node.as_map() else {
            self.type_error(node, path, "a mapping");
            return None;
        };
        for (key, _) in entries {
            if !allowed.contains(&key.name.as_str()) {
                self.unknown_field(key, path, allowed);
            }
        }
        Some(Obj {
            node,
            path: path.to_string(),
        })
    }

    fn unknown_field(&mut self, key: &Key, path: &str, allowed: &[&str]) {
        let field = if path.is_empty() {
            key.name.clone()
        } else {
            format!("{path}.{}", key.name)
        };
        let hint = match did_you_mean(&key.name, allowed.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("expected one of: {}", allowed.join(", ")),
        };
        self.error(key.pos, &field, format!("unknown field `{}`", key.name))
            .hint = Some(hint);
    }

    /// A required field: reports it missing at the mapping's position.
    pub fn req<'n>(&mut self, obj: &Obj<'n>, key: &str) -> Option<&'n Node> {
        let found = obj.get(key);
        if found.is_none() {
            self.error(obj.pos(), &obj.path(key), format!("missing required field `{key}`"));
        }
        found
    }

    pub fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            // Integers and booleans written where text is wanted (`argv: [true]`, `version: 2`)
            // read back as exactly what was written (YAML 1.2: no `yes`/`no`/`on`, no octal).
            // A float may not (`1.10` is 1.1), so it must be quoted.
            Value::Int(i) => Some(i.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Float(_) => {
                self.error(node.pos, field, "expected a string, found a number").hint =
                    Some("quote it, e.g. \"1.10\", so it is kept exactly as written".into());
                None
            }
            _ => {
                self.type_error(node, field, "a string");
                None
            }
        }
    }

    pub fn opt_string(&mut self, obj: &Obj, key: &str) -> Option<String> {
        obj.get(key).and_then(|n| self.string(n, &obj.path(key)))
    }

    pub fn req_string(&mut self, obj: &Obj, key: &str) -> Option<String> {
        self.req(obj, key).and_then(|n| self.string(n, &obj.path(key)))
    }

    pub fn tpl(&mut self, node: &Node, field: &str) -> Option<Tpl> {
        self.string(node, field).map(|src| Tpl {
            src,
            pos: node.pos,
            field: field.to_string(),
        })
    }

    pub fn opt_tpl(&mut self, obj: &Obj, key: &str) -> Option<Tpl> {
        obj.get(key).and_then(|n| self.tpl(n, &obj.path(key)))
    }

    pub fn boolean(&mut self, obj: &Obj, key: &str, default: bool) -> bool {
        match obj.get(key) {
            None => default,
            Some(Node {
                value: Value::Bool(b), ..
            }) => *b,
            Some(n) => {
                self.type_error(n, &obj.path(key), "true or false");
                default
            }
        }
    }

    /// A whole number in `min..=max`.
    pub fn uint(&mut self, obj: &Obj, key: &str, min: u32, max: u32) -> Option<u32> {
        let node = obj.get(key)?;
        match node.value {
            Value::Int(i) if i >= i64::from(min) && i <= i64::from(max) => Some(i as u32),
            Value::Int(i) => {
                self.error(node.pos, &obj.path(key), format!("{i} is out of range {min}..={max}"));
                None
            }
            _ => {
                self.type_error(node, &obj.path(key), "a whole number");
                None
            }
        }
    }

    pub fn duration(&mut self, obj: &Obj, key: &str) -> Option<u64> {
        let node = obj.get(key)?;
        let text = match &node.value {
            Value::Str(s) => s.clone(),
            _ => {
                self.type_error(node, &obj.path(key), "a duration such as 30s, 10m or PT4H");
                return None;
            }
        };
        match duration::parse_ms(&text) {
            Ok(ms) => Some(ms),
            Err(msg) => {
                self.error(node.pos, &obj.path(key), msg).hint =
                    Some("write e.g. 500ms, 30s, 10m, 1h30m or PT4H".into());
                None
            }
        }
    }

    /// A list, each element decoded by `each` with its indexed path.
    pub fn list<'n, T>(
        &mut self,
        node: &'n Node,
        field: &str,
        mut each: impl FnMut(&mut Self, &'n Node, String) -> Option<T>,
    ) -> Vec<T> {
        let Some(items) = node.as_seq() else {
            self.type_error(node, field, "a list");
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| each(self, n, format!("{field}[{i}]")))
            .collect()
    }

    pub fn string_list(&mut self, node: &Node, field: &str) -> Vec<String> {
        self.list(node, field, |d, n, f| d.string(n, &f))
    }
}

/// Decodes the whole manifest. `None` when the top level is too broken to go on.
pub(super) fn decode(file: &str, root: &Node) -> (Option<Manifest>, Diagnostics) {
    let mut d = Decoder::new(file);
    let Some(top) = d.obj(root, "", TOP_FIELDS) else {
        return (None, d.diags);
    };
    expect_literal(&mut d, &top, "apiVersion", "stella/v1");
    expect_literal(&mut d, &top, "kind", "TaskPack");
    let metadata = d
        .req(&top, "metadata")
        .and_then(|n| d.obj(n, "metadata", METADATA_FIELDS))
        .map(|m| Metadata {
            name: d.req_string(&m, "name").unwrap_or_default(),
            version: d.req_string(&m, "version").unwrap_or_default(),
            description: d.opt_string(&m, "description"),
            name_pos: m.get("name").map_or(m.pos(), |n| n.pos),
            version_pos: m.get("version").map_or(m.pos(), |n| n.pos),
        });
    let spec = d.req(&top, "spec").and_then(|n| d.obj(n, "spec", SPEC_FIELDS));
    let (Some(metadata), Some(spec)) = (metadata, spec) else {
        return (None, d.diags);
    };
    let inputs = match spec.get("inputs") {
        None | Some(Node { value: Value::Null, .. }) => Inputs::List(Vec::new()),
        Some(
            n @ Node {
                value: Value::Map(_), ..
            },
        ) => match d.obj(n, "spec.inputs", &["schema"]) {
            Some(o) => match d.req_string(&o, "schema") {
                Some(path) => Inputs::Schema {
                    path,
                    pos: o.get("schema").map_or(o.pos(), |s| s.pos),
                },
                None => Inputs::List(Vec::new()),
            },
            None => Inputs::List(Vec::new()),
        },
        Some(n) => Inputs::List(d.list(n, "spec.inputs", decode_input)),
    };
    let secrets = spec
        .get("secrets")
        .map(|n| d.list(n, "spec.secrets", decode_secret))
        .unwrap_or_default();
    let approvals = spec
        .get("approvals")
        .map(|n| d.list(n, "spec.approvals", decode_approval))
        .unwrap_or_default();
    let steps = match d.req(&spec, "steps") {
        Some(n) => {
            let steps = d.list(n, "spec.steps", decode_step);
            if steps.is_empty() && n.as_seq().is_some_and(<[Node]>::is_empty) {
                d.error(n.pos, "spec.steps", "a pack needs at least one step");
            }
            steps
        }
        None => Vec::new(),
    };
    let failure = spec
        .get("failure")
        .and_then(|n| d.obj(n, "spec.failure", FAILURE_FIELDS))
        .and_then(|f| {
            f.get("retries")
                .and_then(|n| decode_retries(&mut d, n, &f.path("retries")))
        });
    let manifest = Manifest {
        file: file.to_string(),
        metadata,
        inputs,
        secrets,
        approvals,
        steps,
        failure,
        content_sha256: String::new(),
    };
    (Some(manifest), d.diags)
}

fn expect_literal(d: &mut Decoder, obj: &Obj, key: &str, want: &str) {
    if let Some(got) = d.req_string(obj, key)
        && got != want
    {
        let pos = obj.get(key).map_or(obj.pos(), |n| n.pos);
        d.error(pos, key, format!("expected `{want}`, found `{got}`"));
    }
}

fn decode_input(d: &mut Decoder, node: &Node, path: String) -> Option<InputDecl> {
    let o = d.obj(node, &path, INPUT_FIELDS)?;
    let name = d.req_string(&o, "name")?;
    let ty = match o.get("type") {
        None => None,
        Some(n) => {
            let s = d.string(n, &o.path("type"))?;
            let ty = InputType::parse(&s);
            if ty.is_none() {
                let hint = did_you_mean(&s, InputType::NAMES).map_or_else(
                    || format!("expected one of: {}", InputType::NAMES.join(", ")),
                    |m| format!("did you mean `{m}`?"),
                );
                d.error(n.pos, &o.path("type"), format!("unknown input type `{s}`"))
                    .hint = Some(hint);
            }
            ty
        }
    };
    let schema = d.opt_string(&o, "schema");
    if ty.is_none() && schema.is_none() && o.get("type").is_none() {
        d.error(o.pos(), &o.path("type"), "missing required field `type`").hint =
            Some("give a `type` (string, number, integer, boolean, array, object) or a `schema` file".into());
    }
    Some(InputDecl {
        name,
        ty,
        required: d.boolean(&o, "required", false),
        default: o.get("default").map(Node::to_json),
        schema,
        description: d.opt_string(&o, "description"),
        pos: o.pos(),
        field: path,
    })
}

fn decode_secret(d: &mut Decoder, node: &Node, path: String) -> Option<SecretDecl> {
    let o = d.obj(node, &path, SECRET_FIELDS)?;
    Some(SecretDecl {
        name: d.req_string(&o, "name")?,
        scope: d.opt_string(&o, "scope"),
        required: d.boolean(&o, "required", true),
        description: d.opt_string(&o, "description"),
        pos: o.pos(),
    })
}

fn decode_approval(d: &mut Decoder, node: &Node, path: String) -> Option<ApprovalDecl> {
    let o = d.obj(node, &path, APPROVAL_FIELDS)?;
    let id = d.req_string(&o, "id")?;
    let grants = d
        .req(&o, "grants")
        .map(|n| d.string_list(n, &o.path("grants")))
        .unwrap_or_default();
    if let Some(n) = o.get("grants")
        && grants.is_empty()
        && n.as_seq().is_some()
    {
        d.error(n.pos, &o.path("grants"), "an approval needs at least one grant");
    }
    Some(ApprovalDecl {
        id,
        grants,
        required_count: d.uint(&o, "requiredCount", 1, 100).unwrap_or(1),
        expires_after_ms: d.duration(&o, "expiresAfter"),
        reason: d.opt_tpl(&o, "reason"),
        pos: o.pos(),
        field: path,
    })
}

fn decode_retries(d: &mut Decoder, node: &Node, path: &str) -> Option<Retries> {
    let o = d.obj(node, path, RETRIES_FIELDS)?;
    let max_attempts = d.uint(&o, "maxAttempts", 1, 100);
    if o.get("maxAttempts").is_none() {
        d.req(&o, "maxAttempts");
    }
    Some(Retries {
        max_attempts: max_attempts?,
        backoff_ms: d.duration(&o, "backoff").unwrap_or(0),
    })
}

fn decode_step(d: &mut Decoder, node: &Node, path: String) -> Option<Step> {
    let Some(entries) = node.as_map() else {
        d.type_error(
            node,
            &path,
            "a step (a mapping with `id` and one of run, parallel, map, gate)",
        );
        return None;
    };
    let kinds: Vec<&Key> = entries
        .iter()
        .map(|(k, _)| k)
        .filter(|k| STEP_KINDS.contains(&k.name.as_str()))
        .collect();
    // Unknown keys get a hint aimed at step kinds when they look like one.
    for (key, _) in entries {
        if !STEP_FIELDS.contains(&key.name.as_str()) {
            let field = format!("{path}.{}", key.name);
            let hint = match did_you_mean(&key.name, STEP_FIELDS.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None if kinds.is_empty() => "a step's kind is one of run, parallel, map, gate".to_string(),
                None => format!("expected one of: {}", STEP_FIELDS.join(", ")),
            };
            d.error(key.pos, &field, format!("unknown field `{}`", key.name)).hint = Some(hint);
        }
    }
    let o = Obj {
        node,
        path: path.clone(),
    };
    let id = d.req_string(&o, "id");
    let kind = match kinds.as_slice() {
        [] => {
            d.error(node.pos, &path, "step has no kind").hint = Some("add one of run, parallel, map or gate".into());
            None
        }
        [k] => {
            let field = o.path(&k.name);
            let body = o.get(&k.name).expect("key is present");
            match k.name.as_str() {
                "run" => decode_run(d, body, &field).map(StepKind::Run),
                "parallel" => decode_parallel(d, body, &field).map(StepKind::Parallel),
                "map" => decode_map(d, body, &field).map(StepKind::Map),
                _ => decode_gate(d, body, &field),
            }
        }
        [_, second, ..] => {
            let names: Vec<&str> = kinds.iter().map(|k| k.name.as_str()).collect();
            d.error(
                second.pos,
                &path,
                format!("step has more than one kind ({})", names.join(", ")),
            )
            .hint = Some("split it into one step per kind".into());
            None
        }
    };
    let env = o
        .get("env")
        .map(|n| decode_env(d, n, &o.path("env")))
        .unwrap_or_default();
    let outputs = o
        .get("outputs")
        .map(|n| decode_outputs(d, n, &o.path("outputs")))
        .unwrap_or_default();
    let network = o
        .get("network")
        .map(|n| d.string_list(n, &o.path("network")))
        .unwrap_or_default();
    let name = d.opt_string(&o, "name");
    let when = d.opt_tpl(&o, "when");
    let timeout_ms = d.duration(&o, "timeout");
    if timeout_ms == Some(0) {
        let pos = o.get("timeout").map_or(node.pos, |n| n.pos);
        d.error(pos, &o.path("timeout"), "timeout must be longer than 0s");
    }
    let retries = o.get("retries").and_then(|n| decode_retries(d, n, &o.path("retries")));
    let continue_on_error = d.boolean(&o, "continueOnError", false);
    let step = Step {
        id: id?,
        name,
        when,
        timeout_ms,
        retries,
        continue_on_error,
        env,
        outputs,
        network,
        kind: kind?,
        pos: node.pos,
        field: path,
    };
    Some(step)
}

fn decode_env(d: &mut Decoder, node: &Node, path: &str) -> BTreeMap<String, Tpl> {
    let Some(entries) = node.as_map() else {
        d.type_error(node, path, "a mapping of variable names to values");
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let field = format!("{path}.{}", k.name);
        let valid = !k.name.is_empty()
            && k.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            d.error(
                k.pos,
                &field,
                format!("`{}` is not a valid environment variable name", k.name),
            )
            .hint = Some("use letters, digits and _, not starting with a digit".into());
        } else if k.name.starts_with("STELLA_") {
            d.error(k.pos, &field, "names starting with STELLA_ are reserved for the runner");
        } else if let Some(t) = d.tpl(v, &field) {
            out.insert(k.name.clone(), t);
        }
    }
    out
}

fn decode_outputs(d: &mut Decoder, node: &Node, path: &str) -> BTreeMap<String, String> {
    let Some(entries) = node.as_map() else {
        d.type_error(node, path, "a mapping of artifact names to file paths");
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let field = format!("{path}.{}", k.name);
        if !is_simple_name(&k.name) {
            d.error(k.pos, &field, format!("`{}` is not a valid artifact name", k.name))
                .hint = Some("use letters, digits, `.`, `_` and `-`".into());
            continue;
        }
        if let Some(p) = d.string(v, &field) {
            out.insert(k.name.clone(), p);
        }
    }
    out
}

/// Names of artifacts and ids: a letter or digit, then letters, digits, `.`, `_`, `-`.
pub(super) fn is_simple_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && s.len() <= 64
}

fn decode_run(d: &mut Decoder, node: &Node, path: &str) -> Option<Run> {
    let o = d.obj(node, path, RUN_FIELDS)?;
    let uses_node = d.req(&o, "uses")?;
    let uses = d.string(uses_node, &o.path("uses"))?;
    let with_path = o.path("with");
    let with = match o.get("with") {
        Some(n) => Some(n),
        None => {
            d.error(o.pos(), &with_path, "missing required field `with`");
            None
        }
    };
    match uses.as_str() {
        "builtin:shell" => {
            let w = d.obj(with?, &with_path, &["script"])?;
            Some(Run::Shell {
                script: d.req(&w, "script").and_then(|n| d.tpl(n, &w.path("script")))?,
            })
        }
        "builtin:exec" => {
            let w = d.obj(with?, &with_path, &["argv"])?;
            let argv_node = d.req(&w, "argv")?;
            let argv = d.list(argv_node, &w.path("argv"), |d, n, f| d.tpl(n, &f));
            if argv.is_empty() && argv_node.as_seq().is_some() {
                d.error(argv_node.pos, &w.path("argv"), "argv needs at least the program to run");
                return None;
            }
            Some(Run::Exec { argv })
        }
        "builtin:bundle.ingest" => {
            let w = d.obj(with?, &with_path, &["path", "checksumSha256"])?;
            let path = d.req(&w, "path").and_then(|n| d.tpl(n, &w.path("path")));
            let checksum = d
                .req(&w, "checksumSha256")
                .and_then(|n| d.tpl(n, &w.path("checksumSha256")));
            Some(Run::BundleIngest {
                path: path?,
                checksum: checksum?,
            })
        }
        other => {
            let hint = match did_you_mean(other, Run::BUILTINS) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("expected one of: {}", Run::BUILTINS.join(", ")),
            };
            d.error(uses_node.pos, &o.path("uses"), format!("unknown step runner `{other}`"))
                .hint = Some(hint);
            None
        }
    }
}

fn decode_parallel(d: &mut Decoder, node: &Node, path: &str) -> Option<Parallel> {
    let o = d.obj(node, path, PARALLEL_FIELDS)?;
    let steps_node = d.req(&o, "steps")?;
    let steps = d.list(steps_node, &o.path("steps"), decode_step);
    if steps_node.as_seq().is_some_and(<[Node]>::is_empty) {
        d.error(
            steps_node.pos,
            &o.path("steps"),
            "a parallel step needs at least one step",
        );
    }
    Some(Parallel {
        max_parallel: d.uint(&o, "maxParallel", 1, 10_000).unwrap_or(0),
        continue_on_error: d.boolean(&o, "continueOnError", false),
        steps,
    })
}

fn decode_map(d: &mut Decoder, node: &Node, path: &str) -> Option<MapStep> {
    let o = d.obj(node, path, MAP_FIELDS)?;
    let items_node = d.req(&o, "items");
    let items = items_node.and_then(|n| match &n.value {
        Value::Seq(items) => Some(MapItems::List(items.iter().map(Node::to_json).collect())),
        Value::Str(s) if crate::expr::is_template(s) => Some(MapItems::Expr(Tpl {
            src: s.clone(),
            pos: n.pos,
            field: o.path("items"),
        })),
        _ => {
            d.error(
                n.pos,
                &o.path("items"),
                format!(
                    "map items must be a list or an expression giving a list, found {}",
                    n.kind()
                ),
            )
            .hint = Some("write e.g. items: \"{{ inputs.targets }}\" or items: [a, b]".into());
            None
        }
    });
    let step = d.req(&o, "step").and_then(|n| decode_step(d, n, o.path("step")));
    let max_parallel = d.uint(&o, "maxParallel", 1, 10_000).unwrap_or(0);
    Some(MapStep {
        items: items?,
        max_parallel,
        step: Box::new(step?),
    })
}

fn decode_gate(d: &mut Decoder, node: &Node, path: &str) -> Option<StepKind> {
    let o = d.obj(node, path, GATE_FIELDS)?;
    match (o.get("approval"), o.get("policy")) {
        (Some(a), None) => {
            let a = d.obj(a, &o.path("approval"), APPROVAL_GATE_FIELDS)?;
            let id_node = d.req(&a, "id")?;
            Some(StepKind::Approval(ApprovalGate {
                id: d.string(id_node, &a.path("id"))?,
                id_pos: id_node.pos,
                message: d.opt_tpl(&a, "message"),
            }))
        }
        (None, Some(p)) => {
            let p = d.obj(p, &o.path("policy"), POLICY_GATE_FIELDS)?;
            let expr = d.req(&p, "expr").and_then(|n| d.tpl(n, &p.path("expr")));
            let fail_action = match p.get("failAction") {
                None => Some(FailAction::Halt),
                Some(n) => match d.string(n, &p.path("failAction")).as_deref() {
                    Some("halt") => Some(FailAction::Halt),
                    Some("continue") => Some(FailAction::Continue),
                    Some(other) => {
                        d.error(n.pos, &p.path("failAction"), format!("unknown failAction `{other}`"))
                            .hint = Some("expected halt or continue".into());
                        None
                    }
                    None => None,
                },
            };
            Some(StepKind::Policy(PolicyGate {
                expr: expr?,
                fail_action: fail_action?,
                message: d.opt_tpl(&p, "message"),
            }))
        }
        (Some(_), Some(_)) => {
            d.error(o.pos(), path, "a gate is either an approval or a policy, not both");
            None
        }
        (None, None) => {
            d.error(o.pos(), path, "gate has no kind").hint =
                Some("add approval: {id: ...} or policy: {expr: ...}".into());
            None
        }
    }
}
