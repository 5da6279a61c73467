//! Label values that come from packs (pack names, gate ids, notify targets), bounded: only
//! plain identifiers pass, and each label takes at most a fixed number of distinct values per
//! process, so no pack can grow the exposition (or a Prometheus server) without bound. Never
//! sees a message, an output or a secret: only the names a plan gives.

use std::collections::HashSet;

/// The value of a label whose pack did not make it known (a run refused before it was planned).
pub const UNKNOWN: &str = "_unknown";
/// The value of a label that is not a plain identifier.
pub const INVALID: &str = "_invalid";
/// The value of every new label past the bound.
pub const OTHER: &str = "_other";

/// The longest label value kept.
const MAX_LEN: usize = 64;

/// One label's values seen so far, at most `max` of them.
#[derive(Debug)]
pub struct Bounded {
    seen: HashSet<String>,
    max: usize,
}

impl Bounded {
    pub fn new(max: usize) -> Bounded {
        Bounded {
            seen: HashSet::new(),
            max,
        }
    }

    /// The label value for `raw`: itself when it is a plain identifier (1 to 64 of
    /// `[A-Za-z0-9._-]`, starting with a letter or digit) already seen or within the bound;
    /// `_unknown`, `_invalid` or `_other` otherwise.
    pub fn value(&mut self, raw: Option<&str>) -> String {
        let Some(raw) = raw else {
            return UNKNOWN.to_string();
        };
        if !plain(raw) {
            return INVALID.to_string();
        }
        if self.seen.contains(raw) {
            return raw.to_string();
        }
        if self.seen.len() >= self.max {
            return OTHER.to_string();
        }
        self.seen.insert(raw.to_string());
        raw.to_string()
    }
}

fn plain(s: &str) -> bool {
    s.len() <= MAX_LEN
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_never_become_labels() {
        let mut b = Bounded::new(2);
        assert_eq!(b.value(Some("sbom-remediation")), "sbom-remediation");
        assert_eq!(b.value(None), UNKNOWN);
        for hostile in ["", "a\"b", "a\nb", "***", "_other", "é", &"x".repeat(65), "a b", "a{b}"] {
            assert_eq!(b.value(Some(hostile)), INVALID, "{hostile:?}");
        }
        assert_eq!(b.value(Some("second")), "second");
        assert_eq!(b.value(Some("third")), OTHER, "past the bound");
        assert_eq!(b.value(Some("sbom-remediation")), "sbom-remediation", "seen before");
    }
}
