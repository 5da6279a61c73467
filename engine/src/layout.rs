//! Where a run's files live in the ledger tree (DESIGN section 2, docs/ledger.md#layout): the
//! sharded layout `runs/_<xx>/<id>/` and `approvals/_<xx>/<id>/`, where `<xx>` is the first two
//! hex digits of the SHA-256 of the run id, and the flat layout `runs/<id>/` of older ledgers,
//! read and run forever. Pure path arithmetic: it never reads git.

use sha2::{Digest, Sha256};

/// The two places a run has: its own directory and its approvals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    Runs,
    Approvals,
}

impl Area {
    pub fn root(self) -> &'static str {
        match self {
            Area::Runs => "runs",
            Area::Approvals => "approvals",
        }
    }
}

/// How a run's directories are laid out: decided by where its request was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `runs/<id>/`: every run a child of one tree that every commit rewrites (before 2026-12).
    Flat,
    /// `runs/_<xx>/<id>/`: 256 shards, so a commit rewrites a tree of about N/256 entries.
    Sharded,
}

/// The shard directory of a run id: `_` and the first two hex digits of SHA-256(id). The `_`
/// keeps it apart from every run id (which cannot start with `_`), so a flat run and a shard
/// never share a name.
pub fn shard(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    format!("_{:02x}", digest[0])
}

/// Whether `name` (one entry under `runs/` or `approvals/`) is a shard directory's name.
pub fn is_shard(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 3 && b[0] == b'_' && b[1..].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// One run's place in the tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunDir {
    pub id: String,
    pub layout: Layout,
}

impl RunDir {
    /// Where a new run goes: the sharded layout.
    pub fn new(id: &str) -> RunDir {
        RunDir {
            id: id.to_string(),
            layout: Layout::Sharded,
        }
    }

    pub fn flat(id: &str) -> RunDir {
        RunDir {
            id: id.to_string(),
            layout: Layout::Flat,
        }
    }

    /// The run's directory in `area`, without a trailing slash: `runs/_3f/<id>` or `runs/<id>`.
    pub fn dir_in(&self, area: Area) -> String {
        match self.layout {
            Layout::Flat => format!("{}/{}", area.root(), self.id),
            Layout::Sharded => format!("{}/{}/{}", area.root(), shard(&self.id), self.id),
        }
    }

    /// `runs/…/<id>`.
    pub fn dir(&self) -> String {
        self.dir_in(Area::Runs)
    }

    /// `approvals/…/<id>`.
    pub fn approvals(&self) -> String {
        self.dir_in(Area::Approvals)
    }

    /// A file of the run: `runs/…/<id>/<rel>`.
    pub fn file(&self, rel: &str) -> String {
        format!("{}/{rel}", self.dir())
    }
}

/// Where a path of the tree lies: in which area, which run, and the rest of the path inside
/// the run's directory (empty for the directory itself). `None` for a path outside `runs/`
/// and `approvals/`, a README, a shard that is not followed by a run id, a run id in a shard
/// it does not hash to, or a name that is no run id.
pub fn classify(path: &str) -> Option<(Area, RunDir, &str)> {
    let (area, rest) = if let Some(rest) = path.strip_prefix("runs/") {
        (Area::Runs, rest)
    } else if let Some(rest) = path.strip_prefix("approvals/") {
        (Area::Approvals, rest)
    } else {
        return None;
    };
    let (first, after) = split_first(rest);
    let (run, layout, inner) = if is_shard(first) {
        let (id, inner) = split_first(after?);
        if shard(id) != first {
            return None;
        }
        (id, Layout::Sharded, inner)
    } else {
        (first, Layout::Flat, after)
    };
    if !crate::run_id::is_valid(run) {
        return None;
    }
    let dir = RunDir {
        id: run.to_string(),
        layout,
    };
    Some((area, dir, inner.unwrap_or("")))
}

fn split_first(path: &str) -> (&str, Option<&str>) {
    match path.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (path, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_never_run_ids() {
        assert_eq!(
            shard("run-000000"),
            format!("_{}", &hex::encode(Sha256::digest(b"run-000000"))[..2])
        );
        assert!(is_shard(&shard("x")));
        assert!(!crate::run_id::is_valid(&shard("x")));
        assert!(!is_shard("_3F") && !is_shard("3f") && !is_shard("_3f0"));
    }

    #[test]
    fn paths_round_trip_through_classify() {
        for dir in [RunDir::new("r1"), RunDir::flat("r1")] {
            let file = dir.file("events/0000000001.ndjson");
            let (area, found, rest) = classify(&file).unwrap();
            assert_eq!((area, &found, rest), (Area::Runs, &dir, "events/0000000001.ndjson"));
            let gate = format!("{}/deploy/alice.yaml", dir.approvals());
            assert_eq!(
                classify(&gate).unwrap(),
                (Area::Approvals, dir.clone(), "deploy/alice.yaml")
            );
            assert_eq!(classify(&dir.dir()).unwrap().2, "");
        }
    }

    #[test]
    fn misplaced_and_foreign_paths_are_no_run() {
        let wrong = if shard("r1") == "_00" { "_01" } else { "_00" };
        assert_eq!(classify(&format!("runs/{wrong}/r1/request.yaml")), None);
        assert_eq!(classify(&format!("runs/{}", shard("r1"))), None);
        assert_eq!(classify("runs/Bad/request.yaml"), None);
        assert_eq!(classify("packs/p/pack.yaml"), None);
        assert_eq!(classify("runs/README.md"), None);
    }
}
