//! Notifications out of the daemon (DESIGN section 12). As a `runs::Observer` the `Notifier`
//! is told of each recorded event and hands it, without waiting, to its queueing thread
//! (`enqueue`), which writes an outbox entry per target that wants it; one delivery thread
//! per target (`deliver`) sends them, signed (`client`), with backoff, and records
//! `notify.failed` in the run's events once the horizon has passed. Nothing here runs on a
//! step's path: a full queue drops the event, found again from the run's high-water mark.
//! Never logs a URL from a secret, a signing key, or a body.

pub mod client;
mod deliver;
mod enqueue;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stella_engine::event::Event;
use stella_engine::notify::never_sent;
use stella_engine::notify::outbox::Outbox;
use stella_engine::plan::Plan;
use stella_engine::runs::{Environment, Observer};

use crate::telemetry::Telemetry;

/// How long notifications are retried before `notify.failed` (DESIGN: 24 h).
pub const HORIZON: Duration = Duration::from_secs(24 * 3600);
/// Events waiting to be queued; past it an event is dropped and found again from the mark.
const QUEUE: usize = 4096;

/// Timing of deliveries.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Retried until a notification is this old.
    pub horizon: Duration,
    /// One attempt's limit, connecting included.
    pub timeout: Duration,
}

impl Settings {
    /// The defaults; `STELLA_NOTIFY_HORIZON_MS` shortens the horizon, for tests only.
    pub fn from_env() -> Settings {
        let horizon = std::env::var("STELLA_NOTIFY_HORIZON_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(HORIZON, Duration::from_millis);
        Settings {
            horizon,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A runner secret's value: from `--secrets FILE`, else `STELLA_SECRET_<NAME>`.
pub fn secret_value(file_secrets: &std::collections::BTreeMap<String, String>, name: &str) -> Option<String> {
    file_secrets
        .get(name)
        .cloned()
        .or_else(|| std::env::var(stella_engine::secrets::env_name(name)).ok())
        .filter(|v| !v.is_empty())
}

/// Now, in unix milliseconds.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the notify targets of `config` need and the runner lacks: a runner secret (the
/// signing key, a URL) that is not set, or a signing key that is not `whsec_<base64>`. Their
/// notifications wait in the outbox until a runner that has them delivers them.
pub fn missing_secrets(
    config: &stella_engine::config::Config,
    file_secrets: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for t in &config.notify {
        let mut needs = vec![(t.secret.as_str(), "signing key")];
        if let stella_engine::notify::Endpoint::UrlSecret(name) = &t.endpoint {
            needs.push((name.as_str(), "URL"));
        }
        for (name, what) in needs {
            match secret_value(file_secrets, name) {
                None => out.push(format!(
                    "notify target `{}`: the runner secret `{name}` holding its {what} is not set (--secrets FILE or {}); its notifications wait in the outbox",
                    t.id,
                    stella_engine::secrets::env_name(name)
                )),
                Some(v) if what == "signing key" && stella_engine::notify::sign::check_key(&v).is_err() => {
                    out.push(format!("notify target `{}`: the runner secret `{name}` is not a signing key (`whsec_` followed by base64)", t.id))
                }
                Some(_) => {}
            }
        }
    }
    out
}

enum Msg {
    /// Events of the run may be missing from the outbox: look at its events past its mark.
    CatchUp(String),
    Event(String, Event),
    /// Work on the run ended for now.
    End(String),
}

/// The daemon's notifier: an observer that queues, threads that deliver.
pub struct Notifier {
    tx: SyncSender<Msg>,
    outbox: Outbox,
    /// Runs with an event dropped from a full queue.
    lost: Mutex<HashSet<String>>,
    /// Messages sent and not yet handled.
    in_flight: Arc<AtomicUsize>,
}

/// The notifier's threads, not started yet: started once the environment they need exists
/// (it holds the notifier as its observer).
pub struct Starter {
    rx: Receiver<Msg>,
    outbox: Outbox,
    in_flight: Arc<AtomicUsize>,
}

impl Starter {
    /// Starts the queueing thread (which first finds what a crash left unqueued) and a
    /// delivery thread for each target with notifications waiting.
    pub fn start(self, env: Arc<Environment>, telemetry: Arc<Telemetry>, settings: Settings) -> std::io::Result<()> {
        let pool = deliver::Pool::new(env.clone(), self.outbox.clone(), telemetry, settings);
        let queue = enqueue::Enqueuer::new(env, self.outbox, pool, self.in_flight);
        let rx = self.rx;
        std::thread::Builder::new()
            .name("notify-queue".into())
            .spawn(move || queue.run(rx))?;
        Ok(())
    }
}

impl Notifier {
    /// The notifier of the repository whose git directory is `git_dir`; events told to it
    /// wait in its queue until `Starter::start`.
    pub fn new(git_dir: &std::path::Path) -> std::io::Result<(Arc<Notifier>, Starter)> {
        let outbox = Outbox::open(git_dir)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let notifier = Arc::new(Notifier {
            tx,
            outbox: outbox.clone(),
            lost: Mutex::new(HashSet::new()),
            in_flight: in_flight.clone(),
        });
        Ok((notifier, Starter { rx, outbox, in_flight }))
    }

    fn send(&self, run: &str, msg: Msg) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if lost.contains(run) {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            if self.tx.try_send(Msg::CatchUp(run.to_string())).is_err() {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            lost.remove(run);
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.tx.try_send(msg) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if matches!(e, TrySendError::Full(_)) {
                tracing::warn!(run = %run, "notify: the queue is full; the run's events are looked at again later");
                lost.insert(run.to_string());
            }
        }
    }

    /// Waits up to `limit` for every queued event to be handled and every notification
    /// waiting to be delivered or given up (`daemon --once` before it ends).
    pub fn drain(&self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            let idle = self.in_flight.load(Ordering::SeqCst) == 0
                && self.outbox.targets().iter().all(|t| self.outbox.pending(t).is_empty())
                && self.outbox.failed().is_empty();
            if idle {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Observer for Notifier {
    fn begin(&self, run: &str, prior: &[Event]) {
        let last = prior.last().map(|e| e.seq);
        match self.outbox.mark(run) {
            // Not looked at before: what happened before this runner saw the run is not news.
            None => {
                if let Err(e) = self.outbox.set_mark(run, last) {
                    tracing::warn!(run = %run, error = %e, "notify: cannot write the run's mark");
                }
            }
            Some(mark) if last > mark => self.send(run, Msg::CatchUp(run.to_string())),
            Some(_) => {}
        }
    }

    fn planned(&self, _run: &str, _plan: &Plan) {}

    fn recorded(&self, run: &str, event: &Event) {
        if never_sent(&event.kind) {
            return;
        }
        self.send(run, Msg::Event(run.to_string(), event.clone()));
    }

    fn end(&self, run: &str) {
        self.send(run, Msg::End(run.to_string()));
    }
}

/// Tells several observers (the telemetry and the notifier) of the same work.
pub struct Both(pub Arc<dyn Observer>, pub Arc<dyn Observer>);

impl Observer for Both {
    fn begin(&self, run: &str, prior: &[Event]) {
        self.0.begin(run, prior);
        self.1.begin(run, prior);
    }

    fn planned(&self, run: &str, plan: &Plan) {
        self.0.planned(run, plan);
        self.1.planned(run, plan);
    }

    fn recorded(&self, run: &str, event: &Event) {
        self.0.recorded(run, event);
        self.1.recorded(run, event);
    }

    fn end(&self, run: &str) {
        self.0.end(run);
        self.1.end(run);
    }
}
