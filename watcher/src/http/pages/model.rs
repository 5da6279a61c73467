//! What the pages show, made from the JSON API's answers: the filter form and the API query it
//! stands for, the cards (active runs, waiting gates, queue depth), and a run page's step graph
//! (the plan's shape, parallel groups and map children as segments with counts), gates with
//! the exact commands that decide them, the run's commands, artifact links and the evidence
//! export. Pure: it reads nothing and renders nothing; the templates escape every value.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};
use stella_engine::approvals::{Approval, Decision};

use super::super::errors::ApiError;

/// The states the form offers: the API's `state` values.
pub const STATE_CHOICES: &[&str] = super::super::api::STATES;

/// The time windows the form offers: (value, label, seconds).
pub const WINDOWS: &[(&str, &str, u64)] = &[
    ("1h", "last hour", 3600),
    ("24h", "last 24 hours", 86_400),
    ("7d", "last 7 days", 7 * 86_400),
    ("30d", "last 30 days", 30 * 86_400),
];

/// Runs a page of the table shows.
pub const PAGE: usize = 50;

/// The filter form as submitted (GET): unknown fields are ignored, empty ones are unset.
#[derive(Debug, Default, Serialize)]
pub struct Form {
    pub state: Option<String>,
    pub pack: Option<String>,
    pub window: Option<String>,
    pub code: Option<String>,
    pub cursor: Option<String>,
}

impl Form {
    pub fn read(q: &HashMap<String, String>) -> Form {
        let field = |k: &str| q.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        Form {
            state: field("state"),
            pack: field("pack"),
            window: field("window"),
            code: field("code"),
            cursor: field("cursor"),
        }
    }

    /// The `GET /api/v1/runs` query the form stands for (the API checks every value).
    pub fn api_query(&self, now: SystemTime) -> Result<HashMap<String, String>, ApiError> {
        let mut q = HashMap::new();
        for (k, v) in [
            ("state", &self.state),
            ("pack", &self.pack),
            ("code", &self.code),
            ("cursor", &self.cursor),
        ] {
            if let Some(v) = v {
                q.insert(k.to_string(), v.clone());
            }
        }
        if let Some(w) = &self.window {
            let (_, _, secs) = WINDOWS
                .iter()
                .find(|(value, _, _)| value == w)
                .ok_or_else(|| ApiError::bad("`window` must be one of 1h, 24h, 7d, 30d"))?;
            let since = now
                .checked_sub(Duration::from_secs(*secs))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            q.insert("since".into(), humantime::format_rfc3339_seconds(since).to_string());
        }
        q.insert("limit".into(), PAGE.to_string());
        Ok(q)
    }

    /// This form's page link with another cursor (`None`: the first page).
    pub fn href_with_cursor(&self, cursor: Option<&str>) -> String {
        let pairs = [
            ("state", self.state.as_deref()),
            ("pack", self.pack.as_deref()),
            ("window", self.window.as_deref()),
            ("code", self.code.as_deref()),
            ("cursor", cursor),
        ];
        format!(
            "/{}",
            query_string(pairs.iter().filter_map(|(k, v)| v.map(|v| (*k, v))))
        )
    }
}

/// The API path of a query without its cursor: what the live table asks again.
pub fn api_href(q: &HashMap<String, String>) -> String {
    let mut pairs: Vec<(&str, &str)> = q
        .iter()
        .filter(|(k, _)| *k != "cursor")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.sort();
    format!("/api/v1/runs{}", query_string(pairs.into_iter()))
}

/// The query that feeds the cards: every run not finished.
pub fn active_query() -> HashMap<String, String> {
    HashMap::from([
        ("state".to_string(), "requested,planned,running,waiting".to_string()),
        ("limit".to_string(), super::super::api::MAX_LIMIT.to_string()),
    ])
}

fn query_string<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let joined: Vec<String> = pairs.map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    if joined.is_empty() {
        String::new()
    } else {
        format!("?{}", joined.join("&"))
    }
}

/// Percent-encoding of one URL component (everything but RFC 3986's unreserved characters).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The cards, from the list of unfinished runs: `{active, waiting, queued, more}`.
pub fn cards(active: &Value) -> Value {
    let runs = active["runs"].as_array().cloned().unwrap_or_default();
    let of = |states: &[&str]| -> Vec<Value> {
        runs.iter()
            .filter(|r| states.iter().any(|s| r["state"] == *s))
            .cloned()
            .collect()
    };
    json!({
        "active": of(&["running"]),
        "waiting": of(&["waiting"]),
        "queued": of(&["requested", "planned"]).len(),
        "more": !active["next"].is_null(),
    })
}

/// A log's last lines, and how many there were.
#[derive(Debug, Default, Serialize)]
pub struct Log {
    pub text: String,
    pub shown: usize,
    pub total: usize,
}

impl Log {
    pub fn tail(text: &str, keep: usize) -> Log {
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(keep);
        Log {
            text: lines[from..].join("\n"),
            shown: lines.len() - from,
            total: lines.len(),
        }
    }
}

/// One node of the step graph: a step with its state, attempts and time, and for a parallel
/// group or a map its children, as segments with counts by state.
#[derive(Debug, Serialize)]
pub struct Node {
    pub id: String,
    pub name: Option<String>,
    pub kind: String,
    pub state: String,
    pub attempts: u64,
    pub duration_ms: Option<u64>,
    pub exit_code: Value,
    pub error: Value,
    pub children: Vec<Node>,
    /// `[(state, count)]` of the children, in a fixed order.
    pub counts: Vec<(String, usize)>,
}

/// A gate as the page shows it: the API's gate, and the commands that decide it.
#[derive(Debug, Serialize)]
pub struct Gate {
    pub gate: Value,
    pub open: bool,
    pub approve: String,
    pub reject: String,
    /// Where `stella approve` writes the approval (PRINCIPAL standing for the signer).
    pub file: String,
    /// The approval file's text, as `stella approve` writes it.
    pub yaml: String,
    pub sign: String,
    pub commit: String,
}

/// Everything of a run page but the API's own answer.
#[derive(Debug, Serialize)]
pub struct RunPage {
    pub graph: Vec<Node>,
    pub gates: Vec<Gate>,
    pub commands: Vec<(String, String)>,
    pub artifacts: Vec<Value>,
    pub steps: Vec<String>,
    pub finished: bool,
    pub logs_href: String,
    pub export_href: String,
}

const ORDER: &[&str] = &[
    "succeeded",
    "running",
    "waiting",
    "failed",
    "cancelled",
    "skipped",
    "pending",
];

impl RunPage {
    /// `detail` is `GET /api/v1/runs/{id}`'s answer; `plan` the run's `plan.json`, when it has
    /// one; `approvals` its approvals directory (`approvals/_<xx>/<id>`).
    pub fn build(detail: &Value, plan: Option<&Value>, approvals: Option<&str>, step: Option<&str>) -> RunPage {
        let id = detail["id"].as_str().unwrap_or_default();
        let state = detail["state"].as_str().unwrap_or_default();
        let steps = detail["steps"].as_array().cloned().unwrap_or_default();
        let finished = matches!(state, "succeeded" | "failed" | "cancelled" | "invalid");
        let graph = match plan {
            Some(p) => nodes(&p["steps"], &steps),
            None => steps.iter().map(|s| leaf(s, None)).collect(),
        };
        let approvals = approvals.map_or_else(|| stella_engine::layout::RunDir::new(id).approvals(), str::to_string);
        let mut gates: Vec<Value> = detail["gates"].as_array().cloned().unwrap_or_default();
        // Gates of the plan not reached yet: approvals may be committed before.
        let mut planned = Vec::new();
        if let Some(p) = plan {
            approval_steps(&p["steps"], &mut planned);
        }
        for (step, gate) in planned {
            if !gates.iter().any(|g| g["step"] == step.as_str()) {
                gates.push(json!({ "id": gate, "step": step, "state": "pending", "counted": [],
                    "rejected": [], "ignored": [], "requiredCount": null, "deadline": null }));
            }
        }
        let plan_hash = detail["planHash"].as_str().unwrap_or_default();
        let gates = gates
            .into_iter()
            .map(|g| gate(id, plan_hash, &approvals, g, finished))
            .collect();
        let mut commands = Vec::new();
        if !finished {
            commands.push(("cancel".into(), format!("stella runs cancel {id}")));
        }
        if matches!(state, "failed" | "cancelled") {
            commands.push((
                "retry (a new run, same pack and inputs)".into(),
                format!("stella runs retry {id}"),
            ));
            commands.push((
                "resume (reuse the succeeded steps)".into(),
                format!("stella runs resume {id}"),
            ));
        }
        if state == "succeeded" {
            commands.push(("run again".into(), format!("stella runs retry {id}")));
        }
        let artifacts = detail["artifacts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut a| {
                let href = format!(
                    "/api/v1/runs/{id}/artifacts/{}/{}",
                    encode(a["step"].as_str().unwrap_or_default()),
                    encode(a["name"].as_str().unwrap_or_default())
                );
                a["href"] = href.into();
                a
            })
            .collect();
        let logs_href = match step {
            Some(s) => format!("/api/v1/runs/{id}/logs?step={}", encode(s)),
            None => format!("/api/v1/runs/{id}/logs"),
        };
        RunPage {
            graph,
            gates,
            commands,
            artifacts,
            steps: steps
                .iter()
                .filter_map(|s| s["id"].as_str().map(str::to_string))
                .collect(),
            finished,
            logs_href,
            export_href: format!("/api/v1/runs/{id}/export"),
        }
    }
}

/// A gate with the commands of DESIGN section 7: `stella approve`, and by hand, the file
/// `stella approve` would write signed with `ssh-keygen -Y sign`.
fn gate(run: &str, plan_hash: &str, approvals: &str, g: Value, finished: bool) -> Gate {
    let gid = g["id"].as_str().unwrap_or_default().to_string();
    let open = !finished && matches!(g["state"].as_str(), Some("waiting" | "pending"));
    let file = format!("{approvals}/{gid}/PRINCIPAL.yaml");
    let yaml = Approval {
        run: run.to_string(),
        gate: gid.clone(),
        plan_hash: plan_hash.to_string(),
        decision: Decision::Approve,
        comment: Some("why you approve".into()),
    }
    .render();
    Gate {
        approve: format!("stella approve {run} --gate {gid} --key ~/.ssh/id_ed25519"),
        reject: format!("stella approve {run} --gate {gid} --key ~/.ssh/id_ed25519 --reject --comment \"why\""),
        sign: format!("ssh-keygen -Y sign -f ~/.ssh/id_ed25519 -n stella-approval {file}"),
        commit: format!("git add {file} {file}.sig && git commit -m \"approval of {run}\" && git push"),
        file,
        yaml,
        open,
        gate: g,
    }
}

/// The key of a step's body in `plan.json`: `run`, `parallel`, `map`, `approval`, `policy`.
fn body_key(kind: &str) -> &str {
    kind.strip_prefix("gate.").unwrap_or(kind)
}

/// The approval gates of the plan: (step id, approval id), nested ones included.
fn approval_steps(plan_steps: &Value, out: &mut Vec<(String, String)>) {
    for s in plan_steps.as_array().into_iter().flatten() {
        let kind = s["kind"].as_str().unwrap_or_default();
        if kind == "gate.approval"
            && let (Some(step), Some(gate)) = (s["id"].as_str(), s["approval"]["id"].as_str())
        {
            out.push((step.to_string(), gate.to_string()));
        }
        approval_steps(&s[body_key(kind)]["steps"], out);
    }
}

/// The graph's nodes for the steps of `plan.json` at one level, with what the run did of them.
fn nodes(plan_steps: &Value, steps: &[Value]) -> Vec<Node> {
    plan_steps
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| node(p, steps))
        .collect()
}

fn node(p: &Value, steps: &[Value]) -> Node {
    let id = p["id"].as_str().unwrap_or_default();
    let kind = p["kind"].as_str().unwrap_or_default();
    let mut n = match steps.iter().find(|s| s["id"] == id) {
        Some(s) => leaf(s, Some(kind)),
        None => Node {
            id: id.to_string(),
            name: None,
            kind: kind.to_string(),
            state: "pending".into(),
            attempts: 0,
            duration_ms: None,
            exit_code: Value::Null,
            error: Value::Null,
            children: Vec::new(),
            counts: Vec::new(),
        },
    };
    n.name = p["name"].as_str().map(str::to_string);
    let body = &p[body_key(kind)];
    n.children = nodes(&body["steps"], steps);
    // A map's children are labelled with their item.
    if kind == "map" {
        for (c, item) in n
            .children
            .iter_mut()
            .zip(body["items"].as_array().into_iter().flatten())
        {
            let label = item.as_str().map_or_else(|| item.to_string(), str::to_string);
            c.name = Some(label.chars().take(80).collect());
        }
    }
    n.counts = ORDER
        .iter()
        .map(|s| (s.to_string(), n.children.iter().filter(|c| c.state == *s).count()))
        .filter(|(_, k)| *k > 0)
        .collect();
    n
}

fn leaf(s: &Value, kind: Option<&str>) -> Node {
    let text = |k: &str| s[k].as_str().map(str::to_string);
    Node {
        id: text("id").unwrap_or_default(),
        name: None,
        kind: kind.map(str::to_string).or(text("kind")).unwrap_or_default(),
        state: text("state").unwrap_or_else(|| "pending".into()),
        attempts: s["attempts"].as_u64().unwrap_or(0),
        duration_ms: span_ms(s["startedAt"].as_str(), s["finishedAt"].as_str()),
        exit_code: s["exitCode"].clone(),
        error: s["error"].clone(),
        children: Vec::new(),
        counts: Vec::new(),
    }
}

fn span_ms(started: Option<&str>, finished: Option<&str>) -> Option<u64> {
    let start = humantime::parse_rfc3339(started?).ok()?;
    let end = finished
        .and_then(|f| humantime::parse_rfc3339(f).ok())
        .unwrap_or_else(SystemTime::now);
    end.duration_since(start).ok().map(|d| d.as_millis() as u64)
}

/// The `duration` filter: milliseconds as `340 ms`, `4.2 s`, `3 m 05 s`, `2 h 01 m`.
pub fn duration(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "–".into() };
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} m {:02} s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{} h {:02} m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// The `bytes` filter: `512 B`, `3.4 KiB`, `1.2 MiB`.
pub fn bytes(n: Option<u64>) -> String {
    let Some(n) = n else { return "–".into() };
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// HTML escaping for the one message written outside a template.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_the_api_query_and_its_links_are_encoded() {
        let q: HashMap<String, String> = [("state", "failed"), ("pack", "a&b c"), ("window", "1h"), ("x", "y")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let form = Form::read(&q);
        let now = humantime::parse_rfc3339("2026-12-02T11:00:00Z").unwrap();
        let api = form.api_query(now).unwrap();
        assert_eq!(api["since"], "2026-12-02T10:00:00Z");
        assert_eq!(api["pack"], "a&b c");
        assert!(!api.contains_key("x"));
        assert_eq!(
            api_href(&api),
            "/api/v1/runs?limit=50&pack=a%26b%20c&since=2026-12-02T10%3A00%3A00Z&state=failed"
        );
        assert_eq!(
            form.href_with_cursor(Some("Y3Vy")),
            "/?state=failed&pack=a%26b%20c&window=1h&cursor=Y3Vy"
        );
        let bad = Form::read(&HashMap::from([("window".to_string(), "forever".to_string())]));
        assert_eq!(bad.api_query(now).unwrap_err().status, 400);
    }

    #[test]
    fn the_graph_has_the_plans_shape_with_counts_and_gates_not_reached_get_commands() {
        let plan = json!({ "steps": [
            { "id": "prep", "kind": "run", "run": {} },
            { "id": "fan", "kind": "map", "map": { "items": ["eu", {"r": 2}], "steps": [
                { "id": "fan[0]::go", "kind": "run", "run": {} },
                { "id": "fan[1]::go", "kind": "run", "run": {} } ] } },
            { "id": "both", "kind": "parallel", "parallel": { "steps": [
                { "id": "ok", "kind": "gate.approval", "approval": { "id": "change-review" } } ] } },
        ] });
        let detail = json!({ "id": "r1", "state": "running", "planHash": "sha256:ab", "steps": [
            { "id": "prep", "state": "succeeded", "attempts": 2, "startedAt": "2026-12-02T10:00:00Z",
              "finishedAt": "2026-12-02T10:00:04.2Z" },
            { "id": "fan", "state": "running", "attempts": 1 },
            { "id": "fan[0]::go", "state": "succeeded", "attempts": 1 },
        ], "gates": [], "artifacts": [{ "step": "prep", "name": "a b/c", "sha256": "00", "size": 1 }] });
        let page = RunPage::build(&detail, Some(&plan), Some("approvals/_3f/r1"), Some("prep"));
        let ids: Vec<&str> = page.graph.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["prep", "fan", "both"]);
        assert_eq!((page.graph[0].attempts, page.graph[0].duration_ms), (2, Some(4200)));
        let fan = &page.graph[1];
        assert_eq!(fan.counts, [("succeeded".to_string(), 1), ("pending".to_string(), 1)]);
        assert_eq!(fan.children[0].name.as_deref(), Some("eu"));
        assert_eq!(fan.children[1].name.as_deref(), Some("{\"r\":2}"));
        assert_eq!(page.gates.len(), 1);
        let gate = &page.gates[0];
        assert!(gate.open);
        assert_eq!(gate.file, "approvals/_3f/r1/change-review/PRINCIPAL.yaml");
        assert_eq!(
            gate.sign,
            "ssh-keygen -Y sign -f ~/.ssh/id_ed25519 -n stella-approval approvals/_3f/r1/change-review/PRINCIPAL.yaml"
        );
        assert!(gate.yaml.contains("planHash: \"sha256:ab\""));
        assert_eq!(page.commands[0].1, "stella runs cancel r1");
        assert_eq!(page.artifacts[0]["href"], "/api/v1/runs/r1/artifacts/prep/a%20b%2Fc");
        assert_eq!(page.logs_href, "/api/v1/runs/r1/logs?step=prep");
    }

    #[test]
    fn durations_and_sizes_read_as_people_say_them() {
        assert_eq!(duration(Some(340)), "340 ms");
        assert_eq!(duration(Some(4200)), "4.2 s");
        assert_eq!(duration(Some(185_000)), "3 m 05 s");
        assert_eq!(duration(None), "–");
        assert_eq!(bytes(Some(3481)), "3.4 KiB");
    }
}
