//! Signed pack bundles (`stella pack validate --bundle`, `stella pack import`): the archive
//! read within small limits (`bundle::read_entries`), then `bundle::verify_bundle` with and
//! without allowed_signers that trust the fixed key for `stella-pack`. The first byte picks a
//! mode: the rest is a `.stellapack`; or a tar that the target gzips (so mutations reach the
//! tar headers); or pack files (`path NUL bytes NUL …`) the target bundles with the fixed key
//! and then corrupts at one byte.
//! Invariants: nothing panics; entries stay within the limits under plain paths; whatever
//! verifies matches its signed payload file for file; a bundle of verified files made again
//! with the fixed key verifies to the same payload and files, and is byte-identical twice.
#![no_main]

use std::io::Write;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use stella_engine::allowed_signers::AllowedSigners;
use stella_engine::bundle::{self, BundleLimits};
use stella_engine::keys::SshKey;
use stella_engine::pack::{PackFiles, sha256_hex};

const LIMITS: BundleLimits = BundleLimits {
    max_compressed: 1 << 20,
    max_uncompressed: 1 << 20,
    max_entries: 64,
};

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).expect("writes to memory");
    gz.finish().expect("writes to memory")
}

fn key() -> SshKey {
    let text = stella_fuzz::key()
        .to_openssh(ssh_key::LineEnding::LF)
        .expect("the fixed key encodes");
    let dir = std::env::temp_dir().join(format!("stella-fuzz-key-{}", std::process::id()));
    let path = dir.join("key");
    if !path.exists() {
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(&path, text.as_bytes()).expect("temp key");
    }
    SshKey::load(&path).expect("the fixed key loads")
}

fn check(bytes: &[u8]) {
    let Ok(entries) = bundle::read_entries(bytes, "b", LIMITS) else {
        return;
    };
    assert!(entries.files.len() < LIMITS.max_entries);
    let total: usize = entries.files.values().map(|(b, _)| b.len()).sum();
    assert!(total as u64 <= LIMITS.max_uncompressed);
    for path in entries.files.keys() {
        assert_eq!(stella_engine::pack::normalise(path).as_deref(), Some(path.as_str()));
    }
    let line = format!(
        "alice namespaces=\"{}\" {}",
        bundle::NAMESPACE,
        stella_fuzz::public().to_openssh().expect("encodes")
    );
    let signers = AllowedSigners::parse("s", &line).expect("a valid line");
    let trusted = bundle::read_entries(bytes, "b", LIMITS)
        .ok()
        .and_then(|e| bundle::verify_bundle("b", bytes, e, "b", Some(&signers), SystemTime::now()).ok());
    let Ok(v) = bundle::verify_bundle("b", bytes, entries, "b", None, SystemTime::now()) else {
        assert!(trusted.is_none(), "verified with signers but not without");
        return;
    };
    if let Some(t) = &trusted {
        assert_eq!(t.publisher.principal.as_deref(), Some("alice"));
        assert_eq!(
            t.publisher.fingerprint,
            stella_engine::keys::fingerprint_of(&stella_fuzz::public())
        );
    }
    assert_eq!(v.files.paths().count(), v.payload.files.len());
    for (path, data) in v.files.iter() {
        assert_eq!(v.payload.files.get(path), Some(&sha256_hex(data)));
    }
    let key = key();
    let again = bundle::bundle(
        &v.files,
        &v.payload.name,
        &v.payload.version,
        &key,
        v.payload.source.clone(),
    );
    assert_eq!(
        again,
        bundle::bundle(
            &v.files,
            &v.payload.name,
            &v.payload.version,
            &key,
            v.payload.source.clone()
        )
    );
    let e = bundle::read_entries(&again, "again", BundleLimits::default()).expect("a bundle reads back");
    let w = bundle::verify_bundle("again", &again, e, "b", None, SystemTime::now()).expect("a bundle verifies");
    assert_eq!(w.payload.files, v.payload.files);
    assert_eq!(w.files.digests(), v.files.digests());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => check(rest),
        1 => check(&gzip(rest)),
        _ => {
            let mut parts = rest.split(|b| *b == 0);
            let mut files = Vec::new();
            while let (Some(p), Some(b)) = (parts.next(), parts.next()) {
                files.push((String::from_utf8_lossy(p).into_owned(), b.to_vec()));
            }
            let Ok(pack) = PackFiles::from_files("p", files) else {
                return;
            };
            let mut bytes = bundle::bundle(&pack, "p", "1", &key(), None);
            check(&bytes);
            if let Some(&at) = rest.first() {
                let i = at as usize * 7 % bytes.len();
                bytes[i] ^= rest.last().copied().unwrap_or(1) | 1;
                check(&bytes);
            }
        }
    }
});
