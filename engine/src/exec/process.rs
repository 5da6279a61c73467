//! Running one step process: its own process group, stdout/stderr as redacted `step.log`
//! events, and termination of the whole group (SIGTERM, grace, SIGKILL) on timeout or
//! cancel. After the main process exits, stragglers left in its group are killed too.
//! One thread per step: the pipes and a pidfd are multiplexed with poll(2). How much output
//! is kept is `event::output::StepOutput`'s to say; past its limits bytes are only counted and hashed.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::json;

use crate::event::{Emitter, Event};
use crate::redact::LineSplitter;

use super::control::{CancelToken, Stop};

/// Longest log line before it is cut.
const MAX_LINE: usize = 16 * 1024;
/// How long output may keep flowing after the main process exited (from escaped stragglers).
const DRAIN: Duration = Duration::from_secs(2);

/// How a step process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcEnd {
    Exited(i32),
    Signaled(i32),
    Stopped(Stop),
    SpawnFailed(String),
    /// The sandbox could not be set up: the step never ran.
    Unisolated(super::sandbox::Unavailable),
}

/// A pidfd for `pid`: readable once the process exits. `None` on kernels without pidfd_open.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative return is a fresh descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn nonblocking(fd: &impl AsRawFd) {
    let raw = fd.as_raw_fd();
    // SAFETY: the descriptor is open and owned by the caller for the duration of this call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    if let Ok(flags) = fcntl(borrowed, FcntlArg::F_GETFL) {
        let _ = fcntl(
            borrowed,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}

struct Pipes {
    out: Option<ChildStdout>,
    err: Option<ChildStderr>,
}

/// The process groups of the steps running now, so a stopping daemon can end them.
static LIVE: std::sync::Mutex<std::collections::BTreeSet<i32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Set when the process is shutting down: step ends seen from now on are not results.
static SHUTTING_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A step's process group, listed in `LIVE` while its supervisor runs.
struct LiveGroup(i32);

impl LiveGroup {
    fn enter(pgid: Pid) -> LiveGroup {
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).insert(pgid.as_raw());
        LiveGroup(pgid.as_raw())
    }
}

impl Drop for LiveGroup {
    fn drop(&mut self) {
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.0);
    }
}

/// Whether `shutdown` was called: events from now on describe the stop, not the run, and are
/// not recorded (the run resumes from its journal at the next start).
pub fn shutting_down() -> bool {
    SHUTTING_DOWN.load(std::sync::atomic::Ordering::SeqCst)
}

/// Ends every running step for a stopping process: SIGTERM to each step's process group, then
/// SIGKILL to what is left after `grace`. Returns how many groups there were.
pub fn shutdown(grace: Duration) -> usize {
    SHUTTING_DOWN.store(true, std::sync::atomic::Ordering::SeqCst);
    let groups: Vec<i32> = LIVE.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
    for g in &groups {
        let _ = killpg(Pid::from_raw(*g), Signal::SIGTERM);
    }
    let start = Instant::now();
    while start.elapsed() < grace {
        let alive = groups.iter().any(|g| killpg(Pid::from_raw(*g), None).is_ok());
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for g in &groups {
        let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
    }
    groups.len()
}

/// Whether a step ended by SIGTERM, SIGINT or SIGHUP: what a service manager sends on stop.
fn stopped_from_outside(status: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status
        .signal()
        .is_some_and(|s| [libc::SIGTERM, libc::SIGINT, libc::SIGHUP].contains(&s))
}

/// The wait status a sandboxed step's init reported, or the keeper's own.
fn effective(status: ExitStatus, guard: Option<&super::sandbox::Guard>) -> Result<ExitStatus, ProcEnd> {
    use std::os::unix::process::ExitStatusExt;
    match guard.map(|g| g.outcome()) {
        None | Some(super::sandbox::Outcome::Nothing) => Ok(status),
        Some(super::sandbox::Outcome::Status(raw)) => Ok(ExitStatus::from_raw(raw)),
        Some(super::sandbox::Outcome::Unavailable(u)) => Err(ProcEnd::Unisolated(u)),
    }
}

/// Spawns `cmd` (stdin closed, output piped) and supervises it until it ends. With a sandbox
/// `guard`, `cmd` was prepared by `Sandbox::apply`, and the step's own exit status comes from it.
pub fn run(
    mut cmd: Command,
    guard: Option<super::sandbox::Guard>,
    step: &str,
    token: &CancelToken,
    grace: Duration,
    emitter: &Emitter,
) -> ProcEnd {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let spawned = cmd.spawn();
    // The command holds the write end of the sandbox's status pipe: close it here.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return match effective(ExitStatus::default(), guard.as_ref()) {
                Err(end) => end,
                Ok(_) => ProcEnd::SpawnFailed(e.to_string()),
            };
        }
    };
    let pgid = Pid::from_raw(child.id() as i32);
    let _live = LiveGroup::enter(pgid);
    let pidfd = pidfd_open(child.id());
    let mut pipes = Pipes {
        out: child.stdout.take(),
        err: child.stderr.take(),
    };
    pipes.out.iter().for_each(nonblocking);
    pipes.err.iter().for_each(nonblocking);

    let names = ["stdout", "stderr"];
    let mut splitters = [
        LineSplitter::new(emitter.redactor().clone(), MAX_LINE),
        LineSplitter::new(emitter.redactor().clone(), MAX_LINE),
    ];
    let output = emitter.step_output(step);
    let log = |stream: usize, line: String| {
        if !output.keep(&line) {
            return;
        }
        emitter.emit(
            Event::new("step.log")
                .step(step)
                .msg(line)
                .data(json!({ "stream": names[stream] })),
        );
    };
    let mut status: Option<ExitStatus> = None;
    let mut stopped: Option<Stop> = None;
    let mut term_sent: Option<Instant> = None;
    let mut exited_at: Option<Instant> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if status.is_some() && pipes.out.is_none() && pipes.err.is_none() {
            break;
        }
        if exited_at.is_some_and(|t| t.elapsed() > DRAIN) {
            break;
        }
        let wait = match (term_sent, token.deadline(), &pidfd) {
            (Some(_), _, _) | (_, _, None) => Duration::from_millis(10),
            (None, Some(d), _) => d
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
            (None, None, _) => Duration::from_millis(50),
        };
        let ready = wait_ready(&pipes, if status.is_none() { pidfd.as_ref() } else { None }, wait);
        for (i, readable) in ready.pipes.iter().enumerate() {
            if !readable {
                continue;
            }
            let closed = match i {
                0 => drain(
                    pipes.out.as_mut(),
                    &mut buf,
                    &mut splitters[0],
                    |b| output.read(0, b),
                    |l| log(0, l),
                ),
                _ => drain(
                    pipes.err.as_mut(),
                    &mut buf,
                    &mut splitters[1],
                    |b| output.read(1, b),
                    |l| log(1, l),
                ),
            };
            if closed {
                if i == 0 {
                    pipes.out = None
                } else {
                    pipes.err = None
                }
                if let Some(l) = splitters[i].finish() {
                    log(i, l);
                }
            }
        }
        if status.is_none()
            && (ready.exited || pidfd.is_none())
            && let Ok(Some(st)) = child.try_wait()
        {
            let st = match effective(st, guard.as_ref()) {
                Ok(st) => st,
                Err(end) => {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    return end;
                }
            };
            // A step killed by a stop signal nobody here sent: most likely the whole service is
            // being stopped (systemd signals every process of the unit at once). Give the
            // daemon a moment to say so, so the stop is not recorded as the step failing.
            if stopped.is_none() && term_sent.is_none() && stopped_from_outside(&st) {
                let grace = Instant::now();
                while !shutting_down() && grace.elapsed() < Duration::from_millis(500) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            status = Some(st);
            exited_at = Some(Instant::now());
            // Nothing of the step may outlive it: kill what is left of its group.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        if status.is_none() {
            match (term_sent, stopped.or_else(|| token.stop())) {
                (None, Some(reason)) => {
                    stopped = Some(reason);
                    let _ = killpg(pgid, Signal::SIGTERM);
                    term_sent = Some(Instant::now());
                }
                (Some(at), _) if at.elapsed() >= grace => {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                _ => {}
            }
        }
    }
    for (i, s) in splitters.iter_mut().enumerate() {
        if let Some(l) = s.finish() {
            log(i, l);
        }
    }
    if let Some(truncated) = output.truncated() {
        emitter.emit(truncated);
    }
    finish(&mut child, status, stopped, guard.as_ref())
}

fn finish(
    child: &mut Child,
    status: Option<ExitStatus>,
    stopped: Option<Stop>,
    guard: Option<&super::sandbox::Guard>,
) -> ProcEnd {
    use std::os::unix::process::ExitStatusExt;
    if let Some(reason) = stopped {
        let _ = child.wait();
        return ProcEnd::Stopped(reason);
    }
    let status = match status {
        Some(s) => s,
        None => match child.wait() {
            Ok(s) => match effective(s, guard) {
                Ok(s) => s,
                Err(end) => return end,
            },
            Err(e) => return ProcEnd::SpawnFailed(format!("cannot wait for the process: {e}")),
        },
    };
    match (status.code(), status.signal()) {
        (Some(c), _) => ProcEnd::Exited(c),
        (None, Some(sig)) => ProcEnd::Signaled(sig),
        (None, None) => ProcEnd::Exited(-1),
    }
}

struct Ready {
    pipes: [bool; 2],
    exited: bool,
}

fn wait_ready(pipes: &Pipes, pidfd: Option<&OwnedFd>, wait: Duration) -> Ready {
    let flags = PollFlags::POLLIN;
    let mut fds: Vec<PollFd> = Vec::with_capacity(3);
    let mut which: Vec<usize> = Vec::with_capacity(3);
    if let Some(o) = &pipes.out {
        fds.push(PollFd::new(o.as_fd(), flags));
        which.push(0);
    }
    if let Some(e) = &pipes.err {
        fds.push(PollFd::new(e.as_fd(), flags));
        which.push(1);
    }
    if let Some(p) = pidfd {
        fds.push(PollFd::new(p.as_fd(), flags));
        which.push(2);
    }
    let mut ready = Ready {
        pipes: [false, false],
        exited: false,
    };
    if fds.is_empty() {
        std::thread::sleep(wait);
        return ready;
    }
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
    if poll(&mut fds, timeout).is_err() {
        return ready;
    }
    for (fd, w) in fds.iter().zip(which) {
        if fd.any().unwrap_or(false) || fd.revents().is_some_and(|r| !r.is_empty()) {
            match w {
                2 => ready.exited = true,
                i => ready.pipes[i] = true,
            }
        }
    }
    ready
}

/// Reads what a pipe holds now; true when it reached end of file. Every byte read goes to
/// `seen` (counted and hashed); only while that says lines are still kept is it split.
fn drain<R: Read>(
    pipe: Option<&mut R>,
    buf: &mut [u8],
    splitter: &mut LineSplitter,
    mut seen: impl FnMut(&[u8]) -> bool,
    mut log: impl FnMut(String),
) -> bool {
    let Some(pipe) = pipe else { return true };
    loop {
        match pipe.read(buf) {
            Ok(0) => return true,
            Ok(n) if !seen(&buf[..n]) => {}
            Ok(n) => splitter.push(&buf[..n]).into_iter().for_each(&mut log),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}
