//! The runner files that differ between two `runs/` trees, for `ledger verify`: a merge-walk
//! over the two trees' raw entries in git's order, skipping equal ids without allocating and
//! descending only into subtrees whose ids differ, so a commit costs what it changed plus one
//! pass over the entries of the trees it touched. Reads objects; never writes.

use std::cmp::Ordering;

use gix::ObjectId;
use gix::objs::tree::EntryRef;

use super::{Error, Ledger, git, is_runner_path};

/// A runner file (or a request) that differs between a commit and its parent: (path,
/// before, after).
pub type FileChange = (String, Option<ObjectId>, Option<ObjectId>);

/// What the walk found.
#[derive(Default)]
pub struct Diff {
    pub files: Vec<FileChange>,
    /// A tree whose entries are not in git's order (a hand-made object: git never writes
    /// one); its entries cannot be paired safely, so the commit is reported.
    pub unsorted: Option<String>,
    /// Every file, not only runner files and requests (`branch::merged_tree`).
    pub all: bool,
}

/// Adds to `out` the files under `prefix` that differ between trees `old` and `new`.
pub fn changes(
    ledger: &Ledger,
    prefix: &str,
    old: Option<ObjectId>,
    new: Option<ObjectId>,
    out: &mut Diff,
) -> Result<(), Error> {
    if old == new {
        return Ok(());
    }
    let load = |id: Option<ObjectId>| -> Result<Option<gix::Tree<'_>>, Error> {
        id.map(|id| ledger.repo.find_tree(id).map_err(git)).transpose()
    };
    let (a, b) = (load(old)?, load(new)?);
    between(
        ledger,
        prefix,
        a.as_ref().map(|t| t.data.as_slice()),
        b.as_ref().map(|t| t.data.as_slice()),
        out,
    )
}

/// As `changes`, for two trees' raw data (a caller that holds one already need not read it
/// again).
pub fn between(
    ledger: &Ledger,
    prefix: &str,
    old: Option<&[u8]>,
    new: Option<&[u8]>,
    out: &mut Diff,
) -> Result<(), Error> {
    let kind = ledger.repo.object_hash();
    let mut xs = Entries::new(old, kind);
    let mut ys = Entries::new(new, kind);
    let (mut x, mut y) = (xs.next()?, ys.next()?);
    loop {
        let order = match (&x, &y) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(p), Some(q)) => p.cmp(q),
        };
        match order {
            Ordering::Equal => {
                let (p, q) = (x.expect("some"), y.expect("some"));
                if p.oid != q.oid {
                    differ(ledger, prefix, p.filename, Some(p), Some(q), out)?;
                }
                (x, y) = (xs.next()?, ys.next()?);
            }
            Ordering::Less => {
                let p = x.expect("some");
                differ(ledger, prefix, p.filename, Some(p), None, out)?;
                x = xs.next()?;
            }
            Ordering::Greater => {
                let q = y.expect("some");
                differ(ledger, prefix, q.filename, None, Some(q), out)?;
                y = ys.next()?;
            }
        }
    }
    if (xs.unsorted || ys.unsorted) && out.unsorted.is_none() {
        out.unsorted = Some(prefix.to_string());
    }
    Ok(())
}

/// One entry that differs (same name and kind on both sides, or on one side only).
fn differ(
    ledger: &Ledger,
    prefix: &str,
    name: &gix::bstr::BStr,
    x: Option<EntryRef<'_>>,
    y: Option<EntryRef<'_>>,
    out: &mut Diff,
) -> Result<(), Error> {
    let path = format!("{prefix}/{name}");
    let tree = |e: Option<EntryRef<'_>>| e.filter(|e| e.mode.is_tree()).map(|e| e.oid.to_owned());
    let blob = |e: Option<EntryRef<'_>>| e.filter(|e| !e.mode.is_tree()).map(|e| e.oid.to_owned());
    let (x_tree, y_tree) = (tree(x), tree(y));
    if x_tree.is_some() || y_tree.is_some() {
        return changes(ledger, &path, x_tree, y_tree, out);
    }
    let (x_blob, y_blob) = (blob(x), blob(y));
    let request = matches!(
        crate::layout::classify(&path),
        Some((crate::layout::Area::Runs, _, "request.yaml"))
    );
    if out.all || is_runner_path(&path) || request {
        out.files.push((path, x_blob, y_blob));
    }
    Ok(())
}

/// A tree's entries in order, noting any entry that does not sort after the one before it.
struct Entries<'a> {
    iter: Option<gix::objs::TreeRefIter<'a>>,
    last: Option<EntryRef<'a>>,
    unsorted: bool,
}

impl<'a> Entries<'a> {
    fn new(data: Option<&'a [u8]>, kind: gix::hash::Kind) -> Entries<'a> {
        Entries {
            iter: data.map(|d| gix::objs::TreeRefIter::from_bytes(d, kind)),
            last: None,
            unsorted: false,
        }
    }

    fn next(&mut self) -> Result<Option<EntryRef<'a>>, Error> {
        let Some(e) = self.iter.as_mut().and_then(Iterator::next).transpose().map_err(git)? else {
            return Ok(None);
        };
        if self.last.is_some_and(|l| l.cmp(&e) != Ordering::Less) {
            self.unsorted = true;
        }
        self.last = Some(e);
        Ok(Some(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(names: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            out.extend_from_slice(format!("100644 {name}\0").as_bytes());
            out.extend_from_slice(&[i as u8; 20]);
        }
        out
    }

    fn walk(data: &[u8]) -> (Vec<String>, bool) {
        let mut e = Entries::new(Some(data), gix::hash::Kind::Sha1);
        let mut names = Vec::new();
        while let Some(x) = e.next().unwrap() {
            names.push(x.filename.to_string());
        }
        (names, e.unsorted)
    }

    #[test]
    fn entries_out_of_gits_order_are_noticed() {
        assert_eq!(walk(&tree(&["a", "b"])), (vec!["a".into(), "b".into()], false));
        assert!(walk(&tree(&["b", "a"])).1, "descending");
        assert!(walk(&tree(&["a", "a"])).1, "a name twice");
    }
}
