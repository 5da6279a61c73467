//! Deciding whether a key may sign: principal and namespace patterns as ssh_config reads
//! them (`*`, `?`, a leading `!`), validity times to the second, and the furthest failure
//! when no line accepts. Never parses a file; `grammar` does.

use std::time::{SystemTime, UNIX_EPOCH};

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};

use super::{AllowedSigners, Entry, Signer, VerifyError};
use crate::sshsig;

impl AllowedSigners {
    /// Checks `armored` (an SSH signature of `msg`) as `ssh-keygen -Y verify -f FILE -I principal
    /// -n namespace` would with `-O verify-time=at`: the signature verifies for `namespace`, and a
    /// line whose principals match `principal` holds the signing key, allows `namespace` and is
    /// valid at `at`. Returns that line.
    pub fn verify(
        &self,
        principal: &str,
        namespace: &str,
        msg: &[u8],
        armored: &str,
        at: SystemTime,
    ) -> Result<&Entry, VerifyError> {
        let key = sshsig::verify(armored, namespace, msg)?;
        self.check_key(principal, namespace, &key, at)
    }

    /// The allowed_signers half of `verify`, for a key whose signature was checked elsewhere.
    pub fn check_key(
        &self,
        principal: &str,
        namespace: &str,
        key: &PublicKey,
        at: SystemTime,
    ) -> Result<&Entry, VerifyError> {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let mut failure: Option<VerifyError> = None;
        for entry in &self.entries {
            if !entry.matches_principal(principal) || !entry.holds(key.key_data()) {
                continue;
            }
            let signer = || {
                Box::new(Signer {
                    file: self.file.clone(),
                    line: entry.line,
                    principal: principal.to_string(),
                    fingerprint: fingerprint.clone(),
                })
            };
            let err = if !entry.allows_namespace(namespace) {
                let allowed = entry.namespaces.as_deref().unwrap_or_default().join(",");
                VerifyError::NamespaceNotAllowed {
                    signer: signer(),
                    namespace: namespace.into(),
                    allowed,
                }
            } else {
                match entry.validity(at) {
                    Validity::Valid => return Ok(entry),
                    Validity::NotYet(valid_after) => VerifyError::NotYetValid {
                        signer: signer(),
                        valid_after,
                    },
                    Validity::Expired(valid_before) => VerifyError::Expired {
                        signer: signer(),
                        valid_before,
                    },
                }
            };
            if failure.as_ref().is_none_or(|f| err.rank() > f.rank()) {
                failure = Some(err);
            }
        }
        Err(failure.unwrap_or_else(|| self.unknown_key(principal, key, fingerprint)))
    }

    fn unknown_key(&self, principal: &str, key: &PublicKey, fingerprint: String) -> VerifyError {
        let mut listed_for: Vec<&str> = Vec::new();
        for entry in self.entries.iter().filter(|e| e.holds(key.key_data())) {
            for p in &entry.principals {
                if !listed_for.contains(&p.as_str()) {
                    listed_for.push(p);
                }
            }
        }
        let note = if !listed_for.is_empty() {
            format!(" (it is listed for {})", listed_for.join(", "))
        } else if !self.entries.iter().any(|e| e.matches_principal(principal)) {
            " (no line lists that principal)".to_string()
        } else {
            String::new()
        };
        VerifyError::UnknownKey {
            file: self.file.clone(),
            principal: principal.to_string(),
            fingerprint,
            note,
        }
    }

    /// The principals `key` may sign as for `namespace` at `at`: for every line that holds the
    /// key, allows the namespace and is valid then, its literal principals, in file order and
    /// without repeats. Each one returned would pass `verify`. Patterns (`*`, `?`) and negations
    /// (`!`) name no one in particular and are left out.
    ///
    /// `ssh-keygen -Y find-principals` (OpenSSH 9.2) differs: it ignores namespaces, stops at the
    /// first matching line, and prints that line's principals as written, patterns included.
    pub fn find_principals(&self, key: &PublicKey, namespace: &str, at: SystemTime) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let lines = self
            .entries
            .iter()
            .filter(|e| e.holds(key.key_data()) && e.allows_namespace(namespace) && e.validity(at) == Validity::Valid);
        for entry in lines {
            for p in &entry.principals {
                let literal = !p.starts_with('!') && !p.contains(['*', '?']);
                if literal && entry.matches_principal(p) && !out.contains(p) {
                    out.push(p.clone());
                }
            }
        }
        out
    }
}

impl Entry {
    /// Whether `principal` matches this line's pattern list: some pattern matches and no
    /// negated one does (`match_pattern_list` in OpenSSH, case-sensitive).
    pub fn matches_principal(&self, principal: &str) -> bool {
        match_pattern_list(principal, &self.principals)
    }

    /// Whether this line allows signatures for `namespace` (no `namespaces=` allows any).
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| match_pattern_list(namespace, list))
    }

    /// Whether this line holds `key` as a plain signing key.
    pub fn holds(&self, key: &KeyData) -> bool {
        !self.cert_authority && self.key.key_data() == key
    }

    pub(super) fn validity(&self, at: SystemTime) -> Validity {
        // ssh-keygen compares whole seconds since the epoch, inclusive at both ends.
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let now = secs(at);
        match (self.valid_after, self.valid_before) {
            (Some(after), _) if now < secs(after) => Validity::NotYet(after),
            (_, Some(before)) if now > secs(before) => Validity::Expired(before),
            _ => Validity::Valid,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Validity {
    Valid,
    NotYet(SystemTime),
    Expired(SystemTime),
}

/// OpenSSH `match_pattern_list`: true when some sub-pattern matches and no negated one does.
pub(super) fn match_pattern_list(s: &str, patterns: &[String]) -> bool {
    let mut positive = false;
    for p in patterns {
        let (negated, p) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p.as_str()),
        };
        if match_pattern(s.as_bytes(), p.as_bytes()) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// OpenSSH `match_pattern`: `*` matches any run of bytes, `?` exactly one.
fn match_pattern(s: &[u8], p: &[u8]) -> bool {
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            si += 1;
            pi += 1;
        } else if let Some((sp, ss)) = star {
            star = Some((sp, ss + 1));
            pi = sp + 1;
            si = ss + 1;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}
