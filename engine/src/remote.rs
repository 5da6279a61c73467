//! Working with a shared git server (DESIGN section 9): fetching the branch and pull-request
//! refs, fast-forwarding the local branch (a diverged branch is an error, never a merge),
//! pushing runner commits (re-committing them on the new tip when the remote moved), and
//! claiming runs with create-only pushes so each run executes exactly once across runners.
//! Uses the git CLI for the network (push, fetch); the ledger for commits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gix::ObjectId;

use crate::code::Code;
use crate::keys::SshKey;
use crate::ledger::{FileWrite, Ledger, is_runner_path};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Diverged(String),
    #[error("git: {0}")]
    Git(String),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Diverged(_) => Code::LedgerTampered,
            Error::Git(_) => Code::Io,
        }
    }
}

/// A remote and the branch the runner works on.
#[derive(Debug, Clone)]
pub struct Remote {
    pub root: PathBuf,
    pub name: String,
    pub branch: String,
    /// Pull-request ref patterns fetched for planning (`refs/pull/*/head`, ...).
    pub pull_patterns: Vec<String>,
    /// How long a claim stays valid without renewal.
    pub lease: Duration,
}

/// The outcome of claiming a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This runner holds the claim (new, already its own, or renewed).
    Won,
    /// This runner took over a claim whose runner has been silent past the lease.
    TakenOver { from: String },
    /// Another runner holds it.
    Lost { holder: String },
}

/// Runs the git CLI in `root`; its trimmed stdout, or its stderr as the error.
pub fn git_in(root: &Path, args: &[&str]) -> Result<String, Error> {
    let out = Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .map_err(|e| Error::Git(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(Error::Git(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Remote {
    fn git(&self, args: &[&str]) -> Result<String, Error> {
        git_in(&self.root, args)
    }

    fn tracking(&self) -> String {
        format!("refs/remotes/{}/{}", self.name, self.branch)
    }

    fn rev(&self, name: &str) -> Option<String> {
        self.git(&["rev-parse", "--verify", "--quiet", &format!("{name}^{{commit}}")])
            .ok()
            .filter(|s| !s.is_empty())
    }

    /// Fetches the branch, the pull-request refs and the notes.
    pub fn fetch(&self) -> Result<(), Error> {
        let mut specs = vec![
            format!("+refs/heads/{b}:{}", self.tracking(), b = self.branch),
            "+refs/notes/stella:refs/stella/remote-notes".to_string(),
        ];
        for p in &self.pull_patterns {
            let local = p.trim_start_matches("refs/").replace('/', "-").replace("-*-", "/*/");
            specs.push(format!("+{p}:refs/stella/pulls/{local}"));
        }
        let mut args = vec!["fetch", "-q", "--no-tags", self.name.as_str()];
        args.extend(specs.iter().map(String::as_str));
        // Missing optional refs (no notes yet, no pull requests) are fine; a missing branch is not.
        match self.git(&args) {
            Ok(_) => Ok(()),
            Err(_) => {
                let spec = format!("+refs/heads/{b}:{}", self.tracking(), b = self.branch);
                self.git(&["fetch", "-q", "--no-tags", &self.name, &spec])?;
                for s in &specs[1..] {
                    let _ = self.git(&["fetch", "-q", "--no-tags", &self.name, s]);
                }
                Ok(())
            }
        }
    }

    /// Brings the local branch level with the remote: fast-forward when behind; when the local
    /// branch has runner commits the remote lacks, re-commits their files on the remote tip.
    /// Anything else that diverged is an error, never merged.
    pub fn integrate(&self, ledger: &mut Ledger, key: &SshKey) -> Result<(), Error> {
        let branch_ref = format!("refs/heads/{}", self.branch);
        let Some(remote) = self.rev(&self.tracking()) else {
            return Ok(());
        };
        let Some(local) = self.rev(&branch_ref) else {
            self.git(&["update-ref", &branch_ref, &remote])?;
            return Ok(());
        };
        if local == remote || self.is_ancestor(&remote, &local) {
            return Ok(());
        }
        if self.is_ancestor(&local, &remote) {
            return self.fast_forward(&remote, &local);
        }
        // Diverged: only the runner's own commits may be replayed.
        let base = self.git(&["merge-base", &local, &remote])?;
        let changed = self.git(&["diff", "--name-only", &base, &local])?;
        let paths: Vec<&str> = changed.lines().filter(|l| !l.is_empty()).collect();
        if let Some(p) = paths.iter().find(|p| !is_runner_path(p)) {
            return Err(Error::Diverged(format!(
                "local branch {} has commits the remote lacks that are not the runner's (e.g. {p}); it is never merged: reconcile it by hand",
                self.branch
            )));
        }
        let local_id = ObjectId::from_hex(local.as_bytes()).map_err(|e| Error::Git(e.to_string()))?;
        let mut writes = Vec::new();
        for p in &paths {
            if let Some(bytes) = ledger.read(local_id, p).map_err(|e| Error::Git(e.to_string()))? {
                writes.push(FileWrite {
                    path: (*p).to_string(),
                    bytes,
                });
            }
        }
        self.fast_forward_force(&remote, &local)?;
        ledger.refresh();
        if !writes.is_empty() {
            ledger
                .commit(
                    &writes,
                    &format!("stella: runner results re-committed on {}", &remote[..12]),
                    key,
                )
                .map_err(|e| Error::Git(e.to_string()))?;
        }
        Ok(())
    }

    fn is_ancestor(&self, a: &str, b: &str) -> bool {
        Command::new("git")
            .current_dir(&self.root)
            .args(["merge-base", "--is-ancestor", a, b])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn head_is_branch(&self) -> bool {
        self.git(&["symbolic-ref", "-q", "HEAD"]).ok().as_deref()
            == Some(format!("refs/heads/{}", self.branch).as_str())
    }

    fn fast_forward(&self, to: &str, from: &str) -> Result<(), Error> {
        if self.head_is_branch() {
            self.git(&["merge", "-q", "--ff-only", to]).map(|_| ())
        } else {
            self.git(&["update-ref", &format!("refs/heads/{}", self.branch), to, from])
                .map(|_| ())
        }
    }

    /// Moves the branch to `to` dropping the local runner commits (their files are re-committed next).
    fn fast_forward_force(&self, to: &str, from: &str) -> Result<(), Error> {
        if self.head_is_branch() {
            self.git(&["reset", "-q", "--keep", to]).map(|_| ())
        } else {
            self.git(&["update-ref", &format!("refs/heads/{}", self.branch), to, from])
                .map(|_| ())
        }
    }

    /// Pushes the branch when it is ahead; fetches, re-integrates and retries when the remote moved.
    pub fn push(&self, ledger: &mut Ledger, key: &SshKey) -> Result<bool, Error> {
        let branch_ref = format!("refs/heads/{}", self.branch);
        for _ in 0..20 {
            let (Some(local), remote) = (self.rev(&branch_ref), self.rev(&self.tracking())) else {
                return Ok(false);
            };
            if remote.as_deref() == Some(local.as_str())
                || remote.as_deref().is_some_and(|r| self.is_ancestor(&local, r))
            {
                return Ok(false);
            }
            let spec = format!("{branch_ref}:{branch_ref}");
            if self.git(&["push", "-q", &self.name, &spec]).is_ok() {
                let _ = self.git(&["update-ref", &self.tracking(), &local]);
                return Ok(true);
            }
            self.fetch()?;
            self.integrate(ledger, key)?;
        }
        Err(Error::Git(format!(
            "could not push {}: the remote kept moving",
            self.branch
        )))
    }

    /// Claims `run` for this runner (`refs/stella/claims/<run>` on the remote, created only if
    /// absent — atomic on the server); takes over a claim silent for longer than the lease.
    pub fn claim(&self, run: &str, key: &SshKey) -> Result<Claim, Error> {
        let claim_ref = format!("refs/stella/claims/{run}");
        let me = key.fingerprint();
        let blob = self.claim_blob(&me)?;
        let create = format!("--force-with-lease={claim_ref}:");
        if self
            .git(&["push", "-q", &create, &self.name, &format!("{blob}:{claim_ref}")])
            .is_ok()
        {
            return Ok(Claim::Won);
        }
        // Someone holds it: read who and when.
        let local = format!("refs/stella/remote-claims/{run}");
        self.git(&["fetch", "-q", "--no-tags", &self.name, &format!("+{claim_ref}:{local}")])?;
        let current = self.git(&["rev-parse", &local])?;
        let text = self.git(&["cat-file", "-p", &current]).unwrap_or_default();
        let holder = text
            .lines()
            .find_map(|l| l.strip_prefix("runner "))
            .unwrap_or("?")
            .to_string();
        let at: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("at "))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if holder == me {
            self.renew(run, key)?;
            return Ok(Claim::Won);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if now.saturating_sub(at) <= self.lease.as_secs() {
            return Ok(Claim::Lost { holder });
        }
        let lease = format!("--force-with-lease={claim_ref}:{current}");
        match self.git(&["push", "-q", &lease, &self.name, &format!("{blob}:{claim_ref}")]) {
            Ok(_) => Ok(Claim::TakenOver { from: holder }),
            Err(_) => Ok(Claim::Lost { holder }),
        }
    }

    /// Renews this runner's claim on `run` (the lease counts from the last renewal).
    pub fn renew(&self, run: &str, key: &SshKey) -> Result<(), Error> {
        let claim_ref = format!("refs/stella/claims/{run}");
        let blob = self.claim_blob(&key.fingerprint())?;
        self.git(&["push", "-q", "--force", &self.name, &format!("{blob}:{claim_ref}")])
            .map(|_| ())
    }

    fn claim_blob(&self, me: &str) -> Result<String, Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let content = format!("runner {me}\nat {now}\n");
        let mut child = Command::new("git")
            .current_dir(&self.root)
            .args(["hash-object", "-w", "--stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| Error::Git(e.to_string()))?;
        std::io::Write::write_all(child.stdin.as_mut().expect("piped"), content.as_bytes())
            .map_err(|e| Error::Git(e.to_string()))?;
        let out = child.wait_with_output().map_err(|e| Error::Git(e.to_string()))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// A plan summary for a pull request's head commit, written as a git note.
impl Remote {
    /// Plans every run request a pull request adds (never executes it) and writes the summary
    /// as a note on the pull request's head commit in `refs/notes/stella`, then pushes the notes.
    /// Returns how many notes were written.
    pub fn note_pull_requests(&self, ledger: &Ledger) -> Result<usize, Error> {
        let pulls = self.git(&["for-each-ref", "--format=%(objectname)", "refs/stella/pulls/"])?;
        let heads: Vec<&str> = pulls.lines().filter(|l| !l.is_empty()).collect();
        if heads.is_empty() {
            return Ok(0);
        }
        let tip = self
            .rev(&format!("refs/heads/{}", self.branch))
            .and_then(|t| ObjectId::from_hex(t.as_bytes()).ok());
        let mut written = 0;
        for head in heads {
            let Ok(head_id) = ObjectId::from_hex(head.as_bytes()) else {
                continue;
            };
            let mut sections = Vec::new();
            for (name, is_dir) in ledger.list(head_id, "runs").unwrap_or_default() {
                if !is_dir || !crate::run_id::is_valid(&name) {
                    continue;
                }
                let request_path = format!("runs/{name}/request.yaml");
                let in_pr = ledger.read(head_id, &request_path).ok().flatten();
                let on_branch = tip.and_then(|t| ledger.read(t, &request_path).ok().flatten());
                let Some(text) = in_pr else { continue };
                if on_branch.is_some() {
                    continue;
                }
                sections.push(summary(ledger, head_id, tip, &name, &String::from_utf8_lossy(&text)));
            }
            if sections.is_empty() {
                continue;
            }
            let note = sections.join("\n");
            let existing = self.git(&["notes", "--ref=stella", "show", head]).unwrap_or_default();
            if existing.trim() == note.trim() {
                continue;
            }
            self.git(&["notes", "--ref=stella", "add", "-f", "-m", &note, head])?;
            written += 1;
        }
        if written > 0 {
            for _ in 0..10 {
                if self
                    .git(&["push", "-q", &self.name, "refs/notes/stella:refs/notes/stella"])
                    .is_ok()
                {
                    break;
                }
                // Someone else added notes meanwhile: take theirs, keep ours.
                let _ = self.git(&["fetch", "-q", &self.name, "refs/notes/stella:refs/stella/notes-theirs"]);
                let _ = self.git(&[
                    "notes",
                    "--ref=stella",
                    "merge",
                    "-s",
                    "theirs",
                    "refs/stella/notes-theirs",
                ]);
            }
        }
        Ok(written)
    }
}

/// The note for one request of a pull request: its plan, or why it does not plan.
fn summary(ledger: &Ledger, head: ObjectId, tip: Option<ObjectId>, run: &str, text: &str) -> String {
    let request_path = format!("runs/{run}/request.yaml");
    let config = ledger
        .read(head, crate::config::CONFIG_PATH)
        .ok()
        .flatten()
        .and_then(|t| crate::config::Config::parse(crate::config::CONFIG_PATH, &String::from_utf8_lossy(&t)).ok())
        .unwrap_or_default();
    let planned = (|| -> Result<crate::plan::Plan, String> {
        let request = crate::request::Request::parse(&request_path, text).map_err(|d| d.to_string())?;
        let files = ledger.files_under(head, &request.pack).map_err(|e| e.to_string())?;
        if files.is_empty() {
            return Err(format!("{}: no pack at this commit", request.pack));
        }
        let files = crate::pack::PackFiles::from_entries(&request.pack, files).map_err(|d| d.to_string())?;
        let plan = crate::plan_files(&files, request.inputs.as_ref(), &request_path, &config.plan_config())
            .map_err(|d| d.to_string())?;
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
            "stella plan for runs/{run}: does not plan\n  {}",
            e.replace('\n', "\n  ")
        ),
        Ok(plan) => {
            // Approvals are judged by the trust files in force before the merge: the branch tip's.
            let approvers = tip
                .and_then(|t| ledger.read(t, crate::approvals::APPROVERS_PATH).ok().flatten())
                .and_then(|t| {
                    crate::approvals::Approvers::parse(crate::approvals::APPROVERS_PATH, &String::from_utf8_lossy(&t))
                        .ok()
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
                out.push_str(&format!(
                    "  approval {}: {} of [{}] ({who}){ttl}\n",
                    a.id,
                    a.required_count,
                    a.grants.join(", ")
                ));
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
    }
}
