//! Loading hostile YAML into a tree that remembers where every key and value came from.
//! Owns the limits against YAML bombs (size, aliases, nesting, node count); it never
//! interprets what the YAML means. Also writes JSON text that YAML reads back unchanged
//! (`json_text`), for the files Stella writes (requests, approvals). Reading the tree into
//! typed values, with located problems, is `decode`'s.

pub mod decode;

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Budget, DuplicateKeyPolicy, Options, Spanned};

use crate::code::Code;
use crate::diag::{Diagnostic, Pos};

/// Bounds on what one YAML document may cost to load. Everything from a pull request is hostile.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_aliases: usize,
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 20,
            max_depth: 32,
            max_aliases: 256,
            max_nodes: 100_000,
        }
    }
}

/// A YAML value together with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

/// A mapping key and its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Node {
    /// What kind of value this is, for messages ("expected a list, found a string").
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    /// The JSON value this node denotes (positions dropped).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect()),
        }
    }
}

/// `value` as JSON text that YAML reads back as the same value: serde_json's output, with
/// the characters a YAML document may not hold (DEL, the C1 controls, U+FEFF, U+FFFE,
/// U+FFFF) and YAML 1.1's extra line breaks (U+2028, U+2029) written as `\uXXXX`. Outside
/// strings JSON text is ASCII, so they stand only in strings, where the escape means the same.
pub fn json_text(value: &impl serde::Serialize) -> String {
    let text = serde_json::to_string(value).expect("a value made of JSON types serialises");
    let refused = |c: char| {
        matches!(
            c,
            '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
    };
    if !text.contains(refused) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if refused(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses one YAML document of `file` within `limits`. Duplicate keys are an error.
pub fn parse(file: &str, src: &str, limits: Limits) -> Result<Node, Diagnostic> {
    if src.len() > limits.max_bytes {
        return Err(Diagnostic::new(
            Code::PackInvalid,
            file,
            Pos::UNKNOWN,
            "",
            format!("file is {} bytes; the limit is {} bytes", src.len(), limits.max_bytes),
        ));
    }
    let mut budget = Budget::default();
    budget.max_depth = limits.max_depth;
    budget.max_aliases = limits.max_aliases;
    budget.max_nodes = limits.max_nodes;
    budget.max_documents = 1;
    let mut options = Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = DuplicateKeyPolicy::Error;
    // YAML 1.2 core schema: `yes`, `no`, `on`, `off`, `y`, `n` are strings (the "Norway
    // problem"), and `0755` or `1_000` stay as written rather than becoming numbers.
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(src, options) {
        Ok(root) => Ok(convert(root)),
        Err(err) => Err(syntax_error(file, &err)),
    }
}

fn syntax_error(file: &str, err: &serde_saphyr::Error) -> Diagnostic {
    let pos = err.location().map_or(Pos::UNKNOWN, |l| Pos::new(l.line(), l.column()));
    let full = err.to_string();
    let first = full.lines().next().unwrap_or_default();
    // The crate prefixes "error: line L column C: "; the position is reported separately.
    let message = match first.find(": ") {
        Some(i) if first[..i].starts_with("error") => {
            let rest = &first[i + 2..];
            match rest.find(": ") {
                Some(j) if rest.starts_with("line ") => &rest[j + 2..],
                _ => rest,
            }
        }
        _ => first,
    };
    let message = message.trim();
    if message.contains("budget") || message.contains("recursion") || message.contains("depth") {
        Diagnostic::new(
            Code::PackInvalid,
            file,
            pos,
            "",
            format!("YAML exceeds the safety limits ({message})"),
        )
        .hint("too many aliases, nodes or nesting levels; expand anchors by hand or simplify the document")
    } else {
        Diagnostic::new(Code::PackInvalid, file, pos, "", format!("invalid YAML: {message}"))
    }
}

fn loc(l: &serde_saphyr::Location) -> Pos {
    Pos::new(l.line(), l.column())
}

fn convert(node: Spanned<Raw>) -> Node {
    let pos = loc(&node.referenced);
    let value = match node.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::Float(f) => Value::Float(f),
        Raw::Str(s) => Value::Str(s),
        Raw::Seq(items) => Value::Seq(items.into_iter().map(convert).collect()),
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    (
                        Key {
                            name: k.value,
                            pos: loc(&k.referenced),
                        },
                        convert(v),
                    )
                })
                .collect(),
        ),
    };
    Node { value, pos }
}

/// The shape serde-saphyr fills in; converted into `Node` right after parsing.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Raw, E> {
        Ok(Raw::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Raw, E> {
        Ok(i64::try_from(u).map_or(Raw::Float(u as f64), Raw::Int))
    }
    fn visit_i128<E>(self, i: i128) -> Result<Raw, E> {
        Ok(i64::try_from(i).map_or(Raw::Float(i as f64), Raw::Int))
    }
    fn visit_u128<E>(self, u: u128) -> Result<Raw, E> {
        Ok(i64::try_from(u).map_or(Raw::Float(u as f64), Raw::Int))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Raw, E> {
        Ok(Raw::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Raw, E> {
        Ok(Raw::Str(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Raw, E> {
        Ok(Raw::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Raw::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_carry_positions() {
        let node = parse("f.yaml", "a: 1\nb:\n  - x\n", Limits::default()).unwrap();
        let map = node.as_map().unwrap();
        assert_eq!(map[1].0.pos, Pos::new(2, 1));
        assert_eq!(map[1].1.as_seq().unwrap()[0].pos, Pos::new(3, 5));
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut src = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for i in 1..10u8 {
            let (name, prev) = ((b'a' + i) as char, (b'a' + i - 1) as char);
            let refs = vec![format!("*{prev}"); 9].join(",");
            src.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        let err = parse("bomb.yaml", &src, Limits::default()).unwrap_err();
        assert!(err.message.contains("safety limits"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let src = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let err = parse("deep.yaml", &src, Limits::default()).unwrap_err();
        assert!(err.message.contains("limit") || err.message.contains("YAML"), "{err}");
    }

    #[test]
    fn oversized_file_is_refused_before_parsing() {
        let limits = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        let err = parse("big.yaml", "a: 0123456789\n", limits).unwrap_err();
        assert!(err.message.contains("limit is 10 bytes"));
    }

    #[test]
    fn yaml_1_1_scalars_stay_strings() {
        let node = parse(
            "f.yaml",
            "a: [n, no, yes, on, off, y, 0755, 1_000, true, 12]\n",
            Limits::default(),
        )
        .unwrap();
        let items = node.get("a").unwrap().to_json();
        assert_eq!(
            items,
            serde_json::json!(["n", "no", "yes", "on", "off", "y", "0755", "1_000", true, 12])
        );
    }

    #[test]
    fn duplicate_keys_are_an_error_with_a_line() {
        let err = parse("d.yaml", "a: 1\na: 2\n", Limits::default()).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("duplicate"), "{err}");
    }
}
