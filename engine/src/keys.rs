//! The Ed25519 SSH keys Stella signs with (the runner's, or an approver's): generating them,
//! reading and writing them in the OpenSSH formats `ssh-keygen` uses, and making SSH signatures
//! that `ssh-keygen -Y verify` and `git verify-commit` accept. Never overwrites a key file, and
//! never writes private key material anywhere but the file it was asked to create.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ssh_key::private::KeypairData;
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::code::Code;

/// Why a key could not be loaded or saved. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read key file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "{} is not an OpenSSH private key ({reason}); expected the `-----BEGIN OPENSSH PRIVATE KEY-----` \
         format ssh-keygen writes (convert an older PEM key with `ssh-keygen -p -f {}`)",
        path.display(),
        path.display()
    )]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "{} is protected by a passphrase; the runner needs an unencrypted key (remove the passphrase with \
         `ssh-keygen -p -N '' -f {}` or make a new one with `ssh-keygen -t ed25519 -N ''`); keys held in \
         ssh-agent are not supported yet",
        path.display(),
        path.display()
    )]
    Encrypted { path: PathBuf },
    #[error(
        "{} is an {algorithm} key; Stella signs only with Ed25519 keys (make one with `ssh-keygen -t ed25519`)",
        path.display()
    )]
    Unsupported { path: PathBuf, algorithm: String },
    #[error("{} already exists; Stella never overwrites a key file (remove it or choose another path)", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write key file {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Read { .. } | Error::Write { .. } => Code::Io,
            Error::Malformed { .. } | Error::Encrypted { .. } | Error::Unsupported { .. } => Code::KeyInvalid,
            Error::Exists { .. } => Code::KeyExists,
        }
    }
}

/// An unencrypted Ed25519 SSH private key with its comment.
#[derive(Clone)]
pub struct SshKey {
    key: PrivateKey,
}

impl std::fmt::Debug for SshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshKey")
            .field("public", &self.public_openssh())
            .finish()
    }
}

impl SshKey {
    /// A new key from the operating system's random source.
    pub fn generate(comment: &str) -> SshKey {
        let mut key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).expect("ed25519 key generation cannot fail");
        key.set_comment(comment);
        SshKey { key }
    }

    /// Reads an OpenSSH private key file (`-----BEGIN OPENSSH PRIVATE KEY-----`), as written by
    /// `ssh-keygen -t ed25519`. Encrypted keys and other key types are refused.
    pub fn load(path: &Path) -> Result<SshKey, Error> {
        let text = fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        SshKey::from_openssh(&text).map_err(|e| e.at(path))
    }

    /// As `load`, for the text of a key file.
    fn from_openssh(text: &str) -> Result<SshKey, PathlessError> {
        let key = PrivateKey::from_openssh(text.trim_start()).map_err(|e| {
            let reason = if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
                e.to_string()
            } else if text.contains("-----BEGIN") && text.contains("PRIVATE KEY-----") {
                "it is a PEM/PKCS#8 private key".to_string()
            } else {
                "no `-----BEGIN OPENSSH PRIVATE KEY-----` line".to_string()
            };
            PathlessError::Malformed(reason)
        })?;
        if key.is_encrypted() {
            return Err(PathlessError::Encrypted);
        }
        if !matches!(key.key_data(), KeypairData::Ed25519(_)) {
            return Err(PathlessError::Unsupported(key.algorithm().as_str().to_string()));
        }
        Ok(SshKey { key })
    }

    /// Writes the private key to `path` (mode 0600) and its public line to `<path>.pub` (mode
    /// 0644), creating parent directories. Refuses if either file exists. Each file is written
    /// to a temporary file in the same directory and then linked into place, so a reader never
    /// sees half a key and a concurrent writer cannot be overwritten.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let pub_path = pub_path(path);
        for p in [path, pub_path.as_path()] {
            if p.symlink_metadata().is_ok() {
                return Err(Error::Exists { path: p.to_path_buf() });
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| Error::Write {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let private = self.key.to_openssh(LineEnding::LF).map_err(|e| Error::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        write_new(path, private.as_bytes(), 0o600)?;
        write_new(&pub_path, format!("{}\n", self.public_openssh()).as_bytes(), 0o644)
    }

    /// The private key file's text (for age, which opens SOPS data keys with it); treat it
    /// as the key itself.
    pub fn private_openssh(&self) -> String {
        self.key
            .to_openssh(LineEnding::LF)
            .map(|t| t.to_string())
            .expect("an ed25519 private key always encodes")
    }

    /// The public key as one OpenSSH line: `ssh-ed25519 AAAA… comment`.
    pub fn public_openssh(&self) -> String {
        self.key
            .public_key()
            .to_openssh()
            .expect("an ed25519 public key always encodes")
    }

    /// The public key, with the key's comment.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key().clone()
    }

    /// `SHA256:…`, exactly as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The comment stored with the key (often `user@host`).
    pub fn comment(&self) -> &str {
        self.key.comment()
    }

    /// The raw Ed25519 signing key, for signatures that are not SSH signatures (DSSE).
    pub fn signing_key(&self) -> ed25519_dalek::SigningKey {
        match self.key.key_data() {
            KeypairData::Ed25519(pair) => ed25519_dalek::SigningKey::from(&pair.private),
            _ => unreachable!("SshKey holds only ed25519 keys"),
        }
    }

    /// Every form of the private key that must never be shown or committed: the key file's
    /// text, each of its base64 body lines, and the raw 32-byte seed in hex and base64.
    pub fn secret_forms(&self) -> Vec<String> {
        use base64::Engine as _;
        let mut forms = Vec::new();
        if let Ok(text) = self.key.to_openssh(LineEnding::LF) {
            forms.extend(
                text.lines()
                    .filter(|l| !l.starts_with("-----") && l.trim().len() >= 16)
                    .map(|l| l.trim().to_string()),
            );
            forms.push(text.trim_end().to_string());
        }
        let seed = self.signing_key().to_bytes();
        forms.push(hex::encode(seed));
        forms.push(hex::encode_upper(seed));
        for engine in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            forms.push(engine.encode(seed));
        }
        forms
    }

    /// An armored SSH signature of `msg` for `namespace`, byte for byte what
    /// `ssh-keygen -Y sign -n NAMESPACE` writes (sshsig v1, sha512).
    pub fn sign(&self, namespace: &str, msg: &[u8]) -> String {
        assert!(!namespace.is_empty(), "an ssh signature needs a namespace");
        self.key
            .sign(namespace, HashAlg::Sha512, msg)
            .and_then(|sig| sig.to_pem(LineEnding::LF))
            .expect("ed25519 signing cannot fail")
    }
}

/// `SHA256:…` of a public key, as `ssh-keygen -l` prints it.
pub fn fingerprint_of(key: &PublicKey) -> String {
    key.fingerprint(ssh_key::HashAlg::Sha256).to_string()
}

/// `<path>.pub`, where ssh-keygen keeps the public half.
pub fn pub_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".pub");
    PathBuf::from(name)
}

/// A load failure before the path is known.
enum PathlessError {
    Malformed(String),
    Encrypted,
    Unsupported(String),
}

impl PathlessError {
    fn at(self, path: &Path) -> Error {
        let path = path.to_path_buf();
        match self {
            PathlessError::Malformed(reason) => Error::Malformed { path, reason },
            PathlessError::Encrypted => Error::Encrypted { path },
            PathlessError::Unsupported(algorithm) => Error::Unsupported { path, algorithm },
        }
    }
}

/// Creates `path` holding `bytes` with `mode`, failing if it exists: write a temporary file
/// beside it, sync, hard-link it into place (link never replaces), remove the temporary name.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let fail = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| fail(std::io::Error::other("not a file name")))?;
    let tmp = (0..100u32)
        .find_map(|attempt| {
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(".tmp-{}-{attempt}", std::process::id()));
            let tmp = dir.join(tmp_name);
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)
            {
                Ok(file) => Some(Ok((tmp, file))),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
                Err(e) => Some(Err(e)),
            }
        })
        .unwrap_or_else(|| Err(std::io::Error::other("no free temporary file name")))
        .map_err(fail)?;
    let (tmp, mut file) = tmp;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| file.sync_all());
    drop(file);
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // Make the new name durable too; failure here leaves a complete file, so ignore it.
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Exists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(fail(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_ed25519_and_distinct() {
        let (a, b) = (SshKey::generate("a@example.com"), SshKey::generate("b"));
        assert!(a.public_openssh().starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"));
        assert!(a.public_openssh().ends_with(" a@example.com"));
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(a.fingerprint().starts_with("SHA256:") && !a.fingerprint().ends_with('='));
    }

    #[test]
    fn save_then_load_round_trips_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/runner_ed25519");
        let key = SshKey::generate("runner");
        key.save(&path).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&pub_path(&path)), 0o644);
        assert_eq!(
            fs::read_to_string(pub_path(&path)).unwrap(),
            format!("{}\n", key.public_openssh())
        );
        let loaded = SshKey::load(&path).unwrap();
        assert_eq!(loaded.public_openssh(), key.public_openssh());
        assert_eq!(loaded.signing_key().to_bytes(), key.signing_key().to_bytes());
        assert_eq!(
            fs::read_dir(path.parent().unwrap()).unwrap().count(),
            2,
            "no temporary files left"
        );

        let err = SshKey::generate("other").save(&path).unwrap_err();
        assert!(matches!(&err, Error::Exists { path: p } if p == &path), "{err}");
        assert_eq!(err.code(), Code::KeyExists);
        assert_eq!(SshKey::load(&path).unwrap().fingerprint(), key.fingerprint());
    }

    #[test]
    fn an_existing_pub_file_also_blocks_saving() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(pub_path(&path), "x").unwrap();
        assert!(matches!(SshKey::generate("").save(&path), Err(Error::Exists { .. })));
        assert!(!path.exists(), "nothing written");
    }

    #[test]
    fn load_names_the_path_in_every_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = SshKey::load(&missing).unwrap_err();
        assert_eq!(err.code(), Code::Io);
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");

        let garbage = dir.path().join("garbage");
        fs::write(&garbage, "ssh-ed25519 AAAA not a private key\n").unwrap();
        let err = SshKey::load(&garbage).unwrap_err();
        assert_eq!(err.code(), Code::KeyInvalid);
        assert!(err.to_string().starts_with(&garbage.display().to_string()), "{err}");
    }

    #[test]
    fn signing_key_matches_the_ssh_public_key() {
        let key = SshKey::generate("");
        let public = key.public_key();
        let ssh_key::public::KeyData::Ed25519(ed) = public.key_data() else {
            panic!("not ed25519")
        };
        assert_eq!(key.signing_key().verifying_key().to_bytes(), ed.0);
    }

    #[test]
    fn signatures_verify_with_our_verifier() {
        let key = SshKey::generate("");
        let sig = key.sign("stella-approval", b"decision: approve\n");
        assert!(sig.starts_with("-----BEGIN SSH SIGNATURE-----\n") && sig.ends_with("-----END SSH SIGNATURE-----\n"));
        let signer = crate::sshsig::verify(&sig, "stella-approval", b"decision: approve\n").unwrap();
        assert_eq!(signer.key_data(), key.public_key().key_data());
    }
}
