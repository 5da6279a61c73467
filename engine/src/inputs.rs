//! Resolving the inputs given to a pack: defaults, declared types, JSON Schema (2020-12)
//! files from the pack. Owns ERR_PACK_INPUT_INVALID; never reads anything outside the pack
//! (schemas cannot fetch remote or local `$ref`s).

use std::path::Path;

use serde_json::{Map, Value as Json};

use crate::code::Code;
use crate::diag::{Diagnostic, Diagnostics, Pos, did_you_mean};
use crate::manifest::{Inputs, Manifest};
use crate::pack::PackFiles;
use crate::schema;
use crate::yaml::{self, Node};

/// Inputs after defaults and checks: what templates see as `inputs`.
pub type Resolved = Map<String, Json>;

/// Reads an inputs file (YAML or JSON) as a located tree.
pub fn read_file(path: &Path) -> Result<Node, Diagnostics> {
    let shown = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| {
        Diagnostic::new(
            Code::PackInputInvalid,
            &shown,
            Pos::UNKNOWN,
            "",
            format!("cannot read inputs file: {e}"),
        )
    })?;
    parse(&shown, &src)
}

/// Parses inputs text (YAML or JSON) under the same limits as manifests.
pub fn parse(shown: &str, src: &str) -> Result<Node, Diagnostics> {
    yaml::parse(shown, src, yaml::Limits::default()).map_err(|mut d| {
        d.code = Code::PackInputInvalid;
        Diagnostics::from(d)
    })
}

/// Applies defaults and checks every given input; `given` is the inputs file's root (or none).
/// `file` names the inputs file in messages.
pub fn resolve(m: &Manifest, files: &PackFiles, given: Option<&Node>, file: &str) -> Result<Resolved, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut err = |pos: Pos, field: String, msg: String, hint: Option<String>| {
        let mut d = Diagnostic::new(Code::PackInputInvalid, file, pos, &field, msg);
        d.hint = hint;
        diags.push(d);
    };
    let empty = Vec::new();
    let entries = match given.map(|n| &n.value) {
        None | Some(yaml::Value::Null) => &empty,
        Some(yaml::Value::Map(entries)) => entries,
        Some(_) => {
            let n = given.expect("matched Some");
            err(
                n.pos,
                String::new(),
                format!("inputs must be a mapping of names to values, found {}", n.kind()),
                None,
            );
            return Err(diags);
        }
    };
    let mut out = Map::new();
    match &m.inputs {
        Inputs::List(decls) => {
            for (key, node) in entries {
                if !decls.iter().any(|d| d.name == key.name) {
                    let hint = did_you_mean(&key.name, decls.iter().map(|d| d.name.as_str())).map_or_else(
                        || {
                            format!(
                                "the pack declares: {}",
                                names_or_none(decls.iter().map(|d| d.name.as_str()))
                            )
                        },
                        |s| format!("did you mean `{s}`?"),
                    );
                    err(
                        key.pos,
                        format!("inputs.{}", key.name),
                        format!("unknown input `{}`", key.name),
                        Some(hint),
                    );
                } else if let Some(msg) = nul_byte(&node.to_json()) {
                    err(node.pos, format!("inputs.{}", key.name), msg, None);
                }
            }
            for decl in decls {
                let field = format!("inputs.{}", decl.name);
                let given = entries.iter().find(|(k, _)| k.name == decl.name).map(|(_, n)| n);
                let pos = given.map_or(Pos::UNKNOWN, |n| n.pos);
                // An explicit null counts as not given: `image: ~` must not satisfy `required`.
                let given = given.filter(|n| !matches!(n.value, yaml::Value::Null));
                let value = match (given, &decl.default) {
                    (Some(n), _) => n.to_json(),
                    (None, Some(default)) => default.clone(),
                    (None, None) if decl.required => {
                        let ty = decl.ty.map_or(String::new(), |t| format!(" ({})", t.as_str()));
                        err(
                            pos,
                            field,
                            format!("missing required input `{}`{ty}", decl.name),
                            Some(format!("add `{}: ...` to the inputs file", decl.name)),
                        );
                        continue;
                    }
                    (None, None) => Json::Null,
                };
                if let Some(ty) = decl.ty
                    && !value.is_null()
                    && !ty.accepts(&value)
                {
                    err(
                        pos,
                        field,
                        format!("expected {}, found {}", ty.as_str(), json_kind(&value)),
                        None,
                    );
                    continue;
                }
                if let Some(schema) = &decl.schema {
                    match schema::compile(files, schema) {
                        Ok(validator) => {
                            for e in validator.iter_errors(&value) {
                                let at = e.instance_path().to_string();
                                err(
                                    pos,
                                    format!("{field}{}", pointer_suffix(&at)),
                                    format!("does not match {schema}: {e}"),
                                    None,
                                );
                            }
                        }
                        Err(e) => err(decl.pos, field.clone(), e.to_string(), None),
                    }
                }
                out.insert(decl.name.clone(), value);
            }
        }
        Inputs::Schema { path, .. } => {
            let mut value: Map<String, Json> = entries.iter().map(|(k, n)| (k.name.clone(), n.to_json())).collect();
            match schema::compile(files, path) {
                Ok(validator) => {
                    if let Some(props) = files.json(path).and_then(|s| s.get("properties").cloned()) {
                        for (name, prop) in props.as_object().into_iter().flatten() {
                            if let (false, Some(default)) = (value.contains_key(name), prop.get("default")) {
                                value.insert(name.clone(), default.clone());
                            }
                        }
                    }
                    let instance = Json::Object(value.clone());
                    for e in validator.iter_errors(&instance) {
                        let at = e.instance_path().to_string();
                        let first = at.trim_start_matches('/').split('/').next().unwrap_or_default();
                        let pos = entries
                            .iter()
                            .find(|(k, _)| k.name == first)
                            .map_or(Pos::UNKNOWN, |(_, n)| n.pos);
                        err(
                            pos,
                            format!("inputs{}", pointer_suffix(&at)),
                            format!("does not match {path}: {e}"),
                            None,
                        );
                    }
                    if let Some(msg) = nul_byte(&instance) {
                        err(Pos::UNKNOWN, "inputs".into(), msg, None);
                    }
                }
                Err(e) => err(Pos::UNKNOWN, "inputs".into(), e.to_string(), None),
            }
            out = value;
        }
    }
    diags.into_result(out)
}

fn names_or_none<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.is_empty() { "no inputs".into() } else { v.join(", ") }
}

/// `/a/0` -> `.a[0]`: a JSON pointer as a field-path suffix.
fn pointer_suffix(pointer: &str) -> String {
    pointer
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.chars().all(|c| c.is_ascii_digit()) {
                format!("[{s}]")
            } else {
                format!(".{s}")
            }
        })
        .collect()
}

pub fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// NUL bytes cannot be passed to processes; refuse them at the door.
fn nul_byte(v: &Json) -> Option<String> {
    let bad = match v {
        Json::String(s) => s.contains('\0'),
        Json::Array(a) => return a.iter().find_map(nul_byte),
        Json::Object(o) => {
            return o.iter().find_map(|(k, v)| {
                if k.contains('\0') {
                    Some(String::new())
                } else {
                    nul_byte(v)
                }
            });
        }
        _ => false,
    };
    bad.then(|| "value contains a NUL byte".to_string())
}
