//! Secret redaction: every secret value, and its base64 and URL-encoded forms, becomes `***`
//! before anything is written or printed, and so does every PEM/OpenSSH private key block,
//! secret or not. Owns the line splitter that keeps a secret split across output chunks (or a
//! key block across lines) from slipping through.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

pub const MASK: &str = "***";

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// URL encoders differ in what they leave alone: everything but letters and digits; RFC 3986
/// unreserved characters (encodeURIComponent, Go's QueryEscape); and those plus `/`
/// (Python's `quote`).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
const UNRESERVED_SLASH: &AsciiSet = &UNRESERVED.remove(b'/');
const URL_SETS: [&AsciiSet; 3] = [NON_ALPHANUMERIC, UNRESERVED, UNRESERVED_SLASH];

/// Replaces secret values in text. Cheap to clone (shared patterns).
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Every form of every secret, longest first so overlapping forms mask fully.
    patterns: std::sync::Arc<Vec<String>>,
}

impl Redactor {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut patterns = Vec::new();
        for v in values {
            if v.is_empty() {
                continue;
            }
            patterns.push(v.to_string());
            for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                patterns.push(engine.encode(v));
            }
            for set in URL_SETS {
                let url = percent_encoding::utf8_percent_encode(v, set).to_string();
                patterns.push(url.replace("%20", "+"));
                patterns.push(url);
            }
            // Multi-line secrets (keys, certificates) are also masked line by line.
            patterns.extend(v.lines().filter(|l| l.trim().len() >= 8).map(str::to_string));
        }
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        patterns.dedup();
        Redactor {
            patterns: std::sync::Arc::new(patterns),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Length in bytes of the longest form; a chunk boundary may hide up to this minus one.
    pub fn longest(&self) -> usize {
        self.patterns.first().map_or(0, String::len)
    }

    /// Masks private key blocks (`-----BEGIN … PRIVATE KEY-----` to its END line, or to the
    /// end of the text), then every form of every secret.
    pub fn redact(&self, text: &str) -> String {
        let mut out = mask_key_blocks(text);
        for p in self.patterns.iter() {
            if out.contains(p.as_str()) {
                out = out.replace(p.as_str(), MASK);
            }
        }
        out
    }

    /// Whether `bytes` hold any form of a secret, or a private key block.
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        private_key_in(bytes, &[]).is_some()
            || self
                .patterns
                .iter()
                .any(|p| bytes.windows(p.len()).any(|w| w == p.as_bytes()))
    }

    /// Redacts every string inside a JSON value (keys included).
    pub fn redact_json(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value as J;
        if self.is_empty() {
            return v.clone();
        }
        match v {
            J::String(s) => J::String(self.redact(s)),
            J::Array(a) => J::Array(a.iter().map(|x| self.redact_json(x)).collect()),
            J::Object(o) => J::Object(o.iter().map(|(k, x)| (self.redact(k), self.redact_json(x))).collect()),
            other => other.clone(),
        }
    }
}

/// The longest private key marker line worth looking for (`-----BEGIN … PRIVATE KEY-----`).
const MARKER_MAX: usize = 64;

/// The first `-----BEGIN <LABEL>-----` (or END) marker in `s` whose label ends in
/// `PRIVATE KEY` (OPENSSH, RSA, EC, ENCRYPTED, PKCS#8 …): its start and end.
fn key_marker(s: &str, kind: &str) -> Option<(usize, usize)> {
    let open = format!("-----{kind} ");
    let mut from = 0;
    while let Some(i) = s[from..].find(&open) {
        let start = from + i;
        let rest = &s[start + open.len()..];
        let label = rest
            .bytes()
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b' ')
            .count();
        if rest[..label].ends_with("PRIVATE KEY") && rest[label..].starts_with("-----") {
            return Some((start, start + open.len() + label + 5));
        }
        from = start + open.len();
    }
    None
}

/// `text` with every private key block replaced by `***` (an unterminated one to the end).
fn mask_key_blocks(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some((begin, after)) = key_marker(rest, "BEGIN") {
        out.push_str(&rest[..begin]);
        out.push_str(MASK);
        rest = match key_marker(&rest[after..], "END") {
            Some((_, end)) => &rest[after + end..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// Whether `bytes` hold a form of the runner key (`key_forms`).
pub fn runner_key_in(bytes: &[u8], key_forms: &[String]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(bytes);
    key_forms
        .iter()
        .any(|f| !f.is_empty() && text.contains(f.as_str()))
        .then_some("holds the runner's private key")
}

/// Why `bytes` must never be committed: they hold a form of the runner key (`key_forms`,
/// see `SshKey::secret_forms`), or a whole private key block of any kind.
pub fn private_key_in(bytes: &[u8], key_forms: &[String]) -> Option<&'static str> {
    if let Some(found) = runner_key_in(bytes, key_forms) {
        return Some(found);
    }
    let text = String::from_utf8_lossy(bytes);
    // A whole block: a script that merely looks for the BEGIN line is no key.
    let (_, after) = key_marker(&text, "BEGIN")?;
    key_marker(&text[after..], "END")
        .map(|_| "holds a private key block (-----BEGIN … PRIVATE KEY----- to its END line)")
}

/// Splits a byte stream into redacted lines. A line longer than `max_line` is cut, but the
/// cut never falls inside a possible secret: the tail that could begin one is held back.
pub struct LineSplitter {
    buf: Vec<u8>,
    max_line: usize,
    redactor: Redactor,
    /// Inside a private key block: every line is masked until its END line.
    in_key: bool,
}

impl LineSplitter {
    pub fn new(redactor: Redactor, max_line: usize) -> LineSplitter {
        LineSplitter {
            buf: Vec::new(),
            max_line: max_line.max(redactor.longest() * 2 + 16).max(MARKER_MAX * 4),
            redactor,
            in_key: false,
        }
    }

    /// One line (or a piece of an overlong one) out: key blocks masked as the stream goes,
    /// whatever is outside them redacted.
    fn mask(&mut self, line: &str) -> String {
        let mut out = String::new();
        let mut rest = line;
        loop {
            if self.in_key {
                let Some((_, end)) = key_marker(rest, "END") else {
                    if !out.ends_with(MASK) {
                        out.push_str(MASK);
                    }
                    return out;
                };
                if !out.ends_with(MASK) {
                    out.push_str(MASK);
                }
                self.in_key = false;
                rest = &rest[end..];
            } else {
                let Some((begin, after)) = key_marker(rest, "BEGIN") else {
                    out.push_str(&self.redactor.redact(rest));
                    return out;
                };
                out.push_str(&self.redactor.redact(&rest[..begin]));
                out.push_str(MASK);
                self.in_key = true;
                rest = &rest[after..];
            }
        }
    }

    /// Where to cut an overlong line near `at` (at most): never inside a possible secret or
    /// a key marker, which then stay whole in the part held back.
    fn safe_cut(&self, text: &str, at: usize) -> usize {
        let mut cut = at;
        loop {
            let before = cut;
            for p in self.redactor.patterns.iter().map(String::as_str).chain(["-----"]) {
                // A secret matters only across the cut; a marker's dashes anywhere a marker
                // begun there could still be running.
                let marker = p == "-----";
                let mut lo = cut.saturating_sub(if marker { MARKER_MAX } else { p.len() } - 1);
                let mut hi = (cut + p.len() - 1).min(text.len());
                while !text.is_char_boundary(lo) {
                    lo -= 1;
                }
                while !text.is_char_boundary(hi) {
                    hi += 1;
                }
                if let Some(start) = text[lo..hi]
                    .match_indices(p)
                    .map(|(i, _)| lo + i)
                    .find(|&start| start < cut && (marker || start + p.len() > cut))
                {
                    cut = start;
                }
            }
            if cut == before {
                return cut;
            }
        }
    }

    /// Feeds bytes; returns the complete (redacted) lines they finish.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            lines.push(self.mask(text.trim_end_matches('\r')));
        }
        if self.buf.len() > self.max_line {
            // Give out what we hold, but keep back a tail long enough to hide a secret's
            // prefix or a key marker's.
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            let keep = self.redactor.longest().saturating_sub(1).max(MARKER_MAX);
            let mut at = text.len().saturating_sub(keep);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let cut = match self.safe_cut(&text, at) {
                0 => at,
                cut => cut,
            };
            lines.push(self.mask(&text[..cut]));
            self.buf = text.as_bytes()[cut..].to_vec();
        }
        lines
    }

    /// The last, unterminated line, if any.
    pub fn finish(&mut self) -> Option<String> {
        if self.buf.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        Some(self.mask(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_value_base64_and_url_forms() {
        let r = Redactor::new(["s3cr3t/value+x"]);
        let b64 = STANDARD.encode("s3cr3t/value+x");
        let url = "s3cr3t%2Fvalue%2Bx";
        let out = r.redact(&format!("a s3cr3t/value+x b {b64} c {url}"));
        assert_eq!(out, "a *** b *** c ***");
    }

    #[test]
    fn a_secret_split_across_chunks_is_still_masked() {
        let r = Redactor::new(["hunter2hunter2"]);
        let mut s = LineSplitter::new(r, 64);
        let mut lines = s.push(b"token=hunter2h");
        lines.extend(s.push(b"unter2 done\n"));
        assert_eq!(lines, ["token=*** done"]);
    }

    #[test]
    fn an_overlong_line_never_cuts_through_a_secret() {
        let secret = "ABCDEFGHIJKLMNOP";
        let r = Redactor::new([secret]);
        let mut s = LineSplitter::new(r, 40);
        let mut out = String::new();
        let data = format!("{}{secret}{}\n", "x".repeat(37), "y".repeat(50));
        for chunk in data.as_bytes().chunks(7) {
            for line in s.push(chunk) {
                out.push_str(&line);
            }
        }
        out.extend(s.finish());
        assert!(!out.contains("ABCDEFGH"), "{out}");
        assert!(out.contains(MASK));
    }

    #[test]
    fn json_values_are_masked_deeply() {
        let r = Redactor::new(["pw123456"]);
        let v = serde_json::json!({"a": ["x pw123456"], "pw123456": 1});
        assert_eq!(r.redact_json(&v), serde_json::json!({"a": ["x ***"], "***": 1}));
    }
}
