//! Rego policies of policy gates (DESIGN section 14): a pack's `.rego` file checked at validate
//! time (`check`, located parse errors), the query's shape, the input document's digest, and one
//! evaluation (`evaluate`: the query's value, `data.stella.deny`'s messages). Evaluation here is
//! unbounded in memory; the runner always goes through `bounded`. Never sees a secret: the
//! input document is built by the executor from plan, inputs and step outputs only.

pub mod bounded;

use std::time::Duration;

use regorus::{Engine, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::diag::Pos;
use crate::pack::{PackFiles, normalise, sha256_hex};

/// The query a policy gate asks when it names none.
pub const DEFAULT_QUERY: &str = "data.stella.allow";
/// Where deny messages are read, whatever the query.
pub const DENY_RULE: &str = "data.stella.deny";
/// At most this many deny messages are kept, each at most `MESSAGE_CHARS` characters.
pub const MAX_MESSAGES: usize = 50;
pub const MESSAGE_CHARS: usize = 500;

/// Why a policy cannot be used or did not decide.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("policy path `{0}` leaves the pack directory")]
    LeavesPack(String),
    #[error("policy file `{0}` not found in the pack")]
    NotFound(String),
    #[error("policy file `{0}` is not valid UTF-8")]
    NotText(String),
    #[error("{message}")]
    Syntax { pos: Pos, message: String },
    #[error("query `{0}` is not a rule path like data.stella.allow")]
    Query(String),
    #[error("evaluation failed: {0}")]
    Eval(String),
    #[error("evaluation exceeded {0}")]
    Exceeded(String),
}

/// A policy's verdict: the query's value (`null` when undefined), whether the gate passes
/// (the value is `true` and there is no deny message) and the deny messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub result: Json,
    pub allow: bool,
    pub deny: Vec<String>,
}

/// A policy file of a pack, read and parsed: its normalised path, text and sha256 (hex).
#[derive(Debug, Clone)]
pub struct Policy {
    pub path: String,
    pub text: String,
    pub sha256: String,
}

/// Reads and parses the policy `path` of a pack; a parse error is located in the `.rego` file.
pub fn check(files: &PackFiles, path: &str) -> Result<Policy, Error> {
    let norm = normalise(path).ok_or_else(|| Error::LeavesPack(path.to_string()))?;
    let bytes = files.get(&norm).ok_or_else(|| Error::NotFound(path.to_string()))?;
    let text = std::str::from_utf8(bytes).map_err(|_| Error::NotText(path.to_string()))?;
    let mut engine = Engine::new();
    engine
        .add_policy(norm.clone(), text.to_string())
        .map_err(|e| syntax(&e.to_string()))?;
    Ok(Policy {
        sha256: sha256_hex(bytes),
        path: norm,
        text: text.to_string(),
    })
}

/// Whether `query` is a rule path: `data` then dot-separated identifiers.
pub fn check_query(query: &str) -> Result<(), Error> {
    let mut parts = query.split('.');
    let ok = parts.next() == Some("data")
        && query.len() <= 256
        && query.split('.').count() >= 2
        && parts.all(|p| {
            let mut c = p.chars();
            c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
                && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Query(query.to_string()))
    }
}

/// `sha256:` of the input document's canonical JSON (RFC 8785).
pub fn input_digest(input: &Json) -> String {
    let text = crate::canonical::to_string(input);
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// Evaluates `query` and `data.stella.deny` of one policy against `input`, in this thread,
/// stopped by regorus' own timer after `time`. Memory is not bounded here: see `bounded`.
pub fn evaluate(policy: &Policy, query: &str, input: &Json, time: Duration) -> Result<Decision, Error> {
    check_query(query)?;
    let mut engine = Engine::new();
    engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit: time,
        check_interval: std::num::NonZeroU32::MIN,
    });
    engine.set_strict_builtin_errors(false);
    engine
        .add_policy(policy.path.clone(), policy.text.clone())
        .map_err(|e| syntax(&e.to_string()))?;
    let input = Value::from_json_str(&input.to_string()).map_err(|e| Error::Eval(e.to_string()))?;
    engine.set_input(input);
    let result = rule(&mut engine, query, time)?;
    let deny = rule(&mut engine, DENY_RULE, time)?;
    let deny = messages(&deny);
    let result = match result {
        Value::Undefined => Json::Null,
        v => serde_json::to_value(&v).map_err(|e| Error::Eval(e.to_string()))?,
    };
    Ok(Decision {
        allow: result == Json::Bool(true) && deny.is_empty(),
        result,
        deny,
    })
}

/// One rule's value; a rule the policy does not define is undefined.
fn rule(engine: &mut Engine, path: &str, time: Duration) -> Result<Value, Error> {
    match engine.eval_rule(path.to_string()) {
        Ok(v) => Ok(v),
        Err(e) => {
            if let Some(regorus::LimitError::TimeLimitExceeded { .. }) = e.downcast_ref::<regorus::LimitError>() {
                return Err(Error::Exceeded(format!("its time limit of {} ms", time.as_millis())));
            }
            let text = e.to_string();
            if text.contains("not a valid rule path") || text.contains("not a valid rule") {
                return Ok(Value::Undefined);
            }
            Err(Error::Eval(first_lines(&text)))
        }
    }
}

/// Deny messages: strings as they are, anything else as JSON; bounded in count and length.
fn messages(v: &Value) -> Vec<String> {
    let items: Vec<Value> = match v {
        Value::Set(s) => s.iter().cloned().collect(),
        Value::Array(a) => a.iter().cloned().collect(),
        Value::Undefined | Value::Null => Vec::new(),
        other => vec![other.clone()],
    };
    items
        .iter()
        .take(MAX_MESSAGES)
        .map(|m| {
            let s = match m {
                Value::String(s) => s.to_string(),
                other => serde_json::to_string(other).unwrap_or_default(),
            };
            s.chars().take(MESSAGE_CHARS).collect()
        })
        .collect()
}

/// A regorus error (`\n--> file:line:col\n…\nerror: message`) as a located message.
fn syntax(text: &str) -> Error {
    let mut pos = Pos::UNKNOWN;
    if let Some(loc) = text.lines().find_map(|l| l.trim_start().strip_prefix("--> ")) {
        let mut it = loc.rsplitn(3, ':');
        let col = it.next().and_then(|c| c.parse().ok());
        let line = it.next().and_then(|l| l.parse().ok());
        if let (Some(line), Some(column)) = (line, col) {
            pos = Pos { line, column };
        }
    }
    let message = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .map_or_else(|| first_lines(text), str::to_string);
    Error::Syntax { pos, message }
}

fn first_lines(text: &str) -> String {
    let t: String = text.trim().chars().take(MESSAGE_CHARS).collect();
    t.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
