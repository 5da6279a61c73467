//! Working with a shared git server (DESIGN section 9): fetching the branch, claims, notes and
//! pull-request refs (gix), fast-forwarding the local branch (a diverged branch is an error,
//! never a merge), pushing runner commits (git CLI; re-committed on the new tip when the remote
//! moved), and claiming runs with create-only pushes so each run executes exactly once.

mod claims;
mod notes;
pub mod transport;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use gix::ObjectId;

use crate::code::Code;
use crate::git_cli;
use crate::keys::SshKey;
use crate::layout::RunDir;
use crate::ledger::notes::{NOTES_REF, REMOTE_NOTES_REF};
use crate::ledger::{FileWrite, GitError, Ledger, is_runner_path};

pub use claims::{Claim, Renewal};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Diverged(String),
    /// A git command failed (fetching one ref, pushing, notes, moving the branch).
    #[error("git: {0}")]
    Cli(#[from] git_cli::Error),
    /// The ledger could not be read, or the runner's files not re-committed.
    #[error("git: {0}")]
    Ledger(#[from] crate::ledger::Error),
    #[error("git: remote `{name}`: {source}")]
    NoRemote {
        name: String,
        #[source]
        source: GitError,
    },
    #[error("git: remote `{name}` has no fetch URL")]
    NoFetchUrl { name: String },
    #[error("git: cannot reach remote `{name}`: {source}")]
    Unreachable {
        name: String,
        #[source]
        source: GitError,
    },
    #[error("git: fetch from `{name}`: {source}")]
    Fetch {
        name: String,
        #[source]
        source: GitError,
    },
    /// Any other gix failure: opening the repository, references, refspecs, objects.
    #[error("git: {0}")]
    Git(#[source] GitError),
    /// The server refused, could not be reached or could not be trusted: what happened and
    /// what to do, on one line.
    #[error("git: remote `{name}`, {url}: {what}")]
    Transport {
        name: String,
        url: String,
        what: &'static str,
    },
    #[error("git: could not push {0}: the remote kept moving")]
    PushContended(String),
    #[error("git: the claim on {0} keeps changing")]
    ClaimContended(String),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Diverged(_) => Code::BranchDiverged,
            Error::Ledger(e) => e.code(),
            Error::Cli(_)
            | Error::NoRemote { .. }
            | Error::NoFetchUrl { .. }
            | Error::Unreachable { .. }
            | Error::Fetch { .. }
            | Error::Transport { .. }
            | Error::Git(_)
            | Error::PushContended(_)
            | Error::ClaimContended(_) => Code::Io,
        }
    }
}

fn git_err(e: impl Into<GitError>) -> Error {
    Error::Git(e.into())
}

/// A remote and the branch the runner works on.
#[derive(Debug)]
pub struct Remote {
    pub root: PathBuf,
    pub name: String,
    pub branch: String,
    /// Pull-request ref patterns fetched for planning (`refs/pull/*/head`, ...).
    pub pull_patterns: Vec<String>,
    /// How long a claim stays valid without renewal.
    pub lease: Duration,
    /// Pull-request heads already noted, with the branch tip they were planned against.
    noted: Mutex<BTreeMap<String, String>>,
    /// The CA file git's own commands are given (`transport::git_ca`), found once.
    git_ca: std::sync::OnceLock<Option<std::ffi::OsString>>,
    /// With a separate ledger branch (`branch` is then the ledger branch): the branch requests
    /// come from, fetched to `refs/remotes/<name>/<watched>` and never pushed.
    watched: Option<String>,
}

/// What bringing the local branch level with the remote did.
#[derive(Debug, Default)]
pub struct Integrated {
    /// Runs whose local results were dropped: another runner holds their claim, or the
    /// remote's events for them are not a prefix of ours.
    pub dropped: Vec<String>,
}

impl Remote {
    pub fn new(root: PathBuf, name: String, branch: String, pull_patterns: Vec<String>, lease: Duration) -> Remote {
        Remote {
            root,
            name,
            branch,
            pull_patterns,
            lease,
            noted: Mutex::new(BTreeMap::new()),
            git_ca: std::sync::OnceLock::new(),
            watched: None,
        }
    }

    /// With a separate ledger branch: `self.branch` is the ledger branch (fetched, integrated,
    /// pushed) and `watched` the branch requests come from (fetched only).
    pub fn watching(mut self, watched: &str) -> Remote {
        self.watched = (watched != self.branch).then(|| watched.to_string());
        self
    }

    /// Where the watched branch is fetched to, with a separate ledger branch.
    pub fn watched_tracking(&self) -> Option<String> {
        self.watched.as_ref().map(|w| format!("refs/remotes/{}/{w}", self.name))
    }

    /// git in the runner's clone; a network command (push, fetch, ls-remote) that failed to
    /// reach or trust the server is the one-line `Error::Transport`.
    fn git(&self, args: &[&str]) -> Result<String, Error> {
        let network = matches!(args.first(), Some(&("push" | "fetch" | "ls-remote")));
        let ca = self.git_ca.get_or_init(|| transport::git_ca(&self.root));
        let env: Vec<(&str, &std::ffi::OsStr)> = ca.iter().map(|f| ("GIT_SSL_CAINFO", f.as_os_str())).collect();
        git_cli::run_env(&self.root, args, &env).map_err(|e| {
            match e.stderr().filter(|_| network).and_then(transport::Trouble::find) {
                Some(t) => self.transport_error(None, t),
                None => e.into(),
            }
        })
    }

    /// The one line for trouble `t` with the server at `url` (the remote's URL when `None`).
    fn transport_error(&self, url: Option<&gix::Url>, t: transport::Trouble) -> Error {
        let url = match url {
            Some(u) => transport::shown(u),
            None => self
                .repo()
                .ok()
                .and_then(|r| {
                    let remote = r.find_remote(self.name.as_str()).ok()?;
                    remote.url(gix::remote::Direction::Push).map(transport::shown)
                })
                .unwrap_or_default(),
        };
        Error::Transport {
            name: self.name.clone(),
            url,
            what: t.say(),
        }
    }

    /// A fetch that failed talking to `url`: the one line when the failure is known
    /// (`Trouble`, from gix's error chain or what ssh said in the file `ssh_said`), else
    /// that chain and ssh's last line, the URL's password masked.
    fn fetch_trouble(
        &self,
        url: &gix::Url,
        ssh_said: &std::path::Path,
        e: impl Into<GitError>,
        connecting: bool,
    ) -> Error {
        let e: GitError = e.into();
        let mut text = transport::chain(&*e);
        if url.scheme == gix::url::Scheme::Ssh {
            let said = transport::ssh_said(ssh_said);
            if let Some(last) = said.lines().rev().find(|l| !l.trim().is_empty()) {
                text = format!("{text}; ssh: {}", last.trim());
            }
            if let Some(t) = transport::Trouble::find(&said) {
                return self.transport_error(Some(url), t);
            }
        }
        let text = transport::masked(&text, url);
        tracing::debug!(remote = %self.name, error = %text, "fetch failed");
        match transport::Trouble::find(&text) {
            Some(t) => self.transport_error(Some(url), t),
            None if connecting => Error::Unreachable {
                name: self.name.clone(),
                source: text.into(),
            },
            None => self.fetch_failed(text),
        }
    }

    fn repo(&self) -> Result<gix::Repository, Error> {
        crate::ledger::open_repo(&self.root).map_err(git_err)
    }

    fn fetch_failed(&self, e: impl Into<GitError>) -> Error {
        Error::Fetch {
            name: self.name.clone(),
            source: e.into(),
        }
    }

    fn tracking(&self) -> String {
        format!("refs/remotes/{}/{}", self.name, self.branch)
    }

    fn rev(&self, name: &str) -> Option<String> {
        self.git(&["rev-parse", "--verify", "--quiet", &format!("{name}^{{commit}}")])
            .ok()
            .filter(|s| !s.is_empty())
    }

    /// Where a pull-request pattern's refs land locally: `refs/pull/*/head` → `refs/stella/pulls/pull/*/head`.
    fn pull_local(pattern: &str) -> String {
        format!("refs/stella/pulls/{}", pattern.trim_start_matches("refs/"))
    }

    /// Fetches the branch, the claims, the notes and the pull-request refs with gix; pull
    /// requests that are gone from the remote (merged, closed) are pruned here.
    pub fn fetch(&self) -> Result<(), Error> {
        use gix::remote::Direction;
        let mut repo = self.repo()?;
        transport::no_prompt(&mut repo).map_err(git_err)?;
        let named = repo.find_remote(self.name.as_str()).map_err(|e| Error::NoRemote {
            name: self.name.clone(),
            source: e.into(),
        })?;
        let url = named
            .url(Direction::Fetch)
            .ok_or_else(|| Error::NoFetchUrl {
                name: self.name.clone(),
            })?
            .clone();
        let mut specs = vec![
            format!("+refs/heads/{b}:{}", self.tracking(), b = self.branch),
            format!("+{NOTES_REF}:{REMOTE_NOTES_REF}"),
            "+refs/stella/claims/*:refs/stella/remote-claims/*".to_string(),
        ];
        if let (Some(w), Some(tracking)) = (&self.watched, self.watched_tracking()) {
            specs.push(format!("+refs/heads/{w}:{tracking}"));
        }
        for p in &self.pull_patterns {
            specs.push(format!("+{p}:{}", Self::pull_local(p)));
        }
        let remote = repo
            .remote_at(url.clone())
            .map_err(git_err)?
            .with_fetch_tags(gix::remote::fetch::Tags::None)
            .with_refspecs(specs.iter().map(String::as_str), Direction::Fetch)
            .map_err(git_err)?;
        let options = transport::options(&repo, &url, &self.name).map_err(|e| self.fetch_failed(e))?;
        let ssh_said = repo.common_dir().join("stella").join("ssh-stderr");
        let mut connection = if url.scheme == gix::url::Scheme::Ssh {
            let (sanitized, version) = remote
                .sanitized_url_and_version(Direction::Fetch)
                .map_err(|e| self.fetch_trouble(&url, &ssh_said, e, true))?;
            let ssh = transport::ssh_options(&repo, &ssh_said).map_err(|e| self.fetch_failed(e))?;
            let spawned = gix::protocol::transport::client::blocking_io::ssh::connect(sanitized, version, ssh, false)
                .map_err(|e| self.fetch_trouble(&url, &ssh_said, e, true))?;
            remote.to_connection_with_transport(
                Box::new(spawned) as Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>
            )
        } else {
            remote
                .connect(Direction::Fetch)
                .map_err(|e| self.fetch_trouble(&url, &ssh_said, e, true))?
        };
        if let Some(options) = options {
            connection = connection.with_transport_options(options);
        }
        let outcome = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| self.fetch_trouble(&url, &ssh_said, e, true))?
            .receive(gix::progress::Discard, &std::sync::atomic::AtomicBool::new(false))
            .map_err(|e| self.fetch_trouble(&url, &ssh_said, e, false))?;
        let fetched: BTreeSet<String> = outcome
            .ref_map
            .mappings
            .iter()
            .filter_map(|m| m.local.as_ref().map(ToString::to_string))
            .collect();
        // Pull requests no longer on the remote are not planned again, and claims released
        // there (runs waiting at a gate) are not taken for held.
        let mut stale = Vec::new();
        for prefix in ["refs/stella/pulls/", "refs/stella/remote-claims/"] {
            stale.extend(
                repo.references()
                    .map_err(git_err)?
                    .prefixed(prefix)
                    .map_err(git_err)?
                    .filter_map(Result::ok)
                    .map(|r| r.name().as_bstr().to_string())
                    .filter(|n| !fetched.contains(n)),
            );
        }
        for name in stale {
            let _ = self.git(&["update-ref", "-d", &name]);
        }
        Ok(())
    }

    /// Brings the local branch level with the remote: fast-forward when behind; when the local
    /// branch has runner commits the remote lacks, keeps them only for runs this runner still
    /// holds (re-committed on the remote tip when it moved). Anything else that diverged is an
    /// error, never merged.
    pub fn integrate(&self, ledger: &mut Ledger, key: &SshKey) -> Result<Integrated, Error> {
        // git moves the checked-out branch below: its index must already hold the runner's files.
        ledger.flush_index()?;
        let branch_ref = format!("refs/heads/{}", self.branch);
        let Some(remote) = self.rev(&self.tracking()) else {
            return Ok(Integrated::default());
        };
        let Some(local) = self.rev(&branch_ref) else {
            self.git(&["update-ref", &branch_ref, &remote])?;
            return Ok(Integrated::default());
        };
        if local == remote || self.is_ancestor(&local, &remote) {
            if local != remote {
                self.move_branch(&remote, &local, true)?;
            }
            return Ok(Integrated::default());
        }
        let base = self.git(&["merge-base", &local, &remote])?;
        let ahead = base == remote;
        let changed = self.git(&["diff", "--name-only", &base, &local])?;
        let mut paths: Vec<&str> = changed.lines().filter(|l| !l.is_empty()).collect();
        let local_id = oid(&local)?;
        let remote_id = oid(&remote)?;
        // Requests this runner wrote for a schedule's slot: re-committed on the remote tip,
        // or dropped when another runner's request for the slot got there first.
        let (scheduled, lost) = scheduled_requests(ledger, local_id, remote_id, &paths)?;
        paths.retain(|p| {
            !scheduled
                .iter()
                .chain(&lost)
                .any(|(dir, _)| dir.file("request.yaml") == *p)
        });
        if self.watched.is_some() {
            // The runner's merges of the watched branch: taken in again on the remote's tip.
            paths.retain(|p| is_runner_path(p));
        }
        let hand_made = paths.iter().find(|p| !is_runner_path(p));
        if ahead && hand_made.is_some() {
            // Commits made by hand in the runner's clone, on top of what the remote has: a
            // fast-forward for the remote, pushed with the runner's own like any `git push`.
            return Ok(Integrated::default());
        }
        if let Some(p) = hand_made {
            return Err(Error::Diverged(format!(
                "local branch {} has commits the remote `{}` lacks that are not the runner's (e.g. {p}); \
                 it is never merged: reconcile it by hand (git log {}..{})",
                self.branch,
                self.name,
                &remote[..12],
                &local[..12]
            )));
        }
        let me = key.fingerprint();
        // Group the runner's paths by run and keep only the runs this runner may still write.
        let mut by_run: BTreeMap<RunDir, Vec<&str>> = BTreeMap::new();
        for p in &paths {
            if let Some((_, run, _)) = crate::layout::classify(p) {
                by_run.entry(run).or_default().push(p);
            }
        }
        let mut dropped = Vec::new();
        for run in by_run.keys() {
            let foreign = self.claim_holder(&run.id).is_some_and(|h| h != me);
            let theirs = ledger.run_events(remote_id, run)?.unwrap_or_default();
            let ours = ledger.run_events(local_id, run)?.unwrap_or_default();
            if foreign || !ours.starts_with(&theirs) {
                dropped.push(run.id.clone());
            }
        }
        for (dir, _) in &lost {
            tracing::info!(run = %dir.id, "another runner requested this schedule slot first; this runner's request is dropped");
            if by_run.contains_key(dir) && !dropped.contains(&dir.id) {
                dropped.push(dir.id.clone());
            }
        }
        if ahead && dropped.is_empty() && lost.is_empty() {
            return Ok(Integrated::default());
        }
        let mut writes = Vec::new();
        for (run, run_paths) in &by_run {
            if dropped.contains(&run.id) {
                continue;
            }
            for p in run_paths {
                if let Some(bytes) = ledger.read(local_id, p)? {
                    writes.push(FileWrite {
                        path: (*p).to_string(),
                        bytes,
                    });
                }
            }
        }
        self.move_branch(&remote, &local, false)?;
        // The dropped commits were this runner's own and unpushed: the daemon's check against
        // rewritten history must not take their replacement for a force-push.
        let seen = crate::ledger::seen::last_seen_path(ledger.git_dir());
        if std::fs::read_to_string(&seen).is_ok_and(|s| !self.is_ancestor(s.trim(), &remote)) {
            let _ = std::fs::write(&seen, &remote);
        }
        ledger.refresh();
        for (_, (schedule, slot)) in &scheduled {
            ledger.commit_scheduled(schedule, *slot, key)?;
        }
        if !writes.is_empty() {
            ledger.commit(
                &writes,
                &format!("stella: runner results re-committed on {}", &remote[..12]),
                key,
            )?;
        }
        ledger.take_in(key)?;
        Ok(Integrated { dropped })
    }

    fn is_ancestor(&self, a: &str, b: &str) -> bool {
        git_cli::is_ancestor(&self.root, a, b)
    }

    fn head_is_branch(&self) -> bool {
        self.git(&["symbolic-ref", "-q", "HEAD"]).ok().as_deref()
            == Some(format!("refs/heads/{}", self.branch).as_str())
    }

    /// Moves the branch from `from` to `to`, and the working tree with it when it is checked
    /// out: a fast-forward (`git merge --ff-only`), or dropping the local runner commits
    /// (`git reset --keep`; the kept files are re-committed next). Either refuses rather than
    /// overwrite a person's uncommitted change.
    fn move_branch(&self, to: &str, from: &str, fast_forward: bool) -> Result<(), Error> {
        let args: &[&str] = match (self.head_is_branch(), fast_forward) {
            (true, true) => &["merge", "-q", "--ff-only", to],
            (true, false) => &["reset", "-q", "--keep", to],
            (false, _) => &["update-ref", &format!("refs/heads/{}", self.branch), to, from],
        };
        self.git(args).map(|_| ())
    }

    /// Pushes the branch when it is ahead; fetches, re-integrates and retries when the remote
    /// moved. Returns whether it pushed, and the runs whose results were dropped on the way.
    pub fn push(&self, ledger: &mut Ledger, key: &SshKey) -> Result<(bool, Vec<String>), Error> {
        let branch_ref = format!("refs/heads/{}", self.branch);
        let mut dropped = Vec::new();
        for _ in 0..20 {
            let (Some(local), remote) = (self.rev(&branch_ref), self.rev(&self.tracking())) else {
                return Ok((false, dropped));
            };
            if remote.as_deref() == Some(local.as_str())
                || remote.as_deref().is_some_and(|r| self.is_ancestor(&local, r))
            {
                return Ok((false, dropped));
            }
            let spec = format!("{branch_ref}:{branch_ref}");
            crate::chaos::at_push();
            match self.git(&["push", "-q", &self.name, &spec]) {
                Ok(_) => {
                    let _ = self.git(&["update-ref", &self.tracking(), &local]);
                    return Ok((true, dropped));
                }
                // Refused or unreachable, not raced: fetching again would not help.
                Err(e @ Error::Transport { .. }) => return Err(e),
                Err(_) => {}
            }
            self.fetch()?;
            dropped.extend(self.integrate(ledger, key)?.dropped);
        }
        Err(Error::PushContended(self.branch.clone()))
    }
}

/// A schedule's slot, as a runner-written request names it.
type Slot = (crate::schedule::Schedule, jiff::Timestamp);

/// Of the requests among `paths` that the local branch holds with a schedule trigger: those
/// the remote lacks (to re-commit: their schedule and slot, from the local branch's schedules
/// file), and those the remote has already (this runner lost the race for the slot).
#[allow(clippy::type_complexity)]
fn scheduled_requests(
    ledger: &Ledger,
    local: ObjectId,
    remote: ObjectId,
    paths: &[&str],
) -> Result<(Vec<(RunDir, Slot)>, Vec<(RunDir, Slot)>), Error> {
    let (mut keep, mut lost) = (Vec::new(), Vec::new());
    let mut schedules = None;
    for p in paths {
        let Some((crate::layout::Area::Runs, dir, "request.yaml")) = crate::layout::classify(p) else {
            continue;
        };
        let Some(bytes) = ledger.read(local, p)? else { continue };
        let Ok(request) = crate::request::Request::parse(p, &String::from_utf8_lossy(&bytes)) else {
            continue;
        };
        let Some(trigger) = request.trigger else { continue };
        if schedules.is_none() {
            schedules = Some(ledger.schedules_at(local)?);
        }
        let found = schedules.as_ref().and_then(|s| s.get(&trigger.schedule)).cloned();
        let (Some(schedule), Ok(slot)) = (found, trigger.slot.parse::<jiff::Timestamp>()) else {
            continue;
        };
        if schedule.run_id(slot) != dir.id || schedule.request(slot).as_bytes() != bytes.as_slice() {
            continue;
        }
        if ledger.locate(remote, &dir.id)?.is_some() {
            lost.push((dir, (schedule, slot)));
        } else {
            keep.push((dir, (schedule, slot)));
        }
    }
    Ok((keep, lost))
}

fn oid(hex: &str) -> Result<ObjectId, Error> {
    ObjectId::from_hex(hex.as_bytes()).map_err(git_err)
}
