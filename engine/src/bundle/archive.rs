//! A bundle's bytes: written deterministically (envelope first, then `pack/…` sorted; fixed
//! mtimes, owners and modes; gzip without a timestamp), and read back as hostile input: into
//! memory within limits on compressed size, uncompressed size and entries, regular files only,
//! no path that is absolute, escapes or is not in its plain form, no entry twice. Never writes
//! a file.

use std::collections::BTreeMap;
use std::io::Read;

use super::{ENVELOPE, Error, PACK_DIR, PROVENANCE};
use crate::evidence::dsse::Envelope;
use crate::pack::{PackFiles, PackLimits};

/// Bounds on a bundle read from outside.
#[derive(Debug, Clone, Copy)]
pub struct BundleLimits {
    /// The `.stellapack` file itself.
    pub max_compressed: u64,
    /// Every byte the gzip stream inflates to (tar headers included).
    pub max_uncompressed: u64,
    /// Entries of the tar, the envelope included.
    pub max_entries: usize,
}

impl Default for BundleLimits {
    fn default() -> Self {
        let pack = PackLimits::default();
        BundleLimits {
            max_compressed: pack.max_total_bytes,
            // The pack's own limit, plus room for headers and the envelope.
            max_uncompressed: pack.max_total_bytes + (16 << 20),
            max_entries: pack.max_files + 1,
        }
    }
}

/// The bundle of `files` and `envelope`.
pub(super) fn write(files: &PackFiles, envelope: &Envelope) -> Vec<u8> {
    let executable: std::collections::BTreeSet<String> = files
        .digests()
        .into_iter()
        .filter(|d| d.executable)
        .map(|d| d.path)
        .collect();
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let append = |tar: &mut tar::Builder<_>, path: &str, bytes: &[u8], mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, bytes)
            .expect("writing to memory cannot fail");
    };
    let envelope = serde_json::to_vec_pretty(envelope).expect("an envelope is JSON");
    append(&mut tar, ENVELOPE, &envelope, 0o644);
    for (path, bytes) in files.iter().filter(|(p, _)| *p != PROVENANCE) {
        let mode = if executable.contains(path) { 0o755 } else { 0o644 };
        append(&mut tar, &format!("{PACK_DIR}/{path}"), bytes, mode);
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .expect("writing to memory cannot fail")
}

/// A bundle's entries, read within `limits`: the envelope's bytes and the pack's files
/// (path without `pack/`, bytes, executable).
pub struct Entries {
    pub envelope: Vec<u8>,
    pub files: BTreeMap<String, (Vec<u8>, bool)>,
}

/// Reads the bundle file at `path` (shown as `shown`) into memory.
pub fn read_bundle(path: &std::path::Path, shown: &str, limits: BundleLimits) -> Result<(Vec<u8>, Entries), Error> {
    let io = |source| Error::Io {
        path: shown.to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limits.max_compressed + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limits.max_compressed {
        return Err(Error::Refused(
            shown.into(),
            format!("the bundle is larger than {} bytes", limits.max_compressed),
        ));
    }
    let entries = entries(&bytes, shown, limits)?;
    Ok((bytes, entries))
}

/// The entries of a bundle's bytes (as `read_bundle`, for bytes already in memory).
pub fn entries(bytes: &[u8], shown: &str, limits: BundleLimits) -> Result<Entries, Error> {
    let bad = |m: String| Error::Malformed(shown.into(), m);
    let refuse = |m: String| Error::Refused(shown.into(), m);
    let inflated = Bounded {
        inner: flate2::read::GzDecoder::new(bytes),
        left: limits.max_uncompressed,
    };
    let mut archive = tar::Archive::new(inflated);
    let mut envelope = None;
    let mut files = BTreeMap::new();
    let mut count = 0usize;
    let mut declared = 0u64;
    let read_err = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::FileTooLarge {
            refuse(e.to_string())
        } else {
            bad(e.to_string())
        }
    };
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        count += 1;
        if count > limits.max_entries {
            return Err(refuse(format!("more than {} entries", limits.max_entries)));
        }
        let raw = entry.path_bytes().into_owned();
        let path = String::from_utf8(raw).map_err(|_| bad("an entry's path is not UTF-8".into()))?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(refuse(format!("{path}: links are not allowed in a bundle")));
        }
        if !kind.is_file() {
            return Err(refuse(format!("{path}: only regular files are allowed in a bundle")));
        }
        // Only the plain form of a relative path: no `/x`, `../x`, `a/./b`, `a//b`, `a/`.
        if crate::pack::normalise(&path).as_deref() != Some(path.as_str()) || path.contains('\\') {
            return Err(refuse(format!("{path}: the path is absolute, escapes or is not plain")));
        }
        let executable = entry.header().mode().map_err(read_err)? & 0o111 != 0;
        // Refused on what the header declares, before a byte of it is held.
        let size = entry.header().size().map_err(read_err)?;
        declared = declared.saturating_add(size);
        if declared > limits.max_uncompressed {
            return Err(refuse(format!(
                "its files are larger than {} bytes in all",
                limits.max_uncompressed
            )));
        }
        let mut data = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut data).map_err(read_err)?;
        let duplicate = if path == ENVELOPE {
            envelope.replace(data).is_some()
        } else if let Some(rel) = path.strip_prefix(&format!("{PACK_DIR}/")) {
            if rel == PROVENANCE {
                return Err(refuse(format!("{path}: a bundle cannot bring its own provenance")));
            }
            files.insert(rel.to_string(), (data, executable)).is_some()
        } else {
            return Err(refuse(format!("{path}: not {ENVELOPE} and not under {PACK_DIR}/")));
        };
        if duplicate {
            return Err(refuse(format!("{path}: appears twice")));
        }
    }
    let envelope = envelope.ok_or_else(|| bad(format!("it holds no {ENVELOPE}")))?;
    Ok(Entries { envelope, files })
}

/// A reader that fails, rather than ends, past its budget.
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "the bundle inflates past its size limit",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
