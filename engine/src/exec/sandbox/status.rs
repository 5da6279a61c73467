//! The status pipe between a sandboxed step and the runner: the set-up `Stage`s, the record
//! the keeper and init write (`S` and a wait status, or `F`, the stage that failed and errno),
//! and `Guard::outcome`, which reads it back. Owns the protocol only; never sets anything up.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::feature::{Feature, Unavailable};

/// The set-up steps between fork and exec, reported through the status pipe when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Stage {
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

    pub(super) fn feature(self) -> Feature {
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

    pub(super) fn what(self) -> &'static str {
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

    pub(super) fn from_u8(b: u8) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u8 == b)
    }

    pub(super) fn of(feature: Feature) -> Stage {
        match feature {
            Feature::UserNamespaces => Stage::UserNs,
            Feature::MountNamespaces => Stage::MountNs,
            Feature::PidNamespaces => Stage::PidNs,
            Feature::NetworkNamespaces => Stage::NetNs,
            Feature::Landlock => Stage::Landlock,
        }
    }
}

/// A prepared sandbox for one step process: decode its outcome with `Guard::outcome`.
pub struct Guard {
    pub(super) status: OwnedFd,
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

/// The status pipe, both ends close-on-exec.
pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd), Unavailable> {
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

/// Writes a record to the status pipe: `S` and a wait status, or `F`, the stage and errno.
pub(super) fn report(fd: RawFd, kind: u8, stage: u8, value: i32) {
    let v = value.to_ne_bytes();
    let buf = [kind, stage, v[0], v[1], v[2], v[3]];
    // SAFETY: a write of a local buffer.
    unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
}
