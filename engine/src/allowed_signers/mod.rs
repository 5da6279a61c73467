//! OpenSSH allowed_signers files (`man ssh-keygen`, ALLOWED SIGNERS; git's
//! `gpg.ssh.allowedSignersFile`): parsing them with located diagnostics, and deciding, as
//! `ssh-keygen -Y verify -f FILE -I PRINCIPAL -n NAMESPACE` does, whether a signature comes
//! from a key that PRINCIPAL may use for NAMESPACE at a given time. Plain keys only: lines
//! marked `cert-authority` are parsed but never match, because certificates are not supported.
//!
//! Where this differs from ssh-keygen, it is stricter: ssh-keygen skips a malformed line (and
//! reads a trailing `namespaces=…` after the key as a comment), Stella refuses the whole file.

mod grammar;
mod matching;
mod time;

use std::time::SystemTime;

use ssh_key::PublicKey;

use crate::code::Code;
use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::sshsig;

/// One line of an allowed_signers file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number in the file.
    pub line: u64,
    /// The comma-separated principal patterns, as written (quotes removed): `*` and `?` are
    /// wildcards, a leading `!` negates (ssh_config PATTERNS).
    pub principals: Vec<String>,
    /// `cert-authority`: the key is a certificate authority. Certificates are not supported,
    /// so such a line never matches a signature.
    pub cert_authority: bool,
    /// `namespaces="…"`: the namespace patterns this key may sign for; `None` means any.
    pub namespaces: Option<Vec<String>>,
    /// `valid-after="…"`: the key is not valid before this instant.
    pub valid_after: Option<SystemTime>,
    /// `valid-before="…"`: the key is not valid after this instant.
    pub valid_before: Option<SystemTime>,
    /// The key, with the line's trailing comment as its comment.
    pub key: PublicKey,
}

/// Why a signature is not accepted for a principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature itself does not verify (malformed, another namespace, altered content).
    #[error(transparent)]
    Signature(#[from] sshsig::Error),
    /// No line for the principal holds the signing key.
    #[error("key {fingerprint} is not listed in {file} for principal `{principal}`{note}")]
    UnknownKey {
        file: String,
        principal: String,
        fingerprint: String,
        note: String,
    },
    /// The principal's line for this key does not allow the namespace.
    #[error("{signer} may not sign for namespace `{namespace}` (the line allows namespaces=\"{allowed}\")")]
    NamespaceNotAllowed {
        signer: Box<Signer>,
        namespace: String,
        allowed: String,
    },
    /// The key's valid-before has passed.
    #[error("{signer} expired at {}", humantime::format_rfc3339_seconds(*valid_before))]
    Expired {
        signer: Box<Signer>,
        valid_before: SystemTime,
    },
    /// The key's valid-after has not been reached.
    #[error("{signer} is not valid until {}", humantime::format_rfc3339_seconds(*valid_after))]
    NotYetValid {
        signer: Box<Signer>,
        valid_after: SystemTime,
    },
}

/// The allowed_signers line a refusal is about, and whose key it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub file: String,
    pub line: u64,
    pub principal: String,
    /// `SHA256:…` of the signing key.
    pub fingerprint: String,
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: key {} of `{}`",
            self.file, self.line, self.fingerprint, self.principal
        )
    }
}

impl VerifyError {
    pub fn code(&self) -> Code {
        match self {
            VerifyError::Signature(e) => e.code(),
            VerifyError::UnknownKey { .. } => Code::SignerUnknown,
            VerifyError::NamespaceNotAllowed { .. } => Code::SignerNamespace,
            VerifyError::Expired { .. } | VerifyError::NotYetValid { .. } => Code::SignerExpired,
        }
    }

    /// The allowed_signers line the refusal is about, when one line is to blame.
    pub fn signer(&self) -> Option<&Signer> {
        match self {
            VerifyError::Signature(_) | VerifyError::UnknownKey { .. } => None,
            VerifyError::NamespaceNotAllowed { signer, .. }
            | VerifyError::Expired { signer, .. }
            | VerifyError::NotYetValid { signer, .. } => Some(signer),
        }
    }

    /// How far the lines got before failing; the furthest failure is the one reported.
    fn rank(&self) -> u8 {
        match self {
            VerifyError::Signature(_) | VerifyError::UnknownKey { .. } => 0,
            VerifyError::NamespaceNotAllowed { .. } => 1,
            VerifyError::Expired { .. } | VerifyError::NotYetValid { .. } => 2,
        }
    }
}

/// A parsed allowed_signers file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedSigners {
    file: String,
    entries: Vec<Entry>,
}

impl AllowedSigners {
    /// Parses the text of an allowed_signers file; `file` names it in messages. Every
    /// malformed line is reported (ERR_SIGNERS_INVALID), each with its line and column.
    pub fn parse(file: &str, text: &str) -> Result<AllowedSigners, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let number = i as u64 + 1;
            match grammar::parse_line(number, line) {
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => {}
                Err(bad) => {
                    let column = line.get(..bad.at).map_or(1, |s| s.chars().count() as u64 + 1);
                    let mut d = Diagnostic::new(
                        Code::SignersInvalid,
                        file,
                        Pos::new(number, column),
                        &format!("line {number}"),
                        bad.message,
                    );
                    if let Some(hint) = bad.hint {
                        d = d.hint(hint);
                    }
                    diags.push(d);
                }
            }
        }
        diags.into_result(AllowedSigners {
            file: file.to_string(),
            entries,
        })
    }

    /// The file name given to `parse`.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Every key line, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// One allowed_signers line: `principal namespaces="a,b" ssh-ed25519 AAAA… comment`, with no
    /// `namespaces=` when `namespaces` is empty (any namespace). `principal` must be a literal
    /// name (see `check_principal`); it is quoted if it holds whitespace.
    pub fn line_for(principal: &str, namespaces: &[&str], key: &PublicKey) -> String {
        debug_assert_eq!(check_principal(principal), None, "{principal:?}");
        let mut line = if principal.contains(char::is_whitespace) {
            format!("\"{principal}\"")
        } else {
            principal.to_string()
        };
        if !namespaces.is_empty() {
            line.push_str(&format!(
                " namespaces=\"{}\"",
                namespaces.join(",").replace('"', "\\\"")
            ));
        }
        line.push(' ');
        line.push_str(&key.to_openssh().expect("a public key always encodes"));
        line
    }
}

/// Why `name` cannot be written as a single literal principal, or `None` if it can.
pub fn check_principal(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("a principal cannot be empty")
    } else if name.contains(['"', ',']) {
        Some("a principal cannot contain `\"` or `,`")
    } else if name.starts_with('!') || name.contains(['*', '?']) {
        Some("a principal cannot contain the pattern characters `*`, `?` or a leading `!`")
    } else if name.starts_with('#') || name.contains(['\n', '\r']) {
        Some("a principal cannot contain line breaks or start with `#`")
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
