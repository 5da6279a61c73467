//! Network and user namespaces as both ways of isolating a step use them: `/proc` id-map
//! files written with bare system calls, loopback brought up in a new network namespace, and
//! `loopback_only`, the network namespace a sealed step gets under `sandbox: off` (the sandbox
//! makes its own). Only set-up between fork and exec; never supervises a process.

use std::process::Command;

/// Makes `cmd` start in a network namespace of its own where only loopback exists (and is
/// up): sealed mode. Without CAP_SYS_ADMIN, a user namespace mapping the runner's own uid and
/// gid comes first, as `unshare --map-current-user --net` does. If neither works, the step
/// does not start: a sealed step never silently runs with the host's network.
pub(super) fn loopback_only(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // Everything the child needs is prepared here: after fork only system calls are made.
    // SAFETY: geteuid/getegid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let uid_map = format!("{uid} {uid} 1\n").into_bytes();
    let gid_map = format!("{gid} {gid} 1\n").into_bytes();
    // SAFETY: the hook only makes async-signal-safe system calls on memory prepared above.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                write_proc(c"/proc/self/setgroups", b"deny")?;
                write_proc(c"/proc/self/uid_map", &uid_map)?;
                write_proc(c"/proc/self/gid_map", &gid_map)?;
            }
            loopback_up()
        });
    }
}

/// Writes `bytes` to a /proc file with bare system calls (safe between fork and exec).
pub(super) fn write_proc(path: &std::ffi::CStr, bytes: &[u8]) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated path and a buffer of the given length.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n != bytes.len() as isize {
            return Err(err);
        }
    }
    Ok(())
}

/// Brings `lo` up in the current network namespace (a new one has it down).
pub(super) fn loopback_up() -> std::io::Result<()> {
    // SAFETY: an ifreq zeroed then named "lo"; ioctls on a socket this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        let mut ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0;
        if ok {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            ok = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) == 0;
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if !ok {
            return Err(err);
        }
    }
    Ok(())
}
