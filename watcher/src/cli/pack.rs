//! `stella pack validate` and `stella pack plan`: read a pack directory, report problems or
//! print the plan summary (human or `--json`).

use std::path::{Path, PathBuf};

use stella_engine::plan::PlanConfig;
use stella_engine::plan::summary::Summary;
use stella_engine::{Code, duration, inputs, manifest, pack};

use crate::failure::{Failure, Outcome};

/// Finds the pack directory: the path as given, else `packs/<name>`.
pub fn locate(arg: &Path) -> Result<(PathBuf, String), Failure> {
    let candidates = [arg.to_path_buf(), Path::new("packs").join(arg)];
    for dir in candidates {
        if dir.join(manifest::MANIFEST_FILE).is_file() {
            let shown = dir
                .to_string_lossy()
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            return Ok((dir, shown));
        }
    }
    let shown = arg.display();
    Err(Failure::one(
        Code::PackInvalid,
        format!("{shown}: no pack here (expected {shown}/pack.yaml or packs/{shown}/pack.yaml)"),
    ))
}

pub fn validate(arg: &Path, json: bool) -> Result<Outcome, Failure> {
    let (dir, shown) = locate(arg)?;
    let files = pack::PackFiles::read_dir(&dir, &shown, pack::PackLimits::default())?;
    super::provenance::check_local(&files, &dir)?;
    let m = manifest::load(&files)?;
    let steps = m.all_steps().len();
    if json {
        let v = serde_json::json!({
            "valid": true, "pack": m.metadata.name, "version": m.metadata.version, "steps": steps,
        });
        println!("{v}");
    } else {
        println!(
            "ok: {} {} is valid ({steps} steps declared)",
            m.metadata.name, m.metadata.version
        );
    }
    Ok(Outcome::Done)
}

pub fn plan(arg: &Path, inputs_path: Option<&Path>, json: bool) -> Result<Outcome, Failure> {
    let (dir, shown) = locate(arg)?;
    let given = inputs_path.map(inputs::read_file).transpose()?;
    let inputs_file = inputs_path.map_or_else(|| "inputs".to_string(), |p| p.display().to_string());
    let files = pack::PackFiles::read_dir(&dir, &shown, pack::PackLimits::default())?;
    super::provenance::check_local(&files, &dir)?;
    let plan = stella_engine::plan::from_files(&files, given.as_ref(), &inputs_file, &PlanConfig::default())?;
    let summary = Summary::of(plan);
    if json {
        println!("{}", serde_json::to_string_pretty(&summary).expect("summary is JSON"));
        return Ok(Outcome::Done);
    }
    print_summary(&summary);
    Ok(Outcome::Done)
}

fn print_summary(s: &Summary) {
    println!("pack:      {} {}", s.plan.pack.name, s.plan.pack.version);
    println!("planHash:  {}", s.plan_hash);
    println!("steps:     {}", s.steps);
    if let Some(p) = &s.plan.pack.provenance {
        println!("publisher: {} ({})", p.publisher, p.keyid);
        println!("bundle:    sha256 {}", p.bundle_sha256);
        if let Some(src) = &p.source {
            let field = |k: &str| src.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            println!("source:    {} {} at {}", field("url"), field("ref"), field("commit"));
        }
    }
    if s.approvals.is_empty() {
        println!("approvals: none");
    } else {
        println!("approvals:");
        for a in &s.approvals {
            let ttl = a.expires_after_ms.map_or("no expiry".to_string(), |ms| {
                format!("expires {} after the gate is reached", duration::format_ms(ms))
            });
            println!("  - {}: {} of [{}], {ttl}", a.id, a.required_count, a.grants.join(", "));
            if let Some(reason) = &a.reason {
                println!("    reason: {reason}");
            }
        }
    }
    if s.secrets.is_empty() {
        println!("secrets:   none");
    } else {
        println!("secrets:");
        for sec in &s.secrets {
            let scope = sec
                .scope
                .as_deref()
                .map_or(String::new(), |sc| format!(" (scope {sc})"));
            let req = if sec.required { "required" } else { "optional" };
            println!("  - {}{scope}, {req}", sec.name);
        }
    }
    if !s.policies.is_empty() {
        println!("policies:");
        for p in &s.policies {
            match (&p.file, &p.sha256, &p.query, &p.expr) {
                (Some(file), Some(sha), Some(query), _) => {
                    println!("  - {}: rego {file} (sha256 {sha}), {query}, {}", p.step, p.fail_action);
                }
                (_, _, _, expr) => println!(
                    "  - {}: expr {}, {}",
                    p.step,
                    expr.as_deref().unwrap_or(""),
                    p.fail_action
                ),
            }
        }
    }
}
