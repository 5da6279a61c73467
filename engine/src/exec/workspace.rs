//! The run's workspace: the pack's files written there read-only after checking them against
//! the plan, and checked again before every run step. Never runs a step.

use crate::code::Code;
use crate::pack::{PackFiles, sha256_hex};

use super::Runner;
use super::artifacts::StepError;

impl Runner<'_> {
    /// Writes the pack's files into the workspace (read-only), after checking them against the plan.
    pub(super) fn materialise(&self, files: &PackFiles) -> Result<(), StepError> {
        let ws = &self.cfg.workspace;
        let io = |e: std::io::Error| {
            StepError::new(
                Code::StepFailed,
                format!("cannot prepare the workspace {}: {e}", ws.display()),
            )
        };
        std::fs::create_dir_all(ws).map_err(io)?;
        std::fs::create_dir_all(self.cfg.run_dir.join("tmp")).map_err(io)?;
        for f in &self.plan.pack.files {
            let bytes = files
                .get(&f.path)
                .ok_or_else(|| mismatch(&f.path, "is missing from the pack"))?;
            if sha256_hex(bytes) != f.sha256 {
                return Err(mismatch(&f.path, "differs from the planned file"));
            }
            let dest = ws.join(&f.path);
            std::fs::create_dir_all(dest.parent().expect("inside the workspace")).map_err(io)?;
            let _ = std::fs::remove_file(&dest);
            std::fs::write(&dest, bytes).map_err(io)?;
            let mode = if f.executable { 0o555 } else { 0o444 };
            std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(io)?;
        }
        Ok(())
    }

    /// Re-checks the workspace's pack files against the plan before a step runs.
    pub(super) fn verify_pack(&self) -> Result<(), StepError> {
        for f in &self.plan.pack.files {
            let bytes = std::fs::read(self.cfg.workspace.join(&f.path))
                .map_err(|_| mismatch(&f.path, "was removed from the workspace"))?;
            if sha256_hex(&bytes) != f.sha256 {
                return Err(mismatch(&f.path, "was changed in the workspace"));
            }
        }
        Ok(())
    }
}

fn mismatch(path: &str, what: &str) -> StepError {
    StepError::new(
        Code::PackHashMismatch,
        format!("pack file `{path}` {what}; the plan that was approved no longer matches"),
    )
}
