//! `stella init [DIR]`: scaffold a repository for Stella, and install the `pre-commit` hook
//! that keeps people's commits off runner files. Creates what is missing and never
//! overwrites a file (nor a hook of someone else's), so running it twice changes nothing.

use std::path::Path;

use stella_engine::Code;
use stella_engine::keys::SshKey;

use super::{hook, init_ledger as ledger};
use crate::failure::{Failure, Outcome};
use crate::repo;

const CONFIG: &str = "# Stella repository policy (see docs/). Everything here is optional.\nbranch: main                 # the branch whose commits are executed\nsealed: false                # true: steps get no network\nnetwork: { allow: [] }       # hosts a step may declare in sealed mode\nlimits: { maxRuns: 4, maxSteps: 0, artifactBytes: 10485760, logBytes: 8388608 }   # maxSteps 0 = number of cores; logBytes per step\ncommit: { batchMs: 2000 }    # how often the runner may commit progress of a running run\n";
const APPROVERS: &str = "# Who may approve which gates: grant -> principals (names in .stella/allowed_signers).\ngrants:\n  Packs.Approve: []\n";
const PACKS_README: &str =
    "# packs/\n\nTask packs: one directory per pack, holding `pack.yaml` and the files it uses.\n";
const RUNS_README: &str = "# runs/\n\nRun requests (`runs/_<xx>/<run-id>/request.yaml`, written by people, usually with\n`stella run request`) and each run's ledger (written only by the runner). `<xx>` is the\nfirst two hex digits of the SHA-256 of the run id (`printf %s ID | sha256sum | cut -c1-2`);\na request at `runs/<run-id>/request.yaml` (the older flat layout) still runs there.\n";
const APPROVALS_README: &str = "# approvals/\n\nSigned approvals: `approvals/_<xx>/<run-id>/<gate-id>/<principal>.yaml` and its `.sig`\n(`stella approve` writes them; a run in the flat layout has `approvals/<run-id>/...`).\n";

pub fn init(dir: &Path, key: Option<&Path>, ledger_branch: Option<&str>) -> Result<Outcome, Failure> {
    std::fs::create_dir_all(dir).map_err(|e| Failure::io(dir, e))?;
    let mut created = Vec::new();
    if !dir.join(".git").exists() {
        gix::init(dir).map_err(|e| {
            Failure::one(
                Code::Io,
                format!("cannot create a git repository in {}: {e}", dir.display()),
            )
        })?;
        // The branch the config below names, whatever init.defaultBranch says.
        std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n")
            .map_err(|e| Failure::one(Code::Io, format!("cannot set HEAD: {e}")))?;
        created.push(".git (new repository)".to_string());
    }
    let key_path = repo::key_path(dir, key);
    let runner = if key_path.exists() {
        repo::load_key(dir, key)?
    } else {
        let k = SshKey::generate("stella-runner");
        k.save(&key_path)?;
        created.push(format!("{} (runner key)", key_path.display()));
        k
    };
    let files: [(&str, String); 5] = [
        (".stella/config.yaml", CONFIG.to_string()),
        (".stella/approvers.yaml", APPROVERS.to_string()),
        ("packs/README.md", PACKS_README.to_string()),
        ("runs/README.md", RUNS_README.to_string()),
        ("approvals/README.md", APPROVALS_README.to_string()),
    ];
    for (rel, content) in files {
        let path = dir.join(rel);
        if !path.exists() {
            write_new(&path, &content)?;
            created.push(rel.to_string());
        }
    }
    if let Some(name) = ledger_branch {
        created.extend(ledger::set_up(dir, name)?);
    }
    let signers = dir.join(".stella/allowed_signers");
    let line = format!(
        "runner@stella namespaces=\"git,stella-evidence\" {}\n",
        runner.public_openssh()
    );
    let existing = std::fs::read_to_string(&signers).unwrap_or_default();
    let key_b64 = runner
        .public_openssh()
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    if !existing.contains(&key_b64) {
        let header = if existing.is_empty() {
            "# principal [options] key: who may sign what (OpenSSH allowed_signers format, as git's gpg.ssh.allowedSignersFile)\n"
        } else {
            ""
        };
        let sep = if existing.is_empty() || existing.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        write_replace(&signers, &format!("{existing}{sep}{header}{line}"))?;
        created.push(".stella/allowed_signers (runner key added)".to_string());
    }
    match hook::install(&dir.join(".git")) {
        Ok(hook::Installed::Written(path)) => {
            created.push(format!("{} (refuses commits that change runner files)", path.display()))
        }
        Ok(hook::Installed::Present) => {}
        Ok(hook::Installed::Beside { existing, ours }) => println!(
            "warn: {} already exists and is not Stella's; left as it is. Stella's hook (refuses commits that change runner files) is at {}: call it from yours (`\"$(git rev-parse --git-dir)/hooks/pre-commit.stella\" || exit 1`)",
            existing.display(),
            ours.display()
        ),
        Err(e) => {
            return Err(Failure::one(
                Code::Io,
                format!(
                    "cannot install the pre-commit hook in {}: {e}",
                    dir.join(".git/hooks").display()
                ),
            ));
        }
    }
    if created.is_empty() {
        println!("{} is already set up; nothing changed", dir.display());
    } else {
        for c in &created {
            println!("created {c}");
        }
    }
    println!("runner key: {} ({})", runner.fingerprint(), key_path.display());
    println!("next: git add .stella packs runs approvals && git commit -m \"stella init\"");
    Ok(Outcome::Done)
}

fn write_new(path: &Path, content: &str) -> Result<(), Failure> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Failure::io(parent, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Failure::io(path, e))?;
    std::io::Write::write_all(&mut f, content.as_bytes()).map_err(|e| Failure::io(path, e))
}

/// Replaces a file atomically (temporary file, then rename).
pub fn write_replace(path: &Path, content: &str) -> Result<(), Failure> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Failure::io(parent, e))?;
    }
    let tmp = path.with_extension("stella-tmp");
    std::fs::write(&tmp, content).map_err(|e| Failure::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Failure::io(path, e))
}
