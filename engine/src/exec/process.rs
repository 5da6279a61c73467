//! Running one step process: its own process group, stdout/stderr as redacted `step.log`
//! events, and termination of the whole group (SIGTERM, grace, SIGKILL) on timeout or
//! cancel. After the main process exits, stragglers left in its group are killed too.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::json;

use crate::event::{Emitter, Event};
use crate::redact::LineSplitter;

use super::control::{CancelToken, Stop};

/// Longest log line before it is cut.
const MAX_LINE: usize = 16 * 1024;

/// How a step process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcEnd {
    Exited(i32),
    Signaled(i32),
    Stopped(Stop),
    SpawnFailed(String),
}

enum Msg {
    Out(usize, Vec<u8>),
    Eof(usize),
    Exit(std::io::Result<std::process::ExitStatus>),
}

/// Spawns `cmd` (stdin closed, output piped) and supervises it until it ends.
pub fn run(mut cmd: Command, step: &str, token: &CancelToken, grace: Duration, emitter: &Emitter) -> ProcEnd {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ProcEnd::SpawnFailed(e.to_string()),
    };
    let pgid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel::<Msg>();
    let streams = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for (i, stream) in streams.into_iter().enumerate() {
        let Some(mut stream) = stream else { continue };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(Msg::Out(i, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = tx.send(Msg::Eof(i));
        });
    }
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Msg::Exit(child.wait()));
        });
    }
    drop(tx);

    let names = ["stdout", "stderr"];
    let mut splitters = [
        LineSplitter::new(emitter.redactor().clone(), MAX_LINE),
        LineSplitter::new(emitter.redactor().clone(), MAX_LINE),
    ];
    let log = |stream: usize, line: String| {
        emitter.emit(
            Event::new("step.log")
                .step(step)
                .msg(line)
                .data(json!({ "stream": names[stream] })),
        );
    };
    let mut open = [true, true];
    let mut status: Option<std::io::Result<std::process::ExitStatus>> = None;
    let mut stopped: Option<Stop> = None;
    let mut term_sent: Option<Instant> = None;
    let mut exited_at: Option<Instant> = None;
    loop {
        if status.is_some() && !open.iter().any(|o| *o) {
            break;
        }
        // Output still flowing after the main process exited comes from stragglers in its group.
        if let Some(t) = exited_at {
            if t.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        let wait = match (term_sent, token.deadline()) {
            (Some(_), _) => Duration::from_millis(20),
            (None, Some(d)) => d
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
            (None, None) => Duration::from_millis(50),
        };
        match rx.recv_timeout(wait) {
            Ok(Msg::Out(i, bytes)) => splitters[i].push(&bytes).into_iter().for_each(|l| log(i, l)),
            Ok(Msg::Eof(i)) => {
                open[i] = false;
                if let Some(l) = splitters[i].finish() {
                    log(i, l);
                }
            }
            Ok(Msg::Exit(s)) => {
                status = Some(s);
                exited_at = Some(Instant::now());
                // Nothing of the step may outlive it: kill what is left of its group.
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
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
    if let Some(reason) = stopped {
        return ProcEnd::Stopped(reason);
    }
    match status {
        Some(Ok(st)) => match (st.code(), st.signal()) {
            (Some(c), _) => ProcEnd::Exited(c),
            (None, Some(sig)) => ProcEnd::Signaled(sig),
            (None, None) => ProcEnd::Exited(-1),
        },
        Some(Err(e)) => ProcEnd::SpawnFailed(format!("cannot wait for the process: {e}")),
        None => ProcEnd::SpawnFailed("the process vanished".into()),
    }
}
