//! Run requests, `runs/<run-id>/request.yaml` (DESIGN section 4): what people commit to ask
//! for a run. Parsed strictly; a request is hostile input from a pull request.

use serde::Serialize;

use crate::code::Code;
use crate::diag::Diagnostics;
use crate::yaml::decode::{Decoder, Obj, Unknown};
use crate::yaml::{self, Node, Value};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Repository path of the pack directory, e.g. `packs/sbom-remediation`.
    pub pack: String,
    /// The inputs as written (a YAML tree, so errors can point into it).
    #[serde(skip)]
    pub inputs: Option<Node>,
    pub plan_hash: Option<String>,
    pub run_token: Option<String>,
    pub retry_of: Option<String>,
    /// `resumeOf`: as `retryOf`, reusing that run's succeeded steps (DESIGN section 12).
    pub resume_of: Option<String>,
    /// Written by the runner alone, for a schedule's slot (`ledger verify` holds it to that).
    pub trigger: Option<Trigger>,
}

/// `trigger: {schedule: ID, slot: RFC3339}`: the schedule and slot a runner-written request is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trigger {
    pub schedule: String,
    pub slot: String,
}

const FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "pack",
    "inputs",
    "planHash",
    "runToken",
    "retryOf",
    "resumeOf",
    "trigger",
];

impl Request {
    pub fn parse(file: &str, text: &str) -> Result<Request, Diagnostics> {
        let root = yaml::parse(file, text, yaml::Limits::default()).map_err(|mut d| {
            d.code = Code::RequestInvalid;
            Diagnostics::from(d)
        })?;
        let mut d = Decoder::new(file, Code::RequestInvalid);
        if root.as_map().is_none() {
            d.error(
                root.pos,
                "",
                "a request is a mapping (apiVersion, kind, pack, inputs, ...)",
            );
            return Err(d.diags);
        }
        let top = Obj::new(&root, "");
        d.unknown_fields(&top, FIELDS, Unknown::Suggest);
        for (key, want) in [("apiVersion", "stella/v1"), ("kind", "RunRequest")] {
            if let Some(n) = d.req(&top, key)
                && n.as_str() != Some(want)
            {
                d.error(n.pos, key, format!("expected `{want}`"));
            }
        }
        let pack = d.req(&top, "pack").and_then(|n| {
            let Some(p) = n.as_str() else {
                d.error(n.pos, "pack", "expected a path such as packs/<name>");
                return None;
            };
            match crate::pack::normalise(p) {
                Some(path) if path.starts_with("packs/") && path.split('/').count() == 2 => Some(path),
                _ => {
                    d.error(
                        n.pos,
                        "pack",
                        format!("`{p}` is not a pack path; expected packs/<name>"),
                    );
                    None
                }
            }
        });
        let text_field = |name: &str| root.get(name).map(|n| (n.as_str().map(str::to_string), n.pos));
        let inputs = root.get("inputs").cloned().filter(|n| !matches!(n.value, Value::Null));
        if let Some(n) = &inputs
            && n.as_map().is_none()
        {
            d.error(n.pos, "inputs", format!("inputs must be a mapping, found {}", n.kind()));
        }
        let plan_hash = match text_field("planHash") {
            Some((Some(h), pos)) => {
                let ok = h
                    .strip_prefix("sha256:")
                    .is_some_and(|x| x.len() == 64 && x.bytes().all(|b| b.is_ascii_hexdigit()));
                if !ok {
                    d.error(pos, "planHash", "expected sha256:<64 hex digits>");
                }
                Some(h)
            }
            Some((None, pos)) => {
                d.error(pos, "planHash", "expected sha256:<64 hex digits>");
                None
            }
            None => None,
        };
        let run_token = match text_field("runToken") {
            Some((Some(t), pos)) if t.is_empty() || t.len() > 200 => {
                d.error(pos, "runToken", "a run token is 1 to 200 characters");
                None
            }
            Some((Some(t), _)) => Some(t),
            Some((None, pos)) => {
                d.error(pos, "runToken", "expected a string");
                None
            }
            None => None,
        };
        let mut run_field = |name: &str| match text_field(name) {
            Some((Some(r), pos)) if !crate::run_id::is_valid(&r) => {
                d.error(pos, name, format!("`{r}` is not a run id"));
                None
            }
            Some((None, pos)) => {
                d.error(pos, name, "expected a run id");
                None
            }
            Some((r, _)) => r,
            None => None,
        };
        let retry_of = run_field("retryOf");
        let resume_of = run_field("resumeOf");
        if let (Some(_), Some(n)) = (&retry_of, root.get("resumeOf")) {
            d.error(
                n.pos,
                "resumeOf",
                "a request is a retry or a resume, not both: keep `retryOf` or `resumeOf`",
            );
        }

        let trigger = root.get("trigger").and_then(|n| trigger(&mut d, n));

        match pack {
            Some(pack) if d.diags.is_empty() => Ok(Request {
                pack,
                inputs,
                plan_hash,
                run_token,
                retry_of,
                resume_of,
                trigger,
            }),
            _ => Err(d.diags.sorted()),
        }
    }

    /// The request file as `stella run request` writes it. The pack path is written plain when
    /// it reads back as itself (`packs/hello`), else quoted; the inputs as JSON.
    pub fn render(pack: &str, inputs: &serde_json::Value, plan_hash: &str) -> String {
        Request::render_of(pack, inputs, plan_hash, None)
    }

    /// As `render`, with `retryOf: RUN` or `resumeOf: RUN` (`stella runs retry|resume`);
    /// `of` is (field, run id), the run id already checked by `run_id::is_valid`.
    pub fn render_of(pack: &str, inputs: &serde_json::Value, plan_hash: &str, of: Option<(&str, &str)>) -> String {
        let plain = pack.starts_with(|c: char| c.is_ascii_alphabetic())
            && pack.contains('/')
            && pack.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
        let pack = if plain {
            pack.to_string()
        } else {
            yaml::json_text(&pack)
        };
        let inputs = yaml::json_text(inputs);
        let of = of.map_or(String::new(), |(field, run)| format!("{field}: {run}\n"));
        format!(
            "apiVersion: stella/v1\nkind: RunRequest\npack: {pack}\ninputs: {inputs}\nplanHash: \"{plan_hash}\"\n{of}"
        )
    }
}

/// `trigger: {schedule: ID, slot: RFC3339}`.
fn trigger(d: &mut Decoder, n: &Node) -> Option<Trigger> {
    let obj = d.obj(n, "trigger", &["schedule", "slot"])?;
    let schedule = d.req_string(&obj, "schedule");
    let slot = d.req_string(&obj, "slot");
    if let Some(s) = &schedule
        && !crate::run_id::is_valid(s)
    {
        d.error(n.pos, "trigger.schedule", format!("`{s}` is not a schedule id"));
        return None;
    }
    if let Some(s) = &slot
        && s.parse::<jiff::Timestamp>().is_err()
    {
        d.error(n.pos, "trigger.slot", format!("`{s}` is not an RFC 3339 time"));
        return None;
    }
    Some(Trigger {
        schedule: schedule?,
        slot: slot?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_request_parses_back() {
        let text = Request::render(
            "packs/hello",
            &serde_json::json!({"who": "a'b"}),
            &format!("sha256:{}", "0".repeat(64)),
        );
        let r = Request::parse("request.yaml", &text).unwrap();
        assert_eq!(r.pack, "packs/hello");
        assert_eq!(r.inputs.unwrap().to_json(), serde_json::json!({"who": "a'b"}));
    }

    #[test]
    fn a_resume_request_reads_back_and_is_not_also_a_retry() {
        let hash = format!("sha256:{}", "0".repeat(64));
        let text = Request::render_of("packs/hello", &serde_json::json!({}), &hash, Some(("resumeOf", "r1")));
        let r = Request::parse("request.yaml", &text).unwrap();
        assert_eq!((r.resume_of.as_deref(), r.retry_of), (Some("r1"), None));
        let d = Request::parse("r.yaml", &format!("{text}retryOf: r1\n")).unwrap_err();
        assert_eq!(d.iter().next().unwrap().field, "resumeOf");
        let d = Request::parse("r.yaml", &text.replace("resumeOf: r1", "resumeOf: ../x")).unwrap_err();
        assert_eq!(d.iter().next().unwrap().field, "resumeOf");
    }

    #[test]
    fn hostile_requests_are_refused_with_lines() {
        let d = Request::parse(
            "r.yaml",
            "apiVersion: stella/v1\nkind: RunRequest\npack: ../../etc\nplanHash: md5:x\n",
        )
        .unwrap_err();
        let fields: Vec<(&str, u64)> = d.iter().map(|d| (d.field.as_str(), d.line)).collect();
        assert_eq!(fields, [("pack", 3), ("planHash", 4)]);
        assert!(d.iter().all(|d| d.code == Code::RequestInvalid));
    }
}
