//! A pack's files held in memory: read once from a directory (or, later, from a commit's
//! objects), addressed by normalised relative paths, and digested for the plan. Owns the
//! rule that no path a pack names may leave the pack.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::code::Code;
use crate::diag::{Diagnostic, Pos};

/// Bounds on a pack's size; a pull request may add a pack.
#[derive(Debug, Clone, Copy)]
pub struct PackLimits {
    pub max_files: usize,
    pub max_total_bytes: u64,
}

impl Default for PackLimits {
    fn default() -> Self {
        PackLimits {
            max_files: 10_000,
            max_total_bytes: 64 << 20,
        }
    }
}

/// Every file of one pack, by path relative to the pack directory (`/`-separated, sorted).
#[derive(Debug, Clone, Default)]
pub struct PackFiles {
    /// How the pack directory is shown to users, e.g. `packs/hello`.
    pub display_root: String,
    files: BTreeMap<String, PackFile>,
}

#[derive(Debug, Clone)]
struct PackFile {
    bytes: Vec<u8>,
    executable: bool,
}

/// One file's digest, as recorded in the plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileDigest {
    pub path: String,
    pub sha256: String,
    pub executable: bool,
}

impl PackFiles {
    /// Builds a pack from in-memory files (paths are normalised and checked).
    pub fn from_files(
        display_root: &str,
        files: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<PackFiles, Diagnostic> {
        Self::from_entries(display_root, files.into_iter().map(|(p, b)| (p, b, false)))
    }

    /// As `from_files`, with each file's executable bit.
    pub fn from_entries(
        display_root: &str,
        files: impl IntoIterator<Item = (String, Vec<u8>, bool)>,
    ) -> Result<PackFiles, Diagnostic> {
        let mut out = PackFiles {
            display_root: display_root.trim_end_matches('/').to_string(),
            files: BTreeMap::new(),
        };
        for (path, bytes, executable) in files {
            let norm = normalise(&path).ok_or_else(|| {
                Diagnostic::new(
                    Code::PackInvalid,
                    &out.display_path(&path),
                    Pos::UNKNOWN,
                    "",
                    "path leaves the pack directory",
                )
            })?;
            out.files.insert(norm, PackFile { bytes, executable });
        }
        Ok(out)
    }

    /// Reads every file under `dir`. Symlinks and special files are refused: a pack is plain files.
    pub fn read_dir(dir: &Path, display_root: &str, limits: PackLimits) -> Result<PackFiles, Diagnostic> {
        let display_root = display_root.trim_end_matches('/').to_string();
        let fail = |path: &str, msg: String| Diagnostic::new(Code::PackInvalid, path, Pos::UNKNOWN, "", msg);
        if !dir.is_dir() {
            let hint = "a pack is a directory holding pack.yaml";
            return Err(fail(&display_root, "pack directory not found".into()).hint(hint));
        }
        let mut files = BTreeMap::new();
        let mut total = 0u64;
        for entry in walkdir::WalkDir::new(dir).follow_links(false).sort_by_file_name() {
            let entry = entry.map_err(|e| fail(&display_root, format!("cannot read pack directory: {e}")))?;
            let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
            let rel = rel.to_string_lossy().replace('\\', "/");
            let shown = if rel.is_empty() {
                display_root.clone()
            } else {
                format!("{display_root}/{rel}")
            };
            let ft = entry.file_type();
            if ft.is_dir() {
                continue;
            }
            if ft.is_symlink() {
                return Err(fail(&shown, "symlinks are not allowed in packs".into())
                    .hint("copy the file into the pack instead"));
            }
            if !ft.is_file() {
                return Err(fail(&shown, "only regular files are allowed in packs".into()));
            }
            if files.len() >= limits.max_files {
                return Err(fail(
                    &display_root,
                    format!("pack has more than {} files", limits.max_files),
                ));
            }
            let bytes = std::fs::read(entry.path()).map_err(|e| fail(&shown, format!("cannot read: {e}")))?;
            total += bytes.len() as u64;
            if total > limits.max_total_bytes {
                return Err(fail(
                    &display_root,
                    format!("pack is larger than {} bytes", limits.max_total_bytes),
                ));
            }
            let executable = std::os::unix::fs::PermissionsExt::mode(
                &entry
                    .metadata()
                    .map_err(|e| fail(&shown, format!("cannot read: {e}")))?
                    .permissions(),
            ) & 0o111
                != 0;
            files.insert(rel, PackFile { bytes, executable });
        }
        Ok(PackFiles { display_root, files })
    }

    /// The path users see for a file of this pack.
    pub fn display_path(&self, rel: &str) -> String {
        if self.display_root.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.display_root)
        }
    }

    pub fn get(&self, rel: &str) -> Option<&[u8]> {
        normalise(rel)
            .and_then(|p| self.files.get(&p))
            .map(|f| f.bytes.as_slice())
    }

    pub fn contains(&self, rel: &str) -> bool {
        self.get(rel).is_some()
    }

    /// A file as UTF-8 text, or a diagnostic naming it.
    pub fn text(&self, rel: &str) -> Result<&str, Diagnostic> {
        let shown = self.display_path(rel);
        let bytes = self.get(rel).ok_or_else(|| {
            Diagnostic::new(
                Code::PackInvalid,
                &shown,
                Pos::UNKNOWN,
                "",
                "file not found in the pack",
            )
        })?;
        std::str::from_utf8(bytes)
            .map_err(|_| Diagnostic::new(Code::PackInvalid, &shown, Pos::UNKNOWN, "", "file is not valid UTF-8"))
    }

    /// A file parsed as JSON, if it exists and parses.
    pub fn json(&self, rel: &str) -> Option<serde_json::Value> {
        serde_json::from_slice(self.get(rel)?).ok()
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(k, v)| (k.as_str(), v.bytes.as_slice()))
    }

    /// The sha256 of every file, sorted by path (hashed in parallel).
    pub fn digests(&self) -> Vec<FileDigest> {
        let entries: Vec<(&String, &PackFile)> = self.files.iter().collect();
        entries
            .par_iter()
            .map(|(path, f)| FileDigest {
                path: (*path).clone(),
                sha256: sha256_hex(&f.bytes),
                executable: f.executable,
            })
            .collect()
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Normalises a relative path lexically (`./a//b` -> `a/b`). `None` when it is absolute,
/// empty, or climbs out of its root with `..`.
pub fn normalise(path: &str) -> Option<String> {
    if path.starts_with('/') || path.starts_with('\\') || path.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() { None } else { Some(parts.join("/")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_refuses_escapes() {
        assert_eq!(normalise("./schemas//in.json").as_deref(), Some("schemas/in.json"));
        assert_eq!(normalise("a/../b").as_deref(), Some("b"));
        for bad in ["../x", "/etc/passwd", "a/../../x", "", ".", "\\windows"] {
            assert_eq!(normalise(bad), None, "{bad}");
        }
    }

    #[test]
    fn symlinks_in_a_pack_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pack.yaml"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("leak")).unwrap();
        let err = PackFiles::read_dir(dir.path(), "packs/p", PackLimits::default()).unwrap_err();
        assert!(err.message.contains("symlink"));
        assert_eq!(err.file, "packs/p/leak");
    }

    #[test]
    fn digests_are_sorted_by_path() {
        let files = PackFiles::from_files(
            "p",
            [("b".to_string(), b"2".to_vec()), ("a".to_string(), b"1".to_vec())],
        )
        .unwrap();
        let d = files.digests();
        assert_eq!(d.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(d[0].sha256, sha256_hex(b"1"));
    }
}
