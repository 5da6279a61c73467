//! `stella ledger heal`: one signed runner commit that writes back, for every runner file a
//! person's commit changed or deleted, its content before the first damage (the last version
//! a trusted runner wrote). Never writes anything else, and never writes what it cannot prove.

use std::collections::BTreeMap;

use gix::ObjectId;

use super::verify::{self, Damage};
use super::{CommitSigner, Error, FileWrite, Ledger};

/// What one healing commit restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healing {
    pub commit: ObjectId,
    /// The damaging commits it answers (short ids), oldest first.
    pub damaged_by: Vec<String>,
    /// The runner files written back.
    pub paths: Vec<String>,
}

/// The damages not healed yet.
pub fn open_damages(ledger: &Ledger) -> Result<Vec<Damage>, Error> {
    Ok(verify::verify(ledger)?
        .damages
        .into_iter()
        .filter(|d| d.healed_by.is_none())
        .collect())
}

/// Heals every open damage with one signed runner commit; `None` when there is none.
pub fn heal(ledger: &mut Ledger, signer: &dyn CommitSigner) -> Result<Option<Healing>, Error> {
    let open = open_damages(ledger)?;
    if open.is_empty() {
        return Ok(None);
    }
    let mut restore: BTreeMap<String, ObjectId> = BTreeMap::new();
    let mut damaged_by: Vec<String> = Vec::new();
    for d in &open {
        // The first damage of a path holds its content from before any damage.
        restore.entry(d.path.clone()).or_insert(d.restore);
        if !damaged_by.contains(&d.commit) {
            damaged_by.push(d.commit.clone());
        }
    }
    let mut writes = Vec::with_capacity(restore.len());
    for (path, id) in &restore {
        let bytes = ledger.repo.find_blob(*id).map_err(super::git)?.data.clone();
        writes.push(FileWrite {
            path: path.clone(),
            bytes,
        });
    }
    let message = format!(
        "stella: ledger healed ({} runner file{} restored after {})\n\nRestored to the content the runner last wrote:\n{}\n",
        writes.len(),
        if writes.len() == 1 { "" } else { "s" },
        damaged_by.join(", "),
        restore.keys().map(|p| format!("  {p}\n")).collect::<String>()
    );
    let commit = ledger.commit(&writes, &message, signer)?;
    Ok(Some(Healing {
        commit,
        damaged_by,
        paths: restore.into_keys().collect(),
    }))
}
