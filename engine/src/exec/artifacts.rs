//! What a step leaves behind: its `$STELLA_OUTPUT` key=value outputs, its declared output
//! files captured as artifacts (inside the workspace only, size-limited, never holding a
//! secret), and the `builtin:bundle.ingest` staging. Refuses every path that leaves the workspace.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};

use crate::code::Code;
use crate::pack::normalise;
use crate::redact::Redactor;
use crate::state::Artifact;

/// A step failure with its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub code: Code,
    pub message: String,
}

impl StepError {
    pub fn new(code: Code, message: impl Into<String>) -> StepError {
        StepError {
            code,
            message: message.into(),
        }
    }
}

/// Most bytes read from a `$STELLA_OUTPUT` file.
const MAX_OUTPUT_BYTES: u64 = 1 << 20;

/// Reads `key=value` lines; blank lines and `#` comments are skipped, values are redacted.
/// A bad line is named by its number only: the step wrote it, and a part of a secret in it
/// (which the redactor cannot recognise) must not reach an event through the error.
pub fn read_outputs(path: &Path, redactor: &Redactor) -> Result<Map<String, Json>, StepError> {
    let mut out = Map::new();
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(out);
    };
    let mut text = String::new();
    file.take(MAX_OUTPUT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| StepError::new(Code::StepFailed, format!("cannot read $STELLA_OUTPUT: {e}")))?;
    if text.len() as u64 > MAX_OUTPUT_BYTES {
        return Err(StepError::new(Code::StepFailed, "$STELLA_OUTPUT is larger than 1 MiB"));
    }
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(StepError::new(
                Code::StepFailed,
                format!("$STELLA_OUTPUT line {}: expected key=value", i + 1),
            ));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(StepError::new(
                Code::StepFailed,
                format!(
                    "$STELLA_OUTPUT line {}: not a valid output name (letters, digits, `_`, `-` and `.`; the name is not shown, it may hold part of a secret)",
                    i + 1
                ),
            ));
        }
        out.insert(key.to_string(), Json::String(redactor.redact(value)));
    }
    Ok(out)
}

/// Resolves a declared output inside `workspace`, refusing anything that leaves it.
pub fn resolve_in_workspace(workspace: &Path, declared: &str) -> Result<PathBuf, StepError> {
    let escape = || {
        StepError::new(
            Code::ArtifactPath,
            format!("output path `{declared}` leaves the workspace"),
        )
    };
    let norm = normalise(declared).ok_or_else(escape)?;
    let full = workspace.join(&norm);
    let meta = std::fs::symlink_metadata(&full)
        .map_err(|_| StepError::new(Code::ArtifactMissing, format!("the step left no file at `{declared}`")))?;
    let root = workspace
        .canonicalize()
        .map_err(|e| StepError::new(Code::ArtifactPath, format!("workspace: {e}")))?;
    let real = full.canonicalize().map_err(|_| escape())?;
    if !real.starts_with(&root) {
        return Err(escape());
    }
    if meta.file_type().is_symlink() && !real.is_file() {
        return Err(escape());
    }
    if !real.is_file() {
        return Err(StepError::new(
            Code::ArtifactPath,
            format!("output `{declared}` is not a regular file"),
        ));
    }
    Ok(real)
}

/// Copies `src` to `run_dir/artifacts/<step>/<name>` and returns its record.
pub fn store(
    src: &Path,
    run_dir: &Path,
    step: &str,
    name: &str,
    limit: u64,
    redactor: &Redactor,
) -> Result<Artifact, StepError> {
    let size = std::fs::metadata(src)
        .map_err(|e| StepError::new(Code::ArtifactMissing, format!("{name}: {e}")))?
        .len();
    if size > limit {
        return Err(StepError::new(
            Code::ArtifactTooLarge,
            format!("artifact `{name}` is {size} bytes; the limit is {limit}"),
        ));
    }
    let bytes = std::fs::read(src).map_err(|e| StepError::new(Code::ArtifactMissing, format!("{name}: {e}")))?;
    if redactor.found_in(&bytes) {
        return Err(StepError::new(
            Code::ArtifactSecret,
            format!("artifact `{name}` contains a secret value; it was not stored"),
        ));
    }
    let rel = format!("artifacts/{step}/{name}");
    let dest = run_dir.join(&rel);
    let io = |e: std::io::Error| StepError::new(Code::StepFailed, format!("cannot store artifact `{name}`: {e}"));
    std::fs::create_dir_all(dest.parent().expect("has a parent")).map_err(io)?;
    std::fs::write(&dest, &bytes).map_err(io)?;
    Ok(Artifact {
        name: name.into(),
        path: rel,
        sha256: hex::encode(Sha256::digest(&bytes)),
        size,
    })
}

/// `builtin:bundle.ingest`: verifies `path` against `expected`, stages it in the workspace at
/// `artifacts/bundles/<sha256>/<file>` with a metadata.json, and stores both as artifacts.
pub fn ingest_bundle(
    workspace: &Path,
    run_dir: &Path,
    step: &str,
    path: &str,
    expected: &str,
    limit: u64,
    redactor: &Redactor,
) -> Result<Vec<Artifact>, StepError> {
    let expected = expected.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StepError::new(
            Code::BundleChecksumMismatch,
            format!("checksumSha256 `{expected}` is not 64 hexadecimal digits"),
        ));
    }
    let src = if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        workspace.join(path)
    };
    let file_name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n != ".." && n != "metadata.json")
        .ok_or_else(|| StepError::new(Code::BundleNotFound, format!("`{path}` does not name a file")))?;
    let meta =
        std::fs::metadata(&src).map_err(|e| StepError::new(Code::BundleNotFound, format!("bundle `{path}`: {e}")))?;
    if !meta.is_file() {
        return Err(StepError::new(
            Code::BundleNotFound,
            format!("bundle `{path}` is not a regular file"),
        ));
    }
    if meta.len() > limit {
        return Err(StepError::new(
            Code::ArtifactTooLarge,
            format!("bundle `{path}` is {} bytes; the limit is {limit}", meta.len()),
        ));
    }
    let bytes =
        std::fs::read(&src).map_err(|e| StepError::new(Code::BundleNotFound, format!("bundle `{path}`: {e}")))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != expected {
        return Err(StepError::new(
            Code::BundleChecksumMismatch,
            format!("bundle `{path}` has sha256 {actual}, expected {expected}"),
        ));
    }
    let stage = workspace.join("artifacts/bundles").join(&actual);
    let io = |e: std::io::Error| StepError::new(Code::StepFailed, format!("cannot stage bundle: {e}"));
    std::fs::create_dir_all(&stage).map_err(io)?;
    std::fs::write(stage.join(&file_name), &bytes).map_err(io)?;
    let metadata = json!({ "file": file_name, "source": path, "sha256": actual, "size": meta.len(), "ingestedAt": crate::event::now_rfc3339() });
    let metadata_text = serde_json::to_string_pretty(&metadata).expect("JSON") + "\n";
    std::fs::write(stage.join("metadata.json"), metadata_text).map_err(io)?;
    let mut out = Vec::new();
    for name in [file_name.as_str(), "metadata.json"] {
        let a = store(
            &stage.join(name),
            run_dir,
            step,
            &format!("bundles/{actual}/{name}"),
            limit,
            redactor,
        )?;
        out.push(Artifact {
            name: name.to_string(),
            ..a
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_parsed_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        std::fs::write(&p, "a=1\n# note\n\nb=x=y\ntoken=pw-123456\n").unwrap();
        let o = read_outputs(&p, &Redactor::new(["pw-123456"])).unwrap();
        assert_eq!(Json::Object(o), json!({"a": "1", "b": "x=y", "token": "***"}));
    }

    #[test]
    fn a_bad_output_line_is_named_by_its_number_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        let redactor = Redactor::new(["pw-123456"]);
        for line in ["pw-12 leaked=1", "pw-1234 no equals sign", "=pw-1234"] {
            std::fs::write(&p, format!("ok=1\n{line}\n")).unwrap();
            let e = read_outputs(&p, &redactor).unwrap_err();
            assert!(e.message.starts_with("$STELLA_OUTPUT line 2: "), "{}", e.message);
            assert!(!e.message.contains("pw-1"), "{line}: {}", e.message);
        }
    }

    #[test]
    fn escaping_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::write(dir.path().join("outside"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), ws.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), ws.join("dirlink")).unwrap();
        for bad in ["../outside", "/etc/passwd", "link", "dirlink/outside"] {
            let err = resolve_in_workspace(&ws, bad).unwrap_err();
            assert_eq!(err.code, Code::ArtifactPath, "{bad}: {err:?}");
        }
        std::fs::write(ws.join("ok.txt"), "fine").unwrap();
        std::os::unix::fs::symlink("ok.txt", ws.join("inner")).unwrap();
        assert!(resolve_in_workspace(&ws, "ok.txt").is_ok());
        assert!(
            resolve_in_workspace(&ws, "inner").is_ok(),
            "a symlink that stays inside is fine"
        );
        assert_eq!(
            resolve_in_workspace(&ws, "missing").unwrap_err().code,
            Code::ArtifactMissing
        );
    }
}
