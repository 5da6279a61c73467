//! `as: file` secrets of one step attempt: each written to a 0600 file in a 0700 directory
//! of its own, outside the workspace, named to the step by `STELLA_SECRET_FILE_<NAME>`; the
//! files are overwritten with zeros and removed when the attempt ends, however it ended (the
//! guard's `Drop`). What a crash leaves is removed by the daemon's start-up
//! (`clear_secret_files`). Never logs a value or a file's contents.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::secrets::{Secrets, file_env_name};

/// The files of one attempt; dropping it wipes and removes them.
pub(super) struct SecretFiles {
    dir: PathBuf,
    files: Vec<(String, PathBuf, usize)>,
}

impl SecretFiles {
    /// Writes the `as: file` secrets under `root/<n>`; `None` when the plan has none.
    pub(super) fn write(root: &Path, n: u64, secrets: &Secrets) -> std::io::Result<Option<SecretFiles>> {
        let pairs: Vec<(&str, &str)> = secrets.file_pairs().collect();
        if pairs.is_empty() {
            return Ok(None);
        }
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root)?;
        let dir = root.join(n.to_string());
        // A directory of this name can only be a crashed runner's: it is wiped first.
        if dir.exists() {
            wipe_dir(&dir);
        }
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let mut out = SecretFiles { dir, files: Vec::new() };
        for (name, value) in pairs {
            let path = out.dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            // Pushed before writing: a failed write is still wiped by `Drop`.
            out.files.push((name.to_string(), path, value.len()));
            f.write_all(value.as_bytes())?;
        }
        Ok(Some(out))
    }

    /// `(STELLA_SECRET_FILE_<NAME>, path)` for the step's environment.
    pub(super) fn env(&self) -> impl Iterator<Item = (String, &Path)> {
        self.files.iter().map(|(n, p, _)| (file_env_name(n), p.as_path()))
    }

    /// The directory the sandbox must keep visible.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SecretFiles {
    fn drop(&mut self) {
        for (_, path, len) in &self.files {
            overwrite(path, *len);
            let _ = std::fs::remove_file(path);
        }
        wipe_dir(&self.dir);
    }
}

/// Overwrites the first `len` bytes of `path` with zeros, to the disk.
fn overwrite(path: &Path, len: usize) {
    // The step may have replaced the file with a symlink: never follow one.
    let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return;
    };
    let zeros = vec![0u8; len.min(1 << 20)];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len());
        if f.write_all(&zeros[..n]).is_err() {
            break;
        }
        left -= n;
    }
    let _ = f.sync_data();
}

/// Removes `dir` and what is in it, overwriting regular files first (never following links).
/// Returns how many regular files it wiped.
fn wipe_dir(dir: &Path) -> usize {
    let mut wiped = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => wiped += wipe_dir(&p),
                Ok(t) if t.is_file() => {
                    let len = e.metadata().map_or(0, |m| m.len() as usize);
                    overwrite(&p, len);
                    let _ = std::fs::remove_file(&p);
                    wiped += 1;
                }
                _ => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
    wiped
}

/// Wipes every secret file under `root` (a runner killed during a step leaves them) and
/// removes the directories: the daemon calls it at start, before any run. Returns how many
/// files it wiped.
pub fn clear_secret_files(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| wipe_dir(&e.path()))
        .sum()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn files_are_private_and_gone_after_drop() {
        let root = tempfile::tempdir().unwrap();
        let plan: crate::plan::Plan = serde_json::from_value(serde_json::json!({
            "apiVersion": "stella/v1", "kind": "Plan", "inputs": {}, "approvals": [], "steps": [],
            "pack": { "name": "p", "version": "1", "manifestSha256": "0", "files": [] },
            "secrets": [
                { "name": "token", "required": true, "as": "file" },
                { "name": "plain", "required": true },
            ],
        }))
        .unwrap();
        let given = [
            ("token".to_string(), "s3cret".to_string()),
            ("plain".into(), "p".into()),
        ]
        .into();
        let secrets = Secrets::for_plan(&plan, &given, |_| None).unwrap();
        let files = SecretFiles::write(root.path(), 3, &secrets).unwrap().unwrap();
        let (name, path) = files.env().next().map(|(n, p)| (n, p.to_path_buf())).unwrap();
        assert_eq!(name, "STELLA_SECRET_FILE_TOKEN");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(files.dir()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(files.env().count(), 1, "only `as: file` secrets become files");
        assert!(secrets.env_pairs().all(|(n, _)| n != "STELLA_SECRET_TOKEN"));
        let dir = files.dir().to_path_buf();
        drop(files);
        assert!(!path.exists() && !dir.exists());
    }

    #[test]
    fn a_crash_leftover_is_cleared() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("run-a/7")).unwrap();
        std::fs::write(root.path().join("run-a/7/token"), "s3cret").unwrap();
        std::fs::create_dir_all(root.path().join("run-b")).unwrap();
        assert_eq!(clear_secret_files(root.path()), 1);
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
