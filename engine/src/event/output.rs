//! Bounded step output (`limits.logBytes` per step, `limits.runLogBytes` per run): how much of
//! a step's output becomes `step.log` events. Past a limit the step keeps running and its
//! output is still read, counted and hashed, but no more lines are stored; the step's end then
//! records one `step.log.truncated`. Owns the accounting only: never reads a pipe, never
//! decides a step's outcome.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::event::Event;

/// Default `limits.logBytes`: what one step may store, 8 MiB.
pub const STEP_LOG_BYTES: u64 = 8 << 20;
/// Default `limits.runLogBytes`: what all steps of one run may store together, 64 MiB.
pub const RUN_LOG_BYTES: u64 = 64 << 20;

/// The two output limits of a run; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Per step (each attempt of a step counts on its own).
    pub step_bytes: u64,
    /// All steps of the run together (this runner's attempt: a resumed run starts afresh).
    pub run_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            step_bytes: STEP_LOG_BYTES,
            run_bytes: RUN_LOG_BYTES,
        }
    }
}

/// The run-wide budget every step of a run draws from; shared by parallel steps.
#[derive(Debug, Default)]
pub struct RunLog {
    limits: LogLimits,
    used: AtomicU64,
}

impl RunLog {
    pub fn new(limits: LogLimits) -> RunLog {
        RunLog {
            limits,
            used: AtomicU64::new(0),
        }
    }

    /// Takes `cost` from the run's budget; false (and nothing taken) when it does not fit.
    fn take(&self, cost: u64) -> bool {
        if self.limits.run_bytes == 0 {
            return true;
        }
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used + cost <= self.limits.run_bytes).then_some(used + cost)
            })
            .is_ok()
    }
}

/// What one step's output has cost so far: raw bytes seen and their sha256 per stream, and
/// the lines kept. Used from the one thread that supervises the step.
pub struct StepOutput<'r> {
    run: &'r RunLog,
    step: String,
    /// The bytes a `step.log` event of this step takes besides its line.
    overhead: u64,
    state: RefCell<Tally>,
}

#[derive(Default)]
struct Tally {
    seen: [u64; 2],
    hashers: [Sha256; 2],
    charged: u64,
    kept: u64,
    /// The config field whose limit stopped the recording, once one did.
    cut_by: Option<&'static str>,
}

const STREAMS: [&str; 2] = ["stdout", "stderr"];

impl<'r> StepOutput<'r> {
    pub fn new(run: &'r RunLog, step: &str) -> StepOutput<'r> {
        let sample = Event {
            seq: 9_999_999,
            ts: "2026-01-01T00:00:00.000Z".into(),
            ..Event::new("step.log")
                .step(step)
                .msg("")
                .data(json!({ "stream": "stdout" }))
        };
        StepOutput {
            run,
            step: step.into(),
            overhead: sample.to_line().len() as u64 + 1,
            state: RefCell::new(Tally::default()),
        }
    }

    /// Counts and hashes raw bytes read from `stream` (0 stdout, 1 stderr). Returns whether
    /// lines are still being recorded: once they are not, the bytes need not be split at all.
    pub fn read(&self, stream: usize, bytes: &[u8]) -> bool {
        let mut t = self.state.borrow_mut();
        t.seen[stream] += bytes.len() as u64;
        t.hashers[stream].update(bytes);
        t.cut_by.is_none()
    }

    /// Whether `line` (redacted) may become a `step.log` event. A line costs the bytes of the
    /// event that stores it, so the limits bound what the ledger holds whatever the line
    /// lengths. Once a line does not fit, no later line is kept either.
    pub fn keep(&self, line: &str) -> bool {
        let mut t = self.state.borrow_mut();
        if t.cut_by.is_none() {
            let cost = json_len(line) + self.overhead;
            let step_limit = self.run.limits.step_bytes;
            if step_limit != 0 && t.charged + cost > step_limit {
                t.cut_by = Some("logBytes");
            } else if !self.run.take(cost) {
                t.cut_by = Some("runLogBytes");
            } else {
                t.charged += cost;
                t.kept += line.len() as u64 + 1;
                return true;
            }
        }
        false
    }

    /// The `step.log.truncated` event, when a limit cut the step's log: `bytesSeen` (raw
    /// bytes of both streams), `bytesKept` (redacted line bytes stored, a newline each),
    /// `limit` (the config field) and `sha256` of each stream's raw output.
    pub fn truncated(self) -> Option<Event> {
        let t = self.state.into_inner();
        let limit = t.cut_by?;
        let seen = t.seen[0] + t.seen[1];
        let [out, err] = t.hashers.map(|h| hex::encode(h.finalize()));
        Some(
            Event::new("step.log.truncated")
                .step(&self.step)
                .level("warn")
                .msg(format!(
                    "output past limits.{limit} was not recorded: {seen} bytes seen, {} kept",
                    t.kept
                ))
                .data(json!({
                    "bytesSeen": seen,
                    "bytesKept": t.kept,
                    "limit": limit,
                    "sha256": { STREAMS[0]: out, STREAMS[1]: err },
                })),
        )
    }
}

/// The length of `s` as a JSON string body (escapes counted, quotes not).
fn json_len(s: &str) -> u64 {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_until_the_step_limit_and_none_after() {
        let run = RunLog::new(LogLimits {
            step_bytes: 1000,
            run_bytes: 0,
        });
        let out = StepOutput::new(&run, "s");
        let line = "x".repeat(100);
        let mut kept = 0;
        for _ in 0..20 {
            out.read(0, format!("{line}\n").as_bytes());
            if out.keep(&line) {
                kept += 1;
            }
        }
        assert!(kept > 0 && kept < 10, "kept {kept}");
        assert!(!out.keep(""), "a short line after the cut is not kept either");
        let e = out.truncated().expect("cut");
        assert_eq!(e.get("bytesSeen").unwrap(), 20 * 101);
        assert_eq!(e.get("bytesKept").unwrap(), kept * 101);
        assert_eq!(e.get("limit").unwrap(), "logBytes");
        let expected = hex::encode(Sha256::digest(format!("{line}\n").repeat(20)));
        assert_eq!(e.get("sha256").unwrap()["stdout"], expected.as_str());
    }

    #[test]
    fn the_run_limit_is_shared_by_its_steps() {
        let run = RunLog::new(LogLimits {
            step_bytes: 0,
            run_bytes: 1000,
        });
        let a = StepOutput::new(&run, "a");
        while a.keep("line") {}
        let b = StepOutput::new(&run, "b");
        assert!(!b.keep("line"));
        assert_eq!(b.truncated().unwrap().get("limit").unwrap(), "runLogBytes");
    }

    #[test]
    fn output_under_the_limits_records_no_truncation() {
        let run = RunLog::new(LogLimits::default());
        let out = StepOutput::new(&run, "s");
        assert!(out.read(1, b"hello\n"));
        assert!(out.keep("hello"));
        assert!(out.truncated().is_none());
    }
}
