//! One run from request to finished ledger, as its need says: start (plan it, record the plan,
//! execute it with the executor and commit), recover an interrupted run from its journal, flush
//! what the ledger lacks, cancel, re-check a waiting gate, or record a runner's note (`note`). Planning is `planning`'s, trust
//! `trust`'s, commits the `LedgerSink`'s; this room only sequences them.

use std::time::Duration;

use gix::ObjectId;
use serde_json::json;

use super::gates::RepoGates;
use super::ledger_sink::{LedgerSink, message_for};
use super::planning::{self, Refusal};
use super::{Environment, Error, Invalid, Need};
use crate::code::Code;
use crate::config::Config;
use crate::event::{Event, EventSink, now_rfc3339};
use crate::exec::{self, CancelToken, ExecConfig, Gatekeeper, Outcome};
use crate::journal::{self, Journal};
use crate::layout::RunDir;
use crate::plan::Plan;
use crate::secrets::Secrets;
use crate::state::{RunStatus, fold};

/// Carries run `id` forward as `need` says. Returns how the run stands when this call ends.
/// `took_over_from`: the runner whose silent claim this runner took (recorded in the events).
/// Once the run's final event is committed, its work directory is removed (a failed run's is
/// kept with `keep_work`).
pub fn process(
    env: &Environment,
    dir: &RunDir,
    need: Need,
    cancel: CancelToken,
    took_over_from: Option<&str>,
) -> Result<Option<Outcome>, Error> {
    let id = dir.id.as_str();
    let _busy = Busy::hold(id);
    let _under_way = env.commits.under_way();
    let result = carry(env, dir, need, cancel, took_over_from);
    let done = result.is_ok() && !env.is_fenced(id) && {
        let state = fold(&journal::read_for_state(&env.git_dir, id).unwrap_or_default()).state;
        let journaled = std::fs::metadata(journal::path(&env.git_dir, id)).map_or(0, |m| m.len());
        let committed = env
            .tip()
            .is_ok_and(|t| env.ledger().run_events_len(t, dir).unwrap_or(0) >= journaled);
        committed && state.is_terminal() && !(env.keep_work && state != RunStatus::Succeeded)
    };
    if done {
        let _ = std::fs::remove_dir_all(super::work_dir(&env.work_root, id));
    }
    result
}

fn carry(
    env: &Environment,
    dir: &RunDir,
    need: Need,
    cancel: CancelToken,
    took_over_from: Option<&str>,
) -> Result<Option<Outcome>, Error> {
    let id = dir.id.as_str();
    let tip = env.tip()?;
    set_aside_stale_journal(env, dir, tip)?;
    let journal = Journal::open(&env.git_dir, id).map_err(Error::JournalWrite)?;
    // A run another runner started (this one took it over): its journal starts as the ledger.
    if journal::read_for_state(&env.git_dir, id)?.is_empty() {
        continue_from_ledger(env, dir, tip, &journal)?;
    }
    let prior = journal::read_for_state(&env.git_dir, id)?;
    let config = env.config_at(tip);
    let batch = Duration::from_millis(config.batch_ms);
    let sink = LedgerSink::new(env, dir, &journal, super::work_dir(&env.work_root, id), batch, &prior);
    let run = Run {
        env,
        id,
        dir,
        tip,
        config,
        journal: &journal,
        sink: &sink,
    };
    match need {
        Need::Nothing => Ok(None),
        Need::Flush => run.flush(&prior),
        Need::Cancel => run.cancel(&prior),
        Need::Start | Need::Recover | Need::Waiting => run.execute(need, prior, cancel, took_over_from),
    }
}

/// Moves a journal the ledger does not continue aside: another runner carried the run on.
fn set_aside_stale_journal(env: &Environment, dir: &RunDir, tip: ObjectId) -> Result<(), Error> {
    let id = dir.id.as_str();
    let ledger = env.ledger();
    let committed = ledger.run_events(tip, dir)?.unwrap_or_default();
    if journal::continues(&env.git_dir, id, &committed) {
        return Ok(());
    }
    let kept = journal::set_aside(&env.git_dir, id).map_err(Error::JournalWrite)?;
    let mine = std::fs::read(&kept).unwrap_or_default();
    if committed.starts_with(&mine) {
        // Another runner carried the run on from where this one left it (a gate passed
        // elsewhere): nothing of this runner's is lost.
        tracing::debug!(run = %id, "the ledger carries the run on from this runner's journal; continuing from the ledger");
        let _ = std::fs::remove_file(&kept);
    } else {
        tracing::warn!(run = %id, kept = %kept.display(), "the ledger went on without this runner's journal (another runner took the run over); continuing from the ledger");
    }
    Ok(())
}

/// Starts an empty journal as the ledger's events of the run, once `ledger verify` finds that
/// trusted runners wrote them.
fn continue_from_ledger(env: &Environment, dir: &RunDir, tip: ObjectId, journal: &Journal) -> Result<(), Error> {
    let id = dir.id.as_str();
    let ledger = env.ledger();
    let view = super::view(&ledger, tip, dir);
    if let Some(why) = view.invalid {
        return Err(Error::Invalid(why));
    }
    let events = view.ledger_events;
    if !events.is_empty() {
        // Only what trusted runners committed may be continued: a pull request could
        // have written "events" of its own.
        let report = crate::ledger::checkpoint::verify_quickly(&ledger, tip)?;
        let prefix = format!("{}/", dir.dir());
        if let Some(p) = report.problems.iter().find(|p| p.path.starts_with(&prefix)) {
            return Err(Error::Invalid(Invalid::new(
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
        journal.accept(&e).map_err(Error::JournalWrite)?;
    }
    Ok(())
}

/// One run being carried on: its journal and its sink, at the branch tip it was read at.
struct Run<'a> {
    env: &'a Environment,
    id: &'a str,
    dir: &'a RunDir,
    tip: ObjectId,
    /// The repository policy at `tip` (limits and batching; not the trust commit's policy).
    config: Config,
    journal: &'a Journal,
    sink: &'a LedgerSink<'a>,
}

impl Run<'_> {
    /// The run's events as the journal holds them now.
    fn events(&self) -> Result<Vec<Event>, Error> {
        Ok(journal::read_for_state(&self.env.git_dir, self.id)?)
    }

    /// Commits what the ledger lacks with the message for the journal's last event.
    fn commit_last(&self) -> Result<(), Error> {
        let all = self.events()?;
        self.sink
            .commit(&message_for(self.id, all.last().expect("has events"), &all))
    }

    /// Finished here, but the ledger lacks the tail of the events: commit them.
    fn flush(&self, prior: &[Event]) -> Result<Option<Outcome>, Error> {
        if let Ok((plan, _)) = planning::replan(self.env, self.dir, prior) {
            self.sink.set_plan(&plan)?;
        }
        let last = prior.last().cloned().unwrap_or_else(|| Event::new("run.progress"));
        self.sink.commit(&message_for(self.id, &last, prior))?;
        Ok(None)
    }

    /// A cancel request for a run that is not finished: record `run.cancelled` and commit.
    fn cancel(&self, prior: &[Event]) -> Result<Option<Outcome>, Error> {
        if !prior.is_empty()
            && let Ok((plan, _)) = planning::replan(self.env, self.dir, prior)
        {
            self.sink.set_plan(&plan)?;
        }
        let reason = self
            .env
            .read_text(self.tip, &self.dir.file("cancel.yaml"))
            .and_then(|t| crate::yaml::parse("cancel.yaml", &t, Default::default()).ok())
            .and_then(|n| n.get("reason").and_then(|r| r.as_str().map(str::to_string)))
            .unwrap_or_else(|| "cancelled by request".into());
        append(
            self.sink,
            prior,
            Event::new("run.cancelled")
                .level("warn")
                .msg(reason)
                .data(json!({ "code": Code::RunCancelled.as_str() })),
        );
        self.commit_last()?;
        Ok(Some(Outcome::Cancelled))
    }

    /// Start, recover or resume at a gate: plan (or re-plan), then execute what is left.
    fn execute(
        &self,
        need: Need,
        mut prior: Vec<Event>,
        cancel: CancelToken,
        took_over_from: Option<&str>,
    ) -> Result<Option<Outcome>, Error> {
        let (env, id, tip) = (self.env, self.id, self.tip);
        let prepared = if prior.is_empty() {
            planning::plan_new(env, self.dir, tip).map(|planned| {
                append(self.sink, &[], planned.event);
                (planned.plan, planned.files)
            })
        } else {
            planning::replan(env, self.dir, &prior)
        };
        let (plan, files) = match prepared {
            Ok(p) => p,
            Err(r) => return self.refuse(&prior, r),
        };
        // plan.json goes out with the first commit of the run (the first batch, a gate
        // wait or the end), so planning adds no commit of its own before the first step.
        self.sink.set_plan(&plan)?;
        if let Some(from) = took_over_from {
            let msg = format!("took the run over from runner {from}, silent past its claim's lease");
            append(
                self.sink,
                &self.events()?,
                Event::new("run.claimed")
                    .level("warn")
                    .msg(msg)
                    .data(json!({ "takeover": true, "from": from })),
            );
        }
        prior = self.events()?;
        let planned = prior.iter().find(|e| e.kind == "run.planned");
        let trust_commit = planned
            .and_then(|e| e.get("trustCommit").and_then(|v| v.as_str()))
            .and_then(|h| ObjectId::from_hex(h.as_bytes()).ok())
            .unwrap_or(tip);
        let requested_by = planned
            .and_then(|e| e.get("requestedBy").and_then(|v| v.as_str()))
            .map(str::to_string);
        let repo_gates = RepoGates {
            env,
            run: self.dir,
            plan: &plan,
            plan_hash: plan.hash(),
            trust_commit,
            requested_by,
        };
        let gates = exec::chaos_gates::ChaosGates {
            inner: &repo_gates,
            chaos: env.chaos.as_deref(),
            run: id,
        };
        if need == Need::Waiting {
            if let Some(waiting) = self.recheck_gate(&plan, &prior, &gates)? {
                return Ok(Some(waiting));
            }
        } else if need == Need::Recover {
            let ahead = prior.len().saturating_sub(self.ledger_len());
            append(
                self.sink,
                &prior,
                Event::new("run.recovered")
                    .level("warn")
                    .msg("the runner stopped during this run; resuming from its journal")
                    .data(json!({ "journalAhead": ahead })),
            );
            prior = self.events()?;
        }
        let sourced = match super::secret_sources::read(env, &plan, trust_commit) {
            Ok(s) => s,
            Err(m) => return self.refuse(&prior, planning::refuse(Code::SecretSource, m)),
        };
        let mut secrets = match Secrets::gather(&plan, &env.file_secrets, |k| std::env::var(k).ok(), &sourced) {
            Ok(s) => s,
            Err(d) => return self.refuse(&prior, Refusal::from(d)),
        };
        drop(sourced);
        let config = &self.config;
        let run_dir = super::work_dir(&env.work_root, id);
        let mut cfg = ExecConfig::new(id, &run_dir);
        let root = super::secret_files_root(&env.git_dir).join(id);
        cfg.secret_files = std::path::absolute(&root).unwrap_or(root);
        if let Some(ctx) = self.sink.evidence.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            // Sealed and sandboxed as the trust commit's policy says (the one the plan was
            // checked against).
            cfg.sealed = ctx.sealed;
            cfg.sandbox = exec::sandbox::Sandbox {
                policy: ctx.sandbox.clone(),
                hide: [
                    env.hidden.clone(),
                    super::secret_sources::runner_files(env, trust_commit),
                ]
                .concat(),
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
        let planned = prior.iter().find(|e| e.kind == "run.planned");
        cfg.reuse = match super::resume::stage(env, tip, planned, &run_dir) {
            Ok(reuse) => reuse,
            Err((code, message)) => return self.refuse(&prior, planning::refuse(code, message)),
        };
        let outcome = exec::execute(&plan, &files, &prior, &cfg, &gates, vec![self.sink as &dyn EventSink]);
        // The terminal event was committed by the sink; make sure nothing is left behind
        // (compared by size: the ledger's events are a byte prefix of the journal).
        let journaled = std::fs::metadata(self.journal.path()).map_or(0, |m| m.len());
        let now = env.tip()?;
        let committed = env.ledger().run_events_len(now, self.dir).unwrap_or(0);
        if journaled > committed {
            self.commit_last()?;
        }
        Ok(Some(outcome))
    }

    /// A run waiting at a gate: asks the gate again and records new verdicts. `Some(waiting)`
    /// while the gate still waits; `None` once its answer changed and the run goes on.
    fn recheck_gate(&self, plan: &Plan, prior: &[Event], gates: &dyn Gatekeeper) -> Result<Option<Outcome>, Error> {
        let before = fold(prior);
        let gate = before.waiting_gate.clone().unwrap_or_default();
        let step = plan.all_steps().into_iter().find(|s| s.id == gate).cloned();
        let since = before.step(&gate).and_then(|s| s.started.clone());
        let verdict = step.as_ref().and_then(|s| match &s.kind {
            crate::plan::StepKind::Approval(a) => Some(gates.decide(s, a, since.as_deref())),
            _ => None,
        });
        if let Some(v) = &verdict {
            let seen = exec::recorded_keys(prior);
            let fresh: Vec<Event> = v
                .notes
                .iter()
                .filter(|n| n.get("key").and_then(|k| k.as_str()).is_some_and(|k| !seen.contains(k)))
                .cloned()
                .collect();
            if !fresh.is_empty() && matches!(v.decision, exec::GateDecision::Waiting) {
                for n in fresh {
                    append(self.sink, &self.events()?, n.step(&gate));
                }
                let msg = format!("stella: run {} approvals recorded at gate {gate}", self.id);
                self.sink.commit(&msg)?;
            }
        }
        Ok(match verdict.map(|v| v.decision) {
            Some(exec::GateDecision::Waiting) | None => Some(Outcome::Waiting {
                step: gate,
                approval: String::new(),
            }),
            Some(_) => None,
        })
    }

    /// Records a refusal as the run's failure and commits it.
    fn refuse(&self, prior: &[Event], r: Refusal) -> Result<Option<Outcome>, Error> {
        let mut data = json!({ "code": r.code.as_str() });
        if let Some(p) = &r.problems {
            data["problems"] = serde_json::to_value(p).unwrap_or_default();
        }
        append(
            self.sink,
            prior,
            Event::new("run.failed")
                .level("error")
                .msg(r.message.clone())
                .data(data),
        );
        self.commit_last()?;
        Ok(Some(Outcome::Failed {
            code: r.code,
            message: r.message,
        }))
    }

    /// How many events of the run the ledger holds at the tip.
    fn ledger_len(&self) -> usize {
        // Events are whole lines, one each: counting lines is counting events.
        self.env
            .ledger()
            .run_events(self.tip, self.dir)
            .ok()
            .flatten()
            .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
    }
}

/// Appends an event with the next sequence number straight to the journal (its observer told),
/// without the sink's batching.
fn append(sink: &LedgerSink, prior: &[Event], mut e: Event) {
    e.seq = fold(prior).next_seq;
    e.ts = now_rfc3339();
    if let Err(err) = sink.record(&e) {
        tracing::error!(error = %err, "cannot append to the journal");
    }
}

/// Runs being carried on or noted in this process: `process` and `note` never work on one
/// run at once (the daemon already never starts two `process` of a run).
static BUSY: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
static FREED: std::sync::Condvar = std::sync::Condvar::new();

/// Holds run `id` until dropped, waiting while another holds it.
struct Busy(String);

impl Busy {
    fn hold(id: &str) -> Busy {
        let mut busy = BUSY.lock().unwrap_or_else(|p| p.into_inner());
        while busy.iter().any(|b| b == id) {
            busy = FREED.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        busy.push(id.to_string());
        Busy(id.to_string())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.lock().unwrap_or_else(|p| p.into_inner()).retain(|b| b != &self.0);
        FREED.notify_all();
    }
}

/// Records `event`, a runner's note on run `dir` that is no step's doing (`notify.failed`),
/// at the end of the run's events, finished or not, and commits it as a new events segment
/// (nothing else of the run is written: its plan and evidence stay as they are). Skipped when
/// `already` says the events hold it, and for a run another runner holds.
pub fn note(env: &Environment, dir: &RunDir, event: Event, already: impl Fn(&[Event]) -> bool) -> Result<(), Error> {
    let id = dir.id.as_str();
    let _busy = Busy::hold(id);
    if env.is_fenced(id) {
        return Err(Error::Fenced(id.to_string()));
    }
    let tip = env.tip()?;
    set_aside_stale_journal(env, dir, tip)?;
    let journal = Journal::open(&env.git_dir, id).map_err(Error::JournalWrite)?;
    if journal::read_for_state(&env.git_dir, id)?.is_empty() {
        continue_from_ledger(env, dir, tip, &journal)?;
    }
    let prior = journal::read_for_state(&env.git_dir, id)?;
    if prior.is_empty() || already(&prior) {
        return Ok(());
    }
    let batch = Duration::from_millis(env.config_at(tip).batch_ms);
    let sink = LedgerSink::new(env, dir, &journal, super::work_dir(&env.work_root, id), batch, &prior);
    let message = format!("stella: run {id} {}", event.kind);
    append(&sink, &prior, event);
    sink.commit(&message)
}
