//! Notifications (DESIGN section 12): the `notify:` targets of `.stella/config.yaml`, which
//! events each target takes, and the pure pieces of a delivery: the body (`body`), the
//! Standard Webhooks signature (`sign`) and the durable outbox on disk (`outbox`). Sends
//! nothing and resolves no secret: the watcher does both. Never holds a secret value.

pub mod body;
pub mod outbox;
pub mod sign;

use crate::code::Code;
use crate::diag::Diagnostics;
use crate::yaml::decode::Decoder;
use crate::yaml::{Node, Value};

/// One `notify:` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A plain identifier, unique in the file; part of every `webhook-id`.
    pub id: String,
    pub endpoint: Endpoint,
    /// Event types, `*` as a suffix wildcard.
    pub events: Vec<String>,
    pub format: Format,
    /// The runner secret holding the signing key, `whsec_<base64>`.
    pub secret: String,
}

/// Where a target's deliveries go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Endpoint {
    /// A URL written in the config (so in git: never one holding credentials).
    Url(String),
    /// The name of a runner secret holding the URL; the URL is never written or logged.
    UrlSecret(String),
}

/// The body a target takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// CloudEvents 1.0, structured JSON (`application/cloudevents+json`).
    #[default]
    CloudEvents,
    /// `{"text": …}`, as Slack's incoming webhooks take.
    Slack,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::CloudEvents => "application/cloudevents+json",
            Format::Slack => "application/json",
        }
    }
}

/// Event types never sent, whatever a filter says: a step's output lines (their volume, and
/// where a secret would show first) and the notifier's own `notify.*` events (a failing target
/// would otherwise notify itself of its failures).
pub fn never_sent(kind: &str) -> bool {
    kind == "step.log" || kind.starts_with("notify.")
}

impl Target {
    /// Whether this target takes events of type `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        !never_sent(kind) && self.events.iter().any(|p| matches(p, kind))
    }

    /// The `webhook-id` of the notification of event `seq` of `run` to this target.
    pub fn webhook_id(&self, run: &str, seq: u64) -> String {
        format!("{run}.{seq}.{}", self.id)
    }
}

/// Whether event type `kind` matches `pattern`: equal, or `pattern` ends with `*` and `kind`
/// starts with what comes before it.
pub fn matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

/// A target id: 1 to 64 of `[A-Za-z0-9_-]`, starting with a letter or digit (it goes into
/// file names, `webhook-id`s and metric labels).
pub fn valid_id(id: &str) -> bool {
    id.len() <= 64
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

fn valid_secret_name(s: &str) -> bool {
    s.len() <= 128
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An event filter: `a.b`, `a.*`, `*`; lowercase letters, digits, `.`, `_`, `-`, with `*`
/// only at the end.
fn valid_pattern(p: &str) -> bool {
    let body = p.strip_suffix('*').unwrap_or(p);
    (!body.is_empty() || p == "*")
        && body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// Why a URL written in the config is refused, if it is.
fn url_problem(url: &str) -> Option<&'static str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Some("expected an http:// or https:// URL");
    };
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("expected a URL without spaces or control characters (at most 2048 bytes)");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Some("a URL in the config is in git: put one with credentials in a runner secret (urlSecret)");
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Some("expected a host in the URL");
    }
    None
}

const FIELDS: &[&str] = &["id", "url", "urlSecret", "events", "format", "secret"];

/// Reads `notify:` (a list of targets); every problem is reported with its line and field.
pub fn parse(file: &str, node: &Node) -> Result<Vec<Target>, Diagnostics> {
    let mut d = Decoder::new(file, Code::ConfigInvalid).terse();
    let mut out: Vec<Target> = Vec::new();
    if matches!(node.value, Value::Null) {
        return Ok(out);
    }
    let Some(items) = node.as_seq() else {
        d.type_error(node, "notify", "a list of targets");
        return Err(d.diags);
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("notify[{i}]");
        let Some(obj) = d.obj(item, &path, FIELDS) else {
            continue;
        };
        let id = d.req_string(&obj, "id");
        if let (Some(id), Some(n)) = (&id, obj.get("id")) {
            if !valid_id(id) {
                d.error(
                    n.pos,
                    &obj.path("id"),
                    "expected 1 to 64 letters, digits, `_` or `-`, starting with a letter or digit",
                );
            } else if out.iter().any(|t| &t.id == id) {
                d.error(n.pos, &obj.path("id"), format!("target `{id}` is defined twice"));
            }
        }
        let url = d.opt_string(&obj, "url");
        let url_secret = d.opt_string(&obj, "urlSecret");
        let endpoint = match (url, url_secret) {
            (Some(u), None) => match url_problem(&u) {
                Some(why) => {
                    d.error(obj.get("url").map_or(obj.pos(), |n| n.pos), &obj.path("url"), why);
                    None
                }
                None => Some(Endpoint::Url(u)),
            },
            (None, Some(s)) if valid_secret_name(&s) => Some(Endpoint::UrlSecret(s)),
            (None, Some(_)) => {
                let pos = obj.get("urlSecret").map_or(obj.pos(), |n| n.pos);
                d.error(
                    pos,
                    &obj.path("urlSecret"),
                    "expected a secret name (letters, digits, `_`)",
                );
                None
            }
            (Some(_), Some(_)) => {
                let pos = obj.get("urlSecret").map_or(obj.pos(), |n| n.pos);
                d.error(
                    pos,
                    &obj.path("urlSecret"),
                    "give either `url` or `urlSecret`, not both",
                );
                None
            }
            (None, None) => {
                d.error(
                    obj.pos(),
                    &obj.path("url"),
                    "missing required field `url` (or `urlSecret`)",
                );
                None
            }
        };
        let events = match d.req(&obj, "events") {
            Some(n) => {
                let field = obj.path("events");
                let list = d.string_list(n, &field);
                if let Some(items) = n.as_seq() {
                    for (j, (p, pn)) in list.iter().zip(items).enumerate() {
                        if !valid_pattern(p) {
                            d.error(
                                pn.pos,
                                &format!("{field}[{j}]"),
                                "expected an event type such as run.failed, or a prefix ending in `*` such as run.*",
                            );
                        }
                    }
                    if items.is_empty() {
                        d.error(n.pos, &field, "expected at least one event type");
                    }
                }
                list
            }
            None => Vec::new(),
        };
        let format = match obj.get("format") {
            None => Format::CloudEvents,
            Some(n) => match n.as_str() {
                Some("cloudevents") => Format::CloudEvents,
                Some("slack") => Format::Slack,
                _ => {
                    d.error(n.pos, &obj.path("format"), "expected cloudevents or slack");
                    Format::CloudEvents
                }
            },
        };
        let secret = d.req_string(&obj, "secret");
        if let (Some(s), Some(n)) = (&secret, obj.get("secret"))
            && !valid_secret_name(s)
        {
            d.error(
                n.pos,
                &obj.path("secret"),
                "expected a secret name (letters, digits, `_`)",
            );
        }
        if let (Some(id), Some(endpoint), Some(secret)) = (id, endpoint, secret) {
            out.push(Target {
                id,
                endpoint,
                events,
                format,
                secret,
            });
        }
    }
    d.diags.into_result(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Vec<Target>, Diagnostics> {
        let root = crate::yaml::parse("c.yaml", text, Default::default()).unwrap();
        parse("c.yaml", root.get("notify").unwrap())
    }

    #[test]
    fn the_documented_target() {
        let t = parse_text(
            "notify:\n  - id: ops\n    url: https://hooks.example.net/stella\n    events: [gate.waiting, run.failed, \"run.*\"]\n    format: cloudevents\n    secret: NOTIFY_OPS\n",
        )
        .unwrap();
        assert_eq!(t[0].endpoint, Endpoint::Url("https://hooks.example.net/stella".into()));
        assert!(t[0].wants("run.succeeded") && t[0].wants("gate.waiting") && !t[0].wants("step.started"));
        assert_eq!(t[0].webhook_id("r1", 7), "r1.7.ops");
    }

    #[test]
    fn wildcards_are_suffixes_and_some_events_never_go() {
        assert!(matches("*", "anything"));
        assert!(matches("run.*", "run.failed") && !matches("run.*", "runner.x"));
        assert!(!matches("run.failed", "run.failed.x"));
        let all = Target {
            id: "a".into(),
            endpoint: Endpoint::UrlSecret("U".into()),
            events: vec!["*".into()],
            format: Format::Slack,
            secret: "K".into(),
        };
        assert!(all.wants("step.started") && !all.wants("step.log") && !all.wants("notify.failed"));
    }

    #[test]
    fn mistakes_are_located() {
        for (text, line, field) in [
            (
                "notify:\n  - id: a\n    url: ftp://x\n    events: [run.*]\n    secret: K\n",
                3,
                "notify[0].url",
            ),
            (
                "notify:\n  - id: a\n    url: https://u:p@x/\n    events: [run.*]\n    secret: K\n",
                3,
                "notify[0].url",
            ),
            (
                "notify:\n  - id: a\n    url: https://x/\n    urlSecret: U\n    events: [run.*]\n    secret: K\n",
                4,
                "notify[0].urlSecret",
            ),
            (
                "notify:\n  - id: a\n    url: https://x/\n    events: [\"*.failed\"]\n    secret: K\n",
                4,
                "notify[0].events[0]",
            ),
            (
                "notify:\n  - id: a\n    url: https://x/\n    events: [run.*]\n    format: xml\n    secret: K\n",
                5,
                "notify[0].format",
            ),
            (
                "notify:\n  - id: a\n    url: https://x/\n    events: [run.*]\n    secret: K\n    secrets: K\n",
                6,
                "notify[0].secrets",
            ),
            (
                "notify:\n  - id: a/b\n    url: https://x/\n    events: [run.*]\n    secret: K\n",
                2,
                "notify[0].id",
            ),
            (
                "notify:\n  - id: a\n    urlSecret: U\n    events: [run.*]\n    secret: K\n  - id: a\n    urlSecret: U\n    events: [run.*]\n    secret: K\n",
                6,
                "notify[1].id",
            ),
        ] {
            let d = parse_text(text).unwrap_err();
            let d = d.iter().next().unwrap();
            assert_eq!(
                (d.line, d.field.as_str(), d.code),
                (line, field, Code::ConfigInvalid),
                "{text}"
            );
        }
        let d = parse_text("notify:\n  - id: a\n    url: https://x/\n    events: [run.*]\n").unwrap_err();
        assert_eq!(d.iter().next().unwrap().field, "notify[0].secret");
    }
}
