//! Landlock for `strict` steps: the ABI this kernel offers, the ruleset made in the runner
//! (the system read-only, the workspace, `$STELLA_OUTPUT` and the listed write paths
//! read-write, the listed read paths read-only), and the raw rule init adds for `/proc` and
//! `/tmp` once they are mounted. Never restricts the runner itself.

use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;

use super::feature::{Feature, Unavailable, simulated_missing};

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

/// A strict step's ruleset, made in the runner, and the access init grants `/proc` and `/tmp`.
pub(super) struct Landlock {
    pub(super) ruleset: OwnedFd,
    pub(super) proc_access: u64,
    pub(super) tmp_access: u64,
}

/// The Landlock ruleset of a strict step, made in the runner: the system read-only, the
/// workspace, output file and listed write paths read-write, the listed read paths read-only.
/// `/proc` and `/tmp` are added by init once they are mounted.
pub(super) fn ruleset(
    workspace: &Path,
    output: &Path,
    read: &[String],
    write: &[String],
) -> Result<Landlock, Unavailable> {
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

/// Adds a path-beneath rule for `path` to a Landlock ruleset (raw system calls).
pub(super) fn add_rule(ruleset: RawFd, path: &std::ffi::CStr, access: u64) -> libc::c_int {
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
