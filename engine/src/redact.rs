//! Secret redaction: every secret value, and its base64 and URL-encoded forms, becomes `***`
//! before anything is written or printed. Owns the line splitter that keeps a secret split
//! across output chunks from slipping through.

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

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for p in self.patterns.iter() {
            if out.contains(p.as_str()) {
                out = out.replace(p.as_str(), MASK);
            }
        }
        out
    }

    /// Whether `bytes` hold any form of a secret.
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        self.patterns
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

/// Splits a byte stream into redacted lines. A line longer than `max_line` is cut, but the
/// cut never falls inside a possible secret: the tail that could begin one is held back.
pub struct LineSplitter {
    buf: Vec<u8>,
    max_line: usize,
    redactor: Redactor,
}

impl LineSplitter {
    pub fn new(redactor: Redactor, max_line: usize) -> LineSplitter {
        LineSplitter {
            buf: Vec::new(),
            max_line: max_line.max(redactor.longest() * 2 + 16),
            redactor,
        }
    }

    /// Feeds bytes; returns the complete (redacted) lines they finish.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            lines.push(self.redactor.redact(text.trim_end_matches('\r')));
        }
        if self.buf.len() > self.max_line {
            // Redact what we hold, then keep back a tail long enough to hide a secret's prefix.
            let text = self.redactor.redact(&String::from_utf8_lossy(&self.buf));
            let keep = self.redactor.longest().saturating_sub(1);
            let mut cut = text.len().saturating_sub(keep);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            lines.push(text[..cut].to_string());
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
        Some(self.redactor.redact(&text))
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
