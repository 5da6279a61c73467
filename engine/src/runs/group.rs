//! Group commit: runs whose ledger commits fall due together share one signed commit. A run
//! queues its files and then waits for the ledger; whoever gets the ledger first commits
//! every queued run's files at once, so a burst of finishing runs costs one commit, one new
//! `runs/` tree and one reflog entry instead of one each. While other runs are being carried
//! forward (`process`), a run waits up to `LINGER` for them to queue too; once every run
//! under way has queued, or none is, nobody waits: a lone run commits as soon as the ledger
//! is free. Each run writes only its own directory, so the files of a group never overlap.
//! Never decides what a run writes.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{Environment, Error};
use crate::ledger::FileWrite;

/// The longest a run's commit waits for the other runs under way to queue theirs.
pub const LINGER: Duration = Duration::from_millis(100);

/// The runs waiting to be committed, and how many runs are under way (one per `Environment`).
#[derive(Default)]
pub struct Group {
    queue: Mutex<Queue>,
    /// Told of every ticket queued or taken and of every run that ends.
    changed: Condvar,
}

#[derive(Default)]
struct Queue {
    tickets: Vec<Ticket>,
    /// Runs being carried forward now (`Group::under_way`).
    under_way: usize,
}

type Ticket = Arc<Mutex<Slot>>;

enum Slot {
    /// Waiting for whoever gets the ledger next.
    Queued(Vec<FileWrite>, String),
    /// In the commit being made (seen by nobody else: the committer holds the ledger).
    Taken,
    /// In the ledger.
    Committed,
    /// The group's commit failed: the run commits its files alone, to get its own answer.
    Returned(Vec<FileWrite>, String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A run under way, until dropped (`Group::under_way`).
pub struct UnderWay<'a>(&'a Group);

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        lock(&self.0.queue).under_way -= 1;
        self.0.changed.notify_all();
    }
}

impl Group {
    /// Counts a run as under way (one that may queue a commit soon) until the guard drops.
    pub fn under_way(&self) -> UnderWay<'_> {
        lock(&self.queue).under_way += 1;
        UnderWay(self)
    }

    fn push(&self, ticket: Ticket) {
        lock(&self.queue).tickets.push(ticket);
        self.changed.notify_all();
    }

    fn take(&self) -> Vec<Ticket> {
        let taken = std::mem::take(&mut lock(&self.queue).tickets);
        self.changed.notify_all();
        taken
    }

    /// Waits, at most `LINGER`, while `mine` is still queued and some run under way has not
    /// queued yet.
    fn linger(&self, mine: &Ticket) {
        let deadline = Instant::now() + LINGER;
        let mut queue = lock(&self.queue);
        loop {
            let queued = queue.tickets.iter().any(|t| Arc::ptr_eq(t, mine));
            let now = Instant::now();
            if !queued || queue.tickets.len() >= queue.under_way || now >= deadline {
                return;
            }
            queue = self
                .changed
                .wait_timeout(queue, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Environment {
    /// Commits `writes` (one run's files) with `message`, together with the files of every
    /// other run queued meanwhile. Returns once they are in the ledger, or with the error
    /// committing them met.
    pub(super) fn commit_together(&self, writes: Vec<FileWrite>, message: String) -> Result<(), Error> {
        let mine: Ticket = Arc::new(Mutex::new(Slot::Queued(writes, message)));
        self.commits.push(mine.clone());
        self.commits.linger(&mine);
        let mut ledger = self.ledger();
        let taken = std::mem::replace(&mut *lock(&mine), Slot::Taken);
        match taken {
            Slot::Committed => {
                *lock(&mine) = Slot::Committed;
                return Ok(());
            }
            Slot::Returned(writes, message) => {
                ledger.commit(&writes, &message, self.key.as_ref())?;
                return Ok(());
            }
            Slot::Queued(writes, message) => *lock(&mine) = Slot::Queued(writes, message),
            Slot::Taken => unreachable!("a slot is taken only by the holder of the ledger"),
        }
        // This run leads: everything queued so far goes into one commit.
        let queued: Vec<Ticket> = self.commits.take();
        let mut members = Vec::with_capacity(queued.len());
        for ticket in queued {
            let slot = std::mem::replace(&mut *lock(&ticket), Slot::Taken);
            if let Slot::Queued(writes, message) = slot {
                members.push((ticket, writes, message));
            }
        }
        let writes: Vec<FileWrite> = members.iter().flat_map(|(_, w, _)| w.iter().cloned()).collect();
        let messages: Vec<&str> = members.iter().map(|(_, _, m)| m.as_str()).collect();
        let result = ledger.commit(&writes, &group_message(&messages), self.key.as_ref());
        let alone = members.len() == 1;
        let mut own = None;
        for (ticket, writes, message) in members {
            if result.is_ok() {
                *lock(&ticket) = Slot::Committed;
            } else if Arc::ptr_eq(&ticket, &mine) {
                own = Some((writes, message));
            } else {
                *lock(&ticket) = Slot::Returned(writes, message);
            }
        }
        match (result, own) {
            (Ok(_), _) => Ok(()),
            // One run's files spoiled the group (or the ledger failed): every run, this one
            // first, tries its own alone.
            (Err(_), Some((writes, message))) if !alone => ledger
                .commit(&writes, &message, self.key.as_ref())
                .map(|_| ())
                .map_err(Error::from),
            (Err(e), _) => Err(e.into()),
        }
    }
}

/// One run's message as it is; for several, a subject that counts them and each run's
/// message on a line of its own.
fn group_message(messages: &[&str]) -> String {
    match messages {
        [one] => one.to_string(),
        many => format!("stella: {} runs\n\n{}\n", many.len(), many.join("\n")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::group_message;
    use crate::ledger::{FileWrite, Ledger};
    use crate::runs::Environment;

    fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args([
                "-c",
                "user.name=p",
                "-c",
                "user.email=p@example.com",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn environment(dir: &std::path::Path) -> Environment {
        git(dir, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.join("README.md"), "hi\n").unwrap();
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "start"]);
        Environment {
            ledger: Mutex::new(Ledger::open(dir, "main").unwrap()),
            git_dir: dir.join(".git"),
            key: Arc::new(crate::keys::SshKey::generate("runner")),
            file_secrets: Default::default(),
            kill_grace: Duration::from_secs(1),
            fenced: Default::default(),
            work_root: dir.join("work"),
            hidden: Vec::new(),
            keep_work: false,
            chaos: None,
            observer: None,
            first_parents: Default::default(),
            tokens: Default::default(),
            commits: Default::default(),
        }
    }

    fn write(path: &str) -> Vec<FileWrite> {
        vec![FileWrite {
            path: path.into(),
            bytes: format!("{path}\n").into_bytes(),
        }]
    }

    /// Commits one run's files per path from threads started while the ledger is held, so
    /// all of them queue before any commits; gives each run's answer.
    fn commit_queued(env: &Environment, paths: &[&str]) -> Vec<bool> {
        let held = env.ledger();
        std::thread::scope(|s| {
            let runs: Vec<_> = paths
                .iter()
                .map(|p| s.spawn(move || env.commit_together(write(p), format!("stella: run {p}"))))
                .collect();
            while env.commits.queue.lock().unwrap().tickets.len() < paths.len() {
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(held);
            runs.into_iter().map(|r| r.join().unwrap().is_ok()).collect()
        })
    }

    #[test]
    fn runs_queued_while_the_ledger_is_busy_land_in_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let env = environment(dir.path());
        let start = git(dir.path(), &["rev-parse", "HEAD"]);
        let paths = ["runs/a/plan.json", "runs/b/plan.json", "runs/c/plan.json"];
        assert_eq!(commit_queued(&env, &paths), [true, true, true]);
        assert_eq!(
            git(dir.path(), &["rev-parse", "HEAD^"]),
            start,
            "one commit for the three"
        );
        for p in paths {
            assert_eq!(git(dir.path(), &["show", &format!("HEAD:{p}")]), p);
        }
        assert!(git(dir.path(), &["log", "-1", "--format=%B"]).starts_with("stella: 3 runs\n"));
        assert!(env.commits.queue.lock().unwrap().tickets.is_empty());
        // Alone, a run commits at once with its own message.
        env.commit_together(write("runs/d/plan.json"), "stella: run d".into())
            .unwrap();
        assert_eq!(git(dir.path(), &["log", "-1", "--format=%s"]), "stella: run d");
    }

    #[test]
    fn a_group_that_cannot_commit_leaves_each_run_its_own_answer() {
        let dir = tempfile::tempdir().unwrap();
        let env = environment(dir.path());
        let start = git(dir.path(), &["rev-parse", "HEAD"]);
        // A person's path: the ledger refuses the group's commit; the others then commit alone.
        let answers = commit_queued(&env, &["runs/a/plan.json", "runs/b/request.yaml", "runs/c/plan.json"]);
        assert_eq!(answers, [true, false, true]);
        let log = git(dir.path(), &["log", "--format=%s", &format!("{start}..HEAD")]);
        let mut subjects: Vec<&str> = log.lines().collect();
        subjects.sort();
        assert_eq!(
            subjects,
            ["stella: run runs/a/plan.json", "stella: run runs/c/plan.json"]
        );
    }

    /// Two runs under way: the first to finish waits for the other instead of committing
    /// alone, and both land in one commit; nothing held the ledger meanwhile.
    #[test]
    fn a_run_waits_for_the_runs_under_way_to_join_it() {
        let dir = tempfile::tempdir().unwrap();
        let env = environment(dir.path());
        let start = git(dir.path(), &["rev-parse", "HEAD"]);
        std::thread::scope(|s| {
            let (a, b) = (env.commits.under_way(), env.commits.under_way());
            let first = s.spawn(|| {
                let _a = a;
                env.commit_together(write("runs/a/plan.json"), "stella: run a".into())
            });
            while env.commits.queue.lock().unwrap().tickets.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(20));
            let _b = b;
            env.commit_together(write("runs/b/plan.json"), "stella: run b".into())
                .unwrap();
            first.join().unwrap().unwrap();
        });
        assert_eq!(git(dir.path(), &["rev-parse", "HEAD^"]), start, "one commit for both");
        assert!(git(dir.path(), &["log", "-1", "--format=%B"]).starts_with("stella: 2 runs\n"));
    }

    /// A run under way that does not commit holds another's commit back `LINGER` at most; with
    /// no other run under way, a commit does not wait at all.
    #[test]
    fn a_run_waits_no_longer_than_the_linger() {
        let dir = tempfile::tempdir().unwrap();
        let env = environment(dir.path());
        let _mine = env.commits.under_way();
        let t = std::time::Instant::now();
        env.commit_together(write("runs/a/plan.json"), "stella: run a".into())
            .unwrap();
        assert!(t.elapsed() < super::LINGER / 2, "alone: {:?}", t.elapsed());
        let _other = env.commits.under_way();
        let t = std::time::Instant::now();
        env.commit_together(write("runs/b/plan.json"), "stella: run b".into())
            .unwrap();
        assert!(t.elapsed() >= super::LINGER, "waited {:?}", t.elapsed());
        assert!(t.elapsed() < super::LINGER * 20, "waited {:?}", t.elapsed());
        assert_eq!(git(dir.path(), &["log", "-1", "--format=%s"]), "stella: run b");
    }

    #[test]
    fn a_lone_run_keeps_its_message_and_a_group_lists_each() {
        assert_eq!(group_message(&["stella: run a succeeded"]), "stella: run a succeeded");
        assert_eq!(
            group_message(&["stella: run a succeeded", "stella: run b failed: x"]),
            "stella: 2 runs\n\nstella: run a succeeded\nstella: run b failed: x\n"
        );
    }
}
