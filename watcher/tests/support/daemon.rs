//! A `stella daemon` started by a test, in the background: its output kept in files the test
//! can read, its process killed and reaped when the handle is dropped (a failed assertion
//! included), and `wait_for` to wait for what it does instead of sleeping. Nothing here waits
//! without a deadline or leaves a daemon behind.

use std::fs::File;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{POLL, Stella};

/// A running `stella daemon`; dropping it kills it (SIGKILL) and reaps it.
pub struct Daemon {
    child: Mutex<Child>,
    /// Holds `stdout` and `stderr`, the daemon's output.
    logs: tempfile::TempDir,
}

impl Daemon {
    /// Starts `cmd` (a `stella daemon` command) with its output going to files.
    pub fn start(cmd: Command) -> Daemon {
        Daemon::spawn(cmd, false)
    }

    /// As `start`, but stdout is a pipe whose reader has already gone, as in
    /// `stella daemon | head -1` once `head` is done.
    pub fn start_unread(cmd: Command) -> Daemon {
        Daemon::spawn(cmd, true)
    }

    fn spawn(mut cmd: Command, unread: bool) -> Daemon {
        let logs = tempfile::tempdir().unwrap();
        let out = File::create(logs.path().join("stdout")).unwrap();
        let err = File::create(logs.path().join("stderr")).unwrap();
        let stdout = if unread { Stdio::piped() } else { Stdio::from(out) };
        let mut child = cmd.stdin(Stdio::null()).stdout(stdout).stderr(err).spawn().unwrap();
        drop(child.stdout.take());
        Daemon {
            child: Mutex::new(child),
            logs,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child().id() as i32
    }

    /// Everything the daemon printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stdout")).unwrap_or_default()
    }

    /// Everything the daemon printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }

    /// How it ended, if it has.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child().try_wait().unwrap()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Looks at `until` every 20 ms until it comes true. Panics naming `what` was awaited,
    /// with the daemon's output, when `within` passes first or the daemon ends without it.
    pub fn wait_for(&self, what: &str, within: Duration, mut until: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if until() {
                return;
            }
            if let Some(status) = self.exited() {
                if until() {
                    return;
                }
                panic!(
                    "the daemon ended ({status}) while the test waited for {what}\n{}",
                    self.said()
                );
            }
            assert!(
                Instant::now() < deadline,
                "waited {within:?} for {what}, in vain\n{}",
                self.said()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits up to `within` for the daemon to end by itself (`--once`, a signal); how it
    /// ended and what it said. Past `within` it is killed and the test fails.
    pub fn wait(self, within: Duration) -> Stella {
        let mut status = None;
        self.wait_for("the daemon to end", within, || {
            status = status.or_else(|| self.exited());
            status.is_some()
        });
        Stella(Output {
            status: status.expect("ended"),
            stdout: self.stdout().into_bytes(),
            stderr: self.stderr().into_bytes(),
        })
    }

    /// Kills it with SIGKILL and reaps it: a runner dying at once, with no chance to record
    /// anything. (Dropping the handle does the same.)
    pub fn kill(mut self) {
        self.end();
    }

    fn end(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The daemon's output, for a failure message.
    fn said(&self) -> String {
        format!(
            "--- daemon stdout\n{}--- daemon stderr\n{}",
            self.stdout(),
            self.stderr()
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.end();
    }
}
