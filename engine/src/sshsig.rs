//! Verification of armored OpenSSH signatures (`-----BEGIN SSH SIGNATURE-----`, PROTOCOL.sshsig),
//! the kind `ssh-keygen -Y sign` and git's `gpg.format=ssh` write. Owns only "does this signature
//! verify for this namespace and message, and by which key"; whether that key may sign is
//! `allowed_signers`' question, and signing is `keys`'.

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey, SshSig};

use crate::code::Code;

const BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const END: &str = "-----END SSH SIGNATURE-----";

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not an armored SSH signature, or its contents do not decode.
    #[error("malformed ssh signature: {reason}")]
    Malformed { reason: String },
    /// The signature was made for another purpose (another namespace).
    #[error("signature is for namespace `{found}`, expected `{expected}`")]
    WrongNamespace { expected: String, found: String },
    /// The signature does not match the message and the key it names.
    #[error("signature does not match the message (the signed content was changed, or it was signed by another key)")]
    BadSignature,
    /// Made with a key type Stella does not verify.
    #[error("unsupported signature algorithm `{algorithm}`; Stella verifies only ssh-ed25519 signatures")]
    Unsupported { algorithm: String },
}

impl Error {
    pub fn code(&self) -> Code {
        Code::SignatureInvalid
    }
}

/// Verifies an armored SSH signature over `msg` for `namespace` and returns the signer's public
/// key (without a comment). What it proves is only that the holder of that key signed `msg` for
/// `namespace`; check the key against allowed_signers before trusting it.
///
/// Accepts what `ssh-keygen -Y verify` accepts: any base64 line width, sha256 or sha512 message
/// hashes, and (a deliberate leniency) CRLF line endings, which git may introduce on checkout.
pub fn verify(armored: &str, namespace: &str, msg: &[u8]) -> Result<PublicKey, Error> {
    let sig = parse(armored)?;
    let key = sig.public_key().clone();
    if !matches!(key, KeyData::Ed25519(_)) || sig.algorithm() != ssh_key::Algorithm::Ed25519 {
        let algorithm = if matches!(key, KeyData::Ed25519(_)) {
            sig.algorithm()
        } else {
            key.algorithm()
        };
        return Err(Error::Unsupported {
            algorithm: algorithm.as_str().to_string(),
        });
    }
    if sig.namespace() != namespace {
        return Err(Error::WrongNamespace {
            expected: namespace.to_string(),
            found: sig.namespace().to_string(),
        });
    }
    let key = PublicKey::from(key);
    key.verify(namespace, msg, &sig).map_err(|_| Error::BadSignature)?;
    Ok(key)
}

/// Decodes an armored signature without verifying it: its key, namespace and hash are
/// then readable, but nothing about it is proven.
pub fn parse(armored: &str) -> Result<SshSig, Error> {
    let malformed = |reason: &str| Error::Malformed {
        reason: reason.to_string(),
    };
    let body = armored
        .strip_prefix(BEGIN)
        .and_then(|rest| rest.strip_prefix('\n').or_else(|| rest.strip_prefix("\r\n")))
        .ok_or_else(|| malformed("it does not start with `-----BEGIN SSH SIGNATURE-----` on a line of its own"))?;
    let end = body
        .find(END)
        .ok_or_else(|| malformed("it has no `-----END SSH SIGNATURE-----` line"))?;
    if !body[end + END.len()..].trim().is_empty() {
        return Err(malformed("data follows the `-----END SSH SIGNATURE-----` line"));
    }
    let b64: String = body[..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.as_bytes())
        .map_err(|_| malformed("its body is not valid base64"))?;
    // ssh-key reads only 70-column PEM (what ssh-keygen writes); ssh-keygen itself reads any
    // wrapping, so re-wrap the decoded bytes before handing them over.
    let sig = SshSig::from_pem(rewrap(&bytes)).map_err(|e| match e {
        ssh_key::Error::Version { number } => malformed(&format!("unsupported sshsig version {number}")),
        ssh_key::Error::Namespace => malformed("empty namespace"),
        other => malformed(&other.to_string()),
    })?;
    if !matches!(sig.hash_alg(), HashAlg::Sha256 | HashAlg::Sha512) {
        return Err(malformed("unsupported hash algorithm"));
    }
    Ok(sig)
}

fn rewrap(bytes: &[u8]) -> String {
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
    let mut out = String::with_capacity(b64.len() + b64.len() / 70 + BEGIN.len() + END.len() + 3);
    out.push_str(BEGIN);
    out.push('\n');
    for line in b64.as_bytes().chunks(70) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `ssh-keygen -t ed25519 -N '' -C me -f k` and `ssh-keygen -Y sign -f k -n git msg`
    // where msg is "hello\n".
    const SIG: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAg8bfbabaS16p999bHZWDSm3s4XB
izytu3c4b5R5tGrqQAAAADZ2l0AAAAAAAAAAZzaGE1MTIAAABTAAAAC3NzaC1lZDI1NTE5
AAAAQCfr09xDsfQv5rWa/tNsmRqO9qCwMHoHbACYEeji9gStucLZHewnSRWp4vThnN7Zbt
7AdCcG4ZPnN6WUr1U67gk=
-----END SSH SIGNATURE-----
";

    #[test]
    fn verifies_a_signature_made_by_ssh_keygen() {
        let key = verify(SIG, "git", b"hello\n").unwrap();
        assert_eq!(
            key.fingerprint(HashAlg::Sha256).to_string(),
            "SHA256:ZGXb96HQuDlsefW8eXExkGc8eHSStjObE1sJ/CYmCro"
        );
        assert_eq!(
            key.to_openssh().unwrap(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPG322m2kteqfffWx2Vg0pt7OFwYs8rbt3OG+UebRq6k"
        );
    }

    #[test]
    fn any_line_width_and_crlf_are_accepted() {
        let b64: String = SIG.lines().filter(|l| !l.starts_with("-----")).collect();
        let rewrapped = format!(
            "{BEGIN}\r\n{}\r\n{END}\r\n",
            b64.as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join("\r\n")
        );
        verify(&rewrapped, "git", b"hello\n").unwrap();
    }

    #[test]
    fn wrong_namespace_is_named() {
        let err = verify(SIG, "stella-approval", b"hello\n").unwrap_err();
        assert_eq!(
            err,
            Error::WrongNamespace {
                expected: "stella-approval".into(),
                found: "git".into()
            }
        );
    }

    #[test]
    fn changed_message_is_a_bad_signature() {
        assert_eq!(verify(SIG, "git", b"hello!\n").unwrap_err(), Error::BadSignature);
    }

    #[test]
    fn garbage_is_malformed() {
        for text in [
            "",
            "hello",
            "-----BEGIN SSH SIGNATURE-----\nAAAA\n",
            "-----BEGIN SSH SIGNATURE-----\n!!\n-----END SSH SIGNATURE-----\n",
        ] {
            assert!(
                matches!(verify(text, "git", b"x"), Err(Error::Malformed { .. })),
                "{text:?}"
            );
        }
        let truncated = SIG.replace("7AdCcG4ZPnN6WUr1U67gk=", "");
        assert!(matches!(
            verify(&truncated, "git", b"hello\n"),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn data_after_the_end_line_is_refused_but_whitespace_is_not() {
        assert!(parse(&format!("{SIG}\r\n  \n")).is_ok());
        let e = parse(&format!("{SIG}junk\n")).unwrap_err();
        assert!(e.to_string().contains("data follows"), "{e}");
    }

    #[test]
    fn a_flipped_signature_byte_is_a_bad_signature() {
        let b64: String = SIG.lines().filter(|l| !l.starts_with("-----")).collect();
        let mut bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &b64).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes);
        let text = format!("{BEGIN}\n{b64}\n{END}\n");
        assert_eq!(verify(&text, "git", b"hello\n").unwrap_err(), Error::BadSignature);
    }
}
