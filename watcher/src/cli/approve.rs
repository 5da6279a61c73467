//! `stella approve RUN --gate G --key KEY`: write `approvals/RUN/G/PRINCIPAL.yaml` bound to the
//! run's plan hash, and its `.sig` exactly as `ssh-keygen -Y sign -n stella-approval` would.

use std::path::Path;

use stella_engine::Code;
use stella_engine::allowed_signers::AllowedSigners;
use stella_engine::approvals::{Approval, Decision, NAMESPACE};
use stella_engine::keys::SshKey;
use stella_engine::plan::StepKind;
use stella_engine::runs;

use crate::failure::{Failure, Outcome};
use crate::repo;

pub struct Args<'a> {
    pub repo: &'a Path,
    pub run: &'a str,
    pub gate: &'a str,
    pub key: &'a Path,
    pub principal: Option<&'a str>,
    pub reject: bool,
    pub comment: Option<&'a str>,
}

pub fn approve(a: Args) -> Result<Outcome, Failure> {
    if !stella_engine::run_id::is_valid(a.run) {
        return Err(Failure::one(Code::Usage, format!("`{}` is not a valid run id", a.run)));
    }
    let root = repo::find_root(a.repo)?;
    let key = SshKey::load(a.key).map_err(|e| {
        let hint = if matches!(e, stella_engine::keys::Error::Encrypted { .. }) {
            "; for a passphrase-protected or agent key, sign with ssh-keygen instead (see docs/approvals.md)"
        } else {
            ""
        };
        Failure::one(e.code(), format!("{e}{hint}"))
    })?;
    let config = repo::config_at_head(&root)?;
    let ledger = repo::open_ledger(&root, &config)?;
    let tip = ledger
        .tip()?
        .ok_or_else(|| Failure::one(Code::Usage, "the branch has no commits"))?;
    let mut view = runs::view(&ledger, tip, &ledger.run_dir(tip, a.run)?);
    let mut at = tip;
    // A request still on a pull request: approve the plan of the checked-out commit, which
    // the runner will execute after the merge (and which the pull request's note shows).
    if !view.has_request
        && let Some(head) = ledger.resolve("HEAD").filter(|h| *h != tip)
    {
        let there = runs::view(&ledger, head, &ledger.run_dir(head, a.run)?);
        if there.has_request {
            eprintln!(
                "run {} is not on {} yet: approving the plan of the checked-out commit {}",
                a.run,
                config.ledger_branch(),
                &head.to_string()[..12]
            );
            (view, at) = (there, head);
        }
    }
    if let Some(why) = &view.invalid {
        return Err(Failure::one(
            why.code,
            format!("run {} is invalid, so it cannot be approved: {why}", a.run),
        ));
    }
    let (plan_hash, gates) = plan_of(&root, &ledger, at, a.run, &view)?;
    let gate = resolve_gate(a.gate, &gates)?;
    let principal = match a.principal {
        Some(p) => p.to_string(),
        None => {
            let text = std::fs::read_to_string(root.join(".stella/allowed_signers")).unwrap_or_default();
            let signers = AllowedSigners::parse(".stella/allowed_signers", &text)?;
            signers.find_principals(&key.public_key(), NAMESPACE, std::time::SystemTime::now()).into_iter().next().ok_or_else(|| {
                Failure::one(
                    Code::SignerUnknown,
                    format!(
                        "key {} is not in .stella/allowed_signers for namespace {NAMESPACE}; add it there (committed before the request), or pass --principal",
                        key.fingerprint()
                    ),
                )
            })?
        }
    };
    if stella_engine::allowed_signers::check_principal(&principal).is_some()
        || principal.contains('/')
        || principal.starts_with('.')
    {
        return Err(Failure::one(
            Code::Usage,
            format!("`{principal}` cannot be used as an approval file name"),
        ));
    }
    let approval = Approval {
        run: a.run.to_string(),
        gate: gate.clone(),
        plan_hash: plan_hash.clone(),
        decision: if a.reject { Decision::Reject } else { Decision::Approve },
        comment: a.comment.map(str::to_string),
    };
    let text = approval.render();
    let sig = key.sign(NAMESPACE, text.as_bytes());
    // Beside the run's other approvals: its shard's `approvals/_<xx>/<id>/`, or a flat run's.
    let rel = format!("{}/{gate}/{principal}.yaml", view.dir.approvals());
    let yaml_path = root.join(&rel);
    super::init::write_replace(&yaml_path, &text)?;
    super::init::write_replace(&root.join(format!("{rel}.sig")), &sig)?;
    println!("{rel}");
    let verb = if a.reject { "rejection" } else { "approval" };
    eprintln!(
        "wrote the {verb} of {principal} for run {} gate {gate} (plan {plan_hash}) and its signature",
        a.run
    );
    eprintln!(
        "next: git add {rel} {rel}.sig && git commit -m \"{verb} of {} by {principal}\" && git push",
        a.run
    );
    Ok(Outcome::Done)
}

/// A plan hash and its approval gates: (approval id, gate step ids).
type PlanGates = (String, Vec<(String, Vec<String>)>);

/// The run's plan hash and approval ids: from the ledger when planned, else by planning the request.
fn plan_of(
    root: &Path,
    ledger: &stella_engine::ledger::Ledger,
    tip: gix::ObjectId,
    run: &str,
    view: &runs::RunView,
) -> Result<PlanGates, Failure> {
    let from_plan = |text: &str| -> Result<PlanGates, Failure> {
        let (plan, hash) =
            stella_engine::plan::Plan::from_plan_json(text).map_err(|e| Failure::one(Code::LedgerTampered, e))?;
        let gates = plan
            .all_steps()
            .into_iter()
            .filter_map(|s| match &s.kind {
                StepKind::Approval(a) => Some((a.id.clone(), vec![s.id.clone()])),
                _ => None,
            })
            .collect();
        Ok((hash, gates))
    };
    if let Some(bytes) = ledger.read(tip, &view.dir.file("plan.json"))? {
        return from_plan(&String::from_utf8_lossy(&bytes));
    }
    if !view.has_request {
        return Err(Failure::one(
            Code::Usage,
            format!("no run {run} on this branch or the checked-out commit (commit its request first)"),
        ));
    }
    // Not planned yet: plan the committed request the way the runner will.
    let request_path = view.dir.file("request.yaml");
    let text = ledger.read(tip, &request_path)?.unwrap_or_default();
    let request = stella_engine::request::Request::parse(&request_path, &String::from_utf8_lossy(&text))?;
    let files = ledger.files_under(tip, &request.pack)?;
    let files = stella_engine::pack::PackFiles::from_entries(&request.pack, files)?;
    // The policy that will judge the request is the branch's, not the checked-out commit's.
    let config = ledger
        .tip()
        .ok()
        .flatten()
        .and_then(|t| ledger.read(t, stella_engine::config::CONFIG_PATH).ok().flatten())
        .map(|t| stella_engine::config::Config::parse(stella_engine::config::CONFIG_PATH, &String::from_utf8_lossy(&t)))
        .transpose()?
        .map_or_else(|| repo::config_at_head(root), Ok)?;
    let plan = stella_engine::plan::from_files(&files, request.inputs.as_ref(), &request_path, &config.plan_config())?;
    from_plan(&plan.to_plan_json())
}

/// `--gate` may name the approval (`security-review`) or the gate step (`review`).
fn resolve_gate(given: &str, gates: &[(String, Vec<String>)]) -> Result<String, Failure> {
    if let Some((id, _)) = gates.iter().find(|(id, _)| id == given) {
        return Ok(id.clone());
    }
    if let Some((id, _)) = gates.iter().find(|(_, steps)| steps.iter().any(|s| s == given)) {
        return Ok(id.clone());
    }
    let known: Vec<&str> = gates.iter().map(|(id, _)| id.as_str()).collect();
    Err(Failure::one(
        Code::Usage,
        if known.is_empty() {
            "this run has no approval gates".to_string()
        } else {
            format!("no gate `{given}` in this run; its gates are: {}", known.join(", "))
        },
    ))
}
