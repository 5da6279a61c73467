//! One run from request to finished ledger: plan it from the objects of the commit that
//! holds the request (never the working tree), record the plan, execute it with the
//! executor, and commit; or recover an interrupted run from its journal; or flush, or cancel.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gix::ObjectId;
use serde_json::json;

use crate::code::Code;
use crate::config::{CONFIG_PATH, Config};
use crate::diag::Diagnostics;
use crate::event::{Event, EventSink, now_rfc3339};
use crate::exec::{self, CancelToken, ExecConfig, Gatekeeper, Outcome};

use super::gates::RepoGates;
use crate::journal::{self, Journal};
use crate::ledger::Ledger;

use crate::pack::{PackFiles, sha256_hex};
use crate::plan::Plan;
use crate::request::Request;
use crate::secrets::Secrets;
use crate::state::fold;

use super::Need;
use super::ledger_sink::{EvidenceContext, LedgerSink, message_for, steps_done};

/// What every run of one daemon shares.
pub struct Environment {
    pub ledger: Mutex<Ledger>,
    pub git_dir: PathBuf,
    /// The runner key: signs ledger commits (namespace git) and evidence (DSSE).
    pub key: Arc<crate::keys::SshKey>,
    /// Secrets from `--secrets FILE`; others come from `STELLA_SECRET_<NAME>`.
    pub file_secrets: BTreeMap<String, String>,
    pub kill_grace: Duration,
    /// Runs this runner must not write any more: another runner took over their claim.
    pub fenced: Mutex<std::collections::HashSet<String>>,
    /// Where run workspaces live (`runs::default_work_root` unless `--work-dir`).
    pub work_root: PathBuf,
    /// The runner's own paths no step may see: the repository, `.git`, the work root, the key
    /// and secrets files (the sandbox covers them).
    pub hidden: Vec<PathBuf>,
    /// Keep the workspace of a failed run (`--keep-work`); others are removed after the final commit.
    pub keep_work: bool,
    /// Chaos hooks (`--chaos FILE`), handed to the executor and the gates.
    pub chaos: Option<Arc<crate::chaos::Chaos>>,
}

impl Environment {
    /// Whether another runner took run `id` over (see `fenced`).
    pub fn is_fenced(&self, id: &str) -> bool {
        self.fenced.lock().unwrap_or_else(|p| p.into_inner()).contains(id)
    }

    /// Lets this runner write run `id` again (it holds the claim anew).
    pub fn unfence(&self, id: &str) {
        self.fenced.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Stops this runner writing run `id`: its results from now on stay out of the ledger.
    pub fn fence(&self, id: &str) {
        self.fenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ledger: {0}")]
    Ledger(String),
    #[error("journal: {0}")]
    Journal(String),
    /// The run's files cannot be continued: it is left alone, the other runs go on.
    #[error("run is invalid: {0}")]
    Invalid(super::Invalid),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Invalid(why) => why.code,
            Error::Ledger(_) | Error::Journal(_) => Code::Io,
        }
    }
}

/// A failure decided before execution, recorded as `run.failed`.
struct Refusal {
    code: Code,
    message: String,
    problems: Option<Diagnostics>,
}

impl From<Diagnostics> for Refusal {
    fn from(d: Diagnostics) -> Self {
        let message = d.iter().next().map(ToString::to_string).unwrap_or_default();
        Refusal {
            code: d.code(),
            message,
            problems: Some(d),
        }
    }
}

fn refuse(code: Code, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        problems: None,
    }
}

/// Carries run `id` forward as `need` says. Returns how the run stands when this call ends.
/// `took_over_from`: the runner whose silent claim this runner took (recorded in the events).
/// Once the run's final event is committed, its work directory is removed (a failed run's is
/// kept with `keep_work`).
pub fn process(
    env: &Environment,
    id: &str,
    need: Need,
    cancel: CancelToken,
    took_over_from: Option<&str>,
) -> Result<Option<Outcome>, Error> {
    let result = carry(env, id, need, cancel, took_over_from);
    let done = result.is_ok() && !env.is_fenced(id) && {
        let state = fold(&journal::read_for_state(&env.git_dir, id).unwrap_or_default()).state;
        let journaled = std::fs::metadata(journal::path(&env.git_dir, id)).map_or(0, |m| m.len());
        let committed = self::tip(env).is_ok_and(|t| {
            let ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
            ledger.run_events_len(t, id).unwrap_or(0) >= journaled
        });
        committed && state.is_terminal() && !(env.keep_work && state != crate::state::RunStatus::Succeeded)
    };
    if done {
        let _ = std::fs::remove_dir_all(super::work_dir(&env.work_root, id));
    }
    result
}

fn carry(
    env: &Environment,
    id: &str,
    need: Need,
    cancel: CancelToken,
    took_over_from: Option<&str>,
) -> Result<Option<Outcome>, Error> {
    let tip = tip(env)?;
    {
        let ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let committed = ledger
            .run_events(tip, id)
            .map_err(|e| Error::Ledger(e.to_string()))?
            .unwrap_or_default();
        if !journal::continues(&env.git_dir, id, &committed) {
            let kept = journal::set_aside(&env.git_dir, id).map_err(|e| Error::Journal(e.to_string()))?;
            let mine = std::fs::read(&kept).unwrap_or_default();
            if committed.starts_with(&mine) {
                // Another runner carried the run on from where this one left it (a gate passed
                // elsewhere): nothing of this runner's is lost.
                tracing::debug!(run = %id, "the ledger carries the run on from this runner's journal; continuing from the ledger");
                let _ = std::fs::remove_file(&kept);
            } else {
                tracing::warn!(run = %id, kept = %kept.display(), "the ledger went on without this runner's journal (another runner took the run over); continuing from the ledger");
            }
        }
    }
    let journal = Journal::open(&env.git_dir, id).map_err(|e| Error::Journal(e.to_string()))?;
    // A run another runner started (this one took it over): its journal starts as the ledger.
    if journal::read_for_state(&env.git_dir, id)
        .map_err(Error::Journal)?
        .is_empty()
    {
        let ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let view = super::view(&ledger, tip, id);
        if let Some(why) = view.invalid {
            return Err(Error::Invalid(why));
        }
        let events = view.ledger_events;
        if !events.is_empty() {
            // Only what trusted runners committed may be continued: a pull request could
            // have written "events" of its own.
            let report = crate::ledger::verify::verify_at(&ledger, tip).map_err(|e| Error::Ledger(e.to_string()))?;
            let prefix = format!("runs/{id}/");
            if let Some(p) = report.problems.iter().find(|p| p.path.starts_with(&prefix)) {
                return Err(Error::Invalid(super::Invalid::new(
                    Code::LedgerTampered,
                    p.path.clone(),
                    format!(
                        "refusing to continue run {id}: its ledger files were not written by a trusted runner (commit {}: {})",
                        p.commit, p.message
                    ),
                )));
            }
        }
        drop(ledger);
        for e in events {
            journal.accept(&e).map_err(|e| Error::Journal(e.to_string()))?;
        }
    }
    let prior = journal::read_for_state(&env.git_dir, id).map_err(Error::Journal)?;
    let run_dir = super::work_dir(&env.work_root, id);
    let config = read_config(env, tip);
    let sink = LedgerSink {
        env,
        id,
        journal: &journal,
        run_dir: run_dir.clone(),
        batch: Duration::from_millis(config.batch_ms),
        last_commit: Mutex::new(Instant::now()),
        plan_json: Mutex::new(None),
        evidence: Mutex::new(None),
        steps_done: AtomicUsize::new(steps_done(&prior)),
    };
    match need {
        Need::Nothing => Ok(None),
        Need::Flush => {
            if let Ok((plan, _)) = replan(env, id, &prior) {
                *sink.plan_json.lock().unwrap_or_else(|p| p.into_inner()) = Some(plan.to_plan_json().into_bytes());
                *sink.evidence.lock().unwrap_or_else(|p| p.into_inner()) = Some(evidence_context(env, id, &plan)?);
            }
            let last = prior.last().cloned().unwrap_or_else(|| Event::new("run.progress"));
            sink.commit(&message_for(id, &last, &prior)).map_err(Error::Ledger)?;
            Ok(None)
        }
        Need::Cancel => {
            if !prior.is_empty()
                && let Ok((plan, _)) = replan(env, id, &prior)
            {
                *sink.plan_json.lock().unwrap_or_else(|p| p.into_inner()) = Some(plan.to_plan_json().into_bytes());
                *sink.evidence.lock().unwrap_or_else(|p| p.into_inner()) = Some(evidence_context(env, id, &plan)?);
            }
            let reason = read_text(env, tip, &format!("runs/{id}/cancel.yaml"))
                .and_then(|t| crate::yaml::parse("cancel.yaml", &t, Default::default()).ok())
                .and_then(|n| n.get("reason").and_then(|r| r.as_str().map(str::to_string)))
                .unwrap_or_else(|| "cancelled by request".into());
            append(
                &journal,
                &prior,
                Event::new("run.cancelled")
                    .level("warn")
                    .msg(reason)
                    .data(json!({ "code": Code::RunCancelled.as_str() })),
            );
            let all = journal::read_for_state(&env.git_dir, id).map_err(Error::Journal)?;
            sink.commit(&message_for(id, all.last().expect("just appended"), &all))
                .map_err(Error::Ledger)?;
            Ok(Some(Outcome::Cancelled))
        }
        Need::Start | Need::Recover | Need::Waiting => {
            let prepared = if prior.is_empty() {
                plan_new(env, id, tip)
            } else {
                replan(env, id, &prior)
            };
            let (plan, files) = match prepared {
                Ok(p) => p,
                Err(r) => return refuse_run(env, id, &journal, &prior, &sink, r),
            };
            // plan.json goes out with the first commit of the run (the first batch, a gate
            // wait or the end), so planning adds no commit of its own before the first step.
            *sink.plan_json.lock().unwrap_or_else(|p| p.into_inner()) = Some(plan.to_plan_json().into_bytes());
            *sink.evidence.lock().unwrap_or_else(|p| p.into_inner()) = Some(evidence_context(env, id, &plan)?);
            if let Some(from) = took_over_from {
                let now = journal::read_for_state(&env.git_dir, id).map_err(Error::Journal)?;
                let msg = format!("took the run over from runner {from}, silent past its claim's lease");
                append(
                    &journal,
                    &now,
                    Event::new("run.claimed")
                        .level("warn")
                        .msg(msg)
                        .data(json!({ "takeover": true, "from": from })),
                );
            }
            let mut prior = journal::read_for_state(&env.git_dir, id).map_err(Error::Journal)?;
            let before = fold(&prior);
            let planned = prior.iter().find(|e| e.kind == "run.planned");
            let trust_commit = planned
                .and_then(|e| e.get("trustCommit").and_then(|v| v.as_str()))
                .and_then(|h| ObjectId::from_hex(h.as_bytes()).ok())
                .unwrap_or(tip);
            let repo_gates = RepoGates {
                env,
                run: id,
                plan: &plan,
                plan_hash: plan.hash(),
                trust_commit,
            };
            let gates = crate::chaos::Gates {
                inner: &repo_gates,
                chaos: env.chaos.as_deref(),
                run: id,
            };
            if need == Need::Waiting {
                // Resume only when the gate's answer changed; new verdicts are recorded either way.
                let gate = before.waiting_gate.clone().unwrap_or_default();
                let step = plan.all_steps().into_iter().find(|s| s.id == gate).cloned();
                let since = before.step(&gate).and_then(|s| s.started.clone());
                let verdict = step.as_ref().and_then(|s| match &s.kind {
                    crate::plan::StepKind::Approval(a) => Some(gates.decide(s, a, since.as_deref())),
                    _ => None,
                });
                if let Some(v) = &verdict {
                    let seen = exec::recorded_keys(&prior);
                    let fresh: Vec<Event> = v
                        .notes
                        .iter()
                        .filter(|n| n.get("key").and_then(|k| k.as_str()).is_some_and(|k| !seen.contains(k)))
                        .cloned()
                        .collect();
                    if !fresh.is_empty() && matches!(v.decision, exec::GateDecision::Waiting) {
                        for n in fresh {
                            let now = journal::read_for_state(&env.git_dir, id).map_err(Error::Journal)?;
                            append(&journal, &now, n.step(&gate));
                        }
                        let all = journal::read_for_state(&env.git_dir, id).map_err(Error::Journal)?;
                        let msg = format!("stella: run {id} approvals recorded at gate {gate}");
                        sink.commit(&msg).map_err(Error::Ledger)?;
                        let _ = all;
                    }
                }
                match verdict.map(|v| v.decision) {
                    Some(exec::GateDecision::Waiting) | None => {
                        return Ok(Some(Outcome::Waiting {
                            step: gate,
                            approval: String::new(),
                        }));
                    }
                    Some(_) => {}
                }
            } else if need == Need::Recover {
                let ahead = prior.len().saturating_sub(view_len(env, tip, id));
                append(
                    &journal,
                    &prior,
                    Event::new("run.recovered")
                        .level("warn")
                        .msg("the runner stopped during this run; resuming from its journal")
                        .data(json!({ "journalAhead": ahead })),
                );
                prior = journal::read_for_state(&env.git_dir, id).map_err(Error::Journal)?;
            }
            let file_secrets = &env.file_secrets;
            let mut secrets = match Secrets::for_plan(&plan, file_secrets, |k| std::env::var(k).ok()) {
                Ok(s) => s,
                Err(d) => return refuse_run(env, id, &journal, &prior, &sink, Refusal::from(d)),
            };
            let mut cfg = ExecConfig::new(id, &run_dir);
            if let Some(ctx) = sink.evidence.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                // Sealed and sandboxed as the trust commit's policy says (the one the plan was
                // checked against).
                cfg.sealed = ctx.sealed;
                cfg.sandbox = exec::sandbox::Sandbox {
                    policy: ctx.sandbox.clone(),
                    hide: env.hidden.clone(),
                };
                ctx.secret_sources = plan
                    .secrets
                    .iter()
                    .filter_map(|d| secrets.source(&d.name).map(|s| (d.name.clone(), s.to_string())))
                    .collect();
            }
            // The runner key never reaches a step; should a step print it anyway, it is masked.
            secrets.mask_also(env.key.secret_forms());
            cfg.secrets = secrets;
            cfg.max_steps = config.max_steps;
            cfg.artifact_bytes = config.artifact_bytes;
            cfg.log_limits = config.log_limits();
            cfg.kill_grace = env.kill_grace;
            cfg.cancel = cancel;
            cfg.chaos = env.chaos.clone();
            let outcome = exec::execute(&plan, &files, &prior, &cfg, &gates, vec![&sink as &dyn EventSink]);
            // The terminal event was committed by the sink; make sure nothing is left behind
            // (compared by size: the ledger's events are a byte prefix of the journal).
            let journaled = std::fs::metadata(journal.path()).map_or(0, |m| m.len());
            let now = self::tip(env)?;
            let committed = {
                let ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
                ledger.run_events_len(now, id).unwrap_or(0)
            };
            if journaled > committed {
                let all = journal::read_for_state(&env.git_dir, id).map_err(Error::Journal)?;
                sink.commit(&message_for(id, all.last().expect("has events"), &all))
                    .map_err(Error::Ledger)?;
            }
            Ok(Some(outcome))
        }
    }
}

/// What the evidence needs beyond the events: the request as committed, the pack path and
/// the repository policy of the request's commit.
fn evidence_context(env: &Environment, id: &str, plan: &Plan) -> Result<EvidenceContext, Error> {
    let prior = journal::read_for_state(&env.git_dir, id).map_err(Error::Journal)?;
    let planned = prior.iter().find(|e| e.kind == "run.planned");
    let field = |k: &str| {
        planned
            .and_then(|e| e.get(k))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let commit = ObjectId::from_hex(field("requestCommit").as_bytes())
        .map_err(|e| Error::Journal(format!("requestCommit: {e}")))?;
    let request = read_text(env, commit, &format!("runs/{id}/request.yaml"))
        .unwrap_or_default()
        .into_bytes();
    let trust = ObjectId::from_hex(field("trustCommit").as_bytes()).unwrap_or(commit);
    let config = read_config(env, trust);
    Ok(EvidenceContext {
        plan: plan.clone(),
        pack_path: field("pack"),
        request,
        sealed: config.sealed,
        network_allow: config.network_allow.clone(),
        secret_sources: Default::default(),
        sandbox: config.sandbox.clone(),
    })
}

fn tip(env: &Environment) -> Result<ObjectId, Error> {
    let mut ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
    ledger.refresh();
    ledger
        .tip()
        .map_err(|e| Error::Ledger(e.to_string()))?
        .ok_or_else(|| Error::Ledger("the branch has no commits".into()))
}

fn view_len(env: &Environment, tip: ObjectId, id: &str) -> usize {
    let ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
    // Events are whole lines, one each: counting lines is counting events.
    ledger
        .run_events(tip, id)
        .ok()
        .flatten()
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

fn read_text(env: &Environment, commit: ObjectId, path: &str) -> Option<String> {
    let ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
    ledger
        .read(commit, path)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The repository policy at `commit` (defaults when there is none or it is broken; a broken
/// config is reported by `stella doctor` and the daemon's start-up, not per run).
pub fn read_config(env: &Environment, commit: ObjectId) -> Config {
    read_text(env, commit, CONFIG_PATH)
        .and_then(|t| Config::parse(CONFIG_PATH, &t).ok())
        .unwrap_or_default()
}

/// Appends an event with the next sequence number straight to the journal.
fn append(journal: &Journal, prior: &[Event], mut e: Event) {
    e.seq = fold(prior).next_seq;
    e.ts = now_rfc3339();
    if let Err(err) = journal.accept(&e) {
        tracing::error!(error = %err, "cannot append to the journal");
    }
}

/// Records a refusal as the run's failure and commits it.
fn refuse_run(
    env: &Environment,
    id: &str,
    journal: &Journal,
    prior: &[Event],
    sink: &LedgerSink,
    r: Refusal,
) -> Result<Option<Outcome>, Error> {
    fail(journal, prior, &r);
    let all = journal::read_for_state(&env.git_dir, id).map_err(Error::Journal)?;
    sink.commit(&message_for(id, all.last().expect("just appended"), &all))
        .map_err(Error::Ledger)?;
    Ok(Some(Outcome::Failed {
        code: r.code,
        message: r.message,
    }))
}

fn fail(journal: &Journal, prior: &[Event], r: &Refusal) {
    let mut data = json!({ "code": r.code.as_str() });
    if let Some(p) = &r.problems {
        data["problems"] = serde_json::to_value(p).unwrap_or_default();
    }
    append(
        journal,
        prior,
        Event::new("run.failed")
            .level("error")
            .msg(r.message.clone())
            .data(data),
    );
}

/// Plans a new request from the objects of `commit` and records `run.planned`.
fn plan_new(env: &Environment, id: &str, commit: ObjectId) -> Result<(Plan, PackFiles), Refusal> {
    let request_path = format!("runs/{id}/request.yaml");
    let text = read_text(env, commit, &request_path)
        .ok_or_else(|| refuse(Code::RequestInvalid, format!("{request_path} is missing")))?;
    let request = Request::parse(&request_path, &text)?;
    if let Some(token) = &request.run_token
        && let Some(first) = first_with_token(env, commit, token, id)
    {
        return Err(refuse(
            Code::RunDuplicate,
            format!("duplicate of run {first} (same runToken); not executed"),
        ));
    }
    // Repository policy (sealed, network.allow) is trusted only from before the request.
    let trust = trust_commit(env, commit, &request_path);
    let config = &read_config(env, trust);
    let files = pack_at(env, commit, &request.pack)?;
    let plan = crate::plan::from_files(&files, request.inputs.as_ref(), &request_path, &config.plan_config())?;
    let hash = plan.hash();
    if let Some(pinned) = &request.plan_hash
        && *pinned != hash
    {
        return Err(refuse(
            Code::PackHashMismatch,
            format!("the request pins {pinned}, but the pack and inputs at this commit plan to {hash}"),
        ));
    }
    // A request reviewed on a pull request must run the plan its note showed.
    let noted = {
        let ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
        crate::remote::noted_plan_hash(&ledger, commit, id)
    };
    if let Some((at, noted)) = noted
        && noted != hash
    {
        return Err(refuse(
            Code::PackHashMismatch,
            format!(
                "after the merge the request plans to {hash}, but the plan noted on pull request commit {} was {noted}",
                &at.to_string()[..12]
            ),
        ));
    }
    let journal = Journal::open(&env.git_dir, id).map_err(|e| refuse(Code::Io, e.to_string()))?;
    let mut data = json!({
        "planHash": hash, "pack": request.pack, "version": plan.pack.version, "requestCommit": commit.to_string(),
        "requestSha256": sha256_hex(text.as_bytes()), "trustCommit": trust.to_string(),
    });
    if let Some(t) = &request.run_token {
        data["runToken"] = json!(t);
    }
    append(
        &journal,
        &[],
        Event::new("run.planned")
            .msg(format!("planned {} {}", plan.pack.name, plan.pack.version))
            .data(data),
    );
    Ok((plan, files))
}

/// Re-plans an interrupted run from the commit it was planned at, and checks it is the same plan.
fn replan(env: &Environment, id: &str, prior: &[Event]) -> Result<(Plan, PackFiles), Refusal> {
    let planned = prior
        .iter()
        .find(|e| e.kind == "run.planned")
        .ok_or_else(|| refuse(Code::RequestInvalid, "the journal has no run.planned event"))?;
    let field = |k: &str| {
        planned
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_default()
    };
    let commit = ObjectId::from_hex(field("requestCommit").as_bytes())
        .map_err(|e| refuse(Code::LedgerTampered, format!("bad requestCommit: {e}")))?;
    let trust = ObjectId::from_hex(field("trustCommit").as_bytes()).unwrap_or(commit);
    let config = read_config(env, trust);
    let request_path = format!("runs/{id}/request.yaml");
    let text = read_text(env, commit, &request_path)
        .ok_or_else(|| refuse(Code::RequestInvalid, format!("{request_path} is missing")))?;
    // Requests are immutable: the request at the tip must still be the one that was planned.
    let tip_text = tip(env).ok().and_then(|t| read_text(env, t, &request_path));
    if tip_text
        .as_deref()
        .is_some_and(|t| sha256_hex(t.as_bytes()) != field("requestSha256"))
    {
        return Err(refuse(
            Code::PackHashMismatch,
            format!("{request_path} changed after the run was planned; requests are immutable"),
        ));
    }
    let request = Request::parse(&request_path, &text)?;
    let files = pack_at(env, commit, &request.pack)?;
    let plan = crate::plan::from_files(&files, request.inputs.as_ref(), &request_path, &config.plan_config())?;
    if plan.hash() != field("planHash") {
        return Err(refuse(
            Code::PackHashMismatch,
            format!("re-planning gives {} instead of {}", plan.hash(), field("planHash")),
        ));
    }
    Ok((plan, files))
}

/// The commit whose trust files judge a request: the first parent of the commit that brought
/// the request onto the branch (or that commit itself when it has no parent).
fn trust_commit(env: &Environment, tip: ObjectId, request_path: &str) -> ObjectId {
    let ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
    let before_request = before_arrival(&ledger, tip, request_path);
    // A pull request merged by fast-forward puts its own earlier commits (say, one adding an
    // approver) before the request on the branch. The branch as this runner last saw it
    // before the request arrived is older than all of them: trust that when it is known.
    for seen in seen_tips(&env.git_dir).into_iter().rev() {
        let lacks = ledger.read(seen, request_path).ok().flatten().is_none();
        if lacks && ledger.is_ancestor(seen, before_request).unwrap_or(false) {
            return seen;
        }
    }
    before_request
}

/// The newest commit on the first-parent line from `tip` that lacks `path` (or the root, when
/// every commit has it). A request, once on the branch, stays there unchanged (`ledger verify`
/// holds it to that), so along the line "has it" turns into "lacks it" exactly once: found by
/// galloping then bisecting, reading the path O(log n) times, not once per runner commit made
/// since the request arrived (which made planning quadratic on a busy ledger).
fn before_arrival(ledger: &Ledger, tip: ObjectId, path: &str) -> ObjectId {
    let has = |c: ObjectId| ledger.read(c, path).ok().flatten().is_some();
    let mut chain = vec![tip];
    // Extends the chain to hold index `i` if the history is that long; false at the root.
    let reach = |chain: &mut Vec<ObjectId>, i: usize| {
        while chain.len() <= i {
            let last = *chain.last().expect("non-empty");
            match ledger.parents(last).ok().and_then(|p| p.first().copied()) {
                Some(parent) => chain.push(parent),
                None => return false,
            }
        }
        true
    };
    // Invariant: chain[lo] has the path; chain[hi] lacks it (once found).
    let (mut lo, mut hi) = (0, 1);
    loop {
        if !reach(&mut chain, hi) {
            let root = chain.len() - 1;
            if has(chain[root]) {
                return chain[root];
            }
            hi = root;
            break;
        }
        if !has(chain[hi]) {
            break;
        }
        lo = hi;
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if has(chain[mid]) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    chain[hi]
}

/// Where the daemon keeps the last branch tip it saw (`.git/stella/last-seen`): a later tip
/// that does not contain it means history was rewritten.
pub fn last_seen_path(git_dir: &std::path::Path) -> std::path::PathBuf {
    git_dir.join("stella").join("last-seen")
}

/// The branch tips this runner has seen, oldest first (`.git/stella/seen`).
pub fn seen_tips(git_dir: &std::path::Path) -> Vec<ObjectId> {
    std::fs::read_to_string(git_dir.join("stella").join("seen"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| ObjectId::from_hex(l.trim().as_bytes()).ok())
        .collect()
}

/// Records a branch tip as seen (kept to the last 1,000).
pub fn record_seen(git_dir: &std::path::Path, tip: ObjectId) {
    let mut tips = seen_tips(git_dir);
    if tips.last() == Some(&tip) {
        return;
    }
    tips.push(tip);
    let keep = tips.len().saturating_sub(1000);
    let text: String = tips[keep..].iter().map(|t| format!("{t}\n")).collect();
    let path = git_dir.join("stella").join("seen");
    let tmp = path.with_extension("tmp");
    if std::fs::create_dir_all(path.parent().expect("has a parent")).is_ok() && std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(tmp, path);
    }
}

fn pack_at(env: &Environment, commit: ObjectId, pack: &str) -> Result<PackFiles, Refusal> {
    let ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
    let files = ledger
        .files_under(commit, pack)
        .map_err(|e| refuse(Code::PackInvalid, e.to_string()))?;
    if files.is_empty() {
        return Err(refuse(Code::PackInvalid, format!("{pack}: no pack at commit {commit}")));
    }
    PackFiles::from_entries(pack, files).map_err(|d| Refusal::from(Diagnostics::from(d)))
}

/// The run that owns `token`, if it is not `id`: a run already planned in the ledger at
/// `commit` owns it; among unplanned ones the smallest id does. Deterministic, so two runners
/// (or two workers of one) reach the same verdict.
fn first_with_token(env: &Environment, commit: ObjectId, token: &str, id: &str) -> Option<String> {
    let ledger = env.ledger.lock().unwrap_or_else(|p| p.into_inner());
    let mut holders = Vec::new();
    for (other, is_dir) in ledger.list(commit, "runs").ok()? {
        if !is_dir || !crate::run_id::is_valid(&other) {
            continue;
        }
        let Some(text) = ledger
            .read(commit, &format!("runs/{other}/request.yaml"))
            .ok()
            .flatten()
        else {
            continue;
        };
        let Ok(req) = Request::parse("request.yaml", &String::from_utf8_lossy(&text)) else {
            continue;
        };
        if req.run_token.as_deref() == Some(token) {
            let planned = ledger.has_run_events(commit, &other).unwrap_or(false);
            holders.push((!planned, other));
        }
    }
    holders.sort();
    holders
        .into_iter()
        .next()
        .map(|(_, owner)| owner)
        .filter(|owner| owner != id)
}
