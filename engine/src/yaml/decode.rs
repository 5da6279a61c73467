//! A located decoder: reads a YAML tree into typed values and collects every shape problem
//! (unknown field with a did-you-mean, missing field, wrong type, out of range) as a
//! diagnostic with file, line, field path and the caller's code. Knows no file format: the
//! allowed fields and what each value means belong to the caller (`manifest`, `config`,
//! `request`, `approvals`).

use crate::code::Code;
use crate::diag::{Diagnostic, Diagnostics, Pos, did_you_mean};

use super::{Key, Node, Value};

/// Collects the problems of one file, each under its code.
pub struct Decoder<'f> {
    file: &'f str,
    code: Code,
    /// Whether a wrong type also says what was found ("expected a list, found a string").
    says_found: bool,
    pub diags: Diagnostics,
}

/// A mapping being decoded, with the field path that names it (empty for the root).
pub struct Obj<'n> {
    node: &'n Node,
    path: String,
}

/// How an unknown field is reported: always "unknown field `name`" at the key, then this.
#[derive(Debug, Clone, Copy)]
pub enum Unknown<'a> {
    /// Hint "did you mean `x`?", else "expected one of: a, b, c".
    SuggestOrList,
    /// Hint "did you mean `x`?", else this hint.
    SuggestOr(&'a str),
    /// Hint "did you mean `x`?", else none.
    Suggest,
    /// No hint; the message ends with the allowed fields: "(expected a, b, c)".
    ListInMessage,
}

impl<'n> Obj<'n> {
    /// A mapping whose fields the caller has already checked.
    pub fn new(node: &'n Node, path: &str) -> Obj<'n> {
        Obj {
            node,
            path: path.to_string(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.node.get(key)
    }

    /// The field path of `key` in this mapping.
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
    /// A decoder for `file` whose problems carry `code`.
    pub fn new(file: &'f str, code: Code) -> Self {
        Decoder {
            file,
            code,
            says_found: true,
            diags: Diagnostics::default(),
        }
    }

    /// Wrong types say only what was expected ("expected true or false").
    #[must_use]
    pub fn terse(mut self) -> Self {
        self.says_found = false;
        self
    }

    pub fn error(&mut self, pos: Pos, field: &str, message: impl Into<String>) -> &mut Diagnostic {
        self.diags
            .push(Diagnostic::new(self.code, self.file, pos, field, message));
        self.diags.0.last_mut().expect("just pushed")
    }

    /// "expected …, found a string" at the node ("expected …" only when `terse`).
    pub fn type_error(&mut self, node: &Node, field: &str, expected: &str) {
        let message = if self.says_found {
            format!("expected {expected}, found {}", node.kind())
        } else {
            format!("expected {expected}")
        };
        self.error(node.pos, field, message);
    }

    /// A mapping with only `allowed` keys; unknown keys are reported with a suggestion, else
    /// the list of allowed keys.
    pub fn obj<'n>(&mut self, node: &'n Node, path: &str, allowed: &[&str]) -> Option<Obj<'n>> {
        if node.as_map().is_none() {
            self.type_error(node, path, "a mapping");
            return None;
        }
        let obj = Obj::new(node, path);
        self.unknown_fields(&obj, allowed, Unknown::SuggestOrList);
        Some(obj)
    }

    /// Reports every key of `obj` that is not one of `allowed`, the `unknown` way.
    pub fn unknown_fields(&mut self, obj: &Obj, allowed: &[&str], unknown: Unknown) {
        for (key, _) in obj.node.as_map().unwrap_or_default() {
            if !allowed.contains(&key.name.as_str()) {
                self.unknown_field(key, &obj.path, allowed, unknown);
            }
        }
    }

    /// Reports `key`, found in the mapping at `path`, as not one of `allowed`.
    pub fn unknown_field(&mut self, key: &Key, path: &str, allowed: &[&str], unknown: Unknown) {
        let field = if path.is_empty() {
            key.name.clone()
        } else {
            format!("{path}.{}", key.name)
        };
        let suggestion = || did_you_mean(&key.name, allowed.iter().copied()).map(|s| format!("did you mean `{s}`?"));
        let plain = format!("unknown field `{}`", key.name);
        let (message, hint) = match unknown {
            Unknown::SuggestOrList => (
                plain,
                Some(suggestion().unwrap_or_else(|| format!("expected one of: {}", allowed.join(", ")))),
            ),
            Unknown::SuggestOr(otherwise) => (plain, Some(suggestion().unwrap_or_else(|| otherwise.to_string()))),
            Unknown::Suggest => (plain, suggestion()),
            Unknown::ListInMessage => (format!("{plain} (expected {})", allowed.join(", ")), None),
        };
        self.error(key.pos, &field, message).hint = hint;
    }

    /// A required field: reports it missing at the mapping's position.
    pub fn req<'n>(&mut self, obj: &Obj<'n>, key: &str) -> Option<&'n Node> {
        let found = obj.get(key);
        if found.is_none() {
            self.error(obj.pos(), &obj.path(key), format!("missing required field `{key}`"));
        }
        found
    }

    /// Text, also from an integer or boolean written where text is wanted.
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
