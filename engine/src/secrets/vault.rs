//! A Vault or OpenBao KV v2 secret, read over HTTPS (plain http to loopback only) with a token
//! from a file on the runner: `GET <address>/v1/<mount>/data/<path>`, bounded in time and in
//! size. Errors say what the server answered (sealed, denied, missing), never the token or a
//! value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ureq::Agent;
use ureq::tls::{PemItem, RootCerts, TlsConfig};

/// Where a KV v2 secret lives and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vault {
    /// `https://host[:port]` (`http://` only on loopback, for a dev server).
    pub address: String,
    /// The KV v2 engine's mount (`secret`).
    pub mount: String,
    /// The secret's path under the mount (`stella/prod`).
    pub path: String,
    /// An absolute path on the runner whose contents are the token; never in the repository.
    pub token_file: std::path::PathBuf,
}

/// The most a response body may hold.
const MAX_BODY: u64 = 1 << 20;
/// The most a token file may hold.
const MAX_TOKEN: u64 = 16 * 1024;

/// The secret's string fields (numbers and booleans as their JSON text).
pub fn fetch(v: &Vault, timeout: Duration) -> Result<BTreeMap<String, String>, String> {
    let token = read_token(v)?;
    let tls = TlsConfig::builder().root_certs(roots()).build();
    let agent: Agent = Agent::config_builder()
        .timeout_connect(Some(timeout))
        .timeout_global(Some(timeout * 2))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_response_header_size(16 * 1024)
        .user_agent(concat!("stella/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build()
        .into();
    let url = format!("{}/v1/{}/data/{}", v.address, v.mount, v.path);
    let mut resp = agent
        .get(&url)
        .header("X-Vault-Token", token.trim())
        .call()
        .map_err(|e| format!("cannot reach the server: {}", describe(&e)))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .map_err(|_| format!("the answer (HTTP {status}) could not be read or is larger than {MAX_BODY} bytes"))?;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    match status {
        200 => {}
        503 => {
            return Err(format!(
                "the server is sealed or unavailable (HTTP 503: {})",
                errors(&json)
            ));
        }
        403 => {
            return Err(format!(
                "permission denied (HTTP 403): the token in {} cannot read {}/data/{}",
                v.token_file.display(),
                v.mount,
                v.path
            ));
        }
        404 => {
            return Err(format!(
                "no secret at {}/data/{} (HTTP 404; is `{}` a KV v2 mount?)",
                v.mount, v.path, v.mount
            ));
        }
        s => return Err(format!("the server answered HTTP {s}: {}", errors(&json))),
    }
    let data = json
        .pointer("/data/data")
        .and_then(|d| d.as_object())
        .ok_or("the answer holds no `data.data` object (is the mount KV version 2?)")?;
    Ok(data
        .iter()
        .filter_map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((k.clone(), text))
        })
        .collect())
}

fn read_token(v: &Vault) -> Result<String, String> {
    use std::io::Read;
    let shown = v.token_file.display();
    let file = std::fs::File::open(&v.token_file).map_err(|e| format!("cannot read the token file {shown}: {e}"))?;
    let mut token = String::new();
    file.take(MAX_TOKEN)
        .read_to_string(&mut token)
        .map_err(|e| format!("cannot read the token file {shown}: {e}"))?;
    let token = token.trim().to_string();
    if token.is_empty() || token.contains(|c: char| c.is_control() || c == ' ') {
        return Err(format!("the token file {shown} holds no token (one line, no spaces)"));
    }
    Ok(token)
}

/// The server's `errors` list, bounded (they are the server's words, never a value).
fn errors(json: &serde_json::Value) -> String {
    let list: Vec<String> = json
        .get("errors")
        .and_then(|e| e.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str()).map(str::to_string).collect())
        .unwrap_or_default();
    let mut text = if list.is_empty() {
        "no error given".to_string()
    } else {
        list.join("; ")
    };
    if text.len() > 200 {
        let cut = (0..=200).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text.replace(['\n', '\r'], " ")
}

/// Root certificates: `SSL_CERT_FILE`, else the system bundle, else Mozilla's (webpki-roots).
/// Also what the webhook deliveries trust.
pub fn roots() -> RootCerts {
    let files = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(std::path::PathBuf::from),
        );
    for file in files {
        let Ok(pem) = std::fs::read(&file) else { continue };
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if !certs.is_empty() {
            return RootCerts::Specific(Arc::new(certs));
        }
    }
    RootCerts::WebPki
}

fn describe(e: &ureq::Error) -> String {
    use ureq::Error as E;
    match e {
        E::Timeout(_) => "timed out".into(),
        E::HostNotFound => "host not found".into(),
        E::ConnectionFailed => "connection refused or failed".into(),
        E::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            "TLS failed (is the server's certificate trusted? see SSL_CERT_FILE)".into()
        }
        E::Io(io) => format!("connection failed ({})", io.kind()),
        E::Tls(_) | E::Rustls(_) | E::Pem(_) => {
            "TLS failed (is the server's certificate trusted? see SSL_CERT_FILE)".into()
        }
        E::Protocol(_) => "the server did not speak HTTP/1.1".into(),
        _ => "the request failed".into(),
    }
}
