//! The file watch that wakes the daemon: notify on the repository's HEAD, packed-refs and
//! branch refs, forwarded into a channel with `try_send`. Only pokes; never scans or reads.

use std::path::Path;

use notify::Watcher;
use stella_engine::Code;
use tokio::sync::mpsc;

use crate::failure::Failure;

/// Watches the git refs and HEAD; every relevant change pokes the main loop.
pub fn watch(root: &Path, tx: mpsc::Sender<()>) -> Result<notify::RecommendedWatcher, Failure> {
    let git = root.join(".git");
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            // Only changes count: opening or reading files (our own scans do) must not wake us.
            let change = matches!(
                ev.kind,
                notify::EventKind::Create(_)
                    | notify::EventKind::Remove(_)
                    | notify::EventKind::Modify(
                        notify::event::ModifyKind::Data(_)
                            | notify::event::ModifyKind::Name(_)
                            | notify::event::ModifyKind::Any
                    )
                    | notify::EventKind::Access(notify::event::AccessKind::Close(notify::event::AccessMode::Write))
            );
            // Only what can move the branch: HEAD, packed-refs and refs/heads/. Lock files,
            // FETCH_HEAD and the like come and go with every fetch (ours too) and would wake
            // the daemon to fetch again, for ever.
            let relevant = change
                && ev.paths.iter().any(|p| {
                    let s = p.to_string_lossy();
                    !s.ends_with(".lock")
                        && (s.ends_with("/.git/HEAD")
                            || s.ends_with("/.git/packed-refs")
                            || s.contains("/.git/refs/heads/"))
                });
            if relevant {
                let _ = tx.try_send(());
            }
        }
    })
    .map_err(|e| Failure::one(Code::Io, format!("cannot watch {}: {e}", root.display())))?;
    let limit_hint = |e: notify::Error| {
        Failure::one(
            Code::Io,
            format!(
                "cannot watch {}: {e}; if the inotify watch limit is reached, raise fs.inotify.max_user_watches",
                git.display()
            ),
        )
    };
    watcher
        .watch(&git, notify::RecursiveMode::NonRecursive)
        .map_err(limit_hint)?;
    let heads = git.join("refs").join("heads");
    let _ = std::fs::create_dir_all(&heads);
    watcher
        .watch(&heads, notify::RecursiveMode::Recursive)
        .map_err(limit_hint)?;
    Ok(watcher)
}
