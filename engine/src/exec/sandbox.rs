//! The step sandbox: every step process starts in user, mount and PID namespaces of its own
//! (and a network namespace in sealed mode), where the runner's repository, state, work
//! directories and key are covered by empty read-only mounts, `/tmp` is private, `/proc` shows
//! only the step's processes, and no capability is left. In `strict` mode a Landlock ruleset
//! narrows the step further to its workspace, its temporary directory, the read-only system and
//! the listed paths. Owns the set-up between fork and exec; never decides policy (that is
//! `config::SandboxPolicy`) and never runs a step itself (that is `process::run`).
//!
//! The process tree of a sandboxed step, all in the step's process group:
//!
//! ```text
//! runner ─ keeper (runner's PID namespace; dies with the runner thread: PR_SET_PDEATHSIG)
//!            └ init (PID 1 of the step's namespace; dies with the keeper; forwards stop signals)
//!                └ step (exec'd: bash, or the program of builtin:exec)
//! ```
//! When init dies, the kernel kills every process of the namespace, so nothing a step started,
//! not even one that left its process group, outlives the step or the runner. The keeper and
//! init are copies of the runner that never exec; they are made non-dumpable, so the step
//! cannot read their memory, and they live outside what the step can name.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::SandboxPolicy;

/// What a run's steps are kept from, and how.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    pub policy: SandboxPolicy,
    /// The runner's own paths a step must not see: the repository, its `.git`, state and work
    /// directories, the key and secrets files. Missing paths are skipped.
    pub hide: Vec<PathBuf>,
}

/// A kernel feature the sandbox needs; named in errors and by `stella doctor --check sandbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    UserNamespaces,
    MountNamespaces,
    PidNamespaces,
    NetworkNamespaces,
    Landlock,
}

impl Feature {
    pub const ALL: [Feature; 5] = [
        Feature::UserNamespaces,
        Feature::MountNamespaces,
        Feature::PidNamespaces,
        Feature::NetworkNamespaces,
        Feature::Landlock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Feature::UserNamespaces => "user namespaces",
            Feature::MountNamespaces => "mount namespaces",
            Feature::PidNamespaces => "PID namespaces",
            Feature::NetworkNamespaces => "network namespaces",
            Feature::Landlock => "Landlock",
        }
    }

    /// The word `STELLA_SANDBOX_SIMULATE_MISSING` takes for this feature.
    pub fn key(self) -> &'static str {
        match self {
            Feature::UserNamespaces => "user",
            Feature::MountNamespaces => "mount",
            Feature::PidNamespaces => "pid",
            Feature::NetworkNamespaces => "net",
            Feature::Landlock => "landlock",
        }
    }

    /// What an operator can do about it.
    pub fn hint(self) -> &'static str {
        match self {
            Feature::UserNamespaces => {
                "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0, or an AppArmor profile that permits them)"
            }
            Feature::Landlock => "boot a kernel with Landlock enabled (CONFIG_SECURITY_LANDLOCK, lsm=landlock,…)",
            _ => {
                "run the runner where the kernel lets an unprivileged user namespace create it (not inside a container that forbids it)"
            }
        }
    }
}

/// Why a step could not be isolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub feature: Feature,
    /// What failed, e.g. `unshare(CLONE_NEWUSER): Operation not permitted (os error 1)`.
    pub detail: String,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the step cannot be isolated from the runner: the kernel does not provide {} ({}); {}; `stella doctor --check sandbox` shows what this host lacks, and `sandbox: off` in .stella/config.yaml runs steps unisolated",
            self.feature.name(),
            self.detail,
            self.feature.hint()
        )
    }
}

/// The set-up steps between fork and exec, reported through the status pipe when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Stage {
    UserNs = 1,
    IdMap,
    MountNs,
    PidNs,
    NetNs,
    Fork,
    MountPrivate,
    OpenTree,
    Hide,
    Proc,
    Keep,
    Loopback,
    Landlock,
    Capabilities,
}

impl Stage {
    const ALL: [Stage; 14] = [
        Stage::UserNs,
        Stage::IdMap,
        Stage::MountNs,
        Stage::PidNs,
        Stage::NetNs,
        Stage::Fork,
        Stage::MountPrivate,
        Stage::OpenTree,
        Stage::Hide,
        Stage::Proc,
        Stage::Keep,
        Stage::Loopback,
        Stage::Landlock,
        Stage::Capabilities,
    ];

    fn feature(self) -> Feature {
        match self {
            Stage::UserNs | Stage::IdMap | Stage::Capabilities | Stage::Fork => Feature::UserNamespaces,
            Stage::MountNs | Stage::MountPrivate | Stage::OpenTree | Stage::Hide | Stage::Keep => {
                Feature::MountNamespaces
            }
            Stage::PidNs | Stage::Proc => Feature::PidNamespaces,
            Stage::NetNs | Stage::Loopback => Feature::NetworkNamespaces,
            Stage::Landlock => Feature::Landlock,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Stage::UserNs => "unshare(CLONE_NEWUSER)",
            Stage::IdMap => "writing the user namespace's uid and gid maps",
            Stage::MountNs => "unshare(CLONE_NEWNS)",
            Stage::PidNs => "unshare(CLONE_NEWPID)",
            Stage::NetNs => "unshare(CLONE_NEWNET)",
            Stage::Fork => "fork",
            Stage::MountPrivate => "making mounts private",
            Stage::OpenTree => "open_tree of the workspace",
            Stage::Hide => "covering the runner's paths",
            Stage::Proc => "mounting /proc of the new PID namespace",
            Stage::Keep => "mounting the workspace back",
            Stage::Loopback => "bringing loopback up",
            Stage::Landlock => "landlock_restrict_self",
            Stage::Capabilities => "dropping capabilities",
        }
    }

    fn from_u8(b: u8) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u8 == b)
    }

    fn of(feature: Feature) -> Stage {
        match feature {
            Feature::UserNamespaces => Stage::UserNs,
            Feature::MountNamespaces => Stage::MountNs,
            Feature::PidNamespaces => Stage::PidNs,
            Feature::NetworkNamespaces => Stage::NetNs,
            Feature::Landlock => Stage::Landlock,
        }
    }
}

/// Reads `STELLA_SANDBOX_SIMULATE_MISSING` (a runner-side setting for tests and drills): the
/// features to treat as missing, as if the kernel refused them.
fn simulated_missing() -> Vec<Feature> {
    let Ok(v) = std::env::var("STELLA_SANDBOX_SIMULATE_MISSING") else {
        return Vec::new();
    };
    Feature::ALL
        .into_iter()
        .filter(|f| v.split(',').any(|w| w.trim() == f.key()))
        .collect()
}

/// The Landlock ABI version this kernel offers; 0 without Landlock.
pub fn landlock_abi() -> i32 {
    if simulated_missing().contains(&Feature::Landlock) {
        return 0;
    }
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: a version query takes no attribute and returns an integer or -1.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0) as i32
}

/// The read-only system a strict step may read and execute.
const SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/opt", "/run", "/nix",
];

/// Everything the fork-side code needs, prepared before the fork: after it, only system calls
/// are made, on memory allocated here.
struct Plan {
    runner: libc::pid_t,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    network: bool,
    /// Directories to cover with an empty tmpfs (read-only once set up), outermost only.
    hide_dirs: Vec<CString>,
    /// Files to cover with /dev/null.
    hide_files: Vec<CString>,
    /// Paths shown again at the same place: (path, is a directory, ancestors to create).
    keep: Vec<(CString, bool, Vec<CString>)>,
    landlock: Option<Landlock>,
    simulate: Option<Stage>,
    status: RawFd,
}

struct Landlock {
    ruleset: OwnedFd,
    proc_access: u64,
    tmp_access: u64,
}

/// A prepared sandbox for one step process: decode its outcome with `Guard::outcome`.
pub struct Guard {
    status: OwnedFd,
    pub mode: &'static str,
}

/// What the init process reported.
pub enum Outcome {
    /// The wait status of the step process.
    Status(i32),
    Unavailable(Unavailable),
    /// Nothing: the keeper or init died (killed with the group).
    Nothing,
}

impl Guard {
    /// Reads what init wrote: the step's wait status, or the set-up stage that failed.
    pub fn outcome(&self) -> Outcome {
        let mut buf = [0u8; 6];
        let mut got = 0;
        while got < buf.len() {
            // SAFETY: reading into a local buffer from a descriptor this guard owns.
            let n = unsafe { libc::read(self.status.as_raw_fd(), buf[got..].as_mut_ptr().cast(), buf.len() - got) };
            if n <= 0 {
                break;
            }
            got += n as usize;
        }
        if got < buf.len() {
            return Outcome::Nothing;
        }
        let value = i32::from_ne_bytes([buf[2], buf[3], buf[4], buf[5]]);
        match (buf[0], Stage::from_u8(buf[1])) {
            (b'S', _) => Outcome::Status(value),
            (b'F', Some(stage)) => Outcome::Unavailable(Unavailable {
                feature: stage.feature(),
                detail: format!("{}: {}", stage.what(), std::io::Error::from_raw_os_error(value)),
            }),
            _ => Outcome::Nothing,
        }
    }
}

impl Sandbox {
    pub fn off() -> Sandbox {
        Sandbox {
            policy: SandboxPolicy::Off,
            hide: Vec::new(),
        }
    }

    pub fn is_off(&self) -> bool {
        self.policy == SandboxPolicy::Off
    }

    /// What is recorded in events and evidence about the sandbox.
    pub fn describe(&self) -> serde_json::Value {
        let mut d = serde_json::json!({ "mode": self.policy.mode() });
        if !self.is_off() {
            d["namespaces"] = serde_json::json!(["user", "mount", "pid"]);
        }
        if let SandboxPolicy::Strict { read, write } = &self.policy {
            d["landlockAbi"] = serde_json::json!(landlock_abi());
            d["read"] = serde_json::json!(read);
            d["write"] = serde_json::json!(write);
        }
        d
    }

    /// Makes `cmd` start inside the sandbox: `workspace` and `output` (the `$STELLA_OUTPUT`
    /// file) stay visible at their paths; `network` gives the step a network namespace with
    /// only loopback. Fails before any process starts when a feature is known to be missing.
    pub fn apply(
        &self,
        cmd: &mut Command,
        workspace: &Path,
        output: &Path,
        network: bool,
    ) -> Result<Guard, Unavailable> {
        let missing = simulated_missing();
        let simulate = missing
            .iter()
            .copied()
            .filter(|f| *f != Feature::NetworkNamespaces || network)
            .filter(|f| *f != Feature::Landlock || matches!(self.policy, SandboxPolicy::Strict { .. }))
            .map(Stage::of)
            .next();
        let landlock = match &self.policy {
            SandboxPolicy::Strict { read, write } if !missing.contains(&Feature::Landlock) => {
                Some(ruleset(workspace, output, read, write)?)
            }
            _ => None,
        };
        let (status_read, status_write) = pipe()?;
        // SAFETY: geteuid/getegid/getpid cannot fail.
        let (uid, gid, runner) = unsafe { (libc::geteuid(), libc::getegid(), libc::getpid()) };
        let plan = Plan {
            runner,
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            network,
            hide_dirs: Vec::new(),
            hide_files: Vec::new(),
            keep: [(workspace, true), (output, false)]
                .into_iter()
                .map(|(p, dir)| (cstr(p), dir, ancestors(p)))
                .collect(),
            landlock,
            simulate,
            status: status_write.as_raw_fd(),
        };
        let plan = self.covers(plan);
        install(cmd, plan, status_write);
        Ok(Guard {
            status: status_read,
            mode: self.policy.mode(),
        })
    }

    /// Fills in what to cover: the runner's paths and `/tmp`, outermost first, nested ones
    /// dropped (covering the outer one hides them).
    fn covers(&self, mut plan: Plan) -> Plan {
        let mut dirs: Vec<PathBuf> = vec![PathBuf::from("/tmp")];
        let mut files: Vec<PathBuf> = Vec::new();
        for p in &self.hide {
            let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            // Covered where it leads: a key given as a symlink is read through its target's
            // path as well, and a mount on the symlink's path would land on the target anyway.
            let p = std::fs::canonicalize(&p).unwrap_or(p);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() && p != Path::new("/") => dirs.push(p),
                Ok(m) if m.is_file() => files.push(p),
                _ => {}
            }
        }
        dirs.sort();
        dirs.dedup();
        let outer: Vec<PathBuf> = dirs
            .iter()
            .filter(|d| !dirs.iter().any(|o| o != *d && d.starts_with(o)))
            .cloned()
            .collect();
        files.retain(|f| !outer.iter().any(|o| f.starts_with(o)));
        plan.hide_dirs = outer.iter().map(|p| cstr(p)).collect();
        plan.hide_files = files.iter().map(|p| cstr(p)).collect();
        plan
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_else(|_| c"/nonexistent".into())
}

/// `/a`, `/a/b`, … up to and excluding `p`.
fn ancestors(p: &Path) -> Vec<CString> {
    let mut v: Vec<CString> = p
        .ancestors()
        .skip(1)
        .filter(|a| a.parent().is_some())
        .map(cstr)
        .collect();
    v.reverse();
    v
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Unavailable> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Unavailable {
            feature: Feature::UserNamespaces,
            detail: format!("pipe2: {}", std::io::Error::last_os_error()),
        });
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The Landlock ruleset of a strict step, made in the runner: the system read-only, the
/// workspace, output file and listed write paths read-write, the listed read paths read-only.
/// `/proc` and `/tmp` are added by init once they are mounted.
fn ruleset(workspace: &Path, output: &Path, read: &[String], write: &[String]) -> Result<Landlock, Unavailable> {
    use landlock::{
        Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, path_beneath_rules,
    };
    let version = landlock_abi();
    let fail = |detail: String| Unavailable {
        feature: Feature::Landlock,
        detail,
    };
    if version < 1 {
        return Err(fail(
            "landlock_create_ruleset: the kernel offers no Landlock ABI".into(),
        ));
    }
    let abi = landlock::ABI::from(version);
    let all = AccessFs::from_all(abi);
    let read_only = AccessFs::from_read(abi);
    let system: Vec<&str> = SYSTEM.iter().copied().filter(|p| Path::new(p).exists()).collect();
    let dev = read_only | AccessFs::WriteFile | (all & AccessFs::IoctlDev);
    let existing = |v: &[String]| v.iter().filter(|p| Path::new(p).exists()).cloned().collect::<Vec<_>>();
    let build = || -> Result<landlock::RulesetCreated, landlock::RulesetError> {
        let mut r = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(all)?;
        if version >= 6 {
            r = r.scope(Scope::from_all(abi))?;
        }
        r.create()?
            .add_rules(path_beneath_rules(&system, read_only))?
            .add_rules(path_beneath_rules(existing(read), read_only))?
            .add_rules(path_beneath_rules(["/dev"], dev))?
            .add_rules(path_beneath_rules([workspace, output], all))?
            .add_rules(path_beneath_rules(existing(write), all))
    };
    let created = build().map_err(|e| fail(format!("building the ruleset: {e}")))?;
    let fd: Option<OwnedFd> = created.into();
    let ruleset = fd.ok_or_else(|| fail("landlock_create_ruleset gave no ruleset".into()))?;
    Ok(Landlock {
        ruleset,
        proc_access: read_only.bits(),
        tmp_access: all.bits(),
    })
}

/// Installs the fork-side set-up on `cmd`. `status` is the write end of the status pipe; the
/// command keeps it open until it is spawned and dropped.
fn install(cmd: &mut Command, plan: Plan, status: OwnedFd) {
    use std::os::unix::process::CommandExt;
    let keep_open = status;
    // SAFETY: the hook only makes system calls on memory prepared in `plan` (no allocation,
    // no locks): what is allowed between fork and exec in a multi-threaded program.
    unsafe {
        cmd.pre_exec(move || {
            let _ = &keep_open;
            keeper(&plan)
        });
    }
}

/// Writes a record to the status pipe: `S` and a wait status, or `F`, the stage and errno.
fn report(fd: RawFd, kind: u8, stage: u8, value: i32) {
    let v = value.to_ne_bytes();
    let buf = [kind, stage, v[0], v[1], v[2], v[3]];
    // SAFETY: a write of a local buffer.
    unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Fails `stage`: reports it and returns the error that makes `spawn` fail.
fn fail(plan: &Plan, stage: Stage, err: i32) -> std::io::Error {
    report(plan.status, b'F', stage as u8, err);
    std::io::Error::from_raw_os_error(err)
}

/// Runs `f` unless `stage` is the one to simulate as missing; a non-zero result fails it.
fn step(plan: &Plan, stage: Stage, f: impl FnOnce() -> libc::c_int) -> std::io::Result<()> {
    if plan.simulate == Some(stage) {
        return Err(fail(plan, stage, libc::EPERM));
    }
    if f() != 0 {
        return Err(fail(plan, stage, errno()));
    }
    Ok(())
}

/// In the forked child (the keeper): dies with the runner, makes the namespaces, forks init,
/// and waits for it. Returns only in the step process, which std then execs.
fn keeper(plan: &Plan) -> std::io::Result<()> {
    // SAFETY (whole function): system calls on prepared memory, as `install` requires.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != plan.runner {
            libc::_exit(1);
        }
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
        step(plan, Stage::UserNs, || libc::unshare(libc::CLONE_NEWUSER))?;
        let maps = write_file(c"/proc/self/setgroups", b"deny") == 0
            && write_file(c"/proc/self/uid_map", &plan.uid_map) == 0
            && write_file(c"/proc/self/gid_map", &plan.gid_map) == 0;
        step(plan, Stage::IdMap, || if maps { 0 } else { -1 })?;
        step(plan, Stage::MountNs, || libc::unshare(libc::CLONE_NEWNS))?;
        step(plan, Stage::PidNs, || libc::unshare(libc::CLONE_NEWPID))?;
        if plan.network {
            step(plan, Stage::NetNs, || libc::unshare(libc::CLONE_NEWNET))?;
        }
        // A pipe whose write end only the keeper holds: init sees it hang up if the keeper died
        // before init could ask to die with it.
        let mut alive = [0 as RawFd; 2];
        step(plan, Stage::Fork, || libc::pipe2(alive.as_mut_ptr(), libc::O_CLOEXEC))?;
        let init = libc::fork();
        if init < 0 {
            return Err(fail(plan, Stage::Fork, errno()));
        }
        if init > 0 {
            libc::close(alive[0]);
            keep_fds(&[alive[1]]);
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_IGN);
            }
            let mut st = 0;
            while libc::waitpid(init, &mut st, 0) < 0 && errno() == libc::EINTR {}
            if libc::WIFSIGNALED(st) {
                let sig = libc::WTERMSIG(st);
                libc::signal(sig, libc::SIG_DFL);
                libc::kill(libc::getpid(), sig);
            }
            libc::_exit(0);
        }
        libc::close(alive[1]);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let mut pfd = libc::pollfd {
            fd: alive[0],
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut pfd, 1, 0) > 0 {
            libc::_exit(1);
        }
        libc::close(alive[0]);
        init_process(plan)
    }
}

/// PID 1 of the step's namespace: sets up the mounts, forks the step and reaps until it ends.
fn init_process(plan: &Plan) -> std::io::Result<()> {
    // SAFETY (whole function): system calls on prepared memory, as `install` requires.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
        step(plan, Stage::MountPrivate, || {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        })?;
        // Detached copies of what stays visible, taken before anything covers them.
        let mut trees = [-1 as RawFd; 2];
        for (i, (path, _, _)) in plan.keep.iter().enumerate() {
            let fd = libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                path.as_ptr(),
                (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint,
            ) as RawFd;
            step(plan, Stage::OpenTree, || if fd < 0 { -1 } else { 0 })?;
            trees[i] = fd;
        }
        let flags = libc::MS_NOSUID | libc::MS_NODEV;
        for dir in &plan.hide_dirs {
            let tmp = dir.as_bytes() == b"/tmp";
            let opts: &std::ffi::CStr = if tmp { c"mode=1777" } else { c"mode=0755,size=1m" };
            step(plan, Stage::Hide, || {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    dir.as_ptr(),
                    c"tmpfs".as_ptr(),
                    flags,
                    opts.as_ptr().cast(),
                )
            })?;
        }
        for file in &plan.hide_files {
            step(plan, Stage::Hide, || {
                libc::mount(
                    c"/dev/null".as_ptr(),
                    file.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            })?;
        }
        step(plan, Stage::Proc, || {
            libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                flags | libc::MS_NOEXEC,
                std::ptr::null(),
            )
        })?;
        for (i, (path, dir, parents)) in plan.keep.iter().enumerate() {
            for p in parents {
                libc::mkdir(p.as_ptr(), 0o755);
            }
            if *dir {
                libc::mkdir(path.as_ptr(), 0o755);
            } else {
                let fd = libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o600);
                if fd >= 0 {
                    libc::close(fd);
                }
            }
            step(plan, Stage::Keep, || {
                libc::syscall(
                    libc::SYS_move_mount,
                    trees[i],
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    libc::MOVE_MOUNT_F_EMPTY_PATH,
                ) as libc::c_int
            })?;
            libc::close(trees[i]);
        }
        for dir in plan.hide_dirs.iter().filter(|d| d.as_bytes() != b"/tmp") {
            step(plan, Stage::Hide, || {
                libc::mount(
                    std::ptr::null(),
                    dir.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | flags,
                    std::ptr::null(),
                )
            })?;
        }
        if plan.network {
            step(plan, Stage::Loopback, || match super::process::loopback_up() {
                Ok(()) => 0,
                Err(_) => -1,
            })?;
        }
        if let Some(l) = &plan.landlock {
            for (path, access) in [(c"/proc", l.proc_access), (c"/tmp", l.tmp_access)] {
                step(plan, Stage::Landlock, || add_rule(l.ruleset.as_raw_fd(), path, access))?;
            }
        }
        let child = libc::fork();
        if child < 0 {
            return Err(fail(plan, Stage::Fork, errno()));
        }
        if child == 0 {
            return step_process(plan);
        }
        keep_fds(&[plan.status]);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(sig, forward as *const () as libc::sighandler_t);
        }
        loop {
            let mut st = 0;
            let pid = libc::waitpid(-1, &mut st, 0);
            if pid == child {
                report(plan.status, b'S', 0, st);
                libc::_exit(0);
            }
            if pid < 0 && errno() == libc::ECHILD {
                libc::_exit(0);
            }
        }
    }
}

/// Init's handler for stop signals: every other process of the namespace gets it too.
extern "C" fn forward(sig: libc::c_int) {
    // SAFETY: kill is async-signal-safe; -1 from PID 1 means every other process of the namespace.
    unsafe { libc::kill(-1, sig) };
}

/// The step process before exec: no capabilities, no way to gain any, Landlock in strict mode.
fn step_process(plan: &Plan) -> std::io::Result<()> {
    // SAFETY (whole function): system calls on prepared memory, as `install` requires.
    unsafe {
        // std changed into the workspace before the mounts: enter it again, so the working
        // directory is the one shown in the sandbox and `..` leads into the cover, not the runner's disk.
        step(plan, Stage::Keep, || libc::chdir(plan.keep[0].0.as_ptr()))?;
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        const SECBIT_NOROOT: libc::c_ulong = 1;
        const SECBIT_NOROOT_LOCKED: libc::c_ulong = 2;
        const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 4;
        const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 8;
        const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 32;
        let bits = SECBIT_NOROOT
            | SECBIT_NOROOT_LOCKED
            | SECBIT_NO_SETUID_FIXUP
            | SECBIT_NO_SETUID_FIXUP_LOCKED
            | SECBIT_KEEP_CAPS_LOCKED;
        step(plan, Stage::Capabilities, || libc::prctl(libc::PR_SET_SECUREBITS, bits))?;
        for cap in 0..64 {
            libc::prctl(libc::PR_CAPBSET_DROP, cap);
        }
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        #[repr(C)]
        struct CapHeader {
            version: u32,
            pid: libc::c_int,
        }
        let header = CapHeader {
            version: 0x2008_0522,
            pid: 0,
        };
        let data = [0u32; 6];
        step(plan, Stage::Capabilities, || {
            libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as libc::c_int
        })?;
        step(plan, Stage::Capabilities, || {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        })?;
        if let Some(l) = &plan.landlock {
            step(plan, Stage::Landlock, || {
                libc::syscall(libc::SYS_landlock_restrict_self, l.ruleset.as_raw_fd(), 0) as libc::c_int
            })?;
        } else if plan.simulate == Some(Stage::Landlock) {
            return Err(fail(plan, Stage::Landlock, libc::EOPNOTSUPP));
        }
        // Nothing the runner left open reaches the step's program.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
        Ok(())
    }
}

/// Adds a path-beneath rule for `path` to a Landlock ruleset (raw system calls).
fn add_rule(ruleset: RawFd, path: &std::ffi::CStr, access: u64) -> libc::c_int {
    #[repr(C, packed)]
    struct PathBeneath {
        allowed_access: u64,
        parent_fd: i32,
    }
    const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;
    // SAFETY: an O_PATH descriptor and a packed attribute on the stack.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        if fd < 0 {
            return -1;
        }
        let attr = PathBeneath {
            allowed_access: access,
            parent_fd: fd,
        };
        let r = libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            LANDLOCK_RULE_PATH_BENEATH,
            &attr as *const PathBeneath,
            0,
        ) as libc::c_int;
        libc::close(fd);
        r
    }
}

/// Closes every descriptor from 3 up except those in `keep` (sorted or not).
fn keep_fds(keep: &[RawFd]) {
    let mut from: u32 = 3;
    let mut sorted = [RawFd::MAX; 4];
    for (i, k) in keep.iter().take(4).enumerate() {
        sorted[i] = *k;
    }
    sorted.sort_unstable();
    for k in sorted.iter().filter(|k| **k != RawFd::MAX && **k >= 3) {
        let k = *k as u32;
        if k > from {
            // SAFETY: closes descriptors of this process only.
            unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0) };
        }
        from = k + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0) };
}

/// Writes `bytes` to a /proc file with bare system calls (safe between fork and exec); 0 on success.
fn write_file(path: &std::ffi::CStr, bytes: &[u8]) -> libc::c_int {
    // SAFETY: a NUL-terminated path and a buffer of the given length.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return -1;
        }
        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::close(fd);
        if n == bytes.len() as isize { 0 } else { -1 }
    }
}

/// `stella doctor --check sandbox`: starts a trivial step in a sandbox of `policy` (`off` is
/// probed as `required`), with a network namespace when `network` (sealed mode), and reports
/// which feature is missing if it fails.
pub fn probe(policy: &SandboxPolicy, network: bool) -> Result<(), Unavailable> {
    let dir = std::env::temp_dir().join(format!("stella-probe-{}", std::process::id()));
    let workspace = dir.join("workspace");
    let output = dir.join("output");
    let cleanup = || {
        let _ = std::fs::remove_dir_all(&dir);
    };
    let io = |e: std::io::Error| Unavailable {
        feature: Feature::MountNamespaces,
        detail: format!("cannot make a probe directory: {e}"),
    };
    std::fs::create_dir_all(&workspace).map_err(io)?;
    std::fs::write(&output, b"").map_err(io)?;
    let sandbox = Sandbox {
        policy: match policy {
            SandboxPolicy::Off => SandboxPolicy::Required,
            p => p.clone(),
        },
        hide: Vec::new(),
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "test \"$$\" = 2 || test -r /proc/1/status"])
        .current_dir(&workspace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let result = sandbox.apply(&mut cmd, &workspace, &output, network).and_then(|guard| {
        let spawned = cmd.spawn();
        drop(cmd);
        let status = spawned.and_then(|mut c| c.wait());
        match (guard.outcome(), status) {
            (Outcome::Unavailable(u), _) => Err(u),
            (Outcome::Status(0), _) => Ok(()),
            (Outcome::Status(s), _) => Err(Unavailable {
                feature: Feature::PidNamespaces,
                detail: format!("the probe step ended with wait status {s}"),
            }),
            (Outcome::Nothing, st) => Err(Unavailable {
                feature: Feature::UserNamespaces,
                detail: format!("the probe did not start ({st:?})"),
            }),
        }
    });
    cleanup();
    result
}
