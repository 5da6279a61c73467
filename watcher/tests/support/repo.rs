//! A test repository: `stella init`, packs, requests and commits made with the real git CLI,
//! the daemon run against it (to its end, or in the background as a `Daemon`), and readers
//! for the ledger it writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use stella_engine::layout::RunDir;

use super::{Daemon, stella};

#[must_use]
pub struct Repo {
    pub dir: tempfile::TempDir,
}

pub const HELLO: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: hello, version: 1.0.0 }\nspec:\n  inputs: [{ name: who, type: string, default: world }]\n  steps:\n    - id: greet\n      outputs: { greeting: greeting.txt }\n      run: { uses: builtin:shell, with: { script: \"echo hello {{ inputs.who }} | tee greeting.txt; echo said=yes >> $STELLA_OUTPUT\" } }\n    - id: after\n      run: { uses: builtin:exec, with: { argv: [echo, \"{{ steps.greet.outputs.said }}\"] } }\n";

impl Repo {
    /// A new repository with `stella init` done and committed.
    pub fn new() -> Repo {
        Repo::init(tempfile::tempdir().unwrap())
    }

    /// As `new`, but outside `/tmp` (which is private to every sandboxed step, so a repository
    /// there would be out of a step's sight whether or not the sandbox covered it).
    pub fn outside_tmp() -> Repo {
        Repo::init(tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap())
    }

    /// A repository where run r1 of the hello pack succeeded, its ledger verified.
    pub fn with_finished_run() -> Repo {
        let r = Repo::new();
        r.pack("hello", HELLO).request("r1", "hello", "{}\n");
        r.daemon_once().ok();
        r.stella(&["ledger", "verify"]).ok();
        r
    }

    fn init(dir: tempfile::TempDir) -> Repo {
        let r = Repo { dir };
        r.git(&["init", "-q", "-b", "main"]);
        r.stella(&["init", "."]).ok();
        r.write(".stella/config.yaml", "branch: main\ncommit: { batchMs: 2000 }\n");
        r.commit_all("stella init");
        r
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path for files that belong to the test, not the repository (inside .git, so git
    /// ignores it and parallel tests never share it).
    pub fn outside(&self, name: &str) -> PathBuf {
        let dir = self.path().join(".git/test-scratch");
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    pub fn git(&self, args: &[&str]) -> Output {
        let out = self.git_try(args);
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A commit of what is staged, signed with the SSH key at `key` through git's own SSH
    /// signing (`gpg.format=ssh`), as a person or the runner signs; not asserted to succeed.
    pub fn commit_signed(&self, key: &Path, msg: &str) -> Output {
        let signing_key = format!("user.signingkey={}", key.display());
        self.git_try(&[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "commit",
            "-q",
            "-S",
            "-m",
            msg,
        ])
    }

    /// git, returning stdout, without asserting success.
    pub fn git_try(&self, args: &[&str]) -> Output {
        Command::new("git")
            .current_dir(self.path())
            .args([
                "-c",
                "user.name=Alice",
                "-c",
                "user.email=alice@example.com",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .unwrap()
    }

    pub fn write(&self, rel: &str, content: &str) -> &Repo {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    pub fn commit_all(&self, msg: &str) -> &Repo {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        self
    }

    /// Commits everything past the pre-commit hook (`--no-verify`): a person changing runner
    /// files knowingly, which the hook would refuse.
    pub fn tamper(&self, msg: &str) -> &Repo {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--no-verify", "-m", msg]);
        self
    }

    pub fn pack(&self, name: &str, manifest: &str) -> &Repo {
        self.write(&format!("packs/{name}/pack.yaml"), manifest);
        self.commit_all(&format!("add pack {name}"))
    }

    /// `stella run request` then commit, like a person would.
    pub fn request(&self, id: &str, pack: &str, inputs: &str) -> &Repo {
        self.request_uncommitted(id, pack, inputs).ok();
        self.commit_all(&format!("request {id}"))
    }

    /// `stella run request` of `packs/<pack>` with `inputs` as id `id`, left uncommitted.
    pub fn request_uncommitted(&self, id: &str, pack: &str, inputs: &str) -> Stella {
        let inputs_path = self.outside(&format!("inputs-{id}.yaml"));
        std::fs::write(&inputs_path, inputs).unwrap();
        self.stella(&[
            "run",
            "request",
            &format!("packs/{pack}"),
            "--inputs",
            inputs_path.to_str().unwrap(),
            "--id",
            id,
        ])
    }

    pub fn stella(&self, args: &[&str]) -> Stella {
        Stella(stella().current_dir(self.path()).args(args).output().unwrap())
    }

    pub fn daemon_once(&self) -> Stella {
        self.stella(&["daemon", "--once", "--repo", "."])
    }

    /// `stella daemon ARGS` in this repository, started in the background.
    pub fn daemon(&self, args: &[&str]) -> Daemon {
        Daemon::start(self.daemon_command(args))
    }

    /// The command `daemon` starts, for a test that sets its environment first.
    pub fn daemon_command(&self, args: &[&str]) -> Command {
        let mut cmd = stella();
        cmd.current_dir(self.path()).arg("daemon").args(args);
        cmd
    }

    /// `runs show --json` of a run.
    pub fn show(&self, id: &str) -> serde_json::Value {
        let out = self.stella(&["runs", "show", id, "--json"]).ok();
        serde_json::from_slice(&out.0.stdout).unwrap()
    }

    pub fn state(&self, id: &str) -> String {
        self.show(id)["state"].as_str().unwrap().to_string()
    }

    /// Every run's state, by id, from `runs list --json`.
    pub fn states(&self) -> std::collections::BTreeMap<String, String> {
        let out = self.stella(&["runs", "list", "--json"]).ok();
        let rows: serde_json::Value = serde_json::from_slice(&out.0.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].as_str().unwrap().into(), r["state"].as_str().unwrap().into()))
            .collect()
    }

    /// A file at HEAD.
    pub fn at_head(&self, rel: &str) -> Option<String> {
        let out = self.git_try(&["show", &format!("HEAD:{rel}")]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The directory of run `id` at HEAD (`runs/_<xx>/<id>`, where `stella run request` puts
    /// it), or its flat `runs/<id>` when a test committed the request there.
    pub fn run_dir(&self, id: &str) -> String {
        let flat = RunDir::flat(id).dir();
        let there = self.git_try(&["cat-file", "-e", &format!("HEAD:{flat}")]);
        if there.status.success() {
            flat
        } else {
            RunDir::new(id).dir()
        }
    }

    /// The event files of a run at HEAD, in order: the legacy `events.ndjson`, then the
    /// segments `events/<first seq>.ndjson`.
    pub fn event_files(&self, id: &str) -> Vec<String> {
        let out = self.git(&[
            "ls-tree",
            "-r",
            "--name-only",
            "HEAD",
            &format!("{}/", self.run_dir(id)),
        ]);
        let mut files: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|p| p.ends_with("/events.ndjson") || p.contains("/events/"))
            .map(str::to_string)
            .collect();
        files.sort();
        files
    }

    /// The event file of a run at HEAD that holds `text`.
    pub fn event_file_with(&self, id: &str, text: &str) -> String {
        self.event_files(id)
            .into_iter()
            .find(|f| self.at_head(f).is_some_and(|t| t.contains(text)))
            .unwrap_or_else(|| panic!("no event file of {id} holds {text}"))
    }

    pub fn events(&self, id: &str) -> Vec<serde_json::Value> {
        self.event_files(id)
            .iter()
            .filter_map(|f| self.at_head(f))
            .collect::<String>()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn status_porcelain(&self) -> String {
        String::from_utf8_lossy(&self.git(&["status", "--porcelain"]).stdout).into_owned()
    }

    /// Commits on the branch whose message starts with `stella:`.
    pub fn runner_commits(&self) -> Vec<String> {
        let out = self.git(&["log", "--format=%H %s"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(" stella:"))
            .map(|l| l[..40].to_string())
            .collect()
    }

    pub fn journal(&self, id: &str) -> PathBuf {
        self.path().join(".git/stella/journal").join(format!("{id}.ndjson"))
    }
}

pub struct Stella(pub Output);

impl Stella {
    pub fn ok(self) -> Stella {
        assert!(
            self.0.status.success(),
            "stella failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
            self.0.status,
            self.stdout(),
            self.stderr()
        );
        self
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    pub fn code(&self) -> Option<i32> {
        self.0.status.code()
    }
}
