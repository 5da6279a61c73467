//! `stella serve --repo DIR --http ADDR [--watch]`: the daemon's HTTP edge without a runner,
//! for any clone (an auditor's laptop, a sealed site's viewer). It reads the branch at each
//! request and executes nothing; its streams follow the journals and the branch tip with file
//! notifications under `--watch`, else by looking every `POLL`.

use std::path::Path;
use std::time::Duration;

use stella_engine::Code;

use crate::failure::{Failure, Outcome};
use crate::http::{Follow, Server, Settings};
use crate::repo;

/// How often streams look for news without `--watch`.
pub const POLL: Duration = Duration::from_secs(2);

pub fn serve(repo_dir: &Path, settings: Settings, watch: bool) -> Result<Outcome, Failure> {
    let root = repo::find_root(repo_dir)?;
    let follow = if watch { Follow::Notify } else { Follow::Poll(POLL) };
    // No daemon: the probes read the branch themselves (`http::probes`).
    let server = Server::bind(&settings, root.clone(), None, follow, None)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::one(Code::Io, format!("cannot start the runtime: {e}")))?;
    println!(
        "stella serve: repository {}, http on http://{}{}",
        root.display(),
        server.local_addr(),
        if watch { ", following the branch" } else { "" }
    );
    rt.block_on(async move {
        tokio::select! {
            r = server.run() => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = terminated() => Ok(()),
        }
    })?;
    Ok(Outcome::Done)
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
