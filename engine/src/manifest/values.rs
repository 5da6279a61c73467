//! The manifest's own kinds of value, read through the located decoder: templates (text
//! that remembers where it was written), durations, and the simple names of ids and
//! artifacts. Never decides where in a manifest they may appear.

use crate::duration as durations;
use crate::yaml::Node;
use crate::yaml::Value;
use crate::yaml::decode::{Decoder, Obj};

use super::Tpl;

/// Text that may hold template syntax, with where it was written.
pub(super) fn tpl(d: &mut Decoder, node: &Node, field: &str) -> Option<Tpl> {
    d.string(node, field).map(|src| Tpl {
        src,
        pos: node.pos,
        field: field.to_string(),
    })
}

pub(super) fn opt_tpl(d: &mut Decoder, obj: &Obj, key: &str) -> Option<Tpl> {
    obj.get(key).and_then(|n| tpl(d, n, &obj.path(key)))
}

/// A duration such as `30s`, `10m` or `PT4H`, in milliseconds.
pub(super) fn duration(d: &mut Decoder, obj: &Obj, key: &str) -> Option<u64> {
    let node = obj.get(key)?;
    let text = match &node.value {
        Value::Str(s) => s.clone(),
        _ => {
            d.type_error(node, &obj.path(key), "a duration such as 30s, 10m or PT4H");
            return None;
        }
    };
    match durations::parse_ms(&text) {
        Ok(ms) => Some(ms),
        Err(msg) => {
            d.error(node.pos, &obj.path(key), msg).hint = Some("write e.g. 500ms, 30s, 10m, 1h30m or PT4H".into());
            None
        }
    }
}

/// Names of artifacts and ids: a letter or digit, then letters, digits, `.`, `_`, `-`.
pub(super) fn is_simple_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && s.len() <= 64
}
