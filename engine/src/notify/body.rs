//! The body of one notification, built from one recorded (so already redacted) event: a
//! CloudEvents 1.0 structured JSON event or a Slack-compatible `{"text": …}`. A `gate.waiting`
//! carries the gate, the approvals it needs and the exact `stella approve` command. Bodies are
//! bounded (long messages and data are cut) and pass a last redaction with the runner's own
//! secrets; nothing here reads a file or a secret.

use serde_json::{Value as Json, json};

use super::Format;
use crate::event::Event;
use crate::redact::Redactor;

/// The longest message kept in a body, in characters.
const MAX_MSG: usize = 2000;
/// The longest event `data` kept in a body, as JSON bytes; larger data is left out.
const MAX_DATA: usize = 16 * 1024;

/// What a notification is about.
pub struct About<'a> {
    pub run: &'a str,
    /// The `webhook-id`, also the CloudEvents `id`.
    pub id: &'a str,
    pub event: &'a Event,
}

/// The body for `format`, passed through `redactor` (the notify secrets, the runner key).
pub fn build(format: Format, about: &About, redactor: &Redactor) -> String {
    let text = match format {
        Format::CloudEvents => cloudevent(about).to_string(),
        Format::Slack => json!({ "text": slack_text(about) }).to_string(),
    };
    if redactor.is_empty() {
        text
    } else {
        redactor.redact(&text)
    }
}

/// A test delivery's body (`stella notify test`): an event of type `notify.test`.
pub fn test_event(target: &str) -> Event {
    let mut e = Event::new("notify.test")
        .level("info")
        .msg(format!("a test delivery to notify target `{target}`"));
    e.ts = crate::event::now_rfc3339();
    e
}

fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_MSG) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// The gate facts of a `gate.waiting`: gate, approvals needed (count, roles), the command.
fn gate(about: &About) -> Option<Json> {
    let e = about.event;
    if e.kind != "gate.waiting" {
        return None;
    }
    let gate = e.get("gate").and_then(Json::as_str).or(e.step.as_deref()).unwrap_or("");
    let count = e.get("requiredCount").cloned().unwrap_or(json!(1));
    let roles = e.get("grants").cloned().unwrap_or(json!([]));
    Some(json!({
        "gate": gate,
        "step": e.step,
        "approvals": { "count": count, "roles": roles },
        "approve": approve_command(about.run, gate),
    }))
}

/// The command an approver runs (their own key in place of KEY).
pub fn approve_command(run: &str, gate: &str) -> String {
    format!("stella approve {run} --gate {gate} --key KEY")
}

fn cloudevent(about: &About) -> Json {
    let e = about.event;
    let mut data = json!({ "run": about.run, "seq": e.seq, "type": e.kind });
    for (k, v) in [("step", e.step.as_deref()), ("level", e.level.as_deref())] {
        if let Some(v) = v {
            data[k] = json!(v);
        }
    }
    if let Some(m) = &e.msg {
        data["msg"] = json!(cut(m));
    }
    if let Some(d) = &e.data {
        if d.to_string().len() <= MAX_DATA {
            data["data"] = d.clone();
        } else {
            data["dataOmitted"] = json!("larger than 16 KiB");
        }
    }
    if let Some(g) = gate(about) {
        data["gate"] = g;
    }
    json!({
        "specversion": "1.0",
        "id": about.id,
        "source": format!("stella:run/{}", about.run),
        "type": format!("dev.stella.{}", e.kind),
        "subject": e.step.as_deref().unwrap_or(about.run),
        "time": e.ts,
        "datacontenttype": "application/json",
        "data": data,
    })
}

fn slack_text(about: &About) -> String {
    let e = about.event;
    let run = about.run;
    if let Some(g) = gate(about) {
        let roles: Vec<&str> = g["approvals"]["roles"]
            .as_array()
            .map(|a| a.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        let roles = if roles.is_empty() {
            String::new()
        } else {
            format!(" ({})", roles.join(", "))
        };
        return format!(
            "Stella run {run} waits at gate `{}` for {} approval(s){roles}. Approve with: `{}`",
            g["gate"].as_str().unwrap_or(""),
            g["approvals"]["count"],
            g["approve"].as_str().unwrap_or("")
        );
    }
    let what = match e.kind.as_str() {
        "run.succeeded" => "succeeded".to_string(),
        "run.failed" => "failed".to_string(),
        "run.cancelled" => "was cancelled".to_string(),
        other => other.to_string(),
    };
    let step = e.step.as_deref().map_or(String::new(), |s| format!(" (step `{s}`)"));
    let msg = e.msg.as_deref().map_or(String::new(), |m| format!(": {}", cut(m)));
    format!("Stella run {run} {what}{step}{msg}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting() -> Event {
        let mut e = Event::new("gate.waiting")
            .step("prod-gate")
            .msg("waiting for approval `release`")
            .data(json!({ "gate": "release", "grants": ["sre"], "requiredCount": 2 }));
        e.seq = 4;
        e.ts = "2026-01-01T00:00:00.000Z".into();
        e
    }

    #[test]
    fn a_waiting_gate_says_what_it_needs() {
        let about = About {
            run: "r1",
            id: "r1.4.ops",
            event: &waiting(),
        };
        let body: Json = serde_json::from_str(&build(Format::CloudEvents, &about, &Redactor::new([]))).unwrap();
        assert_eq!(body["specversion"], "1.0");
        assert_eq!(body["type"], "dev.stella.gate.waiting");
        assert_eq!(body["id"], "r1.4.ops");
        assert_eq!(
            body["data"]["gate"]["approvals"],
            json!({ "count": 2, "roles": ["sre"] })
        );
        assert_eq!(
            body["data"]["gate"]["approve"],
            "stella approve r1 --gate release --key KEY"
        );
        let slack: Json = serde_json::from_str(&build(Format::Slack, &about, &Redactor::new([]))).unwrap();
        let text = slack["text"].as_str().unwrap();
        assert!(
            text.contains("2 approval(s) (sre)") && text.contains("stella approve r1 --gate release"),
            "{text}"
        );
    }

    #[test]
    fn the_last_redaction_masks_the_runners_secrets() {
        let e = Event::new("run.failed").msg("curl https://hooks.example/abc123secret failed");
        let about = About {
            run: "r1",
            id: "r1.9.ops",
            event: &e,
        };
        let body = build(Format::Slack, &about, &Redactor::new(["abc123secret"]));
        assert!(!body.contains("abc123secret") && body.contains("***"), "{body}");
    }
}
