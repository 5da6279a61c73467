//! Where a run's events live in the ledger. The format: append-only segments,
//! `<run dir>/events/<seq of the first event, zero-padded to 12 digits>.ndjson`, each written
//! once by one runner commit and never changed; a commit adds one segment holding the events
//! since the last (`<run dir>` is `runs/_<xx>/<id>` or a flat `runs/<id>`, `crate::layout`).
//! Runs recorded before segments have a single `<run dir>/events.ndjson`
//! (rewritten whole by every commit); it is still read, and comes before any segment. The
//! events of a run are that file followed by the segments in seq order, byte for byte the
//! journal's prefix. Owns the names and the reading; never writes.

use gix::ObjectId;

use super::{Error, Ledger, git};
use crate::layout::RunDir;

/// The single events file of runs recorded before segments, relative to the run directory.
pub const LEGACY: &str = "events.ndjson";
/// The directory of segments, relative to the run directory.
pub const SEGMENTS: &str = "events";

/// The file name of the segment whose first event has `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:012}.ndjson")
}

/// The repository path of the segment of `run` starting at `first_seq`.
pub fn segment_path(run: &RunDir, first_seq: u64) -> String {
    run.file(&format!("{SEGMENTS}/{}", segment_name(first_seq)))
}

/// The first seq a segment file name stands for, if it is one written as `segment_name` writes it.
pub fn segment_seq(name: &str) -> Option<u64> {
    let seq: u64 = name.strip_suffix(".ndjson")?.parse().ok()?;
    (segment_name(seq) == name).then_some(seq)
}

/// A run's events from its files (paths relative to the run directory): the legacy file, then
/// the segments in seq order. `None` when the run has no events file at all.
pub fn concat<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Option<Vec<u8>> {
    let mut legacy = None;
    let mut segments = Vec::new();
    for (rel, bytes) in files {
        if rel == LEGACY {
            legacy = Some(bytes);
        } else if let Some(seq) = rel.strip_prefix("events/").and_then(segment_seq) {
            segments.push((seq, bytes));
        }
    }
    if legacy.is_none() && segments.is_empty() {
        return None;
    }
    segments.sort_by_key(|(seq, _)| *seq);
    let mut out = legacy.map(<[u8]>::to_vec).unwrap_or_default();
    for (_, bytes) in segments {
        out.extend_from_slice(bytes);
    }
    Some(out)
}

/// The seq of the first event in NDJSON `bytes`, if its first line is an event.
pub fn first_seq(bytes: &[u8]) -> Option<u64> {
    let line = bytes.split(|&b| b == b'\n').next()?;
    serde_json::from_slice::<crate::event::Event>(line).ok().map(|e| e.seq)
}

/// The seq of the last whole event in NDJSON `bytes`, if any.
pub fn last_seq(bytes: &[u8]) -> Option<u64> {
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let line = text.rsplit(|&b| b == b'\n').next()?;
    serde_json::from_slice::<crate::event::Event>(line).ok().map(|e| e.seq)
}

impl Ledger {
    /// The segments of `run` at `commit`: (first seq, blob), in seq order. Files under
    /// `events/` that are not segments are left out (`ledger verify` reports them).
    pub fn run_segments(&self, commit: ObjectId, run: &RunDir) -> Result<Vec<(u64, ObjectId)>, Error> {
        let root = self.repo.find_commit(commit).map_err(git)?.tree().map_err(git)?;
        let Some(dir) = root
            .lookup_entry_by_path(run.file(SEGMENTS))
            .map_err(git)?
            .filter(|e| e.mode().is_tree())
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in self.repo.find_tree(dir.oid()).map_err(git)?.iter() {
            let entry = entry.map_err(git)?;
            let name = entry.filename().to_string();
            if let (Some(seq), true) = (segment_seq(&name), entry.mode().is_blob()) {
                out.push((seq, entry.oid().to_owned()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The events of `run` at `commit`, as one NDJSON text; `None` when it has none.
    pub fn run_events(&self, commit: ObjectId, run: &RunDir) -> Result<Option<Vec<u8>>, Error> {
        let legacy = self.read(commit, &run.file(LEGACY))?;
        let segments = self.run_segments(commit, run)?;
        if legacy.is_none() && segments.is_empty() {
            return Ok(None);
        }
        let mut out = legacy.unwrap_or_default();
        for (_, id) in segments {
            out.extend_from_slice(&self.repo.find_blob(id).map_err(git)?.data);
        }
        Ok(Some(out))
    }

    /// How many bytes of events `run` has at `commit` (object headers only, no content read).
    pub fn run_events_len(&self, commit: ObjectId, run: &RunDir) -> Result<u64, Error> {
        let root = self.repo.find_commit(commit).map_err(git)?.tree().map_err(git)?;
        let mut ids: Vec<ObjectId> = self.run_segments(commit, run)?.into_iter().map(|(_, id)| id).collect();
        if let Some(e) = root
            .lookup_entry_by_path(run.file(LEGACY))
            .map_err(git)?
            .filter(|e| e.mode().is_blob())
        {
            ids.push(e.oid().to_owned());
        }
        ids.iter()
            .map(|id| self.repo.find_header(*id).map(|h| h.size()).map_err(git))
            .sum()
    }

    /// Whether `run` has any events at `commit` (it was planned there).
    pub fn has_run_events(&self, commit: ObjectId, run: &RunDir) -> Result<bool, Error> {
        Ok(self.read(commit, &run.file(LEGACY))?.is_some() || !self.run_segments(commit, run)?.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_are_zero_padded_and_only_those_count() {
        assert_eq!(segment_name(42), "000000000042.ndjson");
        assert_eq!(segment_seq("000000000042.ndjson"), Some(42));
        assert_eq!(segment_seq("42.ndjson"), None);
        assert_eq!(segment_seq("000000000042.json"), None);
    }

    #[test]
    fn the_legacy_file_comes_first_then_segments_in_seq_order() {
        let files = [
            ("events/000000000010.ndjson", b"c\n".as_slice()),
            ("events/000000000002.ndjson", b"b\n".as_slice()),
            ("events.ndjson", b"a\n".as_slice()),
            ("plan.json", b"{}".as_slice()),
        ];
        assert_eq!(concat(files).unwrap(), b"a\nb\nc\n");
        assert_eq!(concat([("plan.json", b"{}".as_slice())]), None);
    }
}
