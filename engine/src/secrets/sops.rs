//! A SOPS file (YAML or JSON) decrypted in process, as `sops --decrypt` would: the data key
//! from the file's `sops.age` stanzas (age X25519 identities, or the runner's Ed25519 SSH key
//! as an age SSH recipient), every value AES-256-GCM with its key path as associated data, and
//! the file's MAC (SHA-512 over every leaf, in order) checked, so a tampered value or file is
//! refused. Only the top-level encrypted scalars become secrets. Never shows a value; errors
//! name keys and stanzas, never their contents.

use std::io::Read;

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine as _;
use sha2::{Digest, Sha512};

use std::collections::BTreeMap;

use crate::yaml::{self, Node, Value};

/// SOPS encrypts with 32-byte nonces.
type SopsGcm = AesGcm<Aes256, U32>;

/// SHA-256 of `sops`: the first bytes hashed when `mac_only_encrypted` is set.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b, 0x0b, 0x97, 0x5b,
    0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// A SOPS file larger than this is refused before parsing.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// The age identities a runner may open SOPS data keys with, and how to name them in errors.
#[derive(Default)]
pub struct Identities {
    keys: Vec<Box<dyn age::Identity>>,
    named: Vec<String>,
}

impl Identities {
    /// The runner's own Ed25519 SSH key (OpenSSH private key text), as an age SSH identity.
    pub fn add_ssh(&mut self, private_openssh: &str, public: &str) -> Result<(), String> {
        let id = age::ssh::Identity::from_buffer(private_openssh.as_bytes(), None)
            .map_err(|e| format!("the runner key cannot be an age identity: {e}"))?;
        if !matches!(id, age::ssh::Identity::Unencrypted(_)) {
            return Err("the runner key cannot be an age identity (encrypted or unsupported)".into());
        }
        self.keys.push(Box::new(id));
        self.named.push(format!("the runner's SSH key {}", short(public)));
        Ok(())
    }

    /// `AGE-SECRET-KEY-…` lines (an age identity file's text), as `SOPS_AGE_KEY_FILE` holds.
    pub fn add_age_file(&mut self, text: &str, from: &str) -> Result<(), String> {
        let file = age::IdentityFile::from_buffer(text.as_bytes())
            .map_err(|e| format!("{from} is not an age identity file: {e}"))?;
        let keys = file
            .into_identities()
            .map_err(|e| format!("{from} holds an identity Stella cannot use: {e}"))?;
        let n = keys.len();
        self.keys.extend(keys);
        self.named.push(format!("{n} identities from {from}"));
        Ok(())
    }

    /// The runner key plus `SOPS_AGE_KEY_FILE` and `SOPS_AGE_KEY` from the environment; a
    /// variable that is set but unreadable is an error.
    pub fn for_runner(key: &crate::keys::SshKey) -> Result<Identities, String> {
        let mut ids = Identities::default();
        ids.add_ssh(&key.private_openssh(), &key.public_openssh())?;
        if let Some(path) = std::env::var_os("SOPS_AGE_KEY_FILE").filter(|p| !p.is_empty()) {
            let shown = format!("SOPS_AGE_KEY_FILE ({})", std::path::Path::new(&path).display());
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {shown}: {e}"))?;
            ids.add_age_file(&text, &shown)?;
        }
        if let Some(text) = std::env::var("SOPS_AGE_KEY").ok().filter(|t| !t.is_empty()) {
            ids.add_age_file(&text, "SOPS_AGE_KEY")?;
        }
        Ok(ids)
    }

    fn describe(&self) -> String {
        if self.named.is_empty() {
            "no identities".into()
        } else {
            self.named.join(", ")
        }
    }
}

fn short(public: &str) -> String {
    let mut parts = public.split_whitespace();
    let (kind, body) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    format!("{kind} {}…", &body[..body.len().min(24)])
}

/// The secrets of SOPS file `path` (its bytes `bytes`): top-level encrypted scalars by key.
pub fn decrypt(path: &str, bytes: &[u8], ids: &Identities) -> Result<BTreeMap<String, String>, String> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(format!("the file is larger than {MAX_FILE_BYTES} bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_string())?;
    let root = yaml::parse(path, text, yaml::Limits::default())
        .map_err(|d| format!("not a SOPS YAML/JSON file (line {})", d.line))?;
    let meta = root
        .get("sops")
        .filter(|m| m.as_map().is_some())
        .ok_or("no `sops:` metadata: the file is not SOPS-encrypted")?;
    let key = data_key(meta, ids)?;
    let cipher = SopsGcm::new_from_slice(&key).map_err(|_| "the data key is not 32 bytes".to_string())?;
    let only_encrypted = matches!(
        meta.get("mac_only_encrypted").map(|n| &n.value),
        Some(Value::Bool(true))
    );
    let mut walk = Walk {
        cipher: &cipher,
        mac: Sha512::new(),
        only_encrypted,
        path: Vec::new(),
    };
    if only_encrypted {
        walk.mac.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    let entries = root.as_map().ok_or("a SOPS file must be a mapping")?;
    let mut values = BTreeMap::new();
    for (k, v) in entries.iter().filter(|(k, _)| k.name != "sops") {
        walk.path.push(k.name.clone());
        let plain = walk.node(v)?;
        walk.path.pop();
        if let Some(p) = plain {
            values.insert(k.name.clone(), p);
        }
    }
    let computed = hex::encode_upper(walk.mac.finalize());
    let stored_enc = meta
        .get("mac")
        .and_then(Node::as_str)
        .ok_or("the file has no MAC (`sops.mac`); refusing it unverified")?;
    let modified = meta
        .get("lastmodified")
        .and_then(Node::as_str)
        .ok_or("the file has no `sops.lastmodified`")?;
    let stored = open_value(&cipher, stored_enc, modified.as_bytes())
        .map_err(|e| format!("the MAC cannot be decrypted ({e}): the file was tampered with"))?;
    // Both sides are public-length hex of a hash; equality leaks nothing of the data key.
    if stored.text != computed {
        return Err("the MAC does not match the values: the file was tampered with".into());
    }
    Ok(values)
}

/// The 32-byte data key, from the first `sops.age` stanza one of `ids` opens.
fn data_key(meta: &Node, ids: &Identities) -> Result<Vec<u8>, String> {
    let stanzas = meta.get("age").and_then(Node::as_seq).unwrap_or_default();
    if stanzas.is_empty() {
        return Err(
            "the file has no age recipients (`sops.age`); Stella opens only age files (X25519 or SSH recipients)"
                .into(),
        );
    }
    let mut recipients = Vec::new();
    for s in stanzas {
        let recipient = s.get("recipient").and_then(Node::as_str).unwrap_or("?");
        recipients.push(short(recipient));
        let Some(enc) = s.get("enc").and_then(Node::as_str) else {
            continue;
        };
        let reader = age::armor::ArmoredReader::new(enc.as_bytes());
        let Ok(decryptor) = age::Decryptor::new(reader) else {
            continue;
        };
        if decryptor.is_scrypt() {
            continue;
        }
        let Ok(mut plain) = decryptor.decrypt(ids.keys.iter().map(|k| k.as_ref())) else {
            continue;
        };
        let mut key = Vec::with_capacity(32);
        if plain.by_ref().take(64).read_to_end(&mut key).is_ok() && key.len() == 32 {
            return Ok(key);
        }
    }
    Err(format!(
        "none of the file's age recipients ({}) is one of this runner's identities ({})",
        recipients.join(", "),
        ids.describe()
    ))
}

struct Walk<'a> {
    cipher: &'a SopsGcm,
    mac: Sha512,
    only_encrypted: bool,
    path: Vec<String>,
}

impl Walk<'_> {
    /// Decrypts and hashes every leaf under `node`, in document order; the plaintext of an
    /// encrypted scalar `node` itself (`None` for anything else).
    fn node(&mut self, node: &Node) -> Result<Option<String>, String> {
        match &node.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    self.path.push(k.name.clone());
                    self.node(v)?;
                    self.path.pop();
                }
                Ok(None)
            }
            // Items of a sequence share their parent's path (SOPS adds no index).
            Value::Seq(items) => {
                for i in items {
                    self.node(i)?;
                }
                Ok(None)
            }
            Value::Str(s) if s.starts_with("ENC[") => {
                let aad = format!("{}:", self.path.join(":"));
                let plain = open_value(self.cipher, s, aad.as_bytes()).map_err(|e| {
                    format!(
                        "value `{}` cannot be decrypted ({e}): the file was tampered with",
                        self.shown()
                    )
                })?;
                if plain.kind == "comment" {
                    return Ok(None);
                }
                self.mac.update(plain.text.as_bytes());
                let value = match plain.kind.as_str() {
                    "bool" => plain.text.to_ascii_lowercase(),
                    _ => plain.text,
                };
                Ok(Some(value))
            }
            other => {
                if !self.only_encrypted {
                    self.mac.update(plain_bytes(other).as_bytes());
                }
                Ok(None)
            }
        }
    }

    fn shown(&self) -> String {
        self.path.join(".")
    }
}

/// An unencrypted leaf as SOPS's `ToBytes` hashes it.
fn plain_bytes(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null | Value::Seq(_) | Value::Map(_) => String::new(),
    }
}

struct Plain {
    text: String,
    kind: String,
}

/// `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]` opened with `aad` as associated data.
fn open_value(cipher: &SopsGcm, enc: &str, aad: &[u8]) -> Result<Plain, &'static str> {
    let body = enc
        .strip_prefix("ENC[AES256_GCM,")
        .and_then(|b| b.strip_suffix(']'))
        .ok_or("not an ENC[AES256_GCM,…] value")?;
    let (mut data, mut iv, mut tag, mut kind) = (None, None, None, None);
    for part in body.split(',') {
        let (k, v) = part.split_once(':').ok_or("malformed")?;
        match k {
            "data" => data = Some(v),
            "iv" => iv = Some(v),
            "tag" => tag = Some(v),
            "type" => kind = Some(v),
            _ => return Err("malformed"),
        }
    }
    let b64 = |v: Option<&str>| {
        base64::engine::general_purpose::STANDARD
            .decode(v.ok_or("malformed")?)
            .map_err(|_| "malformed")
    };
    let (mut ct, iv, tag) = (b64(data)?, b64(iv)?, b64(tag)?);
    if iv.len() != 32 || tag.len() != 16 {
        return Err("malformed");
    }
    ct.extend_from_slice(&tag);
    let plain = cipher
        .decrypt(Nonce::<U32>::from_slice(&iv), Payload { msg: &ct, aad })
        .map_err(|_| "authentication failed")?;
    Ok(Plain {
        text: String::from_utf8(plain).map_err(|_| "not UTF-8")?,
        kind: kind.ok_or("malformed")?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(cipher: &SopsGcm, plain: &str, aad: &str, kind: &str) -> String {
        let iv = [7u8; 32];
        let mut ct = cipher
            .encrypt(
                Nonce::<U32>::from_slice(&iv),
                Payload {
                    msg: plain.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .unwrap();
        let tag = ct.split_off(ct.len() - 16);
        let e = &base64::engine::general_purpose::STANDARD;
        format!(
            "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]",
            e.encode(ct),
            e.encode(iv),
            e.encode(tag)
        )
    }

    /// A file as `sops -e` writes it, sealed to a fresh age X25519 identity.
    fn file(tamper: bool) -> (String, Identities) {
        let id = age::x25519::Identity::generate();
        let key = [9u8; 32];
        let cipher = SopsGcm::new_from_slice(&key).unwrap();
        let mut armored = Vec::new();
        {
            let enc = age::Encryptor::with_recipients(std::iter::once(&id.to_public() as &dyn age::Recipient)).unwrap();
            let mut w = enc
                .wrap_output(
                    age::armor::ArmoredWriter::wrap_output(&mut armored, age::armor::Format::AsciiArmor).unwrap(),
                )
                .unwrap();
            std::io::Write::write_all(&mut w, &key).unwrap();
            w.finish().unwrap().finish().unwrap();
        }
        let mut mac = Sha512::new();
        for v in ["s3cret", "7", "inner", "a", "b", "note"] {
            mac.update(v.as_bytes());
        }
        let mac = hex::encode_upper(mac.finalize());
        let when = "2026-12-02T15:00:00Z";
        let token = seal(&cipher, if tamper { "other" } else { "s3cret" }, "token:", "str");
        let text = format!(
            "token: {token}\nport: {}\nnested:\n  deep: {}\nlist:\n  - {}\n  - {}\nnote_unencrypted: note\nsops:\n  age:\n    - recipient: {}\n      enc: |\n{}\n  lastmodified: \"{when}\"\n  mac: {}\n",
            seal(&cipher, "7", "port:", "int"),
            seal(&cipher, "inner", "nested:deep:", "str"),
            seal(&cipher, "a", "list:", "str"),
            seal(&cipher, "b", "list:", "str"),
            id.to_public(),
            String::from_utf8(armored)
                .unwrap()
                .lines()
                .map(|l| format!("        {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
            seal(&cipher, &mac, when, "str"),
        );
        let mut ids = Identities::default();
        ids.add_age_file(id.to_string().expose_secret(), "test").unwrap();
        (text, ids)
    }

    use age::secrecy::ExposeSecret as _;

    #[test]
    fn a_file_decrypts_and_its_mac_holds() {
        let (text, ids) = file(false);
        let v = decrypt("s.yaml", text.as_bytes(), &ids).unwrap();
        assert_eq!(v.get("token").map(String::as_str), Some("s3cret"));
        assert_eq!(v.get("port").map(String::as_str), Some("7"));
        assert!(!v.contains_key("nested") && !v.contains_key("note_unencrypted"));
    }

    #[test]
    fn a_value_sealed_again_by_someone_else_breaks_the_mac() {
        let (text, ids) = file(true);
        let e = decrypt("s.yaml", text.as_bytes(), &ids).unwrap_err();
        assert!(e.contains("MAC does not match"), "{e}");
        assert!(!e.contains("other"));
    }

    #[test]
    fn a_changed_plain_value_or_a_moved_value_is_refused() {
        let (text, ids) = file(false);
        let changed = text.replace("note_unencrypted: note", "note_unencrypted: nope");
        assert!(decrypt("s.yaml", changed.as_bytes(), &ids).unwrap_err().contains("MAC"));
        // The value of `token` under another key: its associated data no longer matches.
        let moved = text.replacen("token: ", "tokem: ", 1);
        assert!(
            decrypt("s.yaml", moved.as_bytes(), &ids)
                .unwrap_err()
                .contains("`tokem`")
        );
    }

    #[test]
    fn a_stranger_identity_is_told_which_recipients_there_are() {
        let (text, _) = file(false);
        let mut other = Identities::default();
        let id = age::x25519::Identity::generate();
        other
            .add_age_file(id.to_string().expose_secret(), "SOPS_AGE_KEY_FILE (k)")
            .unwrap();
        let e = decrypt("s.yaml", text.as_bytes(), &other).unwrap_err();
        assert!(e.contains("none of the file's age recipients (age1"), "{e}");
    }
}
