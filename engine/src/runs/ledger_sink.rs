//! The event sink of a run in a repository: every event goes to the journal first, and the
//! run's ledger files (events, plan, artifacts) are committed in batches — at once at a gate
//! wait and at the end of the run, otherwise at most every `commit.batchMs`. Each commit adds
//! one events segment holding what the ledger lacks (`ledger::events`), so neither a commit nor
//! the runner's memory grows with the length of the run. The journal is forced to disk before
//! every commit; a fenced run is never committed. The environment's observer is told of every
//! event recorded here, after the journal holds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gix::ObjectId;

use super::{Environment, Error};
use crate::event::{Event, EventSink};
use crate::journal::{self, Journal};
use crate::layout::RunDir;
use crate::ledger::FileWrite;
use crate::plan::Plan;

/// The executor's sink for one run in a repository.
pub struct LedgerSink<'a> {
    env: &'a Environment,
    id: &'a str,
    dir: &'a RunDir,
    journal: &'a Journal,
    run_dir: PathBuf,
    batch: Duration,
    last_commit: Mutex<Instant>,
    /// The canonical plan, written with every commit of the run (unchanged, it costs nothing).
    plan_json: Mutex<Option<Vec<u8>>>,
    /// What the evidence of the run is made from; set once the run is planned.
    pub evidence: Mutex<Option<EvidenceContext>>,
    /// Steps that succeeded so far (for commit messages), counted as events pass.
    steps_done: AtomicUsize,
}

impl<'a> LedgerSink<'a> {
    /// The sink of run `id`, whose journal holds `prior` so far; `run_dir` is its work directory.
    pub fn new(
        env: &'a Environment,
        dir: &'a RunDir,
        journal: &'a Journal,
        run_dir: PathBuf,
        batch: Duration,
        prior: &[Event],
    ) -> LedgerSink<'a> {
        if let Some(o) = &env.observer {
            o.begin(&dir.id, prior);
        }
        LedgerSink {
            env,
            id: &dir.id,
            dir,
            journal,
            run_dir,
            batch,
            last_commit: Mutex::new(Instant::now()),
            plan_json: Mutex::new(None),
            evidence: Mutex::new(None),
            steps_done: AtomicUsize::new(steps_done(prior)),
        }
    }

    /// Sets the run's plan: `plan.json` goes out with the next commit, and the evidence with
    /// the final one.
    pub fn set_plan(&self, plan: &Plan) -> Result<(), Error> {
        *self.plan_json.lock().unwrap_or_else(|p| p.into_inner()) = Some(plan.to_plan_json().into_bytes());
        if let Some(o) = &self.env.observer {
            o.planned(self.id, plan);
        }
        let context = EvidenceContext::for_run(self.env, self.dir, plan)?;
        *self.evidence.lock().unwrap_or_else(|p| p.into_inner()) = Some(context);
        Ok(())
    }
}

/// The parts of a run's evidence that events do not hold.
pub struct EvidenceContext {
    pub plan: crate::plan::Plan,
    pub pack_path: String,
    pub request: Vec<u8>,
    pub sealed: bool,
    pub network_allow: Vec<String>,
    pub secret_sources: BTreeMap<String, String>,
    /// The trust commit's `sandbox:` policy, recorded in the attestation.
    pub sandbox: crate::config::SandboxPolicy,
}

impl EvidenceContext {
    /// What the evidence of run `id` needs beyond the events: the request as committed, the
    /// pack path and the repository policy of the request's trust commit.
    fn for_run(env: &Environment, dir: &RunDir, plan: &Plan) -> Result<EvidenceContext, Error> {
        let prior = journal::read_for_state(&env.git_dir, &dir.id)?;
        let planned = prior.iter().find(|e| e.kind == "run.planned");
        let field = |k: &str| {
            planned
                .and_then(|e| e.get(k))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let commit = ObjectId::from_hex(field("requestCommit").as_bytes()).map_err(Error::RequestCommit)?;
        let request = env
            .read_text(commit, &dir.file("request.yaml"))
            .unwrap_or_default()
            .into_bytes();
        let trust = ObjectId::from_hex(field("trustCommit").as_bytes()).unwrap_or(commit);
        let config = env.config_at(trust);
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
}

impl LedgerSink<'_> {
    /// Commits everything of the run the ledger lacks, with `message`: the journal's events
    /// past those the ledger holds, as a new segment.
    pub fn commit(&self, message: &str) -> Result<(), Error> {
        if self.env.is_fenced(self.id) {
            return Err(Error::Fenced(self.id.to_string()));
        }
        let committed = {
            let ledger = self.env.ledger();
            match ledger.tip()? {
                Some(tip) => ledger.run_events_len(tip, self.dir)?,
                None => 0,
            }
        };
        let fresh = self.journal.contents_from(committed).map_err(Error::JournalTail)?;
        let mut writes = Vec::new();
        if !fresh.is_empty() {
            let seq = crate::ledger::events::first_seq(&fresh).ok_or_else(|| Error::Discontinued {
                run: self.id.to_string(),
                at: committed,
            })?;
            writes.push(FileWrite {
                path: crate::ledger::events::segment_path(self.dir, seq),
                bytes: fresh,
            });
        }
        if let Some(plan) = self.plan_json.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            writes.push(FileWrite {
                path: self.dir.file("plan.json"),
                bytes: plan,
            });
        }
        writes.extend(artifact_writes(&self.run_dir, self.dir)?);
        if let Some(evidence) = self.evidence_writes(&writes)? {
            writes.extend(evidence);
        }
        // The ledger never holds an event the journal might still lose.
        self.journal.sync().map_err(|source| Error::JournalSync {
            path: self.journal.path().to_path_buf(),
            source,
        })?;
        self.env.commit_together(writes, message.to_string())?;
        *self.last_commit.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        Ok(())
    }
}

impl LedgerSink<'_> {
    /// At the end of a run (its events hold a terminal event): the attestation and manifest.
    fn evidence_writes(&self, writes: &[FileWrite]) -> Result<Option<Vec<FileWrite>>, Error> {
        let guard = self.evidence.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ctx) = guard.as_ref() else { return Ok(None) };
        let prefix = format!("{}/", self.dir.dir());
        // Every runner file of the run: what the ledger holds, with this commit's writes over it.
        let mut run_files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        {
            let ledger = self.env.ledger();
            if let Some(tip) = ledger.tip()? {
                for (rel, bytes, _) in ledger.files_under(tip, &self.dir.dir()).unwrap_or_default() {
                    if crate::ledger::is_runner_path(&format!("{prefix}{rel}")) {
                        run_files.insert(rel, bytes);
                    }
                }
            }
        }
        for w in writes {
            if let Some(rel) = w.path.strip_prefix(&prefix) {
                run_files.insert(rel.to_string(), w.bytes.clone());
            }
        }
        // The events in their order: the legacy file, then the segments by seq.
        let events = crate::ledger::events::concat(run_files.iter().map(|(rel, b)| (rel.as_str(), b.as_slice())))
            .map(|bytes| crate::event::read_ndjson_for_state(&String::from_utf8_lossy(&bytes)).unwrap_or_default())
            .unwrap_or_default();
        if !crate::state::fold(&events).state.is_terminal() {
            return Ok(None);
        }
        let mut approvals = BTreeMap::new();
        let cancel;
        {
            let ledger = self.env.ledger();
            let tip = ledger.tip()?;
            cancel = tip.and_then(|t| ledger.read(t, &format!("{prefix}cancel.yaml")).ok().flatten());
            // Every approval file of the run's gates, counted or not: the evidence covers them all.
            if let Some(t) = tip {
                let dir = self.dir.approvals();
                for (rel, bytes, _) in ledger.files_under(t, &dir).unwrap_or_default() {
                    approvals.insert(format!("{dir}/{rel}"), bytes);
                }
            }
        }
        let record = crate::evidence::RunRecord {
            run_id: self.id,
            dir: self.dir,
            pack_path: &ctx.pack_path,
            plan: &ctx.plan,
            events: &events,
            run_files: &run_files,
            request: &ctx.request,
            cancel: cancel.as_deref(),
            approvals: &approvals,
            sealed: ctx.sealed,
            network_allow: &ctx.network_allow,
            sandbox: crate::exec::sandbox::Sandbox {
                policy: ctx.sandbox.clone(),
                hide: Vec::new(),
            }
            .describe(),
            secret_sources: &ctx.secret_sources,
        };
        let (attestation, manifest) = crate::evidence::build(&record, &self.env.key);
        Ok(Some(vec![
            FileWrite {
                path: format!("{prefix}{}", crate::evidence::ATTESTATION),
                bytes: attestation,
            },
            FileWrite {
                path: format!("{prefix}{}", crate::evidence::MANIFEST),
                bytes: manifest,
            },
        ]))
    }
}

/// The run's artifacts as ledger files: `<run dir>/artifacts/<step>/<name>`.
fn artifact_writes(run_dir: &Path, dir: &RunDir) -> Result<Vec<FileWrite>, Error> {
    let root = run_dir.join("artifacts");
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    for entry in walkdir::WalkDir::new(&root).follow_links(false).sort_by_file_name() {
        let entry = entry.map_err(Error::Artifacts)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(run_dir)
            .expect("under the run dir")
            .to_string_lossy()
            .replace('\\', "/");
        let bytes = std::fs::read(entry.path()).map_err(|source| Error::Artifact {
            path: rel.clone(),
            source,
        })?;
        out.push(FileWrite {
            path: dir.file(&rel),
            bytes,
        });
    }
    Ok(out)
}

/// Whether `e` is a step that succeeded by running (what commit messages count).
fn is_step_done(e: &Event) -> bool {
    e.kind == "step.succeeded" && e.get("attempt").is_some()
}

/// How many steps of `events` succeeded by running.
fn steps_done(events: &[Event]) -> usize {
    events.iter().filter(|x| is_step_done(x)).count()
}

/// The commit message for an event that ends a batch.
pub fn message_for(id: &str, e: &Event, journal: &[Event]) -> String {
    message(id, e, steps_done(journal))
}

/// The commit message for an event that ends a batch, with `steps` steps done.
fn message(id: &str, e: &Event, steps: usize) -> String {
    let secs = e
        .get("durationMs")
        .and_then(|v| v.as_u64())
        .map_or(String::new(), |ms| format!(", {:.1}s", ms as f64 / 1000.0));
    let plural = if steps == 1 { "" } else { "s" };
    match e.kind.as_str() {
        "run.succeeded" => format!("stella: run {id} succeeded ({steps} step{plural}{secs})"),
        "run.failed" => format!("stella: run {id} failed: {}", e.msg.as_deref().unwrap_or("")),
        "run.cancelled" => format!("stella: run {id} cancelled"),
        "gate.waiting" | "run.waiting" => {
            format!("stella: run {id} waiting at gate {}", e.step.as_deref().unwrap_or(""))
        }
        _ => format!("stella: run {id} in progress ({steps} step{plural} done)"),
    }
}

impl LedgerSink<'_> {
    /// Appends `event` to the journal, then tells the observer; commits nothing.
    pub(super) fn record(&self, event: &Event) -> std::io::Result<()> {
        self.journal.accept(event)?;
        if let Some(o) = &self.env.observer {
            o.recorded(self.id, event);
        }
        Ok(())
    }
}

impl Drop for LedgerSink<'_> {
    fn drop(&mut self) {
        if let Some(o) = &self.env.observer {
            o.end(self.id);
        }
    }
}

impl EventSink for LedgerSink<'_> {
    fn accept(&self, event: &Event) -> std::io::Result<()> {
        // A stopping daemon killed the steps: what follows is not the run's doing. The journal
        // stays as it was, so the run resumes at the next start.
        if crate::exec::shutting_down() {
            return Ok(());
        }
        self.record(event)?;
        if is_step_done(event) {
            self.steps_done.fetch_add(1, Ordering::SeqCst);
        }
        let urgent = matches!(
            event.kind.as_str(),
            "run.waiting" | "run.succeeded" | "run.failed" | "run.cancelled"
        );
        let due = self.last_commit.lock().unwrap_or_else(|p| p.into_inner()).elapsed() >= self.batch;
        if urgent || due {
            let message = message(self.id, event, self.steps_done.load(Ordering::SeqCst));
            // The journal holds the event; a failed commit is retried at the next batch, and
            // the daemon flushes whatever is left when the run ends.
            if let Err(e) = self.commit(&message) {
                tracing::warn!(run = %self.id, error = %e, "ledger commit failed; the journal keeps the events");
            }
        }
        Ok(())
    }

    fn sync(&self) -> std::io::Result<()> {
        self.journal.sync()
    }
}
