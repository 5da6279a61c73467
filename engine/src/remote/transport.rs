//! How a runner reaches its server (DESIGN section 13): the trust roots of gix's HTTP(S)
//! transport and of git's push (`http.sslCAInfo` / `GIT_SSL_CAINFO`, which gix's reqwest
//! backend would ignore, else `SSL_CERT_FILE`, which git ignores), credentials from git's
//! credential helpers with no prompt ever (a daemon has nobody to ask), ssh's stderr kept
//! out of the daemon's, and the one line that says what went wrong and what to do. Never
//! shows a credential: URLs lose their password before they are shown, and so does any
//! text that repeats it. Decides nothing about refs or runs.

use std::any::Any;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gix::protocol::transport::client::blocking_io::{http, ssh};

use crate::ledger::GitError;

/// How long one HTTP request of a fetch may take, answer included: a server that stops
/// answering must not hold the daemon's exchanges forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Readies `repo` for talking to a server: credential helpers are asked, the terminal never.
pub(super) fn no_prompt(repo: &mut gix::Repository) -> Result<(), GitError> {
    let mut config = repo.config_snapshot_mut();
    config.set_value(&gix::config::tree::gitoxide::Credentials::TERMINAL_PROMPT, "false")?;
    config.commit()?;
    Ok(())
}

/// The transport options for fetching from `url` through remote `name`: gix's own, from the
/// configuration and environment; for HTTP(S), the CA file of `http.sslCAInfo` (or
/// `GIT_SSL_CAINFO`, else `SSL_CERT_FILE`) as the only trusted roots, as git itself takes
/// it, and a timeout.
pub(super) fn options(repo: &gix::Repository, url: &gix::Url, name: &str) -> Result<Option<Box<dyn Any>>, GitError> {
    let url_text = url.to_bstring();
    let Some(options) = repo.transport_options(gix::bstr::BStr::new(&url_text), Some(name.into()))? else {
        return Ok(None);
    };
    let mut options = match options.downcast::<http::Options>() {
        Ok(http) => http,
        Err(other) => return Ok(Some(other)),
    };
    let ca = options
        .ssl_ca_info
        .clone()
        .or_else(|| std::env::var_os("SSL_CERT_FILE").map(Into::into));
    let roots = match &ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("the CA file {} (http.sslCAInfo, GIT_SSL_CAINFO): {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("the CA file {} (http.sslCAInfo, GIT_SSL_CAINFO): {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "the CA file {} (http.sslCAInfo, GIT_SSL_CAINFO) holds no certificate",
                    path.display()
                )
                .into());
            }
            Some(certs)
        }
        None => None,
    };
    let verify = options.ssl_verify;
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(move |builder: reqwest::blocking::ClientBuilder| {
            let builder = builder.timeout(REQUEST_TIMEOUT);
            let builder = match &roots {
                Some(certs) => builder.tls_certs_only(certs.iter().cloned()),
                None => builder,
            };
            // `http.sslVerify=false` (or GIT_SSL_NO_VERIFY), as git honours it.
            Ok(builder.tls_danger_accept_invalid_certs(!verify))
        })),
        configure_request: None,
    };
    options.backend = Some(Arc::new(Mutex::new(backend)) as Arc<Mutex<dyn Any + Send + Sync>>);
    Ok(Some(options))
}

/// The CA file git's own commands (push, ls-remote) must be told of: `SSL_CERT_FILE` when
/// neither `GIT_SSL_CAINFO` nor `http.sslCAInfo` names one (git ignores `SSL_CERT_FILE`).
pub(super) fn git_ca(root: &Path) -> Option<std::ffi::OsString> {
    let file = std::env::var_os("SSL_CERT_FILE")?;
    let configured = std::env::var_os("GIT_SSL_CAINFO").is_some()
        || crate::git_cli::run(root, &["config", "--get", "http.sslCAInfo"]).is_ok();
    (!configured).then_some(file)
}

/// How much of what ssh said is kept for the error line: its last lines.
const SSH_SAID: u64 = 4096;

/// The ssh options for a fetch whose ssh writes its stderr to `file` rather than through
/// gix to the daemon's own (ssh's multi-line warnings, a host key banner): the one line the
/// daemon prints is made from its tail. The command stays the user's (`GIT_SSH_COMMAND`,
/// `core.sshCommand`, else `ssh`), its kind found from it as gix would.
pub(super) fn ssh_options(repo: &gix::Repository, file: &Path) -> Result<ssh::connect::Options, GitError> {
    let mut options = repo.ssh_connect_options()?;
    if options.disallow_shell {
        return Ok(options);
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let command = options.ssh_command().to_string_lossy().into_owned();
    if options.kind.is_none() {
        let kind = ssh::ProgramKind::from(std::ffi::OsStr::new(&command));
        options.kind = (kind != ssh::ProgramKind::Simple).then_some(kind);
    }
    let quoted = file.to_string_lossy().replace('\'', "'\\''");
    options.command = Some(format!("{command} 2>'{quoted}'").into());
    Ok(options)
}

/// The last lines ssh wrote to `file` (at most 4 KiB), for the error line; empty if none.
pub(super) fn ssh_said(file: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(file) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(SSH_SAID)));
    let mut bytes = Vec::new();
    let _ = f.take(SSH_SAID).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// `url` as it may be shown: without a password.
pub fn shown(url: &gix::Url) -> String {
    let mut url = url.clone();
    url.set_password(None);
    url.to_bstring().to_string()
}

/// What went wrong, for the one line a person reads: the kind of failure, found in the
/// error's whole chain (or git's stderr), and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// The server refused the credentials it was given (HTTP 401/403 after a helper answered).
    Refused,
    /// The server asks for credentials and no helper gave any.
    NoCredentials,
    /// The server's TLS certificate is not trusted (unknown issuer, expired, wrong name).
    Certificate,
    /// The SSH server's host key is unknown or differs from the one in known_hosts.
    HostKey,
    /// The SSH server refused the key (publickey).
    SshKey,
    /// Nothing answers: connection refused, name unknown, timed out.
    Unreachable,
}

impl Trouble {
    /// The kind of failure `text` (an error chain, or what git or ssh said) describes, if known.
    pub fn find(text: &str) -> Option<Trouble> {
        let t = text.to_ascii_lowercase();
        let any = |words: &[&str]| words.iter().any(|w| t.contains(w));
        if any(&[
            "host key verification failed",
            "remote host identification has changed",
            "host key is known",
            "no matching host key",
        ]) {
            Some(Trouble::HostKey)
        } else if any(&[
            "certificate",
            "ssl_connect",
            "gnutls_handshake",
            "tls handshake",
            "unknownissuer",
        ]) {
            Some(Trouble::Certificate)
        } else if any(&[
            "were not accepted by the remote",
            "authentication failed",
            "returned error: 401",
            "returned error: 403",
        ]) {
            Some(Trouble::Refused)
        } else if any(&["permission denied (publickey", "permission denied, please try again"]) {
            Some(Trouble::SshKey)
        } else if any(&[
            "no credentials were returned",
            "could not read username",
            "terminal prompts disabled",
            "failed to obtain credentials",
        ]) {
            Some(Trouble::NoCredentials)
        } else if any(&[
            "connection refused",
            "could not resolve",
            "resolve hostname",
            "dns error",
            "timed out",
            "connect to host",
            "failed to connect",
            "no route to host",
            "network is unreachable",
            "connection closed by",
            "connection reset",
            "does not appear to be a git repository",
            "is a valid git directory",
        ]) {
            Some(Trouble::Unreachable)
        } else {
            None
        }
    }

    /// What happened and what to do, after the URL.
    pub fn say(self) -> &'static str {
        match self {
            Trouble::Refused => {
                "the server refused the credentials (HTTP 401); check the credential helper's token for this host (git credential fill)"
            }
            Trouble::NoCredentials => {
                "the server asks for credentials and no credential helper gave any; configure one for this host (git config credential.helper)"
            }
            Trouble::Certificate => {
                "the server's TLS certificate is not trusted; for a private CA set GIT_SSL_CAINFO (or http.sslCAInfo) to its PEM file"
            }
            Trouble::HostKey => {
                "the SSH host key is unknown or has changed; check it and put the server's key in known_hosts (ssh-keyscan)"
            }
            Trouble::SshKey => {
                "the SSH server refused the key; give the runner's deploy key to the server, or pick the key with GIT_SSH_COMMAND / core.sshCommand"
            }
            Trouble::Unreachable => {
                "the server cannot be reached; check the URL and the network (runs wait until it answers)"
            }
        }
    }
}

/// Every message of `e`'s chain, joined: what `Trouble::find` looks at.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}

/// `text` with `url`'s password, if any, masked.
pub fn masked(text: &str, url: &gix::Url) -> String {
    match url.password() {
        Some(p) if !p.is_empty() => text.replace(p, "***"),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_gix_git_and_ssh_say() {
        for (text, want) in [
            (
                "Credentials provided for \"https://h/r\" were not accepted by the remote",
                Trouble::Refused,
            ),
            ("fatal: Authentication failed for 'https://h/r/'", Trouble::Refused),
            ("invalid peer certificate: UnknownIssuer", Trouble::Certificate),
            (
                "fatal: unable to access 'https://h/r/': server certificate verification failed",
                Trouble::Certificate,
            ),
            (
                "Host key verification failed.\r\nfatal: Could not read from remote repository.",
                Trouble::HostKey,
            ),
            ("root@127.0.0.1: Permission denied (publickey).", Trouble::SshKey),
            (
                "fatal: could not read Username for 'https://h': terminal prompts disabled",
                Trouble::NoCredentials,
            ),
            (
                "error trying to connect: tcp connect error: Connection refused (os error 111)",
                Trouble::Unreachable,
            ),
        ] {
            assert_eq!(Trouble::find(text), Some(want), "{text}");
        }
        assert_eq!(Trouble::find("the pack is corrupt"), None);
        // A lost race names the server's URL, whose port may hold any digits.
        let raced = "! [rejected] main -> main (fetch first)\nerror: failed to push some refs to 'https://127.0.0.1:40129/git/hub.git'";
        assert_eq!(Trouble::find(raced), None);
    }

    #[test]
    fn a_shown_url_has_no_password() {
        let url = gix::Url::try_from("https://bot:t0ken@git.example.com/org/repo.git").unwrap();
        assert_eq!(shown(&url), "https://bot@git.example.com/org/repo.git");
        assert_eq!(
            masked("fetch https://bot:t0ken@x failed", &url),
            "fetch https://bot:***@x failed"
        );
    }
}
