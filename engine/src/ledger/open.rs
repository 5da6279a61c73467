//! Opening a repository the way every part of the engine reads git (identity fallbacks for
//! reflogs, the object and delta-base caches), and the runner key as the signer of runner
//! commits. Reads and signs nothing by itself.

use std::path::Path;

use super::CommitSigner;

/// Opens a repository so that reflog entries never fail for want of a git identity: a runner
/// machine often has no `user.name`, and the commits carry the runner's own identity anyway.
pub fn open_repo(dir: &Path) -> gix::Result<gix::Repository> {
    let opts = gix::open::Options::default().config_overrides([
        "gitoxide.committer.nameFallback=stella runner",
        "gitoxide.committer.emailFallback=runner@stella.invalid",
        // Reading history walks trees stored as chains of deltas (up to 50 after a repack):
        // a 4 MiB cache of delta bases makes `ledger verify` a third faster at 10,000 runs.
        "core.deltaBaseCacheLimit=4194304",
    ]);
    let mut repo = gix::open_opts(dir, opts)?;
    // Readers fetch many files from one commit: every path lookup walks the same trees
    // (`runs/` alone is a tree of every run), so keep decoded objects instead of inflating
    // them again for each file.
    repo.object_cache_size_if_unset(32 << 20);
    Ok(repo)
}

impl CommitSigner for crate::keys::SshKey {
    fn sign_commit(&self, payload: &[u8]) -> String {
        self.sign("git", payload)
    }

    fn secret_forms(&self) -> Vec<String> {
        crate::keys::SshKey::secret_forms(self)
    }
}
