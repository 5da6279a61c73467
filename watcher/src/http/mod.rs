//! The HTTP edge (DESIGN section 11): a read-only JSON API, Server-Sent Events and the
//! OpenAPI document, served by axum on the tokio runtime of the command that starts it
//! (`stella daemon --http`, `stella serve`). It reads the branch and the local journals
//! through the engine's readers and never writes anything: every change still goes through
//! git. This room checks the address and the token, binds, and starts the server and the
//! stream follower; the routes live in `api`, `files`, `streams`, `openapi`.

mod api;
mod errors;
mod files;
mod hub;
mod notifications;
mod openapi;
mod pages;
mod probes;
mod schedules;
mod server;
mod shape;
mod shared;
mod source;
mod streams;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use stella_engine::Code;

use crate::failure::Failure;

pub use hub::Follow;

/// How the edge was asked to listen.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: String,
    /// A file holding the bearer token every route but `/healthz` then requires.
    pub token_file: Option<PathBuf>,
    /// Serve a non-loopback address without a token, knowingly.
    pub insecure: bool,
}

/// Why the edge cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--http {0}: not an address (HOST:PORT, e.g. 127.0.0.1:7878)")]
    Address(String),
    #[error(
        "--http {0} is not a loopback address: anyone who reaches it could read every run; give --http-token-file FILE (a bearer token) or --http-insecure"
    )]
    Exposed(SocketAddr),
    #[error("--http-token-file {path}: {source}")]
    TokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--http-token-file {0}: the file holds no token")]
    EmptyToken(String),
    #[error("--http {addr}: cannot listen: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Address(_) | Error::Exposed(_) | Error::EmptyToken(_) => Code::Usage,
            Error::TokenFile { .. } | Error::Bind { .. } => Code::Io,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::one(e.code(), e.to_string())
    }
}

/// A bound listener with what its routes will read: made before the runtime runs anything,
/// so a refused address or an unreadable token file stops the command at once (exit 2).
pub struct Server {
    listener: std::net::TcpListener,
    shared: shared::Shared,
}

impl Server {
    /// Checks the address and the token rule, reads the token, binds, and starts the stream
    /// follower. `root` is the repository served; `key` the runner key that authenticates its
    /// runs index, if any.
    pub fn bind(
        settings: &Settings,
        root: PathBuf,
        key: Option<PathBuf>,
        follow: Follow,
        telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    ) -> Result<Server, Failure> {
        let addr: SocketAddr = settings
            .addr
            .parse()
            .map_err(|_| Error::Address(settings.addr.clone()))?;
        let token = settings.token_file.as_ref().map(|p| read_token(p)).transpose()?;
        if !addr.ip().is_loopback() && token.is_none() && !settings.insecure {
            return Err(Error::Exposed(addr).into());
        }
        let listener = std::net::TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| Error::Bind { addr, source })?;
        let source = Arc::new(source::Source::open(root, key)?);
        let hub = hub::Hub::new(source.git_dir.clone());
        // Started now, before the daemon runs anything: every event written from here on is news.
        hub.start(source.clone(), follow);
        Ok(Server {
            listener,
            shared: shared::Shared {
                source,
                token: token.map(Arc::new),
                hub,
                rescan: telemetry.is_none(),
                telemetry: telemetry.unwrap_or_else(|| Arc::new(crate::telemetry::Telemetry::new(false))),
            },
        })
    }

    /// The address it listens on (the port the system chose for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until the runtime ends. Must be called inside the runtime.
    pub async fn run(self) -> Result<(), Failure> {
        let addr = self.local_addr();
        let listener =
            tokio::net::TcpListener::from_std(self.listener).map_err(|source| Error::Bind { addr, source })?;
        tracing::info!(%addr, "http: serving");
        axum::serve(listener, server::router(self.shared))
            .await
            .map_err(|source| Error::Bind { addr, source }.into())
    }
}

/// The token in `path` (surrounding whitespace ignored), as its SHA-256.
fn read_token(path: &std::path::Path) -> Result<[u8; 32], Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::TokenFile {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Error::EmptyToken(path.display().to_string()));
    }
    Ok(Sha256::digest(token.as_bytes()).into())
}
