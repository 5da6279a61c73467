//! `secrets: { sources: [...] }` of `.stella/config.yaml`: the configured secret sources (SOPS
//! files in the repository, Vault/OpenBao KV v2 paths), parsed and checked, and read in order.
//! Never shows a value: every error names the source and what failed, nothing it held.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::code::Code;
use crate::diag::Diagnostics;
use crate::yaml::Node;
use crate::yaml::decode::Decoder;

/// One configured source, in the order the config lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A SOPS-encrypted YAML or JSON file, read from the repository at the run's trust commit.
    Sops { path: String },
    /// A KV v2 secret of a Vault or OpenBao server.
    Vault(Vault),
}

pub use super::vault::Vault;

/// A source that could not be read; the message names the source, never a value.
#[derive(Debug, thiserror::Error)]
#[error("secret source {source_name}: {reason}")]
pub struct Error {
    pub source_name: String,
    pub reason: String,
}

impl Error {
    pub fn code(&self) -> Code {
        Code::SecretSource
    }
}

impl Source {
    /// The kind recorded in evidence for a secret this source supplied.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Sops { .. } => "sops",
            Source::Vault(_) => "vault",
        }
    }

    /// How messages and `doctor` name the source (no token, no value).
    pub fn describe(&self) -> String {
        match self {
            Source::Sops { path } => format!("sops:{path}"),
            Source::Vault(v) => format!("vault:{}/v1/{}/data/{}", v.address, v.mount, v.path),
        }
    }

    fn fail(&self, reason: impl Into<String>) -> Error {
        Error {
            source_name: self.describe(),
            reason: reason.into(),
        }
    }
}

/// What reading the sources needs from the runner.
pub struct Context<'a> {
    /// A repository file's bytes at the trust commit (`Err`: why it cannot be read).
    pub read_file: &'a dyn Fn(&str) -> Result<Vec<u8>, String>,
    /// Age identities that may open a SOPS data key: `SOPS_AGE_KEY_FILE`/`SOPS_AGE_KEY` and
    /// the runner's own SSH key.
    pub identities: &'a super::sops::Identities,
    /// Connecting to a Vault server may take this long; a whole request twice as long.
    pub timeout: Duration,
}

/// Every secret one source holds, by name.
pub type Values = BTreeMap<String, String>;

/// Reads `source`: a SOPS file decrypted and its MAC checked, or a Vault secret fetched.
pub fn read(source: &Source, cx: &Context) -> Result<Values, Error> {
    match source {
        Source::Sops { path } => {
            let bytes = (cx.read_file)(path).map_err(|e| source.fail(e))?;
            super::sops::decrypt(path, &bytes, cx.identities).map_err(|e| source.fail(e))
        }
        Source::Vault(v) => super::vault::fetch(v, cx.timeout).map_err(|e| source.fail(e)),
    }
}

const SECRETS_FIELDS: &[&str] = &["sources"];
const VAULT_FIELDS: &[&str] = &["address", "mount", "path", "tokenFile"];

/// Parses the `secrets:` value of the config; every problem with its line.
pub fn parse(file: &str, node: &Node) -> Result<Vec<Source>, Diagnostics> {
    let mut d = Decoder::new(file, Code::ConfigInvalid).terse();
    let Some(o) = d.obj(node, "secrets", SECRETS_FIELDS) else {
        return Err(d.diags);
    };
    let sources = match o.get("sources") {
        Some(n) => d.list(n, "secrets.sources", source),
        None => Vec::new(),
    };
    d.diags.into_result(sources)
}

fn source(d: &mut Decoder, node: &Node, path: String) -> Option<Source> {
    let o = d.obj(node, &path, &["sops", "vault"])?;
    match (o.get("sops"), o.get("vault")) {
        (Some(p), None) => {
            let field = o.path("sops");
            let p = d.string(p, &field)?;
            if !valid_repo_path(&p) {
                d.error(node.pos, &field, format!("`{p}` is not a file in the repository"))
                    .hint = Some("a relative path such as .stella/secrets/prod.sops.yaml, without `..`".into());
                return None;
            }
            if ![".yaml", ".yml", ".json"].iter().any(|e| p.ends_with(e)) {
                d.error(
                    node.pos,
                    &field,
                    "a SOPS file must be YAML (.yaml, .yml) or JSON (.json)",
                );
                return None;
            }
            Some(Source::Sops { path: p })
        }
        (None, Some(v)) => vault(d, v, o.path("vault")),
        _ => {
            d.error(
                node.pos,
                &path,
                "expected one of `sops: PATH` or `vault: {address, mount, path, tokenFile}`",
            );
            None
        }
    }
}

fn vault(d: &mut Decoder, node: &Node, path: String) -> Option<Source> {
    let o = d.obj(node, &path, VAULT_FIELDS)?;
    let address = d.req_string(&o, "address")?;
    let mount = d.req_string(&o, "mount")?;
    let secret = d.req_string(&o, "path")?;
    let token_file = d.req_string(&o, "tokenFile")?;
    let address = address.trim_end_matches('/').to_string();
    if let Err(why) = check_address(&address) {
        d.error(o.pos(), &o.path("address"), why);
        return None;
    }
    for (field, value) in [("mount", &mount), ("path", &secret)] {
        if !valid_vault_path(value) {
            d.error(o.pos(), &o.path(field), format!("`{value}` is not a Vault path"))
                .hint = Some("segments of letters, digits, `_`, `-` and `.`, joined by `/`, without `..`".into());
            return None;
        }
    }
    if !token_file.starts_with('/') {
        d.error(
            o.pos(),
            &o.path("tokenFile"),
            "the token file must be an absolute path on the runner",
        )
        .hint = Some("keep the token outside the repository, e.g. /etc/stella/vault-token (mode 0600)".into());
        return None;
    }
    Some(Source::Vault(Vault {
        address,
        mount,
        path: secret,
        token_file: PathBuf::from(token_file),
    }))
}

/// `https://host[:port]`, or `http://` to a loopback host (a dev server on this machine).
fn check_address(address: &str) -> Result<(), String> {
    let (scheme, rest) = address
        .split_once("://")
        .ok_or_else(|| format!("`{address}` is not a URL (expected https://host:port)"))?;
    let host_port = rest;
    if host_port.is_empty() || host_port.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!("`{address}` must be scheme://host[:port] only"));
    }
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    match scheme {
        "https" => Ok(()),
        "http" if matches!(host, "127.0.0.1" | "localhost" | "::1") => Ok(()),
        "http" => Err(format!(
            "`{address}`: plain http is allowed only to a loopback address (a dev server); use https"
        )),
        _ => Err(format!("`{address}`: expected https://")),
    }
}

fn valid_repo_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && p.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
}

fn valid_vault_path(p: &str) -> bool {
    !p.is_empty()
        && p.split('/').all(|s| {
            !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Vec<Source>, Diagnostics> {
        let root = crate::yaml::parse("config.yaml", text, Default::default()).unwrap();
        parse("config.yaml", root.get("secrets").unwrap())
    }

    #[test]
    fn both_kinds_parse_in_order() {
        let s = parse_text(
            "secrets:\n  sources:\n    - sops: .stella/secrets/prod.sops.yaml\n    - vault: { address: https://vault.internal:8200/, mount: secret, path: stella/prod, tokenFile: /etc/stella/vault-token }\n",
        )
        .unwrap();
        assert_eq!(
            s[0],
            Source::Sops {
                path: ".stella/secrets/prod.sops.yaml".into()
            }
        );
        let Source::Vault(v) = &s[1] else {
            panic!("expected vault")
        };
        assert_eq!(v.address, "https://vault.internal:8200");
        assert_eq!(
            s[1].describe(),
            "vault:https://vault.internal:8200/v1/secret/data/stella/prod"
        );
    }

    #[test]
    fn hostile_paths_and_plain_http_are_refused() {
        for bad in [
            "- sops: ../outside.yaml",
            "- sops: /etc/shadow.yaml",
            "- sops: secrets.txt",
            "- vault: { address: http://vault.example:8200, mount: secret, path: a, tokenFile: /t }",
            "- vault: { address: https://v:8200, mount: secret, path: ../sys, tokenFile: /t }",
            "- vault: { address: https://v:8200, mount: secret, path: a, tokenFile: token }",
            "- vault: { address: https://v:8200/x?y, mount: secret, path: a, tokenFile: /t }",
            "- { sops: a.yaml, vault: {} }",
        ] {
            let text = format!("secrets:\n  sources:\n    {bad}\n");
            assert!(parse_text(&text).is_err(), "accepted {bad}");
        }
        let ok = "secrets:\n  sources:\n    - vault: { address: http://127.0.0.1:8200, mount: kv, path: a/b, tokenFile: /t }\n";
        assert!(parse_text(ok).is_ok());
    }
}
