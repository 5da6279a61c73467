//! Finding the runs on the branch at a tip, with the local index: the scan brings the index
//! from the tip it describes to the new one by diffing the `runs/` and `approvals/` trees
//! (descending only into the shards and run directories whose ids changed) and reading only
//! the runs that changed or whose journal moved; runs settled in the index's log are never
//! touched. Without a usable index it reads every run from git and writes a new one. Reads
//! git and the journals' metadata; writes only the index.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use gix::ObjectId;

mod select;

use super::index::log::{Record, Settled};
use super::index::{self, Facts, Head, Index, JournalMark, Live};
use super::{Invalid, Summary};
use crate::layout::{self, Area, RunDir};
use crate::ledger::{Error, Ledger};
use select::{everything, latest, live, newest, newest_first};

/// Which runs a scan returns. Every scan brings the index up to date whatever it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The runs not settled (requested, under way, waiting, finished with events to commit,
    /// with stray files) and the invalid ones, by id: what the daemon acts on. Reads no
    /// settled run.
    Active,
    /// Every run, by id.
    All,
    /// The `n` newest runs, newest first (`Facts::order`, then the id, both descending).
    /// Reads the settled runs' log from its end, only as far back as it must.
    Newest(usize),
}

/// What `scan` found: the runs selected, the entries under `runs/` that are not runs or not
/// run files (reported, then ignored), and how many runs had to be read from git.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub runs: Vec<Summary>,
    pub ignored: Vec<String>,
    pub read: usize,
}

/// A directory of a tree: name → (is a tree, object id).
type Listing = BTreeMap<String, (bool, ObjectId)>;

fn listing(ledger: &Ledger, commit: ObjectId, path: &str) -> Result<Listing, Error> {
    Ok(ledger
        .entries(commit, path)?
        .into_iter()
        .map(|(name, is_tree, id)| (name, (is_tree, id)))
        .collect())
}

fn tree(e: Option<&(bool, ObjectId)>) -> Option<ObjectId> {
    e.filter(|(is_tree, _)| *is_tree).map(|(_, id)| *id)
}

/// The entries of two listings that differ: (name, before, after).
type Differ = Vec<(String, Option<(bool, ObjectId)>, Option<(bool, ObjectId)>)>;

fn differ(old: &Listing, new: &Listing) -> Differ {
    let mut out: Differ = old
        .iter()
        .filter(|(name, e)| new.get(*name) != Some(e))
        .map(|(name, e)| (name.clone(), Some(*e), new.get(name).copied()))
        .collect();
    out.extend(
        new.iter()
            .filter(|(name, _)| !old.contains_key(*name))
            .map(|(name, e)| (name.clone(), None, Some(*e))),
    );
    out
}

/// The directory that holds a run's directory in `area` (`runs`, or its shard `runs/_3f`).
fn parent(dir: &RunDir, area: Area) -> String {
    let path = dir.dir_in(area);
    path.rsplit_once('/').map_or(path.clone(), |(p, _)| p.to_string())
}

/// Whether a changed run directory was a tree before, in each layout (`None`: that one did
/// not change, so it was as it is now).
#[derive(Default)]
struct Was {
    flat: Option<bool>,
    sharded: Option<bool>,
}

/// One scan's work at `tip`.
struct Scan<'a> {
    ledger: &'a Ledger,
    tip: ObjectId,
    read: usize,
    /// Listings at the tip, each read once.
    at_tip: HashMap<String, Listing>,
    /// Runs read in this scan that cannot be read as runs: the head keeps no facts of them.
    invalid: HashMap<String, (Facts, Invalid)>,
    /// `upto` of the last record appended (or to be).
    upto: u64,
}

/// Every run directory on the branch at `tip`, with its journal, as summaries (see `Select`).
/// Runs the index knows unchanged are not read; the others are read from git and recorded. A
/// run directory that cannot be read is a summary with `invalid` set; only the trees
/// themselves failing to read is an error.
pub fn scan(ledger: &Ledger, tip: ObjectId, index: &mut Index, select: Select) -> Result<Scanned, Error> {
    let mut s = Scan {
        ledger,
        tip,
        read: 0,
        at_tip: HashMap::new(),
        invalid: HashMap::new(),
        upto: 0,
    };
    let _held = index.hold();
    if let Some(mut head) = index.take_head() {
        match s.incremental(index, &mut head, select) {
            Ok(runs) => {
                index.save(head.clone());
                return Ok(s.finish(&head, runs));
            }
            Err(why) => tracing::debug!(why = %why, "the runs index cannot be used; rebuilt from git"),
        }
        s.invalid.clear();
    }
    let (mut head, mut settled) = s.rebuild()?;
    settled.sort_by_key(|(id, r)| (r.facts.order(), id.clone()));
    if let Some(log) = index.log() {
        let mut upto = 0;
        let records: Vec<Record> = settled
            .iter()
            .map(|(id, r)| {
                upto = upto.max(r.facts.order());
                Record {
                    id: id.clone(),
                    run: Some(r.clone()),
                    upto,
                }
            })
            .collect();
        match log.create(generation(), &records, records.len() as u64) {
            Ok(end) => {
                head.log = end;
                index.save(head.clone());
            }
            Err(e) => tracing::warn!(error = %e, "cannot write the runs index; the next scan reads git again"),
        }
    }
    let runs = match select {
        Select::Active => live(&head, &s.invalid),
        Select::All => everything(&head, &s.invalid, settled),
        Select::Newest(n) => {
            let mut runs = everything(&head, &s.invalid, settled);
            newest_first(&mut runs);
            runs.truncate(n);
            runs
        }
    };
    Ok(s.finish(&head, runs))
}

/// A name for a new log generation: the time in ns, mixed with the process id.
fn generation() -> u64 {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    ns ^ (u64::from(std::process::id()) << 48)
}

impl Scan<'_> {
    fn at(&mut self, path: &str) -> Result<&Listing, Error> {
        if !self.at_tip.contains_key(path) {
            let l = listing(self.ledger, self.tip, path)?;
            self.at_tip.insert(path.to_string(), l);
        }
        Ok(&self.at_tip[path])
    }

    /// Reads one run from git (its events for state only) and its journal.
    fn read_run(&mut self, dir: &RunDir) -> (Facts, Option<Invalid>, JournalMark) {
        // Marked before the read: a journal that grows meanwhile is read again next time.
        let mark = index::journal_mark(self.ledger.git_dir(), &dir.id);
        self.read += 1;
        let v = super::view_with(self.ledger, self.tip, dir, true);
        (Facts::of(&v), v.invalid, mark)
    }

    /// The run directories of `id` at the tip, flat and sharded.
    fn places(&mut self, id: &str) -> Result<(Option<ObjectId>, Option<ObjectId>), Error> {
        let flat = tree(self.at(&parent(&RunDir::flat(id), Area::Runs))?.get(id));
        let sharded = tree(self.at(&parent(&RunDir::new(id), Area::Runs))?.get(id));
        Ok((flat, sharded))
    }

    fn approvals(&mut self, dir: &RunDir) -> Result<Option<ObjectId>, Error> {
        Ok(tree(self.at(&parent(dir, Area::Approvals))?.get(&dir.id)))
    }

    /// Everything at the tip, from git: the head and the settled runs.
    fn rebuild(&mut self) -> Result<(Head, Vec<(String, Settled)>), Error> {
        let mut head = Head {
            tip: self.tip.to_string(),
            ..Head::default()
        };
        let (mut flat, mut sharded) = (BTreeMap::new(), BTreeMap::new());
        let top = self.at("runs")?.clone();
        for (name, (is_tree, id)) in &top {
            let path = format!("runs/{name}");
            if layout::is_shard(name) && *is_tree {
                for (child, (is_tree, id)) in self.at(&path)?.clone() {
                    if is_tree && crate::run_id::is_valid(&child) && layout::shard(&child) == *name {
                        sharded.insert(child, id);
                    } else {
                        head.ignored.insert(format!("{path}/{child}"));
                    }
                }
            } else if *is_tree && crate::run_id::is_valid(name) {
                flat.insert(name.clone(), *id);
            } else if name != "README.md" || *is_tree {
                head.ignored.insert(path);
            }
        }
        let mut runs: BTreeMap<String, (RunDir, ObjectId)> = BTreeMap::new();
        for (id, tree) in sharded {
            let dir = RunDir::new(&id);
            if flat.contains_key(&id) {
                head.ignored.insert(dir.dir());
            } else {
                runs.insert(id, (dir, tree));
            }
        }
        for (id, tree) in flat {
            runs.insert(id.clone(), (RunDir::flat(&id), tree));
        }
        let mut settled = Vec::new();
        for (id, (dir, tree)) in runs {
            let approvals = self.approvals(&dir)?;
            let (facts, invalid, journal) = self.read_run(&dir);
            match invalid {
                None if facts.settled() => settled.push((
                    id,
                    Settled {
                        layout: dir.layout,
                        tree: tree.to_string(),
                        approvals: approvals.map(|a| a.to_string()),
                        facts,
                    },
                )),
                invalid => self.keep_live(&mut head, &dir, tree, approvals, (facts, invalid, journal)),
            }
        }
        Ok((head, settled))
    }

    /// Brings `head` to the tip and the log with it, then selects. An error (the index's tip
    /// gone from the repository, a log that is not as the head says) means: rebuild.
    fn incremental(&mut self, index: &Index, head: &mut Head, select: Select) -> Result<Vec<Summary>, String> {
        let log = index.log().ok_or("no index")?;
        let t0 = ObjectId::from_hex(head.tip.as_bytes()).map_err(|e| e.to_string())?;
        self.upto = head.log.upto;
        let mut appends = Vec::new();
        self.advance(t0, head, &mut appends).map_err(|e| e.to_string())?;
        log.append(&mut head.log, &appends).map_err(|e| e.to_string())?;
        let (records, settled) = (head.log.records, head.log.settled);
        if records >= 1024 && records > 2 * settled {
            let all = log.all(&head.log).map_err(|e| e.to_string())?;
            let settled = latest(all, head);
            let records = {
                let mut sorted: Vec<&(String, Settled)> = settled.iter().collect();
                sorted.sort_by_key(|(id, r)| (r.facts.order(), id.clone()));
                let mut upto = 0;
                sorted
                    .into_iter()
                    .map(|(id, r)| {
                        upto = upto.max(r.facts.order());
                        Record {
                            id: id.clone(),
                            run: Some(r.clone()),
                            upto,
                        }
                    })
                    .collect::<Vec<_>>()
            };
            head.log = log
                .create(generation(), &records, records.len() as u64)
                .map_err(|e| e.to_string())?;
            tracing::debug!(
                records = head.log.records,
                settled = head.log.settled,
                "the settled runs log compacted"
            );
        }
        Ok(match select {
            Select::Active => live(head, &self.invalid),
            Select::All => {
                let all = log.all(&head.log).map_err(|e| e.to_string())?;
                everything(head, &self.invalid, latest(all, head))
            }
            Select::Newest(n) => newest(&log, head, &self.invalid, n).map_err(|e| e.to_string())?,
        })
    }

    /// Moves `head` from its tip to this scan's, noting in `appends` what the log must add.
    fn advance(&mut self, t0: ObjectId, head: &mut Head, appends: &mut Vec<Record>) -> Result<(), Error> {
        let mut changed: BTreeMap<String, Was> = BTreeMap::new();
        if t0 != self.tip {
            let before = listing(self.ledger, t0, "")?;
            let now = self.at("")?.clone();
            for area in [Area::Runs, Area::Approvals] {
                if before.get(area.root()) != now.get(area.root()) {
                    self.walk(area, t0, &mut changed, &mut head.ignored)?;
                }
            }
        }
        // Runs the head holds whose journal moved, or that cannot be read: read again, where
        // they are (their directories did not change).
        let git_dir = self.ledger.git_dir().to_path_buf();
        let again: Vec<String> = head
            .live
            .iter()
            .filter(|(id, l)| {
                !changed.contains_key(*id) && (l.facts.is_none() || index::journal_mark(&git_dir, id) != l.journal)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let oid = |s: &str| ObjectId::from_hex(s.as_bytes()).ok();
        for id in again {
            let l = head.live.get(&id).expect("listed just now");
            let approvals = match l.approvals.as_deref() {
                None => Some(None),
                Some(a) => oid(a).map(Some),
            };
            let (Some(tree), Some(approvals)) = (oid(&l.tree), approvals) else {
                // Not as this runner writes it: found again from git.
                changed.insert(id, Was::default());
                continue;
            };
            let dir = RunDir {
                id: id.clone(),
                layout: l.layout,
            };
            head.live.remove(&id);
            let read = self.read_run(&dir);
            self.place(head, appends, dir, tree, approvals, read, false);
        }
        for (id, was) in changed {
            let prior = head.live.remove(&id);
            let (flat, sharded) = self.places(&id)?;
            let duplicate = RunDir::new(&id).dir();
            head.ignored.remove(&duplicate);
            if flat.is_some() && sharded.is_some() {
                head.ignored.insert(duplicate);
            }
            // Every run at the head's tip is in the head or settled in the log.
            let existed = was.flat.unwrap_or(flat.is_some()) || was.sharded.unwrap_or(sharded.is_some());
            let in_log = prior.is_none() && existed;
            let place = match (flat, sharded) {
                (Some(t), _) => Some((RunDir::flat(&id), t)),
                (None, Some(t)) => Some((RunDir::new(&id), t)),
                (None, None) => None,
            };
            let Some((dir, tree)) = place else {
                if in_log {
                    self.leave_log(head, appends, &id);
                }
                continue;
            };
            let approvals = self.approvals(&dir)?;
            let journal = index::journal_mark(self.ledger.git_dir(), &id);
            let same = prior
                .filter(|l| {
                    l.layout == dir.layout
                        && ObjectId::from_hex(l.tree.as_bytes()).ok() == Some(tree)
                        && l.journal == journal
                })
                .and_then(|l| l.facts);
            let read = match same {
                // Only its approvals changed.
                Some(facts) => (facts, None, journal),
                None => self.read_run(&dir),
            };
            self.place(head, appends, dir, tree, approvals, read, in_log);
        }
        head.tip = self.tip.to_string();
        Ok(())
    }

    /// Notes what changed under `area` between `t0` and the tip: the runs whose directories
    /// changed, and (under `runs/`) the entries that are no run.
    fn walk(
        &mut self,
        area: Area,
        t0: ObjectId,
        changed: &mut BTreeMap<String, Was>,
        ignored: &mut BTreeSet<String>,
    ) -> Result<(), Error> {
        let root = area.root();
        let runs = area == Area::Runs;
        let before = listing(self.ledger, t0, root)?;
        let diffs = differ(&before, self.at(root)?);
        for (name, old, new) in diffs {
            let path = format!("{root}/{name}");
            if layout::is_shard(&name) {
                let old_children = match tree(old.as_ref()) {
                    Some(_) => listing(self.ledger, t0, &path)?,
                    None => Listing::new(),
                };
                let new_children = match tree(new.as_ref()) {
                    Some(_) => self.at(&path)?.clone(),
                    None => Listing::new(),
                };
                for (child, o, n) in differ(&old_children, &new_children) {
                    let child_path = format!("{path}/{child}");
                    let is_run = crate::run_id::is_valid(&child) && layout::shard(&child) == name;
                    if is_run && (tree(o.as_ref()).is_some() || tree(n.as_ref()).is_some()) {
                        let was = changed.entry(child.clone()).or_default();
                        if runs {
                            was.sharded = Some(tree(o.as_ref()).is_some());
                        }
                    }
                    if runs {
                        ignored.remove(&child_path);
                        if n.is_some() && !(is_run && tree(n.as_ref()).is_some()) {
                            ignored.insert(child_path);
                        }
                    }
                }
                if runs {
                    ignored.remove(&path);
                    if new.is_some() && tree(new.as_ref()).is_none() {
                        ignored.insert(path);
                    }
                }
                continue;
            }
            let is_run = crate::run_id::is_valid(&name);
            if is_run && (tree(old.as_ref()).is_some() || tree(new.as_ref()).is_some()) {
                let was = changed.entry(name.clone()).or_default();
                if runs {
                    was.flat = Some(tree(old.as_ref()).is_some());
                }
            }
            if runs {
                ignored.remove(&path);
                let readme = name == "README.md" && matches!(new, Some((false, _)));
                if new.is_some() && !(is_run && tree(new.as_ref()).is_some()) && !readme {
                    ignored.insert(path);
                }
            }
        }
        Ok(())
    }

    /// A run the log holds as settled is no longer: a record says so.
    fn leave_log(&mut self, head: &mut Head, appends: &mut Vec<Record>, id: &str) {
        head.log.settled = head.log.settled.saturating_sub(1);
        appends.push(Record {
            id: id.to_string(),
            run: None,
            upto: self.upto,
        });
    }

    /// Records what was read of a run: in the log when it is settled, else in the head.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        head: &mut Head,
        appends: &mut Vec<Record>,
        dir: RunDir,
        tree: ObjectId,
        approvals: Option<ObjectId>,
        (facts, invalid, journal): (Facts, Option<Invalid>, JournalMark),
        in_log: bool,
    ) {
        let id = dir.id.clone();
        if invalid.is_none() && facts.settled() {
            if !in_log {
                head.log.settled += 1;
            }
            self.upto = self.upto.max(facts.order());
            appends.push(Record {
                id,
                run: Some(Settled {
                    layout: dir.layout,
                    tree: tree.to_string(),
                    approvals: approvals.map(|a| a.to_string()),
                    facts,
                }),
                upto: self.upto,
            });
            return;
        }
        if in_log {
            self.leave_log(head, appends, &id);
        }
        self.keep_live(head, &dir, tree, approvals, (facts, invalid, journal));
    }

    /// Keeps a run that is not settled in the head (and notes why it is invalid, if it is).
    fn keep_live(
        &mut self,
        head: &mut Head,
        dir: &RunDir,
        tree: ObjectId,
        approvals: Option<ObjectId>,
        (facts, invalid, journal): (Facts, Option<Invalid>, JournalMark),
    ) {
        let live = Live {
            layout: dir.layout,
            tree: tree.to_string(),
            approvals: approvals.map(|a| a.to_string()),
            journal,
            facts: invalid.is_none().then(|| facts.clone()),
        };
        if let Some(why) = invalid {
            self.invalid.insert(dir.id.clone(), (facts, why));
        }
        head.live.insert(dir.id.clone(), live);
    }

    fn finish(&self, head: &Head, runs: Vec<Summary>) -> Scanned {
        let mut ignored: BTreeSet<String> = head.ignored.clone();
        for l in head.live.values() {
            ignored.extend(l.facts.iter().flat_map(|f| f.ignored.iter().cloned()));
        }
        for (facts, _) in self.invalid.values() {
            ignored.extend(facts.ignored.iter().cloned());
        }
        tracing::debug!(
            runs = runs.len(),
            live = head.live.len(),
            read = self.read,
            "runs scanned"
        );
        Scanned {
            runs,
            ignored: ignored.into_iter().collect(),
            read: self.read,
        }
    }
}
