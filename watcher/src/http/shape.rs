//! The JSON shapes of DESIGN section 11: a run's headline (one row of `GET /api/v1/runs`) and
//! its detail (`GET /api/v1/runs/{id}`: steps, gates with who counted and why others did not,
//! artifacts, evidence), built from the folded events (`RunView::state`, the fold `stella runs
//! show` uses), the plan and the request. Pure apart from the reads it is given.

use std::time::{Duration, SystemTime};

use serde_json::{Value as Json, json};
use stella_engine::runs::RunView;
use stella_engine::state::{RunState, StepStatus};

use super::errors::ApiError;
use super::source::At;

/// The state a reader shows: `invalid` for a run directory that cannot be read as a run,
/// `requested` before the first event, else the folded state (as `stella runs list`).
pub fn state_name(view: &RunView, st: &RunState) -> &'static str {
    if view.invalid.is_some() {
        "invalid"
    } else if view.events().is_empty() {
        "requested"
    } else {
        st.state.as_str()
    }
}

/// Milliseconds from `started` to `finished` (or now, while the run goes on).
fn span_ms(started: Option<&str>, finished: Option<&str>) -> Option<u64> {
    let start = humantime::parse_rfc3339(started?).ok()?;
    let end = finished
        .and_then(|f| humantime::parse_rfc3339(f).ok())
        .unwrap_or_else(SystemTime::now);
    end.duration_since(start).ok().map(|d| d.as_millis() as u64)
}

/// What the headline and the detail read besides the events: each step's kind from the
/// plan (`plan.json`, already checked against its hash by the run's reader), and the request's
/// `retryOf`, `resumeOf` or schedule `trigger`.
pub struct Files {
    /// (step id, kind), nested steps and map children included, depth first.
    kinds: Option<Vec<(String, String)>>,
    retry_of: Option<String>,
    resume_of: Option<String>,
    schedule: Option<stella_engine::request::Trigger>,
}

impl Files {
    pub fn read(at: &At, id: &str) -> Result<Files, ApiError> {
        let Some(dir) = at.locate(id)? else {
            return Ok(Files {
                kinds: None,
                retry_of: None,
                resume_of: None,
                schedule: None,
            });
        };
        let kinds = at
            .read(&dir.file("plan.json"))?
            .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
            .map(|plan| {
                let mut out = Vec::new();
                walk(&plan["steps"], &mut out);
                out
            });
        let request_path = dir.file("request.yaml");
        // Only a request that names `retryOf`, `resumeOf` or a `trigger` is parsed for it.
        let request = at
            .read(&request_path)?
            .filter(|b| {
                b.windows(7)
                    .any(|w| w == b"retryOf" || w == b"esumeOf" || w == b"trigger")
            })
            .and_then(|b| stella_engine::request::Request::parse(&request_path, &String::from_utf8_lossy(&b)).ok());
        let (retry_of, resume_of, schedule) =
            request.map_or((None, None, None), |r| (r.retry_of, r.resume_of, r.trigger));
        Ok(Files {
            kinds,
            retry_of,
            resume_of,
            schedule,
        })
    }

    fn total(&self) -> Option<usize> {
        self.kinds.as_ref().map(Vec::len)
    }

    fn kind(&self, step: &str) -> Option<&str> {
        self.kinds
            .as_ref()?
            .iter()
            .find(|(id, _)| id == step)
            .map(|(_, k)| k.as_str())
    }
}

/// The plan's steps as `plan.json` holds them: a parallel group's and a map's under their body.
fn walk(steps: &Json, out: &mut Vec<(String, String)>) {
    for s in steps.as_array().into_iter().flatten() {
        let kind = s["kind"].as_str().unwrap_or_default().to_string();
        out.push((s["id"].as_str().unwrap_or_default().to_string(), kind.clone()));
        walk(&s[kind.as_str()]["steps"], out);
    }
}

/// One row of the runs list: `{id, pack, state, planHash, trigger, requestedAt, requestedBy,
/// startedAt, finishedAt, durationMs, progress: {done, total}, gate, error}`.
pub fn headline(view: &RunView, st: &RunState, files: &Files) -> Json {
    let planned = view.events().iter().find(|e| e.kind == "run.planned");
    let pack = view.pack();
    let total = files.total();
    let done = st
        .steps
        .iter()
        .filter(|s| s.status.is_done() || s.status == StepStatus::Cancelled)
        .count();
    let error = match (&view.invalid, &st.code) {
        (Some(why), _) => json!({ "code": why.code, "message": why.to_string() }),
        (None, Some(code)) => json!({ "code": code, "message": st.error }),
        (None, None) => Json::Null,
    };
    let trigger = match (&files.retry_of, &files.resume_of, &files.schedule) {
        (Some(r), _, _) => json!({ "retryOf": r }),
        (None, Some(r), _) => json!({ "resumeOf": r }),
        (None, None, Some(t)) => json!({ "schedule": t.schedule, "slot": t.slot }),
        (None, None, None) => json!({ "manual": "commit" }),
    };
    json!({
        "id": view.id,
        "pack": pack,
        "state": state_name(view, st),
        "planHash": st.plan_hash,
        "trigger": trigger,
        "requestedAt": planned.map(|e| e.ts.clone()),
        "requestedBy": planned.and_then(|e| e.get("requestedBy")),
        "startedAt": st.started,
        "finishedAt": st.finished,
        "durationMs": span_ms(st.started.as_deref(), st.finished.as_deref()),
        "progress": { "done": total.map_or(done, |t| done.min(t)), "total": total },
        "gate": st.waiting_gate,
        "error": error,
    })
}

/// The headline plus `steps`, `gates`, `artifacts` and `evidence`.
pub fn detail(view: &RunView, st: &RunState, files: &Files, evidence: Json) -> Json {
    let mut out = headline(view, st, files);
    let kind = |id: &str| files.kind(id);
    let exit_code = |id: &str| {
        view.events()
            .iter()
            .rev()
            .filter(|e| e.step.as_deref() == Some(id))
            .find_map(|e| e.get("exitCode").cloned())
    };
    out["steps"] = st
        .steps
        .iter()
        .map(|s| {
            json!({
                "id": s.id, "kind": kind(&s.id), "state": s.status, "attempts": s.attempts,
                "startedAt": s.started, "finishedAt": s.finished, "exitCode": exit_code(&s.id),
                "error": s.code.as_ref().map(|c| json!({ "code": c, "message": s.error })),
            })
        })
        .collect();
    out["gates"] = gates(view, st).into();
    out["policies"] = stella_engine::state::policies(view.events()).into();
    out["artifacts"] = st
        .steps
        .iter()
        .flat_map(|s| {
            s.artifacts
                .iter()
                .map(move |a| json!({ "step": s.id, "name": a.name, "sha256": a.sha256, "size": a.size }))
        })
        .collect();
    out["evidence"] = evidence;
    out
}

/// Each approval gate the run reached: `{id, step, state, requiredCount, counted, rejected,
/// ignored: [{file, code, reason}], deadline}`, from its latest verdict per approval file.
fn gates(view: &RunView, st: &RunState) -> Vec<Json> {
    let events = view.events();
    let mut out: Vec<Json> = Vec::new();
    for w in events.iter().filter(|e| e.kind == "gate.waiting") {
        let step = w.step.clone().unwrap_or_default();
        if out.iter().any(|g| g["step"] == step.as_str()) {
            continue;
        }
        let mut verdicts: Vec<Json> = Vec::new();
        for e in events
            .iter()
            .filter(|e| e.kind == "approval.verdict" && e.step.as_deref() == Some(step.as_str()))
        {
            let d = e.data.clone().unwrap_or_default();
            verdicts.retain(|v| v["path"] != d["path"]);
            verdicts.push(d);
        }
        let principals = |verdict: &str| -> Vec<Json> {
            verdicts
                .iter()
                .filter(|v| v["verdict"] == verdict)
                .map(|v| v["principal"].clone())
                .collect()
        };
        let ignored: Vec<Json> = verdicts
            .iter()
            .filter(|v| v["verdict"] == "ignored")
            .map(|v| json!({ "file": v["path"], "code": v["code"], "reason": v["reason"] }))
            .collect();
        let deadline = w.get("expiresAfterMs").and_then(Json::as_u64).and_then(|ms| {
            humantime::parse_rfc3339(&w.ts)
                .ok()
                .map(|t| humantime::format_rfc3339_seconds(t + Duration::from_millis(ms)).to_string())
        });
        out.push(json!({
            "id": w.get("gate"),
            "step": step,
            "state": st.step(&step).map(|s| s.status),
            "requiredCount": w.get("requiredCount"),
            "counted": principals("counted"),
            "rejected": principals("rejected"),
            "ignored": ignored,
            "deadline": deadline,
        }));
    }
    out
}
