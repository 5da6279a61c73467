//! The processes of a sandboxed step, between fork and exec: the keeper (dies with the runner,
//! makes the namespaces), init (PID 1 of the step's namespace: covers, `/proc`, the workspace
//! mounted back, stop signals forwarded, the step reaped) and the step before exec (no
//! capabilities, Landlock). After the fork only system calls on memory prepared in `Setup` are
//! made: nothing here allocates or locks.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Command;

use crate::exec::namespaces::{loopback_up, write_proc};

use super::landlock::{Landlock, add_rule};
use super::status::{Stage, report};

/// Everything the fork-side code needs, prepared before the fork: after it, only system calls
/// are made, on memory allocated here.
pub(super) struct Setup {
    pub(super) runner: libc::pid_t,
    pub(super) uid_map: Vec<u8>,
    pub(super) gid_map: Vec<u8>,
    pub(super) network: bool,
    /// Directories to cover with an empty tmpfs (read-only once set up), outermost only.
    pub(super) hide_dirs: Vec<CString>,
    /// Files to cover with /dev/null.
    pub(super) hide_files: Vec<CString>,
    /// Paths shown again at the same place: (path, is a directory, ancestors to create); at
    /// most three (the workspace, `$STELLA_OUTPUT`, the step's secret files).
    pub(super) keep: Vec<(CString, bool, Vec<CString>)>,
    pub(super) landlock: Option<Landlock>,
    pub(super) simulate: Option<Stage>,
    pub(super) status: RawFd,
}

/// Installs the fork-side set-up on `cmd`. `status` is the write end of the status pipe; the
/// command keeps it open until it is spawned and dropped.
pub(super) fn install(cmd: &mut Command, setup: Setup, status: OwnedFd) {
    use std::os::unix::process::CommandExt;
    let keep_open = status;
    // SAFETY: the hook only makes system calls on memory prepared in `setup` (no allocation,
    // no locks): what is allowed between fork and exec in a multi-threaded program.
    unsafe {
        cmd.pre_exec(move || {
            let _ = &keep_open;
            keeper(&setup)
        });
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Fails `stage`: reports it and returns the error that makes `spawn` fail.
fn fail(setup: &Setup, stage: Stage, err: i32) -> std::io::Error {
    report(setup.status, b'F', stage as u8, err);
    std::io::Error::from_raw_os_error(err)
}

/// Runs `f` unless `stage` is the one to simulate as missing; a non-zero result fails it.
fn step(setup: &Setup, stage: Stage, f: impl FnOnce() -> libc::c_int) -> std::io::Result<()> {
    if setup.simulate == Some(stage) {
        return Err(fail(setup, stage, libc::EPERM));
    }
    if f() != 0 {
        return Err(fail(setup, stage, errno()));
    }
    Ok(())
}

/// In the forked child (the keeper): dies with the runner, makes the namespaces, forks init,
/// and waits for it. Returns only in the step process, which std then execs.
fn keeper(setup: &Setup) -> std::io::Result<()> {
    // SAFETY (whole function): system calls on prepared memory, as `install` requires.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != setup.runner {
            libc::_exit(1);
        }
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
        step(setup, Stage::UserNs, || libc::unshare(libc::CLONE_NEWUSER))?;
        let maps = write_proc(c"/proc/self/setgroups", b"deny").is_ok()
            && write_proc(c"/proc/self/uid_map", &setup.uid_map).is_ok()
            && write_proc(c"/proc/self/gid_map", &setup.gid_map).is_ok();
        step(setup, Stage::IdMap, || if maps { 0 } else { -1 })?;
        step(setup, Stage::MountNs, || libc::unshare(libc::CLONE_NEWNS))?;
        step(setup, Stage::PidNs, || libc::unshare(libc::CLONE_NEWPID))?;
        if setup.network {
            step(setup, Stage::NetNs, || libc::unshare(libc::CLONE_NEWNET))?;
        }
        // A pipe whose write end only the keeper holds: init sees it hang up if the keeper died
        // before init could ask to die with it.
        let mut alive = [0 as RawFd; 2];
        step(setup, Stage::Fork, || libc::pipe2(alive.as_mut_ptr(), libc::O_CLOEXEC))?;
        let init = libc::fork();
        if init < 0 {
            return Err(fail(setup, Stage::Fork, errno()));
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
        init_process(setup)
    }
}

/// PID 1 of the step's namespace: sets up the mounts, forks the step and reaps until it ends.
fn init_process(setup: &Setup) -> std::io::Result<()> {
    // SAFETY (whole function): system calls on prepared memory, as `install` requires.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
        step(setup, Stage::MountPrivate, || {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        })?;
        // Detached copies of what stays visible, taken before anything covers them.
        let mut trees = [-1 as RawFd; 3];
        for (i, (path, _, _)) in setup.keep.iter().enumerate() {
            let fd = libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                path.as_ptr(),
                (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint,
            ) as RawFd;
            step(setup, Stage::OpenTree, || if fd < 0 { -1 } else { 0 })?;
            trees[i] = fd;
        }
        let flags = libc::MS_NOSUID | libc::MS_NODEV;
        for dir in &setup.hide_dirs {
            let tmp = dir.as_bytes() == b"/tmp";
            let opts: &std::ffi::CStr = if tmp { c"mode=1777" } else { c"mode=0755,size=1m" };
            step(setup, Stage::Hide, || {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    dir.as_ptr(),
                    c"tmpfs".as_ptr(),
                    flags,
                    opts.as_ptr().cast(),
                )
            })?;
        }
        for file in &setup.hide_files {
            step(setup, Stage::Hide, || {
                libc::mount(
                    c"/dev/null".as_ptr(),
                    file.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            })?;
        }
        step(setup, Stage::Proc, || {
            libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                flags | libc::MS_NOEXEC,
                std::ptr::null(),
            )
        })?;
        for (i, (path, dir, parents)) in setup.keep.iter().enumerate() {
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
            step(setup, Stage::Keep, || {
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
        for dir in setup.hide_dirs.iter().filter(|d| d.as_bytes() != b"/tmp") {
            step(setup, Stage::Hide, || {
                libc::mount(
                    std::ptr::null(),
                    dir.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | flags,
                    std::ptr::null(),
                )
            })?;
        }
        if setup.network {
            step(setup, Stage::Loopback, || match loopback_up() {
                Ok(()) => 0,
                Err(_) => -1,
            })?;
        }
        if let Some(l) = &setup.landlock {
            for (path, access) in [(c"/proc", l.proc_access), (c"/tmp", l.tmp_access)] {
                step(setup, Stage::Landlock, || add_rule(l.ruleset.as_raw_fd(), path, access))?;
            }
        }
        let child = libc::fork();
        if child < 0 {
            return Err(fail(setup, Stage::Fork, errno()));
        }
        if child == 0 {
            return step_process(setup);
        }
        keep_fds(&[setup.status]);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(sig, forward as *const () as libc::sighandler_t);
        }
        loop {
            let mut st = 0;
            let pid = libc::waitpid(-1, &mut st, 0);
            if pid == child {
                report(setup.status, b'S', 0, st);
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
fn step_process(setup: &Setup) -> std::io::Result<()> {
    // SAFETY (whole function): system calls on prepared memory, as `install` requires.
    unsafe {
        // std changed into the workspace before the mounts: enter it again, so the working
        // directory is the one shown in the sandbox and `..` leads into the cover, not the runner's disk.
        step(setup, Stage::Keep, || libc::chdir(setup.keep[0].0.as_ptr()))?;
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
        step(setup, Stage::Capabilities, || {
            libc::prctl(libc::PR_SET_SECUREBITS, bits)
        })?;
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
        step(setup, Stage::Capabilities, || {
            libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as libc::c_int
        })?;
        step(setup, Stage::Capabilities, || {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        })?;
        if let Some(l) = &setup.landlock {
            step(setup, Stage::Landlock, || {
                libc::syscall(libc::SYS_landlock_restrict_self, l.ruleset.as_raw_fd(), 0) as libc::c_int
            })?;
        } else if setup.simulate == Some(Stage::Landlock) {
            return Err(fail(setup, Stage::Landlock, libc::EOPNOTSUPP));
        }
        // Nothing the runner left open reaches the step's program.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
        Ok(())
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
