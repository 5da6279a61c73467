//! Turns the YAML tree of a pack manifest into the typed `Manifest`: the top level, metadata,
//! inputs, secrets and approvals, through the located decoder of `yaml::decode`, so every
//! shape problem carries its field path and position. Steps are `steps`'s; cross-field rules
//! (references, duplicates, files) live in `check`.

use crate::code::Code;
use crate::diag::{Diagnostics, did_you_mean};
use crate::yaml::decode::{Decoder, Obj};
use crate::yaml::{Node, Value};

use super::steps::{decode_retries, decode_step};
use super::values::{duration, opt_tpl};
use super::*;

const TOP_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const METADATA_FIELDS: &[&str] = &["name", "version", "description", "labels"];
const SPEC_FIELDS: &[&str] = &["inputs", "secrets", "approvals", "steps", "failure"];
const INPUT_FIELDS: &[&str] = &["name", "type", "required", "default", "schema", "description"];
const SECRET_FIELDS: &[&str] = &["name", "scope", "required", "description", "as"];
const APPROVAL_FIELDS: &[&str] = &[
    "id",
    "grants",
    "requiredCount",
    "expiresAfter",
    "reason",
    "allowSelfApproval",
];
const FAILURE_FIELDS: &[&str] = &["retries"];

/// Decodes the whole manifest. `None` when the top level is too broken to go on.
pub(super) fn decode(file: &str, root: &Node) -> (Option<Manifest>, Diagnostics) {
    let mut d = Decoder::new(file, Code::PackInvalid);
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
    let as_file = match d.opt_string(&o, "as").as_deref() {
        None | Some("env") => false,
        Some("file") => true,
        Some(other) => {
            d.error(
                o.pos(),
                &o.path("as"),
                format!("`as: {other}`: expected `env` or `file`"),
            );
            false
        }
    };
    Some(SecretDecl {
        name: d.req_string(&o, "name")?,
        scope: d.opt_string(&o, "scope"),
        required: d.boolean(&o, "required", true),
        description: d.opt_string(&o, "description"),
        as_file,
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
        expires_after_ms: duration(d, &o, "expiresAfter"),
        reason: opt_tpl(d, &o, "reason"),
        allow_self_approval: d.boolean(&o, "allowSelfApproval", false),
        pos: o.pos(),
        field: path,
    })
}
