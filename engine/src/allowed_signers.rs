//! OpenSSH allowed_signers files (`man ssh-keygen`, ALLOWED SIGNERS; git's
//! `gpg.ssh.allowedSignersFile`): parsing them with located diagnostics, and deciding, as
//! `ssh-keygen -Y verify -f FILE -I PRINCIPAL -n NAMESPACE` does, whether a signature comes
//! from a key that PRINCIPAL may use for NAMESPACE at a given time. Plain keys only: lines
//! marked `cert-authority` are parsed but never match, because certificates are not supported.
//!
//! Where this differs from ssh-keygen, it is stricter: ssh-keygen skips a malformed line (and
//! reads a trailing `namespaces=…` after the key as a comment), Stella refuses the whole file.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};

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
            match parse_line(number, line) {
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

    fn validity(&self, at: SystemTime) -> Validity {
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
enum Validity {
    Valid,
    NotYet(SystemTime),
    Expired(SystemTime),
}

/// OpenSSH `match_pattern_list`: true when some sub-pattern matches and no negated one does.
fn match_pattern_list(s: &str, patterns: &[String]) -> bool {
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

/// A malformed line: what is wrong, and the byte offset in the line where it is.
struct Bad {
    at: usize,
    message: String,
    hint: Option<String>,
}

fn bad(at: usize, message: impl Into<String>) -> Bad {
    Bad {
        at,
        message: message.into(),
        hint: None,
    }
}

impl Bad {
    fn hint(mut self, hint: impl Into<String>) -> Bad {
        self.hint = Some(hint.into());
        self
    }
}

const OPTIONS_HINT: &str = "a line is `principals [options] keytype base64-key [comment]`; options are cert-authority, \
     namespaces=\"…\", valid-after=\"…\" and valid-before=\"…\"";

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r')
}

fn skip_space(line: &str, mut i: usize) -> usize {
    while i < line.len() && is_space(line.as_bytes()[i]) {
        i += 1;
    }
    i
}

/// The end of the whitespace-delimited word starting at `i`.
fn word_end(line: &str, mut i: usize) -> usize {
    while i < line.len() && !is_space(line.as_bytes()[i]) {
        i += 1;
    }
    i
}

fn parse_line(number: u64, line: &str) -> Result<Option<Entry>, Bad> {
    let start = skip_space(line, 0);
    if start == line.len() || line[start..].starts_with('#') {
        return Ok(None);
    }
    let (principals, after) = read_principals(line, start)?;
    if principals.is_empty() {
        return Err(bad(start, "empty principals").hint(OPTIONS_HINT));
    }
    let mut i = skip_space(line, after);
    if i == line.len() {
        return Err(bad(i, "missing key after the principals").hint(OPTIONS_HINT));
    }
    let mut options = Options::default();
    if !is_key_type(&line[i..word_end(line, i)]) {
        i = parse_options(line, i, &mut options)?;
        i = skip_space(line, i);
        if i == line.len() {
            return Err(bad(i, "missing key after the options").hint(OPTIONS_HINT));
        }
    }
    let key = parse_key(line, i)?;
    Ok(Some(Entry {
        line: number,
        principals: principals.split(',').map(str::to_string).collect(),
        cert_authority: options.cert_authority,
        namespaces: options.namespaces.map(|n| n.split(',').map(str::to_string).collect()),
        valid_after: options.valid_after,
        valid_before: options.valid_before,
        key,
    }))
}

/// The principals field as OpenSSH's `strdelimw` reads it: up to whitespace, where a `"` starts
/// a quoted part that may hold whitespace. Returns the field without quotes and where it ends.
fn read_principals(line: &str, start: usize) -> Result<(String, usize), Bad> {
    let bytes = line.as_bytes();
    let mut i = start;
    while i < bytes.len() && !is_space(bytes[i]) && bytes[i] != b'"' {
        i += 1;
    }
    let mut field = line[start..i].to_string();
    if i < bytes.len() && bytes[i] == b'"' {
        let close = line[i + 1..]
            .find('"')
            .ok_or_else(|| bad(i, "unterminated quote in the principals"))?;
        field.push_str(&line[i + 1..i + 1 + close]);
        i += close + 2;
    }
    Ok((field, i))
}

fn is_key_type(word: &str) -> bool {
    !word.contains(['=', '"', ',']) && ssh_key::Algorithm::new(word).is_ok()
}

#[derive(Default)]
struct Options {
    cert_authority: bool,
    namespaces: Option<String>,
    valid_after: Option<SystemTime>,
    valid_before: Option<SystemTime>,
    /// Where `valid-before` was written, for the message when it is not after valid-after.
    valid_before_at: usize,
}

/// Reads comma-separated options at `i` as OpenSSH's `sshsigopt_parse` does (names are
/// case-insensitive, values must be double-quoted), up to the first unquoted whitespace.
fn parse_options(line: &str, mut i: usize, opts: &mut Options) -> Result<usize, Bad> {
    let starts = |i: usize, name: &str| {
        line.get(i..i + name.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(name))
    };
    loop {
        let at = i;
        if starts(i, "cert-authority") {
            if opts.cert_authority {
                return Err(bad(at, "`cert-authority` given twice"));
            }
            opts.cert_authority = true;
            i += "cert-authority".len();
        } else if let Some(name) = ["namespaces", "valid-after", "valid-before"]
            .into_iter()
            .find(|n| starts(i, &format!("{n}=")))
        {
            i += name.len() + 1;
            let (value, end) = dequote(line, i, name)?;
            i = end;
            match name {
                "namespaces" => {
                    if opts.namespaces.replace(value).is_some() {
                        return Err(bad(at, "`namespaces` given twice"));
                    }
                }
                _ => {
                    let t = parse_time(&value).map_err(|reason| {
                        bad(at + name.len() + 1, format!("invalid {name} time `{value}`: {reason}"))
                            .hint("write YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, with a Z suffix for UTC")
                    })?;
                    let slot = if name == "valid-after" {
                        &mut opts.valid_after
                    } else {
                        &mut opts.valid_before
                    };
                    if slot.replace(t).is_some() {
                        return Err(bad(at, format!("`{name}` given twice")));
                    }
                    if name == "valid-before" {
                        opts.valid_before_at = at;
                    }
                }
            }
        } else {
            let end = line[i..].find([',', '=', ' ', '\t']).map_or(line.len(), |e| i + e);
            let word = &line[i..end];
            let message = if ssh_key::Algorithm::new(word).is_ok() || word.is_empty() {
                format!("unknown option `{word}`")
            } else {
                format!("unknown option or key type `{word}`")
            };
            return Err(bad(at, message).hint(OPTIONS_HINT));
        }
        match line.as_bytes().get(i) {
            None | Some(b' ' | b'\t' | b'\r') => break,
            Some(b',') => {
                i += 1;
                if i == line.len() || is_space(line.as_bytes()[i]) {
                    return Err(bad(i - 1, "option list ends with a comma"));
                }
            }
            Some(_) => {
                let end = word_end(line, i);
                return Err(bad(i, format!("unexpected `{}` after an option", &line[i..end]))
                    .hint("separate options with commas and no spaces"));
            }
        }
    }
    if let (Some(after), Some(before)) = (opts.valid_after, opts.valid_before)
        && before <= after
    {
        return Err(bad(opts.valid_before_at, "valid-before is not later than valid-after"));
    }
    Ok(i)
}

/// A `"…"` option value at `i` (`\"` stands for a quote), and where it ends.
fn dequote(line: &str, i: usize, name: &str) -> Result<(String, usize), Bad> {
    let bytes = line.as_bytes();
    if bytes.get(i) != Some(&b'"') {
        let end = line[i..].find([',', ' ', '\t']).map_or(line.len(), |e| i + e);
        return Err(bad(i, format!("the value of `{name}` must be in double quotes"))
            .hint(format!("write {name}=\"{}\"", &line[i..end])));
    }
    let mut value = String::new();
    let mut j = i + 1;
    while j < bytes.len() && bytes[j] != b'"' {
        if bytes[j] == b'\\' && bytes.get(j + 1) == Some(&b'"') {
            j += 1;
        }
        let c = line[j..].chars().next().unwrap_or_default();
        value.push(c);
        j += c.len_utf8();
    }
    if j >= bytes.len() {
        return Err(bad(i, format!("unterminated quote in `{name}`")));
    }
    Ok((value, j + 1))
}

/// `keytype base64 [comment]` at `i`.
fn parse_key(line: &str, i: usize) -> Result<PublicKey, Bad> {
    let type_end = word_end(line, i);
    let kind = &line[i..type_end];
    if kind.ends_with("-cert-v01@openssh.com") {
        return Err(bad(
            i,
            format!("`{kind}` is a certificate; certificates are not supported"),
        ));
    }
    if !is_key_type(kind) {
        return Err(bad(i, format!("unknown key type `{kind}`")).hint(OPTIONS_HINT));
    }
    let data_at = skip_space(line, type_end);
    let data_end = word_end(line, data_at);
    if data_at == data_end {
        return Err(bad(data_at, format!("missing key data after `{kind}`")));
    }
    let blob = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &line[data_at..data_end])
        .map_err(|_| bad(data_at, "key data is not valid base64"))?;
    let mut key =
        PublicKey::from_bytes(&blob).map_err(|e| bad(data_at, format!("key data is not a valid {kind} key: {e}")))?;
    if key.algorithm().as_str() != kind {
        return Err(bad(
            i,
            format!("key type `{kind}` does not match its key data (`{}`)", key.algorithm()),
        ));
    }
    let comment_at = skip_space(line, data_end);
    let comment = line[comment_at..].trim_end();
    let lower = comment.to_ascii_lowercase();
    if ["namespaces=", "valid-after=", "valid-before=", "cert-authority"]
        .iter()
        .any(|o| lower.starts_with(o))
    {
        return Err(bad(
            comment_at,
            "options after the key would be read as its comment and ignored",
        )
        .hint("put options between the principals and the key type"));
    }
    key.set_comment(comment);
    Ok(key)
}

/// A valid-after/valid-before time, read as ssh-keygen's `parse_absolute_time` reads it:
/// `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, in UTC when suffixed `Z` (or `UTC`), else
/// in the local time zone. Local times go through `mktime` with daylight saving time off,
/// exactly as ssh-keygen does, so both read a line the same way on the same host.
fn parse_time(text: &str) -> Result<SystemTime, String> {
    let upper = text.to_ascii_uppercase();
    let (digits, utc) = match upper.strip_suffix('Z').or_else(|| upper.strip_suffix("UTC")) {
        Some(d) => (d, true),
        None => (upper.as_str(), false),
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected 8, 12 or 14 digits".into());
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).map_or(0, |s| s.parse::<i64>().unwrap_or(0));
    let (y, mo, d, h, mi, s) = (num(0..4), num(4..6), num(6..8), num(8..10), num(10..12), num(12..14));
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo.clamp(1, 12) - 1) as usize] {
        return Err("no such date".into());
    }
    if h > 23 || mi > 59 || s > 59 {
        return Err("no such time of day".into());
    }
    let secs = if utc {
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s
    } else {
        local_mktime(y, mo, d, h, mi, s)?
    };
    if secs <= 0 {
        return Err("must be after 1970-01-01T00:00:00Z".into());
    }
    Ok(UNIX_EPOCH + Duration::from_secs(secs as u64))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn local_mktime(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Result<i64, String> {
    // SAFETY: `tm` is a plain C struct for which all-zero is a valid value (a null `tm_zone`
    // included), and mktime only reads and normalises the struct we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = (y - 1900) as libc::c_int;
    tm.tm_mon = (mo - 1) as libc::c_int;
    tm.tm_mday = d as libc::c_int;
    tm.tm_hour = h as libc::c_int;
    tm.tm_min = mi as libc::c_int;
    tm.tm_sec = s as libc::c_int;
    tm.tm_isdst = 0;
    // SAFETY: as above; mktime is thread-safe in glibc and musl.
    let t = unsafe { libc::mktime(&mut tm) };
    if t == -1 {
        Err("not representable in the local time zone".into())
    } else {
        Ok(t as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPG322m2kteqfffWx2Vg0pt7OFwYs8rbt3OG+UebRq6k";

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn key_a() -> PublicKey {
        PublicKey::from_openssh(KEY_A).unwrap()
    }

    #[test]
    fn patterns_match_as_in_ssh_config() {
        let list = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        assert!(match_pattern_list("alice@x.com", &list("*@x.com")));
        assert!(match_pattern_list("alice@x.com", &list("bob,alice@x.com")));
        assert!(!match_pattern_list("bad@x.com", &list("*@x.com,!bad@x.com")));
        assert!(!match_pattern_list("bad@x.com", &list("!bad@x.com,*@x.com")));
        assert!(!match_pattern_list("anyone", &list("!bad")));
        assert!(match_pattern_list("a1", &list("a?")));
        assert!(!match_pattern_list("a12", &list("a?")));
        assert!(match_pattern_list("abcbd", &list("a*b?")));
        assert!(!match_pattern_list("Alice", &list("alice")), "case-sensitive");
        assert!(match_pattern_list("", &list("*")));
    }

    #[test]
    fn parses_principals_options_key_and_comment() {
        let text = format!(
            "# approvers\n\n  alice@x.com,\"bob smith@x.com\" {KEY_A} alice's laptop\n\
             *@x.com,!eve@x.com NAMESPACES=\"git,stella-*\",Valid-After=\"20240101\",valid-before=\"20300101120000Z\" {KEY_A}\n\
             ca@x.com cert-authority {KEY_A}\n"
        );
        let signers = AllowedSigners::parse(".stella/allowed_signers", &text).unwrap();
        let [a, b, c] = signers.entries() else {
            panic!("{signers:?}")
        };
        assert_eq!((a.line, b.line, c.line), (3, 4, 5));
        assert_eq!(a.principals, ["alice@x.com", "bob smith@x.com"]);
        assert_eq!(a.key.comment(), "alice's laptop");
        assert_eq!(a.namespaces, None);
        assert_eq!(
            b.namespaces.as_deref(),
            Some(&["git".to_string(), "stella-*".to_string()][..])
        );
        assert_eq!(b.valid_before, Some(at("2030-01-01T12:00:00Z")));
        assert!(b.valid_after.is_some());
        assert!(c.cert_authority && !c.holds(key_a().key_data()));
    }

    #[test]
    fn every_bad_line_is_reported_with_its_position() {
        let text = format!(
            "alice {KEY_A}\n\
             bob\n\
             carol namespaces=git {KEY_A}\n\
             dave valid-before=\"2030-01-01\" {KEY_A}\n\
             erin ssh-ed25519 AAAA!!\n\
             frank colour=\"red\" {KEY_A}\n\
             gina {KEY_A} namespaces=\"git\"\n\
             \"hank {KEY_A}\n\
             ivan ssh-ed25519-cert-v01@openssh.com AAAA\n\
             jo valid-after=\"20300101Z\",valid-before=\"20200101Z\" {KEY_A}\n"
        );
        let diags = AllowedSigners::parse("signers", &text).unwrap_err();
        let got: Vec<(u64, u64)> = diags.iter().map(|d| (d.line, d.column)).collect();
        assert_eq!(
            got,
            [
                (2, 4),
                (3, 18),
                (4, 19),
                (5, 18),
                (6, 7),
                (7, 87),
                (8, 1),
                (9, 6),
                (10, 28)
            ],
            "{diags}"
        );
        assert!(
            diags
                .iter()
                .all(|d| d.code == Code::SignersInvalid && d.field == format!("line {}", d.line))
        );
        assert_eq!(diags.code().exit_code(), 2);
        let carol = diags.iter().find(|d| d.line == 3).unwrap();
        assert_eq!(carol.hint.as_deref(), Some("write namespaces=\"git\""));
        assert!(
            diags
                .to_string()
                .contains("signers:6:7: line 6: unknown option or key type `colour`"),
            "{diags}"
        );
    }

    #[test]
    fn times_follow_ssh_keygen() {
        assert_eq!(parse_time("20240229Z").unwrap(), at("2024-02-29T00:00:00Z"));
        assert_eq!(parse_time("202402291230z").unwrap(), at("2024-02-29T12:30:00Z"));
        assert_eq!(parse_time("20240229123059UTC").unwrap(), at("2024-02-29T12:30:59Z"));
        for bad in [
            "20230229Z",
            "2024010",
            "20241301",
            "202401011260",
            "19691231Z",
            "2024-01-01",
            "",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert!(parse_time("20240101").is_ok(), "local time");
    }

    #[test]
    fn validity_is_inclusive_to_the_second() {
        let text = format!("a valid-after=\"20240101Z\",valid-before=\"20250101Z\" {KEY_A}\n");
        let signers = AllowedSigners::parse("f", &text).unwrap();
        let e = &signers.entries()[0];
        assert_eq!(e.validity(at("2024-01-01T00:00:00Z")), Validity::Valid);
        assert_eq!(e.validity(at("2025-01-01T00:00:00.9Z")), Validity::Valid);
        assert!(matches!(e.validity(at("2023-12-31T23:59:59.9Z")), Validity::NotYet(_)));
        assert!(matches!(e.validity(at("2025-01-01T00:00:01Z")), Validity::Expired(_)));
    }

    #[test]
    fn check_key_reports_the_furthest_failure() {
        let text = format!(
            "alice namespaces=\"git\" {KEY_A}\n\
             alice namespaces=\"stella-approval\",valid-before=\"20200101Z\" {KEY_A}\n"
        );
        let signers = AllowedSigners::parse("f", &text).unwrap();
        let now = at("2026-01-01T00:00:00Z");
        assert_eq!(signers.check_key("alice", "git", &key_a(), now).unwrap().line, 1);
        let err = signers
            .check_key("alice", "stella-approval", &key_a(), now)
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::Expired { .. }) && err.signer().unwrap().line == 2,
            "{err}"
        );
        assert_eq!(err.code(), Code::SignerExpired);
        let err = signers.check_key("alice", "file", &key_a(), now).unwrap_err();
        assert!(
            matches!(err, VerifyError::NamespaceNotAllowed { .. }) && err.signer().unwrap().line == 1,
            "{err}"
        );
        let err = signers.check_key("bob", "git", &key_a(), now).unwrap_err();
        assert_eq!(err.code(), Code::SignerUnknown);
        assert!(
            err.to_string()
                .ends_with("for principal `bob` (it is listed for alice)"),
            "{err}"
        );
    }

    #[test]
    fn find_principals_lists_literal_names_that_would_verify() {
        let text = format!(
            "*@x.com,!eve@x.com,eve@x.com,alice@x.com {KEY_A}\n\
             bob@y.com namespaces=\"git\" {KEY_A}\n\
             carol@y.com valid-before=\"20200101Z\" {KEY_A}\n\
             alice@x.com,dan@y.com {KEY_A}\n"
        );
        let signers = AllowedSigners::parse("f", &text).unwrap();
        let now = at("2026-01-01T00:00:00Z");
        assert_eq!(
            signers.find_principals(&key_a(), "git", now),
            ["alice@x.com", "bob@y.com", "dan@y.com"]
        );
        assert_eq!(
            signers.find_principals(&key_a(), "stella-approval", now),
            ["alice@x.com", "dan@y.com"]
        );
    }

    #[test]
    fn line_for_round_trips() {
        let key = key_a();
        let line = AllowedSigners::line_for("runner@host", &["git", "stella-evidence"], &key);
        assert_eq!(line, format!("runner@host namespaces=\"git,stella-evidence\" {KEY_A}"));
        let signers = AllowedSigners::parse("f", &line).unwrap();
        let e = &signers.entries()[0];
        assert!(e.holds(key.key_data()) && e.allows_namespace("git") && !e.allows_namespace("stella-approval"));
        let quoted = AllowedSigners::line_for("Jo Bloggs", &[], &key);
        assert_eq!(
            AllowedSigners::parse("f", &quoted).unwrap().entries()[0].principals,
            ["Jo Bloggs"]
        );
        assert_eq!(check_principal("a,b"), Some("a principal cannot contain `\"` or `,`"));
    }
}
