//! `stella ledger verify`: proves the ledger append-only over the branch's whole history.
//! Every commit that touches a runner file (under `runs/<id>/`, other than the request and
//! cancel files people write) must be signed by a key that `.stella/allowed_signers` trusts
//! for namespace `git`; runner files may be added, and `events.ndjson` may grow by appending,
//! but nothing is ever rewritten or deleted; every `plan.json` must match its own hash.
//! A runner file a person changed or deleted is damage: healed once a later trusted runner
//! commit restores its earlier content (see `heal` and docs/ledger.md), a problem until then.

use std::collections::{BTreeMap, HashMap};

use gix::ObjectId;
use serde::Serialize;

use super::diff::{self, Diff};
use super::{Error, Ledger};
use crate::allowed_signers::AllowedSigners;
use crate::layout::{self, RunDir};

/// One violation, naming the commit and the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub commit: String,
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub commits: usize,
    pub runner_commits: usize,
    pub runs: usize,
    pub problems: Vec<Problem>,
    /// Runner files changed or deleted outside a trusted runner commit, healed or not (an
    /// unhealed one is also among `problems`).
    pub damages: Vec<Damage>,
    /// Commits found signed by a trusted runner (trust from their first parent): the
    /// ledger-branch checks do not verify their signatures again.
    #[serde(skip)]
    pub trusted: std::collections::HashSet<ObjectId>,
}

/// A runner file that an untrusted commit changed or deleted, and the trusted runner commit
/// that restored it, if one has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Damage {
    pub commit: String,
    pub author: String,
    pub path: String,
    pub message: String,
    pub healed_by: Option<String>,
    /// The file's content before the first damage: what healing writes back.
    #[serde(skip)]
    pub restore: ObjectId,
}

/// A damaged runner file not healed yet: its content before the first damage, its content
/// after the latest, and its damages (indexes into `Report::damages`).
struct Open {
    good: ObjectId,
    damaged: Option<ObjectId>,
    damages: Vec<usize>,
}

/// What one walk would otherwise read again and again: the `runs` tree of the commit checked
/// last (the next one's parent, in a linear history), each `.stella/allowed_signers` parsed
/// once by blob id, and per run its last segment checked with the seq its events go on at.
#[derive(Default)]
struct Kept {
    runs_tree: Option<(ObjectId, Option<ObjectId>)>,
    /// The raw data of the last `runs` tree diffed on its new side: the next commit's old side.
    runs_data: Option<(ObjectId, Vec<u8>)>,
    signers: HashMap<ObjectId, Result<AllowedSigners, String>>,
    next_seq: HashMap<RunDir, (ObjectId, u64)>,
}

impl Kept {
    /// The `runs` tree of a commit, if any.
    fn runs_tree(&mut self, ledger: &Ledger, commit: ObjectId) -> Result<Option<ObjectId>, Error> {
        if let Some((c, tree)) = self.runs_tree
            && c == commit
        {
            return Ok(tree);
        }
        let tree = entry_at(ledger, commit, "runs", true)?;
        self.runs_tree = Some((commit, tree));
        Ok(tree)
    }

    /// The trusted signers as of `commit`, or why there are none.
    fn signers_at(&mut self, ledger: &Ledger, commit: ObjectId) -> Result<&AllowedSigners, String> {
        let id = entry_at(ledger, commit, ".stella/allowed_signers", false)
            .map_err(|e| e.to_string())?
            .ok_or("there is no .stella/allowed_signers before it")?;
        self.signers
            .entry(id)
            .or_insert_with(|| {
                let text = ledger.repo.find_blob(id).map_err(|e| e.to_string())?.data.clone();
                AllowedSigners::parse(".stella/allowed_signers", &String::from_utf8_lossy(&text))
                    .map_err(|d| format!(".stella/allowed_signers before it does not parse: {d}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// The id of the entry at `path` in `commit`, if it is there and a tree (`tree`) or a blob.
pub(super) fn entry_at(ledger: &Ledger, commit: ObjectId, path: &str, tree: bool) -> Result<Option<ObjectId>, Error> {
    let root = ledger
        .repo
        .find_commit(commit)
        .map_err(super::git)?
        .tree()
        .map_err(super::git)?;
    Ok(root
        .lookup_entry_by_path(path)
        .map_err(super::git)?
        .filter(|e| if tree { e.mode().is_tree() } else { e.mode().is_blob() })
        .map(|e| e.oid().to_owned()))
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
pub fn signer(ledger: &Ledger, commit: ObjectId, signers: &AllowedSigners) -> Result<String, String> {
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

/// Whether `path` holds blob `id` in one of `others` (a merge's other parents).
fn merged_from_other_parent(
    ledger: &Ledger,
    others: &[ObjectId],
    path: &str,
    id: Option<ObjectId>,
) -> Result<bool, Error> {
    for &p in others {
        let tree = ledger
            .repo
            .find_commit(p)
            .map_err(super::git)?
            .tree()
            .map_err(super::git)?;
        if tree
            .lookup_entry_by_path(path)
            .map_err(super::git)?
            .map(|e| e.oid().to_owned())
            == id
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Checks the branch's whole history; the report lists every problem found.
pub fn verify(ledger: &Ledger) -> Result<Report, Error> {
    match ledger.tip()? {
        Some(tip) => verify_at(ledger, tip),
        None => Ok(Report::default()),
    }
}

/// As `verify`, for the history that ends at `tip` (e.g. an incoming bundle before it is accepted).
pub fn verify_at(ledger: &Ledger, tip: ObjectId) -> Result<Report, Error> {
    let mut report = check(ledger, &ledger.history_of(tip)?)?;
    check_ledger_branch(ledger, tip, None, &mut report)?;
    Ok(report)
}

/// With a separate ledger branch, the checks of the commits only it has (`branch::check`),
/// down to `from` (a proven checkpoint's tip) when given, added to `report`.
pub(super) fn check_ledger_branch(
    ledger: &Ledger,
    tip: ObjectId,
    from: Option<ObjectId>,
    report: &mut Report,
) -> Result<(), Error> {
    let mut kept = Kept::default();
    let known = std::mem::take(&mut report.trusted);
    let mut trusted = |commit: ObjectId, trust_from: ObjectId| {
        if known.contains(&commit) {
            return Ok(());
        }
        kept.signers_at(ledger, trust_from)
            .and_then(|s| signer(ledger, commit, s).map(|_| ()))
    };
    for (commit, message) in super::branch::check(ledger, tip, from, &mut trusted)? {
        report.problems.push(Problem {
            commit,
            path: String::new(),
            message,
        });
    }
    Ok(())
}

/// Checks `history` (oldest first; each commit against its first parent, whether or not that
/// parent is in `history`), starting with nothing damaged: the whole history, or the commits
/// after a clean checkpoint (`checkpoint`).
pub(super) fn check(ledger: &Ledger, history: &[ObjectId]) -> Result<Report, Error> {
    let mut report = Report::default();
    let mut kept = Kept::default();
    let mut runs = std::collections::BTreeSet::new();
    let mut open: BTreeMap<String, Open> = BTreeMap::new();
    for &commit in history {
        report.commits += 1;
        let parents = ledger.parents(commit)?;
        let before = match parents.first() {
            Some(&p) => kept.runs_tree(ledger, p)?,
            None => None,
        };
        let mut found = Diff::default();
        let after = kept.runs_tree(ledger, commit)?;
        if before != after {
            let old = match (before, kept.runs_data.take()) {
                (Some(id), Some((kept_id, data))) if id == kept_id => Some(data),
                (Some(id), _) => Some(ledger.repo.find_tree(id).map_err(super::git)?.detach().data),
                (None, _) => None,
            };
            let new = match after {
                Some(id) => Some(ledger.repo.find_tree(id).map_err(super::git)?.detach().data),
                None => None,
            };
            diff::between(ledger, "runs", old.as_deref(), new.as_deref(), &mut found)?;
            kept.runs_data = after.zip(new);
        }
        if let Some(tree) = &found.unsorted {
            report.problems.push(Problem {
                commit: commit.to_hex_with_len(12).to_string(),
                path: tree.clone(),
                message: "tree entries are not in git's order (a hand-made tree object; git never writes one)".into(),
            });
        }
        let diff = found.files;
        let mut changed = Vec::new();
        // Events segments this commit adds, by run: (file name, blob).
        let mut added: BTreeMap<RunDir, Vec<(String, ObjectId)>> = BTreeMap::new();
        let has_segments = |parent: Option<ObjectId>, path: &str| -> Result<bool, Error> {
            Ok(match (parent, layout::classify(path)) {
                (Some(p), Some((_, run, _))) => !ledger.run_segments(p, &run)?.is_empty(),
                _ => false,
            })
        };
        let short = commit.to_hex_with_len(12).to_string();
        let mut problem = |path: &str, message: String| {
            report.problems.push(Problem {
                commit: short.clone(),
                path: path.to_string(),
                message,
            });
        };
        for (path, old, new) in diff {
            // A merge brings in what another parent already had: that was checked in its history.
            if parents.len() > 1 && new.is_some() && merged_from_other_parent(ledger, &parents[1..], &path, new)? {
                continue;
            }
            let Some((_, run, rest)) = layout::classify(&path) else {
                continue;
            };
            if rest == "request.yaml" {
                let planned = match parents.first() {
                    Some(&p) => ledger.has_run_events(p, &run)?,
                    None => false,
                };
                if planned && old.is_some() {
                    problem(
                        &path,
                        "request changed after its run was planned (requests are immutable)".into(),
                    );
                }
                if let (None, Some(id)) = (old, new) {
                    let mut signed = || {
                        let trust = parents.first().copied().unwrap_or(commit);
                        kept.signers_at(ledger, trust)
                            .and_then(|s| signer(ledger, commit, s).map(|_| ()))
                    };
                    let parent = parents.first().copied();
                    if let Some(why) =
                        super::scheduled::check(ledger, commit, parent, &run, &blob(ledger, id), &mut signed)?
                    {
                        problem(&path, why);
                    }
                }
                continue;
            }
            if let (Some(name), None, Some(id)) = (rest.strip_prefix("events/"), old, new) {
                added.entry(run.clone()).or_default().push((name.to_string(), id));
            }
            runs.insert(run);
            changed.push((path, old, new));
        }
        if changed.is_empty() && open.is_empty() {
            continue;
        }
        if !changed.is_empty() {
            report.runner_commits += 1;
        }
        // Trust comes from before the commit: a commit cannot vouch for itself.
        let trust_from = parents.first().copied().unwrap_or(commit);
        let verdict = kept
            .signers_at(ledger, trust_from)
            .and_then(|signers| signer(ledger, commit, signers).map(|_| ()));
        let mut healed_here = Vec::new();
        if verdict.is_ok() {
            report.trusted.insert(commit);
            for (path, o) in &open {
                let now = blob_at(ledger, commit, path)?;
                if restores(ledger, path, o, now) {
                    for &i in &o.damages {
                        report.damages[i].healed_by = Some(short.clone());
                    }
                    healed_here.push(path.clone());
                }
            }
            for path in &healed_here {
                open.remove(path);
            }
        }
        for (path, old, new) in &changed {
            if healed_here.contains(path) {
                continue;
            }
            if let (Err(why), Some(was)) = (&verdict, old) {
                let what = match new {
                    None => "runner file deleted".to_string(),
                    Some(new) if path.ends_with("/events.ndjson") => {
                        if blob(ledger, *new).starts_with(&blob(ledger, *was)) {
                            "events appended".into()
                        } else {
                            "events rewritten (events.ndjson may only grow by appending)".into()
                        }
                    }
                    Some(_) => "runner file rewritten".into(),
                };
                let o = open.entry(path.clone()).or_insert(Open {
                    good: *was,
                    damaged: None,
                    damages: Vec::new(),
                });
                o.damaged = *new;
                o.damages.push(report.damages.len());
                report.damages.push(Damage {
                    commit: short.clone(),
                    author: author(ledger, commit),
                    path: path.clone(),
                    message: format!("{what} in a commit that is not a trusted runner commit: {why}"),
                    healed_by: None,
                    restore: o.good,
                });
                continue;
            }
            if verdict.is_ok() && open.contains_key(path) {
                problem(
                    path,
                    "a damaged runner file written again without its earlier content (run `stella ledger heal`)".into(),
                );
                continue;
            }
            match (old, new) {
                (Some(_), None) => problem(path, "runner file deleted".into()),
                (_, Some(_)) if path.ends_with("/events.ndjson") && has_segments(parents.first().copied(), path)? => {
                    problem(
                        path,
                        "events rewritten (events.ndjson may not change once the run has events segments)".into(),
                    );
                }
                (Some(old), Some(new))
                    if path.ends_with("/events.ndjson") && !blob(ledger, *new).starts_with(&blob(ledger, *old)) =>
                {
                    problem(
                        path,
                        "events rewritten (events.ndjson may only grow by appending)".into(),
                    );
                }
                (Some(_), Some(_)) if path.ends_with("/events.ndjson") => {}
                (Some(_), Some(_)) => problem(path, "runner file rewritten".into()),
                (None, Some(id)) if path.ends_with("/plan.json") => {
                    let text = blob(ledger, *id);
                    if let Err(e) = crate::plan::Plan::from_plan_json(&String::from_utf8_lossy(&text)) {
                        problem(path, format!("plan.json does not match its hash: {e}"));
                    }
                }
                _ => {}
            }
            if let Err(why) = &verdict {
                problem(
                    path,
                    format!("runner file changed in a commit that is not a trusted runner commit: {why}"),
                );
            }
        }
        for (run, segments) in &added {
            // A segment put back by a heal is checked by `restores`, not as a new one.
            let fresh: Vec<(String, ObjectId)> = segments
                .iter()
                .filter(|(name, _)| !healed_here.contains(&run.file(&format!("events/{name}"))))
                .cloned()
                .collect();
            for (path, message) in check_segments(ledger, &mut kept, parents.first().copied(), run, &fresh)? {
                problem(&path, message);
            }
        }
    }
    for d in report.damages.iter().filter(|d| d.healed_by.is_none()) {
        report.problems.push(Problem {
            commit: d.commit.clone(),
            path: d.path.clone(),
            message: format!(
                "{}; run `stella ledger heal` to restore the runner's content",
                d.message
            ),
        });
    }
    report.runs = runs.len();
    Ok(report)
}

/// The events segments a commit adds to `run` must be named for their first event, hold whole
/// lines of events numbered on from the run's last one, and come after every segment before
/// them: the run's events only grow at their end. Returns (path, problem) for each breach.
fn check_segments(
    ledger: &Ledger,
    kept: &mut Kept,
    parent: Option<ObjectId>,
    run: &RunDir,
    added: &[(String, ObjectId)],
) -> Result<Vec<(String, String)>, Error> {
    use super::events::{LEGACY, segment_seq};
    let mut problems = Vec::new();
    let mut before: Vec<(u64, ObjectId)> = match parent {
        Some(p) => ledger.run_segments(p, run)?,
        None => Vec::new(),
    };
    // The seq the run's events go on at: known without reading when the last segment is
    // the one this walk checked last for the run.
    let mut next = match (before.last(), kept.next_seq.get(run)) {
        (Some((_, id)), Some((checked, next))) if id == checked => Some(*next),
        _ => {
            let last_before = match (before.last(), parent) {
                (Some((_, id)), _) => Some(ledger.repo.find_blob(*id).map_err(super::git)?.data.clone()),
                (None, Some(p)) => ledger.read(p, &run.file(LEGACY))?,
                (None, None) => None,
            };
            last_before.as_deref().and_then(super::events::last_seq).map(|s| s + 1)
        }
    };
    let mut sorted: Vec<(Option<u64>, &String, ObjectId)> =
        added.iter().map(|(name, id)| (segment_seq(name), name, *id)).collect();
    sorted.sort();
    for (seq, name, id) in sorted {
        let path = run.file(&format!("events/{name}"));
        let Some(seq) = seq else {
            problems.push((
                path,
                "not an events segment (runs/<id>/events/ holds only <first seq, 12 digits>.ndjson)".into(),
            ));
            continue;
        };
        if before.last().is_some_and(|(last, _)| seq <= *last) {
            problems.push((
                path,
                "events segment added before existing ones (events may only grow at their end)".into(),
            ));
            continue;
        }
        let bytes = ledger.repo.find_blob(id).map_err(super::git)?.data.clone();
        if !bytes.ends_with(b"\n") {
            problems.push((path, "events segment does not end with a whole line".into()));
            continue;
        }
        let mut expect = next.unwrap_or(seq);
        if expect != seq {
            problems.push((
                path,
                format!("events segment starts at seq {seq}, but the run's events go on at {expect}"),
            ));
            continue;
        }
        let mut broken = None;
        for (i, line) in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            match serde_json::from_slice::<crate::event::Event>(line) {
                Ok(e) if e.seq == expect => expect += 1,
                Ok(e) => {
                    broken = Some(format!("line {}: seq {} where {expect} was due", i + 1, e.seq));
                    break;
                }
                Err(e) => {
                    broken = Some(format!("line {}: not an event: {e}", i + 1));
                    break;
                }
            }
        }
        if let Some(why) = broken {
            problems.push((path, format!("events segment is not the run's next events ({why})")));
            continue;
        }
        next = Some(expect);
        before.push((seq, id));
        kept.next_seq.insert(run.clone(), (id, expect));
    }
    Ok(problems)
}

/// A blob's bytes (empty when it cannot be read).
fn blob(ledger: &Ledger, id: ObjectId) -> Vec<u8> {
    ledger.repo.find_blob(id).map(|b| b.data.clone()).unwrap_or_default()
}

/// The blob at `path` in `commit`, if it is a file there.
fn blob_at(ledger: &Ledger, commit: ObjectId, path: &str) -> Result<Option<ObjectId>, Error> {
    entry_at(ledger, commit, path, false)
}

/// Whether `now` restores a damaged file: exactly its content before the damage, or, for
/// events, a runner's continuation of it that does not carry what the damage appended.
fn restores(ledger: &Ledger, path: &str, o: &Open, now: Option<ObjectId>) -> bool {
    let Some(now) = now else { return false };
    if now == o.good {
        return true;
    }
    if !path.ends_with("/events.ndjson") || Some(now) == o.damaged {
        return false;
    }
    let (good, now) = (blob(ledger, o.good), blob(ledger, now));
    let appended = o.damaged.map(|d| blob(ledger, d)).filter(|d| d.starts_with(&good));
    now.starts_with(&good) && !appended.is_some_and(|d| now.starts_with(&d))
}

/// Who wrote a commit (`name <email>`).
fn author(ledger: &Ledger, commit: ObjectId) -> String {
    ledger
        .repo
        .find_commit(commit)
        .ok()
        .and_then(|c| c.author().ok().map(|a| format!("{} <{}>", a.name, a.email)))
        .unwrap_or_default()
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
