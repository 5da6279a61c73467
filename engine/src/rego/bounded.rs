//! A policy evaluation within a time and memory bound. The runner (the `stella` binary, which
//! calls `use_program` at start) evaluates in a child process of its own binary (`serve`):
//! address space capped with `RLIMIT_AS`, CPU with `RLIMIT_CPU`, killed at a wall-clock
//! deadline, no environment, its answer read within a size bound; a policy that builds a huge
//! value or loops costs that child, never the runner. A library caller that set no program
//! evaluates on a worker thread bounded in time only. Never evaluates anything itself but
//! through `super::evaluate`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{Decision, Error, Policy};

/// The first argument that makes the `stella` binary a policy evaluator (`serve`).
pub const CHILD_ARG: &str = "__stella-rego-eval";
/// Most bytes of a request (policy and input) and of an answer read.
const MAX_REQUEST: u64 = 64 << 20;
const MAX_ANSWER: u64 = 1 << 20;

static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Makes every later evaluation run in a child `program CHILD_ARG` (the runner's own binary).
pub fn use_program(program: PathBuf) {
    let _ = PROGRAM.set(program);
}

/// How long and how much memory one evaluation may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub time: Duration,
    /// The evaluator's whole address space, in bytes.
    pub memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time: Duration::from_secs(5),
            memory: 512 << 20,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Request {
    path: String,
    text: String,
    sha256: String,
    query: String,
    input: Json,
    time_ms: u64,
}

#[derive(Serialize, Deserialize)]
enum Answer {
    Decided(Decision),
    Syntax(String),
    Eval(String),
    Exceeded(String),
}

/// Evaluates `policy` within `limits`: in a child process when a program is set, else on a
/// worker thread bounded in time.
pub fn evaluate(policy: &Policy, query: &str, input: &Json, limits: Limits) -> Result<Decision, Error> {
    super::check_query(query)?;
    let size = serde_json::to_vec(input).map_or(u64::MAX, |v| v.len() as u64) + policy.text.len() as u64;
    if size > MAX_REQUEST - (1 << 20) {
        return Err(Error::Exceeded(format!("its input bound of {} MiB", MAX_REQUEST >> 20)));
    }
    match PROGRAM.get() {
        Some(program) => in_child(program, policy, query, input, limits),
        None => in_thread(policy, query, input, limits),
    }
}

fn in_thread(policy: &Policy, query: &str, input: &Json, limits: Limits) -> Result<Decision, Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (policy, query, input) = (policy.clone(), query.to_string(), input.clone());
    std::thread::Builder::new()
        .name("rego".into())
        .spawn(move || {
            let _ = tx.send(super::evaluate(&policy, &query, &input, limits.time));
        })
        .map_err(|e| Error::Eval(format!("cannot start the evaluator: {e}")))?;
    rx.recv_timeout(limits.time + Duration::from_secs(1))
        .unwrap_or_else(|_| Err(time_exceeded(limits)))
}

fn time_exceeded(limits: Limits) -> Error {
    Error::Exceeded(format!("its time limit of {} ms", limits.time.as_millis()))
}

fn memory_exceeded(limits: Limits) -> Error {
    Error::Exceeded(format!("its memory limit of {} MiB", limits.memory >> 20))
}

fn in_child(program: &PathBuf, policy: &Policy, query: &str, input: &Json, limits: Limits) -> Result<Decision, Error> {
    let request = serde_json::to_vec(&Request {
        path: policy.path.clone(),
        text: policy.text.clone(),
        sha256: policy.sha256.clone(),
        query: query.to_string(),
        input: input.clone(),
        time_ms: limits.time.as_millis() as u64,
    })
    .map_err(|e| Error::Eval(e.to_string()))?;
    let memory = limits.memory as libc::rlim_t;
    let cpu = limits.time.as_secs() as libc::rlim_t + 2;
    let mut cmd = Command::new(program);
    cmd.arg(CHILD_ARG)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: only setrlimit(2), async-signal-safe, between fork and exec, on stack values.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            let set = |res, v: libc::rlim_t| {
                let l = libc::rlimit {
                    rlim_cur: v,
                    rlim_max: v,
                };
                if libc::setrlimit(res, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            set(libc::RLIMIT_AS, memory)?;
            set(libc::RLIMIT_CPU, cpu)?;
            set(libc::RLIMIT_CORE, 0)
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Eval(format!("cannot start the evaluator {}: {e}", program.display())))?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || {
        // A child that stops reading (it died, or refused a request past its bound) must cost
        // an EPIPE here, never a SIGPIPE to the runner: the signal is blocked in this thread.
        let mut pipe = nix::sys::signal::SigSet::empty();
        pipe.add(nix::sys::signal::Signal::SIGPIPE);
        let _ = pipe.thread_block();
        let _ = stdin.write_all(&request);
    });
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.take(MAX_ANSWER).read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + limits.time + Duration::from_secs(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(Error::Eval(format!("waiting for the evaluator: {e}"))),
        }
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(time_exceeded(limits));
    };
    if let Ok(answer) = serde_json::from_slice::<Answer>(&out) {
        return match answer {
            Answer::Decided(d) => Ok(d),
            Answer::Syntax(m) => Err(Error::Syntax {
                pos: crate::diag::Pos::UNKNOWN,
                message: m,
            }),
            Answer::Eval(m) => Err(Error::Eval(m)),
            Answer::Exceeded(m) => Err(Error::Exceeded(m)),
        };
    }
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(libc::SIGXCPU) => Err(time_exceeded(limits)),
        // An allocation the address-space cap refused aborts the child (or kills it).
        Some(libc::SIGABRT | libc::SIGKILL | libc::SIGSEGV | libc::SIGBUS) => Err(memory_exceeded(limits)),
        _ => Err(Error::Eval(format!("the evaluator ended without an answer ({status})"))),
    }
}

/// The child's side (`stella __stella-rego-eval`): one request on stdin, one answer on stdout.
/// Returns the exit code.
pub fn serve() -> u8 {
    let mut buf = Vec::new();
    if std::io::stdin().take(MAX_REQUEST).read_to_end(&mut buf).is_err() {
        return 2;
    }
    let Ok(req) = serde_json::from_slice::<Request>(&buf) else {
        return 2;
    };
    drop(buf);
    let policy = Policy {
        path: req.path,
        text: req.text,
        sha256: req.sha256,
    };
    let time = Duration::from_millis(req.time_ms);
    // A panic (e.g. "capacity overflow" from a huge value) is an answer too.
    let std_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| super::evaluate(&policy, &req.query, &req.input, time));
    std::panic::set_hook(std_hook);
    let answer = match result {
        Ok(Ok(d)) => Answer::Decided(d),
        Ok(Err(Error::Syntax { message, .. })) => Answer::Syntax(message),
        Ok(Err(Error::Exceeded(m))) => Answer::Exceeded(m),
        Ok(Err(Error::Eval(m))) => Answer::Eval(m),
        Ok(Err(e)) => Answer::Eval(e.to_string()),
        Err(_) => Answer::Exceeded("its memory limit".into()),
    };
    let text = serde_json::to_vec(&answer).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if out.write_all(&text).and_then(|()| out.flush()).is_err() {
        return 2;
    }
    0
}
