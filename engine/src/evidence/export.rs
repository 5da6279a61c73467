//! Deterministic archives: sorted entries, fixed times, owners and modes, gzip without a
//! timestamp, so two exports of the same run are byte-identical.

use std::collections::BTreeMap;

use super::Error;

/// A `.tar.gz` of `files` (paths are repository paths, sorted by the map).
pub fn export_archive(files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<Vec<u8>> {
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, bytes.as_slice())?;
    }
    tar.into_inner()?.finish()
}

/// Reads an archive written by `export_archive` (or anything like it), refusing paths that
/// escape, links, duplicates and oversized content.
pub fn read_archive(bytes: &[u8], max_total: u64) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    use std::io::Read;
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for entry in archive.entries().map_err(Error::NotAnArchive)? {
        let mut entry = entry.map_err(Error::Damaged)?;
        let path = entry.path().map_err(Error::BadPath)?.to_string_lossy().into_owned();
        if !entry.header().entry_type().is_file() {
            return Err(Error::NotAFile(path));
        }
        let norm = crate::pack::normalise(&path).ok_or_else(|| Error::Escapes(path.clone()))?;
        total += entry.header().size().unwrap_or(0);
        if total > max_total {
            return Err(Error::TooLarge(max_total));
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|source| Error::Unreadable {
            path: path.clone(),
            source,
        })?;
        if out.insert(norm, data).is_some() {
            return Err(Error::Twice(path));
        }
    }
    Ok(out)
}
