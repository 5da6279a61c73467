//! `check.packs.provenance`: every imported pack of the working tree (a `packs/<name>/` with
//! `.provenance.json`), its publisher, and whether its provenance still verifies against the
//! allowed_signers committed on HEAD. Only reads.

use std::path::Path;
use std::time::SystemTime;

use stella_engine::bundle;
use stella_engine::pack::{PackFiles, PackLimits};

use super::{Level, Report};

pub(super) fn provenance(r: &mut Report, root: &Path) {
    const ID: &str = "check.packs.provenance";
    let Ok(dirs) = std::fs::read_dir(root.join("packs")) else {
        return;
    };
    let mut names: Vec<String> = dirs
        .filter_map(Result::ok)
        .filter(|e| e.path().join(bundle::PROVENANCE).is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() {
        r.say(ID, Level::Ok, "no imported packs");
        return;
    }
    let signers = match super::super::provenance::signers_at_head(root) {
        Ok(s) => s,
        Err(f) => {
            r.say(
                ID,
                Level::Fail,
                format!(".stella/allowed_signers at HEAD: {}", f.describe()),
            );
            return;
        }
    };
    for name in names {
        let shown = format!("packs/{name}");
        let checked = PackFiles::read_dir(&root.join("packs").join(&name), &shown, PackLimits::default())
            .map_err(|d| d.to_string())
            .and_then(|files| {
                bundle::check_installed(&files, signers.as_ref(), SystemTime::now()).map_err(|e| e.to_string())
            });
        match checked {
            Ok(Some(i)) => {
                let p = &i.provenance;
                let from = p
                    .source
                    .as_ref()
                    .map_or(String::new(), |s| format!(", mirrored from {} {} at {}", s.url, s.reference, s.commit));
                r.say(
                    ID,
                    Level::Ok,
                    format!("{shown}: published by {} ({}){from}; bundle sha256 {}", p.publisher, p.keyid, p.bundle_sha256),
                );
            }
            Ok(None) => {}
            Err(why) => r.say(
                ID,
                Level::Fail,
                format!("{why}; it will not plan: re-import a bundle its publisher signed (stella pack import FILE --replace)"),
            ),
        }
    }
}
