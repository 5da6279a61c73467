//! `stella runs list|show|logs|cancel`: what the ledger (and this machine's journal) say about
//! runs. Every reader uses the same fold of events into state.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use stella_engine::Code;
use stella_engine::runs::{self, Facts, RunView, Summary};
use stella_engine::state::RunState;

use crate::failure::{Failure, Outcome};
use crate::repo;

/// The runs on the branch as summaries: every run by id, or the `limit` newest, newest first
/// (the index spares reading the runs that did not change).
fn summaries(root: &Path, limit: Option<u32>) -> Result<Vec<Summary>, Failure> {
    let config = repo::config_at_head(root)?;
    let ledger = repo::open_ledger(root, &config)?;
    let Some(tip) = ledger.tip()? else {
        return Ok(Vec::new());
    };
    let mut index = repo::runs_index(root, &ledger);
    let select = match limit {
        Some(n) => runs::Select::Newest(n as usize),
        None => runs::Select::All,
    };
    let scanned = runs::scan(&ledger, tip, &mut index, select)?;
    for path in scanned.ignored {
        tracing::warn!(path = %path, "not a run directory or run file; ignored");
    }
    Ok(scanned.runs)
}

pub(super) fn one(root: &Path, id: &str) -> Result<RunView, Failure> {
    if !stella_engine::run_id::is_valid(id) {
        return Err(Failure::one(Code::Usage, format!("`{id}` is not a valid run id")));
    }
    let config = repo::config_at_head(root)?;
    let ledger = repo::open_ledger(root, &config)?;
    let tip = ledger
        .tip()?
        .ok_or_else(|| Failure::one(Code::RunNotFound, format!("no run {id}: the branch has no commits")))?;
    let view = runs::find(&ledger, tip, id)?;
    if view.invalid.is_none() && !view.has_request && view.events().is_empty() {
        return Err(Failure::one(
            Code::RunNotFound,
            format!("no run {id} on branch {}", config.ledger_branch()),
        ));
    }
    Ok(view)
}

/// Seconds from `started` to `finished` (or now, while the run goes on).
fn span(started: Option<&str>, finished: Option<&str>) -> Option<f64> {
    let start = humantime::parse_rfc3339(started?).ok()?;
    let end = finished
        .and_then(|f| humantime::parse_rfc3339(f).ok())
        .unwrap_or_else(std::time::SystemTime::now);
    end.duration_since(start).ok().map(|d| d.as_secs_f64())
}

/// The state a reader shows: `invalid` for a run directory that cannot be read as a run,
/// `requested` before the first event, else the folded state.
fn state_name(invalid: bool, events: usize, status: stella_engine::state::RunStatus) -> &'static str {
    if invalid {
        "invalid"
    } else if events == 0 {
        "requested"
    } else {
        status.as_str()
    }
}

/// The `--json` fields of a run that cannot be read as a run, in the shape of a failed run's
/// (`state`, `code`, `error` as a message), plus `invalid`: `{code, file, line?, message}`.
fn mark_invalid(invalid: Option<&runs::Invalid>, row: &mut serde_json::Value) {
    if let Some(why) = invalid {
        row["state"] = json!("invalid");
        row["code"] = json!(why.code);
        row["error"] = json!(why.to_string());
        row["invalid"] = serde_json::to_value(why).expect("JSON");
    }
}

pub fn list(repo_dir: &Path, as_json: bool, limit: Option<u32>) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let runs = summaries(&root, limit)?;
    let duration = |f: &Facts| span(f.started.as_deref(), f.finished.as_deref());
    let rows: Vec<serde_json::Value> = runs
        .iter()
        .map(|v| {
            let f = &v.facts;
            let mut row = json!({
                "id": v.id, "pack": f.pack, "state": f.status.as_str(), "started": f.started,
                "durationSeconds": duration(f), "waitingGate": f.waiting_gate, "code": f.code,
                "error": f.error,
            });
            mark_invalid(v.invalid.as_ref(), &mut row);
            row
        })
        .collect();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("JSON"));
        return Ok(Outcome::Done);
    }
    if rows.is_empty() {
        println!("no runs");
        return Ok(Outcome::Done);
    }
    println!(
        "{:<44} {:<24} {:<10} {:<25} {:>9}  GATE",
        "RUN", "PACK", "STATE", "STARTED", "DURATION"
    );
    for (v, r) in runs.iter().zip(&rows) {
        let f = &v.facts;
        let last = match &v.invalid {
            Some(why) => format!("{why} [{}]", why.code),
            None => f.waiting_gate.clone().unwrap_or_default(),
        };
        println!(
            "{:<44} {:<24} {:<10} {:<25} {:>9}  {last}",
            v.id,
            r["pack"].as_str().unwrap_or("-"),
            state_name(v.invalid.is_some(), f.events, f.status),
            f.started.as_deref().unwrap_or("-"),
            duration(f).map_or("-".to_string(), |d| format!("{d:.1}s")),
        );
    }
    Ok(Outcome::Done)
}

/// Each approval gate the run reached: its verdicts (latest per file) and time left.
fn gates(view: &RunView, st: &RunState) -> Vec<serde_json::Value> {
    let events = view.events();
    let mut out = Vec::new();
    for w in events.iter().filter(|e| e.kind == "gate.waiting") {
        let step = w.step.clone().unwrap_or_default();
        if out.iter().any(|g: &serde_json::Value| g["step"] == step.as_str()) {
            continue;
        }
        let gate = w.get("gate").cloned().unwrap_or_default();
        let mut verdicts: Vec<serde_json::Value> = Vec::new();
        for e in events
            .iter()
            .filter(|e| e.kind == "approval.verdict" && e.step.as_deref() == Some(step.as_str()))
        {
            let d = e.data.clone().unwrap_or_default();
            verdicts.retain(|v| v["path"] != d["path"]);
            verdicts.push(d);
        }
        let state = st
            .steps
            .iter()
            .find(|s| s.id == step)
            .map(|s| serde_json::to_value(s.status).expect("JSON"))
            .unwrap_or_default();
        let deadline = w.get("expiresAfterMs").and_then(|ms| ms.as_u64()).and_then(|ms| {
            humantime::parse_rfc3339(&w.ts)
                .ok()
                .map(|t| t + Duration::from_millis(ms))
        });
        let remaining = deadline.map(|d| {
            d.duration_since(std::time::SystemTime::now())
                .map_or(0, |r| r.as_secs())
        });
        out.push(json!({
            "step": step, "gate": gate, "state": state,
            "requiredCount": w.get("requiredCount"), "grants": w.get("grants"),
            "expiresAt": deadline.map(|d| humantime::format_rfc3339_seconds(d).to_string()),
            "remainingSeconds": remaining,
            "approvals": verdicts,
        }));
    }
    out
}

pub fn show(repo_dir: &Path, id: &str, as_json: bool) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let view = one(&root, id)?;
    let st = view.state();
    let gates = gates(&view, &st);
    if as_json {
        let mut v = serde_json::to_value(&st).expect("JSON");
        v["id"] = json!(id);
        v["pack"] = json!(view.pack());
        // A retry or a resume names the run it comes from (as recorded in `run.planned`).
        if let Some(planned) = view.events().iter().find(|e| e.kind == "run.planned") {
            for field in ["retryOf", "resumeOf", "requestedBy"] {
                if let Some(of) = planned.get(field) {
                    v[field] = of.clone();
                }
            }
        }
        v["events"] = json!(view.events().len());
        v["gates"] = json!(gates);
        let policies = stella_engine::state::policies(view.events());
        if !policies.is_empty() {
            v["policies"] = json!(policies);
        }
        mark_invalid(view.invalid.as_ref(), &mut v);
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
        return Ok(Outcome::Done);
    }
    println!("run:       {id}");
    println!("pack:      {}", view.pack().unwrap_or_else(|| "-".into()));
    println!(
        "state:     {}",
        match state_name(view.invalid.is_some(), view.events().len(), st.state) {
            "requested" => "requested (not planned yet)",
            "invalid" => "invalid (skipped by the daemon until its files are fixed)",
            other => other,
        }
    );
    if let Some(why) = &view.invalid {
        println!("error:     {why} [{}]", why.code);
    }
    if let Some(h) = &st.plan_hash {
        println!("planHash:  {h}");
    }
    if let Some(planned) = view.events().iter().find(|e| e.kind == "run.planned") {
        let of = |field: &str| planned.get(field).and_then(|o| o.get("runId")).and_then(|r| r.as_str());
        if let Some(run) = of("retryOf") {
            println!("retryOf:   {run}");
        }
        if let Some(run) = of("resumeOf") {
            println!("resumeOf:  {run} (its succeeded steps reused)");
        }
        if let Some(by) = planned.get("requestedBy").and_then(|b| b.as_str()) {
            println!("requestedBy: {by} (signed the commit that added the request)");
        }
    }
    if let Some(g) = &st.waiting_gate {
        println!("waiting:   gate {g}");
    }
    if let (Some(code), Some(err)) = (&st.code, &st.error) {
        println!("error:     {err} [{code}]");
    }
    for g in &gates {
        let left = match g["remainingSeconds"].as_u64() {
            Some(s) if g["state"] == "waiting" => format!(", {} left", stella_engine::duration::format_ms(s * 1000)),
            _ => String::new(),
        };
        println!(
            "gate {} ({}): {}, needs {} of [{}]{left}",
            g["step"].as_str().unwrap_or(""),
            g["gate"].as_str().unwrap_or(""),
            g["state"].as_str().unwrap_or(""),
            g["requiredCount"],
            g["grants"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        );
        for a in g["approvals"].as_array().into_iter().flatten() {
            let why = a["reason"].as_str().map_or(String::new(), |r| {
                format!(": {r} [{}]", a["code"].as_str().unwrap_or(""))
            });
            println!(
                "    {} {}{why}",
                a["principal"].as_str().unwrap_or(""),
                a["verdict"].as_str().unwrap_or("")
            );
        }
    }
    for p in stella_engine::state::policies(view.events()) {
        print_policy(&p);
    }
    if !st.steps.is_empty() {
        println!("steps:");
        for s in &st.steps {
            let status = serde_json::to_value(s.status).expect("JSON");
            let attempts = if s.attempts > 1 {
                format!(" ({} attempts)", s.attempts)
            } else {
                String::new()
            };
            let err = s.code.as_ref().map_or(String::new(), |c| {
                format!(" [{c}] {}", s.error.as_deref().unwrap_or(""))
            });
            let reused = s
                .reused_from
                .as_ref()
                .map_or(String::new(), |r| format!(" (reused from run {r})"));
            println!(
                "  {:<40} {}{attempts}{reused}{err}",
                s.id,
                status.as_str().unwrap_or("")
            );
            for a in &s.artifacts {
                println!(
                    "      artifact {} {} ({} bytes, sha256 {})",
                    a.name,
                    a.path,
                    a.size,
                    &a.sha256[..12]
                );
            }
        }
    }
    Ok(Outcome::Done)
}

/// One Rego policy decision: the gate, its verdict, policy and input digests, deny messages.
fn print_policy(p: &serde_json::Value) {
    let s = |k: &str| p[k].as_str().unwrap_or("");
    let verdict = if p["allow"] == true { "allowed" } else { "denied" };
    println!(
        "policy {} ({} {}): {verdict}, result {}",
        s("step"),
        s("file"),
        s("query"),
        p["result"]
    );
    println!("    policy sha256 {}, input {}", s("sha256"), s("inputSha256"));
    for d in p["deny"].as_array().into_iter().flatten() {
        println!("    deny: {}", d.as_str().unwrap_or(""));
    }
    if let Some(e) = p["error"].as_str() {
        println!("    error: {e}");
    }
}

pub fn logs(repo_dir: &Path, id: &str, follow: bool) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let mut view = one(&root, id)?;
    if let Some(why) = &view.invalid {
        return Err(Failure::one(why.code, format!("run {id} is invalid: {why}")));
    }
    let mut shown = 0;
    let print = |events: &[stella_engine::event::Event], from: usize| {
        for line in events[from.min(events.len())..]
            .iter()
            .filter_map(crate::display::log_line)
        {
            println!("{line}");
        }
        events.len()
    };
    shown = print(view.events(), shown);
    if !follow {
        return Ok(Outcome::Done);
    }
    // Follow the journal where this machine runs the run, else the ledger as it is committed.
    loop {
        if view.state().state.is_terminal() && view.events().len() <= shown {
            return Ok(Outcome::Done);
        }
        std::thread::sleep(Duration::from_millis(200));
        view = one(&root, id)?;
        if let Some(why) = &view.invalid {
            return Err(Failure::one(why.code, format!("run {id} is invalid: {why}")));
        }
        shown = print(view.events(), shown);
        if view.state().state.is_terminal() {
            return Ok(Outcome::Done);
        }
    }
}

pub fn cancel(repo_dir: &Path, id: &str, reason: Option<&str>) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let view = one(&root, id)?;
    let file = view.dir.file("cancel.yaml");
    let path = root.join(&file);
    if view.has_cancel || path.exists() {
        println!("run {id} already has a cancel request; nothing to do");
        return Ok(Outcome::Done);
    }
    if view.state().state.is_terminal() {
        println!("run {id} is already {}; nothing to cancel", view.state().state.as_str());
        return Ok(Outcome::Done);
    }
    let reason = reason.unwrap_or("cancelled by request");
    let text = format!("reason: {}\n", serde_json::to_string(reason).expect("JSON"));
    super::init::write_replace(&path, &text)?;
    println!("wrote {file}");
    eprintln!("next: git add {file} && git commit -m \"cancel {id}\" && git push");
    Ok(Outcome::Done)
}
