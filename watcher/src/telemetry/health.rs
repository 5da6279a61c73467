//! What `GET /healthz` and `GET /readyz` answer (DESIGN section 11): alive while the process
//! lives; ready once the first scan of the branch is done, with the run counts, how long ago
//! the branch was last looked at, and the remote's state. Thread-safe (one lock held for a
//! copy); updated by the daemon, read by the HTTP tasks; never looks at anything itself.

use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Value, json};

use super::census::Counts;

/// The HTTP status and JSON body of a probe.
pub type Answer = (u16, Value);

/// What the probes report.
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// When the daemon last looked at the branch (a scan, or the check that found it
    /// unchanged); `None` until the first scan is done.
    looked: Option<Instant>,
    counts: Counts,
    /// With `--remote`: whether the last exchange reached it, and when a fetch last succeeded.
    remote: Option<Remote>,
}

#[derive(Debug, Clone, Copy)]
struct Remote {
    reachable: bool,
    fetched: Option<Instant>,
}

impl Health {
    /// Nothing scanned yet; `remote`: the daemon works with a remote (then `/readyz` says how
    /// it answers).
    pub fn new(remote: bool) -> Health {
        Health {
            state: Mutex::new(State {
                looked: None,
                counts: Counts::default(),
                remote: remote.then_some(Remote {
                    reachable: false,
                    fetched: None,
                }),
            }),
        }
    }

    /// `GET /healthz`: 200 `{"status":"ok"}` while the process lives.
    pub fn healthz() -> Answer {
        (200, json!({ "status": "ok" }))
    }

    /// `GET /readyz`: 503 `{"ready":false}` until the first scan is done, then 200 with the
    /// counts, `lastScanAgeMs` and, with a remote, `remote: {reachable, lastFetchAgeMs}`
    /// (`lastFetchAgeMs` is null until a fetch succeeded).
    pub fn readyz(&self) -> Answer {
        self.readyz_at(Instant::now())
    }

    fn readyz_at(&self, now: Instant) -> Answer {
        let s = *self.state.lock().unwrap_or_else(|p| p.into_inner());
        let age = |t: Instant| now.saturating_duration_since(t).as_millis() as u64;
        let remote = s.remote.map(|r| {
            json!({
                "reachable": r.reachable,
                "lastFetchAgeMs": r.fetched.map(age),
            })
        });
        let Some(looked) = s.looked else {
            let mut body = json!({ "ready": false });
            if let Some(r) = remote {
                body["remote"] = r;
            }
            return (503, body);
        };
        let mut body = json!({
            "ready": true,
            "queueDepth": s.counts.queued,
            "activeRuns": s.counts.active,
            "waitingRuns": s.counts.waiting,
            "lastScanAgeMs": age(looked),
        });
        if let Some(r) = remote {
            body["remote"] = r;
        }
        (200, body)
    }

    /// The daemon looked at the branch now.
    pub(super) fn looked(&self, at: Instant) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).looked = Some(at);
    }

    pub(super) fn set_counts(&self, counts: Counts) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).counts = counts;
    }

    /// An exchange with the remote ended at `at`: it fetched (`reached`) or could not.
    pub(super) fn exchanged(&self, reached: bool, at: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = &mut s.remote {
            r.reachable = reached;
            if reached {
                r.fetched = Some(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn not_ready_until_the_first_scan_then_the_counts_and_ages() {
        assert_eq!(Health::healthz(), (200, json!({"status": "ok"})));
        let h = Health::new(true);
        let t0 = Instant::now();
        assert_eq!(
            h.readyz_at(t0),
            (
                503,
                json!({"ready": false, "remote": {"reachable": false, "lastFetchAgeMs": null}})
            )
        );
        h.exchanged(true, t0);
        h.set_counts(Counts {
            queued: 3,
            active: 1,
            waiting: 2,
        });
        h.looked(t0 + Duration::from_millis(5));
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(
            h.readyz_at(later),
            (
                200,
                json!({
                    "ready": true, "queueDepth": 3, "activeRuns": 1, "waitingRuns": 2, "lastScanAgeMs": 1495,
                    "remote": {"reachable": true, "lastFetchAgeMs": 1500}
                })
            )
        );
        // An unreachable remote keeps the age of the last fetch that succeeded.
        h.exchanged(false, later);
        assert_eq!(
            h.readyz_at(later).1["remote"],
            json!({"reachable": false, "lastFetchAgeMs": 1500})
        );
    }

    #[test]
    fn without_a_remote_readyz_has_no_remote() {
        let h = Health::new(false);
        h.looked(Instant::now());
        let (code, body) = h.readyz();
        assert_eq!(code, 200);
        assert!(body.get("remote").is_none(), "{body}");
    }
}
