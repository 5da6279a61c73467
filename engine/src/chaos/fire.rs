//! Firing: at a hook point, whether a rule's point and selectors match, whether it is past its
//! `after`, within its `times` and wins its seeded draw; which delay, if any, a gate gets; and
//! the runner-local record of each injection (stderr and the chaos log). Never reads the chaos
//! file; `file` does.

use std::io::Write;

use serde_json::json;

use super::{Action, Chaos, Ctx, Injection, Point};

impl Chaos {
    /// Whether a rule fires at `at`, here. Every rule whose point and selectors match counts
    /// the occurrence (for `after`); the first in file order that then fires wins. Logged to the
    /// chaos log; recording it in the run's events is the caller's part.
    pub fn point(&self, at: Point, ctx: Ctx) -> Option<Injection> {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut chosen = None;
        for (i, r) in self.rules.iter().enumerate() {
            if r.point != at || !selects(r.run.as_deref(), ctx.run) || !selects(r.step.as_deref(), ctx.step) {
                continue;
            }
            c.seen[i] += 1;
            if chosen.is_some() || c.seen[i] <= r.after || r.times.is_some_and(|t| c.fired[i] >= t) {
                continue;
            }
            if let Some(p) = r.probability
                && next_unit(&mut c.rng) >= p
            {
                continue;
            }
            c.fired[i] += 1;
            chosen = Some(Injection {
                rule: i,
                action: r.action,
                point: at,
            });
        }
        drop(c);
        if let Some(inj) = &chosen {
            self.log(inj, ctx);
        }
        chosen
    }

    /// Whether a delay-approvals rule fires at gate `gate` of run `run`. Asked once per run and
    /// gate in this process: later asks get the first answer, so a delay is recorded once.
    pub fn delay_at_gate(&self, run: &str, gate: &str) -> Option<Injection> {
        let key = (run.to_string(), gate.to_string());
        let known = self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .delayed
            .get(&key)
            .copied();
        known.unwrap_or_else(|| {
            let fired = self
                .point(
                    Point::GateReached,
                    Ctx {
                        run: Some(run),
                        step: Some(gate),
                    },
                )
                .filter(|i| matches!(i.action, Action::DelayApprovals { .. }));
            let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            *c.delayed.entry(key).or_insert(fired)
        })
    }

    /// The runner-local record of an injection: a warning on stderr (through tracing) and a
    /// line in the chaos log, synced before anything else happens.
    fn log(&self, inj: &Injection, ctx: Ctx) {
        tracing::warn!(
            action = inj.action.as_str(),
            point = inj.point.as_str(),
            rule = inj.rule,
            run = ctx.run.unwrap_or(""),
            step = ctx.step.unwrap_or(""),
            "chaos: injecting"
        );
        let Some(path) = &self.log else { return };
        let line = json!({
            "ts": crate::event::now_rfc3339(), "pid": std::process::id(), "action": inj.action.as_str(),
            "point": inj.point.as_str(), "rule": inj.rule, "run": ctx.run, "step": ctx.step,
        });
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| {
                f.write_all(format!("{line}\n").as_bytes())?;
                f.sync_data()
            });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the chaos log");
        }
    }
}

/// Whether a selector (a glob with `*` and `?`; none: anything) selects `value`. A selector
/// never selects a point that lacks the value.
fn selects(pattern: Option<&str>, value: Option<&str>) -> bool {
    match (pattern, value) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(p), Some(v)) => glob(p.as_bytes(), v.as_bytes()),
    }
}

fn glob(p: &[u8], v: &[u8]) -> bool {
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A number in [0, 1) from a seeded splitmix64 stream: the same file and seed draw the same
/// numbers in the same order of occurrences.
fn next_unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_select_runs_and_steps() {
        assert!(glob(b"*", b"anything"));
        assert!(glob(b"nightly-*", b"nightly-42"));
        assert!(!glob(b"nightly-*", b"weekly-42"));
        assert!(glob(b"fix-all[?]::fix", b"fix-all[3]::fix"));
        assert!(glob(b"a*b*c", b"aXXbYYc"));
        assert!(!glob(b"a*b*c", b"aXXbYY"));
    }

    #[test]
    fn the_third_step_start_is_killed_once() {
        let c = Chaos::parse(
            "chaos.yaml",
            "rules:\n  - { action: kill-runner, point: before-step-start, after: 2, times: 1 }\n",
        )
        .unwrap();
        let at = |step| {
            c.point(
                Point::BeforeStepStart,
                Ctx {
                    run: Some("r1"),
                    step: Some(step),
                },
            )
        };
        assert_eq!(at("a"), None);
        assert_eq!(at("b"), None);
        assert_eq!(at("c").map(|i| i.action), Some(Action::KillRunner));
        assert_eq!(at("d"), None);
    }

    #[test]
    fn the_same_seed_draws_the_same_injections() {
        let text = "seed: 7\nrules:\n  - { action: pause, duration: 1ms, probability: 0.5 }\n";
        let draw = || {
            let c = Chaos::parse("chaos.yaml", text).unwrap();
            (0..64)
                .map(|_| c.point(Point::BeforeStepStart, Ctx::default()).is_some())
                .collect::<Vec<_>>()
        };
        let first = draw();
        assert_eq!(first, draw());
        assert!(first.iter().any(|f| *f) && first.iter().any(|f| !*f), "{first:?}");
    }
}
