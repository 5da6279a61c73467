//! What the sandbox needs of the kernel: each `Feature`, named in errors and by `stella doctor
//! --check sandbox` with what an operator can do about it; `Unavailable`, why a step could not
//! be isolated; and the features `STELLA_SANDBOX_SIMULATE_MISSING` makes missing. Never probes
//! the kernel itself.

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

/// Reads `STELLA_SANDBOX_SIMULATE_MISSING` (a runner-side setting for tests and drills): the
/// features to treat as missing, as if the kernel refused them.
pub(super) fn simulated_missing() -> Vec<Feature> {
    let Ok(v) = std::env::var("STELLA_SANDBOX_SIMULATE_MISSING") else {
        return Vec::new();
    };
    Feature::ALL
        .into_iter()
        .filter(|f| v.split(',').any(|w| w.trim() == f.key()))
        .collect()
}
