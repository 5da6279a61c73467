//! What the fuzz targets share: one fixed Ed25519 key (so signatures made inside a target are
//! reproducible and the seeds can carry them), and the allowed_signers line that trusts it.
//! Never used outside `fuzz/`.

use ssh_key::private::{Ed25519Keypair, PrivateKey};
use ssh_key::{HashAlg, LineEnding, PublicKey};

/// The namespace approval signatures are made for.
pub const NAMESPACE: &str = stella_engine::approvals::NAMESPACE;

/// The message the fixed signature in the seeds signs.
pub const MESSAGE: &[u8] = b"apiVersion: stella/v1\nkind: Approval\n";

/// A fixed instant (2025-01-01T00:00:00Z) at which keys are checked, so runs are reproducible.
pub fn at() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_735_689_600)
}

/// The fixed private key (seed 42, 42, …), made once.
pub fn key() -> &'static PrivateKey {
    static KEY: std::sync::OnceLock<PrivateKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&[42; 32]));
        key.set_comment("fuzz@stella");
        key
    })
}

/// Its public key, without comment.
pub fn public() -> PublicKey {
    PublicKey::from(key().public_key().key_data().clone())
}

/// An armored sshsig of `msg` for `namespace` by the fixed key, as `keys::SshKey::sign` makes it.
pub fn sign(namespace: &str, msg: &[u8]) -> String {
    key()
        .sign(namespace, HashAlg::Sha512, msg)
        .and_then(|sig| sig.to_pem(LineEnding::LF))
        .expect("ed25519 signing cannot fail")
}

/// `alice namespaces="stella-approval,stella-evidence,git" ssh-ed25519 AAAA… fuzz@stella`.
pub fn signers_line(principal: &str) -> String {
    format!(
        "{principal} namespaces=\"stella-approval,stella-evidence,git\" {}",
        key().public_key().to_openssh().expect("an ed25519 key encodes")
    )
}
