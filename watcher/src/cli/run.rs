//! `stella pack run`: plan a pack and execute it on this machine, without git. Events go to
//! the display and, with `--events`, to an NDJSON file that `--resume` continues.

use std::path::{Path, PathBuf};

use stella_engine::event::{self, EventSink, NdjsonSink};
use stella_engine::exec::{self, ExecConfig, LocalGates};
use stella_engine::plan::PlanConfig;
use stella_engine::secrets::Secrets;
use stella_engine::{Code, inputs, pack, run_id};

use crate::display::Display;
use crate::failure::{Failure, Outcome};

pub struct RunArgs<'a> {
    pub pack: &'a Path,
    pub inputs: Option<&'a Path>,
    pub secrets: Option<&'a Path>,
    pub events: Option<&'a Path>,
    pub dir: Option<&'a Path>,
    pub resume: bool,
    pub approve_local: bool,
    pub max_steps: usize,
    pub kill_grace: std::time::Duration,
    pub sandbox: stella_engine::config::SandboxPolicy,
}

pub fn run(a: RunArgs) -> Result<Outcome, Failure> {
    let (dir, shown) = super::pack::locate(a.pack)?;
    let given = a.inputs.map(inputs::read_file).transpose()?;
    let inputs_file = a
        .inputs
        .map_or_else(|| "inputs".to_string(), |p| p.display().to_string());
    let files = pack::PackFiles::read_dir(&dir, &shown, pack::PackLimits::default())?;
    super::provenance::check_local(&files, &dir)?;
    let plan = stella_engine::plan::from_files(&files, given.as_ref(), &inputs_file, &PlanConfig::default())?;
    let file_secrets = a.secrets.map(Secrets::from_file).transpose()?.unwrap_or_default();
    let secrets = Secrets::for_plan(&plan, &file_secrets, |k| std::env::var(k).ok())?;

    let prior = match (a.resume, a.events) {
        (true, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::io(path, format!("cannot read events to resume: {e}")))?;
            event::read_ndjson(&text).map_err(|e| Failure::io(path, e))?
        }
        (true, None) => {
            return Err(Failure::one(
                Code::Usage,
                "--resume needs --events FILE (the events of the run to resume)",
            ));
        }
        (false, Some(path)) if path.exists() && std::fs::metadata(path).is_ok_and(|m| m.len() > 0) => {
            return Err(Failure::one(
                Code::Usage,
                format!(
                    "{} already holds events; pass --resume to continue that run, or choose another file",
                    path.display()
                ),
            ));
        }
        _ => Vec::new(),
    };
    // A local resume with another pack or other inputs is a mistake on the command line, not a
    // run that failed: refuse it before anything is written.
    if let (Some(recorded), Some(path)) = (stella_engine::state::fold(&prior).plan_hash, a.events)
        && recorded != plan.hash()
    {
        return Err(Failure::one(
            Code::PackHashMismatch,
            format!(
                "{}: the run in this file was planned as {recorded}, but {shown} with {inputs_file} plans to {}; resume with the pack and inputs it started with",
                path.display(),
                plan.hash()
            ),
        ));
    }
    let run_id = prior
        .iter()
        .find(|e| e.kind == "run.started")
        .and_then(|e| e.get("runId").and_then(|v| v.as_str()).map(str::to_string))
        .unwrap_or_else(|| run_id::generate(&plan.pack.name));
    let run_dir: PathBuf = match a.dir {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join("stella-runs").join(&run_id),
    };
    let mut cfg = ExecConfig::new(&run_id, &run_dir);
    cfg.secrets = secrets;
    cfg.max_steps = a.max_steps;
    cfg.kill_grace = a.kill_grace;
    // The run directory (artifacts, other scratch) and the secrets file stay out of the steps'
    // sight; the workspace and $STELLA_OUTPUT are shown again inside the sandbox.
    cfg.sandbox = exec::sandbox::Sandbox {
        policy: a.sandbox,
        hide: [
            Some(cfg.run_dir.clone()),
            a.secrets.map(|p| std::path::absolute(p).unwrap_or(p.into())),
        ]
        .into_iter()
        .flatten()
        .collect(),
    };
    let cancel = cfg.cancel.clone();
    let _ = ctrlc::set_handler(move || cancel.cancel());

    let display = Display::new(plan.all_steps().len());
    let file_sink = a
        .events
        .map(NdjsonSink::append)
        .transpose()
        .map_err(|e| Failure::one(Code::Io, format!("cannot open the events file: {e}")))?;
    let mut sinks: Vec<&dyn EventSink> = vec![&display];
    if let Some(f) = &file_sink {
        sinks.insert(0, f);
    }
    let outcome = exec::execute(
        &plan,
        &files,
        &prior,
        &cfg,
        &LocalGates {
            approve_local: a.approve_local,
        },
        sinks,
    );
    display.finish();
    println!("run directory: {}", run_dir.display());
    match outcome {
        exec::Outcome::Succeeded => Ok(Outcome::Done),
        exec::Outcome::Waiting { step, approval } => {
            println!("waiting: step `{step}` needs approval `{approval}`");
            println!(
                "approvals are given in a repository (stella approve); for a local trial, rerun with --approve-local"
            );
            Ok(Outcome::Waiting)
        }
        exec::Outcome::Cancelled => Err(Failure::one(Code::RunCancelled, format!("run {run_id} was cancelled"))),
        exec::Outcome::Failed { code, message } => Err(Failure::one(code, format!("run {run_id} failed: {message}"))),
    }
}
