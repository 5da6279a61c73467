//! Bundles made and read back, and hostile ones refused before anything is trusted.

use std::time::SystemTime;

use super::archive::entries;
use super::*;
use crate::allowed_signers::AllowedSigners;
use crate::code::Code;

const MANIFEST: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: hello, version: 1.0.0 }\nspec:\n  steps:\n    - { id: a, run: { uses: builtin:shell, with: { script: ./run.sh } } }\n";

fn pack() -> PackFiles {
    PackFiles::from_entries(
        "packs/hello",
        [
            ("pack.yaml".to_string(), MANIFEST.as_bytes().to_vec(), false),
            ("run.sh".to_string(), b"echo hi\n".to_vec(), true),
        ],
    )
    .unwrap()
}

fn verify(bytes: &[u8], signers: Option<&AllowedSigners>) -> Result<Verified, Error> {
    let e = entries(bytes, "b", BundleLimits::default())?;
    verify_bundle("b", bytes, e, "b:pack", signers, SystemTime::now())
}

/// A tar.gz of raw entries `(path, bytes, type)`, written without the tar crate's path checks.
fn raw_tar(items: &[(&str, &[u8], tar::EntryType)]) -> Vec<u8> {
    let gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    for (path, bytes, kind) in items {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(*kind);
        if kind.is_symlink() {
            h.set_link_name("/etc/passwd").unwrap();
            h.set_size(0);
        }
        h.set_cksum();
        t.append(&h, if kind.is_symlink() { &b""[..] } else { *bytes }).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap()
}

/// The entries of a real bundle, as (path, bytes).
fn items_of(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        out.push((p, b));
    }
    out
}

fn rebuilt(items: &[(String, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(&str, &[u8], tar::EntryType)> = items
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice(), tar::EntryType::Regular))
        .collect();
    raw_tar(&refs)
}

#[test]
fn the_same_pack_and_key_make_the_same_bytes_and_verify() {
    let key = SshKey::generate("alice");
    let a = bundle(&pack(), "hello", "1.0.0", &key, None);
    assert_eq!(a, bundle(&pack(), "hello", "1.0.0", &key, None));
    let v = verify(&a, None).unwrap();
    assert_eq!(v.publisher.fingerprint, key.fingerprint());
    assert_eq!(v.publisher.principal, None);
    assert_eq!(v.files.get("run.sh"), Some(&b"echo hi\n"[..]));
    assert!(v.files.digests().iter().any(|d| d.path == "run.sh" && d.executable));
    let line = AllowedSigners::line_for("alice@example.com", &[NAMESPACE], &key.public_key());
    let signers = AllowedSigners::parse("s", &line).unwrap();
    let v = verify(&a, Some(&signers)).unwrap();
    assert_eq!(v.publisher.name(), "alice@example.com");
}

#[test]
fn a_key_trusted_for_another_namespace_is_not_a_publisher() {
    let key = SshKey::generate("");
    let b = bundle(&pack(), "hello", "1.0.0", &key, None);
    let signers = AllowedSigners::parse("s", &AllowedSigners::line_for("alice", &["git"], &key.public_key())).unwrap();
    let err = verify(&b, Some(&signers)).unwrap_err();
    assert_eq!(err.code(), Code::PackProvenance, "{err}");
}

#[test]
fn a_changed_byte_an_extra_or_missing_file_is_a_provenance_failure() {
    let key = SshKey::generate("");
    let items = items_of(&bundle(&pack(), "hello", "1.0.0", &key, None));
    let mut changed = items.clone();
    changed.iter_mut().find(|(p, _)| p == "pack/run.sh").unwrap().1 = b"echo HI\n".to_vec();
    let mut extra = items.clone();
    extra.push(("pack/extra.sh".into(), b"rm -rf /\n".to_vec()));
    let missing: Vec<_> = items.iter().filter(|(p, _)| p != "pack/run.sh").cloned().collect();
    for (what, tampered) in [("changed", changed), ("extra", extra), ("missing", missing)] {
        let err = verify(&rebuilt(&tampered), None).unwrap_err();
        assert_eq!(err.code(), Code::PackProvenance, "{what}: {err}");
    }
}

#[test]
fn hostile_archives_are_refused_as_invalid() {
    let env = b"{}".as_slice();
    let reg = tar::EntryType::Regular;
    for (what, items) in [
        (
            "escape",
            vec![("pack.dsse.json", env, reg), ("pack/../../etc/x", env, reg)],
        ),
        ("absolute", vec![("pack.dsse.json", env, reg), ("/etc/x", env, reg)]),
        (
            "symlink",
            vec![
                ("pack.dsse.json", env, reg),
                ("pack/leak", env, tar::EntryType::Symlink),
            ],
        ),
        (
            "hardlink",
            vec![("pack.dsse.json", env, reg), ("pack/leak", env, tar::EntryType::Link)],
        ),
        (
            "device",
            vec![("pack.dsse.json", env, reg), ("pack/dev", env, tar::EntryType::Char)],
        ),
        (
            "twice",
            vec![("pack.dsse.json", env, reg), ("pack/a", env, reg), ("pack/a", env, reg)],
        ),
        ("outside pack/", vec![("pack.dsse.json", env, reg), ("other", env, reg)]),
        (
            "own provenance",
            vec![("pack.dsse.json", env, reg), ("pack/.provenance.json", env, reg)],
        ),
    ] {
        let err = entries(&raw_tar(&items), "b", BundleLimits::default())
            .map(drop)
            .unwrap_err();
        assert_eq!(err.code(), Code::PackInvalid, "{what}: {err}");
    }
    assert_eq!(
        entries(b"not gzip", "b", BundleLimits::default())
            .map(drop)
            .unwrap_err()
            .code(),
        Code::PackInvalid
    );
}

#[test]
fn limits_bound_what_is_inflated_and_counted() {
    let zeros = vec![0u8; 1 << 20];
    let bomb = raw_tar(&[
        ("pack.dsse.json", b"{}", tar::EntryType::Regular),
        ("pack/z", &zeros, tar::EntryType::Regular),
    ]);
    let small = BundleLimits {
        max_compressed: 1 << 20,
        max_uncompressed: 64 << 10,
        max_entries: 10,
    };
    let err = entries(&bomb, "b", small).map(drop).unwrap_err();
    assert!(err.to_string().contains("larger than 65536 bytes in all"), "{err}");
    let few = BundleLimits {
        max_entries: 1,
        ..BundleLimits::default()
    };
    let err = entries(&bomb, "b", few).map(drop).unwrap_err();
    assert!(err.to_string().contains("entries"), "{err}");
}

#[test]
fn an_installed_pack_is_rechecked_file_by_file_and_publisher_by_signers() {
    let dir = tempfile::tempdir().unwrap();
    let key = SshKey::generate("");
    let b = bundle(&pack(), "hello", "1.0.0", &key, None);
    let line = AllowedSigners::line_for("alice", &[NAMESPACE], &key.public_key());
    let signers = AllowedSigners::parse("s", &line).unwrap();
    let v = verify(&b, Some(&signers)).unwrap();
    let target = install(dir.path(), &v, false).unwrap();
    let read = || PackFiles::read_dir(&target, "packs/hello", Default::default()).unwrap();
    let now = SystemTime::now();
    let ok = check_installed(&read(), Some(&signers), now).unwrap().unwrap();
    assert_eq!(ok.provenance.publisher, "alice");
    // Installing it again is a no-op; a different pack of the same name needs --replace.
    install(dir.path(), &v, false).unwrap();
    let other = PackFiles::from_files(
        "p",
        [("pack.yaml".to_string(), MANIFEST.replace("hi", "x").into_bytes())],
    )
    .unwrap();
    let w = verify(&bundle(&other, "hello", "1.0.0", &key, None), Some(&signers)).unwrap();
    assert_eq!(install(dir.path(), &w, false).unwrap_err().code(), Code::Usage);
    install(dir.path(), &v, false).unwrap();
    // Untrusted now, or edited, or added to: refused.
    let nobody = AllowedSigners::parse("s", "").unwrap();
    assert_eq!(
        check_installed(&read(), Some(&nobody), now).unwrap_err().code(),
        Code::PackProvenance
    );
    assert_eq!(
        check_installed(&read(), None, now).unwrap_err().code(),
        Code::PackProvenance
    );
    std::fs::write(target.join("added.sh"), "x").unwrap();
    assert_eq!(
        check_installed(&read(), Some(&signers), now).unwrap_err().code(),
        Code::PackProvenance
    );
    std::fs::remove_file(target.join("added.sh")).unwrap();
    std::fs::write(target.join("run.sh"), "echo edited\n").unwrap();
    let err = check_installed(&read(), Some(&signers), now).unwrap_err();
    assert!(err.to_string().contains("run.sh"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary directories left"
    );
}
