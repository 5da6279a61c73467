//! The configured secret sources (`secrets.sources` of the trust commit's config) read for
//! one run before any step: SOPS files from the trust commit's tree, Vault servers over the
//! network. A source that cannot be read fails the run (`ERR_SECRET_SOURCE`). Logs which
//! sources answered and how many names each held, never a value.

use std::time::Duration;

use gix::ObjectId;

use super::Environment;
use crate::plan::Plan;
use crate::secrets::sops::{self, Identities};
use crate::secrets::sources::{self, Context, Source, Values};

/// How long connecting to a Vault server may take (a request: twice as long).
pub const VAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The runner's files the trust commit's sources name (Vault token files): the sandbox
/// covers them like the runner key.
pub(super) fn runner_files(env: &Environment, trust: ObjectId) -> Vec<std::path::PathBuf> {
    env.config_at(trust)
        .secret_sources
        .into_iter()
        .filter_map(|s| match s {
            Source::Vault(v) => Some(v.token_file),
            Source::Sops { .. } => None,
        })
        .collect()
}

/// What each configured source holds, in order, with its kind; nothing when the plan
/// declares no secret. `Err`: the message of the first source that failed.
pub(super) fn read(env: &Environment, plan: &Plan, trust: ObjectId) -> Result<Vec<(&'static str, Values)>, String> {
    if plan.secrets.is_empty() {
        return Ok(Vec::new());
    }
    let configured = env.config_at(trust).secret_sources;
    if configured.is_empty() {
        return Ok(Vec::new());
    }
    let ids = if configured.iter().any(|s| matches!(s, Source::Sops { .. })) {
        Identities::for_runner(&env.key).map_err(|e| format!("secret sources: {e}"))?
    } else {
        Identities::default()
    };
    let read_file = |path: &str| -> Result<Vec<u8>, String> {
        match env.ledger().read(trust, path) {
            Ok(Some(b)) if b.len() <= sops::MAX_FILE_BYTES => Ok(b),
            Ok(Some(_)) => Err(format!("{path} is larger than {} bytes", sops::MAX_FILE_BYTES)),
            Ok(None) => Err(format!(
                "{path} is not in the trust commit {} (commit it before the request)",
                &trust.to_hex().to_string()[..12]
            )),
            Err(e) => Err(format!("cannot read {path}: {e}")),
        }
    };
    let cx = Context {
        read_file: &read_file,
        identities: &ids,
        timeout: VAULT_TIMEOUT,
    };
    let mut out = Vec::new();
    for source in &configured {
        let values = sources::read(source, &cx).map_err(|e| e.to_string())?;
        tracing::debug!(source = %source.describe(), names = values.len(), "secret source read");
        out.push((source.kind(), values));
    }
    Ok(out)
}
