//! `stella init --ledger-branch NAME`: names a separate ledger branch in `.stella/config.yaml`
//! (appended when the file names none; a different one already named is refused) and creates
//! the branch at HEAD when HEAD has a commit. Never rewrites a commit, never moves an existing
//! branch, never touches the working tree beyond the config file.

use std::path::Path;

use stella_engine::Code;
use stella_engine::config::{CONFIG_PATH, Config};

use crate::failure::Failure;

/// Sets the ledger branch up in the repository at `dir`; returns what it created or changed.
pub fn set_up(dir: &Path, name: &str) -> Result<Vec<String>, Failure> {
    let usage = |m: String| Failure::one(Code::Usage, m);
    let line = format!("ledger: {{ branch: {name} }}");
    // The config parser is the judge of a valid branch name.
    Config::parse("--ledger-branch", &line)
        .map_err(|_| usage(format!("--ledger-branch: `{name}` is not a branch name")))?;
    let path = dir.join(CONFIG_PATH);
    let text = std::fs::read_to_string(&path).map_err(|e| Failure::io(&path, e))?;
    let config = Config::parse(CONFIG_PATH, &text)?;
    if name == config.branch {
        return Err(usage(format!(
            "--ledger-branch: `{name}` is the watched branch itself; name another branch (e.g. stella/ledger)"
        )));
    }
    let mut changed = Vec::new();
    match config.ledger_branch.as_deref() {
        Some(b) if b == name => {}
        Some(b) => {
            return Err(usage(format!(
                "{CONFIG_PATH} names ledger branch `{b}` already; edit it by hand to change it (docs/remote.md, moving between modes)"
            )));
        }
        None => {
            let sep = if text.is_empty() || text.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            let new = format!("{text}{sep}{line}   # the runner commits here only; requests come from `branch`\n");
            Config::parse(CONFIG_PATH, &new)?;
            // Atomically (temporary file, then rename): a half-written policy is no policy.
            let tmp = path.with_extension("stella-tmp");
            std::fs::write(&tmp, &new).map_err(|e| Failure::io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| Failure::io(&path, e))?;
            changed.push(format!("{CONFIG_PATH} (ledger branch {name})"));
        }
    }
    let repo = gix::open(dir).map_err(|e| Failure::one(Code::Io, format!("{}: {e}", dir.display())))?;
    let full = format!("refs/heads/{name}");
    let exists = repo
        .try_find_reference(full.as_str())
        .map_err(|e| Failure::one(Code::Io, e.to_string()))?
        .is_some();
    if !exists && let Ok(head) = repo.head_id() {
        repo.reference(
            full.as_str(),
            head.detach(),
            gix::refs::transaction::PreviousValue::MustNotExist,
            "stella init --ledger-branch",
        )
        .map_err(|e| Failure::one(Code::Io, format!("cannot create branch {name}: {e}")))?;
        changed.push(format!("branch {name} (at {})", head.to_hex_with_len(12)));
    }
    Ok(changed)
}
