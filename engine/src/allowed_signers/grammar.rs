//! The grammar of one allowed_signers line, read as OpenSSH reads it: principals (quotes
//! allowed), options (`cert-authority`, `namespaces=`, `valid-after=`, `valid-before=`), key
//! type, base64 key and comment. Reports the first problem of a line with its byte offset;
//! never decides whether a key may sign.

use std::time::SystemTime;

use ssh_key::PublicKey;

use super::Entry;
use super::time::parse_time;

/// A malformed line: what is wrong, and the byte offset in the line where it is.
pub(super) struct Bad {
    pub at: usize,
    pub message: String,
    pub hint: Option<String>,
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

pub(super) fn parse_line(number: u64, line: &str) -> Result<Option<Entry>, Bad> {
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
