//! `stella ledger heal`: one signed runner commit that writes back, for every runner file a
//! person's commit changed or deleted, its content before the first damage (the last version
//! a trusted runner wrote). Never writes anything else, and never writes what it cannot prove.

use std::collections::BTreeMap;

use gix::ObjectId;

use super::checkpoint::{self, Checkpoint};
use super::verify::{self, Damage, Report};
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

/// The daemon's check at start: the ledger verified from the checkpoint when one proves
/// itself (a clean checkpoint leaves no damage open before it), else in whole; the open
/// damages healed; and, when it was clean and nothing needed healing, a new checkpoint.
pub struct Checked {
    pub report: Report,
    /// The checkpoint the verification started after.
    pub since: Option<Checkpoint>,
    /// Why the checkpoint there could not be used (the whole history was verified instead).
    pub refused: Option<checkpoint::Error>,
    pub healing: Option<Healing>,
    /// The checkpoint written at the tip.
    pub recorded: Option<Checkpoint>,
}

/// See `Checked`. A checkpoint that cannot be written is logged, never an error.
pub fn check_and_heal(ledger: &mut Ledger, key: &crate::keys::SshKey) -> Result<Checked, Error> {
    let Some(tip) = ledger.tip()? else {
        return Ok(Checked {
            report: Report::default(),
            since: None,
            refused: None,
            healing: None,
            recorded: None,
        });
    };
    let (report, since, refused) = match checkpoint::verify_since(ledger, tip) {
        Ok(Some((cp, report))) => (report, Some(cp), None),
        Ok(None) => (verify::verify_at(ledger, tip)?, None, None),
        Err(e) => (verify::verify_at(ledger, tip)?, None, Some(e)),
    };
    let open: Vec<Damage> = report
        .damages
        .iter()
        .filter(|d| d.healed_by.is_none())
        .cloned()
        .collect();
    let healing = heal_damages(ledger, key, open)?;
    let recorded = match healing {
        Some(_) => None,
        None => checkpoint::record(ledger, tip, &report, since.as_ref(), key).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot write the ledger checkpoint");
            None
        }),
    };
    Ok(Checked {
        report,
        since,
        refused,
        healing,
        recorded,
    })
}

/// Heals every open damage with one signed runner commit; `None` when there is none.
pub fn heal(ledger: &mut Ledger, signer: &dyn CommitSigner) -> Result<Option<Healing>, Error> {
    let open = open_damages(ledger)?;
    heal_damages(ledger, signer, open)
}

/// One signed runner commit restoring the files of `open`; `None` when it is empty.
fn heal_damages(ledger: &mut Ledger, signer: &dyn CommitSigner, open: Vec<Damage>) -> Result<Option<Healing>, Error> {
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
