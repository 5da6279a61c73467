//! Run ids: `^[a-z0-9][a-z0-9._-]{0,99}$` (DESIGN section 2), checked wherever one arrives
//! from a user, a path or a branch, and made fresh for new requests.

/// Whether `id` is a valid run id.
pub fn is_valid(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 100
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'))
        && id != "."
        && !id.contains("..")
}

/// A new id like `20261123-sbom-remediation-7f3a9c`: date, pack name, 6 hex of randomness.
pub fn generate(pack: &str) -> String {
    use sha2::Digest;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!(
        "{}-{}-{pack}-{:?}",
        now.as_nanos(),
        std::process::id(),
        std::thread::current().id()
    );
    let tag = hex::encode(sha2::Sha256::digest(seed.as_bytes()));
    let date = crate::event::now_rfc3339()
        .get(..10)
        .unwrap_or("00000000")
        .replace('-', "");
    let pack: String = pack
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .take(60)
        .collect();
    format!("{date}-{pack}-{}", &tag[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_ids() {
        for ok in ["r1", "20261123-sbom-remediation-7f3a9c", "a.b_c-d", "0"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "R1", "-x", ".x", "a/b", "a..b", "x y", &"a".repeat(101), "ü"] {
            assert!(!is_valid(bad), "{bad}");
        }
        assert!(is_valid(&generate("sbom-remediation")));
    }
}
