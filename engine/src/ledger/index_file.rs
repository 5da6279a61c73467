//! Git's index kept in the version git chose for it. gix writes versions 2 and 3 only, so an
//! index in version 4 (each path stored as what it does not share with the path before it;
//! git makes new indexes so under `feature.manyFiles`) is re-encoded here, after gix has
//! written it, into version 4 again. Entries and extensions are carried over byte for byte;
//! only the paths' encoding, the header's version and the trailing hash change.

use gix::index::Version;

/// Which version the runner writes an index in: the one it has on disk, like git; a new index
/// takes `index.version`, which `feature.manyFiles` makes 4.
pub fn wanted(repo: &gix::Repository, on_disk: Option<Version>) -> Version {
    if let Some(version) = on_disk {
        return version;
    }
    let config = repo.config_snapshot();
    let many_files = config.boolean("feature.manyFiles").unwrap_or(false);
    match config.integer("index.version") {
        Some(4) => Version::V4,
        Some(_) => Version::V2,
        None if many_files => Version::V4,
        None => Version::V2,
    }
}

/// What was wrong with an index handed to `to_v4` (gix's own output, so a bug, never input).
#[derive(Debug, thiserror::Error)]
#[error("the index gix wrote cannot be re-encoded as version 4: {0}")]
pub struct Malformed(&'static str);

const HEADER: usize = 12;
/// ctime, mtime (seconds and nanoseconds), dev, ino, mode, uid, gid, size: ten 32-bit fields.
const STAT: usize = 40;
const EXTENDED: u16 = 0x4000;
const NAME_MASK: u16 = 0x0fff;

/// Re-encodes `bytes`, a version 2 or 3 index with no end-of-index-entry extension (its
/// offsets would be wrong afterwards) and its trailing hash, as version 4. The trailing hash
/// is computed afresh, or left all zeroes with `skip_hash` (`index.skipHash`).
pub fn to_v4(bytes: &[u8], kind: gix::hash::Kind, skip_hash: bool) -> Result<Vec<u8>, Malformed> {
    let hash_len = kind.len_in_bytes();
    if bytes.len() < HEADER + hash_len || &bytes[..4] != b"DIRC" {
        return Err(Malformed("no index header"));
    }
    let version = u32::from_be_bytes(bytes[4..8].try_into().expect("four bytes"));
    if version != 2 && version != 3 {
        return Err(Malformed("not version 2 or 3"));
    }
    let count = u32::from_be_bytes(bytes[8..12].try_into().expect("four bytes"));
    let body = &bytes[..bytes.len() - hash_len];
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(b"DIRC");
    out.extend_from_slice(&4u32.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    let mut at = HEADER;
    let mut previous: &[u8] = &[];
    for _ in 0..count {
        let flags_at = at + STAT + hash_len;
        let flags_bytes = body
            .get(flags_at..flags_at + 2)
            .ok_or(Malformed("an entry is cut short"))?;
        let flags = u16::from_be_bytes(flags_bytes.try_into().expect("two bytes"));
        let fixed = STAT + hash_len + 2 + if flags & EXTENDED != 0 { 2 } else { 0 };
        let name_at = at + fixed;
        let rest = body.get(name_at..).ok_or(Malformed("an entry is cut short"))?;
        let name_len = match flags & NAME_MASK {
            NAME_MASK => rest
                .iter()
                .position(|b| *b == 0)
                .ok_or(Malformed("a path has no end"))?,
            n => usize::from(n),
        };
        if rest.get(name_len) != Some(&0) {
            return Err(Malformed("a path is not where its length says"));
        }
        let name = &rest[..name_len];
        out.extend_from_slice(&body[at..name_at]);
        let shared = previous.iter().zip(name).take_while(|(a, b)| a == b).count();
        push_varint(&mut out, (previous.len() - shared) as u64);
        out.extend_from_slice(&name[shared..]);
        out.push(0);
        previous = name;
        // Versions 2 and 3 pad each entry with one to eight NULs to a multiple of eight.
        at += (fixed + name_len + 8) & !7;
        if at > body.len() {
            return Err(Malformed("an entry's padding is cut short"));
        }
    }
    out.extend_from_slice(&body[at..]);
    if skip_hash {
        out.resize(out.len() + hash_len, 0);
    } else {
        let mut hasher = gix::hash::hasher(kind);
        hasher.update(&out);
        let digest = hasher.try_finalize().map_err(|_| Malformed("the hash failed"))?;
        out.extend_from_slice(digest.as_slice());
    }
    Ok(out)
}

/// Git's variable-length integer (varint.c): seven bits a byte, most significant first, each
/// continuation byte standing for one more than its bits say.
fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    let mut buf = [0u8; 10];
    let mut pos = buf.len() - 1;
    buf[pos] = (value & 127) as u8;
    value >>= 7;
    while value != 0 {
        value -= 1;
        pos -= 1;
        buf[pos] = 128 | (value & 127) as u8;
        value >>= 7;
    }
    out.extend_from_slice(&buf[pos..]);
}

#[cfg(test)]
mod tests {
    use super::{push_varint, to_v4};

    fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args(["-c", "user.name=p", "-c", "user.email=p@example.com"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn varints_read_back_as_gix_reads_them() {
        for value in [
            0u64,
            1,
            126,
            127,
            128,
            255,
            16_383,
            16_384,
            16_511,
            16_512,
            1 << 40,
            u64::MAX / 2,
        ] {
            let mut out = Vec::new();
            push_varint(&mut out, value);
            let (read, used) = gix::utils::decode::leb64_from_read(out.as_slice()).unwrap();
            assert_eq!((read, used), (value, out.len()), "{value}");
        }
        let mut out = Vec::new();
        push_varint(&mut out, 128);
        assert_eq!(out, [0x80, 0x00], "git's encoding of 128");
    }

    /// A repository whose index holds long, shared-prefix paths, an entry with an extended
    /// flag (intent to add) and a tree cache, written by git in version 2 (3 where needed).
    fn repository() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q", "-b", "main"]);
        for path in [
            "a.txt",
            "runs/_3e/run-1/events/000000000000.ndjson",
            "runs/_3e/run-1/evidence/attestation.dsse.json",
            "runs/_3e/run-1/plan.json",
            "runs/_3e/run-2/plan.json",
            "runs/_4f/run-3/request.yaml",
            "z",
        ] {
            std::fs::create_dir_all(d.join(path).parent().unwrap()).unwrap();
            std::fs::write(d.join(path), path.len().to_string()).unwrap();
            // Older than the index: git would otherwise smudge the "racily clean" entries
            // (write their size as 0) when it rewrites the index.
            let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
            std::fs::File::options()
                .write(true)
                .open(d.join(path))
                .unwrap()
                .set_modified(an_hour_ago)
                .unwrap();
        }
        git(d, &["add", "."]);
        git(d, &["commit", "-q", "-m", "one"]);
        std::fs::write(d.join("new.txt"), "n").unwrap();
        git(d, &["add", "--intent-to-add", "new.txt"]);
        git(d, &["update-index", "--index-version", "2"]);
        dir
    }

    fn index_bytes(d: &std::path::Path, version: &str) -> Vec<u8> {
        git(d, &["update-index", "--index-version", version]);
        std::fs::read(d.join(".git/index")).unwrap()
    }

    /// Git's own version 4 of an index is byte for byte what `to_v4` makes of git's version 2,
    /// also with a path over 4,095 bytes (more than an entry's flags can say: found by its
    /// NUL) that only an index entry can hold.
    #[test]
    fn the_same_bytes_as_git_writes() {
        let dir = repository();
        let d = dir.path();
        let blob = git(d, &["hash-object", "-w", "a.txt"]);
        let long = format!("deep/{}f", format!("{}/", "x".repeat(200)).repeat(21));
        let info = format!("100644,{},{long}", blob.trim());
        git(d, &["update-index", "--add", "--cacheinfo", &info]);
        let v2 = index_bytes(d, "2");
        let v4 = index_bytes(d, "4");
        assert_eq!(to_v4(&v2, gix::hash::Kind::Sha1, false).unwrap(), v4);
        assert!(v4.len() < v2.len());
    }

    /// What gix writes, re-encoded, is git's version 4, gix reads it back to the same entries,
    /// and `index.skipHash` leaves the trailer zeroes.
    #[test]
    fn gix_reads_back_what_it_wrote_re_encoded() {
        let dir = repository();
        let d = dir.path();
        let read = |bytes: &[u8]| {
            std::fs::write(d.join(".git/index"), bytes).unwrap();
            gix::index::File::at(d.join(".git/index"), gix::hash::Kind::Sha1, false, Default::default()).unwrap()
        };
        let index = read(&index_bytes(d, "2"));
        let listed = git(d, &["ls-files", "--stage", "--debug"]);
        let mut written = Vec::new();
        let options = gix::index::write::Options {
            extensions: gix::index::write::Extensions::Given {
                tree_cache: true,
                end_of_index_entry: false,
            },
            skip_hash: false,
        };
        index.write_to(&mut written, options).unwrap();
        let ours = to_v4(&written, gix::hash::Kind::Sha1, false).unwrap();
        assert_eq!(ours, index_bytes(d, "4"));
        let back = read(&ours);
        assert_eq!(back.version(), gix::index::Version::V4);
        assert_eq!(back.entries(), index.entries());
        assert_eq!(git(d, &["ls-files", "--stage", "--debug"]), listed);
        assert_eq!(git(d, &["status", "--porcelain"]), " A new.txt\n");
        let skipped = to_v4(&written, gix::hash::Kind::Sha1, true).unwrap();
        assert_eq!(&skipped[..skipped.len() - 20], &ours[..ours.len() - 20]);
        assert_eq!(&skipped[skipped.len() - 20..], &[0u8; 20]);
    }

    #[test]
    fn what_is_not_an_index_is_refused() {
        let kind = gix::hash::Kind::Sha1;
        assert!(to_v4(b"", kind, false).is_err());
        assert!(
            to_v4(
                &[b"DIRC".as_slice(), &[0, 0, 0, 4, 0, 0, 0, 0], &[0; 20]].concat(),
                kind,
                false
            )
            .is_err()
        );
        // One entry announced, none there.
        assert!(
            to_v4(
                &[b"DIRC".as_slice(), &[0, 0, 0, 2, 0, 0, 0, 1], &[0; 20]].concat(),
                kind,
                false
            )
            .is_err()
        );
    }
}
