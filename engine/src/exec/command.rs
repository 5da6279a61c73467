//! A run step's command: the program (`bash -euo pipefail -c` for `builtin:shell`, the argv
//! of `builtin:exec`), its environment (an allowlist of the runner's, `STELLA_*`, inputs,
//! secrets, the step's own), its `$STELLA_OUTPUT` file and its isolation (the sandbox, or
//! loopback only for a sealed step under `sandbox: off`). Builds; never spawns or waits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use serde_json::Value as Json;

use crate::chaos::{self, Action, Point};
use crate::code::Code;
use crate::plan::{PlanRun, PlanStep};

use super::artifacts::StepError;
use super::namespaces::loopback_only;
use super::sandbox::Guard;
use super::secret_files::SecretFiles;
use super::{Attempt, Runner};

/// A step's command, ready to spawn, with what the caller needs once it ended.
pub(super) struct Prepared {
    pub cmd: Command,
    /// Set when the command starts in the sandbox: how to read the step's own end.
    pub guard: Option<Guard>,
    /// Sealed mode and no declared host: the step has only loopback.
    pub sealed: bool,
    /// `$STELLA_OUTPUT`; the caller removes it once the step ended.
    pub out_file: PathBuf,
    /// The step's `as: file` secrets; the caller drops it (wiping them) once the step ended.
    pub secret_files: Option<SecretFiles>,
}

impl Runner<'_> {
    /// The command of attempt `attempt` of run step `s`.
    pub(super) fn command(
        &self,
        s: &PlanStep,
        run: &PlanRun,
        item: Option<&Json>,
        attempt: u32,
    ) -> Result<Prepared, Attempt> {
        let mut cmd = self.program(run, item)?;
        let out_file = self
            .cfg
            .run_dir
            .join("tmp")
            .join(format!("output-{}", self.scratch.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&out_file, b"").map_err(|e| {
            Attempt::Failed(StepError::new(
                Code::StepFailed,
                format!("cannot create $STELLA_OUTPUT: {e}"),
            ))
        })?;
        let n = self.scratch.fetch_add(1, Ordering::Relaxed);
        let secret_files = SecretFiles::write(&self.cfg.secret_files, n, &self.cfg.secrets).map_err(|e| {
            let _ = std::fs::remove_file(&out_file);
            Attempt::Failed(StepError::new(
                Code::StepFailed,
                format!("cannot write the step's secret files: {e}"),
            ))
        })?;
        self.environment(&mut cmd, s, item, attempt, &out_file)?;
        for (name, path) in secret_files.iter().flat_map(SecretFiles::env) {
            cmd.env(name, path);
        }
        let sealed = self.cfg.sealed && s.network.is_empty();
        let guard = self.isolate(
            &mut cmd,
            s,
            sealed,
            &out_file,
            secret_files.as_ref().map(SecretFiles::dir),
        )?;
        Ok(Prepared {
            cmd,
            guard,
            sealed,
            out_file,
            secret_files,
        })
    }

    /// The program and its arguments.
    fn program(&self, run: &PlanRun, item: Option<&Json>) -> Result<Command, Attempt> {
        let cmd = match run {
            PlanRun::Shell { script } => {
                let script = self.text(script, item).map_err(Attempt::Failed)?;
                let mut c = Command::new("bash");
                c.args(["-euo", "pipefail", "-c", &script]);
                c
            }
            PlanRun::Exec { argv } => {
                let argv: Vec<String> = argv
                    .iter()
                    .map(|a| self.text(a, item))
                    .collect::<Result<_, _>>()
                    .map_err(Attempt::Failed)?;
                let program = &argv[0];
                let program = if program.contains('/') && !program.starts_with('/') {
                    self.cfg.workspace.join(program)
                } else {
                    PathBuf::from(program)
                };
                let mut c = Command::new(program);
                c.args(&argv[1..]);
                c
            }
            PlanRun::BundleIngest { .. } => {
                return Err(Attempt::Failed(StepError::new(
                    Code::StepFailed,
                    "`builtin:bundle.ingest` starts no process",
                )));
            }
        };
        Ok(cmd)
    }

    /// The step's working directory and environment; nothing of the runner's beyond `base_env`.
    fn environment(
        &self,
        cmd: &mut Command,
        s: &PlanStep,
        item: Option<&Json>,
        attempt: u32,
        out_file: &Path,
    ) -> Result<(), Attempt> {
        cmd.current_dir(&self.cfg.workspace)
            .env_clear()
            .envs(self.cfg.base_env.iter().cloned());
        cmd.env("STELLA_RUN_ID", &self.cfg.run_id)
            .env("STELLA_STEP_ID", &s.id)
            .env("STELLA_ATTEMPT", attempt.to_string())
            .env("STELLA_WORKSPACE", &self.cfg.workspace)
            .env("STELLA_OUTPUT", out_file);
        for (name, value) in &self.plan.inputs {
            let v = match value {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            cmd.env(format!("STELLA_INPUT_{}", name.to_ascii_uppercase()), v);
        }
        for (name, value) in self.cfg.secrets.env_pairs() {
            cmd.env(name, value);
        }
        for (name, value) in &s.env {
            cmd.env(name, self.text(value, item).map_err(Attempt::Failed)?);
        }
        Ok(())
    }

    /// Keeps the step from the runner: the sandbox, or under `sandbox: off` only the network
    /// of a sealed step. The `after-step-start` chaos hook is armed here.
    fn isolate(
        &self,
        cmd: &mut Command,
        s: &PlanStep,
        sealed: bool,
        out_file: &Path,
        secret_dir: Option<&Path>,
    ) -> Result<Option<Guard>, Attempt> {
        // A kill armed for the step's start runs in the forked child before the sandbox is
        // made, while it can still name the runner: the runner dies as its step is forked.
        let chaos = self.chaos(Point::AfterStepStart, s);
        if chaos == Some(Action::KillRunner) {
            chaos::kill_runner_on_spawn(cmd);
        }
        let isolate_network = sealed || chaos == Some(Action::DropNetwork);
        let guard = if self.cfg.sandbox.is_off() {
            if isolate_network {
                loopback_only(cmd);
            }
            None
        } else {
            cmd.env("TMPDIR", "/tmp");
            match self
                .cfg
                .sandbox
                .apply_with(cmd, &self.cfg.workspace, out_file, isolate_network, secret_dir)
            {
                Ok(g) => Some(g),
                Err(u) => {
                    let _ = std::fs::remove_file(out_file);
                    return Err(Attempt::Failed(StepError::new(Code::SandboxUnavailable, u.to_string())));
                }
            }
        };
        Ok(guard)
    }
}
