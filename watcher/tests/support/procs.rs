//! Processes as the test sees them from outside a step's PID namespace: a marker word to
//! find a step's processes by, waits for them to appear or to be gone, and a directory that
//! steps and the test share. Never kills anything: the handles that start processes do.

use std::path::PathBuf;
use std::time::Duration;

use super::{poll, wait_for};

/// A directory that steps and the test both reach: outside `/tmp` (private to each sandboxed
/// step) and outside the repository and run directories (hidden from steps).
pub fn shared_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("shared-{}", marker()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A word unique to this call, written into a step's command line so the test can find the
/// step's processes from outside their PID namespace (where `$$` means nothing).
pub fn marker() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "stellamark{}x{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// The pids (as the test sees them) of live processes whose command line holds `marker`.
pub fn pids_with(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let zombie = status.lines().any(|l| l.starts_with("State:") && l.contains('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits up to `within` for every process holding `marker` to be gone; false if one lives on.
pub fn all_gone(marker: &str, within: Duration) -> bool {
    poll(within, || pids_with(marker).is_empty())
}

/// Waits up to 20 s for a process holding `marker` to appear; its pid.
pub fn wait_for_process(marker: &str) -> i32 {
    let mut found = None;
    wait_for(&format!("a process {marker}"), Duration::from_secs(20), || {
        found = pids_with(marker).first().copied();
        found.is_some()
    });
    found.expect("found")
}
