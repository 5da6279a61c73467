//! Decoding a manifest's steps: the four kinds (run, parallel, map, gate), what every step
//! may carry (env, outputs, timeout, retries) and the retry policy, each problem located by
//! field path. Whether references and ids make sense across steps is `check`'s.

use std::collections::BTreeMap;

use crate::diag::did_you_mean;
use crate::yaml::decode::{Decoder, Obj, Unknown};
use crate::yaml::{Key, Node, Value};

use super::values::{duration, is_simple_name, opt_tpl, tpl};
use super::*;

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
const POLICY_GATE_FIELDS: &[&str] = &["expr", "rego", "query", "failAction", "message"];
const RETRIES_FIELDS: &[&str] = &["maxAttempts", "backoff"];

pub(super) fn decode_retries(d: &mut Decoder, node: &Node, path: &str) -> Option<Retries> {
    let o = d.obj(node, path, RETRIES_FIELDS)?;
    let max_attempts = d.uint(&o, "maxAttempts", 1, 100);
    if o.get("maxAttempts").is_none() {
        d.req(&o, "maxAttempts");
    }
    Some(Retries {
        max_attempts: max_attempts?,
        backoff_ms: duration(d, &o, "backoff").unwrap_or(0),
    })
}

pub(super) fn decode_step(d: &mut Decoder, node: &Node, path: String) -> Option<Step> {
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
    let unknown = if kinds.is_empty() {
        Unknown::SuggestOr("a step's kind is one of run, parallel, map, gate")
    } else {
        Unknown::SuggestOrList
    };
    for (key, _) in entries {
        if !STEP_FIELDS.contains(&key.name.as_str()) {
            d.unknown_field(key, &path, STEP_FIELDS, unknown);
        }
    }
    let o = Obj::new(node, &path);
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
    let when = opt_tpl(d, &o, "when");
    let timeout_ms = duration(d, &o, "timeout");
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
        } else if let Some(t) = tpl(d, v, &field) {
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
                script: d.req(&w, "script").and_then(|n| tpl(d, n, &w.path("script")))?,
            })
        }
        "builtin:exec" => {
            let w = d.obj(with?, &with_path, &["argv"])?;
            let argv_node = d.req(&w, "argv")?;
            let argv = d.list(argv_node, &w.path("argv"), |d, n, f| tpl(d, n, &f));
            if argv.is_empty() && argv_node.as_seq().is_some() {
                d.error(argv_node.pos, &w.path("argv"), "argv needs at least the program to run");
                return None;
            }
            Some(Run::Exec { argv })
        }
        "builtin:bundle.ingest" => {
            let w = d.obj(with?, &with_path, &["path", "checksumSha256"])?;
            let path = d.req(&w, "path").and_then(|n| tpl(d, n, &w.path("path")));
            let checksum = d
                .req(&w, "checksumSha256")
                .and_then(|n| tpl(d, n, &w.path("checksumSha256")));
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
                message: opt_tpl(d, &a, "message"),
            }))
        }
        (None, Some(p)) => {
            let p = d.obj(p, &o.path("policy"), POLICY_GATE_FIELDS)?;
            let expr = opt_tpl(d, &p, "expr");
            let rego = opt_tpl(d, &p, "rego");
            let query = opt_tpl(d, &p, "query");
            let form_ok = match (&expr, &rego) {
                (Some(_), None) => {
                    if let Some(q) = &query {
                        d.error(q.pos, &q.field, "`query` belongs to a `rego` policy").hint =
                            Some("drop it, or name a .rego file with rego:".into());
                    }
                    query.is_none()
                }
                (None, Some(_)) => true,
                (Some(_), Some(_)) => {
                    d.error(
                        p.pos(),
                        &o.path("policy"),
                        "a policy is either `expr` or `rego`, not both",
                    );
                    false
                }
                (None, None) => {
                    if p.get("expr").is_none() && p.get("rego").is_none() {
                        d.error(p.pos(), &o.path("policy"), "a policy gate needs `expr` or `rego`")
                            .hint = Some("add expr: \"{{ ... }}\" or rego: policies/<name>.rego".into());
                    }
                    false
                }
            };
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
            if !form_ok {
                return None;
            }
            Some(StepKind::Policy(PolicyGate {
                expr,
                rego,
                query,
                fail_action: fail_action?,
                message: opt_tpl(d, &p, "message"),
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
