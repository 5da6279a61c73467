//! The queueing thread: turns each recorded event into one outbox entry per target that wants
//! it, the targets read from the run's trust commit (so a request cannot redirect them), then
//! moves the run's high-water mark. At start, and whenever an event may have been missed, it
//! looks at the run's events past the mark (journal, else ledger) again: a crash between an
//! event being journaled and its entry being written loses nothing. Sends nothing itself.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;

use gix::ObjectId;
use stella_engine::config::{CONFIG_PATH, Config};
use stella_engine::event::Event;
use stella_engine::notify::body::{self, About};
use stella_engine::notify::outbox::{Entry, Outbox, Put};
use stella_engine::notify::{Endpoint, Target};
use stella_engine::redact::Redactor;
use stella_engine::runs::{self, Environment};
use tracing::{debug, warn};

use super::deliver::Pool;
use super::{Msg, now_ms, secret_value};

/// The notify targets of one run, and the redaction its bodies pass.
struct RunTargets {
    targets: Vec<Target>,
    redactor: Redactor,
}

pub(super) struct Enqueuer {
    env: Arc<Environment>,
    outbox: Outbox,
    pool: Pool,
    in_flight: Arc<AtomicUsize>,
    /// Runs being worked on, with their targets.
    runs: HashMap<String, Arc<RunTargets>>,
    /// Runs whose terminal event was handled: their mark goes when their work ends.
    finished: HashSet<String>,
}

fn is_terminal(kind: &str) -> bool {
    matches!(kind, "run.succeeded" | "run.failed" | "run.cancelled")
}

impl Enqueuer {
    pub(super) fn new(env: Arc<Environment>, outbox: Outbox, pool: Pool, in_flight: Arc<AtomicUsize>) -> Enqueuer {
        Enqueuer {
            env,
            outbox,
            pool,
            in_flight,
            runs: HashMap::new(),
            finished: HashSet::new(),
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        self.pool.start_waiting();
        for run in self.outbox.marked_runs() {
            self.catch_up(&run);
            if self.finished.remove(&run) {
                self.outbox.clear_mark(&run);
            }
            self.runs.remove(&run);
        }
        for msg in rx {
            match msg {
                Msg::CatchUp(run) => self.catch_up(&run),
                Msg::Event(run, e) => self.event(&run, &e),
                Msg::End(run) => {
                    if self.finished.remove(&run) {
                        self.outbox.clear_mark(&run);
                    }
                    self.runs.remove(&run);
                }
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The run's events as this runner holds them: the journal, else the ledger at the tip.
    fn events(&self, run: &str) -> Vec<Event> {
        let journaled = stella_engine::journal::read_for_state(&self.env.git_dir, run).unwrap_or_default();
        if !journaled.is_empty() {
            return journaled;
        }
        let ledger = self.env.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(Some(tip)) = ledger.tip() else { return Vec::new() };
        runs::find(&ledger, tip, run)
            .map(|v| v.events().to_vec())
            .unwrap_or_default()
    }

    /// Queues what the run's events past its mark hold for the targets.
    fn catch_up(&mut self, run: &str) {
        let Some(mark) = self.outbox.mark(run) else { return };
        let events = self.events(run);
        for e in events.iter().filter(|e| mark.is_none_or(|m| e.seq > m)) {
            if !stella_engine::notify::never_sent(&e.kind) {
                self.queue(run, e, Some(&events));
            }
        }
        if let Some(last) = events.last()
            && mark.is_none_or(|m| last.seq > m)
        {
            let _ = self.outbox.set_mark(run, Some(last.seq));
        }
        if events.iter().any(|e| is_terminal(&e.kind)) {
            self.finished.insert(run.to_string());
        }
    }

    fn event(&mut self, run: &str, e: &Event) {
        if is_terminal(&e.kind) {
            self.finished.insert(run.to_string());
        }
        // A run without targets needs no mark moved: nothing of it can be lost.
        if self.targets(run, None).targets.is_empty() {
            return;
        }
        let mark = self.outbox.mark(run).flatten();
        if mark.is_some_and(|m| e.seq <= m) {
            return;
        }
        self.queue(run, e, None);
        if let Err(err) = self.outbox.set_mark(run, Some(e.seq)) {
            warn!(run = %run, error = %err, "notify: cannot move the run's mark");
        }
    }

    /// One entry per target of the run that wants `e`.
    fn queue(&mut self, run: &str, e: &Event, known: Option<&[Event]>) {
        let targets = self.targets(run, known);
        for t in targets.targets.iter().filter(|t| t.wants(&e.kind)) {
            let id = t.webhook_id(run, e.seq);
            let body = body::build(t.format, &About { run, id: &id, event: e }, &targets.redactor);
            let now = now_ms();
            let entry = Entry {
                id: id.clone(),
                target: t.id.clone(),
                run: run.to_string(),
                seq: e.seq,
                kind: e.kind.clone(),
                endpoint: t.endpoint.clone(),
                secret: t.secret.clone(),
                content_type: t.format.content_type().to_string(),
                body,
                created_ms: now,
                attempts: 0,
                due_ms: now,
                last_error: None,
            };
            match self.outbox.put(&entry) {
                Ok(Put::Added) => self.pool.wake(&t.id),
                Ok(Put::Exists) => {}
                Ok(Put::Full) => {
                    warn!(target = %t.id, id = %id, "notify: the target's outbox is full; the notification is dropped");
                    self.pool.dropped(&t.id);
                }
                Err(err) => warn!(target = %t.id, id = %id, error = %err, "notify: cannot write the outbox entry"),
            }
        }
    }

    /// The targets of `run`: those of the config at its trust commit.
    fn targets(&mut self, run: &str, known: Option<&[Event]>) -> Arc<RunTargets> {
        if let Some(t) = self.runs.get(run) {
            return t.clone();
        }
        let read;
        let events = match known {
            Some(k) => k,
            None => {
                read = self.events(run);
                &read[..]
            }
        };
        let config = self.trust_config(run, events);
        let mut values: Vec<String> = self.env.key.secret_forms();
        for t in &config.notify {
            if let Endpoint::UrlSecret(name) = &t.endpoint {
                values.extend(secret_value(&self.env.file_secrets, name));
            }
            values.extend(secret_value(&self.env.file_secrets, &t.secret));
        }
        let found = Arc::new(RunTargets {
            redactor: Redactor::new(values.iter().map(String::as_str)),
            targets: config.notify,
        });
        self.runs.insert(run.to_string(), found.clone());
        found
    }

    /// The config at the run's trust commit (`run.planned` names it; a run refused before its
    /// plan is judged as planning would have judged it); defaults when unreadable.
    fn trust_config(&self, run: &str, events: &[Event]) -> Config {
        let planned = events
            .iter()
            .find(|e| e.kind == "run.planned")
            .and_then(|e| e.get("trustCommit").and_then(|v| v.as_str()))
            .and_then(|h| ObjectId::from_hex(h.as_bytes()).ok());
        let trust = planned.or_else(|| {
            let tip = self
                .env
                .ledger
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .tip()
                .ok()
                .flatten()?;
            let dir = self.env.run_dir(run).ok()?;
            Some(runs::trust_commit(&self.env, tip, &dir.file("request.yaml")))
        });
        let Some(trust) = trust else { return Config::default() };
        let text = self
            .env
            .ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read(trust, CONFIG_PATH)
            .ok()
            .flatten();
        match text.map(|t| Config::parse(CONFIG_PATH, &String::from_utf8_lossy(&t))) {
            Some(Ok(c)) => c,
            Some(Err(_)) => {
                debug!(run = %run, "notify: the trust commit's config is invalid; no targets");
                Config::default()
            }
            None => Config::default(),
        }
    }
}
