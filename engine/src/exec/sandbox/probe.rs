//! `stella doctor --check sandbox`: a trivial step started in a sandbox, to learn which kernel
//! feature this host lacks. Runs only the probe's own `/bin/sh`; never a pack's step.

use std::process::Command;

use crate::config::SandboxPolicy;

use super::Sandbox;
use super::feature::{Feature, Unavailable};
use super::status::Outcome;

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
