//! `stella ledger verify`: proves the ledger append-only over the branch's whole history.
//! Every commit that touches a runner file (under `runs/<id>/`, other than the request and
//! cancel files people write) must be signed by a key that `.stella/allowed_signers` trusts
//! for namespace `git`; runner files may be added, and `events.ndjson` may grow by appending,
//! but nothing is ever rewritten or deleted; every `plan.json` must match its own hash.

use std::collections::BTreeMap;

use gix::ObjectId;
use serde::Serialize;

use super::{Error, Ledger, is_runner_path};
use crate::allowed_signers::AllowedSigners;

/// One violation, naming the commit and the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub commit: String,
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub commits: usize,
    pub runner_commits: usize,
    pub runs: usize,
    pub problems: Vec<Problem>,
}

/// The files of the runner under `runs/` at `commit`: path -> blob id.
fn runner_files(ledger: &Ledger, commit: ObjectId) -> Result<BTreeMap<String, ObjectId>, Error> {
    let mut out = BTreeMap::new();
    let repo = &ledger.repo;
    let tree = repo
        .find_commit(commit)
        .map_err(super::git)?
        .tree()
        .map_err(super::git)?;
    let Some(runs) = tree.lookup_entry_by_path("runs").map_err(super::git)? else {
        return Ok(out);
    };
    if !runs.mode().is_tree() {
        return Ok(out);
    }
    let mut stack = vec![("runs".to_string(), runs.oid().to_owned())];
    while let Some((prefix, id)) = stack.pop() {
        let t = repo.find_tree(id).map_err(super::git)?;
        for e in t.iter() {
            let e = e.map_err(super::git)?;
            let path = format!("{prefix}/{}", e.filename());
            if e.mode().is_tree() {
                stack.push((path, e.oid().to_owned()));
            } else if is_runner_path(&path) {
                out.insert(path, e.oid().to_owned());
            }
        }
    }
    Ok(out)
}

/// The commit's bytes without its `gpgsig` header (what was signed), and the signature.
pub fn split_signature(raw: &[u8]) -> (Vec<u8>, Option<String>) {
    let text = String::from_utf8_lossy(raw);
    let (headers, message) = match text.find("\n\n") {
        Some(i) => (&text[..i + 1], &text[i + 1..]),
        None => (&text[..], ""),
    };
    let mut payload = String::new();
    let mut sig: Option<String> = None;
    let mut in_sig = false;
    for line in headers.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("gpgsig ") {
            in_sig = true;
            sig = Some(rest.to_string());
            continue;
        }
        if in_sig {
            if let Some(cont) = line.strip_prefix(' ') {
                sig.get_or_insert_with(String::new).push_str(cont);
                continue;
            }
            in_sig = false;
        }
        payload.push_str(line);
    }
    payload.push_str(message);
    (payload.into_bytes(), sig)
}

/// Who signed `commit` for namespace `git` according to `signers`, or why nobody did.
fn signer(ledger: &Ledger, commit: ObjectId, signers: &AllowedSigners) -> Result<String, String> {
    let raw = ledger.raw_commit(commit).map_err(|e| e.to_string())?;
    let (payload, sig) = split_signature(&raw);
    let sig = sig.ok_or("the commit is not signed")?;
    let key =
        crate::sshsig::verify(&sig, "git", &payload).map_err(|e| format!("its signature does not verify: {e}"))?;
    let c = ledger.repo.find_commit(commit).map_err(|e| e.to_string())?;
    let secs = c.time().map(|t| t.seconds).unwrap_or(0).max(0) as u64;
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    signers
        .find_principals(&key, "git", at)
        .into_iter()
        .next()
        .ok_or_else(|| {
            "it is signed by a key that .stella/allowed_signers does not trust for namespace git".to_string()
        })
}

fn signers_at(ledger: &Ledger, commit: ObjectId) -> Option<AllowedSigners> {
    let text = ledger.read(commit, ".stella/allowed_signers").ok().flatten()?;
    AllowedSigners::parse(".stella/allowed_signers", &String::from_utf8_lossy(&text)).ok()
}

/// Checks the branch's whole history; the report lists every problem found.
pub fn verify(ledger: &Ledger) -> Result<Report, Error> {
    let mut report = Report::default();
    let history = ledger.history()?;
    let mut runs = std::collections::BTreeSet::new();
    for &commit in &history {
        report.commits += 1;
        let parents = ledger.parents(commit)?;
        let before = match parents.first() {
            Some(&p) => runner_files(ledger, p)?,
            None => BTreeMap::new(),
        };
        let after = runner_files(ledger, commit)?;
        let mut changed = Vec::new();
        let short = commit.to_hex_with_len(12).to_string();
        let mut problem = |path: &str, message: String| {
            report.problems.push(Problem {
                commit: short.clone(),
                path: path.to_string(),
                message,
            });
        };
        for (path, old) in &before {
            match after.get(path) {
                None => problem(path, "runner file deleted".into()),
                Some(new) if new != old => {
                    if path.ends_with("/events.ndjson") {
                        let old_bytes = ledger.repo.find_blob(*old).map(|b| b.data.clone()).unwrap_or_default();
                        let new_bytes = ledger.repo.find_blob(*new).map(|b| b.data.clone()).unwrap_or_default();
                        if !new_bytes.starts_with(&old_bytes) {
                            problem(
                                path,
                                "events rewritten (events.ndjson may only grow by appending)".into(),
                            );
                        }
                    } else {
                        problem(path, "runner file rewritten".into());
                    }
                    changed.push(path.clone());
                }
                Some(_) => {}
            }
        }
        for (path, id) in &after {
            if !before.contains_key(path) {
                changed.push(path.clone());
            }
            if path.ends_with("/plan.json") && !before.contains_key(path) {
                let text = ledger.repo.find_blob(*id).map(|b| b.data.clone()).unwrap_or_default();
                if let Err(e) = crate::plan::Plan::from_plan_json(&String::from_utf8_lossy(&text)) {
                    problem(path, format!("plan.json does not match its hash: {e}"));
                }
            }
            if let Some(run) = path.split('/').nth(1) {
                runs.insert(run.to_string());
            }
        }
        if changed.is_empty() {
            continue;
        }
        report.runner_commits += 1;
        // Trust comes from before the commit: a commit cannot vouch for itself.
        let trust_from = parents.first().copied().unwrap_or(commit);
        let verdict = match signers_at(ledger, trust_from) {
            Some(signers) => signer(ledger, commit, &signers).map(|_| ()),
            None => Err("there is no readable .stella/allowed_signers before it".into()),
        };
        if let Err(why) = verdict {
            for path in changed {
                problem(
                    &path,
                    format!("runner file changed in a commit that is not a trusted runner commit: {why}"),
                );
            }
        }
    }
    report.runs = runs.len();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_header_is_cut_out_exactly() {
        let raw = b"tree abc\nparent def\nauthor A <a> 1 +0000\ncommitter A <a> 1 +0000\ngpgsig -----BEGIN SSH SIGNATURE-----\n U1NIU0lH\n -----END SSH SIGNATURE-----\n\nmessage\n";
        let (payload, sig) = split_signature(raw);
        assert_eq!(
            payload,
            b"tree abc\nparent def\nauthor A <a> 1 +0000\ncommitter A <a> 1 +0000\n\nmessage\n"
        );
        assert_eq!(
            sig.unwrap(),
            "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n"
        );
    }
}
