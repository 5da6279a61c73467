//! `stella run request PACK --inputs FILE [--id ID]`: plan a pack of this repository and write
//! `runs/<id>/request.yaml` with the plan hash pinned, ready to commit.

use std::path::Path;

use stella_engine::layout::RunDir;
use stella_engine::request::Request;
use stella_engine::{Code, inputs, run_id};

use super::pack;
use crate::failure::{Failure, Outcome};
use crate::repo;

pub fn request(pack_arg: &Path, inputs_path: Option<&Path>, id: Option<&str>) -> Result<Outcome, Failure> {
    let (dir, _) = pack::locate(pack_arg)?;
    let root = repo::find_root(&dir)?;
    let abs = std::path::absolute(&dir).unwrap_or(dir.clone());
    let rel = abs
        .strip_prefix(&root)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default();
    if !(rel.starts_with("packs/") && rel.split('/').count() == 2) {
        return Err(Failure::one(
            Code::Usage,
            format!(
                "{}: a requested pack must be a directory packs/<name> of the repository {}",
                dir.display(),
                root.display()
            ),
        ));
    }
    let config = repo::config_in_worktree(&root)?;
    let given = inputs_path.map(inputs::read_file).transpose()?;
    let inputs_file = inputs_path.map_or_else(|| "inputs".to_string(), |p| p.display().to_string());
    let files = stella_engine::pack::PackFiles::read_dir(&dir, &rel, Default::default())?;
    super::provenance::check_local(&files, &dir)?;
    let plan = stella_engine::plan::from_files(&files, given.as_ref(), &inputs_file, &config.plan_config())?;
    let (id, request_rel, path) = new_request_path(&root, id, &plan.pack.name)?;
    let inputs_json = given.as_ref().map_or(serde_json::json!({}), |n| n.to_json());
    let text = Request::render(&rel, &inputs_json, &plan.hash());
    let outcome = written(&path, &text, &id, &request_rel, &plan)?;
    // An unsigned request would fail with ERR_REQUEST_UNSIGNED.
    if config.requests_signed {
        eprintln!(
            "this repository wants signed requests (requests: {{ signed: true }}): commit with git commit -S (gpg.format=ssh) and a key .stella/allowed_signers trusts for namespace git"
        );
    }
    Ok(outcome)
}

/// Where the request of a new run goes: `id` checked (or made from the pack's name), in its
/// shard (`runs/_<xx>/<id>/request.yaml`); an id an existing run (sharded or flat) has is taken.
/// Returns the id, the request's repository path and its path on disk.
pub(super) fn new_request_path(
    root: &Path,
    id: Option<&str>,
    pack_name: &str,
) -> Result<(String, String, std::path::PathBuf), Failure> {
    let id = match id {
        Some(id) if run_id::is_valid(id) => id.to_string(),
        Some(id) => {
            return Err(Failure::one(
                Code::Usage,
                format!(
                    "`{id}` is not a valid run id (lowercase letters, digits, `.`, `_`, `-`; at most 100; starting with a letter or digit)"
                ),
            ));
        }
        None => run_id::generate(pack_name),
    };
    // A new run goes to its shard (`runs/_<xx>/<id>/`); an id a flat run already has is taken.
    let request_rel = RunDir::new(&id).file("request.yaml");
    let path = root.join(&request_rel);
    let flat = root.join(RunDir::flat(&id).file("request.yaml"));
    if let Some(path) = [&path, &flat].into_iter().find(|p| p.exists()) {
        return Err(Failure::one(
            Code::Usage,
            format!(
                "{} already exists; requests are immutable, choose another --id",
                path.display()
            ),
        ));
    }
    Ok((id, request_rel, path))
}

/// Writes the request `text` to `path` and tells what to do next.
pub(super) fn written(
    path: &Path,
    text: &str,
    id: &str,
    request_rel: &str,
    plan: &stella_engine::plan::Plan,
) -> Result<Outcome, Failure> {
    super::init::write_replace(path, text)?;
    println!("{id}");
    eprintln!(
        "wrote {request_rel} (plan {}, {} steps)",
        plan.hash(),
        plan.all_steps().len()
    );
    if !plan.approvals.is_empty() {
        let gates: Vec<String> = plan
            .approvals
            .iter()
            .map(|a| format!("{} ({} of {})", a.id, a.required_count, a.grants.join("|")))
            .collect();
        eprintln!("approvals needed: {}", gates.join(", "));
    }
    eprintln!("next: git add {request_rel} && git commit -m \"request {id}\" && git push");
    Ok(Outcome::Done)
}
