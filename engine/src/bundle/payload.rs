//! The signed statement of a bundle: `{name, version, files: {path: sha256}}`, the paths that
//! are executable, the publisher's public key (so a bundle verifies on its own; trust is the
//! allowed_signers' to give) and, for a mirrored pack, its `source`. Canonical JSON (RFC 8785),
//! so the same pack and key always sign the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::PAYLOAD_TYPE;
use crate::evidence::dsse::{self, Envelope};
use crate::keys::SshKey;
use crate::pack::PackFiles;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Payload {
    pub name: String,
    pub version: String,
    /// Every file of the pack (bundle paths under `pack/`, without the prefix): its sha256.
    pub files: BTreeMap<String, String>,
    /// The files whose executable bit is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executable: Vec<String>,
    /// The publisher's key, one OpenSSH line (`ssh-ed25519 AAAA…`, no comment).
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// Where a mirrored pack was taken from: the repository, the ref asked for and the commit it
/// resolved to (a tag's commit, not the tag object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub url: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub commit: String,
    /// The pack's directory in that repository, e.g. `packs/hello`.
    pub path: String,
}

impl Payload {
    /// The payload of `files` signed by `key`.
    pub fn of(files: &PackFiles, name: &str, version: &str, key: &SshKey, source: Option<Source>) -> Payload {
        let digests: Vec<_> = files
            .digests()
            .into_iter()
            .filter(|d| d.path != super::PROVENANCE)
            .collect();
        let mut public = key.public_key();
        public.set_comment("");
        Payload {
            name: name.to_string(),
            version: version.to_string(),
            files: digests.iter().map(|d| (d.path.clone(), d.sha256.clone())).collect(),
            executable: digests
                .iter()
                .filter(|d| d.executable)
                .map(|d| d.path.clone())
                .collect(),
            public_key: public.to_openssh().expect("a public key always encodes"),
            source,
        }
    }

    /// The DSSE envelope over the canonical payload, keyid the key's SHA256 fingerprint.
    pub fn sign(&self, key: &SshKey) -> Envelope {
        let body = crate::canonical::to_string(self).into_bytes();
        dsse::sign(PAYLOAD_TYPE, &body, &key.signing_key(), &key.fingerprint())
    }
}
