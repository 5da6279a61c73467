//! Run steps: attempts under the global limit, retries with backoff, timeouts, the chaos
//! hooks around a step, and one attempt's end (outputs, artifacts, exit status or signal);
//! `builtin:bundle.ingest` runs here without a process. The command itself is `command`'s.

use std::time::{Duration, Instant};

use serde_json::{Map, Value as Json, json};

use crate::chaos::{self, Action, Point};
use crate::code::Code;
use crate::event::Event;
use crate::plan::{PlanRun, PlanStep};

use super::artifacts::{self, StepError};
use super::command::Prepared;
use super::control::CancelToken;
use super::process;
use super::{Attempt, Finished, Res, Runner};

impl Runner<'_> {
    /// Runs a run step to its end: attempts until one succeeds, retries run out, or the run stops.
    pub(super) fn run_step(&self, s: &PlanStep, run: &PlanRun, item: Option<&Json>, token: &CancelToken) -> Res {
        let retries = s.retries.unwrap_or(crate::plan::PlanRetries {
            max_attempts: 1,
            backoff_ms: 0,
        });
        let prior_attempts = self.before.step(&s.id).map_or(0, |p| p.attempts);
        let max = retries.max_attempts.max(1);
        let mut attempt = prior_attempts;
        loop {
            attempt += 1;
            if let Some(Action::Pause { ms }) = self.chaos(Point::BeforeStepStart, s)
                && token.sleep(Duration::from_millis(ms)).is_some()
            {
                return self.stopped(s, token);
            }
            if let Err(e) = self.verify_pack() {
                return self.fail(s, e, attempt);
            }
            let Some(permit) = self.limiter.acquire(token) else {
                return self.stopped(s, token);
            };
            let deadline = s.timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
            let step_token = token.child(deadline);
            self.emit(
                Event::new("step.started")
                    .step(&s.id)
                    .data(json!({ "attempt": attempt, "kind": "run", "uses": run.uses() })),
            );
            let t0 = Instant::now();
            let result = self.attempt(s, run, item, attempt, &step_token);
            drop(permit);
            self.chaos(Point::BeforeStepEnd, s);
            let ms = t0.elapsed().as_millis() as u64;
            match result {
                Ok((outputs, artifacts, exit)) => {
                    let mut data =
                        json!({ "attempt": attempt, "durationMs": ms, "outputs": outputs, "artifacts": artifacts });
                    if let Some(code) = exit {
                        data["exitCode"] = json!(code);
                    }
                    self.emit(Event::new("step.succeeded").step(&s.id).data(data));
                    let outputs = self.emitter.redactor().redact_json(&Json::Object(outputs));
                    if let Json::Object(o) = outputs {
                        self.outputs
                            .0
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(s.id.clone(), o);
                    }
                    return self.ended(s, Res::Ok);
                }
                Err(Attempt::Stopped) if token.stop().is_some() => return self.stopped(s, token),
                Err(Attempt::Stopped) => {
                    let e = StepError::new(
                        Code::StepTimeout,
                        format!(
                            "timed out after {}",
                            crate::duration::format_ms(s.timeout_ms.unwrap_or(0))
                        ),
                    );
                    if attempt < max && !self.retry(s, attempt, &e, retries.backoff_ms, token) {
                        return self.stopped(s, token);
                    } else if attempt >= max {
                        return self.ended(s, self.fail(s, e, attempt));
                    }
                }
                Err(Attempt::Failed(e)) => {
                    let retryable = !matches!(
                        e.code,
                        Code::PackHashMismatch | Code::ArtifactSecret | Code::SandboxUnavailable
                    );
                    if retryable && attempt < max {
                        if !self.retry(s, attempt, &e, retries.backoff_ms, token) {
                            return self.stopped(s, token);
                        }
                    } else {
                        return self.ended(s, self.fail(s, e, attempt));
                    }
                }
            }
        }
    }

    /// Records a retry and waits out the backoff; false when the run stops meanwhile.
    pub(super) fn retry(
        &self,
        s: &PlanStep,
        attempt: u32,
        e: &StepError,
        backoff_ms: u64,
        token: &CancelToken,
    ) -> bool {
        self.emit(
            Event::new("step.retrying")
                .step(&s.id)
                .level("warn")
                .msg(format!("attempt {attempt} failed: {}", e.message))
                .data(json!({ "attempt": attempt, "code": e.code.as_str(), "backoffMs": backoff_ms })),
        );
        token.sleep(Duration::from_millis(backoff_ms)).is_none()
    }

    /// One attempt of run step `s`: the command started and supervised, or the bundle ingested.
    pub(super) fn attempt(
        &self,
        s: &PlanStep,
        run: &PlanRun,
        item: Option<&Json>,
        attempt: u32,
        token: &CancelToken,
    ) -> Result<Finished, Attempt> {
        let redactor = self.emitter.redactor();
        if let PlanRun::BundleIngest { path, checksum_sha256 } = run {
            if self.chaos(Point::AfterStepStart, s) == Some(Action::KillRunner) {
                chaos::kill_runner();
            }
            let path = self.text(path, item).map_err(Attempt::Failed)?;
            let sum = self.text(checksum_sha256, item).map_err(Attempt::Failed)?;
            let arts = artifacts::ingest_bundle(
                &self.cfg.workspace,
                &self.cfg.run_dir,
                &s.id,
                &path,
                &sum,
                self.cfg.artifact_bytes,
                redactor,
            )
            .map_err(Attempt::Failed)?;
            self.emit(
                Event::new("step.log")
                    .step(&s.id)
                    .msg(format!("verified and staged {path}"))
                    .data(json!({ "stream": "stdout" })),
            );
            return Ok((Map::new(), arts, None));
        }
        let Prepared {
            cmd,
            guard,
            sealed,
            out_file,
            secret_files,
        } = self.command(s, run, item, attempt)?;
        let end = process::run(cmd, guard, &s.id, token, self.cfg.kill_grace, self.emitter);
        // The step ended (exited, timed out or was stopped): its secret files are wiped now.
        drop(secret_files);
        let result = match end {
            process::ProcEnd::Exited(0) => {
                let outputs = artifacts::read_outputs(&out_file, redactor).map_err(Attempt::Failed);
                outputs.and_then(|o| {
                    let mut arts = Vec::new();
                    for (name, declared) in &s.outputs {
                        let src =
                            artifacts::resolve_in_workspace(&self.cfg.workspace, declared).map_err(Attempt::Failed)?;
                        arts.push(
                            artifacts::store(&src, &self.cfg.run_dir, &s.id, name, self.cfg.artifact_bytes, redactor)
                                .map_err(Attempt::Failed)?,
                        );
                    }
                    Ok((o, arts, Some(0)))
                })
            }
            process::ProcEnd::Exited(code) => Err(Attempt::Failed(StepError::new(
                Code::StepFailed,
                format!("exited with status {code}"),
            ))),
            process::ProcEnd::Signaled(sig) => Err(Attempt::Failed(StepError::new(
                Code::StepFailed,
                format!("killed by signal {sig}"),
            ))),
            process::ProcEnd::Stopped(_) => Err(Attempt::Stopped),
            process::ProcEnd::Unisolated(u) => {
                Err(Attempt::Failed(StepError::new(Code::SandboxUnavailable, u.to_string())))
            }
            process::ProcEnd::SpawnFailed(m) if sealed => Err(Attempt::Failed(StepError::new(
                Code::StepFailed,
                format!(
                    "cannot start in sealed mode: the step could not be given a network namespace of its own ({m}); the runner needs CAP_SYS_ADMIN or unprivileged user namespaces"
                ),
            ))),
            process::ProcEnd::SpawnFailed(m) => Err(Attempt::Failed(StepError::new(
                Code::StepFailed,
                format!("cannot start: {m}"),
            ))),
        };
        let _ = std::fs::remove_file(&out_file);
        result
    }
}
