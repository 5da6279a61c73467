//! Delivery: one thread per target sends its outbox entries, oldest due first. A failed
//! attempt waits an exponential backoff with jitter (1 s doubling to 1 h per notification);
//! a target that is down (unreachable, 5xx, 429) is probed with one notification at a time
//! on its own backoff (to 30 s), and once it answers again everything waiting goes at once.
//! A notification older than the horizon is given up: `notify.failed` goes into its run's
//! events (`runs::note`). Counts go to the metrics and `stats/`; errors never name the URL.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use stella_engine::Code;
use stella_engine::event::Event;
use stella_engine::notify::Endpoint;
use stella_engine::notify::outbox::{Entry, Outbox, Stats};
use stella_engine::runs::{self, Environment};
use tracing::{debug, info, warn};

use super::client::{Client, Delivery, Refused};
use super::{Settings, now_ms, secret_value};
use crate::telemetry::Telemetry;

/// The longest wait between two attempts of one notification.
const MAX_BACKOFF_MS: u64 = 3_600_000;
/// The longest wait between two probes of a target that is down.
const MAX_PROBE_MS: u64 = 30_000;

/// The delivery threads, one per target, started when the first entry for it is queued.
#[derive(Clone)]
pub(super) struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    env: Arc<Environment>,
    outbox: Outbox,
    telemetry: Arc<Telemetry>,
    settings: Settings,
    client: Client,
    workers: Mutex<HashMap<String, Sender<()>>>,
    /// Wakes the thread that records `notify.failed` (it may wait for a run's work to end).
    notes: Mutex<Option<Sender<()>>>,
}

/// `base` doubled `n - 1` times, at most `max`, then cut by a random part of up to half.
fn backoff(n: u32, base: u64, max: u64, salt: &str) -> u64 {
    let full = base.saturating_mul(1u64 << n.saturating_sub(1).min(40)).min(max);
    let random = std::collections::hash_map::RandomState::new().hash_one((salt, n, now_ms()));
    full - (random % (full / 2 + 1))
}

impl Pool {
    pub(super) fn new(env: Arc<Environment>, outbox: Outbox, telemetry: Arc<Telemetry>, settings: Settings) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                env,
                outbox,
                telemetry,
                settings,
                client: Client::new(settings.timeout),
                workers: Mutex::new(HashMap::new()),
                notes: Mutex::new(None),
            }),
        }
    }

    /// Starts a thread for every target with notifications waiting, and records the
    /// `notify.failed` a crash left unrecorded.
    pub(super) fn start_waiting(&self) {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let shared = self.shared.clone();
        let started = std::thread::Builder::new().name("notify-failed".into()).spawn(move || {
            while rx.recv().is_ok() {
                while rx.try_recv().is_ok() {}
                shared.record_failures();
            }
        });
        match started {
            Ok(_) => *self.shared.notes.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx),
            Err(e) => warn!(error = %e, "notify: cannot start the thread that records notify.failed"),
        }
        self.shared.note_failures();
        for target in self.shared.outbox.targets() {
            if !self.shared.outbox.pending(&target).is_empty() {
                self.wake(&target);
            }
        }
    }

    /// A notification for `target` was queued.
    pub(super) fn wake(&self, target: &str) {
        let mut workers = self.shared.workers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = workers.get(target)
            && tx.send(()).is_ok()
        {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = self.shared.clone();
        let name = target.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("notify-{target}"))
            .spawn(move || Worker::new(shared, name).run(rx));
        match spawned {
            Ok(_) => _ = workers.insert(target.to_string(), tx),
            Err(e) => warn!(target = %target, error = %e, "notify: cannot start the delivery thread"),
        }
    }

    /// A notification for `target` could not be queued (its outbox is full).
    pub(super) fn dropped(&self, target: &str) {
        self.shared.telemetry.metrics.notified(target, "failed");
        self.shared.count(target, |s| {
            s.failed += 1;
            s.last_error = Some("the outbox is full; a notification was dropped".into());
            s.last_error_at = Some(stella_engine::event::now_rfc3339());
        });
    }
}

impl Shared {
    /// Has `notify.failed` recorded for what was given up, off the delivery threads (a run's
    /// work in progress makes the recording wait for it).
    fn note_failures(&self) {
        if let Some(tx) = self.notes.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(());
        }
    }

    fn count(&self, target: &str, change: impl FnOnce(&mut Stats)) {
        let mut s = self.outbox.stats(target);
        change(&mut s);
        if let Err(e) = self.outbox.save_stats(target, &s) {
            debug!(target = %target, error = %e, "notify: cannot save the counts");
        }
    }

    /// Records `notify.failed` for every notification given up on, then forgets it.
    fn record_failures(&self) {
        for e in self.outbox.failed() {
            let done = match self.env.run_dir(&e.run) {
                Ok(dir) => {
                    let id = e.id.clone();
                    let note = runs::note(&self.env, &dir, failed_event(&e, self.settings), |prior| {
                        prior.iter().any(|x| {
                            x.kind == "notify.failed" && x.get("webhookId").and_then(|v| v.as_str()) == Some(&id)
                        })
                    });
                    match note {
                        Ok(()) | Err(runs::Error::Fenced(_)) => true,
                        Err(err) => {
                            warn!(run = %e.run, id = %e.id, error = %err, "notify: cannot record notify.failed; tried again later");
                            false
                        }
                    }
                }
                Err(err) => {
                    warn!(run = %e.run, error = %err, "notify: cannot find the run to record notify.failed");
                    false
                }
            };
            if done {
                let _ = self.outbox.forget_failed(&e.id);
            }
        }
    }
}

/// The `notify.failed` event of a notification given up on.
fn failed_event(e: &Entry, settings: Settings) -> Event {
    let horizon = humantime::format_duration(Duration::from_secs(settings.horizon.as_secs().max(1)));
    let why = e.last_error.as_deref().unwrap_or("no attempt succeeded");
    Event::new("notify.failed")
        .level("warn")
        .msg(format!(
            "the notification of event {} ({}) to target `{}` was not delivered within {horizon}: {why}",
            e.seq, e.kind, e.target
        ))
        .data(json!({
            "code": Code::NotifyFailed.as_str(),
            "target": e.target,
            "webhookId": e.id,
            "event": { "seq": e.seq, "type": e.kind },
            "attempts": e.attempts,
            "lastError": e.last_error,
        }))
}

/// One target's delivery thread.
struct Worker {
    shared: Arc<Shared>,
    target: String,
    /// Entries waiting: id to (due, created), unix ms.
    waiting: BTreeMap<String, (u64, u64)>,
    /// Failed probes of the target in a row, and when the next may go.
    down: u32,
    blocked_until: u64,
}

impl Worker {
    fn new(shared: Arc<Shared>, target: String) -> Worker {
        Worker {
            shared,
            target,
            waiting: BTreeMap::new(),
            down: 0,
            blocked_until: 0,
        }
    }

    /// Adds entries written since the last look (a restart makes every entry due now).
    fn refresh(&mut self, first: bool) {
        let outbox = &self.shared.outbox;
        for id in outbox.pending(&self.target) {
            if self.waiting.contains_key(&id) {
                continue;
            }
            match outbox.read(&self.target, &id) {
                Ok(e) => {
                    let due = if first { now_ms() } else { e.due_ms };
                    self.waiting.insert(id, (due, e.created_ms));
                }
                Err(err) => {
                    warn!(target = %self.target, id = %id, error = %err, "notify: unreadable outbox entry skipped")
                }
            }
        }
    }

    fn run(mut self, rx: Receiver<()>) {
        self.refresh(true);
        loop {
            let now = now_ms();
            self.expire(now);
            let next = self
                .waiting
                .iter()
                .min_by_key(|(id, (due, _))| (*due, (*id).clone()))
                .map(|(id, (due, _))| (id.clone(), *due));
            let wait = match &next {
                Some((_, due)) => (*due).max(self.blocked_until).saturating_sub(now),
                None => 60_000,
            };
            if wait > 0 {
                match rx.recv_timeout(Duration::from_millis(wait)) {
                    Ok(()) => {
                        while rx.try_recv().is_ok() {}
                        self.refresh(false);
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        if next.is_none() {
                            self.refresh(false);
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            if let Some((id, _)) = next {
                self.attempt(&id);
            }
        }
    }

    /// Gives up every entry older than the horizon.
    fn expire(&mut self, now: u64) {
        let horizon = self.shared.settings.horizon.as_millis() as u64;
        let old: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, (_, created))| now.saturating_sub(*created) >= horizon)
            .map(|(id, _)| id.clone())
            .collect();
        for id in old {
            self.waiting.remove(&id);
            let Ok(e) = self.shared.outbox.read(&self.target, &id) else {
                continue;
            };
            self.give_up(e);
        }
    }

    fn give_up(&self, e: Entry) {
        let s = &self.shared;
        warn!(target = %self.target, id = %e.id, attempts = e.attempts, "notify: given up after the retry horizon");
        if let Err(err) = s.outbox.give_up(&e) {
            warn!(target = %self.target, id = %e.id, error = %err, "notify: cannot move the entry to failed/");
            return;
        }
        s.telemetry.metrics.notified(&self.target, "failed");
        s.count(&self.target, |st| st.failed += 1);
        s.note_failures();
    }

    fn attempt(&mut self, id: &str) {
        let s = self.shared.clone();
        let Ok(mut e) = s.outbox.read(&self.target, id) else {
            self.waiting.remove(id);
            return;
        };
        let url = match &e.endpoint {
            Endpoint::Url(u) => Some(u.clone()),
            Endpoint::UrlSecret(name) => secret_value(&s.env.file_secrets, name),
        };
        let key = secret_value(&s.env.file_secrets, &e.secret);
        let sent = match (url, key) {
            (Some(url), Some(key)) => s.client.send(&Delivery {
                url: &url,
                id: &e.id,
                key: &key,
                content_type: &e.content_type,
                body: e.body.as_bytes(),
            }),
            (None, _) => Err(Refused::Setup(format!(
                "the runner secret holding the URL is not set (STELLA_SECRET_{} or --secrets)",
                secret_name(&e.endpoint)
            ))),
            (_, None) => Err(Refused::Setup(format!(
                "the runner secret `{}` holding the signing key is not set (STELLA_SECRET_{} or --secrets)",
                e.secret,
                e.secret.to_ascii_uppercase()
            ))),
        };
        let now = now_ms();
        match sent {
            Ok(status) => {
                info!(target = %self.target, id = %e.id, status, "notify: delivered");
                if let Err(err) = s.outbox.remove(&self.target, &e.id) {
                    warn!(target = %self.target, id = %e.id, error = %err, "notify: cannot remove a delivered entry");
                }
                self.waiting.remove(id);
                s.telemetry.metrics.notified(&self.target, "delivered");
                s.count(&self.target, |st| {
                    st.delivered += 1;
                    st.last_delivered_at = Some(stella_engine::event::now_rfc3339());
                });
                if self.down > 0 {
                    // The receiver is back: whatever waits goes now.
                    for (due, _) in self.waiting.values_mut() {
                        *due = now;
                    }
                }
                self.down = 0;
                self.blocked_until = 0;
            }
            Err(why) => {
                let text = why.to_string();
                debug!(target = %self.target, id = %e.id, error = %text, "notify: attempt failed");
                e.attempts += 1;
                e.last_error = Some(text.clone());
                e.due_ms = now + backoff(e.attempts, 1000, MAX_BACKOFF_MS, &e.id);
                if why.target_down() {
                    self.down += 1;
                    self.blocked_until = now + backoff(self.down, 1000, MAX_PROBE_MS, &self.target);
                }
                if let Err(err) = s.outbox.update(&e) {
                    warn!(target = %self.target, id = %e.id, error = %err, "notify: cannot update the entry");
                }
                self.waiting.insert(e.id.clone(), (e.due_ms, e.created_ms));
                s.telemetry.metrics.notified(&self.target, "retried");
                s.count(&self.target, |st| {
                    st.retried += 1;
                    st.last_error = Some(text);
                    st.last_error_at = Some(stella_engine::event::now_rfc3339());
                });
            }
        }
    }
}

fn secret_name(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::UrlSecret(n) => n.to_ascii_uppercase(),
        Endpoint::Url(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_cap_with_jitter() {
        for n in 1..30 {
            let full = (1000u64 << (n - 1).min(40)).min(MAX_BACKOFF_MS);
            let b = backoff(n, 1000, MAX_BACKOFF_MS, "x");
            assert!(b <= full && b >= full / 2, "{n}: {b}");
        }
    }
}
