//! Pull requests (DESIGN section 9): every run request a pull request adds is planned, never
//! executed, and the plan summary is written as a git note on the pull request's head commit in
//! `refs/notes/stella`, pushed so that `git log --notes=stella` shows it in any clone. Writing
//! and pushing only: reading a note back after the merge (`noted_plan_hash`) is `ledger::notes`'s.

use gix::ObjectId;

use super::{Error, Remote};
use crate::code::Code;
use crate::config::{CONFIG_PATH, Config};
use crate::layout::RunDir;
use crate::ledger::Ledger;
use crate::ledger::notes::{NOTES_REF as NOTES, REMOTE_NOTES_REF};
/// Who writes notes: the runner (a runner machine often has no git identity of its own).
const IDENTITY: [&str; 4] = [
    "-c",
    "user.name=stella runner",
    "-c",
    "user.email=runner@stella.invalid",
];

impl Remote {
    fn git_as_runner(&self, args: &[&str]) -> Result<String, Error> {
        let mut all: Vec<&str> = IDENTITY.to_vec();
        all.extend_from_slice(args);
        self.git(&all)
    }

    /// Plans every run request an open pull request adds and writes the summary as a note on
    /// its head commit, then pushes the notes. A head is planned again only when it or the
    /// branch moved. Returns how many notes were written.
    pub fn note_pull_requests(&self, ledger: &Ledger) -> Result<usize, Error> {
        let pulls = self.git(&["for-each-ref", "--format=%(objectname)", "refs/stella/pulls/"])?;
        let heads: Vec<&str> = pulls.lines().filter(|l| !l.is_empty()).collect();
        let tip = self
            .rev(&format!("refs/heads/{}", self.branch))
            .and_then(|t| ObjectId::from_hex(t.as_bytes()).ok());
        let tip_hex = tip.map(|t| t.to_string()).unwrap_or_default();
        let mut noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
        noted.retain(|head, _| heads.contains(&head.as_str()));
        let mut written = 0;
        for head in heads {
            if noted.get(head) == Some(&tip_hex) {
                continue;
            }
            let Ok(head_id) = ObjectId::from_hex(head.as_bytes()) else {
                continue;
            };
            let mut sections = Vec::new();
            // The requests the head adds to the branch: a diff of the two `runs/` trees.
            for dir in ledger.requests_added(tip, head_id).unwrap_or_default() {
                let Some(text) = ledger.read(head_id, &dir.file("request.yaml")).ok().flatten() else {
                    continue;
                };
                sections.push(summary(ledger, head_id, tip, &dir, &String::from_utf8_lossy(&text)));
            }
            if !sections.is_empty() {
                let note = sections.join("\n");
                let existing = self.git(&["notes", "--ref=stella", "show", head]).unwrap_or_default();
                if existing.trim() != note.trim() {
                    self.git_as_runner(&["notes", "--ref=stella", "add", "-f", "-m", &note, head])?;
                    written += 1;
                }
            }
            // Planned against this tip: not again until the head or the branch moves.
            noted.insert(head.to_string(), tip_hex.clone());
        }
        drop(noted);
        // Push when the notes hold anything the remote lacks (new now, or left by a failed push).
        let local = self.rev(NOTES);
        let remote = self.rev(REMOTE_NOTES_REF);
        if let Some(l) = &local
            && local != remote
            && !remote.as_deref().is_some_and(|r| self.is_ancestor(l, r))
        {
            self.push_notes()?;
            if let Some(pushed) = self.rev(NOTES) {
                let _ = self.git(&["update-ref", REMOTE_NOTES_REF, &pushed]);
            }
        }
        Ok(written)
    }

    /// Pushes `refs/notes/stella`, merging in notes others pushed meanwhile.
    fn push_notes(&self) -> Result<(), Error> {
        const ATTEMPTS: u32 = 10;
        let mut attempt = 0;
        loop {
            let failed = match self.git(&["push", "-q", &self.name, &format!("{NOTES}:{NOTES}")]) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            // Someone else added notes meanwhile: merge theirs (ours win on the same commit).
            self.git(&[
                "fetch",
                "-q",
                "--no-tags",
                &self.name,
                &format!("+{NOTES}:{REMOTE_NOTES_REF}"),
            ])?;
            self.git_as_runner(&["notes", "--ref=stella", "merge", "-q", "-s", "ours", REMOTE_NOTES_REF])?;
            attempt += 1;
            if attempt == ATTEMPTS {
                return Err(failed);
            }
        }
    }
}

/// The note for one request of a pull request: its plan, or why it does not plan. The pack and
/// request are the pull request's; the repository policy and the approvers are the branch's,
/// as they will judge the request after the merge.
fn summary(ledger: &Ledger, head: ObjectId, tip: Option<ObjectId>, dir: &RunDir, text: &str) -> String {
    let run = dir.id.as_str();
    let request_path = dir.file("request.yaml");
    let config = tip
        .and_then(|t| ledger.read(t, CONFIG_PATH).ok().flatten())
        .and_then(|t| Config::parse(CONFIG_PATH, &String::from_utf8_lossy(&t)).ok())
        .unwrap_or_default();
    let coded = |d: crate::diag::Diagnostics| {
        d.iter()
            .map(|x| format!("{x} [{}]", x.code))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let planned = (|| -> Result<crate::plan::Plan, String> {
        let request = crate::request::Request::parse(&request_path, text).map_err(coded)?;
        let files = ledger.files_under(head, &request.pack).map_err(|e| e.to_string())?;
        if files.is_empty() {
            return Err(format!("{}: no pack at this commit", request.pack));
        }
        let files =
            crate::pack::PackFiles::from_entries(&request.pack, files).map_err(|d| format!("{d} [{}]", d.code))?;
        let plan = crate::plan::from_files(&files, request.inputs.as_ref(), &request_path, &config.plan_config())
            .map_err(coded)?;
        if let Some(pin) = &request.plan_hash
            && *pin != plan.hash()
        {
            return Err(format!(
                "the request pins {pin} but plans to {} [{}]",
                plan.hash(),
                Code::PackHashMismatch
            ));
        }
        Ok(plan)
    })();
    match planned {
        Err(e) => format!(
            "stella plan for runs/{run}\n  does not plan:\n  {}\n",
            e.replace('\n', "\n  ")
        ),
        Ok(plan) => {
            let mut out = plan_summary(ledger, tip, run, &plan);
            out.push_str(&requester_line(
                ledger,
                head,
                tip,
                &request_path,
                config.requests_signed,
            ));
            out
        }
    }
}

/// Who will be the run's `requestedBy` once a merge commit brings the request (a squash or
/// rebase re-creates the commit, and its signature with it), and whether that will do; empty
/// when nobody is named and `requests: { signed: true }` is not set.
fn requester_line(ledger: &Ledger, head: ObjectId, tip: Option<ObjectId>, path: &str, signed: bool) -> String {
    let Some(tip) = tip else { return String::new() };
    match crate::runs::requested_on_pull_request(ledger, head, tip, path) {
        Ok(principal) => format!("  requestedBy: {principal}\n"),
        Err(why) if signed => format!(
            "  requestedBy: none ({why}); requests: {{ signed: true }} fails this run after the merge [{}]\n",
            Code::RequestUnsigned
        ),
        // Nobody named and nobody required: nothing to tell the reviewers.
        Err(_) => String::new(),
    }
}

fn plan_summary(ledger: &Ledger, tip: Option<ObjectId>, run: &str, plan: &crate::plan::Plan) -> String {
    let approvers = tip
        .and_then(|t| ledger.read(t, crate::approvals::APPROVERS_PATH).ok().flatten())
        .and_then(|t| {
            crate::approvals::Approvers::parse(crate::approvals::APPROVERS_PATH, &String::from_utf8_lossy(&t)).ok()
        })
        .unwrap_or_default();
    let mut out = format!(
        "stella plan for runs/{run}\n  pack: {} {}\n  planHash: {}\n  steps: {}\n",
        plan.pack.name,
        plan.pack.version,
        plan.hash(),
        plan.all_steps().len()
    );
    if plan.approvals.is_empty() {
        out.push_str("  approvals: none\n");
    }
    for a in &plan.approvals {
        let ttl = a.expires_after_ms.map_or(String::new(), |ms| {
            format!(", expires {} after the gate is reached", crate::duration::format_ms(ms))
        });
        let who = approvers.holders(&a.grants);
        let who = if who.is_empty() {
            "nobody yet".to_string()
        } else {
            who.join(", ")
        };
        let own = if a.allow_self_approval {
            ", the requester's own approval counts"
        } else {
            ""
        };
        out.push_str(&format!(
            "  approval {}: {} of [{}] ({who}){ttl}{own}\n",
            a.id,
            a.required_count,
            a.grants.join(", ")
        ));
    }
    if plan.secrets.is_empty() {
        out.push_str("  secrets: none\n");
    }
    for sct in &plan.secrets {
        out.push_str(&format!(
            "  secret {}{}\n",
            sct.name,
            sct.scope.as_deref().map_or(String::new(), |s| format!(" ({s})"))
        ));
    }
    out
}
