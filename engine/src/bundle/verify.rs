//! Verifying a bundle's entries: the envelope's signature by the key its payload names, that
//! key's trust for `stella-pack` (when allowed_signers are given), then every file against its
//! signed digest and executable bit, with no file missing and none extra. Nothing here reads
//! the manifest: a pack is only parsed once its bytes are proven.

use std::collections::BTreeSet;
use std::time::SystemTime;

use ssh_key::PublicKey;
use ssh_key::public::KeyData;

use super::archive::Entries;
use super::{Error, NAMESPACE, PAYLOAD_TYPE, Payload};
use crate::allowed_signers::AllowedSigners;
use crate::evidence::dsse::Envelope;
use crate::pack::{PackFiles, sha256_hex};

/// Who signed a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    /// `SHA256:…` of the publisher's key (the envelope's keyid).
    pub fingerprint: String,
    /// The principal allowed_signers lists the key under for `stella-pack`, when trusted.
    pub principal: Option<String>,
}

impl Publisher {
    /// The principal, else the fingerprint.
    pub fn name(&self) -> &str {
        self.principal.as_deref().unwrap_or(&self.fingerprint)
    }
}

/// A bundle whose signature and files verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub payload: Payload,
    pub envelope: Envelope,
    pub publisher: Publisher,
    /// The pack's files, proven against the payload.
    pub files: PackFiles,
    /// sha256 of the `.stellapack` file's bytes.
    pub bundle_sha256: String,
}

/// Verifies a bundle (`bytes`, read into `entries`). With `signers`, the publisher must be
/// trusted for `stella-pack` at `at`; without, it is named by its fingerprint.
pub fn verify_bundle(
    shown: &str,
    bytes: &[u8],
    entries: Entries,
    display_root: &str,
    signers: Option<&AllowedSigners>,
    at: SystemTime,
) -> Result<Verified, Error> {
    let fail = |m: String| Error::Provenance(shown.to_string(), m);
    let envelope: Envelope = serde_json::from_slice(&entries.envelope)
        .map_err(|e| fail(format!("{}: not a DSSE envelope: {e}", super::ENVELOPE)))?;
    let (payload, publisher) = verify_envelope(&envelope, signers, at).map_err(fail)?;
    check_files(
        &payload,
        entries.files.iter().map(|(p, (b, x))| (p.as_str(), b.as_slice(), *x)),
    )
    .map_err(fail)?;
    let files = PackFiles::from_entries(display_root, entries.files.into_iter().map(|(p, (b, x))| (p, b, x)))
        .map_err(|d| Error::Refused(shown.to_string(), d.message))?;
    Ok(Verified {
        payload,
        envelope,
        publisher,
        files,
        bundle_sha256: sha256_hex(bytes),
    })
}

/// The payload of `envelope` and its publisher, once the signature verifies with the key the
/// payload names (and, with `signers`, that key is trusted for `stella-pack` at `at`).
pub fn verify_envelope(
    envelope: &Envelope,
    signers: Option<&AllowedSigners>,
    at: SystemTime,
) -> Result<(Payload, Publisher), String> {
    let (payload, key) = signed_payload(envelope)?;
    let fingerprint = crate::keys::fingerprint_of(&key);
    let principal = match signers {
        None => None,
        Some(signers) => Some(
            trusted_as(signers, &key, at)
                .into_iter()
                .next()
                .ok_or_else(|| untrusted(signers, &fingerprint, &payload.public_key))?,
        ),
    };
    Ok((payload, Publisher { fingerprint, principal }))
}

/// The payload of `envelope` and the key that signed it (the one the payload names).
pub fn signed_payload(envelope: &Envelope) -> Result<(Payload, PublicKey), String> {
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(format!(
            "the envelope's payloadType is `{}`, not `{PAYLOAD_TYPE}`",
            envelope.payload_type
        ));
    }
    let body = envelope.body().map_err(|e| e.to_string())?;
    let payload: Payload =
        serde_json::from_slice(&body).map_err(|e| format!("the payload is not a pack statement: {e}"))?;
    let key = PublicKey::from_openssh(&payload.public_key).map_err(|e| format!("the payload's publicKey: {e}"))?;
    let KeyData::Ed25519(raw) = key.key_data() else {
        return Err("the publisher's key is not Ed25519".into());
    };
    let verifying = ed25519_dalek::VerifyingKey::from_bytes(&raw.0).map_err(|e| format!("the publisher's key: {e}"))?;
    let fingerprint = crate::keys::fingerprint_of(&key);
    envelope
        .verify(&fingerprint, &verifying)
        .map_err(|e| format!("the publisher's signature ({fingerprint}): {e}"))?;
    Ok((payload, key))
}

/// The principals `signers` trust `key` as for `stella-pack` at `at`.
pub fn trusted_as(signers: &AllowedSigners, key: &PublicKey, at: SystemTime) -> Vec<String> {
    signers.find_principals(key, NAMESPACE, at)
}

/// The refusal of a publisher `signers` does not trust, saying how to trust it.
pub fn untrusted(signers: &AllowedSigners, fingerprint: &str, public_key: &str) -> String {
    format!(
        "the publisher's key {fingerprint} is not trusted for namespace {NAMESPACE} by {} (to trust it, add a line `PRINCIPAL namespaces=\"{NAMESPACE}\" {public_key}`)",
        signers.file()
    )
}

/// Every file is listed with its digest and executable bit, and every listed file is there.
pub fn check_files<'a>(
    payload: &Payload,
    files: impl Iterator<Item = (&'a str, &'a [u8], bool)>,
) -> Result<(), String> {
    let executable: BTreeSet<&str> = payload.executable.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    for (path, bytes, x) in files {
        let Some(want) = payload.files.get(path) else {
            return Err(format!("{path} is not listed in the signed payload"));
        };
        if sha256_hex(bytes) != *want {
            return Err(format!("{path} does not match its signed sha256"));
        }
        if x != executable.contains(path) {
            return Err(format!("{path}: its executable bit differs from the signed one"));
        }
        seen.insert(path);
    }
    if let Some(missing) = payload.files.keys().find(|p| !seen.contains(p.as_str())) {
        return Err(format!("{missing} is listed in the signed payload but missing"));
    }
    Ok(())
}
