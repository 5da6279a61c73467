//! The log of settled runs, `.git/stella/index/settled.<generation>.log`: one authenticated
//! record per line, only ever appended to (a new generation is written whole only when the
//! index is rebuilt or the log compacted). Each line is `<mac> <previous mac> <record JSON>`,
//! the MAC chaining every record to the one before it, so a reader starting from the end the
//! head pins (length and last MAC) can check any suffix it reads and stop early. Owns the file
//! format; never decides what a run needs.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Facts;
use crate::layout::Layout;

/// What the log holds of one settled run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    pub layout: Layout,
    pub tree: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<String>,
    pub facts: Facts,
}

/// One line of the log: a run settled (`run`), or no longer settled (`run: None`: it left the
/// branch or went back to the head). The latest record of an id is the one that counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Settled>,
    /// The greatest `order` of any settled run recorded up to and including this line: a
    /// reader going backwards stops once nothing earlier can be newer than what it holds.
    pub upto: u64,
}

/// Where the log ends, as the head records it: the generation (the file), its length, the
/// last line's MAC (empty for an empty log), and counts for compaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    pub generation: u64,
    pub len: u64,
    pub last: String,
    /// Lines in the log.
    pub records: u64,
    /// Runs the log holds as settled (the rest of the lines are superseded).
    pub settled: u64,
    /// `upto` of the last line.
    pub upto: u64,
}

/// The log file of a generation.
pub fn path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("settled.{generation}.log"))
}

/// A log not as the head describes it: missing, shorter, edited, forged or of another key.
fn broken(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("the settled-runs log {why}"))
}

/// The log of the index at `dir`, authenticated with `secret`.
pub struct Log<'a> {
    pub dir: &'a Path,
    pub secret: &'a [u8; 32],
}

impl Log<'_> {
    fn mac(&self, prev: &[u8], body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret).expect("HMAC takes a key of any length");
        mac.update(b"stella settled runs log 1\0");
        mac.update(&(prev.len() as u64).to_le_bytes());
        mac.update(prev);
        mac.update(body);
        mac
    }

    /// The lines for `records`, chained after `end`; `end` is moved past them.
    fn lines(&self, end: &mut End, records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            let body = serde_json::to_vec(r).expect("a record is JSON");
            let prev = hex::decode(&end.last).unwrap_or_default();
            let mac = hex::encode(self.mac(&prev, &body).finalize().into_bytes());
            let line = format!("{mac} {} ", if end.last.is_empty() { "-" } else { &end.last });
            let start = out.len();
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(&body);
            out.push(b'\n');
            end.len += (out.len() - start) as u64;
            end.last = mac;
            end.records += 1;
            end.upto = r.upto;
        }
        out
    }

    /// Checks one line against the MAC expected of it; returns its record and the MAC of the
    /// line before it (empty for the first).
    fn check(&self, line: &[u8], expected: &str) -> std::io::Result<(Record, String)> {
        let text = std::str::from_utf8(line).map_err(|_| broken("holds a line that is not text"))?;
        let mut parts = text.splitn(3, ' ');
        let (Some(mac), Some(prev), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(broken("holds a line that is not a record"));
        };
        if mac != expected {
            return Err(broken("does not end where the index says"));
        }
        let prev = if prev == "-" { "" } else { prev };
        let want = hex::decode(mac).map_err(|_| broken("holds a malformed MAC"))?;
        let prev_bytes = hex::decode(prev).map_err(|_| broken("holds a malformed MAC"))?;
        // `verify_slice` compares in constant time.
        self.mac(&prev_bytes, body.as_bytes())
            .verify_slice(&want)
            .map_err(|_| broken("holds a record this runner did not write"))?;
        let record = serde_json::from_str(body).map_err(|_| broken("holds a record that does not parse"))?;
        Ok((record, prev.to_string()))
    }

    /// Writes a new generation holding `records`, and returns its end (a temporary file
    /// renamed into place: the head still names the old generation until it is saved).
    pub fn create(&self, generation: u64, records: &[Record], settled: u64) -> std::io::Result<End> {
        let mut end = End {
            generation,
            settled,
            ..End::default()
        };
        let bytes = self.lines(&mut end, records);
        let file = path(self.dir, generation);
        let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::create_dir_all(self.dir)?;
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &file))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })?;
        Ok(end)
    }

    /// Appends `records` after `end`, which is moved past them. Bytes after `end` (a writer
    /// that died before saving its head) are cut first. A log that does not end as `end` says
    /// is `InvalidData`: the index must then be rebuilt.
    pub fn append(&self, end: &mut End, records: &[Record]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let file = path(self.dir, end.generation);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(end.len == 0)
            .open(&file)?;
        let len = f.metadata()?.len();
        if len < end.len {
            return Err(broken("is shorter than the index says"));
        }
        if end.len > 0 {
            // Only the last line is read: it must be the one the head pins.
            let mut last = None;
            self.back(&f, end, |r| {
                last = Some(r.id.clone());
                false
            })?;
            if last.is_none() {
                return Err(broken("does not end where the index says"));
            }
        }
        if len > end.len {
            f.set_len(end.len)?;
        }
        let mut next = end.clone();
        let bytes = self.lines(&mut next, records);
        f.write_all_at(&bytes, end.len)?;
        f.flush()?;
        *end = next;
        Ok(())
    }

    /// Every record, oldest first, each checked, the last against `end`.
    pub fn all(&self, end: &End) -> std::io::Result<Vec<Record>> {
        if end.len == 0 {
            return Ok(Vec::new());
        }
        let f = std::fs::File::open(path(self.dir, end.generation)).map_err(|_| broken("is missing"))?;
        let mut bytes = vec![0; usize::try_from(end.len).map_err(|_| broken("is too long"))?];
        f.read_exact_at(&mut bytes, 0)
            .map_err(|_| broken("is shorter than the index says"))?;
        let mut out = Vec::new();
        let mut prev = String::new();
        let Some(body) = bytes.strip_suffix(b"\n") else {
            return Err(broken("does not end with a whole line"));
        };
        for line in body.split(|&b| b == b'\n') {
            let mac = std::str::from_utf8(line.get(..64).unwrap_or_default())
                .unwrap_or_default()
                .to_string();
            let (record, before) = self.check(line, &mac)?;
            if before != prev {
                return Err(broken("holds records out of their order"));
            }
            prev = mac;
            out.push(record);
        }
        if prev != end.last {
            return Err(broken("does not end where the index says"));
        }
        Ok(out)
    }

    /// The records from the last backwards, each checked, while `visit` returns true.
    pub fn tail(&self, end: &End, visit: impl FnMut(&Record) -> bool) -> std::io::Result<()> {
        if end.len == 0 {
            return Ok(());
        }
        let f = std::fs::File::open(path(self.dir, end.generation)).map_err(|_| broken("is missing"))?;
        self.back(&f, end, visit)
    }

    fn back(&self, f: &std::fs::File, end: &End, mut visit: impl FnMut(&Record) -> bool) -> std::io::Result<()> {
        if f.metadata()?.len() < end.len {
            return Err(broken("is shorter than the index says"));
        }
        // `buf` holds the bytes from `start` to the start of the lines already visited.
        let (mut buf, mut start, mut chunk) = (Vec::new(), end.len, 16 * 1024u64);
        let mut expected = end.last.clone();
        loop {
            if buf.is_empty() && start == 0 {
                return if expected.is_empty() {
                    Ok(())
                } else {
                    Err(broken("does not start where its records say"))
                };
            }
            let Some(body) = buf.strip_suffix(b"\n") else {
                if buf.is_empty() {
                    self.more(f, &mut buf, &mut start, &mut chunk)?;
                    continue;
                }
                return Err(broken("does not end with a whole line"));
            };
            let line_start = match body.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if start == 0 => 0,
                None => {
                    self.more(f, &mut buf, &mut start, &mut chunk)?;
                    continue;
                }
            };
            let (record, prev) = self.check(&body[line_start..], &expected)?;
            buf.truncate(line_start);
            expected = prev;
            if !visit(&record) {
                return Ok(());
            }
        }
    }

    /// Reads the `chunk` bytes before `start` in front of `buf` (twice as many next time).
    fn more(&self, f: &std::fs::File, buf: &mut Vec<u8>, start: &mut u64, chunk: &mut u64) -> std::io::Result<()> {
        let from = start.saturating_sub(*chunk);
        let mut bytes = vec![0; (*start - from) as usize];
        f.read_exact_at(&mut bytes, from)?;
        bytes.extend_from_slice(buf);
        *buf = bytes;
        *start = from;
        *chunk = chunk.saturating_mul(2);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RunStatus;

    fn record(id: &str, upto: u64) -> Record {
        let facts = Facts {
            status: RunStatus::Succeeded,
            started: None,
            finished: None,
            waiting_gate: None,
            code: None,
            error: None,
            pack: Some("packs/p".into()),
            events: 3,
            journal_ahead: false,
            has_request: true,
            has_cancel: false,
            ignored: Vec::new(),
            gate_expires: None,
            delay_ends: None,
            times: None,
        };
        Record {
            id: id.into(),
            run: Some(Settled {
                layout: Layout::Flat,
                tree: "00".repeat(20),
                approvals: None,
                facts,
            }),
            upto,
        }
    }

    fn ids(records: &[Record]) -> Vec<&str> {
        records.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn records_read_back_whole_or_from_the_end_and_only_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let secret = [7; 32];
        let log = Log {
            dir: dir.path(),
            secret: &secret,
        };
        let mut end = log.create(1, &[record("a", 1), record("b", 2)], 2).unwrap();
        log.append(&mut end, &[record("c", 3)]).unwrap();
        assert_eq!(ids(&log.all(&end).unwrap()), ["a", "b", "c"]);
        let mut back = Vec::new();
        log.tail(&end, |r| {
            back.push(r.id.clone());
            back.len() < 2
        })
        .unwrap();
        assert_eq!(back, ["c", "b"]);
        let mut all = Vec::new();
        log.tail(&end, |r| {
            all.push(r.id.clone());
            true
        })
        .unwrap();
        assert_eq!(all, ["c", "b", "a"]);

        // A writer that died before saving its head: its bytes are cut at the next append.
        let mut stale = end.clone();
        log.append(&mut stale, &[record("d", 4)]).unwrap();
        log.append(&mut end, &[record("e", 5)]).unwrap();
        assert_eq!(ids(&log.all(&end).unwrap()), ["a", "b", "c", "e"]);

        let file = path(dir.path(), 1);
        let good = std::fs::read(&file).unwrap();
        let other = Log {
            dir: dir.path(),
            secret: &[8; 32],
        };
        assert!(other.all(&end).is_err(), "another key");
        let edited = String::from_utf8(good.clone()).unwrap().replace("packs/p", "packs/q");
        std::fs::write(&file, edited).unwrap();
        assert!(log.all(&end).is_err(), "edited");
        assert!(log.tail(&end, |_| true).is_err(), "edited, read from the end");
        std::fs::write(&file, &good[..good.len() - 10]).unwrap();
        assert!(log.tail(&end, |_| true).is_err(), "truncated");
        assert!(log.append(&mut end.clone(), &[record("f", 6)]).is_err(), "truncated");
        let lines: Vec<&[u8]> = good.split_inclusive(|&b| b == b'\n').collect();
        std::fs::write(&file, [lines[1], lines[0], lines[2], lines[3]].concat()).unwrap();
        assert!(log.all(&end).is_err(), "reordered");
        assert!(log.tail(&end, |_| true).is_err(), "reordered, read from the end");
        std::fs::remove_file(&file).unwrap();
        assert!(log.tail(&end, |_| true).is_err(), "deleted");
    }
}
