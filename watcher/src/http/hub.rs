//! The stream follower: one thread that notices every new event of every run and hands it to
//! the streams' subscribers through one bounded broadcast channel. It tails the local journals
//! (`.git/stella/journal/<id>.ndjson`) from where it last read, so a line a step prints reaches
//! a client within milliseconds, and reads the runs whose tree changed when the branch tip
//! moves (events that arrive by git: another runner's, a pull, an import). With `Follow::Notify`
//! file notifications wake it (and a short tick); with `Follow::Poll` only the tick does.
//! Memory is bounded whatever clients do: the channel holds at most `CAPACITY` events and a
//! subscriber that falls behind is dropped, never waited for. Reads only.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gix::ObjectId;
use stella_engine::event::Event;
use tokio::sync::broadcast;

use super::source::Source;

/// Events the channel holds for its slowest subscriber before that one is dropped.
pub const CAPACITY: usize = 4096;
/// The most journal bytes read in one pass (the rest waits for the next pass).
const READ_BYTES: u64 = 4 << 20;
/// How much of a journal's end is read at the start to find its last whole line.
const END_BYTES: u64 = 1 << 20;

/// How the follower learns that something changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// File notifications on the journals and the branch refs, and a safety look every
    /// `NOTIFY_TICK` (the daemon, `stella serve --watch`).
    Notify,
    /// Look every so often (`stella serve` without `--watch`).
    Poll(Duration),
}

/// How often a notified follower still looks at the journals and the branch tip, for what
/// notifications miss.
pub const NOTIFY_TICK: Duration = Duration::from_secs(1);

/// One event of one run, as the follower saw it.
#[derive(Debug)]
pub struct Item {
    pub run: String,
    pub event: Event,
}

/// The broadcast side every stream subscribes to.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Item>>,
    git_dir: PathBuf,
}

impl Hub {
    pub fn new(git_dir: PathBuf) -> Hub {
        Hub {
            tx: broadcast::channel(CAPACITY).0,
            git_dir,
        }
    }

    /// A receiver of every event seen from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Item>> {
        self.tx.subscribe()
    }

    /// Starts the follower: what the journals and the branch hold now is history (streams
    /// replay it), read here, before the caller starts anything that writes; what comes after
    /// is news, followed on a thread of its own (it lives as long as the process).
    pub fn start(&self, source: Arc<Source>, follow: Follow) {
        let mut f = Follower {
            tx: self.tx.clone(),
            dir: stella_engine::journal::dir(&self.git_dir),
            source,
            tails: HashMap::new(),
            last: HashMap::new(),
            tip: None,
        };
        f.tail_journals(true);
        f.branch(true);
        let spawned = std::thread::Builder::new()
            .name("stella-http-follow".into())
            .spawn(move || f.run(follow));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "http: cannot start the stream follower; streams replay but do not follow");
        }
    }
}

/// Where the follower is in one journal file.
struct Tail {
    ino: u64,
    offset: u64,
}

struct Follower {
    tx: broadcast::Sender<Arc<Item>>,
    dir: PathBuf,
    source: Arc<Source>,
    tails: HashMap<String, Tail>,
    /// The last seq handed out per run (so the journal and the ledger never repeat one).
    last: HashMap<String, u64>,
    /// The branch tip the follower last took in.
    tip: Option<ObjectId>,
}

impl Follower {
    fn run(&mut self, follow: Follow) {
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let refs = Arc::new(AtomicBool::new(false));
        let _watcher = match follow {
            Follow::Notify => self.watch(wake, refs.clone()),
            Follow::Poll(_) => None,
        };
        let tick = match follow {
            Follow::Notify => NOTIFY_TICK,
            Follow::Poll(every) => every,
        };
        let mut looked = Instant::now();
        loop {
            match woken.recv_timeout(tick) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(tick),
            }
            self.tail_journals(false);
            // The tip is read when a ref changed, or when a tick passed: a journal's lines wake
            // the follower often, and opening the repository for each would cost.
            if refs.swap(false, Ordering::SeqCst) || looked.elapsed() >= tick {
                looked = Instant::now();
                self.branch(false);
            }
        }
    }

    /// Notifications on the journal directory (before it exists, its parent), the git
    /// directory and its branch refs, forwarded without blocking (one pending wake-up is
    /// enough); a change that can move the branch also sets `refs`.
    fn watch(
        &self,
        wake: std::sync::mpsc::SyncSender<()>,
        refs: Arc<AtomicBool>,
    ) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher as _;
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let moves_branch = ev.is_ok_and(|ev| {
                ev.paths.iter().any(|p| {
                    let s = p.to_string_lossy();
                    !s.ends_with(".lock")
                        && (s.ends_with("/HEAD") || s.ends_with("/packed-refs") || s.contains("/refs/heads/"))
                })
            });
            if moves_branch {
                refs.store(true, Ordering::SeqCst);
            }
            let _ = wake.try_send(());
        })
        .ok()?;
        let git_dir = self
            .dir
            .parent()
            .and_then(|p| p.parent())
            .map(PathBuf::from)
            .unwrap_or_default();
        let stella = git_dir.join("stella");
        let journals = if self.dir.is_dir() { &self.dir } else { &stella };
        for (target, mode) in [
            (journals, notify::RecursiveMode::Recursive),
            (&git_dir, notify::RecursiveMode::NonRecursive),
            (&git_dir.join("refs").join("heads"), notify::RecursiveMode::Recursive),
        ] {
            if let Err(e) = w.watch(target, mode) {
                tracing::warn!(error = %e, dir = %target.display(), "http: cannot watch; streams look every {NOTIFY_TICK:?}");
            }
        }
        Some(w)
    }

    fn send(&mut self, run: &str, event: Event) {
        if self.last.get(run).is_some_and(|l| event.seq <= *l) {
            return;
        }
        self.last.insert(run.to_string(), event.seq);
        // No subscriber is no error: nobody is listening.
        let _ = self.tx.send(Arc::new(Item {
            run: run.to_string(),
            event,
        }));
    }

    /// Reads what each journal gained since the last pass; at the start only notes where each ends.
    fn tail_journals(&mut self, start: bool) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            self.tails.clear();
            return;
        };
        let mut seen = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(run) = name.strip_suffix(".ndjson") else {
                continue;
            };
            if !stella_engine::run_id::is_valid(run) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            seen.push(run.to_string());
            let tail = self.tails.entry(run.to_string()).or_insert(Tail {
                ino: meta.ino(),
                offset: 0,
            });
            if tail.ino != meta.ino() || meta.len() < tail.offset {
                *tail = Tail {
                    ino: meta.ino(),
                    offset: 0,
                };
            }
            if meta.len() == tail.offset {
                continue;
            }
            if start {
                // History: begin after its last whole line, and remember that line's seq.
                let from = meta.len().saturating_sub(END_BYTES);
                let Ok(end) = read_from(&entry.path(), from) else {
                    continue;
                };
                let Some(cut) = end.iter().rposition(|&b| b == b'\n') else {
                    continue;
                };
                tail.offset = from + cut as u64 + 1;
                let line_start = end[..cut].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                if let Ok(e) = serde_json::from_slice::<Event>(&end[line_start..cut]) {
                    self.last.insert(run.to_string(), e.seq);
                }
                continue;
            }
            let Ok(bytes) = read_from(&entry.path(), tail.offset) else {
                continue;
            };
            let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            tail.offset += whole as u64;
            let events =
                stella_engine::event::read_ndjson(&String::from_utf8_lossy(&bytes[..whole])).unwrap_or_default();
            for e in events {
                self.send(run, e);
            }
        }
        self.tails.retain(|run, _| seen.contains(run));
    }

    /// When the branch tip moved: the events of each run whose files changed, past what the
    /// run held at the tip before (seqs count from 0, one an event). The two tips' `runs/`
    /// trees are diffed, so a new tip costs what it changed, not a read of every run.
    fn branch(&mut self, start: bool) {
        let Ok(at) = self.source.at() else { return };
        if at.tip == self.tip {
            return;
        }
        let (Some(tip), false) = (at.tip, start) else {
            self.tip = at.tip;
            return;
        };
        let before = self.tip;
        // A tip that cannot be diffed is tried again at the next pass.
        let changed = match before {
            Some(before) => at.ledger.runs_changed(before, tip),
            None => at
                .ledger
                .run_dirs(tip)
                .map(|d| d.runs.into_iter().map(|(dir, _)| dir).collect()),
        };
        let Ok(changed) = changed else { return };
        self.tip = at.tip;
        for dir in changed {
            let from = before.map_or(0, |b| {
                stella_engine::runs::view(&at.ledger, b, &dir).events().len() as u64
            });
            let view = stella_engine::runs::view(&at.ledger, tip, &dir);
            for e in view.events().iter().filter(|e| e.seq >= from) {
                self.send(&dir.id, e.clone());
            }
        }
    }
}

/// The bytes of `path` after `offset`, at most `READ_BYTES` of them.
fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut out = Vec::new();
    f.take(READ_BYTES).read_to_end(&mut out)?;
    Ok(out)
}
