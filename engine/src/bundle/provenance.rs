//! `packs/<name>/.provenance.json`: what an import proved (the publisher's principal, the
//! bundle's sha256, the envelope itself), written with the pack in one atomic step; and the
//! re-check planning makes of an imported pack: every file against the signed digests, none
//! added, and the publisher still trusted by the allowed_signers it is given. Never decides
//! which allowed_signers count (the trust commit's, or the working tree's, is the caller's).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::verify::{check_files, signed_payload, trusted_as, untrusted};
use super::{Error, Source, Verified};
use crate::allowed_signers::AllowedSigners;
use crate::evidence::dsse::Envelope;
use crate::pack::PackFiles;

/// The file's name inside the pack directory.
pub const FILE: &str = crate::plan::PROVENANCE_FILE;

/// The content of `.provenance.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provenance {
    /// The principal allowed_signers trusted the publisher's key as, at import.
    pub publisher: String,
    /// `SHA256:…` of the publisher's key.
    pub keyid: String,
    /// sha256 of the `.stellapack` file imported.
    pub bundle_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    pub envelope: Envelope,
}

/// What the re-check of an imported pack proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub provenance: Provenance,
}

/// Whether `name` can be a directory of `packs/`: one plain path component.
pub fn check_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "the pack name `{name}` cannot be a directory name (letters, digits, `-`, `_`, `.`, not leading)"
        ))
    }
}

/// Writes the verified pack to `packs_dir/<name>/` with its provenance: into a temporary
/// directory beside it, then swapped in with one rename, so a reader sees the old pack or the
/// new one, never half. An existing directory holding other files is refused unless `replace`.
pub fn install(packs_dir: &Path, verified: &Verified, replace: bool) -> Result<PathBuf, Error> {
    let name = &verified.payload.name;
    let shown = format!("packs/{name}");
    check_name(name).map_err(|m| Error::Refused(shown.clone(), m))?;
    let publisher = verified
        .publisher
        .principal
        .clone()
        .ok_or_else(|| Error::Provenance(shown.clone(), "the publisher is not trusted; nothing imported".into()))?;
    let target = packs_dir.join(name);
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    if target.symlink_metadata().is_ok() {
        let same = PackFiles::read_dir(&target, &shown, Default::default())
            .ok()
            .is_some_and(|old| {
                let without = |f: &PackFiles| f.digests().into_iter().filter(|d| d.path != FILE).collect::<Vec<_>>();
                without(&old) == without(&verified.files)
            });
        if !same && !replace {
            return Err(Error::Exists(format!(
                "{shown} already holds a different pack; pass --replace to overwrite it"
            )));
        }
    }
    fs::create_dir_all(packs_dir).map_err(io(packs_dir))?;
    let tmp = packs_dir.join(format!(".{name}.import-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    let written = write_tree(&tmp, verified, publisher);
    let swapped = written.and_then(|()| swap_in(&tmp, &target));
    let _ = fs::remove_dir_all(&tmp);
    swapped?;
    Ok(target)
}

fn write_tree(dir: &Path, verified: &Verified, publisher: String) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    for d in verified.files.digests() {
        let path = dir.join(&d.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let bytes = verified.files.get(&d.path).unwrap_or_default();
        fs::write(&path, bytes).map_err(io(&path))?;
        let mode = if d.executable { 0o755 } else { 0o644 };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io(&path))?;
    }
    let provenance = Provenance {
        publisher,
        keyid: verified.publisher.fingerprint.clone(),
        bundle_sha256: verified.bundle_sha256.clone(),
        source: verified.payload.source.clone(),
        envelope: verified.envelope.clone(),
    };
    let path = dir.join(FILE);
    let mut text = serde_json::to_vec_pretty(&provenance).expect("provenance is JSON");
    text.push(b'\n');
    fs::write(&path, text).map_err(io(&path))?;
    for entry in walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok) {
        let _ = fs::File::open(entry.path()).and_then(|f| f.sync_all());
    }
    Ok(())
}

/// Moves `tmp` to `target`: a plain rename when there is none, else an atomic exchange, the
/// old pack left at `tmp` for the caller to remove.
fn swap_in(tmp: &Path, target: &Path) -> Result<(), Error> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    let fail = |e: nix::Error| Error::Io {
        path: target.display().to_string(),
        source: std::io::Error::from(e),
    };
    if target.symlink_metadata().is_ok() {
        renameat2(AT_FDCWD, tmp, AT_FDCWD, target, RenameFlags::RENAME_EXCHANGE).map_err(fail)?;
    } else {
        renameat2(AT_FDCWD, tmp, AT_FDCWD, target, RenameFlags::RENAME_NOREPLACE).map_err(fail)?;
    }
    if let Some(parent) = target.parent() {
        let _ = fs::File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Re-checks an imported pack: `None` when it has no provenance; else its provenance, once
/// the envelope verifies, its publisher is still trusted by `signers` at `at`, and the pack's
/// files are exactly the signed ones. `signers` is `None` when there is no allowed_signers.
pub fn check_installed(
    files: &PackFiles,
    signers: Option<&AllowedSigners>,
    at: SystemTime,
) -> Result<Option<Installed>, Error> {
    let Some(text) = files.get(FILE) else {
        return Ok(None);
    };
    let shown = files.display_path(FILE);
    let fail = |m: String| Error::Provenance(shown.clone(), m);
    let provenance: Provenance =
        serde_json::from_slice(text).map_err(|e| fail(format!("not a provenance file: {e}")))?;
    let (payload, key) = signed_payload(&provenance.envelope).map_err(fail)?;
    let fingerprint = crate::keys::fingerprint_of(&key);
    if provenance.keyid != fingerprint {
        return Err(fail(format!(
            "keyid {} is not the signing key {fingerprint}",
            provenance.keyid
        )));
    }
    if provenance.source != payload.source {
        return Err(fail("its source differs from the signed one".into()));
    }
    let signers =
        signers.ok_or_else(|| fail("there is no .stella/allowed_signers to trust its publisher with".into()))?;
    if !trusted_as(signers, &key, at).contains(&provenance.publisher) {
        return Err(fail(format!(
            "publisher `{}` is no longer trusted: {}",
            provenance.publisher,
            untrusted(signers, &fingerprint, &payload.public_key)
        )));
    }
    let digests = files.digests();
    let others = digests
        .iter()
        .filter(|d| d.path != FILE)
        .map(|d| (d.path.as_str(), files.get(&d.path).unwrap_or_default(), d.executable));
    check_files(&payload, others).map_err(|m| fail(format!("{m} (the pack changed after import)")))?;
    Ok(Some(Installed { provenance }))
}
