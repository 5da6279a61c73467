//! Pack bundles (DESIGN section 15): a pack directory and `pack.dsse.json`, a DSSE envelope
//! signed by its publisher, as one deterministic `*.stellapack`; verifying one (hostile input,
//! read into memory within limits, never written while checked); the `.provenance.json` an
//! import leaves beside the pack and the re-check planning makes of it; mirroring a pack from
//! another repository. Decides nothing about whom to trust: callers pass the allowed_signers.

mod archive;
pub mod mirror;

mod payload;
pub mod provenance;
mod verify;

pub use archive::{BundleLimits, Entries, entries as read_entries, read_bundle};
pub use payload::{Payload, Source};
pub use provenance::{Installed, Provenance, check_installed, install};
pub use verify::{Publisher, Verified, verify_bundle};

use crate::code::Code;
use crate::keys::SshKey;
use crate::pack::PackFiles;

/// The DSSE payload type of a pack bundle's envelope.
pub const PAYLOAD_TYPE: &str = "application/vnd.stella.pack+json";
/// The SSH signature namespace a publisher's key must be trusted for in allowed_signers.
pub const NAMESPACE: &str = "stella-pack";
/// The envelope's name inside a bundle.
pub const ENVELOPE: &str = "pack.dsse.json";
/// Where a bundle keeps the pack's files.
pub const PACK_DIR: &str = "pack";
/// The provenance an import writes into `packs/<name>/`.
pub const PROVENANCE: &str = provenance::FILE;

/// Why a bundle cannot be made, read, verified, imported or mirrored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not a pack bundle: {1}")]
    Malformed(String, String),
    #[error("{0}: {1}")]
    Refused(String, String),
    #[error("{0}: provenance does not verify: {1}")]
    Provenance(String, String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Mirror(String),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Io { .. } => Code::Io,
            Error::Malformed(..) | Error::Refused(..) => Code::PackInvalid,
            Error::Provenance(..) => Code::PackProvenance,
            Error::Exists(_) => Code::Usage,
            Error::Mirror(_) => Code::Io,
        }
    }
}

/// A deterministic bundle of `files` (the pack, `.provenance.json` left out), signed by `key`;
/// `source` says where a mirrored pack came from. Two calls with the same arguments give the
/// same bytes.
pub fn bundle(files: &PackFiles, name: &str, version: &str, key: &SshKey, source: Option<Source>) -> Vec<u8> {
    let payload = Payload::of(files, name, version, key, source);
    let envelope = payload.sign(key);
    archive::write(files, &envelope)
}

#[cfg(test)]
mod tests;
